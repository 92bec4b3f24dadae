//! `hotline import installed-base --file F`: the installed base from a
//! CSV file, streamed to `ContractsService` in pieces (the command line
//! never touches the database). The server checks every row and writes
//! the whole file or nothing; the answer says what was written, or every
//! refused line.

use std::{io::Read, path::PathBuf, time::Duration};

use clap::Subcommand;
use futures_util::stream;
use hotline_contracts::api::IMPORT_LIMIT;
use hotline_proto::contracts::v1::{self as pb, contracts_service_client::ContractsServiceClient};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::{Failure, Output, connect_waiting};

/// The size of the pieces the file is sent in: far below the server's
/// message limit, large enough to keep the stream busy.
const PIECE_BYTES: u64 = 1 << 20;

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Customers, branches, contacts, projects and assets from a CSV file:
    /// all of it or, when a row is refused, none of it; the same file again
    /// changes nothing.
    InstalledBase {
        /// The CSV file (UTF-8): a header row naming the columns customer,
        /// branch, branch_email, branch_timezone, region, contact_name,
        /// contact_email, contact_phone, project, accepted_on, lat, lng,
        /// model, family, serial, price, currency, firmware, then a row per
        /// asset.
        #[arg(long)]
        file: PathBuf,
    },
}

/// The next piece of `file`; empty at its end.
async fn next_piece(file: std::fs::File) -> std::io::Result<(std::fs::File, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        let mut piece = Vec::with_capacity(PIECE_BYTES as usize);
        let mut file = file;
        (&mut file).take(PIECE_BYTES).read_to_end(&mut piece)?;
        Ok((file, piece))
    })
    .await
    .map_err(std::io::Error::other)?
}

fn counts_json(counts: &Option<pb::ImportCounts>) -> Value {
    let c = counts.unwrap_or_default();
    json!({ "created": c.created, "updated": c.updated, "unchanged": c.unchanged })
}

fn counts_line(kind: &str, counts: &Option<pb::ImportCounts>) -> String {
    let c = counts.unwrap_or_default();
    format!(
        "{kind}: {} created, {} updated, {} unchanged",
        c.created, c.updated, c.unchanged
    )
}

pub async fn run(command: ImportCommand, output: &Output) -> Result<(), Failure> {
    let ImportCommand::InstalledBase { file: path } = command;
    let shown = path.display().to_string();
    let cannot_read = |error: std::io::Error| {
        Failure::new(
            tonic::Code::InvalidArgument,
            format!("cannot read {shown}: {error}; nothing was imported"),
        )
    };
    let file = std::fs::File::open(&path).map_err(cannot_read)?;
    // The server allows an import IMPORT_LIMIT; wait a little longer for
    // its answer.
    let mut client =
        ContractsServiceClient::new(connect_waiting(IMPORT_LIMIT + Duration::from_secs(30))?);
    // A read error must not end the stream early (the server would import
    // a cut file): it stops the call instead.
    let (failed, read_failed) = oneshot::channel();
    let pieces = stream::unfold(
        (Some(file), Some(failed)),
        |(file, mut failed)| async move {
            let file = file?;
            match next_piece(file).await {
                Ok((_, piece)) if piece.is_empty() => None,
                Ok((file, data)) => Some((pb::ImportChunk { data }, (Some(file), failed))),
                Err(error) => {
                    if let Some(failed) = failed.take() {
                        let _ = failed.send(error);
                    }
                    std::future::pending().await
                }
            }
        },
    );
    let summary = tokio::select! {
        answer = client.import_installed_base(pieces) => answer?.into_inner(),
        Ok(error) = read_failed => return Err(cannot_read(error)),
    };
    if summary.error_count > 0 {
        let mut fields = Map::new();
        fields.insert("file".into(), json!(shown));
        fields.insert("rows".into(), json!(summary.rows));
        fields.insert("error_count".into(), json!(summary.error_count));
        fields.insert(
            "errors".into(),
            json!(
                summary
                    .errors
                    .iter()
                    .map(|e| json!({ "line": e.line, "reason": e.reason }))
                    .collect::<Vec<_>>()
            ),
        );
        let mut lines: Vec<String> = summary
            .errors
            .iter()
            .map(|e| format!("line {}: {}", e.line, e.reason))
            .collect();
        let unlisted = summary.error_count - summary.errors.len() as u64;
        if unlisted > 0 {
            lines.push(format!("... and {unlisted} more"));
        }
        let faults = summary.error_count;
        return Err(Failure::new(
            tonic::Code::InvalidArgument,
            format!(
                "{shown} was refused, nothing was written: {faults} fault{} to correct",
                if faults == 1 { "" } else { "s" }
            ),
        )
        .with_details(fields, lines));
    }
    let kinds = [
        ("customers", &summary.customers),
        ("branches", &summary.branches),
        ("contacts", &summary.contacts),
        ("projects", &summary.projects),
        ("models", &summary.models),
        ("assets", &summary.assets),
    ];
    let changed = kinds.iter().any(|(_, c)| {
        let c = c.unwrap_or_default();
        c.created + c.updated > 0
    });
    let mut value = json!({ "file": shown, "rows": summary.rows, "changed": changed });
    for (kind, counts) in kinds {
        value[kind] = counts_json(counts);
    }
    output.print(value, || {
        let mut text = if changed {
            format!(
                "imported {}: {} rows",
                super::text::line(&shown),
                summary.rows
            )
        } else {
            format!(
                "{}: all {} rows are recorded already; nothing changed",
                super::text::line(&shown),
                summary.rows
            )
        };
        for (kind, counts) in kinds {
            text += &format!("\n{}", counts_line(kind, counts));
        }
        text
    });
    Ok(())
}
