//! The command line: `serve`, `migrate`, `token issue`, and the desk's
//! commands — `tickets`, `sla`, `oncall`, `pages` ([`paging`]), the
//! installed base and its coverage ([`contracts`]: `customers`, `branches`,
//! `contacts`, `projects`, `assets`, `contracts`, `entitlement`; [`import`]:
//! `import installed-base`), the people of the desk and their presence
//! ([`people`]: `people`, `presence`), routing ([`dispatch`]: `dispatch
//! queue|explain`) and `deadletters` ([`deadletters`]) — which
//! talk gRPC to the server at
//! `HOTLINE_SERVER` with the token in `HOTLINE_TOKEN`. With `--json` a command prints JSON
//! only — on failure too, argument errors included (`{"error": ...,
//! "code": ...}`) — and exits non-zero when it failed. Human output shows
//! outside text through [`text`], so it never drives the terminal.

mod contracts;
mod deadletters;
mod dispatch;
mod import;
mod paging;
mod people;
mod text;
mod tickets;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand, error::ErrorKind};
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
    about = "Hotline: the 7x24 after-sales service desk",
    after_help = "Environment:
  HOTLINE_SERVER  the server the desk commands call (default http://127.0.0.1:50051;
                  host:port means http://host:port)
  HOTLINE_TOKEN   the bearer token they send (from `hotline token issue`)
  HOTLINE_*       serve, migrate and token issue read their settings here (README)"
)]
pub struct Cli {
    /// A TOML configuration file, read before the HOTLINE_* environment.
    #[arg(long, global = true, env = "HOTLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON only, failures included ({"error", "code"}).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run services: all of them, or those named by --target.
    Serve {
        /// all, or a comma list of modules: tickets, sla, pager, intake, contracts, dispatch.
        #[arg(long, default_value = "all")]
        target: String,
    },
    /// Apply every service's database migrations and exit.
    Migrate {
        /// all, or a comma list of modules: tickets, sla, pager, intake, contracts, dispatch.
        #[arg(long, default_value = "all")]
        target: String,
    },
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Work tickets.
    #[command(subcommand)]
    Tickets(tickets::TicketsCommand),
    /// Response clocks: at risk, breached, one ticket's; the policies.
    #[command(subcommand)]
    Sla(paging::SlaCommand),
    /// Who is on call: now, the schedules, overrides and each level's targets.
    #[command(subcommand)]
    Oncall(paging::OncallCommand),
    /// Pages sent for breaches, and acknowledging them.
    #[command(subcommand)]
    Pages(paging::PagesCommand),
    /// Events a service gave up on: list and replay them (admin).
    #[command(subcommand)]
    Deadletters(deadletters::DeadLettersCommand),
    #[command(flatten)]
    Contracts(contracts::Command),
    /// Bulk imports (managers): the installed base from a CSV file.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// The directory of people who work the desk.
    #[command(subcommand)]
    People(people::PeopleCommand),
    /// Your presence: online, away or offline, kept by heartbeats.
    #[command(subcommand)]
    Presence(people::PresenceCommand),
    /// Routing: the queue of tickets waiting for someone, and why a ticket
    /// went to whom.
    #[command(subcommand)]
    Dispatch(dispatch::DispatchCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Sign a token with the configured secret (HOTLINE_AUTH__SECRET).
    Issue {
        /// agent, dispatcher, technician, manager, admin or bridge; repeatable.
        #[arg(long, value_parser = str::parse::<Role>, required = true)]
        role: Vec<Role>,
        /// Who the token names: the author of what is done with it.
        #[arg(long, value_parser = non_blank)]
        subject: String,
        /// How long it is valid, e.g. 12h, 30d.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        ttl: std::time::Duration,
    },
}

/// A failure to report: its message and a gRPC code. Server refusals keep
/// the server's code; failures here get the code of what went wrong:
/// `InvalidArgument` for arguments, settings and configuration,
/// `Unauthenticated` for a missing token, `Internal` for the rest (a file
/// that cannot be written, a server that cannot start).
pub struct Failure {
    message: String,
    code: tonic::Code,
    /// More to tell than one message: fields added to the JSON error, and
    /// lines printed after the message (outside text, escaped when shown).
    details: Option<(serde_json::Map<String, serde_json::Value>, Vec<String>)>,
}

impl Failure {
    fn new(code: tonic::Code, message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code,
            details: None,
        }
    }

    /// With `fields` in the JSON error and `lines` after the message.
    fn with_details(
        mut self,
        fields: serde_json::Map<String, serde_json::Value>,
        lines: Vec<String>,
    ) -> Self {
        self.details = Some((fields, lines));
        self
    }

    /// An argument, setting or configuration that cannot be used.
    fn invalid(error: anyhow::Error) -> Self {
        Self::new(tonic::Code::InvalidArgument, format!("{error:#}"))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::new(tonic::Code::Internal, format!("{error:#}"))
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
        Self::new(status.code(), message)
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
        let (fields, lines) = failure.details.unwrap_or_default();
        if self.json {
            let code = format!("{:?}", failure.code);
            let mut error = json!({ "error": failure.message, "code": code });
            if let Some(error) = error.as_object_mut() {
                error.extend(fields);
            }
            println!("{error}");
        } else {
            // Server messages may quote what a customer wrote.
            eprintln!("error: {}", text::line(&failure.message));
            for line in lines {
                eprintln!("{}", text::line(&line));
            }
        }
        ExitCode::FAILURE
    }
}

/// The command line of this process. Help and version print as clap prints
/// them; other parse errors too, unless `--json` is among the arguments:
/// then the error is JSON on stdout like any other failure, exit code 2.
pub fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<_> = std::env::args_os().collect();
    let error = match Cli::try_parse_from(&args) {
        Ok(cli) => return Ok(cli),
        Err(error) => error,
    };
    let json = args
        .iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json");
    if !json
        || matches!(
            error.kind(),
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
        )
    {
        error.exit();
    }
    let rendered = error.render().to_string();
    let message = rendered.trim().trim_start_matches("error: ");
    Output { json }.fail(Failure::new(tonic::Code::InvalidArgument, message));
    // clap's exit code for a command line it cannot use.
    Err(ExitCode::from(2))
}

/// A value that says something: not empty, not only spaces.
fn non_blank(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value.to_owned())
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
        Command::Deadletters(command) => deadletters::run(command, &output).await,
        Command::Contracts(command) => contracts::run(command, &output).await,
        Command::Import(command) => import::run(command, &output).await,
        Command::People(command) => people::people(command, &output).await,
        Command::Presence(command) => people::presence(command, &output).await,
        Command::Dispatch(command) => dispatch::run(command, &output).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => output.fail(failure),
    }
}

async fn serve(file: Option<PathBuf>, target: &str) -> Result<(), Failure> {
    let config = Config::load(file.as_deref()).map_err(Failure::invalid)?;
    let modules = fleet::select(target).map_err(Failure::invalid)?;
    let telemetry = Telemetry::init(&config.log, &fleet::service_name(&modules))?;
    let app = App::start(config, &modules).await?;
    let result = app.run_until(shutdown_signal()).await;
    telemetry.shutdown().await;
    Ok(result?)
}

async fn migrate_all(file: Option<PathBuf>, target: &str) -> Result<(), Failure> {
    let config = Config::load(file.as_deref()).map_err(Failure::invalid)?;
    let telemetry = Telemetry::init(&config.log, "hotline")?;
    let modules = fleet::select(target).map_err(Failure::invalid)?;
    let result = migrate(&config, &modules).await;
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
    let config = Config::load(file.as_deref()).map_err(Failure::invalid)?;
    let authority = Authority::new(&config.auth.secret).map_err(Failure::invalid)?;
    let now = Utc::now();
    let expires_at = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .filter(|at| at.timestamp() < i64::from(i32::MAX))
        .context("--ttl is too long")
        .map_err(Failure::invalid)?;
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
fn connect() -> Result<InterceptedService<Channel, BearerToken>, Failure> {
    connect_waiting(grpc::CLIENT_TIMEOUT)
}

/// [`connect`] for a call that may take up to `timeout`.
fn connect_waiting(
    timeout: std::time::Duration,
) -> Result<InterceptedService<Channel, BearerToken>, Failure> {
    let server = server_url(std::env::var("HOTLINE_SERVER").ok().as_deref());
    let token = std::env::var("HOTLINE_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            Failure::new(
                tonic::Code::Unauthenticated,
                "HOTLINE_TOKEN is not set: get one with `hotline token issue --role agent --subject <you>`",
            )
        })?;
    let channel = grpc::channel_waiting(&server, timeout)
        .context("HOTLINE_SERVER should be http://host:port or host:port")
        .map_err(Failure::invalid)?;
    let token = BearerToken::new(&token)
        .context("HOTLINE_TOKEN")
        .map_err(|e| Failure::new(tonic::Code::Unauthenticated, format!("{e:#}")))?;
    Ok(InterceptedService::new(channel, token))
}

/// The server's URL: `HOTLINE_SERVER` as given, with `http://` before a
/// bare `host:port` (as people write it); the default when unset or blank.
fn server_url(given: Option<&str>) -> String {
    match given.map(str::trim).filter(|s| !s.is_empty()) {
        None => "http://127.0.0.1:50051".into(),
        Some(url) if url.contains("://") => url.into(),
        Some(address) => format!("http://{address}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_command_and_argument_says_what_it_is_for() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "hotline", &mut missing);
        assert!(missing.is_empty(), "without a help line: {missing:?}");
    }

    #[test]
    fn a_server_given_as_host_and_port_is_called_over_http() {
        assert_eq!(
            server_url(Some("127.0.0.1:50161")),
            "http://127.0.0.1:50161"
        );
        assert_eq!(
            server_url(Some(" https://desk.example ")),
            "https://desk.example"
        );
        assert_eq!(server_url(Some("")), "http://127.0.0.1:50051");
        assert_eq!(server_url(None), "http://127.0.0.1:50051");
    }
}
