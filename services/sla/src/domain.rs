//! The response clock and its escalation ladder (ARCHITECTURE §7), as pure
//! functions of the clock, what the ticket says, and the time.
//!
//! A clock runs while its ticket awaits a response: `due = awaiting_since +
//! target`. At `due` the ticket is breached (step 1, level 1); while nobody
//! acknowledges, the ladder climbs one step after each delay, and the last
//! level repeats. An acknowledgement stops the climb, not the clock; the end
//! of the wait stops the clock, and clears a breach.
//!
//! Each step is scheduled from the moment the previous one actually fired,
//! so after downtime the ladder resumes where it stood: one step at a time,
//! none skipped, no burst of overdue levels.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hotline_kit::telemetry::TraceContext;
use uuid::Uuid;

/// Delays between the steps of the ladder after a breach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    /// Before level 2, level 3, ...
    pub delays: Vec<Duration>,
    /// Between repeats of the last level.
    pub repeat_every: Duration,
}

impl Ladder {
    /// The highest level: one past the delays.
    pub fn top(&self) -> i32 {
        i32::try_from(self.delays.len()).unwrap_or(i32::MAX - 1) + 1
    }

    /// The level step `step` pages (steps past the top repeat the top).
    pub fn level(&self, step: i32) -> i32 {
        step.min(self.top())
    }

    /// How long after step `step` the next one comes.
    pub fn delay_after(&self, step: i32) -> Duration {
        usize::try_from(step - 1)
            .ok()
            .and_then(|index| self.delays.get(index))
            .copied()
            .unwrap_or(self.repeat_every)
    }
}

/// What the ticket events say about a ticket, as of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketView {
    pub version: i64,
    pub number: String,
    pub subject: String,
    pub contact: String,
    pub channel: i32,
    pub priority: i32,
    pub awaiting_since: Option<DateTime<Utc>>,
    /// Why a wait that ended, ended: "responded", "resolved", "closed".
    pub end_reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Breached,
    Stopped,
}

/// One ticket's clock. Fields describing the ticket are copied from its
/// latest event, so breaches and pages can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub ticket_id: Uuid,
    pub ticket_version: i64,
    pub number: String,
    pub subject: String,
    pub contact: String,
    pub channel: i32,
    pub priority: i32,
    /// Set while the ticket awaits a response.
    pub awaiting_since: Option<DateTime<Utc>>,
    /// The target of the current (or last) awaiting period.
    pub target: Duration,
    pub due: Option<DateTime<Utc>>,
    /// Breaches so far; the current one's number while breached.
    pub breaches: i32,
    /// When the current (or last) awaiting period breached.
    pub breached_at: Option<DateTime<Utc>>,
    /// Escalations fired in the current breach.
    pub step: i32,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    /// When the scheduler must act next; `None` when there is nothing to do.
    pub next_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_stopped_at: Option<DateTime<Utc>>,
    /// The trace of the event that started the current (or last) wait: its
    /// breach and every escalation continue that trace, and the response
    /// that ends the wait links to it. Kept by the caller; the rules never
    /// read it.
    pub trace: TraceContext,
}

/// What a change to a clock tells the rest of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Breached {
        at: DateTime<Utc>,
    },
    Escalated {
        level: i32,
        step: i32,
        at: DateTime<Utc>,
    },
    Cleared {
        at: DateTime<Utc>,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("{0} is not breached: only a breached ticket can be acknowledged")]
    NotBreached(String),
}

impl Clock {
    /// A clock for a ticket seen for the first time: stopped.
    pub fn new(ticket_id: Uuid, view: &TicketView) -> Self {
        Self {
            ticket_id,
            ticket_version: view.version,
            number: view.number.clone(),
            subject: view.subject.clone(),
            contact: view.contact.clone(),
            channel: view.channel,
            priority: view.priority,
            awaiting_since: None,
            target: Duration::ZERO,
            due: None,
            breaches: 0,
            breached_at: None,
            step: 0,
            acknowledged_at: None,
            acknowledged_by: None,
            next_at: None,
            last_outcome: None,
            last_stopped_at: None,
            trace: TraceContext::default(),
        }
    }

    pub fn state(&self) -> State {
        match (self.awaiting_since, self.breached_at) {
            (None, _) => State::Stopped,
            (Some(_), Some(_)) => State::Breached,
            (Some(_), None) => State::Running,
        }
    }

    /// Follows the ticket to `view` (a newer version, at `at`), with
    /// `target` the response target of its priority. Starts, restarts,
    /// re-targets or stops the clock.
    pub fn observe(
        &mut self,
        view: &TicketView,
        target: Duration,
        at: DateTime<Utc>,
    ) -> Vec<Effect> {
        self.ticket_version = view.version;
        self.number.clone_from(&view.number);
        self.subject.clone_from(&view.subject);
        self.contact.clone_from(&view.contact);
        self.channel = view.channel;
        self.priority = view.priority;
        let mut effects = Vec::new();
        match (self.awaiting_since, view.awaiting_since) {
            (None, Some(since)) => self.start(since, target),
            (Some(current), Some(since)) if since > current => {
                // A new wait whose end we never saw as its own version: the
                // desk answered in between.
                effects.extend(self.stop(since, "responded"));
                self.start(since, target);
            }
            (Some(_), Some(_)) => {
                if self.breached_at.is_none() && target != self.target {
                    // Re-prioritised before due: the new target counts from
                    // the same start.
                    self.target = target;
                    self.due = self.awaiting_since.map(|since| since + target);
                    self.next_at = self.due;
                }
            }
            (Some(_), None) => effects.extend(self.stop(at, view.end_reason)),
            (None, None) => {}
        }
        effects
    }

    fn start(&mut self, since: DateTime<Utc>, target: Duration) {
        let due = since + target;
        self.awaiting_since = Some(since);
        self.target = target;
        self.due = Some(due);
        self.breached_at = None;
        self.step = 0;
        self.acknowledged_at = None;
        self.acknowledged_by = None;
        self.next_at = Some(due);
    }

    fn stop(&mut self, at: DateTime<Utc>, reason: &'static str) -> Option<Effect> {
        let breached = self.breached_at.is_some();
        let late = self.due.is_some_and(|due| at > due);
        self.awaiting_since = None;
        self.next_at = None;
        self.last_outcome = Some(if breached || late { "breached" } else { "met" }.into());
        self.last_stopped_at = Some(at);
        breached.then_some(Effect::Cleared { at, reason })
    }

    /// Whether the scheduler has work on this clock at `now`. Never before
    /// `next_at`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.awaiting_since.is_some() && self.next_at.is_some_and(|next| next <= now)
    }

    /// Takes one step of the ladder at `now`: the breach (step 1), or the
    /// next escalation. `None` when nothing is due.
    pub fn fire(&mut self, now: DateTime<Utc>, ladder: &Ladder) -> Option<Vec<Effect>> {
        if !self.is_due(now) {
            return None;
        }
        let mut effects = Vec::with_capacity(2);
        if self.breached_at.is_none() {
            self.breaches += 1;
            self.breached_at = Some(now);
            effects.push(Effect::Breached { at: now });
        }
        self.step += 1;
        effects.push(Effect::Escalated {
            level: ladder.level(self.step),
            step: self.step,
            at: now,
        });
        self.next_at = if self.acknowledged_at.is_some() {
            None
        } else {
            Some(now + ladder.delay_after(self.step))
        };
        Some(effects)
    }

    /// Stops the climb of the current breach. `Ok(false)` when it was
    /// already acknowledged (the first acknowledgement stands).
    pub fn acknowledge(&mut self, by: &str, at: DateTime<Utc>) -> Result<bool, AckError> {
        if self.state() != State::Breached {
            return Err(AckError::NotBreached(self.number.clone()));
        }
        if self.acknowledged_at.is_some() {
            return Ok(false);
        }
        self.acknowledged_at = Some(at);
        self.acknowledged_by = Some(by.to_owned());
        self.next_at = None;
        Ok(true)
    }

    /// The level reached in the current (or last) breach.
    pub fn level(&self, ladder: &Ladder) -> i32 {
        ladder.level(self.step)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const TARGET: Duration = Duration::from_secs(7200);

    fn ladder() -> Ladder {
        Ladder {
            delays: vec![15 * MINUTE, 30 * MINUTE],
            repeat_every: 30 * MINUTE,
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn view(version: i64, awaiting_since: Option<DateTime<Utc>>) -> TicketView {
        TicketView {
            version,
            number: "HL-10001".into(),
            subject: "NVR offline".into(),
            contact: "ops@example.com".into(),
            channel: 1,
            priority: 2,
            awaiting_since,
            end_reason: "responded",
        }
    }

    fn awaiting() -> Clock {
        let mut clock = Clock::new(Uuid::nil(), &view(1, None));
        assert!(clock.observe(&view(1, Some(t0())), TARGET, t0()).is_empty());
        clock
    }

    fn levels(effects: &[Effect]) -> Vec<i32> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Escalated { level, .. } => Some(*level),
                _ => None,
            })
            .collect()
    }

    /// Steps the clock through `until`, one scheduled moment at a time, as
    /// the scheduler would with a clock that jumps to each wake-up.
    fn run(clock: &mut Clock, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, Vec<Effect>)> {
        let mut fired = Vec::new();
        while let Some(next) = clock.next_at.filter(|next| *next <= until) {
            let effects = clock.fire(next, &ladder()).unwrap_or_default();
            fired.push((next, effects));
        }
        fired
    }

    #[test]
    fn a_waiting_ticket_breaches_at_due_and_not_a_moment_before() {
        let mut clock = awaiting();
        let due = t0() + TARGET;
        assert_eq!(clock.due, Some(due));
        assert_eq!(clock.state(), State::Running);
        let just_before = due - chrono::Duration::milliseconds(1);
        assert_eq!(clock.fire(just_before, &ladder()), None, "never early");
        let effects = clock.fire(due, &ladder()).unwrap_or_default();
        assert_eq!(
            effects,
            vec![
                Effect::Breached { at: due },
                Effect::Escalated {
                    level: 1,
                    step: 1,
                    at: due
                }
            ]
        );
        assert_eq!(clock.state(), State::Breached);
        assert_eq!(clock.breaches, 1);
    }

    #[test]
    fn the_ladder_climbs_after_15_then_30_minutes_then_repeats_the_top_every_30() {
        let mut clock = awaiting();
        let due = t0() + TARGET;
        let fired = run(&mut clock, due + 2 * TARGET);
        let times: Vec<i64> = fired
            .iter()
            .map(|(at, _)| (*at - due).num_minutes())
            .collect();
        assert_eq!(times, vec![0, 15, 45, 75, 105, 135, 165, 195, 225]);
        let climbed: Vec<i32> = fired.iter().flat_map(|(_, e)| levels(e)).collect();
        assert_eq!(climbed, vec![1, 2, 3, 3, 3, 3, 3, 3, 3]);
        let steps: Vec<i32> = fired
            .iter()
            .flat_map(|(_, effects)| effects.iter())
            .filter_map(|e| match e {
                Effect::Escalated { step, .. } => Some(*step),
                _ => None,
            })
            .collect();
        assert_eq!(steps, (1..=9).collect::<Vec<_>>(), "each step once");
        let breaches = fired
            .iter()
            .flat_map(|(_, e)| e.iter())
            .filter(|e| matches!(e, Effect::Breached { .. }))
            .count();
        assert_eq!(breaches, 1, "one breach per awaiting period");
    }

    #[test]
    fn after_downtime_the_ladder_resumes_one_step_at_a_time() {
        let mut clock = awaiting();
        let due = t0() + TARGET;
        // Down for an hour past due: on return, the breach fires at once...
        let back = due + 60 * MINUTE;
        let effects = clock.fire(back, &ladder()).unwrap_or_default();
        assert_eq!(levels(&effects), vec![1]);
        // ...and level 2 comes 15 minutes after that, not in the same breath.
        assert_eq!(clock.fire(back, &ladder()), None);
        assert_eq!(clock.next_at, Some(back + 15 * MINUTE));
    }

    #[test]
    fn an_acknowledgement_stops_the_climb_but_not_the_clock() {
        let mut clock = awaiting();
        let due = t0() + TARGET;
        let _ = clock.fire(due, &ladder());
        assert_eq!(clock.acknowledge("ana", due + MINUTE), Ok(true));
        assert_eq!(clock.acknowledge("bo", due + 2 * MINUTE), Ok(false));
        assert_eq!(clock.acknowledged_by.as_deref(), Some("ana"));
        assert_eq!(clock.next_at, None);
        assert!(
            run(&mut clock, due + 10 * TARGET).is_empty(),
            "no more steps"
        );
        assert_eq!(clock.state(), State::Breached, "still awaiting a response");
        // The response clears it.
        let effects = clock.observe(&view(3, None), TARGET, due + 3 * MINUTE);
        assert_eq!(
            effects,
            vec![Effect::Cleared {
                at: due + 3 * MINUTE,
                reason: "responded"
            }]
        );
        assert_eq!(clock.state(), State::Stopped);
        assert_eq!(clock.last_outcome.as_deref(), Some("breached"));
    }

    #[test]
    fn only_a_breached_clock_can_be_acknowledged() {
        let mut clock = awaiting();
        assert!(matches!(
            clock.acknowledge("ana", t0()),
            Err(AckError::NotBreached(_))
        ));
    }

    #[test]
    fn a_response_before_due_stops_the_clock_with_the_target_met_and_clears_nothing() {
        let mut clock = awaiting();
        let effects = clock.observe(&view(2, None), TARGET, t0() + 10 * MINUTE);
        assert!(effects.is_empty());
        assert_eq!(clock.state(), State::Stopped);
        assert_eq!(clock.next_at, None);
        assert_eq!(clock.last_outcome.as_deref(), Some("met"));
        assert_eq!(clock.fire(t0() + 10 * TARGET, &ladder()), None);
    }

    #[test]
    fn a_customer_reply_after_a_response_restarts_the_clock_and_a_new_breach_counts_on() {
        let mut clock = awaiting();
        let due = t0() + TARGET;
        let _ = clock.fire(due, &ladder());
        let _ = clock.observe(&view(2, None), TARGET, due + MINUTE);
        let again = due + 30 * MINUTE;
        assert!(
            clock
                .observe(&view(3, Some(again)), TARGET, again)
                .is_empty()
        );
        assert_eq!(clock.state(), State::Running);
        assert_eq!(clock.due, Some(again + TARGET));
        assert_eq!((clock.step, clock.acknowledged_at), (0, None));
        let _ = clock.fire(again + TARGET, &ladder());
        assert_eq!(clock.breaches, 2, "the second breach is a new one");
    }

    #[test]
    fn a_new_wait_seen_without_its_response_clears_the_old_breach_first() {
        let mut clock = awaiting();
        let due = t0() + TARGET;
        let _ = clock.fire(due, &ladder());
        let again = due + 5 * MINUTE;
        let effects = clock.observe(&view(5, Some(again)), TARGET, again);
        assert!(matches!(effects.as_slice(), [Effect::Cleared { .. }]));
        assert_eq!(clock.awaiting_since, Some(again));
        assert_eq!(clock.state(), State::Running);
    }

    #[test]
    fn a_new_priority_retargets_a_running_clock_from_the_same_start_but_not_a_breached_one() {
        let mut clock = awaiting();
        let _ = clock.observe(&view(2, Some(t0())), 30 * MINUTE, t0() + MINUTE);
        assert_eq!(clock.due, Some(t0() + 30 * MINUTE));
        assert_eq!(clock.next_at, clock.due);
        let _ = clock.fire(t0() + 30 * MINUTE, &ladder());
        let _ = clock.observe(&view(3, Some(t0())), TARGET, t0() + 31 * MINUTE);
        assert_eq!(clock.due, Some(t0() + 30 * MINUTE), "a breach stands");
    }

    #[test]
    fn a_late_response_counts_as_breached_even_before_the_breach_fired() {
        let mut clock = awaiting();
        let effects = clock.observe(
            &view(2, None),
            TARGET,
            t0() + TARGET + chrono::Duration::milliseconds(300),
        );
        assert!(effects.is_empty(), "nothing was paged, nothing to clear");
        assert_eq!(clock.last_outcome.as_deref(), Some("breached"));
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_paused_clock_the_ladder_fires_each_step_when_its_time_comes() {
        // The scheduler's loop in miniature: sleep until `next_at`, fire.
        let start = tokio::time::Instant::now();
        let wall = |now: tokio::time::Instant| t0() + (now - start);
        let mut clock = awaiting();
        let mut fired = Vec::new();
        while fired.len() < 4 {
            let next = clock.next_at.unwrap_or(t0());
            let wait = (next - wall(tokio::time::Instant::now()))
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            let now = wall(tokio::time::Instant::now());
            if let Some(effects) = clock.fire(now, &ladder()) {
                fired.push(((now - t0()).num_minutes(), levels(&effects)));
            }
        }
        assert_eq!(
            fired,
            vec![
                (120, vec![1]),
                (135, vec![2]),
                (165, vec![3]),
                (195, vec![3])
            ]
        );
    }
}
