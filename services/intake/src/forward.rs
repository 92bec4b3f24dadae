//! Forwards what intake accepted to `tickets`, from the bus: a call that
//! ended becomes a ticket or an article on the caller's open ticket, a mail
//! a ticket or a customer article; an agent's reply on an email ticket goes
//! out by mail. Every
//! request carries an idempotency key (`cti:<callId>`), so a redelivery
//! after a crash records nothing twice; `tickets` being unavailable holds
//! the event until it is back.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use futures_util::future::join_all;
use hotline_kit::{bus::consumer::EventHandler, grpc::ServiceToken};
use hotline_proto::{
    events::v1::{CallEnded, EventEnvelope, event_envelope::Payload},
    tickets::v1::{
        AddArticleRequest, ArticleKind, Call, CallDirection, CallOutcome, Channel,
        CreateTicketRequest, ListTicketsRequest, NewAttachment, Status, Ticket,
        ticket_service_client::TicketServiceClient,
    },
};
use sqlx::PgConnection;
use tonic::{service::interceptor::InterceptedService, transport::Channel as GrpcChannel};
use tracing::Instrument;

use crate::{
    mail,
    outgoing::{self, Mailer},
    store,
};

pub type Tickets = TicketServiceClient<InterceptedService<GrpcChannel, ServiceToken>>;

pub struct Forwarder {
    pub tickets: Tickets,
    /// How intake names itself, to recognise its own mail coming back.
    pub hostname: String,
    pub mailer: Mailer,
    /// Attachments kept with tickets.
    pub limits: mail::Limits,
}

impl EventHandler for Forwarder {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        self.handle_batch(conn, &[(event, tracing::Span::current())])
            .await
    }

    /// Calls and mails that waited together are forwarded at once: their
    /// rows read and written in one statement each, `tickets` asked for all
    /// of them concurrently (where its writer batches them in turn).
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[(&EventEnvelope, tracing::Span)],
    ) -> anyhow::Result<()> {
        let mut calls = Vec::new();
        let mut mails = Vec::new();
        for (event, span) in events {
            match &event.payload {
                Some(Payload::IntakeCallEnded(call)) => calls.push((call, span)),
                Some(Payload::IntakeMailReceived(received)) => {
                    mails.push((received.mail_id, span));
                }
                Some(Payload::ContractsNotice(notice)) => {
                    self.mailer
                        .notice(conn, &event.id, notice)
                        .instrument((*span).clone())
                        .await?;
                }
                Some(Payload::TicketArticleAdded(added)) => {
                    let (Some(ticket), Some(article)) = (&added.ticket, &added.article) else {
                        continue;
                    };
                    let emailed = article.kind == ArticleKind::AgentReply as i32
                        && ticket.channel == Channel::Email as i32
                        && !ticket.contact.is_empty();
                    if emailed {
                        self.mailer
                            .reply(conn, ticket, article)
                            .instrument((*span).clone())
                            .await?;
                    }
                }
                _ => {}
            }
        }
        // Calls last: their rows stay locked from their update to the commit,
        // and a PBX event for one of them waits that long.
        if !mails.is_empty() {
            self.mails(conn, &mails).await?;
        }
        if !calls.is_empty() {
            self.calls(conn, &calls).await?;
        }
        Ok(())
    }

    /// Intake's own facts concern no ticket version.
    fn ordered(&self, _event: &EventEnvelope) -> bool {
        false
    }

    /// Every effect is in the transaction (mail out is queued there) or
    /// idempotent (every call to `tickets` carries a key).
    fn batched(&self) -> bool {
        true
    }

    /// Batches are forwarded concurrently inside: four lanes of larger
    /// batches commit less often than sixteen of one event each.
    fn lanes(&self) -> usize {
        4
    }
}

/// The ticket is gone, or closed for what was to be added to it.
fn gone(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::NotFound | tonic::Code::FailedPrecondition
    )
}

/// A stored message, read.
enum MailPlan {
    /// Not a person writing: no ticket; a bounce of ours is noted on the
    /// ticket it came back from.
    Robot {
        id: i64,
        why: &'static str,
        bounced: Option<String>,
        inbound: mail::Inbound,
    },
    /// A person's message: onto `threaded` if it names a ticket, else a new
    /// one, under `key` (one article per message, however often it comes).
    Person {
        id: i64,
        key: String,
        /// The size of the stored original, for the note if `tickets`
        /// refuses the message as read.
        raw_bytes: usize,
        inbound: mail::Inbound,
        threaded: Option<String>,
    },
}

impl MailPlan {
    /// A person's message's Message-ID.
    fn message_id(&self) -> Option<&str> {
        match self {
            MailPlan::Person { inbound, .. } => inbound.message_id.as_deref(),
            MailPlan::Robot { .. } => None,
        }
    }

    /// Whether this person's message, untagged, answers one of `messages`
    /// (other than itself).
    fn answers_one_of(&self, messages: &HashSet<String>) -> bool {
        match self {
            MailPlan::Person { inbound, .. } if inbound.tag.is_none() => inbound
                .replies_to
                .iter()
                .any(|id| messages.contains(id) && Some(id) != inbound.message_id.as_ref()),
            _ => false,
        }
    }

    /// Threads this message onto the ticket of the newest message it
    /// answers among those `forwarded` already, if any.
    fn thread_into(&mut self, forwarded: &[Forwarded]) {
        let MailPlan::Person {
            inbound, threaded, ..
        } = self
        else {
            return;
        };
        let found = inbound.replies_to.iter().find_map(|id| {
            forwarded
                .iter()
                .find(|mail| mail.message_id.as_ref() == Some(id))
                .and_then(|mail| mail.ticket.clone())
        });
        if found.is_some() {
            *threaded = found;
        }
    }
}

/// What became of a stored message.
pub struct Forwarded {
    pub id: i64,
    /// The ticket it went on.
    pub ticket: Option<String>,
    /// Why it went on none as a person's message (a robot's, or no message).
    pub ignored: Option<&'static str>,
    /// Its Message-ID, remembered with the ticket to thread replies.
    pub message_id: Option<String>,
    /// It opened its ticket: its subject and sender, to acknowledge.
    opened: Option<(String, String)>,
    /// The span it was forwarded in: its acknowledgement continues its trace.
    span: tracing::Span,
}

impl Forwarder {
    /// Calls that ended: each caller's one after another (in any process and
    /// lane, so two at once do not both open a ticket), different callers'
    /// at once.
    async fn calls(
        &self,
        conn: &mut PgConnection,
        calls: &[(&CallEnded, &tracing::Span)],
    ) -> anyhow::Result<()> {
        let customers: Vec<&str> = calls
            .iter()
            .map(|(call, _)| call.customer.as_str())
            .filter(|customer| !customer.is_empty())
            .collect();
        store::lock_callers(conn, &customers).await?;
        let mut callers: BTreeMap<&str, Vec<(&CallEnded, &tracing::Span)>> = BTreeMap::new();
        for &(call, span) in calls {
            // A call without a number matches nobody's: on its own.
            let caller = if call.customer.is_empty() {
                call.call_id.as_str()
            } else {
                call.customer.as_str()
            };
            callers.entry(caller).or_default().push((call, span));
        }
        let recorded = join_all(callers.into_values().map(|calls| async move {
            let mut recorded = Vec::with_capacity(calls.len());
            for (call, span) in calls {
                let ticket = self.call(call).instrument(span.clone()).await?;
                recorded.push((call.call_id.clone(), ticket));
            }
            anyhow::Ok(recorded)
        }))
        .await;
        let mut forwarded = Vec::with_capacity(calls.len());
        for calls in recorded {
            forwarded.extend(calls?);
        }
        // In the order the recorder locks calls in, so the two never deadlock.
        forwarded.sort();
        store::forwarded(conn, &forwarded).await?;
        Ok(())
    }

    /// Stored messages become tickets, or customer articles on the tickets
    /// they reply to; a robot's become nothing.
    async fn mails(
        &self,
        conn: &mut PgConnection,
        ids: &[(i64, &tracing::Span)],
    ) -> anyhow::Result<()> {
        let wanted: Vec<i64> = ids.iter().map(|(id, _)| *id).collect();
        let mut stored: HashMap<i64, (String, Vec<u8>)> = store::mails(conn, &wanted)
            .await?
            .into_iter()
            .map(|(id, from, raw)| (id, (from, raw)))
            .collect();
        let mut plans = Vec::with_capacity(ids.len());
        for &(id, span) in ids {
            let (envelope_from, raw) = stored
                .remove(&id)
                .with_context(|| format!("mail {id} is not stored"))?;
            plans.push((self.plan(conn, id, &envelope_from, &raw).await?, span));
        }
        // A mail answering another of this batch must wait for that one's
        // ticket (Message-IDs are remembered only at the commit): those go
        // after the others, one by one, in order; the rest at once.
        let in_batch: HashSet<String> = plans
            .iter()
            .filter_map(|(plan, _)| plan.message_id().map(str::to_owned))
            .collect();
        let (later, now): (Vec<_>, Vec<_>) = plans
            .into_iter()
            .partition(|(plan, _)| plan.answers_one_of(&in_batch));
        let mut forwarded = join_all(
            now.into_iter()
                .map(|(plan, span)| self.forward_mail(plan).instrument(span.clone())),
        )
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
        for (mut plan, span) in later {
            plan.thread_into(&forwarded);
            forwarded.push(self.forward_mail(plan).instrument(span.clone()).await?);
        }
        for mail in &forwarded {
            if let (Some(number), Some((subject, from))) = (&mail.ticket, &mail.opened) {
                self.mailer
                    .acknowledge(conn, number, subject, from)
                    .instrument(mail.span.clone())
                    .await?;
            }
        }
        store::mails_forwarded(conn, &forwarded).await?;
        Ok(())
    }

    /// What to do with a stored message: read it, and find the ticket it
    /// belongs to (its tag, then the messages it answers).
    async fn plan(
        &self,
        conn: &mut PgConnection,
        id: i64,
        envelope_from: &str,
        raw: &[u8],
    ) -> anyhow::Result<MailPlan> {
        let inbound = mail::read(raw, envelope_from, &self.hostname, self.limits);
        if let Some(robot) = inbound.robot {
            tracing::info!(mail = id, from = %inbound.from, robot, "robot mail: no ticket");
            let bounced = if robot.starts_with("bounce") {
                store::thread(conn, &outgoing::ours_in(raw, &self.hostname)).await?
            } else {
                None
            };
            return Ok(MailPlan::Robot {
                id,
                why: robot,
                bounced,
                inbound,
            });
        }
        // The same message again is a duplicate; another reusing its
        // Message-ID is a message of its own. Without a Message-ID there
        // is nothing to tell a retry by: each stored mail is its own.
        let key = match &inbound.message_id {
            Some(_) => format!("mail:{}", mail::fingerprint(raw, &inbound)),
            None => format!("mail:intake-{id}"),
        };
        let threaded = match &inbound.tag {
            Some(tag) => Some(tag.clone()),
            None => store::thread(conn, &inbound.replies_to).await?,
        };
        Ok(MailPlan::Person {
            id,
            key,
            raw_bytes: raw.len(),
            inbound,
            threaded,
        })
    }

    /// Carries out a plan in `tickets`.
    async fn forward_mail(&self, plan: MailPlan) -> anyhow::Result<Forwarded> {
        let (id, key, raw_bytes, inbound, threaded) = match plan {
            MailPlan::Robot {
                id,
                why,
                bounced,
                inbound,
            } => {
                let mut noted = None;
                if let Some(number) = bounced {
                    // A mail of ours came back: the desk must know.
                    let added = self
                        .tickets
                        .clone()
                        .add_article(AddArticleRequest {
                            ticket: number.clone(),
                            kind: ArticleKind::InternalNote as i32,
                            body: format!(
                                "A mail to the customer bounced ({}):\n\n{}",
                                inbound.subject,
                                inbound.body.chars().take(2000).collect::<String>()
                            ),
                            idempotency_key: format!("bounce:{id}"),
                            ..Default::default()
                        })
                        .await;
                    match added {
                        Ok(_) => noted = Some(number),
                        // Closed or gone since: the bounce is recorded
                        // with the mail, and nothing is left to tell.
                        Err(status) if gone(&status) => {
                            tracing::info!(mail = id, ticket = %number, "a bounce for a closed ticket");
                        }
                        Err(status) => return Err(status).context("noting a bounce on its ticket"),
                    }
                }
                return Ok(Forwarded {
                    id,
                    ticket: noted,
                    ignored: Some(why),
                    message_id: None,
                    opened: None,
                    span: tracing::Span::current(),
                });
            }
            MailPlan::Person {
                id,
                key,
                raw_bytes,
                inbound,
                threaded,
            } => (id, key, raw_bytes, inbound, threaded),
        };
        let delivered = match self.deliver(&key, &inbound, threaded.as_deref()).await {
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                // `tickets` refused the message as read (a limit this
                // bridge does not know of yet): it still becomes a ticket,
                // saying why, with the original kept in the stored mail.
                tracing::warn!(
                    mail = id,
                    reason = status.message(),
                    "mail taken in its plain form"
                );
                let plain = mail::Inbound {
                    body: format!(
                        "Hotline could not take this mail as it came ({}); the original \
                         ({raw_bytes} bytes) is kept as stored mail {id}.",
                        mail::one_line(status.message(), 500)
                    ),
                    html: None,
                    files: Vec::new(),
                    ..inbound.clone()
                };
                self.deliver(&key, &plain, threaded.as_deref()).await
            }
            delivered => delivered,
        };
        let (number, opened) = delivered.context("forwarding the mail to tickets")?;
        Ok(Forwarded {
            id,
            ticket: Some(number),
            ignored: None,
            message_id: inbound.message_id,
            opened: opened.then_some((inbound.subject, inbound.from)),
            span: tracing::Span::current(),
        })
    }

    /// Adds a person's message to `threaded`, or opens a ticket with it
    /// (also when that ticket is gone or closed); the ticket's number, and
    /// whether the message opened it.
    async fn deliver(
        &self,
        key: &str,
        inbound: &mail::Inbound,
        threaded: Option<&str>,
    ) -> Result<(String, bool), tonic::Status> {
        let attachments: Vec<NewAttachment> = inbound
            .files
            .iter()
            .map(|file| NewAttachment {
                name: file.name.clone(),
                content_type: file.content_type.clone(),
                content: file.content.clone(),
            })
            .collect();
        let html = inbound.html.clone().unwrap_or_default();
        if let Some(number) = threaded {
            let added = self
                .tickets
                .clone()
                .add_article(AddArticleRequest {
                    ticket: number.to_owned(),
                    kind: ArticleKind::CustomerMessage as i32,
                    body: inbound.body.clone(),
                    author: inbound.from.clone(),
                    idempotency_key: key.to_owned(),
                    html: html.clone(),
                    attachments: attachments.clone(),
                    ..Default::default()
                })
                .await;
            match added {
                Ok(added) => {
                    if let Some(ticket) = added.into_inner().ticket {
                        return Ok((ticket.number, false));
                    }
                }
                // Gone or closed: the message opens a ticket of its own.
                Err(status) if gone(&status) => {}
                Err(status) => return Err(status),
            }
        }
        let created = self
            .tickets
            .clone()
            .create_ticket(CreateTicketRequest {
                subject: inbound.subject.clone(),
                body: inbound.body.clone(),
                contact: inbound.from.clone(),
                channel: Channel::Email as i32,
                idempotency_key: key.to_owned(),
                html,
                attachments,
                ..Default::default()
            })
            .await?
            .into_inner();
        // Opened by this message, also when a retry finds it opened: the
        // acknowledgement is keyed by ticket, so it goes out once.
        Ok((created.ticket.map(|t| t.number).unwrap_or_default(), true))
    }

    /// The customer's ticket still being worked, newest first.
    async fn open_ticket(&self, customer: &str) -> anyhow::Result<Option<Ticket>> {
        let listed = self
            .tickets
            .clone()
            .list_tickets(ListTicketsRequest {
                contact: customer.to_owned(),
                status: vec![
                    Status::New as i32,
                    Status::Open as i32,
                    Status::PendingCustomer as i32,
                ],
                page_size: 1,
                ..Default::default()
            })
            .await
            .context("finding the caller's open ticket")?;
        Ok(listed.into_inner().tickets.into_iter().next())
    }

    /// Records the call; returns the ticket number it went on ("" if none).
    async fn call(&self, call: &CallEnded) -> anyhow::Result<String> {
        let key = format!("cti:{}", call.call_id);
        let (direction, outcome) = match call.outcome.as_str() {
            "answered" => (CallDirection::Inbound, CallOutcome::Answered),
            "missed" => (CallDirection::Inbound, CallOutcome::Missed),
            "connected" => (CallDirection::Outbound, CallOutcome::Answered),
            other => anyhow::bail!("unknown call outcome {other:?}"),
        };
        let record = Some(Call {
            direction: direction as i32,
            outcome: outcome as i32,
            call_id: call.call_id.clone(),
        });
        let agent = if call.agent.is_empty() {
            "an agent"
        } else {
            &call.agent
        };
        let caller = if call.customer.is_empty() {
            "an unknown number"
        } else {
            &call.customer
        };
        let body = match call.outcome.as_str() {
            "answered" => format!("Inbound call from {} answered by {agent}.", call.customer),
            "missed" => format!(
                "Missed call from {} ({}).",
                call.customer,
                if call.cause.is_empty() {
                    "no answer"
                } else {
                    &call.cause
                }
            ),
            _ => format!(
                "Called {} back ({agent}); the customer answered.",
                call.customer
            ),
        };
        // A number that is not a customer's matches no ticket.
        let open = if call.customer.is_empty() {
            None
        } else {
            self.open_ticket(&call.customer).await?
        };
        if let Some(open) = open {
            let added = self
                .tickets
                .clone()
                .add_article(AddArticleRequest {
                    ticket: open.number.clone(),
                    kind: ArticleKind::Call as i32,
                    body,
                    call: record,
                    idempotency_key: key,
                    ..Default::default()
                })
                .await
                .context("recording the call on the open ticket")?;
            return Ok(added
                .into_inner()
                .ticket
                .map(|t| t.number)
                .unwrap_or(open.number));
        }
        if call.outcome == "connected" {
            // An outbound call with no open ticket answers nothing.
            return Ok(String::new());
        }
        let subject = match call.outcome.as_str() {
            "missed" => format!("Missed call from {caller}"),
            _ => format!("Call from {caller}"),
        };
        let created = self
            .tickets
            .clone()
            .create_ticket(CreateTicketRequest {
                subject,
                body,
                contact: call.customer.clone(),
                channel: Channel::Phone as i32,
                first_article: ArticleKind::Call as i32,
                call: record,
                idempotency_key: key,
                ..Default::default()
            })
            .await
            .context("opening a ticket for the call")?;
        Ok(created
            .into_inner()
            .ticket
            .map(|t| t.number)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: i64, raw: &str) -> MailPlan {
        let limits = mail::Limits {
            max_files: 1,
            max_file_bytes: 1,
        };
        let inbound = mail::read(raw.as_bytes(), "a@customer.example", "desk.example", limits);
        MailPlan::Person {
            id,
            key: format!("mail:{id}"),
            raw_bytes: raw.len(),
            inbound,
            threaded: None,
        }
    }

    #[test]
    fn a_mail_answering_one_of_its_batch_waits_for_that_ones_ticket() {
        let first = person(
            1,
            "From: a@customer.example\r\nSubject: Camera dark\r\nMessage-ID: <m1@customer.example>\r\n\r\nHelp\r\n",
        );
        let mut answer = person(
            2,
            "From: a@customer.example\r\nSubject: Re: Camera dark\r\nMessage-ID: <m2@customer.example>\r\nIn-Reply-To: <m1@customer.example>\r\n\r\nStill dark\r\n",
        );
        let tagged = person(
            3,
            "From: a@customer.example\r\nSubject: Re: [HL-7] Camera dark\r\nIn-Reply-To: <m1@customer.example>\r\n\r\nx\r\n",
        );
        let batch: HashSet<String> = [&first, &answer, &tagged]
            .iter()
            .filter_map(|plan| plan.message_id().map(str::to_owned))
            .collect();
        assert!(!first.answers_one_of(&batch));
        assert!(answer.answers_one_of(&batch));
        assert!(!tagged.answers_one_of(&batch), "its tag names its ticket");
        let forwarded = [Forwarded {
            id: 1,
            ticket: Some("HL-10001".into()),
            ignored: None,
            message_id: Some("m1@customer.example".into()),
            opened: None,
            span: tracing::Span::none(),
        }];
        answer.thread_into(&forwarded);
        let MailPlan::Person { threaded, .. } = answer else {
            panic!("a person's message");
        };
        assert_eq!(threaded.as_deref(), Some("HL-10001"));
    }
}
