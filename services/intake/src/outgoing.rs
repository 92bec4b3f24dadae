//! Email out through the relay: agents' replies on email tickets, the one
//! acknowledgement a new email ticket gets, and the notices `contracts`
//! writes to branches ahead of their coverage's end.
//!
//! A mail is queued (`outgoing`) in the transaction that decides it, under a
//! key (`reply:<article>`, `ack:<ticket>`, `notice:<event>`), so it is
//! decided once; it is sent
//! after that transaction commits by whichever intake process leases it
//! ([`hotline_kit::queue`]), so a transaction that rolls back sends nothing
//! and a slow relay holds no consumer. Its Message-ID (`<random
//! token@hostname>`, so nobody can forge a reply into a thread by guessing
//! one) is remembered with the ticket once sent, so the customer's reply —
//! and a bounce — threads back. The subject, customer text, goes into its
//! header without control characters and RFC 2047-encoded where it is not
//! ASCII. The relay answering 4xx or not at all
//! is retried with doubling backoff (at most [`MAX_BACKOFF`] apart); a 5xx is
//! final, and an internal note on the reply's ticket says so.
//!
//! A queued mail keeps the trace of what queued it; each attempt is a span
//! (`smtp.relay`) in that trace. The mail itself carries no `Traceparent`
//! header: no mail server or customer takes one, and it would tell the
//! world the ids of our traces.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hotline_kit::{bus::Backoff, mail, queue, telemetry};
use hotline_proto::{
    events::v1::CoverageNotice,
    tickets::v1::{AddArticleRequest, Article, ArticleKind, Ticket},
};
use lettre::{
    AsyncTransport, Message,
    message::{Mailbox, header::ContentType},
};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use crate::{
    forward::Tickets,
    store::{self, Leased, Mail, Sent},
};

/// The longest one mail may take to hand to the relay (lettre's own
/// timeout bounds only the connect).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Mails sent at once by one process.
const CONCURRENCY: i64 = 8;
/// The first wait after a deferred attempt; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two attempts of one mail.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Decides mail inside the consumer's transaction.
pub struct Mailer {
    /// Whether a relay is configured (`intake.relay`): without one no
    /// acknowledgement is queued, and a reply becomes a note that it could
    /// not be sent.
    pub relay: bool,
    pub hostname: String,
}

/// A Message-ID of ours (without the angle brackets): 122 random bits, so
/// it names nothing a stranger could guess (a ticket, an article) and a
/// reply quoting it proves the sender saw our mail.
fn message_id(hostname: &str) -> String {
    format!("{}@{hostname}", uuid::Uuid::new_v4().simple())
}

/// Longest subject we send: a ticket's subject (at most 500 characters)
/// with its tag and `Re: `, with room to spare.
const MAX_SUBJECT_CHARS: usize = 600;

/// `text` fit for a header: the rule intake reads single-line fields by
/// ([`crate::mail::one_line`]: every control character a space, runs of
/// white space one). lettre encodes CR and LF itself but writes ESC and
/// BEL through, which a terminal showing the mail would obey.
fn header_text(text: &str) -> String {
    crate::mail::one_line(text, MAX_SUBJECT_CHARS)
}

/// `[HL-n] subject`, unless the subject carries the tag already.
fn tagged(number: &str, subject: &str) -> String {
    if subject.contains(&format!("[{number}]")) {
        subject.to_owned()
    } else {
        format!("[{number}] {subject}")
    }
}

/// The kinds of mail intake sends (`hotline_mail_sent_total{kind}`).
pub const KINDS: &[&str] = &["reply", "ack", "notice"];

impl Mailer {
    /// Queues an agent's public reply on an email ticket to its customer.
    pub async fn reply(
        &self,
        conn: &mut PgConnection,
        ticket: &Ticket,
        article: &Article,
    ) -> sqlx::Result<()> {
        let mail = Mail {
            key: format!("reply:{}", article.id),
            kind: "reply".into(),
            ticket_number: ticket.number.clone(),
            recipient: ticket.contact.clone(),
            message_id: message_id(&self.hostname),
            subject: format!("Re: {}", tagged(&ticket.number, &ticket.subject)),
            body: article.body.clone(),
            automatic: false,
        };
        store::queue_mail(conn, &mail).await
    }

    /// Queues the acknowledgement of a ticket opened by `to`'s mail: one per
    /// ticket, at most one per sender per ten minutes, never to a robot.
    pub async fn acknowledge(
        &self,
        conn: &mut PgConnection,
        number: &str,
        subject: &str,
        to: &str,
    ) -> sqlx::Result<()> {
        if !self.relay || store::acknowledged_lately(conn, to).await? {
            return Ok(());
        }
        let mail = Mail {
            key: format!("ack:{number}"),
            kind: "ack".into(),
            ticket_number: number.to_owned(),
            recipient: to.to_owned(),
            message_id: message_id(&self.hostname),
            subject: format!("Re: {}", tagged(number, subject)),
            body: format!(
                "Thank you for your report. It is registered as {number}; an engineer will \
                 answer you.\n\nTo add to it, reply to this mail and keep [{number}] in the \
                 subject.\n"
            ),
            automatic: true,
        };
        store::queue_mail(conn, &mail).await
    }

    /// Queues a branch's notice from `contracts` (event `event_id`): once
    /// per event, however often it is delivered. Queued without a relay
    /// too, so that the notice is recorded as not sent, and why.
    pub async fn notice(
        &self,
        conn: &mut PgConnection,
        event_id: &str,
        notice: &CoverageNotice,
    ) -> sqlx::Result<()> {
        let mail = Mail {
            key: format!("notice:{event_id}"),
            kind: "notice".into(),
            ticket_number: String::new(),
            recipient: notice.recipient.clone(),
            message_id: message_id(&self.hostname),
            subject: notice.subject.clone(),
            body: notice.body.clone(),
            automatic: true,
        };
        store::queue_mail(conn, &mail).await
    }
}

/// Sends the queued mail, from any number of intake processes.
pub struct Sender {
    pub pool: PgPool,
    /// `None` without `intake.relay`: a queued reply fails with a note.
    pub relay: Option<mail::Relay>,
    pub from: Mailbox,
    /// For the note on a ticket whose reply could not be sent.
    pub tickets: Tickets,
}

impl queue::Queue for Sender {
    type Job = Leased;

    fn channel(&self) -> &'static str {
        store::MAIL_QUEUE
    }

    async fn claim(&self) -> sqlx::Result<Vec<Leased>> {
        // The send and some slack: a sender that died lets it go by then.
        store::lease_mails(
            &self.pool,
            CONCURRENCY,
            SEND_TIMEOUT * 2 + Duration::from_secs(5),
        )
        .await
    }

    async fn next_due(&self) -> sqlx::Result<Option<DateTime<Utc>>> {
        store::next_mail_due(&self.pool).await
    }

    /// Sends one mail in a span of its own (`smtp.relay`), continuing the
    /// trace that queued it.
    async fn work(&self, leased: Leased) {
        let span = tracing::info_span!(
            "smtp.relay",
            otel.kind = "client",
            mail = %leased.mail.key,
            kind = %leased.mail.kind,
            attempt = leased.attempts,
            outcome = tracing::field::Empty,
        );
        leased.trace.adopt(&span);
        let sent = async {
            match leased.refused.clone() {
                Some(why) => self.refused(&leased.mail, leased.attempts, why).await,
                None => self.attempt(&leased.mail, leased.attempts).await,
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = match &sent {
            Sent::Yes => "sent",
            Sent::Retry(_, why) => {
                telemetry::failed(&span, format_args!("{why}; retrying"));
                "retry"
            }
            Sent::Refused(_, why) | Sent::Failed(why) => {
                telemetry::failed(&span, why);
                "refused"
            }
        };
        span.record("outcome", outcome);
        if matches!(sent, Sent::Yes) {
            metrics::counter!("hotline_mail_sent_total", "kind" => leased.mail.kind.clone())
                .increment(1);
        }
        if let Err(error) =
            store::settle_mail(&self.pool, &leased.mail, leased.attempts, &sent).await
        {
            // The lease runs out and the mail is tried again.
            tracing::warn!(%error, mail = %leased.mail.key, "cannot record a mail attempt");
        }
    }
}

/// When attempt `attempts` failing is followed by the next.
fn retry_at(attempts: i32) -> DateTime<Utc> {
    Utc::now() + Backoff::after_attempt(FIRST_BACKOFF, MAX_BACKOFF, attempts.into())
}

impl Sender {
    /// One attempt to hand `mail` to the relay.
    async fn attempt(&self, queued: &Mail, attempts: i32) -> Sent {
        let message = match self.compose(queued).await {
            Ok(Ok(message)) => message,
            Ok(Err(why)) => return self.refused(queued, attempts, why).await,
            Err(error) => return Sent::Retry(retry_at(attempts), format!("{error:#}")),
        };
        let Some(relay) = &self.relay else {
            let why = "no relay is configured (intake.relay)".to_owned();
            return self.refused(queued, attempts, why).await;
        };
        match tokio::time::timeout(SEND_TIMEOUT, relay.send(message)).await {
            Ok(Ok(_)) => Sent::Yes,
            Ok(Err(error)) if mail::is_transient(&error) => Sent::Retry(
                retry_at(attempts),
                format!("the relay deferred the mail: {error}"),
            ),
            Ok(Err(error)) => {
                let why = format!("the relay refused it: {error}");
                self.refused(queued, attempts, why).await
            }
            Err(_) => Sent::Retry(
                retry_at(attempts),
                "the relay did not answer in time".into(),
            ),
        }
    }

    /// `mail` will never be sent: a reply's ticket is told so (retried until
    /// it is); an acknowledgement or a notice is only logged.
    async fn refused(&self, queued: &Mail, attempts: i32, why: String) -> Sent {
        let Some(article) = queued.key.strip_prefix("reply:") else {
            tracing::warn!(
                kind = %queued.kind,
                ticket = %queued.ticket_number,
                recipient = %queued.recipient,
                %why,
                "an automatic mail could not be sent"
            );
            return Sent::Failed(why);
        };
        let noted = self
            .tickets
            .clone()
            .add_article(AddArticleRequest {
                ticket: queued.ticket_number.clone(),
                kind: ArticleKind::InternalNote as i32,
                body: format!(
                    "This reply could not be emailed to {}: {why}",
                    queued.recipient
                ),
                idempotency_key: format!("mail-failed:{article}"),
                ..Default::default()
            })
            .await;
        match noted {
            Ok(_) => Sent::Failed(why),
            Err(status) => {
                tracing::warn!(%status, mail = %queued.key, "cannot note a refused reply; retrying");
                Sent::Refused(retry_at(attempts), why)
            }
        }
    }

    /// The message in its ticket's thread, or why there is none to send.
    async fn compose(&self, queued: &Mail) -> sqlx::Result<Result<Message, String>> {
        let Ok(to) = queued.recipient.parse::<Mailbox>() else {
            return Ok(Err(format!(
                "{:?} is not an email address",
                queued.recipient
            )));
        };
        let thread = if queued.ticket_number.is_empty() {
            Vec::new()
        } else {
            let mut conn = self.pool.acquire().await?;
            store::conversation(&mut conn, &queued.ticket_number).await?
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(header_text(&queued.subject))
            .message_id(Some(format!("<{}>", queued.message_id)))
            .header(ContentType::TEXT_PLAIN);
        if let Some(last) = thread.last() {
            builder = builder.in_reply_to(format!("<{last}>")).references(
                thread
                    .iter()
                    .map(|id| format!("<{id}>"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        if queued.automatic {
            // RFC 3834: an acknowledgement answers a mail; a notice answers
            // nothing.
            let kind = if queued.kind == "notice" {
                "auto-generated"
            } else {
                "auto-replied"
            };
            builder = builder.header(mail::AutoSubmitted(kind));
        }
        Ok(builder
            .body(queued.body.clone())
            .map_err(|error| format!("cannot build the mail: {error}")))
    }
}

/// The Message-IDs of ours a bounce quotes (`<...@hostname>`).
pub fn ours_in(raw: &[u8], hostname: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let suffix = format!("@{hostname}>");
    let mut found = Vec::new();
    let mut rest = text.as_ref();
    while let Some(end) = rest.find(&suffix) {
        let head = &rest[..end];
        if let Some(start) = head.rfind('<') {
            let id = format!("{}@{hostname}", &head[start + 1..]);
            if !id.contains(char::is_whitespace) && !found.contains(&id) {
                found.push(id);
            }
        }
        rest = &rest[end + suffix.len()..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounce_names_the_message_of_ours_it_returns() {
        let raw = b"--b\r\nContent-Type: message/rfc822-headers\r\n\r\nMessage-ID: <0193-ab@desk.example>\r\nIn-Reply-To: <m1@customer.example>\r\n--b--";
        assert_eq!(ours_in(raw, "desk.example"), vec!["0193-ab@desk.example"]);
        assert!(ours_in(b"nothing of ours <x@else.example>", "desk.example").is_empty());
    }

    #[test]
    fn our_message_ids_are_random_and_ours() {
        let (one, two) = (message_id("desk.example"), message_id("desk.example"));
        assert_ne!(one, two);
        let (token, host) = one.split_once('@').unwrap_or_default();
        assert_eq!(host, "desk.example");
        assert_eq!(token.len(), 32);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        let bounce = format!("Message-ID: <{one}>\r\n");
        assert_eq!(ours_in(bounce.as_bytes(), "desk.example"), vec![one]);
    }

    #[test]
    fn header_text_has_no_control_characters() {
        assert_eq!(
            header_text("Re: \u{1b}]0;pwn\u{7}Camera\r\nBcc: x@evil.example\0\u{85}\t dark"),
            "Re: ]0;pwn Camera Bcc: x@evil.example dark"
        );
        assert_eq!(header_text("摄像头 黑屏"), "摄像头 黑屏");
    }

    #[test]
    fn the_tag_is_added_once() {
        assert_eq!(tagged("HL-7", "Camera dark"), "[HL-7] Camera dark");
        assert_eq!(
            tagged("HL-7", "Re: [HL-7] Camera dark"),
            "Re: [HL-7] Camera dark"
        );
    }
}
