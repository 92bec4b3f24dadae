//! Forwards what intake accepted to `tickets`, from the bus: a call that
//! ended becomes a ticket or an article on the caller's open ticket. Every
//! request carries an idempotency key (`cti:<callId>`), so a redelivery
//! after a crash records nothing twice; `tickets` being unavailable holds
//! the event until it is back.

use anyhow::Context;
use hotline_kit::{bus::consumer::EventHandler, grpc::ServiceToken};
use hotline_proto::{
    events::v1::{CallEnded, EventEnvelope, event_envelope::Payload},
    tickets::v1::{
        AddArticleRequest, ArticleKind, Call, CallDirection, CallOutcome, Channel,
        CreateTicketRequest, ListTicketsRequest, Status, Ticket,
        ticket_service_client::TicketServiceClient,
    },
};
use sqlx::PgConnection;
use tonic::{service::interceptor::InterceptedService, transport::Channel as GrpcChannel};

use crate::store;

pub type Tickets = TicketServiceClient<InterceptedService<GrpcChannel, ServiceToken>>;

pub struct Forwarder {
    pub tickets: Tickets,
}

impl EventHandler for Forwarder {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        match &event.payload {
            Some(Payload::IntakeCallEnded(call)) => {
                let ticket = self.call(call).await?;
                store::forwarded(conn, &call.call_id, &ticket).await?;
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
        if let Some(open) = self.open_ticket(&call.customer).await? {
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
            "missed" => format!("Missed call from {}", call.customer),
            _ => format!("Call from {}", call.customer),
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
