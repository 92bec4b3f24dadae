//! `hotline deadletters ...`: the events consumers gave up on, listed and
//! replayed (admin only). Each process answers for the services it runs:
//! with a split deployment, point HOTLINE_SERVER at the one running the
//! service.

use clap::Subcommand;
use hotline_proto::admin::v1::{
    self as pb, dead_letter_service_client::DeadLetterServiceClient,
    replay_dead_letters_request::Which,
};
use serde_json::{Value, json};

use super::{
    Failure, Output, connect, text,
    tickets::{optional, time},
};

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// Dead letters waiting to be replayed, newest first.
    List {
        /// Only this service's (sla, pager, intake).
        #[arg(long)]
        service: Option<String>,
        /// Those already replayed too.
        #[arg(long)]
        all: bool,
    },
    /// Put dead letters back on their service's queue, each once; an event
    /// applied meanwhile is not applied again.
    Replay {
        /// The dead letter's id, as `list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter not yet replayed.
        #[arg(long)]
        all: bool,
        /// The service the dead letters belong to (ids are numbered per
        /// service); every service the server runs when not given.
        #[arg(long)]
        service: Option<String>,
    },
}

pub async fn run(command: DeadLettersCommand, output: &Output) -> Result<(), Failure> {
    let mut client = DeadLetterServiceClient::new(connect()?);
    match command {
        DeadLettersCommand::List { service, all } => {
            let letters = client
                .list_dead_letters(pb::ListDeadLettersRequest {
                    service: service.unwrap_or_default(),
                    include_replayed: all,
                    limit: 500,
                })
                .await?
                .into_inner()
                .dead_letters;
            output.print(
                json!(letters.iter().map(letter_json).collect::<Vec<_>>()),
                || table(&letters),
            );
        }
        DeadLettersCommand::Replay { id, all, service } => {
            let which = match id {
                Some(id) => Which::Id(id),
                None => Which::All(all),
            };
            let response = client
                .replay_dead_letters(pb::ReplayDeadLettersRequest {
                    service: service.unwrap_or_default(),
                    which: Some(which),
                })
                .await?
                .into_inner();
            output.print(
                json!({
                    "replayed": response.replayed.iter().map(letter_json).collect::<Vec<_>>(),
                    "already_replayed":
                        response.already_replayed.iter().map(letter_json).collect::<Vec<_>>(),
                }),
                || replayed_text(&response),
            );
        }
    }
    Ok(())
}

fn letter_json(letter: &pb::DeadLetter) -> Value {
    json!({
        "id": letter.id,
        "service": letter.service,
        "event_id": optional(&letter.event_id),
        "event_type": letter.event_type,
        "ticket_id": optional(&letter.ticket_id),
        "error": letter.error,
        "attempts": letter.attempts,
        "dead_lettered_at": time(letter.dead_lettered_at.as_ref()),
        "replayed_at": time(letter.replayed_at.as_ref()),
        "replayed_by": optional(&letter.replayed_by),
    })
}

/// One column per field, aligned; the error last, its first line only.
fn table(letters: &[pb::DeadLetter]) -> String {
    if letters.is_empty() {
        return "no dead letters".into();
    }
    let header = [
        "ID",
        "SERVICE",
        "EVENT TYPE",
        "TICKET",
        "ATTEMPTS",
        "WHEN",
        "ERROR",
    ];
    let rows: Vec<[String; 7]> = letters
        .iter()
        .map(|letter| {
            let when = time(letter.dead_lettered_at.as_ref())
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let replayed = if letter.replayed_at.is_some() {
                " (replayed)"
            } else {
                ""
            };
            let error = letter.error.lines().next().unwrap_or_default();
            [
                letter.id.to_string(),
                printable(&letter.service),
                printable(&letter.event_type),
                printable(if letter.ticket_id.is_empty() {
                    "-"
                } else {
                    &letter.ticket_id
                }),
                letter.attempts.to_string(),
                format!("{when}{replayed}"),
                printable(error),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text
    };
    let mut lines = vec![line(&header)];
    lines.extend(
        rows.iter()
            .map(|row| line(&row.each_ref().map(String::as_str))),
    );
    lines.join("\n")
}

/// Outside text (an error, a ticket id) on one table cell or line,
/// control characters shown, never obeyed ([`text::line`]).
fn printable(outside: &str) -> String {
    text::line(outside).into_owned()
}

fn replayed_text(response: &pb::ReplayDeadLettersResponse) -> String {
    let mut lines: Vec<String> = response
        .replayed
        .iter()
        .map(|l| {
            format!(
                "replayed {} {} ({})",
                printable(&l.service),
                l.id,
                printable(&l.event_type)
            )
        })
        .collect();
    lines.extend(response.already_replayed.iter().map(|l| {
        let at = time(l.replayed_at.as_ref())
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        format!(
            "{} {} was already replayed at {at} by {}; nothing done",
            printable(&l.service),
            l.id,
            printable(&l.replayed_by)
        )
    }));
    if lines.is_empty() {
        "nothing to replay".into()
    } else {
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_the_first_line_of_an_error_with_control_characters_escaped() {
        let letter = pb::DeadLetter {
            id: 7,
            service: "sla".into(),
            event_type: "ticket.created".into(),
            ticket_id: "t\u{1b}[2J".into(),
            error: "bad \u{1b}[31mred\u{7}\nsecond line".into(),
            attempts: 5,
            ..Default::default()
        };
        let text = table(&[letter]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("7   sla"), "{text}");
        assert!(row.ends_with("bad \\u{1b}[31mred\\u{7}"), "{row}");
        assert!(row.contains("t\\u{1b}[2J"), "{row}");
        assert!(!text.contains("second line") && !text.contains('\u{1b}'));
        assert_eq!(text.lines().count(), 2, "a header and one row");
    }
}
