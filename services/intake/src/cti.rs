//! Phone: PBX call events in the Generic CTI format (ARCHITECTURE §8).
//!
//! `POST /api/v1/cti/{token}`, form-encoded or JSON: `event` (`newCall`,
//! `answer`, `hangup`), `from`, `to`, `direction` (`in`, `out`), `callId`,
//! `user` (a string or a list; `user[]` in forms), `queue`, `cause`,
//! `answeringNumber`. A call is a small state machine per `callId`; its end
//! decides what the desk records:
//!
//! | direction | answered | cause | outcome |
//! |---|---|---|---|
//! | in | yes | any | `answered`: a phone ticket already responded, or the response on the caller's open ticket |
//! | in | no | not `forwarded` | `missed`: a ticket awaiting a response, or a contact on the caller's open ticket |
//! | in | no | `forwarded` | none: the call went on elsewhere |
//! | out | yes | any | `connected`: the response on the dialled number's open ticket |
//! | out | no | any | none: not a response |

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The causes a `hangup` may carry.
pub const CAUSES: &[&str] = &[
    "normalClearing",
    "busy",
    "cancel",
    "noAnswer",
    "congestion",
    "notFound",
    "forwarded",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NewCall,
    Answer,
    Hangup,
}

impl Kind {
    pub const ALL: &[Kind] = &[Kind::NewCall, Kind::Answer, Kind::Hangup];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewCall => "newCall",
            Kind::Answer => "answer",
            Kind::Hangup => "hangup",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One PBX event, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub call_id: String,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub users: Vec<String>,
    pub queue: String,
    pub cause: String,
    pub answering_number: String,
}

/// Fields as they came: form pairs or a JSON object, lists kept.
pub type Fields = BTreeMap<String, Vec<String>>;

/// The fields of a form body (`user[]` repeated is a list).
pub fn form_fields(body: &[u8]) -> Fields {
    let mut fields = Fields::new();
    for (key, value) in form_urlencoded::parse(body) {
        let key = key.strip_suffix("[]").unwrap_or(&key).to_owned();
        fields.entry(key).or_default().push(value.into_owned());
    }
    fields
}

/// The fields of a JSON object body; `None` when it is not one.
pub fn json_fields(body: &[u8]) -> Option<Fields> {
    let Value::Object(object) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let text = |value: &Value| match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Some(
        object
            .iter()
            .map(|(key, value)| {
                let values = match value {
                    Value::Array(items) => items.iter().filter_map(text).collect(),
                    other => text(other).into_iter().collect(),
                };
                (key.clone(), values)
            })
            .collect(),
    )
}

/// Reads an event from its fields; the error says what is wrong.
pub fn parse(fields: &Fields) -> Result<Event, String> {
    let one = |name: &str| {
        fields
            .get(name)
            .and_then(|values| values.first())
            .map(|value| value.trim().to_owned())
            .unwrap_or_default()
    };
    let kind = match one("event").as_str() {
        "newCall" => Kind::NewCall,
        "answer" => Kind::Answer,
        "hangup" => Kind::Hangup,
        "" => return Err("event is required (newCall, answer or hangup)".into()),
        other => {
            return Err(format!(
                "unknown event {other:?} (newCall, answer or hangup)"
            ));
        }
    };
    let call_id = one("callId");
    if call_id.is_empty() || call_id.len() > 200 {
        return Err("callId is required (at most 200 characters)".into());
    }
    let direction = match one("direction").as_str() {
        "in" => Direction::In,
        "out" => Direction::Out,
        other => return Err(format!("direction must be in or out, not {other:?}")),
    };
    let (from, to) = (one("from"), one("to"));
    if kind == Kind::NewCall && (from.is_empty() || to.is_empty()) {
        return Err("newCall needs from and to".into());
    }
    let cause = one("cause");
    if kind == Kind::Hangup && !cause.is_empty() && !CAUSES.contains(&cause.as_str()) {
        return Err(format!(
            "unknown cause {cause:?} (one of {})",
            CAUSES.join(", ")
        ));
    }
    let users = fields
        .get("user")
        .map(|users| {
            users
                .iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let answering_number = one("answeringNumber");
    let queue = one("queue");
    let too_long = [&from, &to, &cause, &answering_number, &queue]
        .into_iter()
        .chain(&users)
        .any(|value| value.chars().count() > 200);
    if too_long {
        return Err("a field is longer than 200 characters".into());
    }
    if fields.values().flatten().any(|value| value.contains('\0')) {
        return Err("a field contains a NUL character".into());
    }
    Ok(Event {
        kind,
        call_id,
        direction,
        from,
        to,
        users,
        queue,
        cause,
        answering_number,
    })
}

/// What the desk has seen of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub call_id: String,
    pub direction: Direction,
    /// The customer's number as sent: the caller of an inbound call, the
    /// number dialled on an outbound one.
    pub customer: String,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    /// Who took it (inbound) or made it (outbound), if known.
    pub agent: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    pub cause: Option<String>,
    /// The caller is on the block list: the call was rejected and records
    /// nothing.
    pub blocked: bool,
}

impl Call {
    /// The call as its first event (whichever arrives first) describes it.
    pub fn begin(event: &Event, at: DateTime<Utc>) -> Self {
        let customer = match event.direction {
            Direction::In => &event.from,
            Direction::Out => &event.to,
        };
        Self {
            call_id: event.call_id.clone(),
            direction: event.direction,
            customer: customer.clone(),
            started_at: at,
            answered_at: None,
            agent: None,
            ended_at: None,
            cause: None,
            blocked: false,
        }
    }

    /// Applies `event`; returns the outcome when it ended the call with one.
    pub fn apply(&mut self, event: &Event, at: DateTime<Utc>) -> Option<&'static str> {
        if self.customer.is_empty() {
            let customer = match self.direction {
                Direction::In => &event.from,
                Direction::Out => &event.to,
            };
            self.customer.clone_from(customer);
        }
        let agent = || {
            Some(event.answering_number.clone())
                .filter(|n| !n.is_empty())
                .or_else(|| event.users.first().cloned())
        };
        match event.kind {
            Kind::NewCall => {
                if self.direction == Direction::Out && self.agent.is_none() {
                    self.agent = event
                        .users
                        .first()
                        .cloned()
                        .or_else(|| Some(event.from.clone()).filter(|f| !f.is_empty()));
                }
                None
            }
            Kind::Answer => {
                // An answer heard after the end changes nothing decided.
                if self.answered_at.is_none() && self.ended_at.is_none() {
                    self.answered_at = Some(at);
                    if self.direction == Direction::In {
                        self.agent = agent().or(self.agent.take());
                    }
                }
                None
            }
            Kind::Hangup => {
                if self.ended_at.is_some() {
                    return None;
                }
                self.ended_at = Some(at);
                let cause = Some(event.cause.clone()).filter(|c| !c.is_empty());
                self.cause.clone_from(&cause);
                // A call cleared normally was connected, even if its
                // `answer` has not arrived (yet).
                let answered =
                    self.answered_at.is_some() || cause.as_deref() == Some("normalClearing");
                match (self.direction, answered, cause.as_deref()) {
                    _ if self.blocked => None,
                    (Direction::In, true, _) => Some("answered"),
                    (Direction::In, false, Some("forwarded")) => None,
                    (Direction::In, false, _) => Some("missed"),
                    (Direction::Out, true, _) => Some("connected"),
                    (Direction::Out, false, _) => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, direction: &str, extra: &[(&str, &str)]) -> Event {
        let mut body =
            format!("event={kind}&callId=c1&direction={direction}&from=%2B4930111&to=200");
        for (key, value) in extra {
            body.push_str(&format!("&{key}={value}"));
        }
        parse(&form_fields(body.as_bytes())).unwrap_or_else(|e| panic!("{e}"))
    }

    fn outcome(events: &[Event]) -> Option<&'static str> {
        let at = Utc::now();
        let mut call = Call::begin(&events[0], at);
        events.iter().filter_map(|e| call.apply(e, at)).last()
    }

    #[test]
    fn every_ending_of_a_call_has_its_outcome() {
        let new = |d| event("newCall", d, &[]);
        let answer = |d| event("answer", d, &[("user", "ana")]);
        let hangup = |d, cause| event("hangup", d, &[("cause", cause)]);
        assert_eq!(
            outcome(&[new("in"), answer("in"), hangup("in", "normalClearing")]),
            Some("answered")
        );
        assert_eq!(
            outcome(&[new("in"), hangup("in", "cancel")]),
            Some("missed")
        );
        assert_eq!(
            outcome(&[new("in"), hangup("in", "noAnswer")]),
            Some("missed")
        );
        assert_eq!(outcome(&[new("in"), hangup("in", "forwarded")]), None);
        assert_eq!(
            outcome(&[new("out"), answer("out"), hangup("out", "normalClearing")]),
            Some("connected")
        );
        assert_eq!(outcome(&[new("out"), hangup("out", "busy")]), None);
        // The hangup overtook the answer: a normal clearing was connected.
        assert_eq!(
            outcome(&[new("in"), hangup("in", "normalClearing"), answer("in")]),
            Some("answered")
        );
        // A hangup heard twice ends the call once.
        assert_eq!(
            outcome(&[new("in"), hangup("in", "cancel"), hangup("in", "cancel")]),
            Some("missed")
        );
    }

    #[test]
    fn the_agent_who_answered_is_kept() {
        let at = Utc::now();
        let first = event("newCall", "in", &[]);
        let mut call = Call::begin(&first, at);
        call.apply(&first, at);
        call.apply(&event("answer", "in", &[("answeringNumber", "204")]), at);
        assert_eq!(call.agent.as_deref(), Some("204"));
    }

    #[test]
    fn forms_and_json_carry_the_same_event_and_users_may_be_lists() {
        let form = form_fields(
            b"event=answer&callId=c9&direction=in&from=%2B4930111&to=200&user%5B%5D=ana&user%5B%5D=bo",
        );
        let json = json_fields(
            br#"{"event":"answer","callId":"c9","direction":"in","from":"+4930111","to":200,"user":["ana","bo"]}"#,
        )
        .unwrap_or_default();
        let (form, json) = (parse(&form), parse(&json));
        assert_eq!(form, json);
        assert_eq!(form.map(|e| e.users), Ok(vec!["ana".into(), "bo".into()]));
    }

    #[test]
    fn a_malformed_event_says_what_is_wrong() {
        let refuse = |body: &str| parse(&form_fields(body.as_bytes())).unwrap_err();
        assert!(refuse("callId=1&direction=in").contains("event is required"));
        assert!(refuse("event=ring&callId=1&direction=in").contains("unknown event"));
        assert!(refuse("event=answer&direction=in").contains("callId"));
        assert!(refuse("event=answer&callId=1&direction=up").contains("direction"));
        assert!(refuse("event=newCall&callId=1&direction=in&from=1").contains("from and to"));
        assert!(refuse("event=hangup&callId=1&direction=in&cause=boom").contains("unknown cause"));
        assert!(json_fields(b"[1,2]").is_none());
        assert!(refuse("event=answer&callId=1&direction=in&user=a%00b").contains("NUL"));
        let long = format!(
            "event=answer&callId=1&direction=in&answeringNumber={}",
            "9".repeat(300)
        );
        assert!(refuse(&long).contains("longer than 200"));
    }
}
