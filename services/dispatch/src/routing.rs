//! Routing's rules, pure: what a ticket needs, the order of the queue, who
//! may take a ticket, whom it goes to, and why nobody, in words.
//!
//! The router (`router`) feeds these with what the store and Redis say;
//! nothing here reads a clock or a database.

use std::{cmp::Ordering, collections::BTreeMap, str::FromStr};

use chrono::{DateTime, Duration, Utc};

/// A ticket's priority, lowest first (so a higher one compares greater).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| format!("unknown priority {text:?}"))
    }
}

/// The response target of each priority: `sla`'s policies, the warranty
/// target where none is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets(BTreeMap<Priority, Duration>);

impl Targets {
    /// Every priority at the warranty target.
    pub fn warranty(target: Duration) -> Self {
        Self(Priority::ALL.into_iter().map(|p| (p, target)).collect())
    }

    /// `priority`'s target set to `target`.
    pub fn with(mut self, priority: Priority, target: Duration) -> Self {
        self.0.insert(priority, target);
        self
    }

    pub fn target(&self, priority: Priority) -> Duration {
        self.0.get(&priority).copied().unwrap_or(Duration::hours(2))
    }

    /// When a response is due for a ticket awaiting one since `since`.
    pub fn due(&self, priority: Priority, since: DateTime<Utc>) -> DateTime<Utc> {
        since + self.target(priority)
    }
}

/// Which skill each asset model family needs
/// (`dispatch.family_skills`: `camera=camera,ptz=ptz`); a family not
/// listed needs the skill of its own name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FamilySkills(BTreeMap<String, String>);

impl FamilySkills {
    /// `family=skill` pairs separated by commas; families case-blind,
    /// skills written as people's are (`lang:de` is a skill name).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (family, skill) = pair.split_once('=').ok_or_else(|| {
                format!("{pair:?} is not family=skill: write pairs like camera=camera,ptz=ptz")
            })?;
            let family = family.trim().to_lowercase();
            let skill: crate::domain::Skill = skill.trim().parse()?;
            if family.is_empty() {
                return Err(format!("{pair:?} names no family"));
            }
            if map.insert(family.clone(), skill.name).is_some() {
                return Err(format!("family {family} is mapped twice"));
            }
        }
        Ok(Self(map))
    }

    /// The skill a ticket about an asset of `family` needs, if any: a
    /// family that cannot be a skill's name (`Box camera`) is written as
    /// one (`box-camera`).
    pub fn skill(&self, family: &str) -> Option<String> {
        let family = family.trim().to_lowercase();
        if family.is_empty() {
            return None;
        }
        if let Some(skill) = self.0.get(&family) {
            return Some(skill.clone());
        }
        let mut skill = String::with_capacity(family.len());
        for c in family.chars() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':' {
                skill.push(c);
            } else if !skill.ends_with('-') {
                skill.push('-');
            }
        }
        let skill = skill.trim_matches(|c| c == '-' || c == ':').to_owned();
        (!skill.is_empty()).then_some(skill)
    }
}

/// What the person who takes a ticket must have and serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Skill names, any level (from the asset's model family).
    pub skills: Vec<String>,
    /// The branch's region, lower-case; `None`: any region.
    pub region: Option<String>,
}

impl Needs {
    pub fn of(family: Option<&str>, region: Option<&str>, map: &FamilySkills) -> Self {
        Needs {
            skills: family.and_then(|f| map.skill(f)).into_iter().collect(),
            region: region
                .map(|r| r.trim().to_lowercase())
                .filter(|r| !r.is_empty()),
        }
    }

    /// "with skill nvr in region north", or "" for a ticket anyone can take.
    fn words(&self, skills: bool) -> String {
        let mut words = String::new();
        match self.skills.as_slice() {
            [] => {}
            _ if !skills => {}
            [one] => words.push_str(&format!(" with skill {one}")),
            many => words.push_str(&format!(" with skills {}", many.join(", "))),
        }
        if let Some(region) = &self.region {
            words.push_str(&format!(" in region {region}"));
        }
        words
    }
}

/// A ticket in the queue, as far as its order goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub priority: Priority,
    pub awaiting_since: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// The queue's order: the response due soonest first (near-breach first),
/// then the higher priority, then the older ticket.
pub fn order(a: &Place, b: &Place, targets: &Targets) -> Ordering {
    targets
        .due(a.priority, a.awaiting_since)
        .cmp(&targets.due(b.priority, b.awaiting_since))
        .then(b.priority.cmp(&a.priority))
        .then(a.created_at.cmp(&b.created_at))
}

/// A person who is online now, as routing weighs them.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Lower-case: what tickets records as the assignee.
    pub email: String,
    /// Skill names (any level counts).
    pub skills: Vec<String>,
    /// Lower-case; empty: every region.
    pub regions: Vec<String>,
    /// Lower-case, for overflow.
    pub team: Option<String>,
    pub capacity: u32,
    /// Awaiting tickets they have now (decisions on their way included).
    pub assigned: u32,
    /// `None`: never assigned, which is longest.
    pub last_assigned_at: Option<DateTime<Utc>>,
}

impl Candidate {
    fn spare(&self) -> u32 {
        self.capacity.saturating_sub(self.assigned)
    }

    fn serves(&self, region: Option<&str>) -> bool {
        match region {
            None => true,
            Some(region) => self.regions.is_empty() || self.regions.iter().any(|r| r == region),
        }
    }

    fn has(&self, skills: &[String]) -> bool {
        skills.iter().all(|s| self.skills.contains(s))
    }

    /// Whether they may take a ticket needing `needs` (skills ignored for
    /// the overflow team).
    pub fn eligible(&self, needs: &Needs, skills: bool) -> bool {
        self.spare() > 0
            && self.serves(needs.region.as_deref())
            && (!skills || self.has(&needs.skills))
    }
}

/// Whom a ticket goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// Index into the candidates.
    pub index: usize,
    /// Why them, in words.
    pub reason: String,
    /// Taken by the overflow team, skills relaxed.
    pub overflow: bool,
}

/// The skilled candidate with the most spare capacity, ties to the longest
/// since their last assignment (never is longest), then the email (so two
/// routers agree); or why nobody. `except`: the person the ticket is moved
/// from. `overflow`: the team that may take it, skills relaxed, when the
/// skilled cannot.
pub fn pick(
    candidates: &[Candidate],
    needs: &Needs,
    except: Option<&str>,
    overflow: Option<&str>,
) -> Result<Pick, String> {
    let others = || {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| Some(c.email.as_str()) != except)
    };
    let best = |skills: bool, team: Option<&str>| {
        others()
            .filter(|(_, c)| c.eligible(needs, skills))
            .filter(|(_, c)| team.is_none_or(|t| c.team.as_deref() == Some(t)))
            .min_by(|(_, a), (_, b)| {
                b.spare()
                    .cmp(&a.spare())
                    .then(a.last_assigned_at.cmp(&b.last_assigned_at))
                    .then(a.email.cmp(&b.email))
            })
            .map(|(i, _)| i)
    };
    if let Some(index) = best(true, None) {
        let c = &candidates[index];
        return Ok(Pick {
            index,
            reason: format!(
                "{} is online{}, with the most spare capacity ({} of {})",
                c.email,
                needs.words(true),
                c.spare(),
                c.capacity
            ),
            overflow: false,
        });
    }
    let why = nobody(others().map(|(_, c)| c), needs, true);
    let Some(team) = overflow else {
        return Err(why);
    };
    match best(false, Some(team)) {
        Some(index) => {
            let c = &candidates[index];
            Ok(Pick {
                index,
                reason: format!(
                    "overflow to team {team}, skills relaxed ({why}): {} is online{}, with the most spare capacity ({} of {})",
                    c.email,
                    needs.words(false),
                    c.spare(),
                    c.capacity
                ),
                overflow: true,
            })
        }
        None => Err(format!(
            "{why}; overflow team {team}: {}",
            nobody(
                others()
                    .map(|(_, c)| c)
                    .filter(|c| c.team.as_deref() == Some(team)),
                needs,
                false
            )
        )),
    }
}

/// Why none of `online` can take a ticket needing `needs`.
fn nobody<'a>(online: impl Iterator<Item = &'a Candidate>, needs: &Needs, skills: bool) -> String {
    let mut matching = 0;
    for c in online {
        if c.serves(needs.region.as_deref()) && (!skills || c.has(&needs.skills)) {
            matching += 1;
        }
    }
    let words = needs.words(skills);
    match matching {
        0 => format!("no one online{words}"),
        _ if words.is_empty() => "everyone at capacity".to_owned(),
        n => format!("everyone at capacity ({n} online{words})"),
    }
}

/// Why a ticket waits for its entitlement, in words.
pub fn awaiting_entitlement(wait: std::time::Duration) -> String {
    format!(
        "waiting for its entitlement (customer, region, asset) for up to {}s",
        wait.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn person(email: &str, skills: &[&str], regions: &[&str], assigned: u32) -> Candidate {
        Candidate {
            email: email.into(),
            skills: skills.iter().map(|s| (*s).to_owned()).collect(),
            regions: regions.iter().map(|s| (*s).to_owned()).collect(),
            team: None,
            capacity: 3,
            assigned,
            last_assigned_at: None,
        }
    }

    fn needs(skills: &[&str], region: Option<&str>) -> Needs {
        Needs {
            skills: skills.iter().map(|s| (*s).to_owned()).collect(),
            region: region.map(str::to_owned),
        }
    }

    #[test]
    fn near_breach_goes_first_then_priority_then_age() {
        let targets =
            Targets::warranty(Duration::hours(2)).with(Priority::Urgent, Duration::minutes(30));
        let place = |priority, since, created| Place {
            priority,
            awaiting_since: at(since),
            created_at: at(created),
        };
        let mut queue = [
            place(Priority::Normal, 0, 0),   // due at 120
            place(Priority::Urgent, 80, 80), // due at 110: first
            place(Priority::High, 0, 1),     // due at 120, higher than normal
            place(Priority::Normal, 0, -5),  // due at 120, older
            place(Priority::Low, 10, 10),    // due at 130: last
        ];
        queue.sort_by(|a, b| order(a, b, &targets));
        let shown: Vec<(Priority, i64)> = queue
            .iter()
            .map(|p| (p.priority, (p.created_at - at(0)).num_minutes()))
            .collect();
        assert_eq!(
            shown,
            [
                (Priority::Urgent, 80),
                (Priority::High, 1),
                (Priority::Normal, -5),
                (Priority::Normal, 0),
                (Priority::Low, 10),
            ]
        );
    }

    #[test]
    fn the_skilled_person_of_the_region_with_most_spare_capacity_takes_it() {
        let people = [
            person("ana@d.example", &["camera"], &["north"], 0),
            person("bo@d.example", &["nvr"], &["south"], 0),
            person("cy@d.example", &["nvr", "camera"], &["north"], 1),
            person("di@d.example", &["nvr"], &["north"], 2),
        ];
        let picked = pick(&people, &needs(&["nvr"], Some("north")), None, None).unwrap();
        assert_eq!(people[picked.index].email, "cy@d.example");
        assert!(
            picked.reason.contains("with skill nvr in region north"),
            "{}",
            picked.reason
        );
        assert!(!picked.overflow);
        let anyone = pick(&people, &Needs::default(), None, None).unwrap();
        assert_eq!(
            people[anyone.index].email, "ana@d.example",
            "ties to the email"
        );
    }

    #[test]
    fn ties_go_to_the_longest_since_an_assignment_never_first() {
        let mut ana = person("ana@d.example", &[], &[], 0);
        let mut bo = person("bo@d.example", &[], &[], 0);
        let cy = person("cy@d.example", &[], &[], 0);
        ana.last_assigned_at = Some(at(5));
        bo.last_assigned_at = Some(at(1));
        let people = [ana.clone(), bo.clone(), cy];
        assert_eq!(
            pick(&people, &Needs::default(), None, None).unwrap().index,
            2
        );
        let people = [ana, bo];
        assert_eq!(
            pick(&people, &Needs::default(), None, None).unwrap().index,
            1
        );
    }

    #[test]
    fn no_regions_serve_every_region_and_any_level_counts() {
        let people = [person("ana@d.example", &["nvr"], &[], 0)];
        assert!(pick(&people, &needs(&["nvr"], Some("east")), None, None).is_ok());
        assert!(pick(&people, &needs(&["nvr", "ptz"], None), None, None).is_err());
    }

    #[test]
    fn nobody_says_why_in_words() {
        let north = needs(&["nvr"], Some("north"));
        assert_eq!(
            pick(&[], &north, None, None).unwrap_err(),
            "no one online with skill nvr in region north"
        );
        let people = [
            person("ana@d.example", &["nvr"], &["south"], 0),
            person("bo@d.example", &["ptz"], &["north"], 0),
        ];
        assert_eq!(
            pick(&people, &north, None, None).unwrap_err(),
            "no one online with skill nvr in region north"
        );
        let full = [person("ana@d.example", &["nvr"], &["north"], 3)];
        assert_eq!(
            pick(&full, &north, None, None).unwrap_err(),
            "everyone at capacity (1 online with skill nvr in region north)"
        );
        assert_eq!(
            pick(&full, &Needs::default(), None, None).unwrap_err(),
            "everyone at capacity"
        );
        assert_eq!(
            pick(&[], &needs(&["nvr", "lang:de"], None), None, None).unwrap_err(),
            "no one online with skills nvr, lang:de"
        );
    }

    #[test]
    fn a_moved_ticket_never_goes_back_to_whom_it_left() {
        let people = [
            person("ana@d.example", &[], &[], 0),
            person("bo@d.example", &[], &[], 2),
        ];
        let moved = pick(&people, &Needs::default(), Some("ana@d.example"), None).unwrap();
        assert_eq!(people[moved.index].email, "bo@d.example");
        let alone = [person("ana@d.example", &[], &[], 0)];
        assert_eq!(
            pick(&alone, &Needs::default(), Some("ana@d.example"), None).unwrap_err(),
            "no one online"
        );
    }

    #[test]
    fn overflow_relaxes_skills_for_its_team_only() {
        let mut fallback = person("fay@d.example", &[], &["north"], 0);
        fallback.team = Some("backstop".into());
        let people = [person("ana@d.example", &[], &["north"], 0), fallback];
        let north = needs(&["nvr"], Some("north"));
        let taken = pick(&people, &north, None, Some("backstop")).unwrap();
        assert_eq!(people[taken.index].email, "fay@d.example");
        assert!(taken.overflow);
        assert!(
            taken.reason.starts_with("overflow to team backstop"),
            "{}",
            taken.reason
        );
        let why = pick(
            &people,
            &needs(&["nvr"], Some("south")),
            None,
            Some("backstop"),
        )
        .unwrap_err();
        assert_eq!(
            why,
            "no one online with skill nvr in region south; overflow team backstop: no one online in region south"
        );
    }

    #[test]
    fn families_map_to_skills_or_are_their_own() {
        let map = FamilySkills::parse("Camera=camera, ptz = ptz:2,nvr=recorders").unwrap();
        assert_eq!(map.skill("camera").as_deref(), Some("camera"));
        assert_eq!(
            map.skill("PTZ").as_deref(),
            Some("ptz"),
            "the level is not asked"
        );
        assert_eq!(map.skill("nvr").as_deref(), Some("recorders"));
        assert_eq!(
            map.skill("Access Control").as_deref(),
            Some("access-control")
        );
        assert_eq!(map.skill("  ").as_deref(), None);
        assert_eq!(map.skill("✓").as_deref(), None);
        assert!(
            FamilySkills::parse("camera")
                .unwrap_err()
                .contains("family=skill")
        );
        assert!(FamilySkills::parse("camera=a b").is_err());
        assert!(
            FamilySkills::parse("a=x,A=y")
                .unwrap_err()
                .contains("twice")
        );
        assert_eq!(FamilySkills::parse("").unwrap(), FamilySkills::default());
        let needs = Needs::of(Some("NVR"), Some(" North "), &map);
        assert_eq!(needs.skills, ["recorders"]);
        assert_eq!(needs.region.as_deref(), Some("north"));
        assert_eq!(Needs::of(None, Some(""), &map), Needs::default());
    }
}
