//! Conversions between the domain types and the wire types of
//! `hotline.tickets.v1`, used by the gRPC API and the events alike.

use hotline_kit::time::timestamp;
use hotline_proto::tickets::v1 as pb;

use crate::{
    domain::{
        self, ArticleKind, CallDirection, CallOutcome, Channel, Coverage, Entitlement, Priority,
        Refusal, Status,
    },
    store::{Article, Attachment, Ticket},
};

pub fn ticket(ticket: &Ticket) -> pb::Ticket {
    pb::Ticket {
        id: ticket.id.to_string(),
        number: domain::format_number(ticket.number),
        status: status(ticket.status) as i32,
        priority: priority(ticket.priority) as i32,
        channel: channel(ticket.channel) as i32,
        subject: ticket.subject.clone(),
        contact: ticket.contact.clone().unwrap_or_default(),
        assignee: ticket.assignee.clone().unwrap_or_default(),
        awaiting_response: ticket.awaiting_since.is_some(),
        awaiting_since: ticket.awaiting_since.map(timestamp),
        created_at: Some(timestamp(ticket.created_at)),
        updated_at: Some(timestamp(ticket.updated_at)),
        version: ticket.version,
        entitlement: ticket.entitlement.as_ref().map(entitlement),
    }
}

pub fn entitlement(entitlement: &Entitlement) -> pb::Entitlement {
    let (customer_id, customer) = named(entitlement.customer.as_ref());
    let (project_id, project) = named(entitlement.project.as_ref());
    pb::Entitlement {
        customer_id,
        customer,
        project_id,
        project,
        asset: entitlement.asset.clone().unwrap_or_default(),
        coverage: coverage(entitlement.coverage) as i32,
        covered_until: entitlement
            .covered_until
            .map(|d| d.to_string())
            .unwrap_or_default(),
        reason: entitlement.reason.clone(),
    }
}

/// An id and a name as two strings, empty when unknown.
fn named(value: Option<&(uuid::Uuid, String)>) -> (String, String) {
    value
        .map(|(id, name)| (id.to_string(), name.clone()))
        .unwrap_or_default()
}

pub fn coverage(coverage: Coverage) -> pb::Coverage {
    match coverage {
        Coverage::None => pb::Coverage::None,
        Coverage::Warranty => pb::Coverage::Warranty,
        Coverage::Contract => pb::Coverage::Contract,
    }
}

/// `None` when unspecified.
pub fn coverage_from(value: i32) -> Result<Option<Coverage>, Refusal> {
    Ok(match known(value, "coverage")? {
        pb::Coverage::Unspecified => None,
        pb::Coverage::None => Some(Coverage::None),
        pb::Coverage::Warranty => Some(Coverage::Warranty),
        pb::Coverage::Contract => Some(Coverage::Contract),
    })
}

pub fn article(article: &Article) -> pb::Article {
    let (kind, call) = match article.kind {
        ArticleKind::CustomerMessage => (pb::ArticleKind::CustomerMessage, None),
        ArticleKind::AgentReply => (pb::ArticleKind::AgentReply, None),
        ArticleKind::InternalNote => (pb::ArticleKind::InternalNote, None),
        ArticleKind::OnsiteArrival => (pb::ArticleKind::OnsiteArrival, None),
        ArticleKind::ThirdPartyMessage => (pb::ArticleKind::ThirdPartyMessage, None),
        ArticleKind::Call { direction, outcome } => (
            pb::ArticleKind::Call,
            Some(pb::Call {
                direction: match direction {
                    CallDirection::Inbound => pb::CallDirection::Inbound,
                    CallDirection::Outbound => pb::CallDirection::Outbound,
                } as i32,
                outcome: match outcome {
                    CallOutcome::Answered => pb::CallOutcome::Answered,
                    CallOutcome::Missed => pb::CallOutcome::Missed,
                    CallOutcome::Voicemail => pb::CallOutcome::Voicemail,
                } as i32,
                call_id: article.call_id.clone().unwrap_or_default(),
            }),
        ),
    };
    pb::Article {
        id: article.id.to_string(),
        kind: kind as i32,
        body: article.body.clone(),
        author: article.author.clone(),
        call,
        created_at: Some(timestamp(article.created_at)),
        html: article.html.clone().unwrap_or_default(),
        attachments: article.attachments.iter().map(attachment).collect(),
    }
}

pub fn attachment(attachment: &Attachment) -> pb::Attachment {
    pb::Attachment {
        id: attachment.id.to_string(),
        name: attachment.name.clone(),
        content_type: attachment.content_type.clone(),
        size: attachment.size,
    }
}

pub fn status(status: Status) -> pb::Status {
    match status {
        Status::New => pb::Status::New,
        Status::Open => pb::Status::Open,
        Status::PendingCustomer => pb::Status::PendingCustomer,
        Status::Resolved => pb::Status::Resolved,
        Status::Closed => pb::Status::Closed,
    }
}

pub fn priority(priority: Priority) -> pb::Priority {
    match priority {
        Priority::Low => pb::Priority::Low,
        Priority::Normal => pb::Priority::Normal,
        Priority::High => pb::Priority::High,
        Priority::Urgent => pb::Priority::Urgent,
    }
}

pub fn channel(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Email => pb::Channel::Email,
        Channel::Phone => pb::Channel::Phone,
        Channel::Web => pb::Channel::Web,
        Channel::Api => pb::Channel::Api,
        Channel::Onsite => pb::Channel::Onsite,
    }
}

/// A wire enum value; unknown numbers are refused.
fn known<T: TryFrom<i32>>(value: i32, what: &str) -> Result<T, Refusal> {
    T::try_from(value).map_err(|_| Refusal::Invalid(format!("unknown {what} {value}")))
}

/// `None` when unspecified.
pub fn status_from(value: i32) -> Result<Option<Status>, Refusal> {
    Ok(match known(value, "status")? {
        pb::Status::Unspecified => None,
        pb::Status::New => Some(Status::New),
        pb::Status::Open => Some(Status::Open),
        pb::Status::PendingCustomer => Some(Status::PendingCustomer),
        pb::Status::Resolved => Some(Status::Resolved),
        pb::Status::Closed => Some(Status::Closed),
    })
}

pub fn priority_from(value: i32) -> Result<Option<Priority>, Refusal> {
    Ok(match known(value, "priority")? {
        pb::Priority::Unspecified => None,
        pb::Priority::Low => Some(Priority::Low),
        pb::Priority::Normal => Some(Priority::Normal),
        pb::Priority::High => Some(Priority::High),
        pb::Priority::Urgent => Some(Priority::Urgent),
    })
}

pub fn channel_from(value: i32) -> Result<Option<Channel>, Refusal> {
    Ok(match known(value, "channel")? {
        pb::Channel::Unspecified => None,
        pb::Channel::Email => Some(Channel::Email),
        pb::Channel::Phone => Some(Channel::Phone),
        pb::Channel::Web => Some(Channel::Web),
        pb::Channel::Api => Some(Channel::Api),
        pb::Channel::Onsite => Some(Channel::Onsite),
    })
}

/// The article kind a request names; a call needs its direction and outcome.
pub fn article_kind_from(
    kind: i32,
    call: Option<&pb::Call>,
) -> Result<Option<ArticleKind>, Refusal> {
    Ok(match known(kind, "article kind")? {
        pb::ArticleKind::Unspecified => None,
        pb::ArticleKind::CustomerMessage => Some(ArticleKind::CustomerMessage),
        pb::ArticleKind::AgentReply => Some(ArticleKind::AgentReply),
        pb::ArticleKind::InternalNote => Some(ArticleKind::InternalNote),
        pb::ArticleKind::OnsiteArrival => Some(ArticleKind::OnsiteArrival),
        pb::ArticleKind::ThirdPartyMessage => Some(ArticleKind::ThirdPartyMessage),
        pb::ArticleKind::Call => {
            let call = call.ok_or_else(|| {
                Refusal::Invalid(
                    "a call article needs `call` with its direction and outcome".into(),
                )
            })?;
            let direction = match known(call.direction, "call direction")? {
                pb::CallDirection::Inbound => CallDirection::Inbound,
                pb::CallDirection::Outbound => CallDirection::Outbound,
                pb::CallDirection::Unspecified => {
                    return Err(Refusal::Invalid("a call needs its direction".into()));
                }
            };
            let outcome = match known(call.outcome, "call outcome")? {
                pb::CallOutcome::Answered => CallOutcome::Answered,
                pb::CallOutcome::Missed => CallOutcome::Missed,
                pb::CallOutcome::Voicemail => CallOutcome::Voicemail,
                pb::CallOutcome::Unspecified => {
                    return Err(Refusal::Invalid("a call needs its outcome".into()));
                }
            };
            Some(ArticleKind::Call { direction, outcome })
        }
    })
}
