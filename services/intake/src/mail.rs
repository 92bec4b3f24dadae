//! Reading an accepted message: who wrote it, about what, in reply to
//! what, and whether a person wrote it at all (ARCHITECTURE §8).
//!
//! Robots never open a ticket or a clock and are never answered:
//! auto-replies (RFC 3834 `Auto-Submitted` other than `no`, `Precedence:
//! bulk|junk|list`, `X-Auto-Response-Suppress`, `List-Unsubscribe`, an
//! `X-Loop` naming us) and bounces (the null sender, `multipart/report;
//! report-type=delivery-status`, `MAILER-DAEMON`).

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

/// Longest article body taken from a message; the rest is cut with a note.
const MAX_BODY_CHARS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The author's address, lower-case.
    pub from: String,
    pub subject: String,
    pub body: String,
    pub message_id: Option<String>,
    /// `In-Reply-To` then `References`, newest first.
    pub replies_to: Vec<String>,
    /// `HL-10023` when the subject carries `[HL-10023]`.
    pub tag: Option<String>,
    /// Why this is not a person writing, if it is not.
    pub robot: Option<&'static str>,
    /// The HTML body as sent, when there is one (tickets sanitises it).
    pub html: Option<String>,
    /// The attachments kept, within [`Limits`].
    pub files: Vec<File>,
}

/// A file that came with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// How many attachments, and how large, are kept with the ticket; the rest
/// stay in the stored original and the article says which.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_files: usize,
    pub max_file_bytes: usize,
}

/// The attachments of `message` within `limits`, and a line for each one
/// left out.
fn files(message: &mail_parser::Message<'_>, limits: Limits) -> (Vec<File>, Vec<String>) {
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for (n, part) in message.attachments().enumerate() {
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .or_else(|| {
                part.message()
                    .and_then(|m| m.subject())
                    .map(|s| format!("{s}.eml"))
            })
            .unwrap_or_else(|| format!("attachment-{}", n + 1));
        let content_type = match part.content_type() {
            Some(ct) => match ct.subtype() {
                Some(sub) => format!("{}/{sub}", ct.ctype()),
                None => ct.ctype().to_owned(),
            },
            None if part.is_message() => "message/rfc822".to_owned(),
            None => String::new(),
        };
        let size = part.len();
        if kept.len() >= limits.max_files {
            left_out.push(format!(
                "{name} ({size} bytes): more than {} attachments",
                limits.max_files
            ));
        } else if size > limits.max_file_bytes {
            left_out.push(format!(
                "{name} ({size} bytes): larger than {} bytes",
                limits.max_file_bytes
            ));
        } else {
            kept.push(File {
                name,
                content_type,
                content: part.contents().to_vec(),
            });
        }
    }
    (kept, left_out)
}

/// The ticket tag in a subject: `[HL-10023]` → `HL-10023`.
pub fn tag(subject: &str) -> Option<String> {
    let mut rest = subject;
    while let Some(start) = rest.find("[HL-") {
        let after = &rest[start + 4..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && after[digits.len()..].starts_with(']') {
            return Some(format!("HL-{digits}"));
        }
        rest = after;
    }
    None
}

fn text_list(value: &HeaderValue) -> Vec<String> {
    match value {
        HeaderValue::Text(text) => vec![text.to_string()],
        HeaderValue::TextList(list) => list.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The sender of a message taken from a mailbox, where no SMTP envelope
/// came with it: `Return-Path` as the delivering server recorded it (`<>`
/// for a bounce: `""`), else the `From` address, else `""` (nobody to
/// answer).
pub fn sender(raw: &[u8]) -> String {
    let Some(headers) = MessageParser::default().parse_headers(raw) else {
        return String::new();
    };
    if let Some(path) = headers.header_raw("Return-Path") {
        return path
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim()
            .to_ascii_lowercase();
    }
    headers
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .map(|a| a.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads `raw`, sent by `envelope_from` (`""` for the null sender);
/// `hostname` is how we name ourselves in `X-Loop`; attachments within
/// `limits`. `None` when it is not a message at all.
pub fn read(raw: &[u8], envelope_from: &str, hostname: &str, limits: Limits) -> Option<Inbound> {
    let message = MessageParser::default().parse(raw)?;
    let from = message
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .unwrap_or(envelope_from)
        .trim()
        .to_ascii_lowercase();
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let content_type = message.content_type();
    let report = content_type.is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    let robot = if envelope_from.is_empty() {
        Some("bounce: null sender")
    } else if report {
        Some("bounce: delivery status report")
    } else if from.starts_with("mailer-daemon@") || from.starts_with("postmaster@") {
        Some("bounce: mailer daemon")
    } else if header("Auto-Submitted").is_some_and(|v| v != "no") {
        Some("auto-reply: Auto-Submitted")
    } else if header("Precedence").is_some_and(|v| matches!(v.as_str(), "bulk" | "junk" | "list")) {
        Some("auto-reply: Precedence")
    } else if header("X-Auto-Response-Suppress").is_some() {
        Some("auto-reply: X-Auto-Response-Suppress")
    } else if header("List-Unsubscribe").is_some() {
        Some("list mail: List-Unsubscribe")
    } else if header("X-Loop").is_some_and(|v| v.contains(&hostname.to_ascii_lowercase())) {
        Some("loop: X-Loop names us")
    } else {
        None
    };
    let subject = message
        .subject()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(no subject)".into());
    let mut body = message
        .body_text(0)
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "(no text)".into());
    if body.chars().count() > MAX_BODY_CHARS {
        body = body.chars().take(MAX_BODY_CHARS).collect();
        body.push_str("\n[… cut: the message is longer]");
    }
    let (files, left_out) = files(&message, limits);
    if !left_out.is_empty() {
        body.push_str("\n\n[Attachments kept only in the original mail: ");
        body.push_str(&left_out.join("; "));
        body.push(']');
    }
    let html = message
        .html_bodies()
        .find(|part| part.is_text_html())
        .and_then(|part| part.text_contents())
        .map(str::to_owned);
    let mut replies_to = text_list(message.in_reply_to());
    replies_to.extend(text_list(message.references()).into_iter().rev());
    Some(Inbound {
        tag: tag(&subject),
        from,
        subject,
        body: body.replace('\0', ""),
        message_id: message.message_id().map(str::to_owned),
        replies_to,
        robot,
        html,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_files: 2,
        max_file_bytes: 10,
    };

    fn mail(headers: &str, body: &str) -> Vec<u8> {
        format!("{headers}\r\n\r\n{body}\r\n").into_bytes()
    }

    #[test]
    fn a_person_writing_is_read_with_threading_headers() {
        let raw = mail(
            "From: Ana Ops <Ana@Customer.example>\r\nTo: help@support.example\r\nSubject: Re: [HL-10023] Camera 4 dark\r\nMessage-ID: <m2@customer.example>\r\nIn-Reply-To: <hl-1@support.example>\r\nReferences: <m0@customer.example> <hl-1@support.example>",
            "Still dark.",
        );
        let inbound = read(&raw, "ana@customer.example", "hotline", LIMITS).unwrap();
        assert_eq!(inbound.from, "ana@customer.example");
        assert_eq!(inbound.tag.as_deref(), Some("HL-10023"));
        assert_eq!(inbound.message_id.as_deref(), Some("m2@customer.example"));
        assert_eq!(inbound.replies_to[0], "hl-1@support.example");
        assert!(
            inbound
                .replies_to
                .contains(&"m0@customer.example".to_owned())
        );
        assert_eq!(inbound.body, "Still dark.");
        assert_eq!(inbound.robot, None);
    }

    #[test]
    fn every_kind_of_robot_is_recognised() {
        let robot = |headers: &str, from: &str| {
            read(
                &mail(
                    &format!("From: x@y.example\r\nSubject: s\r\n{headers}"),
                    "b",
                ),
                from,
                "hotline",
                LIMITS,
            )
            .and_then(|i| i.robot)
        };
        assert!(robot("Auto-Submitted: auto-replied", "x@y.example").is_some());
        assert!(robot("Auto-Submitted: no", "x@y.example").is_none());
        assert!(robot("Precedence: bulk", "x@y.example").is_some());
        assert!(robot("X-Auto-Response-Suppress: All", "x@y.example").is_some());
        assert!(robot("List-Unsubscribe: <mailto:u@y.example>", "x@y.example").is_some());
        assert!(robot("X-Loop: hotline", "x@y.example").is_some());
        assert!(robot("X-Mailer: person", "").is_some(), "null sender");
        assert!(
            robot(
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
                "x@y.example"
            )
            .is_some()
        );
        assert!(
            read(
                &mail("From: MAILER-DAEMON@y.example\r\nSubject: s", "b"),
                "m@y.example",
                "hotline",
                LIMITS
            )
            .and_then(|i| i.robot)
            .is_some()
        );
    }

    #[test]
    fn any_charset_and_encoding_reads_as_text() {
        let raw = mail(
            "From: x@y.example\r\nSubject: =?GB2312?B?yePP8c23srvBwQ==?=\r\nContent-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: base64",
            "yePP8c23srvBwQ==",
        );
        let inbound = read(&raw, "x@y.example", "hotline", LIMITS).unwrap();
        assert_eq!(inbound.subject, "摄像头不亮");
        assert_eq!(inbound.body, "摄像头不亮");
    }

    #[test]
    fn a_mailbox_message_is_sent_by_its_return_path_or_author() {
        let bounce = mail("Return-Path: <>\r\nFrom: MAILER-DAEMON@y.example", "b");
        assert_eq!(sender(&bounce), "");
        let delivered = mail(
            "Return-Path: <Ana@Customer.example>\r\nFrom: Other <o@y.example>",
            "b",
        );
        assert_eq!(sender(&delivered), "ana@customer.example");
        assert_eq!(
            sender(&mail("From: Ana <ana@c.example>", "b")),
            "ana@c.example"
        );
    }

    #[test]
    fn attachments_are_kept_within_limits_and_the_rest_named_in_the_body() {
        let raw = mail(
            "From: x@y.example\r\nSubject: logs\r\nContent-Type: multipart/mixed; boundary=b",
            "--b\r\nContent-Type: text/plain\r\n\r\nSee the logs.\r\n\
             --b\r\nContent-Type: text/plain; name=a.log\r\nContent-Disposition: attachment; filename=a.log\r\n\r\nshort\r\n\
             --b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAAAAAAAAAAAAAAAAAAAAAA\r\n\
             --b\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"p.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n\
             --b\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=q.png\r\n\r\nq\r\n--b--",
        );
        let inbound = read(&raw, "x@y.example", "hotline", LIMITS).unwrap();
        let kept: Vec<(&str, &str, &[u8])> = inbound
            .files
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.content_type.as_str(),
                    f.content.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("a.log", "text/plain", b"short".as_slice()),
                ("p.png", "image/png", b"\x89PNG".as_slice())
            ]
        );
        assert!(inbound.body.starts_with("See the logs."));
        assert!(
            inbound
                .body
                .contains("big.bin (18 bytes): larger than 10 bytes")
        );
        assert!(
            inbound
                .body
                .contains("q.png (1 bytes): more than 2 attachments")
        );
    }

    #[test]
    fn html_is_kept_as_sent_and_its_text_carries_no_script() {
        let raw = mail(
            "From: x@y.example\r\nSubject: s\r\nContent-Type: text/html; charset=utf-8",
            "<p>Camera <b>4</b> is dark</p><script>alert('x')</script><img src=x onerror=alert(1)>",
        );
        let inbound = read(&raw, "x@y.example", "hotline", LIMITS).unwrap();
        assert!(inbound.html.as_deref().unwrap().contains("<b>4</b>"));
        assert!(
            inbound.body.contains("Camera 4 is dark"),
            "{}",
            inbound.body
        );
        assert!(!inbound.body.contains("alert"), "{}", inbound.body);
        let plain = read(
            &mail("From: x@y.example\r\nSubject: s", "b"),
            "x@y.example",
            "hotline",
            LIMITS,
        );
        assert_eq!(plain.unwrap().html, None, "a text mail has no HTML");
    }

    #[test]
    fn deep_nesting_and_broken_encodings_still_read() {
        let mut body = String::from("Deep inside.");
        for depth in 0..60 {
            body = format!(
                "--n{depth}\r\nContent-Type: multipart/mixed; boundary=n{}\r\n\r\n{body}\r\n--n{depth}--",
                depth + 1
            );
        }
        let nested = mail(
            "From: x@y.example\r\nSubject: =?utf-8?B?broken?=\r\nContent-Type: multipart/mixed; boundary=n0",
            &body,
        );
        assert!(read(&nested, "x@y.example", "hotline", LIMITS).is_some());
        let broken = mail(
            "From: x@y.example\r\nSubject: s\r\nContent-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64",
            "!!!not base64!!!",
        );
        let inbound = read(&broken, "x@y.example", "hotline", LIMITS).unwrap();
        assert!(!inbound.body.is_empty());
    }

    #[test]
    fn a_tag_needs_its_brackets_and_digits() {
        assert_eq!(tag("[HL-5] x").as_deref(), Some("HL-5"));
        assert_eq!(tag("HL-5 x"), None);
        assert_eq!(tag("[HL-] [HL-x] [HL-77]").as_deref(), Some("HL-77"));
    }
}
