//! What a page says: PagerDuty Events API v2 bodies and the generic
//! webhook's JSON.

use hotline_proto::tickets::v1::{Channel, Priority};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::store::Breach;

/// Identifies one breach of one ticket: every level of the breach lands on
/// the same PagerDuty incident, a later breach opens a new one.
pub fn dedup_key(ticket_id: Uuid, breach: i32) -> String {
    format!("hotline:{ticket_id}:{breach}")
}

/// The breach a dedup key names, if it is one of ours.
pub fn parse_dedup_key(key: &str) -> Option<(Uuid, i32)> {
    let rest = key.strip_prefix("hotline:")?;
    let (ticket, breach) = rest.rsplit_once(':')?;
    Some((Uuid::parse_str(ticket).ok()?, breach.parse().ok()?))
}

fn channel_name(channel: i32) -> String {
    Channel::try_from(channel)
        .ok()
        .filter(|c| *c != Channel::Unspecified)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("CHANNEL_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn priority_name(priority: i32) -> String {
    Priority::try_from(priority)
        .ok()
        .filter(|p| *p != Priority::Unspecified)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("PRIORITY_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn details(breach: &Breach, level: i32) -> Value {
    json!({
        "ticket": breach.number,
        "ticket_id": breach.ticket_id.to_string(),
        "subject": breach.subject,
        "customer": breach.contact,
        "channel": channel_name(breach.channel),
        "priority": priority_name(breach.priority),
        "awaiting_since": breach.awaiting_since.map(|t| t.to_rfc3339()),
        "due": breach.due.map(|t| t.to_rfc3339()),
        "breach": breach.breach,
        "level": level,
    })
}

/// A PagerDuty `trigger`, without its routing key (a secret, added when
/// sent and never stored).
pub fn pagerduty_trigger(breach: &Breach, level: i32, source: &str) -> Value {
    let waiting = breach
        .awaiting_since
        .map(|since| {
            let minutes = (chrono::Utc::now() - since).num_minutes().max(0);
            format!(" for {}h{:02}m", minutes / 60, minutes % 60)
        })
        .unwrap_or_default();
    json!({
        "event_action": "trigger",
        "dedup_key": dedup_key(breach.ticket_id, breach.breach),
        "payload": {
            "summary": format!(
                "{} awaiting a response{waiting}: {} (level {level})",
                breach.number, breach.subject
            ),
            "source": source,
            "severity": if level >= 2 { "critical" } else { "error" },
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "component": channel_name(breach.channel),
            "class": "response-sla-breach",
            "custom_details": details(breach, level),
        },
    })
}

/// A PagerDuty `acknowledge` or `resolve` of the breach's incident.
pub fn pagerduty_followup(action: &str, dedup_key: &str) -> Value {
    json!({ "event_action": action, "dedup_key": dedup_key })
}

/// The generic webhook's body: `event` is `escalated`, `acknowledged` or
/// `cleared`.
pub fn webhook(event: &str, breach: &Breach, level: i32, step: i32) -> Value {
    json!({
        "event": event,
        "dedup_key": dedup_key(breach.ticket_id, breach.breach),
        "step": step,
        "ticket": details(breach, level),
    })
}

/// An email page: `{"subject": ..., "text": ...}`; `event` as for
/// [`webhook`].
pub fn email(event: &str, breach: &Breach, level: i32) -> Value {
    let what = match event {
        "escalated" => format!("awaiting a response past due (level {level})"),
        "acknowledged" => "acknowledged".to_owned(),
        _ => "answered; the page is resolved".to_owned(),
    };
    let since = breach
        .awaiting_since
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    json!({
        "subject": format!("[{}] {what}: {}", breach.number, breach.subject),
        "text": format!(
            "Ticket {} is {what}.\n\nSubject: {}\nCustomer: {}\nChannel: {}\nAwaiting since: {since}\nBreach: {}\n\nAcknowledge: hotline pages ack {}\n",
            breach.number,
            breach.subject,
            breach.contact,
            channel_name(breach.channel),
            breach.breach,
            breach.number,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dedup_key_names_the_ticket_and_the_breach() {
        let id = Uuid::now_v7();
        assert_eq!(parse_dedup_key(&dedup_key(id, 2)), Some((id, 2)));
        assert_ne!(dedup_key(id, 1), dedup_key(id, 2));
        assert_eq!(parse_dedup_key("somebody-else:123"), None);
    }
}
