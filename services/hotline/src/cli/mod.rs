//! The command line: `serve`, `migrate`, `token issue`, and the desk's
//! `tickets`, `sla`, `oncall` and `pages` commands, which talk gRPC to the server at `HOTLINE_SERVER`
//! with the token in `HOTLINE_TOKEN`. With `--json` a command prints JSON
//! only — on failure too (`{"error": ..., "code": ...}`) — and exits non-zero
//! when it failed.

mod contracts;
mod paging;
mod tickets;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use hotline_kit::{
    auth::{Authority, Role},
    config::{Config, parse_duration},
    grpc::{self, BearerToken},
    supervisor::{App, migrate},
    telemetry::Telemetry,
};
use serde_json::json;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::fleet;

#[derive(Parser)]
#[command(
    name = "hotline",
    version,
    about = "Hotline: the 7x24 after-sales service desk"
)]
pub struct Cli {
    /// A TOML configuration file, read before the HOTLINE_* environment.
    #[arg(long, global = true, env = "HOTLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON only.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run services: all of them, or those named by --target.
    Serve {
        #[arg(long, default_value = "all")]
        target: String,
    },
    /// Apply every service's database migrations and exit.
    Migrate {
        #[arg(long, default_value = "all")]
        target: String,
    },
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Work tickets.
    #[command(subcommand)]
    Tickets(tickets::TicketsCommand),
    /// Response clocks: at risk, breached, one ticket's.
    #[command(subcommand)]
    Sla(paging::SlaCommand),
    /// Who is on call.
    #[command(subcommand)]
    Oncall(paging::OncallCommand),
    /// Pages sent for breaches, and acknowledging them.
    #[command(subcommand)]
    Pages(paging::PagesCommand),
    #[command(flatten)]
    Contracts(contracts::Command),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Sign a token with the configured secret (HOTLINE_AUTH__SECRET).
    Issue {
        /// agent, dispatcher, technician, manager, admin or bridge; repeatable.
        #[arg(long, value_parser = str::parse::<Role>, required = true)]
        role: Vec<Role>,
        #[arg(long)]
        subject: String,
        /// How long it is valid, e.g. 12h, 30d.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        ttl: std::time::Duration,
    },
}

/// A failure to report: its message and, for server refusals, the gRPC code.
pub struct Failure {
    message: String,
    code: Option<tonic::Code>,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            message: format!("{error:#}"),
            code: None,
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        let message = match status.code() {
            tonic::Code::Unauthenticated => format!(
                "the server refused the token ({}); check HOTLINE_TOKEN",
                status.message()
            ),
            tonic::Code::Unavailable => format!(
                "cannot reach the server ({}); check HOTLINE_SERVER",
                status.message()
            ),
            _ => status.message().to_owned(),
        };
        Self {
            message,
            code: Some(status.code()),
        }
    }
}

/// Where command output goes: JSON or human text.
pub struct Output {
    /// JSON only on stdout.
    pub json: bool,
}

impl Output {
    fn print(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    fn fail(&self, failure: Failure) -> ExitCode {
        if self.json {
            let code = failure.code.map(|c| format!("{c:?}"));
            println!("{}", json!({ "error": failure.message, "code": code }));
        } else {
            eprintln!("error: {}", failure.message);
        }
        ExitCode::FAILURE
    }
}

pub async fn run(cli: Cli) -> ExitCode {
    let output = Output { json: cli.json };
    let result = match cli.command {
        Command::Serve { target } => serve(cli.config, &target).await,
        Command::Migrate { target } => migrate_all(cli.config, &target).await,
        Command::Token(TokenCommand::Issue { role, subject, ttl }) => {
            issue_token(cli.config, &role, &subject, ttl, &output)
        }
        Command::Tickets(command) => tickets::run(command, &output).await,
        Command::Sla(command) => paging::sla(command, &output).await,
        Command::Oncall(command) => paging::oncall(command, &output).await,
        Command::Pages(command) => paging::pages(command, &output).await,
        Command::Contracts(command) => contracts::run(command, &output).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => output.fail(failure),
    }
}

async fn serve(file: Option<PathBuf>, target: &str) -> Result<(), Failure> {
    let config = Config::load(file.as_deref())?;
    let telemetry = Telemetry::init(&config.log, "hotline")?;
    let modules = fleet::select(target)?;
    let app = App::start(config, &modules).await?;
    let result = app.run_until(shutdown_signal()).await;
    telemetry.shutdown().await;
    Ok(result?)
}

async fn migrate_all(file: Option<PathBuf>, target: &str) -> Result<(), Failure> {
    let config = Config::load(file.as_deref())?;
    let telemetry = Telemetry::init(&config.log, "hotline")?;
    let result = migrate(&config, &fleet::select(target)?).await;
    telemetry.shutdown().await;
    Ok(result?)
}

fn issue_token(
    file: Option<PathBuf>,
    roles: &[Role],
    subject: &str,
    ttl: std::time::Duration,
    output: &Output,
) -> Result<(), Failure> {
    let config = Config::load(file.as_deref())?;
    let authority = Authority::new(&config.auth.secret)?;
    let now = Utc::now();
    let expires_at = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .filter(|at| at.timestamp() < i64::from(i32::MAX))
        .context("--ttl is too long")?;
    let token = authority.issue(subject, roles, now, expires_at - now);
    output.print(
        json!({ "token": token, "subject": subject, "expires_at": expires_at }),
        || token.clone(),
    );
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// A gRPC channel to `HOTLINE_SERVER` carrying `HOTLINE_TOKEN`.
fn connect() -> anyhow::Result<InterceptedService<Channel, BearerToken>> {
    let server =
        std::env::var("HOTLINE_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("HOTLINE_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context(
            "HOTLINE_TOKEN is not set: get one with `hotline token issue --role agent --subject <you>`",
        )?;
    Ok(InterceptedService::new(
        grpc::channel(&server)?,
        BearerToken::new(&token)?,
    ))
}
