//! `tickets`: the system of record of every fault reported to the hotline.
//!
//! - [`domain`]: the state machine and the awaiting-response rule, pure.
//! - [`store`]: SQL; each command locks the ticket, applies the rule, and
//!   writes the new state with its events (outbox) in one transaction.
//! - [`events`]: the `ticket.*` events a change produces, and
//!   `entitlement.resolved` from `contracts` recorded on its ticket.
//! - [`api`]: `hotline.tickets.v1.TicketService` over gRPC, with role checks.
//! - [`convert`]: domain ↔ wire types.
//!
//! The module publishes through the kit's outbox relay. It consumes one
//! event, `entitlement.resolved`: whom a new ticket is for and what covers
//! it becomes a new version of the ticket (`ticket.entitled`).

pub mod api;
pub mod convert;
pub mod domain;
pub mod events;
pub mod store;

use std::sync::Arc;

use hotline_kit::{
    bus::{
        consumer::Consumer,
        outbox::{OutboxSignal, Relay},
    },
    grpc::MAX_MESSAGE_BYTES,
    supervisor::{Module, ModuleContext},
    telemetry::counter_from_zero,
};
use hotline_proto::tickets::v1::ticket_service_server::TicketServiceServer;

pub const SCHEMA: &str = "tickets";
const CONSUMES: &[&str] = &["entitlement.resolved"];

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub fn module() -> Module {
    Module {
        name: "tickets",
        depends_on: &[],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: CONSUMES,
        init,
    }
}

fn init(context: &mut ModuleContext) -> anyhow::Result<()> {
    let channels: Vec<[(&str, &str); 1]> = domain::Channel::ALL
        .iter()
        .map(|channel| [("channel", channel.as_str())])
        .collect();
    let channels: Vec<&[(&str, &str)]> = channels.iter().map(|c| c.as_slice()).collect();
    counter_from_zero(
        "hotline_tickets_opened_total",
        "Tickets opened, by the channel the fault came in by.",
        &channels,
    );
    let pool = context.pool(SCHEMA)?;
    let signal = OutboxSignal::default();
    let (store, creator) = store::Store::new(pool.clone(), signal.clone());
    let store = Arc::new(store);
    let cancel = context.cancel.clone();
    context.spawn("creator", creator.run(cancel));
    context.add_grpc(
        TicketServiceServer::new(api::TicketApi::new(store))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let relay = Relay::new(
        "tickets",
        pool.clone(),
        signal.clone(),
        context.publisher.clone(),
        &context.config.bus,
    );
    let cancel = context.cancel.clone();
    context.spawn("outbox-relay", async move { relay.run(cancel).await });
    let consumer = Consumer::new(
        "tickets",
        CONSUMES,
        pool,
        context.subscriber.clone(),
        events::Entitlements,
        context.config.bus.clone(),
    )?
    .waking(signal);
    context.spawn("consumer", Arc::new(consumer).run(context.cancel.clone()));
    Ok(())
}
