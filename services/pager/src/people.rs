//! Who a schedule, an override or a level target names, and how they are
//! paged. People are the directory's (`dispatch`), copied here from its
//! `person.*` events and named by email; the pager's people from before
//! the directory stay named by their old name, and are paged as before,
//! until someone with their email is in the directory. Pure: the store
//! loads a [`Directory`].

use uuid::Uuid;

/// A directory person as the pager keeps them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Person {
    pub id: Uuid,
    pub name: String,
    /// Lower-case and unique in the directory: how the pager names them.
    pub email: String,
    pub phone: String,
    /// A deactivated person is never paged.
    pub active: bool,
    /// The pager's own setting: where their webhook pages go (empty: none).
    pub webhook_url: String,
}

/// One of the pager's people from before the directory.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Legacy {
    /// What schedules and levels named them by.
    pub name: String,
    /// Possibly empty, possibly not lower-case: typed before any rule.
    pub email: String,
    pub webhook_url: String,
    /// The directory person who took their email, once one did.
    pub adopted_by: Option<Uuid>,
}

/// What a name in a schedule or a level stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named<'a> {
    /// A directory person, and the legacy entry the name went through
    /// (whose webhook serves until they have one of their own).
    Person(&'a Person, Option<&'a Legacy>),
    /// A legacy person nobody in the directory has the email of yet.
    Legacy(&'a Legacy),
    Unknown,
}

/// How one person is paged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Who, in pages and `page.failed`: the email of a directory person,
    /// the old name of a legacy one.
    pub target: String,
    pub email: String,
    pub webhook_url: String,
}

/// Why a name cannot be put on a schedule or a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Deactivated(String),
    NotAdopted(String),
    Unknown(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deactivated(who) => write!(
                f,
                "{who} is deactivated in the directory and is never paged: name someone active"
            ),
            Self::NotAdopted(name) => write!(
                f,
                "{name:?} is one of the pager's people from before the directory: add them to \
                 it (`hotline people adopt-pager`, or `hotline people add`), then name them \
                 by email"
            ),
            Self::Unknown(name) => write!(
                f,
                "no one in the directory is {name:?}: name people by email or id, and add \
                 newcomers with `hotline people add --name N --email E --role agent`"
            ),
        }
    }
}

/// Everyone the pager can name.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub people: Vec<Person>,
    pub legacy: Vec<Legacy>,
}

impl Directory {
    /// `reference` is a directory person's email (any case) or id, or a
    /// legacy name. A legacy name stands for the directory person who
    /// adopted it or who has its email now (so a schedule needs no
    /// rewrite to follow an adoption the pager heard of late).
    pub fn find(&self, reference: &str) -> Named<'_> {
        let reference = reference.trim();
        if let Some(person) = self.by_email(reference).or_else(|| {
            let id = Uuid::parse_str(reference).ok()?;
            self.people.iter().find(|p| p.id == id)
        }) {
            return Named::Person(person, None);
        }
        let Some(legacy) = self.legacy.iter().find(|l| l.name == reference) else {
            return Named::Unknown;
        };
        let adopter = legacy
            .adopted_by
            .and_then(|id| self.people.iter().find(|p| p.id == id))
            .or_else(|| self.by_email(&legacy.email));
        match adopter {
            Some(person) => Named::Person(person, Some(legacy)),
            None => Named::Legacy(legacy),
        }
    }

    /// The active holder of `email` (case-blind), else the latest one.
    fn by_email(&self, email: &str) -> Option<&Person> {
        if email.is_empty() {
            return None;
        }
        let mut holders = self
            .people
            .iter()
            .filter(|p| p.email.eq_ignore_ascii_case(email));
        let first = holders.next()?;
        Some(if first.active {
            first
        } else {
            holders.find(|p| p.active).unwrap_or(first)
        })
    }

    /// The legacy people no directory person stands for yet: what
    /// `hotline people adopt-pager` has left to add.
    pub fn unadopted(&self) -> impl Iterator<Item = &Legacy> {
        self.legacy
            .iter()
            .filter(|l| matches!(self.find(&l.name), Named::Legacy(_)))
    }

    /// The email a schedule or a level stores for `reference`: only an
    /// active directory person can be put there.
    pub fn for_arrangement(&self, reference: &str) -> Result<String, Refusal> {
        match self.find(reference) {
            Named::Person(person, _) if person.active => Ok(person.email.clone()),
            Named::Person(person, _) => Err(Refusal::Deactivated(format!(
                "{} <{}>",
                person.name, person.email
            ))),
            Named::Legacy(legacy) => Err(Refusal::NotAdopted(legacy.name.clone())),
            Named::Unknown => Err(Refusal::Unknown(reference.trim().to_owned())),
        }
    }

    /// How `reference` is paged, or why they cannot be.
    pub fn contact(&self, reference: &str) -> Result<Contact, String> {
        match self.find(reference) {
            Named::Person(person, _) if !person.active => {
                Err(format!("{} is deactivated in the directory", person.email))
            }
            Named::Person(person, legacy) => Ok(Contact {
                target: person.email.clone(),
                email: person.email.clone(),
                webhook_url: if person.webhook_url.is_empty() {
                    legacy.map(|l| l.webhook_url.clone()).unwrap_or_default()
                } else {
                    person.webhook_url.clone()
                },
            }),
            Named::Legacy(legacy) => Ok(Contact {
                target: legacy.name.clone(),
                email: legacy.email.clone(),
                webhook_url: legacy.webhook_url.clone(),
            }),
            Named::Unknown => Err(format!("{reference} is not in the directory")),
        }
    }

    /// Who `reference` is, to say who is on call: their email, or nobody
    /// when they cannot be paged (deactivated, unknown).
    pub fn on_call(&self, reference: &str) -> Option<String> {
        self.contact(reference).ok().map(|c| c.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(n: u128, email: &str, active: bool) -> Person {
        Person {
            id: Uuid::from_u128(n),
            name: email.split('@').next().unwrap_or_default().to_owned(),
            email: email.to_owned(),
            phone: String::new(),
            active,
            webhook_url: String::new(),
        }
    }

    fn legacy(name: &str, email: &str, adopted_by: Option<u128>) -> Legacy {
        Legacy {
            name: name.to_owned(),
            email: email.to_owned(),
            webhook_url: format!("https://hooks.example/{name}"),
            adopted_by: adopted_by.map(Uuid::from_u128),
        }
    }

    fn directory() -> Directory {
        Directory {
            people: vec![
                person(1, "ana@desk.example", true),
                person(2, "bo@desk.example", false),
            ],
            legacy: vec![
                legacy("ana", "Ana@Desk.example", None),
                legacy("cy", "cy@desk.example", None),
                legacy("dee", "", None),
                legacy("bo", "bo@old.example", Some(2)),
            ],
        }
    }

    #[test]
    fn people_are_named_by_email_in_any_case_or_by_id() {
        let directory = directory();
        assert_eq!(
            directory.for_arrangement("ANA@desk.example ").unwrap(),
            "ana@desk.example"
        );
        assert_eq!(
            directory
                .for_arrangement(&Uuid::from_u128(1).to_string())
                .unwrap(),
            "ana@desk.example"
        );
    }

    #[test]
    fn a_legacy_name_stands_for_whoever_has_its_email_or_adopted_it() {
        let directory = directory();
        // Linked lazily by email, its webhook kept until they set their own.
        let contact = directory.contact("ana").unwrap();
        assert_eq!(contact.target, "ana@desk.example");
        assert_eq!(contact.webhook_url, "https://hooks.example/ana");
        assert_eq!(
            directory.for_arrangement("ana").unwrap(),
            "ana@desk.example"
        );
        // Not adopted yet: paged as before, but not put on anything new.
        assert_eq!(directory.contact("cy").unwrap().target, "cy");
        assert_eq!(
            directory.for_arrangement("cy"),
            Err(Refusal::NotAdopted("cy".into()))
        );
        let left: Vec<&str> = directory.unadopted().map(|l| l.name.as_str()).collect();
        assert_eq!(left, ["cy", "dee"]);
    }

    #[test]
    fn a_deactivated_person_is_never_paged_nor_arranged_nor_on_call() {
        let directory = directory();
        assert!(
            directory
                .contact("bo@desk.example")
                .unwrap_err()
                .contains("deactivated")
        );
        // Through their adopted legacy name too.
        assert!(directory.contact("bo").is_err());
        assert!(matches!(
            directory.for_arrangement("bo"),
            Err(Refusal::Deactivated(_))
        ));
        assert_eq!(directory.on_call("bo"), None);
        assert_eq!(directory.on_call("ana"), Some("ana@desk.example".into()));
    }

    #[test]
    fn strangers_are_refused_saying_how_to_add_them() {
        let refusal = directory().for_arrangement("zed").unwrap_err();
        assert!(
            refusal.to_string().contains("hotline people add"),
            "{refusal}"
        );
    }
}
