//! `hotline`: serve the fleet, migrate, or work tickets from the shell.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    hotline::cli::run(hotline::cli::Cli::parse()).await
}
