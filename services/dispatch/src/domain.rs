//! The directory's rules, pure: a person's roles, skills with levels,
//! regions, capacity, home base and time zone; what a partial update
//! changes; and presence, stated and effective.
//!
//! Text arrives here already checked by `hotline_kit::input` (trimmed, one
//! line, no NUL, bounded): these functions judge structure, not bytes.

use std::{collections::BTreeMap, fmt, str::FromStr};

use hotline_kit::auth::Role;

/// Capacity when none is given: awaiting tickets a person handles at once.
pub const DEFAULT_CAPACITY: u32 = 10;
/// The most awaiting tickets anyone is given at once.
pub const MAX_CAPACITY: u32 = 1000;
/// Skill levels run from basic to expert.
pub const MAX_LEVEL: u8 = 5;
/// Skills and regions one person may have.
pub const MAX_SKILLS: usize = 100;
pub const MAX_REGIONS: usize = 100;
/// A skill's name, segments and colons included.
pub const MAX_SKILL_CHARS: usize = 50;

/// The roles a person of the desk can have: the kit's roles but `bridge`,
/// which names machines.
pub const PERSON_ROLES: [Role; 5] = [
    Role::Agent,
    Role::Technician,
    Role::Dispatcher,
    Role::Manager,
    Role::Admin,
];

/// A person's role, by its name; `bridge` and unknown names are refused.
pub fn role(text: &str) -> Result<Role, String> {
    let names = || {
        PERSON_ROLES
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = text.trim().to_lowercase();
    match text.parse::<Role>() {
        Ok(role) if PERSON_ROLES.contains(&role) => Ok(role),
        _ => Err(format!("unknown role {text:?}: use {}", names())),
    }
}

/// Roles, at least one, each once, in the order of [`PERSON_ROLES`].
pub fn roles<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Role>, String> {
    let mut roles = Vec::new();
    for text in texts
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| !t.trim().is_empty())
    {
        let role = role(text)?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(
            "give at least one role: agent, technician, dispatcher, manager or admin".into(),
        );
    }
    roles.sort_by_key(|r| PERSON_ROLES.iter().position(|p| p == r));
    Ok(roles)
}

/// A skill and how well the person has it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skill {
    /// Lower-case segments of `[a-z0-9_-]` joined by `:` (`nvr`, `lang:de`).
    pub name: String,
    /// 1 (basic) to [`MAX_LEVEL`] (expert).
    pub level: u8,
}

impl fmt::Display for Skill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.level)
    }
}

impl FromStr for Skill {
    type Err = String;

    /// `name[:level]`: the last `:`-segment, when it is all digits, is the
    /// level (`nvr:3`); otherwise the whole text is the name at level 1
    /// (`lang:de`, `nvr`). `lang:de:2` is `lang:de` at level 2. Case is
    /// folded: `NVR:3` is `nvr:3`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_lowercase();
        let (name, level) = match text.rsplit_once(':') {
            Some((name, level))
                if !level.is_empty() && level.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let level = level
                    .parse::<u8>()
                    .ok()
                    .filter(|l| (1..=MAX_LEVEL).contains(l))
                    .ok_or_else(|| {
                        format!("skill {text:?}: the level must be 1 to {MAX_LEVEL}, like nvr:3")
                    })?;
                (name, level)
            }
            _ => (text.as_str(), 1),
        };
        let segment = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if name.chars().count() > MAX_SKILL_CHARS || !name.split(':').all(segment) {
            return Err(format!(
                "skill {text:?} is not a skill: write name or name:level, the name of \
                 a-z, 0-9, _ and - (segments joined by ':', like lang:de), at most \
                 {MAX_SKILL_CHARS} characters, the level 1 to {MAX_LEVEL}, like nvr:3"
            ));
        }
        Ok(Skill {
            name: name.to_owned(),
            level,
        })
    }
}

/// Skills from their texts, each named once, sorted by name; blank texts
/// are skipped.
pub fn skills<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Skill>, String> {
    let mut by_name = BTreeMap::new();
    for text in texts
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| !t.trim().is_empty())
    {
        let skill: Skill = text.parse()?;
        if by_name.insert(skill.name.clone(), skill.level).is_some() {
            return Err(format!(
                "skill {} is given twice: give each skill once, with one level",
                skill.name
            ));
        }
    }
    if by_name.len() > MAX_SKILLS {
        return Err(format!("give at most {MAX_SKILLS} skills"));
    }
    Ok(by_name
        .into_iter()
        .map(|(name, level)| Skill { name, level })
        .collect())
}

/// Regions as keys to match tickets' regions by: lower-cased, each once,
/// sorted; blank ones skipped.
pub fn regions<S: AsRef<str>>(texts: &[S]) -> Result<Vec<String>, String> {
    let mut regions: Vec<String> = texts
        .iter()
        .map(|t| t.as_ref().trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    regions.sort();
    regions.dedup();
    if regions.len() > MAX_REGIONS {
        return Err(format!("give at most {MAX_REGIONS} regions"));
    }
    Ok(regions)
}

pub fn capacity(value: u32) -> Result<u32, String> {
    if value > MAX_CAPACITY {
        return Err(format!(
            "capacity {value} is too high: give 0 to {MAX_CAPACITY} awaiting tickets at once"
        ));
    }
    Ok(value)
}

/// A home base: both coordinates or neither, on the globe.
pub fn home(lat: Option<f64>, lng: Option<f64>) -> Result<Option<(f64, f64)>, String> {
    match (lat, lng) {
        (None, None) => Ok(None),
        (Some(lat), Some(lng))
            if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng) =>
        {
            Ok(Some((lat, lng)))
        }
        (Some(_), Some(_)) => {
            Err("home_lat must be between -90 and 90 and home_lng between -180 and 180".into())
        }
        _ => Err("give both home_lat and home_lng, or neither".into()),
    }
}

/// An IANA time zone by its canonical name (`europe/berlin` is refused:
/// chrono-tz knows names as IANA writes them).
pub fn time_zone(text: &str) -> Result<String, String> {
    text.trim()
        .parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_owned())
        .map_err(|_| {
            format!(
                "{text:?} is not a time zone: write an IANA name, like Europe/Berlin or Asia/Shanghai"
            )
        })
}

/// What a person is, as stored: every field a manager edits.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Lower-case (the kit's email rule).
    pub email: String,
    /// E.164.
    pub phone: Option<String>,
    /// At least one, in the order of [`PERSON_ROLES`].
    pub roles: Vec<Role>,
    pub team: Option<String>,
    /// Sorted by name, each once.
    pub skills: Vec<Skill>,
    /// Lower-case, sorted, each once.
    pub regions: Vec<String>,
    pub capacity: u32,
    pub home: Option<(f64, f64)>,
    pub time_zone: Option<String>,
}

impl Profile {
    /// The rules across fields: a technician is planned from a home base,
    /// in their own hours, so they need both.
    pub fn check(&self) -> Result<(), String> {
        if self.roles.is_empty() {
            return Err("give at least one role".into());
        }
        if self.roles.contains(&Role::Technician)
            && (self.home.is_none() || self.time_zone.is_none())
        {
            return Err(
                "a technician needs a home base (home_lat and home_lng) and a time zone: \
                 visits are planned from where they start and in their hours"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub name: Option<String>,
    pub email: Option<String>,
    /// `Some(None)` removes the phone.
    pub phone: Option<Option<String>>,
    pub roles: Option<Vec<Role>>,
    pub team: Option<Option<String>>,
    pub skills: Option<Vec<Skill>>,
    pub regions: Option<Vec<String>>,
    pub capacity: Option<u32>,
    /// `Some(None)` removes the home base.
    pub home: Option<Option<(f64, f64)>>,
    pub time_zone: Option<Option<String>>,
}

impl Change {
    /// `profile` with this change applied, checked as a whole.
    pub fn apply(self, profile: &Profile) -> Result<Profile, String> {
        let changed = Profile {
            name: self.name.unwrap_or_else(|| profile.name.clone()),
            email: self.email.unwrap_or_else(|| profile.email.clone()),
            phone: self.phone.unwrap_or_else(|| profile.phone.clone()),
            roles: self.roles.unwrap_or_else(|| profile.roles.clone()),
            team: self.team.unwrap_or_else(|| profile.team.clone()),
            skills: self.skills.unwrap_or_else(|| profile.skills.clone()),
            regions: self.regions.unwrap_or_else(|| profile.regions.clone()),
            capacity: self.capacity.unwrap_or(profile.capacity),
            home: self.home.unwrap_or(profile.home),
            time_zone: self.time_zone.unwrap_or_else(|| profile.time_zone.clone()),
        };
        changed.check()?;
        Ok(changed)
    }
}

/// What a person says they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Away,
    Offline,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }

    /// What the person is: what they said while their heartbeat is alive,
    /// else offline.
    pub fn effective(self, alive: bool) -> Presence {
        if alive { self } else { Presence::Offline }
    }
}

impl FromStr for Presence {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "online" => Ok(Presence::Online),
            "away" => Ok(Presence::Away),
            "offline" => Ok(Presence::Offline),
            other => Err(format!(
                "unknown presence {other:?}: online, away or offline"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(text: &str) -> Result<Skill, String> {
        text.parse()
    }

    #[test]
    fn a_skill_is_a_name_and_a_level_one_by_default() {
        assert_eq!(
            skill("nvr:3").unwrap(),
            Skill {
                name: "nvr".into(),
                level: 3
            }
        );
        assert_eq!(
            skill(" NVR:3 ").unwrap(),
            Skill {
                name: "nvr".into(),
                level: 3
            }
        );
        assert_eq!(
            skill("ptz").unwrap(),
            Skill {
                name: "ptz".into(),
                level: 1
            }
        );
        assert_eq!(
            skill("lang:de").unwrap(),
            Skill {
                name: "lang:de".into(),
                level: 1
            }
        );
        assert_eq!(
            skill("lang:de:2").unwrap(),
            Skill {
                name: "lang:de".into(),
                level: 2
            }
        );
        assert_eq!(skill("model_x-2:5").unwrap().to_string(), "model_x-2:5");
    }

    #[test]
    fn bad_skills_are_refused_saying_how_to_write_one() {
        for bad in ["nvr:0", "nvr:6", "nvr:99999999999", "lang:de:7"] {
            let why = skill(bad).unwrap_err();
            assert!(why.contains("level must be 1 to 5"), "{bad}: {why}");
        }
        for bad in [
            "",
            ":3",
            "nvr:",
            "n v r",
            "nvr::de",
            "nvr;3",
            "kamera✓",
            "a/b",
            &"x".repeat(51),
        ] {
            let why = skill(bad).unwrap_err();
            assert!(why.contains("write name or name:level"), "{bad}: {why}");
        }
    }

    #[test]
    fn skills_are_sorted_and_each_given_once() {
        let listed = skills(&["ptz:2", "", "lang:de", "nvr:3"]).unwrap();
        let shown: Vec<String> = listed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["lang:de:1", "nvr:3", "ptz:2"]);
        let twice = skills(&["nvr:3", "NVR:2"]).unwrap_err();
        assert!(twice.contains("nvr is given twice"), "{twice}");
        let many: Vec<String> = (0..=MAX_SKILLS).map(|i| format!("s{i}")).collect();
        assert!(skills(&many).is_err());
    }

    #[test]
    fn roles_are_the_desks_and_at_least_one() {
        assert_eq!(
            roles(&["manager", "Agent", "agent"]).unwrap(),
            [Role::Agent, Role::Manager]
        );
        assert!(
            roles::<&str>(&[])
                .unwrap_err()
                .contains("at least one role")
        );
        assert!(roles(&[" "]).is_err());
        let bridge = roles(&["bridge"]).unwrap_err();
        assert!(bridge.contains("unknown role \"bridge\""), "{bridge}");
        assert!(
            roles(&["pilot"])
                .unwrap_err()
                .contains("use agent, technician")
        );
    }

    #[test]
    fn regions_are_keys_lower_cased_once() {
        assert_eq!(
            regions(&["North", "south", "north ", ""]).unwrap(),
            ["north", "south"]
        );
    }

    #[test]
    fn capacity_home_and_zone_are_checked() {
        assert_eq!(capacity(0), Ok(0));
        assert_eq!(capacity(1000), Ok(1000));
        assert!(capacity(1001).unwrap_err().contains("0 to 1000"));
        assert_eq!(home(Some(52.5), Some(13.4)), Ok(Some((52.5, 13.4))));
        assert_eq!(home(None, None), Ok(None));
        assert!(home(Some(52.5), None).unwrap_err().contains("both"));
        assert!(home(Some(91.0), Some(0.0)).is_err());
        assert!(home(Some(f64::NAN), Some(0.0)).is_err());
        assert_eq!(time_zone(" Europe/Berlin ").unwrap(), "Europe/Berlin");
        assert!(time_zone("Mars/Olympus").is_err());
    }

    fn agent() -> Profile {
        Profile {
            name: "Ana".into(),
            email: "ana@desk.example".into(),
            phone: None,
            roles: vec![Role::Agent],
            team: Some("first line".into()),
            skills: vec![],
            regions: vec!["north".into()],
            capacity: DEFAULT_CAPACITY,
            home: None,
            time_zone: None,
        }
    }

    #[test]
    fn a_change_touches_only_what_it_names() {
        let ana = agent();
        let changed = Change {
            capacity: Some(3),
            team: Some(None),
            ..Change::default()
        }
        .apply(&ana)
        .unwrap();
        assert_eq!(changed.capacity, 3);
        assert_eq!(changed.team, None);
        assert_eq!(changed.regions, ana.regions);
        assert_eq!(changed.name, ana.name);
        assert_eq!(Change::default().apply(&ana).unwrap(), ana);
    }

    #[test]
    fn a_technician_needs_a_home_base_and_a_time_zone() {
        let ana = agent();
        let becoming = Change {
            roles: Some(vec![Role::Technician]),
            ..Change::default()
        };
        let why = becoming.clone().apply(&ana).unwrap_err();
        assert!(why.contains("home base"), "{why}");
        let placed = Change {
            home: Some(Some((52.5, 13.4))),
            time_zone: Some(Some("Europe/Berlin".into())),
            ..becoming
        };
        let tech = placed.apply(&ana).unwrap();
        let homeless = Change {
            home: Some(None),
            ..Change::default()
        };
        assert!(
            homeless.apply(&tech).is_err(),
            "a technician keeps a home base"
        );
    }

    #[test]
    fn presence_holds_only_while_the_heartbeat_lives() {
        assert_eq!(Presence::Online.effective(true), Presence::Online);
        assert_eq!(Presence::Away.effective(true), Presence::Away);
        assert_eq!(Presence::Online.effective(false), Presence::Offline);
        assert_eq!("away".parse(), Ok(Presence::Away));
        assert!("busy".parse::<Presence>().is_err());
    }
}
