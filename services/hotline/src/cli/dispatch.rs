//! `hotline dispatch queue|explain`: routing seen from the desk — the
//! tickets waiting for someone in the order they will be placed, each
//! with why it waits, and why one ticket went to whom (or to nobody).

use clap::Subcommand;
use hotline_proto::dispatch::v1::{self as pb, dispatch_service_client::DispatchServiceClient};
use serde_json::{Value, json};

use super::{
    Failure, Output, connect,
    text::line,
    tickets::{optional, time},
};

#[derive(Subcommand)]
pub enum DispatchCommand {
    /// Tickets awaiting a response that nobody has, in routing order (SLA
    /// due first, then priority, then age), each with why it waits.
    Queue {
        /// At most this many (default 100).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Why a ticket went to whom, or why to nobody: routing's last decision.
    Explain {
        /// Number (HL-10001 or 10001) or id.
        ticket: String,
    },
}

fn queued_json(ticket: &pb::QueuedTicket) -> Value {
    json!({
        "number": ticket.number,
        "ticket_id": ticket.ticket_id,
        "priority": ticket.priority,
        "awaiting_since": time(ticket.awaiting_since.as_ref()),
        "due": time(ticket.due.as_ref()),
        "queued_at": time(ticket.queued_at.as_ref()),
        "skills": ticket.skills,
        "region": optional(&ticket.region),
        "moving_from": optional(&ticket.moving_from),
        "reason": ticket.reason,
    })
}

/// One line of `dispatch queue`.
fn queued_line(ticket: &pb::QueuedTicket) -> String {
    let due = time(ticket.due.as_ref())
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into());
    let moving = if ticket.moving_from.is_empty() {
        String::new()
    } else {
        format!(" (moving from {})", line(&ticket.moving_from))
    };
    format!(
        "{}\t{}\tdue {due}\t{}{moving}",
        ticket.number,
        ticket.priority,
        line(&ticket.reason)
    )
}

fn decision_json(decision: &pb::Decision) -> Value {
    json!({
        "number": decision.number,
        "ticket_id": decision.ticket_id,
        "assignee": optional(&decision.assignee),
        "reason": decision.reason,
        "decided_at": time(decision.decided_at.as_ref()),
        "skills": decision.skills,
        "region": optional(&decision.region),
        "moved_from": optional(&decision.moved_from),
        "overflow": decision.overflow,
        "waiting": decision.waiting,
    })
}

fn decision_text(decision: &pb::Decision) -> String {
    let to = if decision.assignee.is_empty() {
        "nobody".to_owned()
    } else {
        line(&decision.assignee).into_owned()
    };
    let at = time(decision.decided_at.as_ref())
        .map(|d| d.to_rfc3339())
        .unwrap_or_default();
    format!(
        "{} → {to} ({at})\n{}",
        decision.number,
        line(&decision.reason)
    )
}

pub async fn run(command: DispatchCommand, output: &Output) -> Result<(), Failure> {
    let mut client = DispatchServiceClient::new(connect()?);
    match command {
        DispatchCommand::Queue { limit } => {
            let queue = client
                .list_queue(pb::ListQueueRequest { limit })
                .await?
                .into_inner();
            output.print(
                json!(queue.tickets.iter().map(queued_json).collect::<Vec<_>>()),
                || {
                    if queue.tickets.is_empty() {
                        return "nobody waits".into();
                    }
                    let mut lines: Vec<String> = queue.tickets.iter().map(queued_line).collect();
                    if queue.total > queue.tickets.len() as u64 {
                        lines.push(format!("… {} waiting in all", queue.total));
                    }
                    lines.join("\n")
                },
            );
        }
        DispatchCommand::Explain { ticket } => {
            let decision = client
                .explain_ticket(pb::ExplainTicketRequest { ticket })
                .await?
                .into_inner();
            output.print(decision_json(&decision), || decision_text(&decision));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_ticket_shows_why_and_nobody_is_null() {
        let ticket = pb::QueuedTicket {
            number: "HL-10001".into(),
            priority: "high".into(),
            reason: "no one online with skill nvr in region north".into(),
            skills: vec!["nvr".into()],
            region: "north".into(),
            ..Default::default()
        };
        let value = queued_json(&ticket);
        assert_eq!(value["moving_from"], Value::Null);
        assert_eq!(value["skills"], json!(["nvr"]));
        assert!(queued_line(&ticket).ends_with("no one online with skill nvr in region north"));
        let nobody = pb::Decision {
            number: "HL-10001".into(),
            reason: "everyone at capacity".into(),
            waiting: true,
            ..Default::default()
        };
        assert_eq!(decision_json(&nobody)["assignee"], Value::Null);
        assert!(decision_text(&nobody).starts_with("HL-10001 → nobody"));
    }
}
