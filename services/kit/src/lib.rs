//! The shared runtime of every Hotline service.
//!
//! - [`config`]: layered configuration (defaults, TOML file, `HOTLINE_*`).
//! - [`telemetry`]: tracing, OTLP export, trace-context propagation, metrics.
//! - [`db`]: a pool per service schema and the migrations.
//! - [`bus`]: RabbitMQ connection, transactional outbox and relay,
//!   consumers with inbox, ordering and dead letters.
//! - [`batch`]: requests that wait together, written together.
//! - [`cache`]: Redis under the namespace prefix.
//! - [`admin`]: dead letters listed and replayed, served by every process.
//! - [`auth`]: signed bearer tokens with roles, checked on every gRPC call.
//! - [`grpc`]: server limits and authenticated clients.
//! - [`mail`]: mail out through the SMTP relay.
//! - [`phone`]: phone numbers normalised to E.164, one rule for every
//!   service that matches callers.
//! - [`input`]: free-text fields from requests, checked the same way by
//!   every service (NUL, control characters, length).
//! - [`queue`]: work kept in a table, leased and done by any process.
//! - [`supervisor`]: modules, start order, readiness, graceful shutdown.
//! - [`ticket_ref`]: naming a ticket by id or number, in services that
//!   keep copies of tickets.
//! - [`testing`]: a running app per test with its own database, bus
//!   namespace and Redis prefix.
//!
//! A request flows: gRPC server (auth layer, trace span) → a module's
//! service → its store commits state and outbox rows in one transaction →
//! the relay publishes them → other modules' consumers apply them.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod bus;
pub mod cache;
pub mod config;
pub mod db;
pub mod grpc;
pub mod input;
pub mod mail;
pub mod phone;
pub mod queue;
pub mod supervisor;
pub mod telemetry;
pub mod testing;
pub mod ticket_ref;
pub mod time;
