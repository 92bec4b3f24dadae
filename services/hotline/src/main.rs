//! `hotline`: serve the fleet, migrate, or work tickets from the shell.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match hotline::cli::parse() {
        Ok(cli) => hotline::cli::run(cli).await,
        Err(code) => code,
    }
}
