//! Forwards what intake accepted to `tickets`, from the bus: a call that
//! ended becomes a ticket or an article on the caller's open ticket, a mail
//! a ticket or a customer article; an agent's reply on an email ticket goes
//! out by mail. Every
//! request carries an idempotency key (`cti:<callId>`), so a redelivery
//! after a crash records nothing twice; `tickets` being unavailable holds
//! the event until it is back.

use anyhow::Context;
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
        match &event.payload {
            Some(Payload::IntakeCallEnded(call)) => {
                if !call.customer.is_empty() {
                    // One caller's calls one at a time (in any process), so
                    // two at once do not both open a ticket.
                    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                        .bind(&call.customer)
                        .execute(&mut *conn)
                        .await?;
                }
                let ticket = self.call(call).await?;
                store::forwarded(conn, &call.call_id, &ticket).await?;
                Ok(())
            }
            Some(Payload::IntakeMailReceived(received)) => self.mail(conn, received.mail_id).await,
            Some(Payload::TicketArticleAdded(added)) => {
                let (Some(ticket), Some(article)) = (&added.ticket, &added.article) else {
                    return Ok(());
                };
                let emailed = article.kind == ArticleKind::AgentReply as i32
                    && ticket.channel == Channel::Email as i32
                    && !ticket.contact.is_empty();
                if emailed {
                    self.mailer.reply(conn, ticket, article).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Intake's own facts concern no ticket version.
    fn ordered(&self, _event: &EventEnvelope) -> bool {
        false
    }
}

impl Forwarder {
    /// A stored message becomes a ticket, or a customer article on the
    /// ticket it replies to; a robot's becomes nothing.
    async fn mail(&self, conn: &mut PgConnection, id: i64) -> anyhow::Result<()> {
        let (envelope_from, raw) = store::mail(conn, id)
            .await?
            .with_context(|| format!("mail {id} is not stored"))?;
        let Some(inbound) = mail::read(&raw, &envelope_from, &self.hostname, self.limits) else {
            store::mail_forwarded(conn, id, None, Some("not a message")).await?;
            return Ok(());
        };
        if let Some(robot) = inbound.robot {
            tracing::info!(mail = id, from = %inbound.from, robot, "robot mail: no ticket");
            let bounced = if robot.starts_with("bounce") {
                store::thread(conn, &outgoing::ours_in(&raw, &self.hostname)).await?
            } else {
                None
            };
            if let Some(number) = &bounced {
                // A mail of ours came back: the desk must know.
                self.tickets
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
                    .await
                    .context("noting a bounce on its ticket")?;
            }
            store::mail_forwarded(conn, id, bounced.as_deref(), Some(robot)).await?;
            return Ok(());
        }
        let key = format!(
            "mail:{}",
            inbound
                .message_id
                .clone()
                .unwrap_or_else(|| format!("intake-{id}"))
        );
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
        let threaded = match &inbound.tag {
            Some(tag) => Some(tag.clone()),
            None => store::thread(conn, &inbound.replies_to).await?,
        };
        let mut ticket = None;
        if let Some(number) = threaded {
            let added = self
                .tickets
                .clone()
                .add_article(AddArticleRequest {
                    ticket: number.clone(),
                    kind: ArticleKind::CustomerMessage as i32,
                    body: inbound.body.clone(),
                    author: inbound.from.clone(),
                    idempotency_key: key.clone(),
                    html: html.clone(),
                    attachments: attachments.clone(),
                    ..Default::default()
                })
                .await;
            match added {
                Ok(added) => ticket = added.into_inner().ticket.map(|t| t.number),
                // Gone or closed: the message opens a ticket of its own.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::NotFound | tonic::Code::FailedPrecondition
                    ) => {}
                Err(status) => return Err(status).context("adding the message to its ticket"),
            }
        }
        let opened = ticket.is_none();
        let number = match ticket {
            Some(number) => number,
            None => self
                .tickets
                .clone()
                .create_ticket(CreateTicketRequest {
                    subject: inbound.subject.clone(),
                    body: inbound.body.clone(),
                    contact: inbound.from.clone(),
                    channel: Channel::Email as i32,
                    idempotency_key: key,
                    html,
                    attachments,
                    ..Default::default()
                })
                .await
                .context("opening a ticket for the message")?
                .into_inner()
                .ticket
                .map(|t| t.number)
                .unwrap_or_default(),
        };
        if let Some(message_id) = &inbound.message_id {
            store::remember(conn, message_id, &number).await?;
        }
        if opened {
            self.mailer
                .acknowledge(conn, &number, &inbound.subject, &inbound.from)
                .await?;
        }
        store::mail_forwarded(conn, id, Some(&number), None).await?;
        Ok(())
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
