//! Email in: an ESMTP server for the support domains (RFC 5321).
//!
//! `EHLO`/`HELO`, `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`, with the
//! `SIZE`, `8BITMIME` and `PIPELINING` extensions, and `STARTTLS` when a
//! certificate is configured. Recipients outside
//! `intake.domains` get `550` (never an open relay); a message over the size
//! limit `552`; an over-long line or a malformed command a `5xx` with the
//! reason; too many connections `421`; a sender over its rate `451`. Lines
//! end with `<CR><LF>` only: a command with a bare `<LF>` or `<CR>` gets
//! `500`, a message with one `550` after its end, and only
//! `<CR><LF>.<CR><LF>` ends a message (no SMTP smuggling). `BDAT`
//! (`CHUNKING`) is not offered. A
//! message gets `250` only once its raw bytes are committed in PostgreSQL
//! (with `intake.mail_received` in the same transaction); the database
//! unavailable, `451`, so the sender retries.
//!
//! Each session is a span (`smtp.session`), each message a span within it
//! (`smtp.message`) that `intake.mail_received` carries on: the root of the
//! trace that follows the mail to its ticket, breach and page. A message
//! refused is a failed span saying why.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use hotline_kit::{cache::Redis, telemetry};
use sqlx::PgPool;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{IntakeConfig, store};

/// Longest command line (RFC 5321 §4.5.3.1.4: 512 octets with CRLF).
const MAX_COMMAND: usize = 512;
/// Longest text line of a message (RFC 5321 §4.5.3.1.6: 1000 with CRLF).
const MAX_TEXT_LINE: usize = 1000;
/// Errors a client may make before it is disconnected.
const MAX_ERRORS: u32 = 10;

/// Where a session is, between commands.
#[derive(Debug, Default)]
pub struct Envelope {
    greeted: bool,
    from: Option<String>,
    to: Vec<String>,
    /// A certificate is configured and the session is not encrypted yet.
    tls_offered: bool,
}

/// What the I/O loop must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Reply(Vec<String>),
    /// `354`, then read the message.
    Data,
    /// `220`, then the TLS handshake.
    StartTls,
    Quit,
}

/// The address inside `<...>` after `prefix` (`FROM:`, `TO:`), and the
/// parameters after it.
fn path<'a>(argument: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = argument
        .get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| argument[prefix.len()..].trim_start())?;
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let address = &rest[..end];
    let valid = address.is_empty()
        || (address.len() <= 254
            && address.matches('@').count() == 1
            && !address.contains(|c: char| c.is_whitespace() || c.is_control()));
    valid.then(|| (address, rest[end + 1..].trim()))
}

/// The domain of `address`, lower-case.
fn domain(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
        .unwrap_or_default()
}

impl Envelope {
    /// Answers one command line (without its CRLF).
    pub fn command(&mut self, line: &str, config: &IntakeConfig) -> Next {
        let one = |code: u16, text: &str| Next::Reply(vec![format!("{code} {text}")]);
        let (verb, argument) = line
            .split_once(' ')
            .map_or((line, ""), |(verb, argument)| (verb, argument.trim()));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if argument.is_empty() => one(501, "5.5.4 Syntax: EHLO hostname"),
            "EHLO" => {
                self.restart();
                let mut lines = vec![
                    format!("250-{} Hotline", config.hostname),
                    format!("250-SIZE {}", config.max_message_bytes),
                    "250-8BITMIME".into(),
                    "250-PIPELINING".into(),
                ];
                if self.tls_offered {
                    lines.push("250-STARTTLS".into());
                }
                lines.push("250 ENHANCEDSTATUSCODES".into());
                Next::Reply(lines)
            }
            "HELO" => {
                self.restart();
                one(250, &config.hostname)
            }
            "STARTTLS" if !self.tls_offered => one(502, "5.5.1 Not offered here"),
            "STARTTLS" if !argument.is_empty() => one(501, "5.5.4 STARTTLS takes no argument"),
            "STARTTLS" => Next::StartTls,
            "MAIL" if !self.greeted => one(503, "5.5.1 Say EHLO first"),
            "MAIL" if self.from.is_some() => one(503, "5.5.1 Sender already given"),
            "MAIL" => match path(argument, "FROM:") {
                None => one(501, "5.5.4 Syntax: MAIL FROM:<address>"),
                Some((from, parameters)) => {
                    let declared = parameters
                        .split_whitespace()
                        .find_map(|p| {
                            p.get(..5)
                                .filter(|k| k.eq_ignore_ascii_case("SIZE="))
                                .map(|_| &p[5..])
                        })
                        .and_then(|size| size.parse::<usize>().ok());
                    if declared.is_some_and(|size| size > config.max_message_bytes) {
                        return one(552, "5.3.4 Message too big for this desk");
                    }
                    self.from = Some(from.to_owned());
                    one(250, "2.1.0 OK")
                }
            },
            "RCPT" if self.from.is_none() => one(503, "5.5.1 Need MAIL first"),
            "RCPT" => match path(argument, "TO:") {
                None => one(501, "5.5.4 Syntax: RCPT TO:<address>"),
                Some(("", _)) => one(501, "5.1.3 A recipient is needed"),
                Some((to, _)) if !config.accepts(&domain(to)) => {
                    one(550, "5.7.1 Relaying denied: not a support address here")
                }
                Some(_) if self.to.len() >= 100 => one(452, "4.5.3 Too many recipients"),
                Some((to, _)) => {
                    self.to.push(to.to_owned());
                    one(250, "2.1.5 OK")
                }
            },
            "DATA" if !argument.is_empty() => one(501, "5.5.4 DATA takes no argument"),
            "DATA" if self.to.is_empty() => one(503, "5.5.1 Need RCPT first"),
            "DATA" => Next::Data,
            "RSET" => {
                self.from = None;
                self.to.clear();
                one(250, "2.0.0 OK")
            }
            "NOOP" => one(250, "2.0.0 OK"),
            "QUIT" => Next::Quit,
            "VRFY" => one(252, "2.5.0 Cannot verify; send the message"),
            "AUTH" | "BDAT" => one(502, "5.5.1 Not offered here"),
            _ => one(500, "5.5.2 Command not recognised"),
        }
    }

    /// A fresh session after a greeting.
    fn restart(&mut self) {
        self.greeted = true;
        self.from = None;
        self.to.clear();
    }

    /// The sender and recipients of the message being sent, then a fresh
    /// transaction (the greeting stands).
    fn take(&mut self) -> (String, Vec<String>) {
        let from = self.from.take().unwrap_or_default();
        (from, std::mem::take(&mut self.to))
    }
}

/// A line read with its length capped.
enum Line {
    /// A whole line with its line end exactly as sent (`\n` or `\r\n`).
    Text(Vec<u8>),
    /// Longer than allowed; its rest was read and dropped. `crlf`: it
    /// ended with `<CR><LF>`.
    TooLong { crlf: bool },
    /// The input ended (a line cut short by it is no line).
    Closed,
}

/// The text of `line` without its `<CR><LF>`, or `None` when it ends with
/// a bare `<LF>` or holds a bare `<CR>` (RFC 5321 §2.3.8: lines end with
/// `<CR><LF>` and nothing else).
fn crlf_line(line: &[u8]) -> Option<&[u8]> {
    line.strip_suffix(b"\r\n")
        .filter(|text| !text.contains(&b'\r'))
}

/// Reads to the next `<LF>`, keeping the line end: only the caller knows
/// whether a bare `<LF>` ends a line where it is.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    // The last byte read, so an over-long line still tells how it ended.
    let mut last = None;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Closed);
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let used = chunk.len();
        let before_lf = chunk
            .len()
            .checked_sub(2)
            .map_or(last, |i| chunk.get(i).copied());
        last = chunk.last().copied();
        if !too_long {
            line.extend_from_slice(chunk);
            if line.len() > max {
                too_long = true;
                line = Vec::new();
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long {
                Line::TooLong {
                    crlf: before_lf == Some(b'\r'),
                }
            } else {
                Line::Text(line)
            });
        }
    }
}

/// What the `DATA` phase read.
enum Message {
    Complete(Vec<u8>),
    TooBig,
    LineTooLong,
    /// A bare `<LF>` or `<CR>` somewhere: refused whole.
    BareNewline,
}

/// Reads a message up to `<CR><LF>.<CR><LF>` (RFC 5321 §4.1.1.4), undoing
/// dot-stuffing; keeps reading (and drops) past the limits so the session
/// stays in step. Only that sequence ends it: a `.` after or before a bare
/// `<LF>` or `<CR>` is text, so a message smuggled behind one (`\n.\n`,
/// `\r\n.\n`, `\r.\r`, ...) stays part of this message, which is refused.
async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    max_bytes: usize,
) -> std::io::Result<Option<Message>> {
    let mut message = Vec::new();
    let (mut too_big, mut too_long, mut bare) = (false, false, false);
    // The `<CR><LF>` that ended the `DATA` command starts the first line.
    let mut after_crlf = true;
    loop {
        match read_line(reader, MAX_TEXT_LINE).await? {
            Line::Closed => return Ok(None),
            Line::TooLong { crlf } => {
                too_long = true;
                bare |= !crlf;
                after_crlf = crlf;
            }
            Line::Text(line) => {
                if after_crlf && line == b".\r\n" {
                    break;
                }
                after_crlf = line.ends_with(b"\r\n");
                let Some(text) = crlf_line(&line) else {
                    // Refused whole: nothing of it is kept.
                    bare = true;
                    message = Vec::new();
                    continue;
                };
                let text = text.strip_prefix(b".").unwrap_or(text);
                if message.len() + text.len() + 2 > max_bytes {
                    too_big = true;
                    message = Vec::new();
                }
                if !too_big && !bare {
                    message.extend_from_slice(text);
                    message.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    Ok(Some(if too_big {
        Message::TooBig
    } else if bare {
        Message::BareNewline
    } else if too_long {
        Message::LineTooLong
    } else {
        Message::Complete(message)
    }))
}

pub struct Server {
    pub pool: PgPool,
    pub redis: Arc<Redis>,
    pub config: Arc<IntakeConfig>,
    pub relay: hotline_kit::bus::outbox::OutboxSignal,
    /// With a certificate configured: `STARTTLS`.
    pub tls: Option<TlsAcceptor>,
}

/// How a session ended.
enum Ended<R> {
    Closed,
    /// The client asked for TLS: the reader, to take the connection back.
    StartTls(BufReader<R>),
}

/// The TLS acceptor of `cert` and `key` (PEM files).
pub fn acceptor(cert: &str, key: &str) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading intake.tls_cert {cert}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("intake.tls_cert {cert} holds no valid certificate"))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading intake.tls_key {key}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the TLS certificate and key do not fit together")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Server {
    /// Serves `listener` until `cancel`; sessions in progress end with
    /// `421` at their next command.
    pub async fn run(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener).context("serving SMTP")?;
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        loop {
            let (socket, peer) = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "SMTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let (server, slots, cancel) = (self.clone(), slots.clone(), cancel.clone());
            // The root of the trace of every message the session brings.
            let span = tracing::info_span!(
                "smtp.session",
                otel.kind = "server",
                client.address = %peer.ip(),
                client.port = peer.port(),
            );
            tokio::spawn(
                async move {
                    let Ok(_slot) = slots.try_acquire_owned() else {
                        telemetry::failed(&tracing::Span::current(), "too many connections");
                        let mut socket = socket;
                        let _ = socket
                            .write_all(b"421 4.3.2 Too many connections; try again later\r\n")
                            .await;
                        return;
                    };
                    if let Err(error) = server.connection(socket, &cancel).await {
                        tracing::debug!(%peer, %error, "SMTP session ended");
                    }
                }
                .instrument(span),
            );
        }
    }

    /// One client connection: a plain session, and after `STARTTLS` an
    /// encrypted one that starts afresh (RFC 3207).
    async fn connection(
        &self,
        socket: TcpStream,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (reader, mut writer) = socket.into_split();
        let offered = self.tls.is_some();
        let Ended::StartTls(reader) = self
            .session(BufReader::new(reader), &mut writer, cancel, offered)
            .await?
        else {
            return Ok(());
        };
        // Commands pipelined after STARTTLS would cross into TLS: refused.
        anyhow::ensure!(reader.buffer().is_empty(), "data pipelined after STARTTLS");
        let socket = reader.into_inner().reunite(writer)?;
        let acceptor = self.tls.clone().context("STARTTLS without a certificate")?;
        let tls = tokio::time::timeout(self.config.command_timeout, acceptor.accept(socket))
            .await
            .context("TLS handshake timed out")??;
        let (reader, mut writer) = tokio::io::split(tls);
        self.session(BufReader::new(reader), &mut writer, cancel, false)
            .await?;
        writer.shutdown().await?;
        Ok(())
    }

    /// Runs a session until it ends, or asks for TLS. `tls_offered` is
    /// false once encrypted: then there is no greeting, the client speaks
    /// first.
    async fn session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &self,
        mut reader: BufReader<R>,
        writer: &mut W,
        cancel: &CancellationToken,
        tls_offered: bool,
    ) -> anyhow::Result<Ended<R>> {
        let config = &self.config;
        let send = |lines: Vec<String>| {
            let mut out = lines.join("\r\n");
            out.push_str("\r\n");
            out
        };
        let encrypted = self.tls.is_some() && !tls_offered;
        if !encrypted {
            writer
                .write_all(send(vec![format!("220 {} Hotline ESMTP", config.hostname)]).as_bytes())
                .await?;
        }
        let mut envelope = Envelope {
            tls_offered,
            ..Envelope::default()
        };
        let mut errors = 0;
        loop {
            let line = tokio::select! {
                _ = cancel.cancelled() => {
                    writer.write_all(b"421 4.3.2 Shutting down\r\n").await?;
                    return Ok(Ended::Closed);
                }
                line = tokio::time::timeout(config.command_timeout, read_line(&mut reader, MAX_COMMAND)) => line,
            };
            let line = match line {
                Err(_) => {
                    writer.write_all(b"421 4.4.2 Timeout; closing\r\n").await?;
                    return Ok(Ended::Closed);
                }
                Ok(line) => line?,
            };
            let next = match line {
                Line::Closed => return Ok(Ended::Closed),
                Line::TooLong { .. } => Next::Reply(vec!["500 5.5.2 Line too long".into()]),
                // As Postfix does: a client that ends commands with a bare
                // <LF> would end its data that way too.
                Line::Text(bytes) => match crlf_line(&bytes).map(std::str::from_utf8) {
                    None => Next::Reply(vec![
                        "500 5.5.2 Command contains bare <LF> or <CR>; lines must end with <CR><LF>"
                            .into(),
                    ]),
                    Some(Ok(text)) => {
                        let next = envelope.command(text, config);
                        if let (Next::Reply(_), true) =
                            (&next, text.to_ascii_uppercase().starts_with("MAIL"))
                        {
                            self.rate_limited(&mut envelope)
                                .await
                                .map_or(next, |reply| Next::Reply(vec![reply]))
                        } else {
                            next
                        }
                    }
                    Some(Err(_)) => Next::Reply(vec!["500 5.5.2 Commands are ASCII".into()]),
                },
            };
            match next {
                Next::Reply(lines) => {
                    if lines.first().is_some_and(|l| l.starts_with('5')) {
                        errors += 1;
                    }
                    writer.write_all(send(lines).as_bytes()).await?;
                    if errors >= MAX_ERRORS {
                        writer
                            .write_all(b"421 4.7.0 Too many errors; closing\r\n")
                            .await?;
                        return Ok(Ended::Closed);
                    }
                }
                Next::StartTls => {
                    writer
                        .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                        .await?;
                    writer.flush().await?;
                    return Ok(Ended::StartTls(reader));
                }
                Next::Quit => {
                    writer.write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(Ended::Closed);
                }
                Next::Data => {
                    // One span per message: `intake.mail_received` carries
                    // it, so the ticket, its breach and its page continue it.
                    let span = tracing::info_span!(
                        "smtp.message",
                        recipients = envelope.to.len(),
                        size = tracing::field::Empty,
                        mail = tracing::field::Empty,
                        smtp.reply_code = tracing::field::Empty,
                    );
                    writer
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let read = tokio::time::timeout(
                        config.command_timeout,
                        read_message(&mut reader, config.max_message_bytes),
                    )
                    .instrument(span.clone())
                    .await;
                    let (from, to) = envelope.take();
                    let reply = match read {
                        Err(_) => {
                            telemetry::failed(&span, "timed out reading the message");
                            writer.write_all(b"421 4.4.2 Timeout; closing\r\n").await?;
                            return Ok(Ended::Closed);
                        }
                        Ok(read) => match read? {
                            None => {
                                telemetry::failed(&span, "the client left during the message");
                                return Ok(Ended::Closed);
                            }
                            Some(Message::TooBig) => {
                                "552 5.3.4 Message too big for this desk".into()
                            }
                            Some(Message::BareNewline) => {
                                "550 5.5.2 Message contains bare <LF> or <CR>; lines must end with <CR><LF>"
                                    .into()
                            }
                            Some(Message::LineTooLong) => {
                                "500 5.5.6 A line of the message is longer than 998 characters"
                                    .into()
                            }
                            Some(Message::Complete(raw)) => {
                                span.record("size", raw.len());
                                self.accept(&from, &to, raw).instrument(span.clone()).await
                            }
                        },
                    };
                    let code: u16 = reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                    span.record("smtp.reply_code", code);
                    if code != 250 {
                        telemetry::failed(&span, &reply);
                    }
                    writer.write_all(send(vec![reply]).as_bytes()).await?;
                }
            }
        }
    }

    /// Counts the sender's message against its rate; the refusal if over.
    async fn rate_limited(&self, envelope: &mut Envelope) -> Option<String> {
        let sender = envelope.from.clone()?.to_ascii_lowercase();
        let limit = self.config.sender_rate_per_minute;
        if limit == 0 {
            return None;
        }
        let key = self.redis.key(&format!("intake:rate:{sender}"));
        let counted = async {
            let mut connection = self.redis.connection().await?;
            let (count,): (u64,) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .expire(&key, 60)
                .ignore()
                .query_async(&mut connection)
                .await?;
            anyhow::Ok(count)
        };
        match tokio::time::timeout(Duration::from_secs(1), counted).await {
            Ok(Ok(count)) if count > limit => {
                envelope.from = None;
                Some("451 4.7.1 Too many messages from this sender; try again later".into())
            }
            Ok(Ok(_)) => None,
            // No Redis, no rate limit: mail is never refused for it.
            _ => None,
        }
    }

    /// Stores a message; `250` only once it is committed.
    async fn accept(&self, from: &str, to: &[String], raw: Vec<u8>) -> String {
        match store::record_mail(&self.pool, from, to, &raw, None).await {
            Ok(id) => {
                self.relay.committed();
                tracing::Span::current().record("mail", id);
                metrics::counter!("hotline_mail_accepted_total").increment(1);
                tracing::info!(mail = id, "mail accepted");
                format!("250 2.0.0 Queued as {id}")
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot store an incoming mail"
                );
                "451 4.3.0 Cannot store the message now; try again later".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IntakeConfig {
        IntakeConfig {
            domains: "support.example, Help.Example".into(),
            ..IntakeConfig::default()
        }
    }

    fn code(next: Next) -> u16 {
        match next {
            Next::Reply(lines) => lines
                .last()
                .and_then(|l| l.get(..3))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            Next::Data => 354,
            Next::StartTls => 220,
            Next::Quit => 221,
        }
    }

    #[test]
    fn a_session_goes_in_order_and_only_to_our_domains() {
        let config = config();
        let mut session = Envelope::default();
        assert_eq!(
            code(session.command("MAIL FROM:<a@b.example>", &config)),
            503
        );
        assert_eq!(code(session.command("EHLO client.example", &config)), 250);
        assert_eq!(
            code(session.command("RCPT TO:<x@support.example>", &config)),
            503
        );
        assert_eq!(
            code(session.command("mail from:<a@b.example> SIZE=1000 BODY=8BITMIME", &config)),
            250
        );
        assert_eq!(
            code(session.command("RCPT TO:<x@elsewhere.example>", &config)),
            550
        );
        assert_eq!(
            code(session.command("RCPT TO:<x@help.example>", &config)),
            250
        );
        assert_eq!(code(session.command("RCPT TO:<bad address>", &config)), 501);
        assert_eq!(code(session.command("DATA", &config)), 354);
        assert_eq!(code(session.command("RSET", &config)), 250);
        assert_eq!(code(session.command("DATA", &config)), 503);
        assert_eq!(code(session.command("WHAT", &config)), 500);
        assert_eq!(code(session.command("QUIT", &config)), 221);
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_up_front_and_bounces_may_come_in() {
        let config = IntakeConfig {
            max_message_bytes: 1000,
            ..config()
        };
        let mut session = Envelope::default();
        session.command("HELO c", &config);
        assert_eq!(
            code(session.command("MAIL FROM:<a@b.example> SIZE=5000", &config)),
            552
        );
        assert_eq!(
            code(session.command("MAIL FROM:<>", &config)),
            250,
            "the null sender"
        );
    }

    #[tokio::test]
    async fn messages_are_read_to_the_dot_unstuffed_and_capped() {
        let read = |input: &'static [u8], max| async move {
            let mut reader = BufReader::new(input);
            read_message(&mut reader, max).await.ok().flatten()
        };
        match read(b"Subject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n", 1000).await {
            Some(Message::Complete(raw)) => {
                assert_eq!(raw, b"Subject: hi\r\n\r\n.leading dot\r\n".to_vec());
            }
            _ => panic!("not read"),
        }
        assert!(matches!(
            read(b"0123456789\r\n.\r\n", 5).await,
            Some(Message::TooBig)
        ));
        let long: &'static [u8] = Box::leak(
            format!("{}\r\n.\r\n", "x".repeat(2000))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert!(matches!(
            read(long, 100_000).await,
            Some(Message::LineTooLong)
        ));
        assert!(read(b"no end", 1000).await.is_none());
        assert!(matches!(
            read(b".\r\n", 1000).await,
            Some(Message::Complete(raw)) if raw.is_empty()
        ));
    }

    /// Reads one message; what it was and what is left for the commands.
    async fn read_with_rest(input: &[u8]) -> (Option<Message>, Vec<u8>) {
        let mut reader = BufReader::new(input);
        let read = read_message(&mut reader, 100_000).await.ok().flatten();
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest)
            .await
            .ok();
        (read, rest)
    }

    #[tokio::test]
    async fn only_crlf_dot_crlf_ends_a_message_and_a_smuggled_one_is_part_of_it() {
        // The end-of-data lookalikes of the 2023 SMTP smuggling research.
        for fake_end in [&b"\n.\n"[..], b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r"] {
            let input = [
                &b"From: ops@customer.example\r\n\r\nCamera dark"[..],
                fake_end,
                b"MAIL FROM:<admin@forged.example>\r\nRCPT TO:<help@support.example>\r\n\
                  DATA\r\nFrom: admin@forged.example\r\n\r\nWire the money.\r\n.\r\nQUIT\r\n",
            ]
            .concat();
            let (read, rest) = read_with_rest(&input).await;
            assert!(
                matches!(read, Some(Message::BareNewline)),
                "{fake_end:?} ended the message"
            );
            assert_eq!(rest, b"QUIT\r\n", "{fake_end:?}: out of step");
        }
    }

    #[tokio::test]
    async fn a_bare_cr_or_lf_anywhere_refuses_the_message() {
        for input in [
            &b"Subject: a\rBcc: x@evil.example\r\n\r\nbody\r\n.\r\nQUIT\r\n"[..],
            b"Subject: a\nBcc: x@evil.example\r\n\r\nbody\r\n.\r\nQUIT\r\n",
            b"Subject: a\r\n\r\nbody ends in CR\r\r\n.\r\nQUIT\r\n",
            b"Subject: a\r\n\nbody after a bare LF\r\n.\r\nQUIT\r\n",
        ] {
            let (read, rest) = read_with_rest(input).await;
            assert!(
                matches!(read, Some(Message::BareNewline)),
                "{:?} was taken",
                String::from_utf8_lossy(input)
            );
            assert_eq!(rest, b"QUIT\r\n");
        }
        // An over-long line ending in a bare LF: the `.` after it is text.
        let long = ["x".repeat(2000).as_bytes(), b"\n.\r\nmore\r\n.\r\nQUIT\r\n"].concat();
        let (read, rest) = read_with_rest(&long).await;
        assert!(matches!(read, Some(Message::BareNewline)));
        assert_eq!(rest, b"QUIT\r\n");
    }
}
