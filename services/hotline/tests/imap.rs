//! Email in from a hosted mailbox: a real Dovecot (Debian's
//! `dovecot-imapd`, started here on a free port), filled and inspected with
//! Python's `imaplib`, read by intake; the tickets read back over gRPC.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hotline_kit::testing::{TestApp, TestEnv};
use hotline_proto::tickets::v1::{Channel, GetTicketResponse};
use serde_json::Value;

mod common;

const USER: &str = "desk";
const PASSWORD: &str = "s3cret pass";

/// `append FOLDER` (the message on stdin), `flags FOLDER` (prints
/// `[[uid, "flags"], ...]`) or `unsee FOLDER` (clears `\Seen` everywhere).
const IMAP: &str = r#"
import imaplib, json, ssl, sys
port, tls, ca, command, folder = int(sys.argv[1]), sys.argv[2] == "tls", sys.argv[3], sys.argv[4], sys.argv[5]
if tls:
    imap = imaplib.IMAP4_SSL("localhost", port, ssl_context=ssl.create_default_context(cafile=ca), timeout=10)
else:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
imap.login("desk", "s3cret pass")
if command == "append":
    imap.create(folder)
    status, _ = imap.append(folder, None, None, sys.stdin.buffer.read())
    print(json.dumps(status))
elif command == "flags":
    status, _ = imap.select(folder)
    if status != "OK":
        print(json.dumps([]))
    else:
        _, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        print(json.dumps([item.decode() for item in data if item]))
elif command == "unsee":
    imap.select(folder)
    imap.uid("STORE", "1:*", "-FLAGS", "(\\Seen)")
    print(json.dumps("OK"))
imap.logout()
"#;

/// A Dovecot of this test's own: one user, maildirs in a temporary folder.
struct Dovecot {
    dir: PathBuf,
    port: u16,
    /// The certificate clients must trust, with TLS.
    ca: Option<PathBuf>,
}

fn dovecot_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("dovecot"))
        .find(|candidate| candidate.exists())
        .expect("dovecot is not installed (deploy/local/test installs dovecot-imapd)")
}

impl Dovecot {
    async fn start(tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("hl-imap-{}", uuid::Uuid::new_v4().simple()));
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        // Mail processes run as nobody.
        std::fs::set_permissions(&mail, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        std::fs::write(dir.join("users"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        let port = common::free_port().port();
        let ssl = if tls {
            // A private CA, and the server's certificate signed by it.
            let openssl = |args: &[&str]| {
                let made = std::process::Command::new("openssl")
                    .current_dir(&dir)
                    .args(args)
                    .output()
                    .unwrap();
                assert!(
                    made.status.success(),
                    "{}",
                    String::from_utf8_lossy(&made.stderr)
                );
            };
            std::fs::write(dir.join("leaf.ext"), "subjectAltName=DNS:localhost\n").unwrap();
            openssl(
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ]
                .into_iter()
                .chain([
                    "-subj",
                    "/CN=Desk Test CA",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                ])
                .collect::<Vec<_>>(),
            );
            openssl(
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                ]
                .into_iter()
                .chain(["-keyout", "key.pem", "-out", "leaf.csr"])
                .collect::<Vec<_>>(),
            );
            openssl(
                &[
                    "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                ]
                .into_iter()
                .chain([
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-extfile",
                    "leaf.ext",
                    "-out",
                    "cert.pem",
                ])
                .collect::<Vec<_>>(),
            );
            format!(
                "ssl = required\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\nssl_dh = </usr/share/dovecot/dh.pem\n",
                d = dir.display()
            )
        } else {
            "ssl = no\n".to_owned()
        };
        let (plain_port, tls_port) = if tls { (0, port) } else { (port, 0) };
        let d = dir.display();
        std::fs::write(
            dir.join("dovecot.conf"),
            format!(
                "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/state\n\
                 log_path = {d}/dovecot.log\n{ssl}disable_plaintext_auth = no\n\
                 auth_mechanisms = plain login\nfirst_valid_uid = 1\n\
                 mail_location = maildir:{d}/mail/%u\n\
                 default_internal_user = dovecot\ndefault_login_user = dovenull\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/users\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/mail/%u\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {plain_port}\n  }}\n\
                 inet_listener imaps {{\n    port = {tls_port}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        // It goes into the background: its output to a file, not a pipe
        // that would stay open.
        let errors = dir.join("start.log");
        let started = std::process::Command::new(dovecot_binary())
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&errors).unwrap())
            .status()
            .unwrap();
        assert!(
            started.success(),
            "dovecot did not start: {}",
            std::fs::read_to_string(&errors).unwrap_or_default()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "dovecot does not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            ca: tls.then(|| dir.join("ca.pem")),
            dir,
            port,
        }
    }

    /// The mailbox URL intake is given.
    fn url(&self, options: &str) -> String {
        let scheme = if self.ca.is_some() { "imaps" } else { "imap" };
        format!(
            "{scheme}://{USER}:{}@localhost:{}/INBOX{options}",
            PASSWORD.replace(' ', "%20"),
            self.port
        )
    }

    async fn imap(&self, command: &str, folder: &str, stdin: &str) -> Value {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", IMAP, &self.port.to_string()])
            .arg(if self.ca.is_some() { "tls" } else { "plain" })
            .arg(self.ca.as_deref().unwrap_or(Path::new("-")))
            .args([command, folder])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let output = child.wait_with_output().await.unwrap();
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "imaplib {command}: {} {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    async fn append(&self, message: &str) {
        assert_eq!(self.imap("append", "INBOX", message).await, "OK");
    }

    /// `(FLAGS ...)` of each message in `folder`.
    async fn flags(&self, folder: &str) -> Vec<String> {
        let listed = self.imap("flags", folder, "").await;
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item.as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until `folder` holds `count` messages, all of them `\Seen`.
    async fn await_seen(&self, folder: &str, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let flags = self.flags(folder).await;
            if flags.len() == count && flags.iter().all(|f| f.contains("\\Seen")) {
                return flags;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{folder} should hold {count} seen messages: {flags:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = std::process::Command::new(dovecot_binary())
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .arg("stop")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Desk {
    env: TestEnv,
    app: TestApp,
}

impl Desk {
    async fn start(settings: &[(&str, &str)]) -> Self {
        let mut env = TestEnv::new().await.unwrap();
        for (key, value) in settings {
            env.config.set("intake", key, value);
        }
        let app = env
            .start(&[hotline_tickets::module(), hotline_intake::module()])
            .await
            .unwrap();
        Self { env, app }
    }

    /// The tickets of `contact` with their articles, once they hold
    /// `articles` articles in all (or after 10 s).
    async fn of(&self, contact: &str, articles: usize) -> Vec<GetTicketResponse> {
        common::tickets_of(&self.env, &self.app, contact, articles).await
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
        self.env.cleanup_bus(&["intake"]).await.unwrap();
    }
}

fn message(from: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "Return-Path: <{from}>\r\nFrom: {from}\r\nTo: help@vendor.example\r\nSubject: {subject}\r\n{extra}\r\n{body}\r\n"
    )
}

#[tokio::test]
async fn mailbox_mail_becomes_tickets_marked_seen_only_once_stored_and_idle_brings_replies_at_once()
{
    let dovecot = Dovecot::start(false).await;
    // Waiting so long between looks, only IDLE can bring mail in time.
    let desk = Desk::start(&[("imap", &dovecot.url("")), ("imap_poll", "60s")]).await;
    let from = "ops@customer.example";
    dovecot
        .append(&message(
            from,
            "NVR-16 shows no picture",
            "Message-ID: <first@customer.example>\r\n",
            "Since 02:00 all channels are black.",
        ))
        .await;
    dovecot
        .append(&message(
            "robot@customer.example",
            "Out of office",
            "Auto-Submitted: auto-replied\r\n",
            "I am away.",
        ))
        .await;
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
    // Both taken (the robot's too, for nothing), so both marked.
    dovecot.await_seen("INBOX", 2).await;

    // The customer answers while intake waits in IDLE.
    dovecot
        .append(&message(
            from,
            &format!("Re: [{}] NVR-16 shows no picture", ticket.number),
            "Message-ID: <second@customer.example>\r\n",
            "Still black after the reboot.",
        ))
        .await;
    let threaded = desk.of(from, 2).await;
    assert_eq!(threaded.len(), 1, "the reply went on the same ticket");
    assert_eq!(
        threaded[0].articles.len(),
        2,
        "IDLE brought the reply within 10 s"
    );
    assert!(threaded[0].articles[1].body.contains("after the reboot"));
    dovecot.await_seen("INBOX", 3).await;
    assert!(
        desk.of("robot@customer.example", 0).await.is_empty(),
        "the auto-reply opened nothing"
    );
    desk.stop().await;
}

#[tokio::test]
async fn a_message_fetched_again_after_it_was_stored_is_taken_once() {
    let dovecot = Dovecot::start(false).await;
    let desk = Desk::start(&[("imap", &dovecot.url("")), ("imap_poll", "200ms")]).await;
    // No Message-ID: only the mailbox position tells it is the same message.
    let from = "ops@customer.example";
    dovecot
        .append(&message(
            from,
            "Camera 4 offline",
            "",
            "It dropped off at 03:10.",
        ))
        .await;
    assert_eq!(desk.of(from, 1).await.len(), 1);
    dovecot.await_seen("INBOX", 1).await;
    // As if intake had died between the commit and the mark.
    assert_eq!(dovecot.imap("unsee", "INBOX", "").await, "OK");
    dovecot.await_seen("INBOX", 1).await;
    // What a second take would have made has had time to appear.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tickets = desk.of(from, 0).await;
    assert_eq!(tickets.len(), 1, "no second ticket");
    assert_eq!(tickets[0].articles.len(), 1, "no second article");
    desk.stop().await;
}

#[tokio::test]
async fn an_imaps_mailbox_with_a_private_certificate_moves_taken_mail_away() {
    let dovecot = Dovecot::start(true).await;
    let ca = dovecot.ca.clone().unwrap();
    let desk = Desk::start(&[
        ("imap", &dovecot.url("?move=Processed")),
        ("imap_ca", ca.to_str().unwrap()),
        ("imap_poll", "60s"),
    ])
    .await;
    for n in 1..=3 {
        dovecot
            .append(&message(
                &format!("site{n}@customer.example"),
                &format!("Recorder {n} beeps"),
                "",
                "A disk warning.",
            ))
            .await;
    }
    for n in 1..=3 {
        let contact = format!("site{n}@customer.example");
        assert_eq!(desk.of(&contact, 1).await.len(), 1, "{contact}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(dovecot.flags("INBOX").await.is_empty() && dovecot.flags("Processed").await.len() == 3)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "taken mail should be moved to Processed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    desk.stop().await;
}

#[tokio::test]
async fn an_imaps_server_whose_certificate_is_not_trusted_gets_no_password_and_keeps_its_mail() {
    let dovecot = Dovecot::start(true).await;
    dovecot
        .append(&message(
            "ops@customer.example",
            "Camera 1 dark",
            "",
            "Dark.",
        ))
        .await;
    // The certificate is not trusted: no login, nothing taken.
    let desk = Desk::start(&[("imap", &dovecot.url("")), ("imap_poll", "200ms")]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(desk.of("ops@customer.example", 0).await.is_empty());
    let flags = dovecot.flags("INBOX").await;
    assert_eq!(flags.len(), 1);
    assert!(!flags[0].contains("\\Seen"), "{flags:?}");
    desk.stop().await;
}
