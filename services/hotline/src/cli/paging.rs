//! `hotline sla ...`, `hotline oncall ...`, `hotline pages ...`: the
//! response clocks, who is on call, and the pages sent.

use std::time::Duration;

use clap::Subcommand;
use hotline_kit::{config::parse_duration, time::timestamp};
use hotline_pager::schedule::parse_moment;
use hotline_proto::{
    pager::v1::{self as pager, pager_service_client::PagerServiceClient},
    sla::v1::{self as sla, sla_service_client::SlaServiceClient},
};
use hotline_tickets::{convert, domain};
use serde_json::{Value, json};

use super::{
    Failure, Output, connect,
    text::line,
    tickets::{channel_name, optional, priority_name, time},
};

#[derive(Subcommand)]
pub enum SlaCommand {
    /// The response clock of a ticket.
    Show {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
    /// Tickets whose response is due soon, soonest first.
    AtRisk {
        /// Due within this long, e.g. 30m, 1h.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        within: Duration,
    },
    /// Tickets past due and still awaiting a response.
    Breached,
    /// Stop the escalation of a breached ticket (the clock runs on).
    Ack {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
    /// The response target of each priority.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Each priority's target: its policy, or the warranty target.
    List,
    /// Set one priority's target (managers; never weaker than warranty).
    Set {
        /// low, normal, high or urgent.
        #[arg(long, value_parser = str::parse::<domain::Priority>)]
        priority: domain::Priority,
        /// The response is due this long after the contact, e.g. 1h, 90m.
        #[arg(long, value_parser = parse_duration)]
        target: Duration,
    },
    /// Remove one priority's policy: the warranty target applies again
    /// (managers).
    Delete {
        /// low, normal, high or urgent.
        #[arg(long, value_parser = str::parse::<domain::Priority>)]
        priority: domain::Priority,
    },
}

#[derive(Subcommand)]
pub enum OncallCommand {
    /// Who is on call on each schedule now.
    Now,
    /// On-call rotations: add one, list them.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Someone else on call for a while, in place of the rotation.
    #[command(subcommand)]
    Override(OverrideCommand),
    /// Whom each escalation level pages.
    #[command(subcommand)]
    Levels(LevelsCommand),
    /// How the directory's people are paged: their webhooks.
    #[command(subcommand)]
    Contact(ContactCommand),
}

#[derive(Subcommand)]
pub enum ContactCommand {
    /// Set where a person's webhook pages go; an empty URL removes it
    /// (managers). People are added with `hotline people add`.
    Set {
        /// The person: their email or directory id.
        #[arg(long)]
        person: String,
        /// An http(s) URL, or "" for none.
        #[arg(long)]
        webhook: String,
    },
    /// The people the pager can page, with their webhooks; legacy people
    /// (from before the directory, not adopted yet) last.
    List,
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Add a rotation, or replace the rotation of the schedule with this
    /// name, its overrides kept (managers).
    Add {
        /// The schedule's name, e.g. network-oncall.
        #[arg(long)]
        name: String,
        /// IANA time zone of the handoffs, e.g. Europe/Berlin.
        #[arg(long)]
        timezone: String,
        /// Who takes the shifts, in turn: emails (or ids) of directory people, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        people: Vec<String>,
        /// Length of one shift, e.g. 1d, 7d, 12h.
        #[arg(long, value_parser = parse_duration)]
        shift: Duration,
        /// Local date and time of the first handoff, e.g. 2026-11-02T09:00.
        #[arg(long)]
        starts: String,
    },
    /// Every schedule: its rotation and the overrides not over yet.
    List,
}

#[derive(Subcommand)]
pub enum OverrideCommand {
    /// Put a person on call on a schedule for a while (dispatchers, managers).
    Add {
        /// The schedule's name.
        #[arg(long)]
        schedule: String,
        /// Who is on call instead: the email (or id) of a directory person.
        #[arg(long)]
        person: String,
        /// When it starts: local to the schedule (2026-11-03T19:00) or RFC 3339
        /// (2026-11-03T18:00:00Z).
        #[arg(long)]
        from: String,
        /// When it ends, written as --from.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
pub enum LevelsCommand {
    /// Set whom a level pages, replacing its targets (managers).
    Set {
        /// The escalation level, from 1.
        #[arg(long)]
        level: i32,
        /// schedule:NAME (whoever is on call) or person:EMAIL, comma-separated.
        #[arg(long, value_delimiter = ',', value_parser = parse_target, required = true)]
        targets: Vec<pager::Target>,
    },
    /// Each level's targets.
    List,
}

/// `schedule:NAME` or `person:NAME`.
fn parse_target(text: &str) -> Result<pager::Target, String> {
    use pager::target::Target;
    let target = match text.trim().split_once(':') {
        Some(("schedule", name)) if !name.trim().is_empty() => Target::Schedule(name.into()),
        Some(("person", name)) if !name.trim().is_empty() => Target::Person(name.into()),
        _ => {
            return Err(format!(
                "{text:?} is not a target: write schedule:NAME or person:NAME"
            ));
        }
    };
    Ok(pager::Target {
        target: Some(target),
    })
}

#[derive(Subcommand)]
pub enum PagesCommand {
    /// Pages sent, newest first.
    List {
        /// Only the pages of this ticket: its number (HL-10001) or id.
        ticket: Option<String>,
    },
    /// Acknowledge the open breach of a ticket: the ladder stops climbing.
    Ack {
        /// The ticket: its number (HL-10001) or id.
        ticket: String,
    },
}

fn state_name(state: i32) -> &'static str {
    match sla::ClockState::try_from(state) {
        Ok(sla::ClockState::Running) => "running",
        Ok(sla::ClockState::Breached) => "breached",
        Ok(sla::ClockState::Stopped) => "stopped",
        _ => "unknown",
    }
}

fn seconds(duration: Option<&prost_types::Duration>) -> Option<i64> {
    duration.map(|d| d.seconds)
}

fn clock_json(clock: &sla::Clock) -> Value {
    json!({
        "ticket_id": clock.ticket_id,
        "number": clock.number,
        "subject": clock.subject,
        "contact": optional(&clock.contact),
        "channel": channel_name(clock.channel),
        "priority": priority_name(clock.priority),
        "state": state_name(clock.state),
        "awaiting_since": time(clock.awaiting_since.as_ref()),
        "target_seconds": seconds(clock.target.as_ref()),
        "due": time(clock.due.as_ref()),
        "breaches": clock.breaches,
        "breached_at": time(clock.breached_at.as_ref()),
        "level": clock.level,
        "next_escalation_at": time(clock.next_escalation_at.as_ref()),
        "acknowledged_at": time(clock.acknowledged_at.as_ref()),
        "acknowledged_by": optional(&clock.acknowledged_by),
        "last_outcome": optional(&clock.last_outcome),
    })
}

fn clock_line(clock: &sla::Clock) -> String {
    let due = time(clock.due.as_ref())
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    format!(
        "{}\t{}\tdue {}\tlevel {}\t{}",
        clock.number,
        state_name(clock.state),
        due,
        clock.level,
        line(&clock.subject)
    )
}

fn clocks(output: &Output, clocks: &[sla::Clock]) {
    output.print(
        json!(clocks.iter().map(clock_json).collect::<Vec<_>>()),
        || {
            if clocks.is_empty() {
                "none".into()
            } else {
                clocks.iter().map(clock_line).collect::<Vec<_>>().join("\n")
            }
        },
    );
}

pub async fn sla(command: SlaCommand, output: &Output) -> Result<(), Failure> {
    let mut client = SlaServiceClient::new(connect()?);
    match command {
        SlaCommand::Show { ticket } => {
            let clock = client
                .get_clock(sla::GetClockRequest { ticket })
                .await?
                .into_inner();
            output.print(clock_json(&clock), || clock_line(&clock));
        }
        SlaCommand::AtRisk { within } => {
            let response = client
                .list_at_risk(sla::ListAtRiskRequest {
                    within: prost_types::Duration::try_from(within).ok(),
                    limit: 500,
                })
                .await?
                .into_inner();
            clocks(output, &response.clocks);
        }
        SlaCommand::Breached => {
            let response = client
                .list_breached(sla::ListBreachedRequest { limit: 500 })
                .await?
                .into_inner();
            clocks(output, &response.clocks);
        }
        SlaCommand::Ack { ticket } => {
            let clock = client
                .acknowledge(sla::AcknowledgeRequest { ticket })
                .await?
                .into_inner();
            output.print(clock_json(&clock), || {
                format!("{} acknowledged", clock.number)
            });
        }
        SlaCommand::Policy(PolicyCommand::List) => {
            let response = client
                .list_policies(sla::ListPoliciesRequest {})
                .await?
                .into_inner();
            policies(output, &response.policies);
        }
        SlaCommand::Policy(PolicyCommand::Set { priority, target }) => {
            let policy = client
                .set_policy(sla::SetPolicyRequest {
                    priority: convert::priority(priority) as i32,
                    target: prost_types::Duration::try_from(target).ok(),
                })
                .await?
                .into_inner();
            output.print(policy_json(&policy), || {
                format!(
                    "{} tickets: a response within {}",
                    priority,
                    span(seconds(policy.target.as_ref()))
                )
            });
        }
        SlaCommand::Policy(PolicyCommand::Delete { priority }) => {
            let response = client
                .delete_policy(sla::DeletePolicyRequest {
                    priority: convert::priority(priority) as i32,
                })
                .await?
                .into_inner();
            policies(output, &response.policies);
        }
    }
    Ok(())
}

fn policy_json(policy: &sla::Policy) -> Value {
    json!({
        "priority": priority_name(policy.priority),
        "target_seconds": seconds(policy.target.as_ref()),
        "custom": policy.custom,
    })
}

fn policies(output: &Output, policies: &[sla::Policy]) {
    output.print(
        json!(policies.iter().map(policy_json).collect::<Vec<_>>()),
        || {
            policies
                .iter()
                .map(|p| {
                    format!(
                        "{:<8} {:<8} {}",
                        priority_name(p.priority),
                        span(seconds(p.target.as_ref())),
                        if p.custom { "policy" } else { "warranty" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
}

/// A target as people write it: `2h`, `1h30m`, `45m`, `90s`.
fn span(seconds: Option<i64>) -> String {
    let Some(seconds) = seconds else {
        return "-".into();
    };
    let (hours, minutes, rest) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut text = String::new();
    for (amount, unit) in [(hours, "h"), (minutes, "m"), (rest, "s")] {
        if amount != 0 {
            text.push_str(&format!("{amount}{unit}"));
        }
    }
    if text.is_empty() { "0s".into() } else { text }
}

/// A shift as people write it: `7d`, `12h`, `1d12h`.
fn shift_text(seconds: Option<i64>) -> String {
    match seconds {
        Some(seconds) if seconds >= 86_400 => {
            let rest = seconds % 86_400;
            let days = format!("{}d", seconds / 86_400);
            if rest == 0 {
                days
            } else {
                days + &span(Some(rest))
            }
        }
        other => span(other),
    }
}

fn override_json(taken: &pager::Override) -> Value {
    json!({
        "schedule": taken.schedule,
        "person": taken.person,
        "from": time(taken.starts_at.as_ref()),
        "to": time(taken.ends_at.as_ref()),
    })
}

fn override_line(taken: &pager::Override) -> String {
    let at =
        |t: Option<&prost_types::Timestamp>| time(t).map(|t| t.to_rfc3339()).unwrap_or_default();
    format!(
        "{} on call on {} from {} to {}",
        line(&taken.person),
        line(&taken.schedule),
        at(taken.starts_at.as_ref()),
        at(taken.ends_at.as_ref())
    )
}

fn schedule_json(schedule: &pager::Schedule) -> Value {
    let shift = seconds(schedule.shift_length.as_ref());
    json!({
        "name": schedule.name,
        "timezone": schedule.time_zone,
        "people": schedule.participants,
        "shift_seconds": shift,
        "shift": shift_text(shift),
        "starts": schedule.starts,
        "overrides": schedule.overrides.iter().map(override_json).collect::<Vec<_>>(),
    })
}

fn schedule_text(schedule: &pager::Schedule) -> String {
    let people: Vec<String> = schedule
        .participants
        .iter()
        .map(|p| line(p).into_owned())
        .collect();
    let mut text = format!(
        "{}\t{} shifts from {} {}\t{}",
        line(&schedule.name),
        shift_text(seconds(schedule.shift_length.as_ref())),
        line(&schedule.starts),
        line(&schedule.time_zone),
        people.join(", ")
    );
    for taken in &schedule.overrides {
        text += &format!("\n  override: {}", override_line(taken));
    }
    text
}

fn target_json(target: &pager::Target) -> Value {
    match &target.target {
        Some(pager::target::Target::Schedule(name)) => json!({"kind": "schedule", "name": name}),
        Some(pager::target::Target::Person(name)) => json!({"kind": "person", "name": name}),
        None => json!({"kind": "unknown", "name": null}),
    }
}

fn level_json(level: &pager::LevelTargets) -> Value {
    json!({
        "level": level.level,
        "targets": level.targets.iter().map(target_json).collect::<Vec<_>>(),
    })
}

fn level_text(level: &pager::LevelTargets) -> String {
    let targets: Vec<String> = level
        .targets
        .iter()
        .map(|t| match &t.target {
            Some(pager::target::Target::Schedule(name)) => format!("schedule {}", line(name)),
            Some(pager::target::Target::Person(name)) => format!("person {}", line(name)),
            None => "unknown".into(),
        })
        .collect();
    let targets = if targets.is_empty() {
        "the targets of the level below".into()
    } else {
        targets.join(", ")
    };
    format!("level {}\t{targets}", level.level)
}

/// An override's `--from` or `--to` as the server takes it: RFC 3339 as
/// given, a local time read in the schedule's zone.
fn moment(
    flag: &str,
    text: &str,
    zone: Option<chrono_tz::Tz>,
) -> Result<prost_types::Timestamp, Failure> {
    let zone = zone.unwrap_or(chrono_tz::UTC);
    parse_moment(text, zone)
        .map(timestamp)
        .map_err(|e| Failure::new(tonic::Code::InvalidArgument, format!("{flag}: {e}")))
}

type Pager = PagerServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        hotline_kit::grpc::BearerToken,
    >,
>;

/// The time zone of `schedule`, for local times; `None` when both times
/// are RFC 3339 and it is not needed.
async fn zone_for(
    client: &mut Pager,
    schedule: &str,
    times: [&str; 2],
) -> Result<Option<chrono_tz::Tz>, Failure> {
    if times
        .iter()
        .all(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).is_ok())
    {
        return Ok(None);
    }
    let schedules = client
        .list_schedules(pager::ListSchedulesRequest {})
        .await?
        .into_inner()
        .schedules;
    let found = schedules
        .iter()
        .find(|s| s.name == schedule.trim())
        .ok_or_else(|| {
            Failure::new(
                tonic::Code::NotFound,
                format!(
                    "no schedule {:?}: add it first, or correct the name (`hotline oncall schedule list`)",
                    schedule.trim()
                ),
            )
        })?;
    found.time_zone.parse().map(Some).map_err(|_| {
        Failure::new(
            tonic::Code::Internal,
            format!("schedule {:?} has an unknown time zone", found.name),
        )
    })
}

pub async fn oncall(command: OncallCommand, output: &Output) -> Result<(), Failure> {
    let mut client = PagerServiceClient::new(connect()?);
    match command {
        OncallCommand::Schedule(ScheduleCommand::Add {
            name,
            timezone,
            people,
            shift,
            starts,
        }) => {
            let schedule = client
                .put_schedule(pager::Schedule {
                    name,
                    time_zone: timezone,
                    participants: people,
                    shift_length: prost_types::Duration::try_from(shift).ok(),
                    starts,
                    overrides: Vec::new(),
                })
                .await?
                .into_inner();
            output.print(schedule_json(&schedule), || schedule_text(&schedule));
        }
        OncallCommand::Schedule(ScheduleCommand::List) => {
            let schedules = client
                .list_schedules(pager::ListSchedulesRequest {})
                .await?
                .into_inner()
                .schedules;
            output.print(
                json!(schedules.iter().map(schedule_json).collect::<Vec<_>>()),
                || {
                    if schedules.is_empty() {
                        return "no schedules".into();
                    }
                    schedules
                        .iter()
                        .map(schedule_text)
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        OncallCommand::Override(OverrideCommand::Add {
            schedule,
            person,
            from,
            to,
        }) => {
            let zone = zone_for(&mut client, &schedule, [&from, &to]).await?;
            let taken = client
                .add_override(pager::Override {
                    schedule,
                    person,
                    starts_at: Some(moment("--from", &from, zone)?),
                    ends_at: Some(moment("--to", &to, zone)?),
                })
                .await?
                .into_inner();
            output.print(override_json(&taken), || override_line(&taken));
        }
        OncallCommand::Levels(LevelsCommand::Set { level, targets }) => {
            let set = client
                .set_level_targets(pager::LevelTargets { level, targets })
                .await?
                .into_inner();
            output.print(level_json(&set), || level_text(&set));
        }
        OncallCommand::Levels(LevelsCommand::List) => {
            let levels = client
                .list_level_targets(pager::ListLevelTargetsRequest {})
                .await?
                .into_inner()
                .levels;
            output.print(
                json!(levels.iter().map(level_json).collect::<Vec<_>>()),
                || {
                    if levels.is_empty() {
                        return "no level has targets".into();
                    }
                    levels.iter().map(level_text).collect::<Vec<_>>().join("\n")
                },
            );
        }
        OncallCommand::Contact(ContactCommand::Set { person, webhook }) => {
            let (id, email) = if person.contains('@') {
                (String::new(), person)
            } else {
                (person, String::new())
            };
            let set = client
                .put_person(pager::Person {
                    id,
                    email,
                    webhook_url: webhook,
                    ..Default::default()
                })
                .await?
                .into_inner();
            output.print(contact_json(&set), || contact_line(&set));
        }
        OncallCommand::Contact(ContactCommand::List) => {
            let people = client
                .list_people(pager::ListPeopleRequest {})
                .await?
                .into_inner()
                .people;
            output.print(
                json!(people.iter().map(contact_json).collect::<Vec<_>>()),
                || {
                    if people.is_empty() {
                        return "nobody".into();
                    }
                    people
                        .iter()
                        .map(contact_line)
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        OncallCommand::Now => {
            let response = client
                .who_is_on_call(pager::WhoIsOnCallRequest { at: None })
                .await?
                .into_inner();
            let rows: Vec<Value> = response
                .on_call
                .iter()
                .map(|o| {
                    json!({
                        "schedule": o.schedule,
                        "person": optional(&o.person),
                        "overridden": o.overridden,
                        "until": time(o.shift_ends_at.as_ref()),
                    })
                })
                .collect();
            output.print(json!(rows), || {
                if response.on_call.is_empty() {
                    return "no schedules".into();
                }
                response
                    .on_call
                    .iter()
                    .map(|o| {
                        let who = if o.person.is_empty() {
                            "nobody".into()
                        } else {
                            line(&o.person)
                        };
                        let until = time(o.shift_ends_at.as_ref())
                            .map(|t| format!(" until {}", t.to_rfc3339()))
                            .unwrap_or_default();
                        format!("{}\t{who}{until}", line(&o.schedule))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

fn contact_json(person: &pager::Person) -> Value {
    json!({
        "id": optional(&person.id),
        "name": person.name,
        "email": optional(&person.email),
        "webhook": optional(&person.webhook_url),
        "active": person.active,
        "legacy": person.legacy,
    })
}

fn contact_line(person: &pager::Person) -> String {
    let webhook = if person.webhook_url.is_empty() {
        "no webhook".into()
    } else {
        line(&person.webhook_url)
    };
    let note = match (person.legacy, person.active) {
        (true, _) => "\t(legacy: not in the directory yet; hotline people adopt-pager)",
        (false, false) => "\t(deactivated: never paged)",
        (false, true) => "",
    };
    format!(
        "{} <{}>\t{webhook}{note}",
        line(&person.name),
        line(&person.email)
    )
}

fn page_state(state: i32) -> &'static str {
    match pager::PageState::try_from(state) {
        Ok(pager::PageState::Pending) => "pending",
        Ok(pager::PageState::Delivered) => "delivered",
        Ok(pager::PageState::Failed) => "failed",
        Ok(pager::PageState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn page_json(page: &pager::Page) -> Value {
    json!({
        "id": page.id,
        "ticket_id": page.ticket_id,
        "number": page.number,
        "breach": page.breach,
        "level": page.level,
        "action": page.action,
        "channel": page.channel,
        "target": page.target,
        "dedup_key": page.dedup_key,
        "state": page_state(page.state),
        "last_error": optional(&page.last_error),
        "created_at": time(page.created_at.as_ref()),
        "delivered_at": time(page.delivered_at.as_ref()),
        "attempts": page.attempts.iter().map(|a| json!({
            "at": time(a.at.as_ref()),
            "status": a.status,
            "error": optional(&a.error),
        })).collect::<Vec<_>>(),
    })
}

pub async fn pages(command: PagesCommand, output: &Output) -> Result<(), Failure> {
    let mut client = PagerServiceClient::new(connect()?);
    match command {
        PagesCommand::List { ticket } => {
            let response = client
                .list_pages(pager::ListPagesRequest {
                    ticket: ticket.unwrap_or_default(),
                    limit: 500,
                })
                .await?
                .into_inner();
            output.print(
                json!(response.pages.iter().map(page_json).collect::<Vec<_>>()),
                || {
                    if response.pages.is_empty() {
                        return "no pages".into();
                    }
                    response
                        .pages
                        .iter()
                        .map(|p| {
                            format!(
                                "{}\t{} level {}\t{} {} -> {}\t{} ({} attempts)",
                                p.number,
                                line(&p.action),
                                p.level,
                                line(&p.channel),
                                line(&p.dedup_key),
                                line(&p.target),
                                page_state(p.state),
                                p.attempts.len()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        PagesCommand::Ack { ticket } => {
            let ack = client
                .acknowledge(pager::AcknowledgeRequest {
                    ticket: ticket.clone(),
                })
                .await?
                .into_inner();
            output.print(
                json!({
                    "ticket_id": ack.ticket_id,
                    "breach": ack.breach,
                    "acknowledged_at": time(ack.acknowledged_at.as_ref()),
                    "acknowledged_by": ack.acknowledged_by,
                    "first": ack.first,
                }),
                || {
                    let ticket = line(&ticket);
                    if ack.first {
                        format!("{ticket} acknowledged")
                    } else {
                        format!(
                            "{ticket} was already acknowledged by {}",
                            line(&ack.acknowledged_by)
                        )
                    }
                },
            );
        }
    }
    Ok(())
}
