//! `hotline tickets ...`: the agent's commands.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use hotline_kit::time::from_timestamp;
use hotline_proto::tickets::v1::{self as pb, ticket_service_client::TicketServiceClient};
use hotline_tickets::{convert, domain};
use serde_json::{Value, json};

use super::{
    Failure, Output, connect, non_blank,
    text::{Layout, line, shown},
};

#[derive(Subcommand)]
pub enum TicketsCommand {
    /// Open a ticket for a customer's report.
    Create {
        /// What is wrong, in one line.
        #[arg(long)]
        subject: String,
        /// The customer's report: the ticket's first article.
        #[arg(long)]
        body: String,
        /// The customer's email address or phone number.
        #[arg(long)]
        contact: Option<String>,
        /// low, normal, high or urgent.
        #[arg(long, value_parser = str::parse::<domain::Priority>)]
        priority: Option<domain::Priority>,
        /// email, phone, web, api or onsite (default api).
        #[arg(long, value_parser = str::parse::<domain::Channel>)]
        channel: Option<domain::Channel>,
        /// Retrying with the same key returns the same ticket.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List tickets, newest first.
    List {
        /// Only tickets awaiting a response.
        #[arg(long)]
        awaiting: bool,
        /// new, open, pending_customer, resolved or closed; repeatable.
        #[arg(long, value_parser = str::parse::<domain::Status>)]
        status: Vec<domain::Status>,
        /// Only tickets assigned to this agent.
        #[arg(long)]
        assignee: Option<String>,
        /// Only tickets of this customer: its id, or its whole name (any case).
        #[arg(long)]
        customer: Option<String>,
        /// Text in the subject.
        #[arg(long)]
        text: Option<String>,
        /// At most this many tickets (pages are followed up to it).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// A ticket with its conversation.
    Show {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
    /// Reply to the customer: a response, which stops the clock.
    Respond {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
        /// The reply's text (not empty).
        #[arg(long)]
        message: String,
        /// Then wait for the customer.
        #[arg(long)]
        pending: bool,
    },
    /// An internal note: not a response.
    Note {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
        /// The note's text (not empty).
        #[arg(long)]
        message: String,
    },
    /// Assign to an agent.
    Assign {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
        /// The agent (their token's subject).
        #[arg(long, value_parser = non_blank)]
        to: String,
    },
    /// Take the ticket off whoever it is assigned to.
    Unassign {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
    /// Change the priority.
    Priority {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
        /// low, normal, high or urgent.
        #[arg(value_parser = str::parse::<domain::Priority>)]
        priority: domain::Priority,
    },
    /// The matter is settled: the clock stops without a response.
    Resolve {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
    /// Close a resolved ticket: it takes nothing more until reopened.
    Close {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
    /// Open a resolved or closed ticket again.
    Reopen {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
    /// Save a file kept with an article.
    Attachment {
        /// The attachment's id (from `tickets show`).
        id: String,
        /// Where to write it (default: its own name, in this folder); - for
        /// standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

type Client = TicketServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        hotline_kit::grpc::BearerToken,
    >,
>;

pub async fn run(command: TicketsCommand, output: &Output) -> Result<(), Failure> {
    let mut client: Client = TicketServiceClient::new(connect()?)
        .max_decoding_message_size(hotline_kit::grpc::MAX_MESSAGE_BYTES);
    match command {
        TicketsCommand::Create {
            subject,
            body,
            contact,
            priority,
            channel,
            idempotency_key,
        } => {
            let response = client
                .create_ticket(pb::CreateTicketRequest {
                    subject,
                    body,
                    contact: contact.unwrap_or_default(),
                    priority: priority.map_or(0, |p| convert::priority(p) as i32),
                    channel: channel.map_or(0, |c| convert::channel(c) as i32),
                    idempotency_key: idempotency_key.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let ticket = response.ticket.unwrap_or_default();
            let verb = if response.created {
                "opened"
            } else {
                "already open"
            };
            output.print(ticket_json(&ticket), || {
                format!("{} {verb}: {}", ticket.number, line(&ticket.subject))
            });
        }
        TicketsCommand::List {
            awaiting,
            status,
            assignee,
            customer,
            text,
            limit,
        } => {
            // Follow the pages up to --limit: the oldest waiting tickets,
            // the ones about to breach, are on the last page.
            let request = pb::ListTicketsRequest {
                status: status
                    .into_iter()
                    .map(|s| convert::status(s) as i32)
                    .collect(),
                awaiting_response: awaiting,
                assignee: assignee.unwrap_or_default(),
                customer: customer.unwrap_or_default(),
                text: text.unwrap_or_default(),
                ..Default::default()
            };
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let mut found: Vec<pb::Ticket> = Vec::new();
            let mut page_token = String::new();
            let more = loop {
                let wanted = u32::try_from(limit - found.len())
                    .unwrap_or(u32::MAX)
                    .min(500);
                let page = client
                    .list_tickets(pb::ListTicketsRequest {
                        page_size: wanted,
                        page_token: page_token.clone(),
                        ..request.clone()
                    })
                    .await?
                    .into_inner();
                found.extend(page.tickets);
                if page.next_page_token.is_empty() {
                    break false;
                }
                if found.len() >= limit {
                    break true;
                }
                page_token = page.next_page_token;
            };
            if more && !output.json {
                eprintln!("(more tickets match: raise --limit to see them)");
            }
            let response = pb::ListTicketsResponse {
                tickets: found,
                next_page_token: String::new(),
            };
            let tickets: Vec<Value> = response.tickets.iter().map(ticket_json).collect();
            output.print(json!(tickets), || {
                let mut lines = vec![format!(
                    "{:<10} {:<16} {:<8} {:<8} {:<20} {}",
                    "NUMBER", "STATUS", "PRIORITY", "CHANNEL", "AWAITING SINCE", "SUBJECT"
                )];
                for t in &response.tickets {
                    lines.push(format!(
                        "{:<10} {:<16} {:<8} {:<8} {:<20} {}",
                        t.number,
                        status_name(t.status),
                        priority_name(t.priority),
                        channel_name(t.channel),
                        time(t.awaiting_since.as_ref())
                            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                        line(&t.subject)
                    ));
                }
                lines.join("\n")
            });
        }
        TicketsCommand::Show { ticket } => {
            let response = client
                .get_ticket(pb::GetTicketRequest { ticket })
                .await?
                .into_inner();
            let ticket = response.ticket.unwrap_or_default();
            let mut value = ticket_json(&ticket);
            value["articles"] = json!(
                response
                    .articles
                    .iter()
                    .map(article_json)
                    .collect::<Vec<_>>()
            );
            output.print(value, || {
                let mut lines = vec![
                    format!("{}  {}", ticket.number, line(&ticket.subject)),
                    format!(
                        "status {}, priority {}, channel {}, assignee {}",
                        status_name(ticket.status),
                        priority_name(ticket.priority),
                        channel_name(ticket.channel),
                        if ticket.assignee.is_empty() {
                            "-".into()
                        } else {
                            line(&ticket.assignee)
                        }
                    ),
                ];
                if !ticket.contact.is_empty() {
                    lines.push(format!("contact {}", line(&ticket.contact)));
                }
                lines.extend(entitlement_lines(ticket.entitlement.as_ref()));
                if let Some(since) = time(ticket.awaiting_since.as_ref()) {
                    lines.push(format!("awaiting a response since {since}"));
                }
                for article in &response.articles {
                    let at = time(article.created_at.as_ref())
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default();
                    lines.push(format!(
                        "\n[{at}] {} by {}",
                        kind_name(article),
                        line(&article.author)
                    ));
                    lines.push(shown(&article.body, Layout::Block).into_owned());
                    for file in &article.attachments {
                        lines.push(format!(
                            "  attached: {} ({}, {} bytes) id {}",
                            line(&file.name),
                            line(&file.content_type),
                            file.size,
                            file.id
                        ));
                    }
                }
                lines.join("\n")
            });
        }
        TicketsCommand::Respond {
            ticket,
            message,
            pending,
        } => {
            add(
                &mut client,
                output,
                ticket,
                pb::ArticleKind::AgentReply,
                message,
                pending,
            )
            .await?;
        }
        TicketsCommand::Note { ticket, message } => {
            add(
                &mut client,
                output,
                ticket,
                pb::ArticleKind::InternalNote,
                message,
                false,
            )
            .await?;
        }
        TicketsCommand::Assign { ticket, to } => {
            let response = client
                .assign_ticket(pb::AssignTicketRequest {
                    ticket,
                    assignee: to,
                    expected_assignee: None,
                })
                .await?
                .into_inner();
            let to = response
                .ticket
                .as_ref()
                .map(|t| line(&t.assignee).into_owned())
                .unwrap_or_default();
            changed(output, response, &format!("assigned to {to}"));
        }
        TicketsCommand::Unassign { ticket } => {
            // The RPC's empty assignee is its unassign.
            let response = client
                .assign_ticket(pb::AssignTicketRequest {
                    ticket,
                    assignee: String::new(),
                    expected_assignee: None,
                })
                .await?;
            changed(output, response.into_inner(), "unassigned");
        }
        TicketsCommand::Priority { ticket, priority } => {
            let response = client
                .set_priority(pb::SetPriorityRequest {
                    ticket,
                    priority: convert::priority(priority) as i32,
                })
                .await?;
            changed(
                output,
                response.into_inner(),
                &format!("is now {} priority", priority.as_str()),
            );
        }
        TicketsCommand::Resolve { ticket } => {
            let response = client.resolve_ticket(pb::TicketRef { ticket }).await?;
            changed(output, response.into_inner(), "resolved");
        }
        TicketsCommand::Close { ticket } => {
            let response = client.close_ticket(pb::TicketRef { ticket }).await?;
            changed(output, response.into_inner(), "closed");
        }
        TicketsCommand::Reopen { ticket } => {
            let response = client.reopen_ticket(pb::TicketRef { ticket }).await?;
            changed(output, response.into_inner(), "reopened");
        }
        TicketsCommand::Attachment { id, output: path } => {
            let to_stdout = path.as_deref() == Some(std::path::Path::new("-"));
            if to_stdout && output.json {
                return Err(Failure::new(
                    tonic::Code::InvalidArgument,
                    "--output - puts the file on standard output, where --json puts JSON: use one",
                ));
            }
            let response = client
                .get_attachment(pb::GetAttachmentRequest { id })
                .await?
                .into_inner();
            if to_stdout {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&response.content)
                    .and_then(|()| stdout.flush())
                    .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))?;
                return Ok(());
            }
            let file = response.attachment.unwrap_or_default();
            // The name is the sender's: only its last part, never a path.
            let path = path.unwrap_or_else(|| {
                std::path::Path::new(&file.name)
                    .file_name()
                    .map_or_else(|| "attachment".into(), Into::into)
            });
            std::fs::write(&path, &response.content)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            output.print(
                json!({"attachment": attachment_json(&file), "saved_to": path}),
                || {
                    format!(
                        "saved {} ({} bytes) to {}",
                        line(&file.name),
                        file.size,
                        line(&path.display().to_string())
                    )
                },
            );
        }
    }
    Ok(())
}

async fn add(
    client: &mut Client,
    output: &Output,
    ticket: String,
    kind: pb::ArticleKind,
    body: String,
    pending_customer: bool,
) -> Result<(), Failure> {
    let response = client
        .add_article(pb::AddArticleRequest {
            ticket,
            kind: kind as i32,
            body,
            pending_customer,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ticket = response.ticket.unwrap_or_default();
    let mut value = ticket_json(&ticket);
    if let Some(article) = &response.article {
        value["article"] = article_json(article);
    }
    let what = if kind == pb::ArticleKind::AgentReply {
        "reply"
    } else {
        "note"
    };
    output.print(value, || format!("{what} added to {}", ticket.number));
    Ok(())
}

fn changed(output: &Output, response: pb::TicketResponse, verb: &str) {
    let ticket = response.ticket.unwrap_or_default();
    output.print(ticket_json(&ticket), || format!("{} {verb}", ticket.number));
}

pub(super) fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(from_timestamp)
}

fn status_name(value: i32) -> &'static str {
    match convert::status_from(value) {
        Ok(Some(status)) => status.as_str(),
        _ => "unknown",
    }
}

pub(super) fn priority_name(value: i32) -> &'static str {
    match convert::priority_from(value) {
        Ok(Some(priority)) => priority.as_str(),
        _ => "unknown",
    }
}

pub(super) fn channel_name(value: i32) -> &'static str {
    match convert::channel_from(value) {
        Ok(Some(channel)) => channel.as_str(),
        _ => "unknown",
    }
}

fn kind_name(article: &pb::Article) -> &'static str {
    match pb::ArticleKind::try_from(article.kind) {
        Ok(pb::ArticleKind::CustomerMessage) => "customer_message",
        Ok(pb::ArticleKind::AgentReply) => "agent_reply",
        Ok(pb::ArticleKind::InternalNote) => "internal_note",
        Ok(pb::ArticleKind::Call) => "call",
        Ok(pb::ArticleKind::OnsiteArrival) => "onsite_arrival",
        Ok(pb::ArticleKind::ThirdPartyMessage) => "third_party_message",
        _ => "unknown",
    }
}

pub(super) fn optional(value: &str) -> Value {
    if value.is_empty() {
        Value::Null
    } else {
        json!(value)
    }
}

/// Whom the ticket is for and what covers it, for `tickets show`.
fn entitlement_lines(entitlement: Option<&pb::Entitlement>) -> Vec<String> {
    let Some(e) = entitlement else {
        return vec!["customer not resolved yet".into()];
    };
    let or_dash = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            line(value).into_owned()
        }
    };
    let until = if e.covered_until.is_empty() {
        String::new()
    } else {
        format!(" until {}", line(&e.covered_until))
    };
    vec![
        format!(
            "customer {}, project {}, asset {}",
            or_dash(&e.customer),
            or_dash(&e.project),
            or_dash(&e.asset)
        ),
        format!(
            "coverage {}{until}: {}",
            coverage_name(e.coverage),
            line(&e.reason)
        ),
    ]
}

fn coverage_name(value: i32) -> &'static str {
    match convert::coverage_from(value) {
        Ok(Some(coverage)) => coverage.as_str(),
        _ => "unknown",
    }
}

/// An id and a name as `{"id", "name"}`, or null when unknown.
fn named(id: &str, name: &str) -> Value {
    if id.is_empty() {
        Value::Null
    } else {
        json!({"id": id, "name": name})
    }
}

pub fn ticket_json(ticket: &pb::Ticket) -> Value {
    let entitlement = ticket.entitlement.as_ref();
    let field =
        |f: fn(&pb::Entitlement) -> &str| entitlement.map_or(Value::Null, |e| optional(f(e)));
    json!({
        "id": ticket.id,
        "number": ticket.number,
        "status": status_name(ticket.status),
        "priority": priority_name(ticket.priority),
        "channel": channel_name(ticket.channel),
        "subject": ticket.subject,
        "contact": optional(&ticket.contact),
        "assignee": optional(&ticket.assignee),
        "awaiting_response": ticket.awaiting_response,
        "awaiting_since": time(ticket.awaiting_since.as_ref()),
        "created_at": time(ticket.created_at.as_ref()),
        "updated_at": time(ticket.updated_at.as_ref()),
        "version": ticket.version,
        // Null until `contracts` has resolved the ticket's entitlement.
        "customer": entitlement.map_or(Value::Null, |e| named(&e.customer_id, &e.customer)),
        "project": entitlement.map_or(Value::Null, |e| named(&e.project_id, &e.project)),
        "asset": field(|e| &e.asset),
        "coverage": entitlement.map_or(Value::Null, |e| json!(coverage_name(e.coverage))),
        "covered_until": field(|e| &e.covered_until),
        "coverage_reason": field(|e| &e.reason),
    })
}

fn article_json(article: &pb::Article) -> Value {
    let call = article.call.as_ref().map(|call| {
        json!({
            "direction": match pb::CallDirection::try_from(call.direction) {
                Ok(pb::CallDirection::Inbound) => "in",
                Ok(pb::CallDirection::Outbound) => "out",
                _ => "unknown",
            },
            "outcome": match pb::CallOutcome::try_from(call.outcome) {
                Ok(pb::CallOutcome::Answered) => "answered",
                Ok(pb::CallOutcome::Missed) => "missed",
                Ok(pb::CallOutcome::Voicemail) => "voicemail",
                _ => "unknown",
            },
            "call_id": optional(&call.call_id),
        })
    });
    json!({
        "id": article.id,
        "kind": kind_name(article),
        "body": article.body,
        "author": article.author,
        "call": call,
        "created_at": time(article.created_at.as_ref()),
        "html": optional(&article.html),
        "attachments": article.attachments.iter().map(attachment_json).collect::<Vec<_>>(),
    })
}

fn attachment_json(file: &pb::Attachment) -> Value {
    json!({
        "id": file.id,
        "name": file.name,
        "content_type": file.content_type,
        "size": file.size,
    })
}
