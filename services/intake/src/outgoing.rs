//! Email out through the relay: agents' replies on email tickets, and the
//! one acknowledgement a new email ticket gets.
//!
//! Every mail has a key (`reply:<article>`, `ack:<ticket>`) recorded with
//! its outcome in the consumer's transaction, so it is sent once. Its
//! Message-ID (`<article id@hostname>`) is remembered with the ticket, so
//! the customer's reply — and a bounce — threads back. The relay answering
//! 4xx or not at all holds the event and retries; a 5xx is final, and an
//! internal note on the ticket says so.

use anyhow::Context;
use hotline_kit::{bus::consumer::Transient, mail};
use hotline_proto::tickets::v1::{AddArticleRequest, Article, ArticleKind, Ticket};
use lettre::{
    AsyncTransport, Message,
    message::{Mailbox, header::ContentType},
};
use sqlx::PgConnection;

use crate::{
    forward::Tickets,
    store::{self, Outgoing},
};

/// The longest one mail may take to hand to the relay (lettre's own
/// timeout bounds only the connect).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Mailer {
    /// `None` without `intake.relay`: nothing can be sent.
    pub relay: Option<mail::Relay>,
    pub from: Mailbox,
    pub hostname: String,
}

/// A mail to send: who to, what, in which thread.
struct Draft<'a> {
    key: &'a str,
    kind: &'a str,
    ticket: &'a str,
    to: &'a str,
    subject: String,
    body: String,
    /// Without angle brackets.
    message_id: String,
    automatic: bool,
}

/// What became of a draft.
enum Sent {
    Yes,
    /// Refused for good (or not sendable): why.
    No(String),
}

/// `[HL-n] subject`, unless the subject carries the tag already.
fn tagged(number: &str, subject: &str) -> String {
    if subject.contains(&format!("[{number}]")) {
        subject.to_owned()
    } else {
        format!("[{number}] {subject}")
    }
}

impl Mailer {
    /// Sends an agent's public reply on an email ticket to its customer.
    pub async fn reply(
        &self,
        conn: &mut PgConnection,
        tickets: &Tickets,
        ticket: &Ticket,
        article: &Article,
    ) -> anyhow::Result<()> {
        let key = format!("reply:{}", article.id);
        if store::outgoing_done(conn, &key).await? {
            return Ok(());
        }
        let draft = Draft {
            key: &key,
            kind: "reply",
            ticket: &ticket.number,
            to: &ticket.contact,
            subject: format!("Re: {}", tagged(&ticket.number, &ticket.subject)),
            body: article.body.clone(),
            message_id: format!("{}@{}", article.id, self.hostname),
            automatic: false,
        };
        if let Sent::No(why) = self.send(conn, &draft).await? {
            tickets
                .clone()
                .add_article(AddArticleRequest {
                    ticket: ticket.number.clone(),
                    kind: ArticleKind::InternalNote as i32,
                    body: format!(
                        "This reply could not be emailed to {}: {why}",
                        ticket.contact
                    ),
                    idempotency_key: format!("mail-failed:{}", article.id),
                    ..Default::default()
                })
                .await
                .context("noting that a reply could not be emailed")?;
        }
        Ok(())
    }

    /// The acknowledgement of a ticket opened by `to`'s mail: one per
    /// ticket, at most one per sender per ten minutes, never to a robot.
    pub async fn acknowledge(
        &self,
        conn: &mut PgConnection,
        number: &str,
        subject: &str,
        to: &str,
    ) -> anyhow::Result<()> {
        let key = format!("ack:{number}");
        if self.relay.is_none()
            || store::outgoing_done(conn, &key).await?
            || store::acknowledged_lately(conn, to).await?
        {
            return Ok(());
        }
        let draft = Draft {
            key: &key,
            kind: "ack",
            ticket: number,
            to,
            subject: format!("Re: {}", tagged(number, subject)),
            body: format!(
                "Thank you for your report. It is registered as {number}; an engineer will \
                 answer you.\n\nTo add to it, reply to this mail and keep [{number}] in the \
                 subject.\n"
            ),
            message_id: format!("ack-{number}@{}", self.hostname),
            automatic: true,
        };
        if let Sent::No(why) = self.send(conn, &draft).await? {
            tracing::warn!(ticket = number, %why, "the acknowledgement could not be sent");
        }
        Ok(())
    }

    /// Sends `draft` in its ticket's thread and records the outcome.
    async fn send(&self, conn: &mut PgConnection, draft: &Draft<'_>) -> anyhow::Result<Sent> {
        let outcome = match self.compose(conn, draft).await? {
            Err(why) => Sent::No(why),
            Ok(message) => match &self.relay {
                None => Sent::No("no relay is configured (intake.relay)".into()),
                Some(relay) => match tokio::time::timeout(SEND_TIMEOUT, relay.send(message))
                    .await
                    .map_err(|_| Transient(anyhow::anyhow!("the relay did not answer in time")))?
                {
                    Ok(_) => Sent::Yes,
                    Err(error) if mail::is_transient(&error) => {
                        return Err(Transient(anyhow::anyhow!(
                            "the relay deferred the mail: {error}"
                        ))
                        .into());
                    }
                    Err(error) => Sent::No(format!("the relay refused it: {error}")),
                },
            },
        };
        let error = match &outcome {
            Sent::Yes => None,
            Sent::No(why) => Some(why.as_str()),
        };
        store::record_outgoing(
            conn,
            &Outgoing {
                key: draft.key,
                kind: draft.kind,
                ticket: draft.ticket,
                recipient: draft.to,
                message_id: &draft.message_id,
                error,
            },
        )
        .await?;
        if error.is_none() {
            store::remember(conn, &draft.message_id, draft.ticket).await?;
            metrics::counter!("hotline_mail_sent_total", "kind" => draft.kind.to_owned())
                .increment(1);
        }
        Ok(outcome)
    }

    /// The message, or why there is none to send.
    async fn compose(
        &self,
        conn: &mut PgConnection,
        draft: &Draft<'_>,
    ) -> anyhow::Result<Result<Message, String>> {
        let Ok(to) = draft.to.parse::<Mailbox>() else {
            return Ok(Err(format!("{:?} is not an email address", draft.to)));
        };
        let thread = store::conversation(conn, draft.ticket).await?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(draft.subject.clone())
            .message_id(Some(format!("<{}>", draft.message_id)))
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
        if draft.automatic {
            builder = builder.header(mail::AutoSubmitted("auto-replied"));
        }
        Ok(builder
            .body(draft.body.clone())
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
    fn the_tag_is_added_once() {
        assert_eq!(tagged("HL-7", "Camera dark"), "[HL-7] Camera dark");
        assert_eq!(
            tagged("HL-7", "Re: [HL-7] Camera dark"),
            "Re: [HL-7] Camera dark"
        );
    }
}
