//! A new ticket's entitlement: whom it is for and what covers it, from who
//! wrote it (its contact) and the known serials its subject or first
//! article names (ARCHITECTURE §12, `ticket.created` → `entitlement.resolved`).
//!
//! [`resolve`] asks the store, for all the tickets waiting together, who
//! holds their contacts and which of the serials they name are known (two
//! indexed queries), and for each branch or customer that a contact alone
//! speaks for, its assets (one more each); [`decide`] applies the rules,
//! pure:
//!
//! - a serial the ticket names pins its asset, its project and its
//!   customer, whether the sender is known or not;
//! - a contact (or a branch's notice address, or a customer's own) names
//!   its customer; its branch's assets (else its customer's) are what the
//!   ticket may be about;
//! - a serial of another customer than the contact's is reported in the
//!   reason and not taken: the contact says whom the desk is talking to,
//!   and anyone can type a serial (a forwarded mail, a typo);
//! - where the keys point at several customers and nothing settles it, the
//!   answer is ambiguous and lists them; nothing is guessed;
//! - nobody known: coverage `none`, "unknown sender".
//!
//! Coverage is on the day the ticket was opened, where each asset is.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use hotline_kit::phone;
use uuid::Uuid;

use crate::{
    domain::{self, Coverage, CoverageOn},
    store::{self, Asset, Holder, Key, StoreError},
};

/// What a new ticket says about whom it is from and what it is about.
#[derive(Debug, Clone, Copy)]
pub struct Ticket<'a> {
    /// An email address or a phone number, as the ticket has it.
    pub contact: &'a str,
    pub subject: &'a str,
    /// The first article's body.
    pub body: &'a str,
    pub opened_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// One customer.
    Found,
    /// Nobody known.
    Unknown,
    /// Several customers, none settled: see the candidates.
    Ambiguous,
}

/// A customer the ticket may be for, and how it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub customer_id: Uuid,
    pub customer: String,
    /// "contact Ann Lee", "branch Berlin notice email", "customer",
    /// "serial CAM-1".
    pub via: String,
}

/// The answer, as `entitlement.resolved` carries it.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub matched: Match,
    pub customer: Option<(Uuid, String)>,
    /// Id, name, region; set when the assets concerned are in one branch
    /// (or the contact's branch has none).
    pub branch: Option<(Uuid, String, String)>,
    /// Set when the assets concerned are in one project.
    pub project: Option<(Uuid, String)>,
    /// Set when the ticket concerns one asset.
    pub asset: Option<Asset>,
    pub coverage: Coverage,
    pub covered_until: Option<NaiveDate>,
    pub reason: String,
    pub candidates: Vec<Candidate>,
    /// The known serials the ticket names, in the order it names them.
    pub serials: Vec<String>,
}

impl Resolution {
    fn nobody(matched: Match, reason: String) -> Self {
        Self {
            matched,
            customer: None,
            branch: None,
            project: None,
            asset: None,
            coverage: Coverage::None,
            covered_until: None,
            reason,
            candidates: Vec::new(),
            serials: Vec::new(),
        }
    }
}

/// The key a ticket's contact is looked up by: a mail address
/// (`Ann <ann@acme.example>` too), lower-cased, or a number in E.164 by the
/// rule intake and the directory use. `None` when it is neither.
pub fn contact_key(contact: &str, country_code: &str) -> Option<Key> {
    let contact = contact.trim();
    if contact.is_empty() {
        return None;
    }
    if contact.contains('@') {
        let address = match (contact.rfind('<'), contact.rfind('>')) {
            (Some(open), Some(close)) if open < close => &contact[open + 1..close],
            _ => contact,
        };
        return domain::email(address).ok().map(Key::Email);
    }
    phone::normalise(contact, country_code).map(Key::Phone)
}

/// Resolves `tickets` (those waiting together) in a few indexed queries
/// for all of them on `conn`: who holds their senders' keys, which of the
/// serials they name are known, and the assets of each branch or customer
/// that a sender alone speaks for (once per batch).
pub async fn resolve(
    conn: &mut sqlx::PgConnection,
    country_code: &str,
    tickets: &[Ticket<'_>],
) -> Result<Vec<Resolution>, StoreError> {
    let keys: Vec<Option<Key>> = tickets
        .iter()
        .map(|t| contact_key(t.contact, country_code))
        .collect();
    let mut distinct: Vec<Key> = keys.iter().flatten().cloned().collect();
    distinct.sort_by(|a, b| a.value().cmp(b.value()));
    distinct.dedup();
    let held = store::holders_of(conn, &distinct).await?;
    let words: Vec<Vec<String>> = tickets
        .iter()
        .map(|t| domain::serial_candidates(&[t.subject, t.body]))
        .collect();
    let mut all: Vec<String> = words.concat();
    all.sort_unstable();
    all.dedup();
    let known = store::assets_by_serials(conn, &all).await?;
    let by_serial: HashMap<String, &Asset> = known
        .iter()
        .map(|a| (a.serial.to_ascii_uppercase(), a))
        .collect();
    let mut scopes = HashMap::new();
    let mut answers = Vec::with_capacity(tickets.len());
    for ((ticket, key), words) in tickets.iter().zip(&keys).zip(&words) {
        let holders: Vec<Holder> = match key {
            Some(key) => held
                .iter()
                .filter(|(held, _)| held == key.value())
                .map(|(_, holder)| holder.clone())
                .collect(),
            None => Vec::new(),
        };
        // In the order the ticket names them.
        let named: Vec<Asset> = words
            .iter()
            .filter_map(|w| by_serial.get(w).map(|a| (*a).clone()))
            .collect();
        answers.push(answer(conn, key.as_ref(), &holders, &named, ticket, &mut scopes).await?);
    }
    Ok(answers)
}

/// The assets a sender alone speaks for: a branch's, or a customer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Branch(Uuid),
    Customer(Uuid),
}

/// One ticket's answer, from who holds its sender's key and the known
/// assets it names; a scope is read once per batch (`scopes`).
async fn answer(
    conn: &mut sqlx::PgConnection,
    key: Option<&Key>,
    holders: &[Holder],
    named: &[Asset],
    ticket: &Ticket<'_>,
    scopes: &mut HashMap<Scope, Vec<Asset>>,
) -> Result<Resolution, StoreError> {
    let sender = key.map(|k| k.value().to_owned()).unwrap_or_default();
    let mut resolution = match decide(holders, named) {
        Decision::Unknown => Resolution::nobody(Match::Unknown, "unknown sender".into()),
        Decision::Ambiguous(candidates) => {
            let mut customers: Vec<&str> = Vec::new();
            for candidate in &candidates {
                if !customers.contains(&candidate.customer.as_str()) {
                    customers.push(&candidate.customer);
                }
            }
            let why = if named.is_empty() {
                format!(
                    "{sender} belongs to {} customers ({}): ask the caller which one",
                    customers.len(),
                    customers.join(", ")
                )
            } else {
                format!(
                    "the ticket points at {} customers ({}): ask the caller which one",
                    customers.len(),
                    customers.join(", ")
                )
            };
            Resolution {
                candidates,
                ..Resolution::nobody(Match::Ambiguous, why)
            }
        }
        Decision::Named {
            assets,
            holder,
            shared,
            foreign,
        } => {
            let mut answer = summary(&assets, ticket.opened_at, Whose::Named);
            answer.reason.push_str(&match (holder, shared) {
                (Some(h), false) => format!("; sent by {}", via(h)),
                (Some(h), true) => format!(
                    "; {sender} is shared by several customers: the serial settles it ({})",
                    via(h)
                ),
                (None, _) if sender.is_empty() => "; the sender is not known".into(),
                (None, _) => format!("; the sender {sender} is not known"),
            });
            answer.reason.push_str(&not_taken(&foreign));
            answer
        }
        Decision::Contact { holders, foreign } => {
            let Some(first) = holders.first().copied() else {
                return Err(StoreError::Invalid("a contact without its holder".into()));
            };
            let mut branches: Vec<Uuid> = holders.iter().filter_map(|h| h.branch_id).collect();
            branches.sort_unstable();
            branches.dedup();
            let (scope, whose) = match branches.as_slice() {
                [branch] => (
                    Scope::Branch(*branch),
                    format!(
                        "{} {}",
                        first.customer,
                        holders
                            .iter()
                            .find_map(|h| h.branch.as_deref())
                            .unwrap_or_default()
                    ),
                ),
                _ => (Scope::Customer(first.customer_id), first.customer.clone()),
            };
            let assets = match scopes.get(&scope) {
                Some(assets) => assets.clone(),
                None => {
                    let assets = match scope {
                        Scope::Branch(id) => store::branch_assets(conn, id).await?,
                        Scope::Customer(id) => store::customer_assets(conn, id).await?,
                    };
                    scopes.insert(scope, assets.clone());
                    assets
                }
            };
            let mut answer = summary(&assets, ticket.opened_at, Whose::Contact(&whose));
            answer.customer = Some((first.customer_id, first.customer.clone()));
            if answer.branch.is_none()
                && let Scope::Branch(branch) = scope
                && let Some(holder) = holders.iter().find(|h| h.branch_id == Some(branch))
            {
                answer.branch = Some((
                    branch,
                    holder.branch.clone().unwrap_or_default(),
                    holder.region.clone().unwrap_or_default(),
                ));
            }
            answer.reason = format!("{sender} is {}; {}", via(first), answer.reason);
            answer.reason.push_str(&not_taken(&foreign));
            answer
        }
    };
    resolution.serials = named.iter().map(|a| a.serial.clone()).collect();
    Ok(resolution)
}

/// Which customer the keys point at, before any asset is summed up.
#[derive(Debug)]
pub enum Decision<'a> {
    Unknown,
    Ambiguous(Vec<Candidate>),
    /// The ticket names assets of one customer: they are what it is about.
    Named {
        assets: Vec<&'a Asset>,
        /// The sender, when it is that customer's (the most specific holder).
        holder: Option<&'a Holder>,
        /// The sender's key is held by several customers; the serial chose.
        shared: bool,
        /// Named assets of other customers: reported, not taken.
        foreign: Vec<&'a Asset>,
    },
    /// Only the sender speaks: its customer, through its most specific
    /// holders (all of one rank).
    Contact {
        holders: Vec<&'a Holder>,
        foreign: Vec<&'a Asset>,
    },
}

/// The rules of the module's doc, over who holds the sender's key and the
/// known assets the ticket names (in the order it names them).
pub fn decide<'a>(holders: &'a [Holder], named: &'a [Asset]) -> Decision<'a> {
    let held = customers(holders.iter().map(|h| h.customer_id));
    let cited = customers(named.iter().map(|a| a.customer_id));
    let common: Vec<Uuid> = cited.iter().copied().filter(|c| held.contains(c)).collect();
    let of = |customer: Uuid| -> (Vec<&'a Asset>, Vec<&'a Asset>) {
        named.iter().partition(|a| a.customer_id == customer)
    };
    match (held.as_slice(), cited.as_slice(), common.as_slice()) {
        ([], [], _) => Decision::Unknown,
        ([], [one], _) => Decision::Named {
            assets: of(*one).0,
            holder: None,
            shared: false,
            foreign: Vec::new(),
        },
        (_, _, [one]) => {
            let (assets, foreign) = of(*one);
            Decision::Named {
                assets,
                holder: most_specific(holders, *one).first().copied(),
                shared: held.len() > 1,
                foreign,
            }
        }
        ([one], _, []) => Decision::Contact {
            holders: most_specific(holders, *one),
            foreign: named.iter().collect(),
        },
        _ => {
            let mut candidates: Vec<Candidate> = holders
                .iter()
                .map(|h| Candidate {
                    customer_id: h.customer_id,
                    customer: h.customer.clone(),
                    via: match h.kind.as_str() {
                        "contact" => format!("contact {}", h.name),
                        "branch" => format!("branch {} notice email", h.name),
                        _ => "customer".into(),
                    },
                })
                .chain(named.iter().map(|a| Candidate {
                    customer_id: a.customer_id,
                    customer: a.customer.clone(),
                    via: format!("serial {}", a.serial),
                }))
                .collect();
            candidates.dedup();
            Decision::Ambiguous(candidates)
        }
    }
}

/// Distinct customers, in the order first seen.
fn customers(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen = Vec::new();
    for id in ids {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen
}

/// `customer`'s holders of the most specific kind present: contacts, else
/// branches' notice addresses, else the customer's own.
fn most_specific(holders: &[Holder], customer: Uuid) -> Vec<&Holder> {
    let rank = |h: &Holder| match h.kind.as_str() {
        "contact" => 0,
        "branch" => 1,
        _ => 2,
    };
    let own = holders.iter().filter(|h| h.customer_id == customer);
    let best = own.clone().map(rank).min().unwrap_or(2);
    own.filter(|h| rank(h) == best).collect()
}

/// How a holder holds the key, in a reason's words.
fn via(holder: &Holder) -> String {
    match holder.kind.as_str() {
        "contact" => format!("contact {} of {}", holder.name, holder.customer),
        "branch" => format!(
            "the notice address of {}'s branch {}",
            holder.customer, holder.name
        ),
        _ => format!("{}'s own", holder.customer),
    }
}

/// Why named assets of other customers were not taken.
fn not_taken(foreign: &[&Asset]) -> String {
    foreign
        .iter()
        .map(|a| {
            format!(
                "; {} named in the ticket is {}'s: not taken",
                a.serial, a.customer
            )
        })
        .collect()
}

/// An asset's coverage on the day `at` falls on where its project is.
fn coverage_of(asset: &Asset, at: DateTime<Utc>) -> CoverageOn<Uuid> {
    let on = match asset.time_zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at.with_timezone(&tz).date_naive(),
        Err(_) => at.date_naive(),
    };
    let months = u32::try_from(asset.warranty_months).unwrap_or(domain::DEFAULT_WARRANTY_MONTHS);
    match domain::warranty_until(asset.accepted_on, months) {
        Some(until) => domain::coverage_on(on, until, &asset.terms),
        None => CoverageOn {
            coverage: Coverage::None,
            until: None,
            contract: None,
            reason: "the warranty cannot be computed from the acceptance date".into(),
        },
    }
}

/// Where the assets being summed up come from, for the reason's words.
enum Whose<'a> {
    /// Named in the ticket.
    Named,
    /// The contact's branch or customer, as named here.
    Contact(&'a str),
}

/// The most assets a reason names one by one.
const NAMED_IN_REASON: usize = 5;

/// What `assets` (all of one customer) come to: the best coverage among
/// them and until when, their branch, project and asset when they share
/// one, and why in words. The customer is theirs, when there are any.
fn summary<A: std::borrow::Borrow<Asset>>(
    assets: &[A],
    opened_at: DateTime<Utc>,
    whose: Whose<'_>,
) -> Resolution {
    let assets: Vec<&Asset> = assets.iter().map(|a| a.borrow()).collect();
    let covered: Vec<CoverageOn<Uuid>> = assets.iter().map(|a| coverage_of(a, opened_at)).collect();
    let best = covered
        .iter()
        .map(|c| c.coverage)
        .max()
        .unwrap_or(Coverage::None);
    let covered_until = covered
        .iter()
        .filter(|c| c.coverage == best)
        .filter_map(|c| c.until)
        .max();
    let shared = |key: fn(&Asset) -> Uuid| -> Option<&Asset> {
        let first: &Asset = assets.first()?;
        assets.iter().all(|a| key(a) == key(first)).then_some(first)
    };
    let reason = match (&whose, assets.as_slice()) {
        (Whose::Contact(whose), []) => format!("no assets are recorded for {whose}"),
        (Whose::Named, [one]) => format!(
            "serial {} ({}) named in the ticket: {}",
            one.serial, one.model, covered[0].reason
        ),
        (Whose::Contact(_), [one]) => {
            format!("{} ({}): {}", one.serial, one.model, covered[0].reason)
        }
        (_, many) => {
            let count = |kind| covered.iter().filter(|c| c.coverage == kind).count();
            let listed: Vec<String> = many
                .iter()
                .zip(&covered)
                .take(NAMED_IN_REASON)
                .map(|(a, c)| match c.until {
                    Some(until) => format!("{} {} until {until}", a.serial, c.coverage.as_str()),
                    None => format!("{} {}", a.serial, c.coverage.as_str()),
                })
                .collect();
            let more = many.len().saturating_sub(NAMED_IN_REASON);
            let whose = match &whose {
                Whose::Named => format!("the ticket names {} assets", many.len()),
                Whose::Contact(whose) if many.len() as i64 >= store::MAX_ASSETS => {
                    format!("{whose} has {} assets or more", many.len())
                }
                Whose::Contact(whose) => format!("{whose} has {} assets", many.len()),
            };
            format!(
                "{whose}: {} in warranty, {} under contract, {} not covered ({}{})",
                count(Coverage::Warranty),
                count(Coverage::Contract),
                count(Coverage::None),
                listed.join(", "),
                if more > 0 {
                    format!(", {more} more")
                } else {
                    String::new()
                }
            )
        }
    };
    Resolution {
        matched: Match::Found,
        customer: assets.first().map(|a| (a.customer_id, a.customer.clone())),
        branch: shared(|a| a.branch_id).map(|a| (a.branch_id, a.branch.clone(), a.region.clone())),
        project: shared(|a| a.project_id).map(|a| (a.project_id, a.project.clone())),
        asset: match assets.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        },
        coverage: best,
        covered_until,
        reason,
        candidates: Vec::new(),
        serials: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(customer: u128, kind: &str, name: &str, branch: Option<u128>) -> Holder {
        Holder {
            customer_id: Uuid::from_u128(customer),
            customer: format!("Customer{customer}"),
            kind: kind.into(),
            contact_id: (kind == "contact").then(Uuid::now_v7),
            branch_id: branch.map(Uuid::from_u128),
            name: name.into(),
            branch: branch.map(|b| format!("Branch{b}")),
            region: branch.map(|_| "north".into()),
        }
    }

    fn asset(customer: u128, serial: &str, accepted_on: &str) -> Asset {
        Asset {
            id: Uuid::now_v7(),
            serial: serial.into(),
            model: "DS-2CD2143".into(),
            family: "camera".into(),
            project_id: Uuid::from_u128(customer * 100),
            project: "HQ".into(),
            customer_id: Uuid::from_u128(customer),
            customer: format!("Customer{customer}"),
            branch_id: Uuid::from_u128(customer * 10),
            branch: "Berlin".into(),
            region: "north".into(),
            price_cents: 100_000,
            currency: "EUR".into(),
            firmware: String::new(),
            accepted_on: domain::date(accepted_on, "accepted").unwrap(),
            warranty_months: 12,
            time_zone: "Europe/Berlin".into(),
            lat: None,
            lng: None,
            terms: Vec::new(),
        }
    }

    fn via_list(decision: &Decision<'_>) -> Vec<String> {
        match decision {
            Decision::Ambiguous(candidates) => candidates
                .iter()
                .map(|c| format!("{}: {}", c.customer, c.via))
                .collect(),
            other => panic!("not ambiguous: {other:?}"),
        }
    }

    #[test]
    fn contact_keys_are_normalised_like_the_directory() {
        assert_eq!(
            contact_key(" Ann <Ann@Acme.Example> ", ""),
            Some(Key::Email("ann@acme.example".into()))
        );
        assert_eq!(
            contact_key("030 1234567", "49"),
            Some(Key::Phone("+49301234567".into()))
        );
        assert_eq!(contact_key("030 1234567", ""), None, "no country code");
        for nobody in [
            "",
            "  ",
            "customer",
            "ann@",
            "\0@\0",
            "+49 30 12\u{1b}34567",
        ] {
            assert_eq!(contact_key(nobody, "49"), None, "{nobody:?}");
        }
    }

    #[test]
    fn nobody_known_is_unknown_and_a_named_serial_pins_its_customer() {
        assert!(matches!(decide(&[], &[]), Decision::Unknown));
        let named = [asset(1, "CAM-1", "2025-01-01")];
        match decide(&[], &named) {
            Decision::Named {
                assets,
                holder: None,
                foreign,
                ..
            } => {
                assert_eq!(assets.len(), 1);
                assert!(foreign.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_most_specific_holder_speaks_for_its_customer() {
        let holders = [
            holder(1, "customer", "Customer1", None),
            holder(1, "branch", "Berlin", Some(10)),
            holder(1, "contact", "Ann Lee", Some(10)),
        ];
        match decide(&holders, &[]) {
            Decision::Contact { holders, foreign } => {
                assert_eq!(holders.len(), 1);
                assert_eq!(holders[0].name, "Ann Lee");
                assert!(foreign.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_serial_of_another_customer_than_the_contacts_is_not_taken() {
        let holders = [holder(1, "contact", "Ann Lee", Some(10))];
        let named = [asset(2, "CAM-9", "2025-01-01")];
        match decide(&holders, &named) {
            Decision::Contact { holders, foreign } => {
                assert_eq!(holders[0].customer_id, Uuid::from_u128(1));
                assert_eq!(foreign[0].serial, "CAM-9");
            }
            other => panic!("{other:?}"),
        }
        // With one of its own named too, its own pins and the other is reported.
        let named = [
            asset(2, "CAM-9", "2025-01-01"),
            asset(1, "CAM-1", "2025-01-01"),
        ];
        match decide(&holders, &named) {
            Decision::Named {
                assets,
                holder: Some(h),
                shared: false,
                foreign,
            } => {
                assert_eq!(assets[0].serial, "CAM-1");
                assert_eq!(h.name, "Ann Lee");
                assert_eq!(foreign[0].serial, "CAM-9");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shared_keys_are_ambiguous_unless_a_serial_settles_them() {
        let holders = [
            holder(1, "customer", "Customer1", None),
            holder(2, "branch", "Potsdam", Some(20)),
        ];
        assert_eq!(
            via_list(&decide(&holders, &[])),
            [
                "Customer1: customer",
                "Customer2: branch Potsdam notice email"
            ]
        );
        let named = [asset(2, "NVR-2", "2025-01-01")];
        match decide(&holders, &named) {
            Decision::Named {
                holder: Some(h),
                shared: true,
                ..
            } => assert_eq!(h.customer_id, Uuid::from_u128(2)),
            other => panic!("{other:?}"),
        }
        // Serials of two customers from nobody known: ambiguous too.
        let named = [
            asset(1, "CAM-1", "2025-01-01"),
            asset(2, "NVR-2", "2025-01-01"),
        ];
        assert_eq!(
            via_list(&decide(&[], &named)),
            ["Customer1: serial CAM-1", "Customer2: serial NVR-2"]
        );
    }

    #[test]
    fn coverage_is_on_the_day_the_ticket_was_opened_where_the_asset_is() {
        let camera = asset(1, "CAM-1", "2024-03-15");
        // 2025-03-14 23:30 UTC is already the 15th in Berlin: warranty over.
        let late = "2025-03-14T23:30:00Z".parse().unwrap();
        let answer = summary(&[&camera], late, Whose::Named);
        assert_eq!(answer.coverage, Coverage::None);
        assert!(
            answer.reason.starts_with(
                "serial CAM-1 (DS-2CD2143) named in the ticket: warranty ended 2025-03-14"
            ),
            "{}",
            answer.reason
        );
        let earlier = "2025-03-14T22:30:00Z".parse().unwrap();
        let answer = summary(&[&camera], earlier, Whose::Named);
        assert_eq!(answer.coverage, Coverage::Warranty);
        assert_eq!(answer.covered_until, domain::date("2025-03-14", "d").ok());
        assert_eq!(answer.asset.map(|a| a.serial), Some("CAM-1".into()));
        assert_eq!(answer.project.map(|p| p.1), Some("HQ".into()));
    }

    #[test]
    fn several_assets_give_the_best_coverage_and_no_single_asset() {
        let old = asset(1, "CAM-1", "2020-01-01");
        let new = asset(1, "NVR-1", "2025-01-01");
        let at = "2025-06-01T12:00:00Z".parse().unwrap();
        let answer = summary(&[&old, &new], at, Whose::Contact("Customer1 Berlin"));
        assert_eq!(answer.coverage, Coverage::Warranty);
        assert_eq!(answer.covered_until, domain::date("2025-12-31", "d").ok());
        assert!(answer.asset.is_none());
        assert_eq!(answer.project.map(|p| p.1), Some("HQ".into()));
        assert_eq!(
            answer.reason,
            "Customer1 Berlin has 2 assets: 1 in warranty, 0 under contract, 1 not covered (CAM-1 none, NVR-1 warranty until 2025-12-31)"
        );
        let none = summary::<&Asset>(&[], at, Whose::Contact("Customer1"));
        assert_eq!(none.reason, "no assets are recorded for Customer1");
        assert_eq!(none.coverage, Coverage::None);
    }
}
