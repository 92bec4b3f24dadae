//! Email in end to end: Python's `smtplib` as the sending mail server,
//! tickets and intake running, the tickets read back over gRPC.

use std::{net::SocketAddr, time::Duration};

use hotline_kit::{
    auth::Role,
    testing::{TestApp, TestEnv},
};
use hotline_proto::tickets::v1::{
    Article, ArticleKind, Channel, GetTicketRequest, GetTicketResponse,
    ticket_service_client::TicketServiceClient,
};
use serde_json::Value;

mod common;

struct Desk {
    env: TestEnv,
    app: TestApp,
    smtp: SocketAddr,
}

impl Desk {
    async fn start(settings: &[(&str, &str)]) -> Self {
        let mut env = TestEnv::new().await.unwrap();
        let smtp = common::free_port();
        env.config.set("intake", "smtp_addr", &smtp.to_string());
        env.config.set("intake", "domains", "support.example");
        for (key, value) in settings {
            env.config.set("intake", key, value);
        }
        let app = env
            .start(&[hotline_tickets::module(), hotline_intake::module()])
            .await
            .unwrap();
        Self { env, app, smtp }
    }

    /// Sends `message` from `sender` to `rcpt`; the server's final code.
    async fn send(&self, sender: &str, rcpt: &str, message: &str) -> (u16, String) {
        common::send_mail(self.smtp, sender, rcpt, message).await
    }

    fn tickets(
        &self,
    ) -> TicketServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            hotline_kit::grpc::BearerToken,
        >,
    > {
        TicketServiceClient::new(self.app.channel(&self.env.token("ana", Role::Agent)))
    }

    /// The tickets of `contact` with their articles, once they hold
    /// `articles` articles in all (or after 10 s).
    async fn of(&self, contact: &str, articles: usize) -> Vec<GetTicketResponse> {
        common::tickets_of(&self.env, &self.app, contact, articles).await
    }

    /// The first internal note on `ticket`, once there is one (about
    /// `what`; 10 s at most).
    async fn await_note(&self, ticket: &str, what: &str) -> Article {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let shown = self
                .tickets()
                .get_ticket(GetTicketRequest {
                    ticket: ticket.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if let Some(note) = shown
                .articles
                .into_iter()
                .find(|a| a.kind == ArticleKind::InternalNote as i32)
            {
                return note;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no note about {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["intake"]).await.unwrap();
    }
}

fn message(from: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: help@support.example\r\nSubject: {subject}\r\n{extra}\r\n{body}\r\n"
    )
}

#[tokio::test]
async fn a_mail_opens_a_ticket_and_replies_thread_by_tag_and_by_in_reply_to() {
    let desk = Desk::start(&[]).await;
    let from = "ops@customer.example";
    let first = message(
        "Ops <ops@customer.example>",
        "NVR-16 shows no picture",
        "Message-ID: <first@customer.example>\r\n",
        "Since 02:00 all channels are black.",
    );
    assert_eq!(desk.send(from, "help@support.example", &first).await.0, 250);
    let opened = desk.of(from, 1).await;
    assert_eq!(opened.len(), 1, "one ticket");
    let ticket = opened[0].ticket.clone().unwrap();
    assert_eq!(ticket.channel, Channel::Email as i32);
    assert_eq!(ticket.subject, "NVR-16 shows no picture");
    assert!(ticket.awaiting_response);
    assert!(
        opened[0].articles[0]
            .body
            .contains("all channels are black")
    );

    // By the tag in the subject.
    let tagged = message(
        from,
        &format!("Re: [{}] NVR-16 shows no picture", ticket.number),
        "Message-ID: <second@customer.example>\r\n",
        "Camera 3 is back, the rest not.",
    );
    assert_eq!(
        desk.send(from, "help@support.example", &tagged).await.0,
        250
    );
    // By In-Reply-To, without a tag.
    let replied = message(
        from,
        "Re: no picture",
        "Message-ID: <third@customer.example>\r\nIn-Reply-To: <first@customer.example>\r\n",
        "Now all are back.",
    );
    assert_eq!(
        desk.send(from, "help@support.example", &replied).await.0,
        250
    );
    let threaded = desk.of(from, 3).await;
    assert_eq!(threaded.len(), 1, "still one ticket");
    let articles = &threaded[0].articles;
    assert_eq!(articles.len(), 3);
    assert!(
        articles
            .iter()
            .all(|a| a.kind == ArticleKind::CustomerMessage as i32)
    );
    assert!(articles[2].body.contains("all are back"));
    desk.stop().await;
}

#[tokio::test]
async fn robots_never_open_a_ticket() {
    let desk = Desk::start(&[]).await;
    let robot = "robot@customer.example";
    for extra in [
        "Auto-Submitted: auto-replied\r\n",
        "Precedence: bulk\r\n",
        "X-Auto-Response-Suppress: All\r\n",
        "List-Unsubscribe: <mailto:leave@customer.example>\r\n",
        "X-Loop: hotline\r\n",
    ] {
        let mail = message(robot, "Out of office", extra, "I am away.");
        assert_eq!(desk.send(robot, "help@support.example", &mail).await.0, 250);
    }
    let bounce = message(
        "MAILER-DAEMON@customer.example",
        "Undelivered Mail Returned to Sender",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--b--",
    );
    assert_eq!(desk.send("", "help@support.example", &bounce).await.0, 250);
    // A person's mail after the robots' is the only ticket.
    let person = message(robot, "Really broken", "", "Please help.");
    assert_eq!(
        desk.send(robot, "help@support.example", &person).await.0,
        250
    );
    let tickets = desk.of(robot, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].ticket.clone().unwrap().subject, "Really broken");
    assert!(
        desk.of("mailer-daemon@customer.example", 0)
            .await
            .is_empty()
    );
    desk.stop().await;
}

#[tokio::test]
async fn the_server_refuses_what_it_must_with_the_right_codes() {
    let desk = Desk::start(&[
        ("max_message_bytes", "4096"),
        ("sender_rate_per_minute", "3"),
    ])
    .await;
    let from = "ops@customer.example";
    let (code, text) = desk
        .send(
            from,
            "someone@elsewhere.example",
            &message(from, "x", "", "y"),
        )
        .await;
    assert_eq!(code, 550, "never an open relay: {text}");
    let big = message(from, "big", "", &"0123456789\r\n".repeat(1000));
    assert_eq!(desk.send(from, "help@support.example", &big).await.0, 552);
    let long_line = message(from, "long", "", &"x".repeat(1500));
    assert_eq!(
        desk.send(from, "help@support.example", &long_line).await.0,
        500
    );
    // Three messages a minute from one sender, then 451 (try later).
    let flood = "flood@robot.example";
    let mut codes = Vec::new();
    for n in 0..4 {
        let mail = message(flood, &format!("spam {n}"), "", "buy");
        codes.push(desk.send(flood, "help@support.example", &mail).await.0);
    }
    assert_eq!(codes, vec![250, 250, 250, 451]);
    desk.stop().await;
}

/// A mail server speaking SMTP byte for byte over a raw socket, for what
/// `smtplib` will not send (bare line ends, fake ends of data).
struct RawClient {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawClient {
    /// Connected, the greeting read.
    async fn connect(smtp: SocketAddr) -> Self {
        let (reader, writer) = tokio::net::TcpStream::connect(smtp)
            .await
            .unwrap()
            .into_split();
        let mut client = Self {
            reader: tokio::io::BufReader::new(reader),
            writer,
        };
        assert_eq!(client.reply().await.0, 220);
        client
    }

    /// Sends `bytes` as they are; the reply to them.
    async fn say(&mut self, bytes: &[u8]) -> (u16, String) {
        use tokio::io::AsyncWriteExt;
        self.writer.write_all(bytes).await.unwrap();
        self.reply().await
    }

    /// One reply: its code and all its lines.
    async fn reply(&mut self) -> (u16, String) {
        use tokio::io::AsyncBufReadExt;
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
                    .await
                    .expect("no reply within 10 s")
                    .unwrap();
            assert!(read > 0, "the server closed the connection after {text:?}");
            text.push_str(&line);
            // `250-` continues a reply, `250 ` ends it.
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, text);
            }
        }
    }
}

#[tokio::test]
async fn a_message_smuggled_behind_a_fake_end_of_data_is_refused_with_its_carrier() {
    let desk = Desk::start(&[]).await;
    let forged = "admin@forged.example";
    // The end-of-data lookalikes of the 2023 SMTP smuggling research.
    let fake_ends = ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r\n.\r"];
    for (n, fake_end) in fake_ends.iter().enumerate() {
        let mut client = RawClient::connect(desk.smtp).await;
        let (code, offered) = client.say(b"EHLO mx.customer.example\r\n").await;
        assert_eq!(code, 250);
        assert!(!offered.contains("CHUNKING"), "{offered}");
        // Commands end with CR LF too, and BDAT stays unknown.
        let (code, text) = client.say(b"NOOP\n").await;
        assert_eq!((code, text.contains("5.5.2")), (500, true), "{text}");
        assert_eq!(client.say(b"BDAT 20 LAST\r\n").await.0, 502);

        let carrier = format!("carrier{n}@customer.example");
        for command in [
            format!("MAIL FROM:<{carrier}>\r\n"),
            "RCPT TO:<help@support.example>\r\n".into(),
        ] {
            assert_eq!(client.say(command.as_bytes()).await.0, 250, "{command}");
        }
        assert_eq!(client.say(b"DATA\r\n").await.0, 354);
        let smuggling = format!(
            "From: {carrier}\r\nTo: help@support.example\r\nSubject: Camera dark\r\n\r\n\
             Camera 7 is dark.{fake_end}\
             MAIL FROM:<{forged}>\r\nRCPT TO:<help@support.example>\r\nDATA\r\n\
             From: {forged}\r\nTo: help@support.example\r\nSubject: Urgent\r\n\r\n\
             Wire the money.\r\n.\r\n"
        );
        let (code, text) = client.say(smuggling.as_bytes()).await;
        assert_eq!(code, 550, "{fake_end:?}: {text}");
        assert!(text.contains("bare <LF> or <CR>"), "{text}");

        // In step: the next transaction is the next one the client sends.
        let after = format!("after{n}@customer.example");
        for command in [
            format!("MAIL FROM:<{after}>\r\n"),
            "RCPT TO:<help@support.example>\r\n".into(),
        ] {
            assert_eq!(client.say(command.as_bytes()).await.0, 250, "{command}");
        }
        assert_eq!(client.say(b"DATA\r\n").await.0, 354);
        let honest = message(&after, "Recorder beeps", "", "It beeps.") + ".\r\n";
        let (code, text) = client.say(honest.as_bytes()).await;
        assert_eq!(code, 250, "{fake_end:?}: {text}");
        assert_eq!(client.say(b"QUIT\r\n").await.0, 221);
    }
    for n in 0..fake_ends.len() {
        let after = desk.of(&format!("after{n}@customer.example"), 1).await;
        assert_eq!(after.len(), 1, "the mail after fake end {n}");
    }
    // Anything smuggled would have been forwarded by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(desk.of(forged, 0).await.is_empty(), "a forged ticket");
    for n in 0..fake_ends.len() {
        assert!(
            desk.of(&format!("carrier{n}@customer.example"), 0)
                .await
                .is_empty()
        );
    }
    desk.stop().await;
}

/// Waits until the relay holds `count` messages.
async fn relayed(mails: &std::sync::Mutex<Vec<String>>, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = mails.lock().unwrap().clone();
        if held.len() >= count || tokio::time::Instant::now() > deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn html_attachments_and_injected_headers_reach_the_ticket_harmless() {
    let (mails, sink) = common::smtp_sink().await;
    let relay = format!("smtp://{sink}");
    let desk = Desk::start(&[("relay", &relay), ("max_attachment_bytes", "1000")]).await;
    let from = "ops@customer.example";
    // A subject whose encoded words carry CR LF and a Bcc header.
    let mail = "From: ops@customer.example\r\nTo: help@support.example\r\n\
        Subject: =?utf-8?Q?Camera_dark=0D=0ABcc:_victim@elsewhere.example?=\r\n\
        Message-ID: <html1@customer.example>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=outer\r\n\r\n\
        --outer\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n\
        --alt\r\nContent-Type: text/plain\r\n\r\nCamera 7 is dark.\r\n\
        --alt\r\nContent-Type: text/html\r\n\r\n<p>Camera <b>7</b> is dark.</p><script>document.location='https://evil.example'</script>\r\n\
        --alt--\r\n\
        --outer\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=cam7.png\r\n\
        Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgoAAAANSUhEUg==\r\n\
        --outer\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=dump.zip\r\n\
        Content-Transfer-Encoding: base64\r\n\r\n"
        .to_owned()
        + &"QUFB".repeat(400).as_bytes().chunks(76).map(|line| {
            String::from_utf8_lossy(line).into_owned() + "\r\n"
        }).collect::<String>()
        + "--outer--\r\n";
    assert_eq!(desk.send(from, "help@support.example", &mail).await.0, 250);
    let shown = desk.of(from, 1).await;
    assert_eq!(shown.len(), 1);
    let article = &shown[0].articles[0];
    assert_eq!(article.body.lines().next(), Some("Camera 7 is dark."));
    assert!(article.html.contains("<b>7</b>"), "{}", article.html);
    assert!(!article.html.contains("evil.example"), "{}", article.html);
    assert_eq!(
        article.attachments.len(),
        1,
        "the 1,200-byte zip is over the limit"
    );
    assert_eq!(article.attachments[0].name, "cam7.png");
    assert!(
        article
            .body
            .contains("dump.zip (1200 bytes): larger than 1000 bytes"),
        "{}",
        article.body
    );
    let png = desk
        .tickets()
        .get_attachment(hotline_proto::tickets::v1::GetAttachmentRequest {
            id: article.attachments[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(png.content, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    // The acknowledgement carries the subject as text, never as a header.
    let ack = relayed(&mails, 1).await;
    assert_eq!(ack.len(), 1);
    assert!(
        !ack[0]
            .lines()
            .any(|line| line.to_ascii_lowercase().starts_with("bcc:")),
        "{}",
        ack[0]
    );
    desk.stop().await;
}

/// Reads a mail from stdin as a mail client does; prints its headers'
/// names and its Subject headers, decoded.
const READ_MAIL: &str = r#"
import email, email.policy, json, sys
message = email.message_from_string(sys.stdin.read(), policy=email.policy.default)
print(json.dumps({"names": [name.lower() for name in message.keys()],
                  "subjects": [str(s) for s in message.get_all("Subject", [])]}))
"#;

#[tokio::test]
async fn a_hostile_subject_goes_out_as_one_clean_encoded_subject_header() {
    use tokio::io::AsyncWriteExt;
    let (mails, sink) = common::smtp_sink().await;
    let relay = format!("smtp://{sink}");
    let desk = Desk::start(&[("relay", &relay)]).await;
    let from = "term@customer.example";
    // A terminal title escape, a bell, an injected Bcc and Chinese text,
    // arriving RFC 2047-encoded as any mail server may send them.
    let hostile = "\x1b]0;pwn\x07摄像头黑屏\r\nBcc: x@evil.example";
    let encoded: String = hostile
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("={b:02X}")
            }
        })
        .collect();
    let report = message(
        from,
        &format!("=?utf-8?Q?{encoded}?="),
        "Message-ID: <t1@customer.example>\r\n",
        "The screen is black.",
    );
    assert_eq!(
        desk.send(from, "help@support.example", &report).await.0,
        250
    );
    let ticket = desk.of(from, 1).await[0].ticket.clone().unwrap();
    let ack = relayed(&mails, 1).await;
    let ack = ack.first().expect("acknowledged");
    let (head, _) = ack.split_once("\n\n").unwrap_or((ack, ""));
    assert!(
        head.chars()
            .all(|c| c == '\n' || (c.is_ascii() && !c.is_ascii_control())),
        "raw bytes in the header: {head:?}"
    );

    let mut reader = tokio::process::Command::new("python3")
        .args(["-c", READ_MAIL])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = reader.stdin.take().unwrap();
    stdin.write_all(ack.as_bytes()).await.unwrap();
    drop(stdin);
    let output = reader.wait_with_output().await.unwrap();
    let read: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(
        read["subjects"],
        serde_json::json!([format!(
            "Re: [{}] ]0;pwn 摄像头黑屏 Bcc: x@evil.example",
            ticket.number
        )]),
        "{ack}"
    );
    let names = read["names"].as_array().unwrap();
    assert!(!names.contains(&Value::from("bcc")), "{ack}");
    desk.stop().await;
}

#[tokio::test]
async fn replies_go_out_in_the_thread_and_come_back_into_it_and_bounces_are_noted() {
    let (mails, sink) = common::smtp_sink().await;
    let relay = format!("smtp://{sink}");
    let desk = Desk::start(&[
        ("relay", &relay),
        ("from", "Support <help@support.example>"),
        ("hostname", "desk.example"),
    ])
    .await;
    let from = "ops@customer.example";
    let report = message(
        from,
        "Recorder beeps",
        "Message-ID: <c1@customer.example>\r\n",
        "It beeps every minute.",
    );
    assert_eq!(
        desk.send(from, "help@support.example", &report).await.0,
        250
    );
    let ticket = desk.of(from, 1).await[0].ticket.clone().unwrap();

    // One acknowledgement, automatic, in the customer's thread.
    let ack = relayed(&mails, 1).await;
    assert_eq!(ack.len(), 1, "acknowledged");
    assert!(
        ack[0].contains(&format!("[{}]", ticket.number)),
        "{}",
        ack[0]
    );
    assert!(ack[0].contains("Auto-Submitted: auto-replied"));
    assert!(ack[0].contains("In-Reply-To: <c1@customer.example>"));
    // A second new report from them within ten minutes: no second one.
    let other = message(
        from,
        "Another site",
        "Message-ID: <c2@customer.example>\r\n",
        "x",
    );
    assert_eq!(desk.send(from, "help@support.example", &other).await.0, 250);
    desk.of(from, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mails.lock().unwrap().len(),
        1,
        "one acknowledgement per sender per 10 minutes"
    );

    // The agent's reply goes out with the tag and the thread's headers.
    let replied = desk
        .tickets()
        .add_article(hotline_proto::tickets::v1::AddArticleRequest {
            ticket: ticket.number.clone(),
            kind: ArticleKind::AgentReply as i32,
            body: "Please send a photo of the display.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let article = replied.article.unwrap();
    let out = relayed(&mails, 2).await;
    let reply = out.get(1).expect("the reply was emailed");
    assert!(reply.contains("To: ops@customer.example"), "{reply}");
    assert!(reply.contains(&format!("[{}]", ticket.number)));
    // Our Message-IDs are random: none names the ticket or the article.
    let ours = |mail: &str| {
        mail.lines()
            .find_map(|line| line.strip_prefix("Message-ID: <"))
            .and_then(|id| id.strip_suffix('>'))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no Message-ID in {mail}"))
    };
    let reply_id = ours(reply);
    for id in [&reply_id, &ours(&out[0])] {
        let (token, host) = id.split_once('@').unwrap();
        assert_eq!(host, "desk.example");
        assert_eq!(token.len(), 32, "{id}");
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    assert_ne!(reply_id, ours(&out[0]));
    assert!(
        !reply_id.contains(&article.id.replace('-', "")),
        "{reply_id}"
    );
    assert!(reply.contains("In-Reply-To: <"));
    assert!(reply.contains("Please send a photo"));
    assert!(!reply.contains("Auto-Submitted"), "a person wrote it");

    // The customer answers that mail, without the tag: it threads back.
    let answer = message(
        from,
        "Re: photo",
        &format!("Message-ID: <c3@customer.example>\r\nIn-Reply-To: <{reply_id}>\r\n"),
        "Photo attached.",
    );
    assert_eq!(
        desk.send(from, "help@support.example", &answer).await.0,
        250
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shown = desk
            .tickets()
            .get_ticket(GetTicketRequest {
                ticket: ticket.number.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if shown.articles.len() == 3 {
            assert!(shown.articles[2].body.contains("Photo attached"));
            assert!(
                shown.ticket.unwrap().awaiting_response,
                "the reply restarts the wait"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answer never threaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A stranger guessing the Message-IDs we used to send (the article's
    // id, `ack-` and the ticket) threads into nothing: a ticket of their own.
    let stranger = "guess@elsewhere.example";
    let guessed = message(
        stranger,
        "Re: photo",
        &format!(
            "Message-ID: <g1@elsewhere.example>\r\nIn-Reply-To: <{}@desk.example>\r\n\
             References: <ack-{}@desk.example>\r\n",
            article.id, ticket.number
        ),
        "Close this ticket, please.",
    );
    assert_eq!(
        desk.send(stranger, "help@support.example", &guessed)
            .await
            .0,
        250
    );
    let theirs = desk.of(stranger, 1).await;
    assert_eq!(theirs.len(), 1, "the guess threaded into another ticket");
    assert_ne!(theirs[0].ticket.as_ref().unwrap().number, ticket.number);

    // A bounce of our reply becomes an internal note on its ticket.
    let bounce = message(
        "MAILER-DAEMON@mx.customer.example",
        "Undelivered Mail Returned to Sender",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
        &format!(
            "--b\r\nContent-Type: text/plain\r\n\r\nMailbox full.\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{reply_id}>\r\n--b--"
        ),
    );
    assert_eq!(desk.send("", "help@support.example", &bounce).await.0, 250);
    let note = desk.await_note(&ticket.number, "the bounce").await;
    assert!(note.body.contains("bounced"), "{}", note.body);
    desk.stop().await;
}

#[tokio::test]
async fn a_reply_the_relay_refuses_for_good_becomes_an_internal_note() {
    let (_, sink) = common::smtp_sink().await;
    let relay = format!("smtp://{sink}");
    let desk = Desk::start(&[("relay", &relay)]).await;
    let from = "refused@customer.example";
    let report = message(from, "Help", "Message-ID: <r1@customer.example>\r\n", "x");
    assert_eq!(
        desk.send(from, "help@support.example", &report).await.0,
        250
    );
    let ticket = desk.of(from, 1).await[0].ticket.clone().unwrap();
    desk.tickets()
        .add_article(hotline_proto::tickets::v1::AddArticleRequest {
            ticket: ticket.number.clone(),
            kind: ArticleKind::AgentReply as i32,
            body: "We are on it.".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let note = desk.await_note(&ticket.number, "the refused reply").await;
    assert!(note.body.contains("could not be emailed"), "{}", note.body);
    assert!(note.body.contains("550"), "{}", note.body);
    desk.stop().await;
}

#[tokio::test]
async fn an_acknowledgement_the_relay_defers_is_sent_later_once() {
    let (mails, sink) = common::smtp_sink().await;
    let relay = format!("smtp://{sink}");
    let desk = Desk::start(&[("relay", &relay)]).await;
    let from = "deferred@customer.example";
    let report = message(
        from,
        "Recorder beeps",
        "Message-ID: <d1@customer.example>\r\n",
        "x",
    );
    let sent = tokio::time::Instant::now();
    assert_eq!(
        desk.send(from, "help@support.example", &report).await.0,
        250
    );
    let ticket = desk.of(from, 1).await[0].ticket.clone().unwrap();
    // The first attempt got 451; the next comes after the first backoff.
    let ack = relayed(&mails, 1).await;
    assert_eq!(ack.len(), 1, "the acknowledgement was never sent");
    assert!(
        sent.elapsed() >= Duration::from_secs(4),
        "sent {:?} after the mail, before any backoff",
        sent.elapsed()
    );
    assert!(
        ack[0].contains(&format!("[{}]", ticket.number)),
        "{}",
        ack[0]
    );
    assert!(
        ack[0].contains("To: deferred@customer.example"),
        "{}",
        ack[0]
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mails.lock().unwrap().len(), 1, "sent once");
    desk.stop().await;
}

/// Sends a message over STARTTLS; prints what the server offered and did.
const SEND_TLS: &str = r#"
import json, smtplib, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
with smtplib.SMTP(host, port, timeout=10) as smtp:
    smtp.ehlo("mx.customer.example")
    offered = smtp.has_extn("starttls")
    smtp.starttls(context=ssl._create_unverified_context())
    smtp.ehlo("mx.customer.example")
    again = smtp.has_extn("starttls")
    smtp.sendmail("tls@customer.example", ["help@support.example"],
        b"From: tls@customer.example\r\nSubject: Over TLS\r\nMessage-ID: <tls1@customer.example>\r\n\r\nEncrypted.\r\n")
    print(json.dumps({"offered": offered, "offered_again": again, "cipher": smtp.sock.cipher()[0]}))
"#;

#[tokio::test]
async fn with_a_certificate_the_server_offers_starttls_and_takes_mail_over_it() {
    let dir = std::env::temp_dir().join(format!("hotline-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=desk.example", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let desk = Desk::start(&[
        ("tls_cert", cert.to_str().unwrap()),
        ("tls_key", key.to_str().unwrap()),
    ])
    .await;
    let output = tokio::process::Command::new("python3")
        .args(["-c", SEND_TLS, "127.0.0.1", &desk.smtp.port().to_string()])
        .output()
        .await
        .unwrap();
    let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(result["offered"], true);
    assert_eq!(result["offered_again"], false, "not offered once encrypted");
    assert!(result["cipher"].as_str().is_some_and(|c| !c.is_empty()));
    let tickets = desk.of("tls@customer.example", 1).await;
    assert_eq!(tickets[0].ticket.clone().unwrap().subject, "Over TLS");
    desk.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A sending mail server: each message retried until it gets its 250, as
/// an MTA's queue does (a refused connection, a 4xx or a cut session is
/// tried again).
const SEND_UNTIL_ACCEPTED: &str = r#"
import smtplib, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for n in range(count):
    sender = f"k{n}@customer.example"
    message = (f"From: {sender}\r\nTo: help@support.example\r\nSubject: Fault {n}\r\n"
               f"Message-ID: <k{n}@customer.example>\r\n\r\nRecorder {n} is down.\r\n").encode()
    while True:
        try:
            with smtplib.SMTP(host, port, timeout=5) as smtp:
                smtp.sendmail(sender, ["help@support.example"], message)
            break
        except (OSError, smtplib.SMTPException):
            time.sleep(0.1)
print("sent")
"#;

#[tokio::test]
async fn killing_the_desk_mid_flow_loses_no_mail_and_doubles_none() {
    let env = TestEnv::new().await.unwrap();
    env.migrate(&hotline::fleet::modules()).await.unwrap();
    let (grpc, http, smtp) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let smtp_addr = smtp.to_string();
    let settings = [
        ("HOTLINE_INTAKE__SMTP_ADDR", smtp_addr.as_str()),
        ("HOTLINE_INTAKE__DOMAINS", "support.example"),
        ("HOTLINE_INTAKE__SENDER_RATE_PER_MINUTE", "0"),
    ];
    let mut desk = common::serve(&env, grpc, http, &settings).await;
    const MAILS: usize = 60;
    let mta = tokio::process::Command::new("python3")
        .args([
            "-c",
            SEND_UNTIL_ACCEPTED,
            "127.0.0.1",
            &smtp.port().to_string(),
        ])
        .arg(MAILS.to_string())
        .output();
    let mta = tokio::spawn(mta);
    // SIGKILL twice while mail is flowing; the sender keeps retrying.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        desk.start_kill().unwrap();
        desk.wait().await.unwrap();
        desk = common::serve(&env, grpc, http, &settings).await;
    }
    let sent = mta.await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&sent.stdout).trim(), "sent");

    common::assert_one_ticket_each(&env, grpc, MAILS, "message").await;
    desk.start_kill().unwrap();
    desk.wait().await.unwrap();
    env.cleanup_bus(&["sla", "pager", "intake"]).await.unwrap();
}

/// Sends the hostile corpus with smtplib, each message from its own
/// envelope sender; prints one JSON line per message: its name, sender,
/// the server's final code, and a text of its body that must reach the
/// ticket (`null` where none is expected).
const HOSTILE: &str = r#"
import json, smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])

def mail(n, headers, body):
    return headers.encode() + b"\r\n" + body if isinstance(body, bytes) else (headers + "\r\n" + body).encode()

corpus = []
def add(name, raw, marker):
    corpus.append((name, raw if isinstance(raw, bytes) else raw.encode(), marker))

h = lambda name, extra="": f"From: {name}@corpus.example\r\nTo: help@support.example\r\n{extra}"
add("nul-subject", h("nul-subject", "Subject: dark\x00camera\r\n") + "\r\nNUL in the subject.\r\n", "NUL in the subject.")
add("subject-980", h("subject-980", "Subject: " + "\r\n ".join(["Kamera ausgefallen"] * 54) + "\r\n") + "\r\nLong subject 980.\r\n", "Long subject 980.")
add("subject-2000", h("subject-2000", "Subject: " + "x" * 900 + "\r\n " + "y" * 900 + "\r\n " + "z" * 200 + "\r\n") + "\r\nLong subject 2000.\r\n", "Long subject 2000.")
parts = "".join(f"--p\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=f{n}.bin\r\n\r\n\r\n" for n in range(36657))
add("many-parts", h("many-parts", "Subject: parts\r\nContent-Type: multipart/mixed; boundary=p\r\n") + "\r\n--p\r\nContent-Type: text/plain\r\n\r\nMany parts text.\r\n" + parts + "--p--\r\n", "Many parts text.")
add("no-headers", "Camera 7 is dark\r\n  since this morning, please help.\r\n", "since this morning, please help.")
add("no-separator", h("no-separator", "Subject: sep\r\n") + "The recorder reboots every hour.\r\n", "The recorder reboots every hour.")
add("part-no-separator", h("part-no-separator", "Subject: p\r\nContent-Type: multipart/mixed; boundary=b\r\n") + "\r\n--b\r\nA part with no headers at all.\r\n--b--\r\n", "A part with no headers at all.")
add("boundary-never", h("boundary-never", "Subject: b\r\nContent-Type: multipart/mixed; boundary=never\r\n") + "\r\nText with a boundary that never comes.\r\n", "Text with a boundary that never comes.")
add("boundary-unclosed", h("boundary-unclosed", "Subject: b\r\nContent-Type: multipart/alternative; boundary=b\r\n") + "\r\n--b\r\nContent-Type: text/plain\r\n\r\nUnclosed multipart text.\r\n", "Unclosed multipart text.")
add("8bit-headers", h("8bit-headers").encode() + b"Subject: Kamera f\xc3\xa4llt aus \xe6\x91\x84\xe5\x83\x8f\r\nX-Latin: caf\xe9\r\n\r\nEight-bit headers \xe4\xf6\xfc.\r\n", "Eight-bit headers")
add("unknown-charset", h("unknown-charset", "Subject: =?x-unknown?B?!!!?= =?utf-8?Q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: quoted-printable\r\n") + "\r\nBroken =ZZ encodings =\r\nstill read.\r\n", "still read.")
add("huge-header", h("huge-header", "X-Junk: " + "\r\n ".join(["j" * 900] * 200) + "\r\nSubject: " + "\r\n ".join(["s" * 900] * 60) + "\r\n") + "\r\nHuge headers.\r\n", "Huge headers.")
nested = "Innermost text."
for d in range(40):
    nested = f"Content-Type: multipart/mixed; boundary=n{d}\r\nSubject: level {d}\r\n\r\n--n{d}\r\nContent-Type: text/plain\r\n\r\nLevel {d}.\r\n--n{d}\r\nContent-Type: message/rfc822\r\n\r\n{nested}\r\n--n{d}--"
add("nested-rfc822", h("nested-rfc822", "Subject: nested\r\n") + nested + "\r\n", "Level 39.")
digest = "".join(f"--d\r\n\r\nFrom: x{n}@y.example\r\nSubject: item {n}\r\n\r\nDigest item {n}.\r\n" for n in range(30))
add("digest", h("digest", "Subject: digest\r\nContent-Type: multipart/mixed; boundary=o\r\n") + "\r\n--o\r\nContent-Type: text/plain\r\n\r\nDigest cover text.\r\n--o\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n" + digest + "--d--\r\n--o--\r\n", "Digest cover text.")
add("bare-cr", h("bare-cr", "Subject: cr\r\n") + "\r\nOne\rTwo\rBare CR text.\r\n", "Bare CR text.")
add("long-message-id", h("long-message-id", "Subject: id\r\nMessage-ID: <" + "m" * 960 + "@corpus.example>\r\nReferences: " + "\r\n ".join(f"<r{n}@x>" for n in range(2000)) + "\r\n") + "\r\nLong Message-ID.\r\n", "Long Message-ID.")
add("control-from", "From: =?utf-8?Q?Eve=1B]0;pwn=07?= <control-from@corpus.example>\r\nSubject: =?utf-8?Q?ESC=1B[2J_BEL=07_NUL=00?=\r\n\r\nControl \x1b[31mcharacters\x1b[0m in text.\r\n", "characters")
add("html-only", h("html-only", "Subject: html\r\nContent-Type: text/html; charset=utf-8\r\n") + "\r\n<p>HTML only <b>text</b>\x00</p><script>alert(1)</script>\r\n", "HTML only")
add("empty", h("empty", "Subject: \r\n") + "\r\n", None)
add("headers-only", h("headers-only", "Subject: nothing else"), None)
add("reuse-a", h("reuse", "Subject: first\r\nMessage-ID: <same@corpus.example>\r\n") + "\r\nFirst message with the id.\r\n", "First message with the id.")
add("reuse-b", h("reuse", "Subject: second\r\nMessage-ID: <same@corpus.example>\r\n") + "\r\nSecond message reusing the id.\r\n", "Second message reusing the id.")
add("retry-1", "Received: from a\r\n" + h("retry", "Subject: retried\r\nMessage-ID: <retry@corpus.example>\r\n") + "\r\nRetried once by its MTA.\r\n", "Retried once by its MTA.")
add("retry-2", "Received: from b\r\n" + h("retry", "Subject: retried\r\nMessage-ID: <retry@corpus.example>\r\n") + "\r\nRetried once by its MTA.\r\n", "Retried once by its MTA.")
add("long-line", h("long-line", "Subject: line\r\n") + "\r\n" + "x" * 2000 + "\r\n", None)

for name, raw, marker in corpus:
    sender = name.split("-")[0] + "@corpus.example" if name.startswith(("reuse", "retry")) else f"{name}@corpus.example"
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.sendmail(sender, ["help@support.example"], raw)
        code = 250
    except smtplib.SMTPResponseException as refused:
        code = refused.smtp_code
    except smtplib.SMTPDataError as refused:
        code = refused.smtp_code
    print(json.dumps({"name": name, "sender": sender, "code": code, "marker": marker}))
"#;

#[tokio::test]
async fn hostile_mail_that_got_250_ends_as_a_ticket_an_article_or_a_recorded_robot() {
    let desk = Desk::start(&[("sender_rate_per_minute", "0")]).await;
    let output = tokio::process::Command::new("python3")
        .args(["-c", HOSTILE, "127.0.0.1", &desk.smtp.port().to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(sent.len(), 25);
    let code = |name: &str| {
        sent.iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["code"].as_u64())
    };
    assert_eq!(code("long-line"), Some(500), "a line over 998 characters");
    assert_eq!(code("bare-cr"), Some(550), "a bare CR refuses the message");
    let accepted: Vec<&Value> = sent.iter().filter(|s| s["code"] == 250).collect();
    assert_eq!(accepted.len(), 23, "{sent:?}");

    // Every accepted mail is forwarded: a ticket or article, or a reason.
    let pool = desk.env.pool("intake").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let rows: Vec<(String, Option<String>, Option<String>)> = loop {
        let rows: Vec<(String, Option<String>, Option<String>, bool)> = sqlx::query_as(
            "SELECT mail_from, ticket_number, ignored, forwarded_at IS NOT NULL FROM mails ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let waiting: Vec<&String> = rows.iter().filter(|r| !r.3).map(|r| &r.0).collect();
        if waiting.is_empty() && rows.len() == accepted.len() {
            break rows.into_iter().map(|r| (r.0, r.1, r.2)).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never forwarded (dead-lettered?): {waiting:?} of {} stored",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (from, ticket, ignored) in &rows {
        assert!(
            ticket.is_some() && ignored.is_none(),
            "{from}: a person's mail went nowhere ({ignored:?})"
        );
    }
    // The text reached the ticket, however malformed the mail.
    for mail in &accepted {
        let Some(marker) = mail["marker"].as_str() else {
            continue;
        };
        // A mail without a From is the envelope sender's.
        let tickets = desk.of(mail["sender"].as_str().unwrap(), 1).await;
        assert!(
            tickets
                .iter()
                .flat_map(|t| &t.articles)
                .any(|a| a.body.contains(marker)),
            "{}: {marker:?} not in {:?}",
            mail["name"],
            tickets
                .iter()
                .flat_map(|t| &t.articles)
                .map(|a| a.body.chars().take(300).collect::<String>())
                .collect::<Vec<_>>()
        );
    }
    // The same message twice is one article; another reusing its
    // Message-ID is a message of its own.
    let retried = desk.of("retry@corpus.example", 1).await;
    assert_eq!(retried.iter().map(|t| t.articles.len()).sum::<usize>(), 1);
    let reused = desk.of("reuse@corpus.example", 2).await;
    assert_eq!(reused.iter().map(|t| t.articles.len()).sum::<usize>(), 2);
    // Single-line fields arrive clean and within the limits.
    let controlled = desk.of("control-from@corpus.example", 1).await;
    let subject = &controlled[0].ticket.as_ref().unwrap().subject;
    assert!(!subject.chars().any(char::is_control), "{subject:?}");
    let long = desk.of("subject-2000@corpus.example", 1).await;
    let ticket = long[0].ticket.as_ref().unwrap();
    assert!(ticket.subject.chars().count() <= 250);
    assert!(
        long[0].articles[0].body.contains(&"z".repeat(200)),
        "the whole subject is kept"
    );
    desk.stop().await;
}

#[tokio::test]
async fn a_third_party_writing_into_a_ticket_is_kept_flagged_and_wakes_nobody() {
    use hotline_proto::tickets::v1::{AddArticleRequest, TicketRef};
    let desk = Desk::start(&[]).await;
    let customer = "ops@customer.example";
    let first = message(
        customer,
        "NVR-8 reboots",
        "Message-ID: <t1@customer.example>\r\n",
        "Every hour.",
    );
    assert_eq!(
        desk.send(customer, "help@support.example", &first).await.0,
        250
    );
    let ticket = desk.of(customer, 1).await[0].ticket.clone().unwrap();
    // The desk answers: the ticket no longer awaits a response.
    desk.tickets()
        .add_article(AddArticleRequest {
            ticket: ticket.number.clone(),
            kind: ArticleKind::AgentReply as i32,
            body: "We are on it.".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A stranger who learned the number writes into it, by tag and by
    // replying to the customer's message.
    let stranger = "mallory@elsewhere.example";
    for (n, extra) in [
        (1, String::new()),
        (2, "In-Reply-To: <t1@customer.example>\r\n".to_owned()),
    ] {
        let subject = if n == 1 {
            format!("[{}] wake them up", ticket.number)
        } else {
            "Re: NVR-8 reboots".to_owned()
        };
        let forged = message(
            stranger,
            &subject,
            &format!("Message-ID: <s{n}@elsewhere.example>\r\n{extra}"),
            &format!("Stranger's message {n}."),
        );
        assert_eq!(
            desk.send(stranger, "help@support.example", &forged).await.0,
            250
        );
    }
    // Without a relay, the reply's article comes with an internal note
    // saying it was not mailed: the desk's own, left out here.
    let public = |shown: &[GetTicketResponse]| -> Vec<Article> {
        shown[0]
            .articles
            .iter()
            .filter(|a| a.kind != ArticleKind::InternalNote as i32)
            .cloned()
            .collect()
    };
    let shown = desk.of(customer, 5).await;
    assert_eq!(shown.len(), 1);
    let kinds: Vec<i32> = public(&shown).iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            ArticleKind::CustomerMessage as i32,
            ArticleKind::AgentReply as i32,
            ArticleKind::ThirdPartyMessage as i32,
            ArticleKind::ThirdPartyMessage as i32
        ]
    );
    assert_eq!(public(&shown)[3].author, stranger);
    assert!(
        !shown[0].ticket.as_ref().unwrap().awaiting_response,
        "a third party does not start the clock"
    );
    // Resolved, a third party's message does not reopen it; the
    // customer's own does.
    desk.tickets()
        .resolve_ticket(TicketRef {
            ticket: ticket.number.clone(),
        })
        .await
        .unwrap();
    let late = message(
        stranger,
        &format!("[{}] again", ticket.number),
        "Message-ID: <s3@elsewhere.example>\r\n",
        "Stranger again.",
    );
    assert_eq!(
        desk.send(stranger, "help@support.example", &late).await.0,
        250
    );
    let shown = desk.of(customer, 6).await;
    let ticket_now = shown[0].ticket.clone().unwrap();
    assert_eq!(public(&shown).len(), 5);
    assert_eq!(
        ticket_now.status,
        hotline_proto::tickets::v1::Status::Resolved as i32
    );
    assert!(!ticket_now.awaiting_response);
    let own = message(
        "Ops <OPS@customer.example>",
        &format!("Re: [{}] NVR-8 reboots", ticket.number),
        "Message-ID: <t2@customer.example>\r\n",
        "It rebooted again.",
    );
    assert_eq!(
        desk.send(customer, "help@support.example", &own).await.0,
        250
    );
    let shown = desk.of(customer, 7).await;
    let ticket_now = shown[0].ticket.clone().unwrap();
    assert_eq!(public(&shown)[5].kind, ArticleKind::CustomerMessage as i32);
    assert!(
        ticket_now.awaiting_response,
        "the customer's own reply reopens it"
    );
    desk.stop().await;
}
