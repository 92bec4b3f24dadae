//! The `hotline` binary: every service in one executable.
//!
//! - [`fleet`]: the modules and `--target` selection; `serve` and `migrate`.
//! - [`cli`]: the operator's and agent's command line, over gRPC.

pub mod cli;
pub mod fleet;
