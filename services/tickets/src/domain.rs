//! The rules of a ticket, as pure functions: its state machine and the
//! awaiting-response rule (ARCHITECTURE §7).
//!
//! A ticket **awaits a response** from the first customer contact the desk
//! has not answered — a message, a missed call, a voicemail — until the
//! desk's next response: a public reply, a connected call in either
//! direction, or a technician's arrival on site. Internal notes never count.
//! Further contacts while awaiting keep the earliest `awaiting_since`, so the
//! clock measures the customer's whole wait.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Reported, nobody at the desk has acted on it yet.
    New,
    /// Being worked.
    Open,
    /// The desk replied and waits for the customer.
    PendingCustomer,
    /// Solved; a customer message reopens it.
    Resolved,
    /// Final and read-only, until an agent reopens it.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Phone,
    Web,
    Api,
    Onsite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Answered,
    Missed,
    Voicemail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArticleKind {
    CustomerMessage,
    AgentReply,
    InternalNote,
    Call {
        direction: CallDirection,
        outcome: CallOutcome,
    },
    OnsiteArrival,
    /// A message from someone other than the ticket's contact: kept and
    /// shown flagged, but it speaks for nobody the desk answers to, so it
    /// neither reopens the ticket nor starts or moves its clock (anyone who
    /// knows a ticket's number could otherwise page the desk at night).
    ThirdPartyMessage,
}

/// What an article does to the response clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockEffect {
    /// A customer contact the desk has yet to answer.
    Contact,
    /// The desk answered.
    Response,
    /// Neither (internal notes, an outbound call that did not connect).
    Neutral,
}

impl ArticleKind {
    /// What a customer message added to a ticket whose contact is `contact`
    /// is: the contact's own (compared without case, as mail addresses
    /// are), or a third party's. A message naming no author is the
    /// contact's, as a ticket's first message is; a ticket without a
    /// contact has nobody to tell apart, so every message counts as the
    /// customer's.
    pub fn as_written_by(self, author: &str, contact: Option<&str>) -> ArticleKind {
        match (self, contact) {
            (ArticleKind::CustomerMessage, Some(contact))
                if !author.trim().is_empty()
                    && !author.trim().eq_ignore_ascii_case(contact.trim()) =>
            {
                ArticleKind::ThirdPartyMessage
            }
            (kind, _) => kind,
        }
    }

    pub fn clock_effect(self) -> ClockEffect {
        use CallDirection::*;
        use CallOutcome::*;
        match self {
            ArticleKind::CustomerMessage => ClockEffect::Contact,
            ArticleKind::AgentReply | ArticleKind::OnsiteArrival => ClockEffect::Response,
            ArticleKind::InternalNote | ArticleKind::ThirdPartyMessage => ClockEffect::Neutral,
            ArticleKind::Call {
                outcome: Answered, ..
            } => ClockEffect::Response,
            ArticleKind::Call {
                direction: Inbound,
                outcome: Missed | Voicemail,
            } => ClockEffect::Contact,
            ArticleKind::Call {
                direction: Outbound,
                outcome: Missed | Voicemail,
            } => ClockEffect::Neutral,
        }
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The ticket's state does not allow it (`FAILED_PRECONDITION`).
    #[error("{0}")]
    Transition(String),
    /// The request itself is wrong (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
}

/// The part of a ticket the rules look at and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketState {
    pub status: Status,
    pub awaiting_since: Option<DateTime<Utc>>,
    pub assignee: Option<String>,
}

/// What one command did, for the store to persist and announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub before: TicketState,
    pub after: TicketState,
}

impl Change {
    fn new(before: &TicketState, after: TicketState) -> Self {
        Self {
            before: before.clone(),
            after,
        }
    }

    /// A resolved or closed ticket is open again (by an agent, or by the
    /// customer writing back).
    pub fn reopened(&self) -> bool {
        matches!(self.before.status, Status::Resolved | Status::Closed)
            && self.after.status == Status::Open
    }

    pub fn status_changed(&self) -> bool {
        self.before.status != self.after.status
    }

    /// The ticket started awaiting a response with this change.
    pub fn started_awaiting(&self) -> bool {
        self.before.awaiting_since.is_none() && self.after.awaiting_since.is_some()
    }

    /// The ticket stopped awaiting because the desk responded.
    pub fn responded(&self) -> bool {
        self.before.awaiting_since.is_some()
            && self.after.awaiting_since.is_none()
            && self.after.status != Status::Resolved
    }
}

/// The state of a ticket opened with `first` at `now`: a contact awaits a
/// response; an answered call, a reply or an arrival opens it responded.
pub fn open(first: ArticleKind, now: DateTime<Utc>) -> TicketState {
    match first.clock_effect() {
        ClockEffect::Contact => TicketState {
            status: Status::New,
            awaiting_since: Some(now),
            assignee: None,
        },
        ClockEffect::Response | ClockEffect::Neutral => TicketState {
            status: Status::Open,
            awaiting_since: None,
            assignee: None,
        },
    }
}

fn refuse_closed(state: &TicketState, what: &str) -> Result<(), Refusal> {
    if state.status == Status::Closed {
        return Err(Refusal::Transition(format!(
            "the ticket is closed; reopen it before you {what}"
        )));
    }
    Ok(())
}

/// Adds an article of `kind`; `pending_customer` (agent replies only) puts
/// the ticket in wait for the customer.
pub fn add_article(
    state: &TicketState,
    kind: ArticleKind,
    pending_customer: bool,
    now: DateTime<Utc>,
) -> Result<Change, Refusal> {
    if pending_customer && kind != ArticleKind::AgentReply {
        return Err(Refusal::Invalid(
            "pending_customer applies to agent replies only".into(),
        ));
    }
    if state.status == Status::Closed {
        return Err(Refusal::Transition(match kind.clock_effect() {
            ClockEffect::Contact => "the ticket is closed; a new contact needs a new ticket".into(),
            _ => "the ticket is closed; reopen it before you add to it".into(),
        }));
    }
    let mut after = state.clone();
    match kind.clock_effect() {
        ClockEffect::Contact => {
            after.awaiting_since = state.awaiting_since.or(Some(now));
            if matches!(state.status, Status::Resolved | Status::PendingCustomer) {
                after.status = Status::Open;
            }
        }
        ClockEffect::Response => {
            after.awaiting_since = None;
            let customer_called = matches!(
                kind,
                ArticleKind::Call {
                    direction: CallDirection::Inbound,
                    ..
                }
            );
            match state.status {
                Status::New => after.status = Status::Open,
                // The customer's call is their next contact, answered.
                Status::PendingCustomer | Status::Resolved if customer_called => {
                    after.status = Status::Open;
                }
                _ => {}
            }
            if pending_customer {
                if after.status == Status::Resolved {
                    return Err(Refusal::Transition(
                        "the ticket is resolved; reopen it before you wait for the customer".into(),
                    ));
                }
                after.status = Status::PendingCustomer;
            }
        }
        ClockEffect::Neutral => {}
    }
    Ok(Change::new(state, after))
}

/// A reply or a note is something the desk wrote: without text it says
/// nothing, and a reply would still stop the clock as if answered. Other
/// articles may come without text (a call, an arrival, a mail that is only
/// a file).
pub fn check_body(kind: ArticleKind, body: &str) -> Result<(), Refusal> {
    let what = match kind {
        ArticleKind::AgentReply => "a reply",
        ArticleKind::InternalNote => "a note",
        _ => return Ok(()),
    };
    if body.trim().is_empty() {
        return Err(Refusal::Invalid(format!("{what} needs a message")));
    }
    Ok(())
}

/// Assigns the ticket to `assignee` (`None` unassigns). With `expected`,
/// only if its assignee is still that one (`Some(None)`: unassigned): a
/// router's decision never overrides an assignment made meanwhile.
pub fn assign(
    state: &TicketState,
    assignee: Option<String>,
    expected: Option<&Option<String>>,
) -> Result<Change, Refusal> {
    refuse_closed(state, "assign it")?;
    if let Some(expected) = expected
        && !same_assignee(expected.as_deref(), state.assignee.as_deref())
    {
        return Err(Refusal::Transition(match &state.assignee {
            Some(now) => format!("the ticket is now assigned to {now}"),
            None => "the ticket is now unassigned".into(),
        }));
    }
    let mut after = state.clone();
    if assignee.is_some() && state.status == Status::New {
        after.status = Status::Open;
    }
    after.assignee = assignee;
    Ok(Change::new(state, after))
}

/// Assignees are people's emails (or names): the same whatever the case.
fn same_assignee(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    }
}

pub fn set_priority(state: &TicketState) -> Result<Change, Refusal> {
    refuse_closed(state, "change its priority")?;
    Ok(Change::new(state, state.clone()))
}

/// Resolving ends any awaiting period: the matter is settled, so no clock
/// may keep running. It is not counted as a response.
pub fn resolve(state: &TicketState) -> Result<Change, Refusal> {
    match state.status {
        Status::Resolved => Err(Refusal::Transition("the ticket is already resolved".into())),
        Status::Closed => Err(Refusal::Transition(
            "the ticket is closed; reopen it before you resolve it".into(),
        )),
        Status::New | Status::Open | Status::PendingCustomer => Ok(Change::new(
            state,
            TicketState {
                status: Status::Resolved,
                awaiting_since: None,
                ..state.clone()
            },
        )),
    }
}

pub fn close(state: &TicketState) -> Result<Change, Refusal> {
    match state.status {
        Status::Resolved => Ok(Change::new(
            state,
            TicketState {
                status: Status::Closed,
                ..state.clone()
            },
        )),
        Status::Closed => Err(Refusal::Transition("the ticket is already closed".into())),
        other => Err(Refusal::Transition(format!(
            "the ticket is {other}; resolve it before you close it"
        ))),
    }
}

pub fn reopen(state: &TicketState) -> Result<Change, Refusal> {
    match state.status {
        Status::Resolved | Status::Closed => Ok(Change::new(
            state,
            TicketState {
                status: Status::Open,
                ..state.clone()
            },
        )),
        other => Err(Refusal::Transition(format!(
            "the ticket is {other}; only a resolved or closed ticket can be reopened"
        ))),
    }
}

/// What promise covers the ticket's asset, as `contracts` told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    None,
    Warranty,
    Contract,
}

/// Whom a ticket is for and what covers it: `contracts`' answer to its
/// `ticket.created`, recorded on the ticket as it came. Tickets does not
/// judge it; it keeps the latest answer (by when it was resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    /// Id and name; `None` for an unknown sender or an ambiguous one.
    pub customer: Option<(uuid::Uuid, String)>,
    /// Set when the assets concerned are in one project.
    pub project: Option<(uuid::Uuid, String)>,
    /// The serial of the asset concerned, when there is one.
    pub asset: Option<String>,
    pub coverage: Coverage,
    /// The last day covered; `None` for no coverage.
    pub covered_until: Option<chrono::NaiveDate>,
    /// Why, in words, for the agent.
    pub reason: String,
}

/// Human ticket numbers: `HL-10001`.
pub const NUMBER_PREFIX: &str = "HL-";

pub fn format_number(number: i64) -> String {
    format!("{NUMBER_PREFIX}{number}")
}

/// How a request names a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKey {
    Id(uuid::Uuid),
    Number(i64),
}

impl FromStr for TicketKey {
    type Err = Refusal;

    /// Accepts `HL-10001` (any case), `10001`, or a UUID.
    fn from_str(text: &str) -> Result<Self, Refusal> {
        let text = text.trim();
        let digits = text
            .get(..NUMBER_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(NUMBER_PREFIX))
            .map_or(text, |_| &text[NUMBER_PREFIX.len()..]);
        if let Ok(number) = digits.parse::<i64>()
            && number > 0
        {
            return Ok(TicketKey::Number(number));
        }
        uuid::Uuid::parse_str(text).map(TicketKey::Id).map_err(|_| {
            Refusal::Invalid(format!(
                "{text:?} names no ticket: give a number such as HL-10001 or a ticket id"
            ))
        })
    }
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name).to_lowercase())),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(Status {
    New => "new",
    Open => "open",
    PendingCustomer => "pending_customer",
    Resolved => "resolved",
    Closed => "closed",
});
text_enum!(Priority { Low => "low", Normal => "normal", High => "high", Urgent => "urgent" });
text_enum!(Channel { Email => "email", Phone => "phone", Web => "web", Api => "api", Onsite => "onsite" });
text_enum!(CallDirection { Inbound => "in", Outbound => "out" });
text_enum!(CallOutcome { Answered => "answered", Missed => "missed", Voicemail => "voicemail" });
text_enum!(Coverage { None => "none", Warranty => "warranty", Contract => "contract" });

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const MISSED_CALL: ArticleKind = ArticleKind::Call {
        direction: CallDirection::Inbound,
        outcome: CallOutcome::Missed,
    };
    const ANSWERED_CALL: ArticleKind = ArticleKind::Call {
        direction: CallDirection::Inbound,
        outcome: CallOutcome::Answered,
    };
    const CALLBACK_CONNECTED: ArticleKind = ArticleKind::Call {
        direction: CallDirection::Outbound,
        outcome: CallOutcome::Answered,
    };
    const CALLBACK_NO_ANSWER: ArticleKind = ArticleKind::Call {
        direction: CallDirection::Outbound,
        outcome: CallOutcome::Missed,
    };

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn awaiting() -> TicketState {
        open(ArticleKind::CustomerMessage, t0())
    }

    #[test]
    fn customer_contacts_open_awaiting_tickets() {
        for first in [
            ArticleKind::CustomerMessage,
            MISSED_CALL,
            ArticleKind::Call {
                direction: CallDirection::Inbound,
                outcome: CallOutcome::Voicemail,
            },
        ] {
            let state = open(first, t0());
            assert_eq!(state.awaiting_since, Some(t0()), "{first:?}");
            assert_eq!(state.status, Status::New);
        }
    }

    #[test]
    fn an_answered_inbound_call_opens_its_ticket_already_responded() {
        let state = open(ANSWERED_CALL, t0());
        assert_eq!(state.awaiting_since, None);
        assert_eq!(state.status, Status::Open);
    }

    #[test]
    fn each_kind_of_response_stops_the_wait() {
        for response in [
            ArticleKind::AgentReply,
            CALLBACK_CONNECTED,
            ANSWERED_CALL,
            ArticleKind::OnsiteArrival,
        ] {
            let change =
                add_article(&awaiting(), response, false, t0() + Duration::minutes(5)).unwrap();
            assert_eq!(change.after.awaiting_since, None, "{response:?}");
            assert!(change.responded(), "{response:?}");
            assert_eq!(change.after.status, Status::Open);
        }
    }

    #[test]
    fn internal_notes_and_unanswered_callbacks_are_not_responses() {
        for neutral in [ArticleKind::InternalNote, CALLBACK_NO_ANSWER] {
            let change =
                add_article(&awaiting(), neutral, false, t0() + Duration::minutes(5)).unwrap();
            assert_eq!(change.after.awaiting_since, Some(t0()), "{neutral:?}");
            assert!(!change.responded());
            assert!(!change.status_changed());
        }
    }

    #[test]
    fn a_third_party_is_kept_but_neither_reopens_nor_starts_the_clock() {
        let written = |author, contact| ArticleKind::CustomerMessage.as_written_by(author, contact);
        assert_eq!(
            written("Ana@Customer.example", Some("ana@customer.example")),
            ArticleKind::CustomerMessage
        );
        assert_eq!(
            written("mallory@elsewhere.example", Some("ana@customer.example")),
            ArticleKind::ThirdPartyMessage
        );
        assert_eq!(
            written("anyone@x.example", None),
            ArticleKind::CustomerMessage
        );
        assert_eq!(
            written(" ", Some("ana@customer.example")),
            ArticleKind::CustomerMessage,
            "no author named: the contact's"
        );
        assert_eq!(
            ArticleKind::InternalNote.as_written_by("ada", Some("ana@customer.example")),
            ArticleKind::InternalNote
        );
        let later = t0() + Duration::minutes(5);
        let resolved = resolve(&awaiting()).unwrap().after;
        let change = add_article(&resolved, ArticleKind::ThirdPartyMessage, false, later).unwrap();
        assert_eq!(change.after.status, Status::Resolved);
        assert_eq!(change.after.awaiting_since, None);
        let change =
            add_article(&awaiting(), ArticleKind::ThirdPartyMessage, false, later).unwrap();
        assert_eq!(
            change.after.awaiting_since,
            Some(t0()),
            "the clock does not move"
        );
        let closed = close(&resolved).unwrap().after;
        assert!(add_article(&closed, ArticleKind::ThirdPartyMessage, false, later).is_err());
    }

    #[test]
    fn a_second_contact_keeps_the_first_awaiting_since() {
        let later = t0() + Duration::minutes(30);
        let change = add_article(&awaiting(), ArticleKind::CustomerMessage, false, later).unwrap();
        assert_eq!(change.after.awaiting_since, Some(t0()));
        assert!(!change.started_awaiting());
    }

    #[test]
    fn a_customer_reply_after_a_response_starts_a_new_wait() {
        let replied = add_article(&awaiting(), ArticleKind::AgentReply, true, t0())
            .unwrap()
            .after;
        assert_eq!(replied.status, Status::PendingCustomer);
        let later = t0() + Duration::hours(3);
        let change = add_article(&replied, ArticleKind::CustomerMessage, false, later).unwrap();
        assert_eq!(change.after.awaiting_since, Some(later));
        assert_eq!(change.after.status, Status::Open);
        assert!(change.started_awaiting());
    }

    #[test]
    fn a_customer_message_on_a_resolved_ticket_reopens_it_awaiting() {
        let resolved = resolve(&awaiting()).unwrap().after;
        assert_eq!(resolved.awaiting_since, None);
        let later = t0() + Duration::days(2);
        let change = add_article(&resolved, ArticleKind::CustomerMessage, false, later).unwrap();
        assert!(change.reopened());
        assert_eq!(change.after.status, Status::Open);
        assert_eq!(change.after.awaiting_since, Some(later));
    }

    #[test]
    fn resolving_ends_the_wait_without_counting_as_a_response() {
        let change = resolve(&awaiting()).unwrap();
        assert_eq!(change.after.awaiting_since, None);
        assert!(!change.responded());
    }

    #[test]
    fn closed_tickets_refuse_everything_but_reopen() {
        let closed = close(&resolve(&awaiting()).unwrap().after).unwrap().after;
        assert_eq!(closed.status, Status::Closed);
        for kind in [
            ArticleKind::CustomerMessage,
            ArticleKind::AgentReply,
            ArticleKind::InternalNote,
        ] {
            assert!(matches!(
                add_article(&closed, kind, false, t0()),
                Err(Refusal::Transition(_))
            ));
        }
        assert!(matches!(
            assign(&closed, Some("ada".into()), None),
            Err(Refusal::Transition(_))
        ));
        assert!(matches!(set_priority(&closed), Err(Refusal::Transition(_))));
        assert!(matches!(resolve(&closed), Err(Refusal::Transition(_))));
        assert!(matches!(close(&closed), Err(Refusal::Transition(_))));
        assert_eq!(reopen(&closed).unwrap().after.status, Status::Open);
    }

    #[test]
    fn invalid_transitions_say_why() {
        let Err(Refusal::Transition(why)) = close(&awaiting()) else {
            panic!("closing a new ticket")
        };
        assert!(why.contains("resolve it before"), "{why}");
        let Err(Refusal::Transition(why)) = reopen(&awaiting()) else {
            panic!("reopening a new ticket")
        };
        assert!(why.contains("only a resolved or closed"), "{why}");
        let resolved = resolve(&awaiting()).unwrap().after;
        assert!(matches!(resolve(&resolved), Err(Refusal::Transition(_))));
    }

    #[test]
    fn assigning_a_new_ticket_opens_it() {
        let change = assign(&awaiting(), Some("ada".into()), None).unwrap();
        assert_eq!(change.after.status, Status::Open);
        assert_eq!(change.after.assignee.as_deref(), Some("ada"));
        assert_eq!(
            change.after.awaiting_since,
            Some(t0()),
            "assignment is no response"
        );
    }

    #[test]
    fn an_assignment_made_meanwhile_wins_over_a_routers() {
        let unassigned = Some(None);
        assert!(assign(&awaiting(), Some("ana".into()), unassigned.as_ref()).is_ok());
        let taken = assign(&awaiting(), Some("bo".into()), None).unwrap().after;
        let refused = assign(&taken, Some("ana".into()), unassigned.as_ref()).unwrap_err();
        assert!(
            refused.to_string().contains("now assigned to bo"),
            "{refused}"
        );
        let moved = assign(&taken, Some("ana".into()), Some(&Some("BO".into()))).unwrap();
        assert_eq!(moved.after.assignee.as_deref(), Some("ana"));
    }

    #[test]
    fn a_customers_answered_call_is_their_next_contact() {
        let pending = add_article(&awaiting(), ArticleKind::AgentReply, true, t0())
            .unwrap()
            .after;
        let change = add_article(&pending, ANSWERED_CALL, false, t0()).unwrap();
        assert_eq!(change.after.status, Status::Open);
        assert_eq!(change.after.awaiting_since, None, "and it was answered");
        let resolved = resolve(&awaiting()).unwrap().after;
        let change = add_article(&resolved, ANSWERED_CALL, false, t0()).unwrap();
        assert!(change.reopened());
        // The desk calling back does not reopen a resolved ticket.
        let change = add_article(&resolved, CALLBACK_CONNECTED, false, t0()).unwrap();
        assert_eq!(change.after.status, Status::Resolved);
    }

    #[test]
    fn a_resolved_ticket_cannot_wait_for_the_customer() {
        let resolved = resolve(&awaiting()).unwrap().after;
        assert!(matches!(
            add_article(&resolved, ArticleKind::AgentReply, true, t0()),
            Err(Refusal::Transition(_))
        ));
        let replied = add_article(&resolved, ArticleKind::AgentReply, false, t0()).unwrap();
        assert_eq!(
            replied.after.status,
            Status::Resolved,
            "a follow-up reply keeps it resolved"
        );
    }

    #[test]
    fn pending_customer_is_only_for_agent_replies() {
        assert!(matches!(
            add_article(&awaiting(), ArticleKind::InternalNote, true, t0()),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn a_reply_or_note_without_text_is_refused() {
        for kind in [ArticleKind::AgentReply, ArticleKind::InternalNote] {
            for body in ["", "  \n\t "] {
                assert!(
                    matches!(check_body(kind, body), Err(Refusal::Invalid(why)) if why.contains("needs a message")),
                    "{kind:?} {body:?}"
                );
            }
            assert_eq!(check_body(kind, "On my way"), Ok(()));
        }
        assert_eq!(check_body(ArticleKind::CustomerMessage, ""), Ok(()));
        assert_eq!(check_body(ArticleKind::OnsiteArrival, ""), Ok(()));
    }

    #[test]
    fn tickets_are_named_by_number_or_id() {
        assert_eq!("HL-10001".parse(), Ok(TicketKey::Number(10001)));
        assert_eq!("hl-10001".parse(), Ok(TicketKey::Number(10001)));
        assert_eq!("10001".parse(), Ok(TicketKey::Number(10001)));
        let id = uuid::Uuid::now_v7();
        assert_eq!(id.to_string().parse(), Ok(TicketKey::Id(id)));
        assert!("HL-".parse::<TicketKey>().is_err());
        assert!("HL--5".parse::<TicketKey>().is_err());
        assert!("nonsense".parse::<TicketKey>().is_err());
        assert_eq!(format_number(10001), "HL-10001");
    }
}
