//! Reading an accepted message: who wrote it, about what, in reply to
//! what, and whether a person wrote it at all (ARCHITECTURE §8).
//!
//! Robots never open a ticket or a clock and are never answered:
//! auto-replies (RFC 3834 `Auto-Submitted` other than `no`, `Precedence:
//! bulk|junk|list`, `X-Auto-Response-Suppress`, `List-Unsubscribe`, an
//! `X-Loop` naming us) and bounces (the null sender, `multipart/report;
//! report-type=delivery-status`, `MAILER-DAEMON`).

use std::collections::HashSet;

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

/// Longest subject a ticket takes (what `tickets` allows is 500); a longer
/// one is cut, and the article starts with it in full.
const MAX_SUBJECT_CHARS: usize = 250;
/// How much of an over-long subject the article repeats.
const MAX_FULL_SUBJECT_CHARS: usize = 10_000;
/// Longest author address kept (what `tickets` allows for a contact).
const MAX_ADDRESS_CHARS: usize = 320;
/// Longest Message-ID remembered, in bytes (an index entry must fit a
/// PostgreSQL page; real ones are under 100).
const MAX_MESSAGE_ID_BYTES: usize = 900;
/// Largest HTML version kept (what `tickets` allows is 2 MiB).
const MAX_HTML_BYTES: usize = 2 * 1024 * 1024 - 1024;
/// Multipart boundaries a message may declare (RFC 2046 nests a handful;
/// mail-parser stops far earlier).
const MAX_BOUNDARIES: usize = 1000;
/// Attachments left out that the article names one by one; any more are
/// summed up in one line.
const MAX_NAMED_LEFT_OUT: usize = 10;

/// `value` as one line of at most `max` characters: control characters
/// (NUL, CR, LF, ESC, C1, ...) become spaces, runs of spaces one, and a cut
/// is marked with `…`.
pub fn one_line(value: &str, max: usize) -> String {
    let mut line = String::with_capacity(value.len().min(max.saturating_mul(4)));
    let mut chars = 0;
    // A space is written only when a word follows it.
    let mut space = false;
    for c in value.chars() {
        if c.is_control() || c.is_whitespace() {
            space = chars > 0;
            continue;
        }
        let needed = 1 + usize::from(space);
        if chars + needed > max {
            // What fits, then the mark in place of the last character.
            while chars >= max {
                line.pop();
                chars -= 1;
            }
            line.truncate(line.trim_end().len());
            line.push('…');
            return line;
        }
        if space {
            line.push(' ');
            space = false;
        }
        line.push(c);
        chars += needed;
    }
    line
}

/// The longest prefix of `value` within `max` bytes, cut at a character.
fn within_bytes(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Whether `line` opens or continues a header field as mail clients read
/// it (Python's `email` package: a field name of printable ASCII but the
/// colon, then a colon; or folding white space).
fn is_header_line(line: &[u8], first: bool) -> bool {
    if !first && matches!(line.first(), Some(b' ' | b'\t')) {
        return true;
    }
    let name_end = line.iter().position(|b| *b == b':');
    name_end.is_some_and(|end| end > 0 && line[..end].iter().all(|b| (33..=126).contains(b)))
}

/// Appends the header block of the entity starting at `bytes` to `out`,
/// with the blank line that ends it added where the sender left it out;
/// returns where the block ended in `bytes`. With `may_skip_from`, an mbox
/// `From ` line before the headers is dropped.
fn header_block(bytes: &[u8], out: &mut Vec<u8>, may_skip_from: bool) -> usize {
    let mut at = 0;
    let mut first = true;
    while at < bytes.len() {
        let end = bytes[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |n| at + n + 1);
        let line = &bytes[at..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if first && may_skip_from && text.starts_with(b"From ") {
            at = end;
            continue;
        }
        if text.is_empty() {
            return at;
        }
        if !is_header_line(text, first) {
            // A body with no blank line before it (or no headers at all):
            // the body starts here, as mail clients read it.
            out.extend_from_slice(b"\r\n");
            return at;
        }
        out.extend_from_slice(line);
        at = end;
        first = false;
    }
    at
}

/// The `boundary=` values in `raw` (at most [`MAX_BOUNDARIES`]).
fn boundaries(raw: &[u8]) -> HashSet<&[u8]> {
    const KEY: &[u8] = b"boundary=";
    let mut found = HashSet::new();
    let mut at = 0;
    while let Some(n) = raw[at..]
        .windows(KEY.len())
        .position(|w| w.eq_ignore_ascii_case(KEY))
    {
        let start = at + n + KEY.len();
        let rest = &raw[start..];
        let value = match rest.first() {
            Some(b'"') => rest[1..].split(|b| *b == b'"').next().unwrap_or_default(),
            _ => rest
                .split(|b| matches!(b, b';' | b'\r' | b'\n' | b' ' | b'\t'))
                .next()
                .unwrap_or_default(),
        };
        if !value.is_empty() && value.len() <= 200 {
            found.insert(value);
            if found.len() == MAX_BOUNDARIES {
                break;
            }
        }
        at = start;
    }
    found
}

/// `raw` as mail clients read it: the blank line between headers and body
/// added where the sender left it out — in the message and in each MIME
/// part — so the first lines of a body are never taken for headers.
/// Borrowed when nothing needed adding.
fn forgiving(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut at = header_block(raw, &mut out, true);
    let boundaries = boundaries(raw);
    // Boundaries in the order their first part opened, and those closed.
    let mut opened: Vec<&[u8]> = Vec::new();
    let mut closed: HashSet<&[u8]> = HashSet::new();
    while at < raw.len() {
        let end = raw[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |n| at + n + 1);
        let line = &raw[at..end];
        out.extend_from_slice(line);
        at = end;
        let Some(delimiter) = line.trim_ascii_end().strip_prefix(b"--") else {
            continue;
        };
        if let Some(boundary) = delimiter
            .strip_suffix(b"--")
            .filter(|b| boundaries.contains(*b))
        {
            closed.insert(boundary);
        } else if boundaries.contains(delimiter) {
            if !opened.contains(&delimiter) {
                opened.push(delimiter);
            }
            at += header_block(&raw[at..], &mut out, false);
        }
    }
    // A multipart cut off before its closing delimiter: closed at the end,
    // the innermost first, so its last part is read as the others are.
    for boundary in opened.iter().rev().filter(|b| !closed.contains(*b)) {
        if !out.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary);
        out.extend_from_slice(b"--\r\n");
    }
    if out == raw {
        std::borrow::Cow::Borrowed(raw)
    } else {
        std::borrow::Cow::Owned(out)
    }
}

/// The text after the top-level headers, as it came: what a reader shows
/// when the MIME structure yields none.
fn raw_body(raw: &[u8]) -> String {
    let mut headers = Vec::new();
    let at = header_block(raw, &mut headers, true);
    let body = &raw[at..];
    let body = body
        .strip_prefix(b"\r\n")
        .or_else(|| body.strip_prefix(b"\n"))
        .unwrap_or(body);
    String::from_utf8_lossy(body).trim().to_owned()
}

/// A message the parser could make nothing of: its raw bytes become the
/// ticket's attachment, so nothing the sender wrote is lost.
fn unreadable(raw: &[u8], envelope_from: &str, limits: Limits) -> Inbound {
    let mut body = String::from(
        "Hotline could not read this message as mail; the original is attached as sent.",
    );
    let files = if raw.len() <= limits.max_file_bytes && limits.max_files > 0 {
        vec![File {
            name: "original.eml".into(),
            content_type: "message/rfc822".into(),
            content: raw.to_vec(),
        }]
    } else {
        body = format!(
            "Hotline could not read this message as mail; the original ({} bytes) is kept \
             with the stored mail, too large to attach.",
            raw.len()
        );
        Vec::new()
    };
    Inbound {
        from: one_line(envelope_from, MAX_ADDRESS_CHARS).to_ascii_lowercase(),
        subject: "(unreadable message)".into(),
        body,
        message_id: None,
        replies_to: Vec::new(),
        tag: None,
        robot: envelope_from.is_empty().then_some("bounce: null sender"),
        html: None,
        files,
    }
}

/// What makes two deliveries the same message — an MTA's retry, or one
/// mail taken by SMTP and from a mailbox: its Message-ID, author and
/// subject, and every byte after its headers. The trace headers relays
/// add (`Received`, `Delivered-To`, ...) differ between deliveries and are
/// left out. A different message that reuses a Message-ID differs here.
pub fn fingerprint(raw: &[u8], inbound: &Inbound) -> String {
    use sha2::{Digest, Sha256};
    let mut headers = Vec::new();
    let body_at = header_block(raw, &mut headers, true);
    let mut hash = Sha256::new();
    for field in [
        inbound.message_id.as_deref().unwrap_or_default(),
        &inbound.from,
        &inbound.subject,
    ] {
        hash.update(field.as_bytes());
        hash.update([0]);
    }
    hash.update(&raw[body_at..]);
    hex::encode(&hash.finalize()[..16])
}

/// Reads `raw`, sent by `envelope_from` (`""` for the null sender);
/// `hostname` is how we name ourselves in `X-Loop`; attachments within
/// `limits`.
///
/// Whatever `raw` holds, the result fits what `tickets` takes: single-line
/// fields without control characters and within their lengths, the body
/// and HTML within theirs (what is cut stays in the stored original, and
/// the article says so). Malformed mail is read as forgivingly as mail
/// clients do; mail that cannot be read at all comes back with its raw
/// bytes as the one attachment.
pub fn read(raw: &[u8], envelope_from: &str, hostname: &str, limits: Limits) -> Inbound {
    let input = forgiving(raw);
    let Some(message) = MessageParser::default().parse(input.as_ref()) else {
        return unreadable(raw, envelope_from, limits);
    };
    let from = message
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .map(|a| one_line(a, MAX_ADDRESS_CHARS))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| one_line(envelope_from, MAX_ADDRESS_CHARS))
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
    let full_subject = message
        .subject()
        .map(|s| one_line(s, MAX_FULL_SUBJECT_CHARS))
        .unwrap_or_default();
    let subject = match one_line(&full_subject, MAX_SUBJECT_CHARS) {
        cut if cut.is_empty() => "(no subject)".to_owned(),
        cut => cut,
    };
    let mut body = (0..message.text_body.len())
        .filter_map(|n| message.body_text(n))
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    // A multipart whose boundary never comes has no parts: its text as it
    // came is the customer's, as mail clients show it.
    let unparted = content_type.is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct.attribute("boundary").is_none_or(|boundary| {
                let delimiter = format!("\n--{boundary}");
                !raw.windows(delimiter.len())
                    .any(|w| w == delimiter.as_bytes())
            })
    });
    let (files, left_out) = if unparted {
        (Vec::new(), Vec::new())
    } else {
        files(&message, limits)
    };
    if unparted || (body.is_empty() && files.is_empty() && left_out.is_empty()) {
        body = raw_body(raw);
    }
    let mut notes = Vec::new();
    if subject != full_subject && !full_subject.is_empty() {
        notes.push(format!("[The subject in full: {full_subject}]"));
    }
    let body_chars = body.chars().count();
    if body_chars > MAX_BODY_CHARS {
        body = body.chars().take(MAX_BODY_CHARS).collect();
        notes.push(format!(
            "[… cut after {MAX_BODY_CHARS} of {body_chars} characters: the rest is in the \
             original mail, kept as received]"
        ));
    }
    if !left_out.is_empty() {
        let named = left_out
            .iter()
            .take(MAX_NAMED_LEFT_OUT)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        notes.push(match left_out.len().saturating_sub(MAX_NAMED_LEFT_OUT) {
            0 => format!("[Attachments kept only in the original mail: {named}]"),
            more => format!(
                "[Attachments kept only in the original mail: {named}; and {more} more parts]"
            ),
        });
    }
    let mut html = message
        .html_bodies()
        .find(|part| part.is_text_html())
        .and_then(|part| part.text_contents())
        .map(|html| html.replace('\0', ""));
    if html.as_ref().is_some_and(|h| h.len() > MAX_HTML_BYTES) {
        html = None;
        notes.push(
            "[The HTML version is too large to show here; it is in the original mail]".into(),
        );
    }
    // Lines end in LF alone in an article, whatever the mail used; a bare
    // CR (which would rewrite a terminal's line) becomes a line break too.
    let body = body
        .replace('\0', "")
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let body = match (body, notes.join("\n")) {
        (body, notes) if notes.is_empty() && body.is_empty() => "(no text)".to_owned(),
        (body, notes) if notes.is_empty() => body,
        (body, notes) if body.is_empty() => notes,
        (body, notes) => format!("{body}\n\n{notes}"),
    };
    let id = |value: &str| {
        within_bytes(&one_line(value, MAX_MESSAGE_ID_BYTES), MAX_MESSAGE_ID_BYTES).to_owned()
    };
    let mut replies_to: Vec<String> = text_list(message.in_reply_to())
        .iter()
        .map(|r| id(r))
        .collect();
    replies_to.extend(text_list(message.references()).iter().rev().map(|r| id(r)));
    replies_to.retain(|r| !r.is_empty());
    replies_to.truncate(100);
    Inbound {
        tag: tag(&full_subject),
        from,
        subject,
        body,
        message_id: message.message_id().map(id).filter(|m| !m.is_empty()),
        replies_to,
        robot,
        html,
        files,
    }
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
        let inbound = read(&raw, "ana@customer.example", "hotline", LIMITS);
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
            .robot
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
            .robot
            .is_some()
        );
    }

    #[test]
    fn any_charset_and_encoding_reads_as_text() {
        let raw = mail(
            "From: x@y.example\r\nSubject: =?GB2312?B?yePP8c23srvBwQ==?=\r\nContent-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: base64",
            "yePP8c23srvBwQ==",
        );
        let inbound = read(&raw, "x@y.example", "hotline", LIMITS);
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
        let inbound = read(&raw, "x@y.example", "hotline", LIMITS);
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
        let inbound = read(&raw, "x@y.example", "hotline", LIMITS);
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
        assert_eq!(plain.html, None, "a text mail has no HTML");
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
        assert!(
            read(&nested, "x@y.example", "hotline", LIMITS)
                .body
                .contains("Deep inside.")
        );
        let broken = mail(
            "From: x@y.example\r\nSubject: s\r\nContent-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64",
            "!!!not base64!!!",
        );
        let inbound = read(&broken, "x@y.example", "hotline", LIMITS);
        assert!(!inbound.body.is_empty());
    }

    /// What `tickets` takes: the bridge must never send more.
    fn fits_tickets(inbound: &Inbound) {
        for field in [&inbound.subject, &inbound.from] {
            assert!(!field.chars().any(char::is_control), "{field:?}");
        }
        assert!(inbound.subject.chars().count() <= 500);
        assert!(inbound.from.chars().count() <= 320);
        assert!(!inbound.body.contains('\0'));
        assert!(inbound.body.len() <= 1024 * 1024, "{}", inbound.body.len());
        assert!(
            inbound
                .html
                .as_ref()
                .is_none_or(|h| h.len() <= 2 * 1024 * 1024)
        );
        assert!(inbound.files.len() <= 20);
    }

    #[test]
    fn mail_without_headers_or_separators_keeps_every_line_of_its_text() {
        let read = |raw: &str| read(raw.as_bytes(), "x@y.example", "hotline", LIMITS);
        let headless = read("Camera 3 is dark\r\n  since this morning\r\nPlease help\r\n");
        assert_eq!(
            headless.body,
            "Camera 3 is dark\n  since this morning\nPlease help"
        );
        assert_eq!(headless.from, "x@y.example", "the envelope's sender");
        let no_blank =
            read("From: a@b.example\r\nSubject: dark\r\nThe camera is dark.\r\nSince 9.\r\n");
        assert_eq!(no_blank.subject, "dark");
        assert_eq!(no_blank.body, "The camera is dark.\nSince 9.");
        let mbox = read(
            "From a@b.example Thu Nov 26 10:00:00 2026\nFrom: a@b.example\nSubject: s\n\nbody\n",
        );
        assert_eq!(
            (mbox.from.as_str(), mbox.body.as_str()),
            ("a@b.example", "body")
        );
        let parts = read(
            "From: a@b.example\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"b 1\"\r\n\r\n\
             --b 1\r\nFirst part, no headers at all\r\n--b 1\r\nContent-Type: text/plain\r\nSecond part, without a blank line\r\n--b 1--\r\n",
        );
        assert!(
            parts.body.contains("First part, no headers at all"),
            "{}",
            parts.body
        );
        assert!(
            parts.body.contains("Second part, without a blank line"),
            "{}",
            parts.body
        );
        let broken = read(
            "From: a@b.example\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=never\r\n\r\nThe text, but no boundary ever comes.\r\n",
        );
        assert!(
            broken
                .body
                .contains("The text, but no boundary ever comes."),
            "{}",
            broken.body
        );
        let unclosed = read(
            "From: a@b.example\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nCut off before the end\r\n",
        );
        assert!(
            unclosed.body.contains("Cut off before the end"),
            "{}",
            unclosed.body
        );
        for inbound in [headless, no_blank, mbox, parts, broken, unclosed] {
            fits_tickets(&inbound);
        }
    }

    #[test]
    fn hostile_single_line_fields_are_cleaned_and_cut_with_the_whole_kept() {
        let long = "Kamera ".repeat(300);
        let raw = format!(
            "From: \"Eve\" <eve\u{1b}]0;x\u{7}@y.example>\r\nSubject: a\0b\u{1b}[2Jc\u{9b}d {long}[HL-77]\r\nMessage-ID: <{}@y.example>\r\n\r\nbody\r\n",
            "m".repeat(5000)
        );
        let inbound = read(raw.as_bytes(), "eve@y.example", "hotline", LIMITS);
        fits_tickets(&inbound);
        assert!(
            inbound.subject.starts_with("a b [2Jc d Kamera"),
            "{}",
            inbound.subject
        );
        assert!(inbound.subject.ends_with('…'));
        assert!(inbound.subject.chars().count() <= MAX_SUBJECT_CHARS);
        assert_eq!(one_line("abc", 3), "abc");
        assert_eq!(one_line("abcd", 3), "ab…");
        assert_eq!(one_line(" a\r\n\tb ", 3), "a b");
        assert_eq!(
            inbound.tag.as_deref(),
            Some("HL-77"),
            "a tag past the cut still counts"
        );
        assert!(
            inbound
                .body
                .contains("[The subject in full: a b [2Jc d Kamera")
        );
        assert!(
            inbound.body.contains("[HL-77]]"),
            "{}",
            &inbound.body[inbound.body.len() - 40..]
        );
        assert!(inbound.message_id.as_ref().is_some_and(|m| m.len() <= 900));
    }

    #[test]
    fn eight_bit_headers_and_control_characters_in_bodies_are_read() {
        let mut raw = b"From: J\xc3\xbcrgen <j@y.example>\r\nSubject: Kamera f\xe4llt aus \xe6\x91\x84\r\n\r\nText\0with NUL\r\n".to_vec();
        raw.extend_from_slice(b"and latin-1 \xe4\r\n");
        let inbound = read(&raw, "j@y.example", "hotline", LIMITS);
        fits_tickets(&inbound);
        assert!(
            inbound.subject.starts_with("Kamera f"),
            "{}",
            inbound.subject
        );
        assert!(inbound.subject.ends_with('摄'), "{}", inbound.subject);
        assert!(inbound.body.starts_with("Textwith NUL"), "{}", inbound.body);
    }

    #[test]
    fn tens_of_thousands_of_parts_are_summed_up_in_one_line() {
        let mut raw = String::from(
            "From: a@b.example\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n",
        );
        for n in 0..36_657 {
            raw.push_str(&format!(
                "--p\r\nContent-Type: application/octet-stream; name=f{n}.bin\r\nContent-Disposition: attachment; filename=f{n}.bin\r\n\r\n\r\n"
            ));
        }
        raw.push_str("--p--\r\n");
        let inbound = read(raw.as_bytes(), "a@b.example", "hotline", LIMITS);
        fits_tickets(&inbound);
        assert!(inbound.body.starts_with("See below."));
        assert_eq!(inbound.files.len(), 2);
        assert!(
            inbound.body.contains("and 36645 more parts]"),
            "{}",
            inbound.body
        );
        assert!(inbound.body.len() < 2000, "{}", inbound.body.len());
    }

    #[test]
    fn a_huge_body_is_cut_with_a_note_and_huge_html_dropped() {
        let text = "x".repeat(300_000);
        let raw = mail("From: a@b.example\r\nSubject: big", &text);
        let inbound = read(&raw, "a@b.example", "hotline", LIMITS);
        fits_tickets(&inbound);
        assert!(
            inbound
                .body
                .contains("cut after 100000 of 300000 characters")
        );
        let html = format!("<p>{}</p>", "y".repeat(3 * 1024 * 1024));
        let raw = mail(
            "From: a@b.example\r\nSubject: big\r\nContent-Type: text/html",
            &html,
        );
        let inbound = read(&raw, "a@b.example", "hotline", LIMITS);
        fits_tickets(&inbound);
        assert_eq!(inbound.html, None);
        assert!(inbound.body.contains("The HTML version is too large"));
    }

    #[test]
    fn what_cannot_be_read_at_all_comes_with_its_original_attached() {
        let limits = Limits {
            max_files: 2,
            max_file_bytes: 1000,
        };
        let inbound = read(b"", "a@b.example", "hotline", limits);
        fits_tickets(&inbound);
        assert_eq!(inbound.subject, "(unreadable message)");
        assert_eq!(inbound.robot, None);
        assert_eq!(inbound.files[0].content_type, "message/rfc822");
    }

    #[test]
    fn a_retry_is_the_same_message_and_a_reused_message_id_is_not() {
        let first = "Received: from a\r\nFrom: a@b.example\r\nSubject: s\r\nMessage-ID: <m@b.example>\r\n\r\nCamera 1\r\n";
        let retried = format!("Received: from relay2\r\n{first}");
        let reused = first.replace("Camera 1", "Camera 2");
        let print = |raw: &str| {
            fingerprint(
                raw.as_bytes(),
                &read(raw.as_bytes(), "a@b.example", "h", LIMITS),
            )
        };
        assert_eq!(print(first), print(&retried));
        assert_ne!(print(first), print(&reused));
    }

    #[test]
    fn a_tag_needs_its_brackets_and_digits() {
        assert_eq!(tag("[HL-5] x").as_deref(), Some("HL-5"));
        assert_eq!(tag("HL-5 x"), None);
        assert_eq!(tag("[HL-] [HL-x] [HL-77]").as_deref(), Some("HL-77"));
    }
}
