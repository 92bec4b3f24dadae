//! On-call rotations, as pure functions of the schedule and the time.
//!
//! Participants take turns, one shift each, starting at a local date and
//! time in the schedule's time zone. Shifts are counted in local wall-clock
//! time, so a daily or weekly rotation hands off at the same local hour
//! across daylight-saving changes. An override puts someone else on call
//! for a while; the latest override covering the moment wins.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub time_zone: Tz,
    pub participants: Vec<String>,
    pub shift: Duration,
    /// Local date and time of the first handoff.
    pub starts: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub person: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCall {
    pub person: String,
    pub overridden: bool,
    /// When this person's turn ends.
    pub until: DateTime<Utc>,
}

/// `2026-11-02T09:00` (seconds optional).
pub fn parse_local(text: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| format!("{text:?} is not a local date and time like 2026-11-02T09:00"))
}

/// A moment as people give one for an override: RFC 3339
/// (`2026-11-03T18:00:00Z`, `2026-11-03T19:00:00+01:00`), or a local date and
/// time in the schedule's `zone` (`2026-11-03T19:00`, read as [`to_utc`]
/// reads it).
pub fn parse_moment(text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    parse_local(text)
        .map(|local| to_utc(zone, local))
        .map_err(|_| {
            format!(
                "{text:?} is neither a local date and time like 2026-11-02T09:00 (in the \
                 schedule's time zone) nor an RFC 3339 time like 2026-11-02T08:00:00Z"
            )
        })
}

/// The UTC moment of a local time: the earlier one when the clocks go back
/// and it happens twice; in a daylight-saving gap, the first moment after it.
pub fn to_utc(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut local = local;
    for _ in 0..4 {
        if let Some(at) = zone.from_local_datetime(&local).earliest() {
            return at.with_timezone(&Utc);
        }
        local += chrono::Duration::minutes(30);
    }
    local.and_utc()
}

impl Rotation {
    /// Who the rotation puts on call at `at`: nobody before it starts or
    /// without participants.
    fn turn(&self, at: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
        let shift = chrono::Duration::from_std(self.shift).ok()?;
        if self.participants.is_empty() || shift <= chrono::Duration::zero() {
            return None;
        }
        let local = at.with_timezone(&self.time_zone).naive_local();
        let elapsed = local - self.starts;
        if elapsed < chrono::Duration::zero() {
            return None;
        }
        let index = elapsed.num_seconds() / shift.num_seconds().max(1);
        let count = i64::try_from(self.participants.len()).ok()?;
        let person = self.participants[usize::try_from(index % count).ok()?].clone();
        let ends = self
            .starts
            .checked_add_signed(shift.checked_mul(i32::try_from(index + 1).ok()?)?)?;
        Some((person, to_utc(self.time_zone, ends)))
    }

    /// Who is on call at `at`, overrides considered.
    pub fn on_call(&self, overrides: &[Override], at: DateTime<Utc>) -> Option<OnCall> {
        if let Some(taken) = overrides
            .iter()
            .rev()
            .find(|o| o.starts_at <= at && at < o.ends_at)
        {
            return Some(OnCall {
                person: taken.person.clone(),
                overridden: true,
                until: taken.ends_at,
            });
        }
        self.turn(at).map(|(person, until)| OnCall {
            person,
            overridden: false,
            until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn weekly_berlin() -> Rotation {
        Rotation {
            time_zone: chrono_tz::Europe::Berlin,
            participants: vec!["ana".into(), "bo".into(), "cy".into()],
            shift: Duration::from_secs(7 * 86_400),
            starts: parse_local("2026-10-19T09:00").unwrap_or_default(),
        }
    }

    #[test]
    fn participants_take_turns_handing_off_at_the_local_hour() {
        let rotation = weekly_berlin();
        let who = |at: &str| rotation.on_call(&[], utc(at)).map(|o| o.person);
        // 09:00 in Berlin is 07:00Z in summer time, 08:00Z in winter.
        assert_eq!(who("2026-10-19T06:59:00Z"), None, "before the start");
        assert_eq!(who("2026-10-19T07:00:00Z").as_deref(), Some("ana"));
        assert_eq!(who("2026-10-26T07:59:00Z").as_deref(), Some("ana"));
        // Summer time ended on 25 October: the handoff stays at 09:00 local.
        assert_eq!(who("2026-10-26T08:00:00Z").as_deref(), Some("bo"));
        assert_eq!(who("2026-11-02T08:00:00Z").as_deref(), Some("cy"));
        assert_eq!(who("2026-11-09T08:00:00Z").as_deref(), Some("ana"));
        let shift = rotation.on_call(&[], utc("2026-10-27T12:00:00Z"));
        assert_eq!(shift.map(|o| o.until), Some(utc("2026-11-02T08:00:00Z")));
    }

    #[test]
    fn an_override_takes_the_shift_for_its_time_only() {
        let rotation = weekly_berlin();
        let overrides = [Override {
            person: "dee".into(),
            starts_at: utc("2026-11-03T18:00:00Z"),
            ends_at: utc("2026-11-04T06:00:00Z"),
        }];
        let at = |t: &str| rotation.on_call(&overrides, utc(t));
        let night = at("2026-11-03T23:00:00Z");
        assert_eq!(night.as_ref().map(|o| o.person.as_str()), Some("dee"));
        assert_eq!(night.map(|o| o.overridden), Some(true));
        assert_eq!(
            at("2026-11-04T06:00:00Z").map(|o| o.person).as_deref(),
            Some("cy")
        );
    }

    #[test]
    fn an_override_time_is_rfc_3339_or_local_to_the_schedule() {
        let berlin = chrono_tz::Europe::Berlin;
        let at = |text| parse_moment(text, berlin);
        assert_eq!(at("2026-11-03T19:00"), Ok(utc("2026-11-03T18:00:00Z")));
        assert_eq!(
            at("2026-11-03T19:00:00+01:00"),
            Ok(utc("2026-11-03T18:00:00Z"))
        );
        assert_eq!(at("2026-11-03T18:00:00Z"), Ok(utc("2026-11-03T18:00:00Z")));
        // 02:30 on 29 March does not exist in Berlin: the clocks jump to 03:00.
        assert_eq!(at("2026-03-29T02:30"), Ok(utc("2026-03-29T01:00:00Z")));
        // 02:30 on 25 October happens twice: the first one.
        assert_eq!(at("2026-10-25T02:30"), Ok(utc("2026-10-25T00:30:00Z")));
        let wrong = at("tomorrow 9am").unwrap_err();
        assert!(
            wrong.contains("2026-11-02T09:00") && wrong.contains("RFC 3339"),
            "{wrong}"
        );
    }

    #[test]
    fn a_local_time_is_read_as_people_write_it() {
        assert!(parse_local("2026-11-02T09:00").is_ok());
        assert!(parse_local("2026-11-02 09:00").is_err());
    }
}
