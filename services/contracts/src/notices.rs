//! Notices ahead of coverage ends (ARCHITECTURE §12): a branch is told,
//! `notice_ahead` (60 days) before the warranty or a maintenance contract
//! of its assets ends with nothing after it, which assets and what a
//! 12-month renewal would cost under the 5% cap.
//!
//! A scan runs at start and then every `notice_every`, for "today" at
//! each project's site ([`Notices::scan`] takes the moment, so tests
//! drive it without waiting). It finds the assets whose warranty (derived,
//! never stored) or contract ends near the window, lets
//! [`domain::ends_to_announce`] decide, and in one transaction records
//! each (asset, kind, end date) in `notices` — unique, so an end is
//! announced once — and writes one `contracts.notice` event per branch to
//! the outbox. Intake mails it through its relay, once per event.
//!
//! One scan at a time across processes (an advisory lock: a second scanner
//! waits, then finds everything due announced already), so a branch gets
//! one mail per scan.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Days, NaiveDate, Utc};
use hotline_kit::bus::{
    Backoff,
    outbox::{self, OutboxSignal},
};
use hotline_proto::events::v1::{CoverageEnd, CoverageNotice, event_envelope::Payload};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::{self, Amount, EndKind},
    store::{self, Asset, NewNotice},
};

/// The event type a notice travels as.
pub const EVENT: &str = "contracts.notice";

/// Days added on each side of the scan's window over stored dates: a
/// site's today is at most a day from UTC's, and PostgreSQL's month
/// arithmetic (the anniversary) is at most a day from the last day covered.
const SLACK_DAYS: u64 = 2;

/// The notice task of one process.
pub struct Notices {
    pub pool: PgPool,
    /// Wakes the process's outbox relay once a scan has committed mail.
    pub relay: OutboxSignal,
    /// How many days before an end the branch is told.
    pub ahead_days: u32,
    /// How often the scan runs after the one at start.
    pub every: Duration,
}

/// An asset's end, announced in a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub serial: String,
    pub model: String,
    pub project: String,
    pub kind: EndKind,
    /// The last day covered.
    pub ends_on: NaiveDate,
    pub price: Amount,
    pub currency: String,
}

/// A mail a scan decided: to one branch, for every end it announced there.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The id of the `contracts.notice` event carrying it.
    pub event_id: Uuid,
    pub customer_id: Uuid,
    pub branch_id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Sorted by end date, project and serial.
    pub ends: Vec<Announced>,
}

impl Notices {
    /// Scans at start and every [`Notices::every`] until `cancel`; a failed
    /// scan is retried sooner, with backoff.
    pub async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_secs(1), self.every);
        loop {
            let wait = match self.scan(Utc::now()).await {
                Ok(notices) => {
                    backoff.reset();
                    if !notices.is_empty() {
                        let ends: usize = notices.iter().map(|n| n.ends.len()).sum();
                        tracing::info!(mails = notices.len(), ends, "coverage notices queued");
                    }
                    self.every
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = format!("{error:#}"),
                        ?delay,
                        "cannot scan for coverage ends; retrying"
                    );
                    delay
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One scan as it is at `now`: records and queues what is due, and
    /// answers the mails it queued.
    pub async fn scan(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Notice>> {
        let utc_today = now.date_naive();
        let (Some(from), Some(to)) = (
            utc_today.checked_sub_days(Days::new(SLACK_DAYS)),
            utc_today.checked_add_days(Days::new(u64::from(self.ahead_days) + SLACK_DAYS)),
        ) else {
            return Ok(Vec::new());
        };
        let mut tx = self.pool.begin().await?;
        store::lock_notice_scan(&mut tx).await?;
        let assets = store::assets_ending(&mut tx, from, to).await?;
        let ids: Vec<Uuid> = assets.iter().map(|a| a.id).collect();
        let noticed: HashSet<(Uuid, String, NaiveDate)> = store::noticed(&mut tx, &ids, from)
            .await?
            .into_iter()
            .collect();
        let due: Vec<(&Asset, domain::End)> = assets
            .iter()
            .flat_map(|asset| {
                due_ends(asset, now, self.ahead_days)
                    .into_iter()
                    .map(move |end| (asset, end))
            })
            .filter(|(asset, end)| {
                !noticed.contains(&(asset.id, end.kind.as_str().to_owned(), end.on))
            })
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut branch_ids: Vec<Uuid> = due.iter().map(|(a, _)| a.branch_id).collect();
        branch_ids.sort_unstable();
        branch_ids.dedup();
        let branches: HashMap<Uuid, store::Branch> = store::branches(&mut tx, &branch_ids)
            .await?
            .into_iter()
            .map(|b| (b.id, b))
            .collect();
        let event_ids: HashMap<Uuid, Uuid> =
            branch_ids.iter().map(|b| (*b, Uuid::now_v7())).collect();
        let rows: Vec<NewNotice> = due
            .iter()
            .filter_map(|(asset, end)| {
                let branch = branches.get(&asset.branch_id)?;
                Some(NewNotice {
                    asset_id: asset.id,
                    kind: end.kind.as_str(),
                    ends_on: end.on,
                    branch_id: branch.id,
                    recipient: branch.notice_email.clone(),
                    event_id: *event_ids.get(&branch.id)?,
                })
            })
            .collect();
        let recorded: HashSet<(Uuid, String, NaiveDate)> = store::record_notices(&mut tx, &rows)
            .await?
            .into_iter()
            .collect();
        let mut by_branch: BTreeMap<Uuid, (String, Vec<Announced>)> = BTreeMap::new();
        for (asset, end) in &due {
            if !recorded.contains(&(asset.id, end.kind.as_str().to_owned(), end.on)) {
                continue;
            }
            by_branch
                .entry(asset.branch_id)
                .or_insert_with(|| (asset.customer.clone(), Vec::new()))
                .1
                .push(Announced {
                    serial: asset.serial.clone(),
                    model: asset.model.clone(),
                    project: asset.project.clone(),
                    kind: end.kind,
                    ends_on: end.on,
                    price: Amount(asset.price_cents),
                    currency: asset.currency.clone(),
                });
        }
        let mut notices = Vec::with_capacity(by_branch.len());
        for (branch_id, (customer, mut ends)) in by_branch {
            let (Some(branch), Some(event_id)) =
                (branches.get(&branch_id), event_ids.get(&branch_id))
            else {
                continue;
            };
            ends.sort_by(|a, b| {
                (a.ends_on, &a.project, &a.serial, a.kind)
                    .cmp(&(b.ends_on, &b.project, &b.serial, b.kind))
            });
            let (subject, body) = compose(&customer, &branch.name, self.ahead_days, &ends);
            notices.push(Notice {
                event_id: *event_id,
                customer_id: branch.customer_id,
                branch_id,
                recipient: branch.notice_email.clone(),
                subject,
                body,
                ends,
            });
        }
        let events: Vec<_> = notices.iter().map(event).collect();
        outbox::enqueue(&mut tx, &events).await?;
        tx.commit().await?;
        if !events.is_empty() {
            self.relay.committed();
            metrics::counter!("hotline_contracts_notices_total").increment(events.len() as u64);
        }
        Ok(notices)
    }
}

/// The ends of `asset`'s coverage due for a notice at `now`, today being
/// its site's.
fn due_ends(asset: &Asset, now: DateTime<Utc>, ahead_days: u32) -> Vec<domain::End> {
    let months = u32::try_from(asset.warranty_months).unwrap_or(domain::DEFAULT_WARRANTY_MONTHS);
    let Some(until) = domain::warranty_until(asset.accepted_on, months) else {
        return Vec::new();
    };
    let today = domain::today_at(now, &asset.time_zone);
    domain::ends_to_announce(today, ahead_days, until, &asset.terms)
}

/// The `contracts.notice` event carrying `notice`, under its own id.
fn event(notice: &Notice) -> hotline_proto::events::v1::EventEnvelope {
    let mut event = outbox::envelope(
        EVENT,
        None,
        Utc::now(),
        Payload::ContractsNotice(CoverageNotice {
            recipient: notice.recipient.clone(),
            subject: notice.subject.clone(),
            body: notice.body.clone(),
            customer_id: notice.customer_id.to_string(),
            branch_id: notice.branch_id.to_string(),
            ends: notice
                .ends
                .iter()
                .map(|end| CoverageEnd {
                    serial: end.serial.clone(),
                    kind: end.kind.as_str().to_owned(),
                    ends_on: end.ends_on.to_string(),
                })
                .collect(),
        }),
    );
    event.id = notice.event_id.to_string();
    event
}

/// How wide the mail's prose runs: plain text mail reads best, and goes
/// out unencoded, below 78 characters a line.
const LINE_CHARS: usize = 72;

/// `text` broken into lines of at most [`LINE_CHARS`] at spaces (a longer
/// word keeps its own line).
fn wrap(text: &str) -> String {
    let mut wrapped = String::new();
    let mut width = 0;
    for word in text.split_whitespace() {
        let chars = word.chars().count();
        if width > 0 && width + 1 + chars > LINE_CHARS {
            wrapped.push('\n');
            width = 0;
        } else if width > 0 {
            wrapped.push(' ');
            width += 1;
        }
        wrapped.push_str(word);
        width += chars;
    }
    wrapped
}

/// The mail to a branch for `ends` (sorted, not empty): its subject and
/// plain-text body — the assets in a table, then the renewal quotes.
pub fn compose(
    customer: &str,
    branch: &str,
    ahead_days: u32,
    ends: &[Announced],
) -> (String, String) {
    let count = match ends.len() {
        1 => "1 asset".to_owned(),
        n => format!("{n} assets"),
    };
    let first = ends.first().map(|e| e.ends_on);
    let last = ends.last().map(|e| e.ends_on);
    let when = match (first, last) {
        (Some(first), Some(last)) if first != last => format!("from {first} to {last}"),
        (Some(first), _) => format!("on {first}"),
        _ => String::new(),
    };
    let subject = format!("{customer}, {branch}: coverage of {count} ends {when}");
    let header = ["serial", "model", "project", "coverage", "last day"];
    let rows: Vec<[String; 5]> = ends
        .iter()
        .map(|e| {
            [
                e.serial.clone(),
                e.model.clone(),
                e.project.clone(),
                e.kind.as_str().to_owned(),
                e.ends_on.to_string(),
            ]
        })
        .collect();
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain([header[column].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text
    };
    let mut body = String::from("Hello,\n\n");
    body.push_str(&wrap(&format!(
        "the warranty or maintenance contract of these assets of {customer}, branch \
         {branch}, ends within the next {ahead_days} days, and nothing covers them after \
         that:"
    )));
    body.push_str("\n\n");
    body.push_str(line(header).trim_end());
    body.push('\n');
    for row in &rows {
        body.push_str(line([&row[0], &row[1], &row[2], &row[3], &row[4]]).trim_end());
        body.push('\n');
    }
    let priced: Vec<(NaiveDate, Amount, &str)> = ends
        .iter()
        .map(|e| (e.ends_on, e.price, e.currency.as_str()))
        .collect();
    body.push('\n');
    body.push_str(&wrap(&format!(
        "Renewal quote: a maintenance contract gives the same service level as the \
         warranty, for at most {}% a year of the covered products' price. For {} months \
         from the day after the end:",
        domain::CAP_PERCENT,
        domain::RENEWAL_MONTHS
    )));
    body.push_str("\n\n");
    for quote in domain::renewal_quotes(&priced) {
        let assets = match quote.assets {
            1 => "the asset".to_owned(),
            n => format!("the {n} assets"),
        };
        let ending = quote.starts_on.pred_opt().unwrap_or(quote.starts_on);
        body.push_str(&format!(
            "- {} to {}: {} {cur}\n  for {assets} ending {ending} (products {} {cur})\n",
            quote.starts_on,
            quote.ends_on,
            quote.fee,
            quote.price,
            cur = quote.currency
        ));
    }
    body.push_str("\nTo renew, reply to this mail or call the service desk.\n");
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(serial: &str, project: &str, kind: EndKind, on: &str, price: &str) -> Announced {
        Announced {
            serial: serial.into(),
            model: "DS-2CD2143".into(),
            project: project.into(),
            kind,
            ends_on: domain::date(on, "on").unwrap(),
            price: price.parse().unwrap(),
            currency: "EUR".into(),
        }
    }

    #[test]
    fn prose_wraps_at_spaces() {
        let text = "word ".repeat(30);
        let wrapped = wrap(&text);
        assert!(wrapped.lines().all(|l| l.chars().count() <= LINE_CHARS));
        assert_eq!(wrapped.split_whitespace().count(), 30);
        assert_eq!(
            wrap(&"x".repeat(100)),
            "x".repeat(100),
            "a long word stays whole"
        );
    }

    #[test]
    fn a_notice_lists_the_assets_in_columns_and_quotes_each_start_day() {
        let ends = [
            end("CAM-1", "HQ", EndKind::Warranty, "2035-03-14", "6000.00"),
            end("NVR-10", "HQ", EndKind::Warranty, "2035-03-14", "4000.00"),
            end("PTZ-2", "Depot", EndKind::Contract, "2035-04-30", "1999.99"),
        ];
        let (subject, body) = compose("Acme", "Berlin", 60, &ends);
        assert_eq!(
            subject,
            "Acme, Berlin: coverage of 3 assets ends from 2035-03-14 to 2035-04-30"
        );
        assert!(body.contains("ends within the next 60 days"), "{body}");
        assert!(
            body.lines()
                .take(4)
                .all(|l| l.chars().count() <= LINE_CHARS),
            "{body}"
        );
        assert!(
            body.contains(
                "serial  model       project  coverage  last day\n\
                 CAM-1   DS-2CD2143  HQ       warranty  2035-03-14\n\
                 NVR-10  DS-2CD2143  HQ       warranty  2035-03-14\n\
                 PTZ-2   DS-2CD2143  Depot    contract  2035-04-30\n"
            ),
            "{body}"
        );
        assert!(
            body.contains(
                "- 2035-03-15 to 2036-03-14: 500.00 EUR\n  \
                 for the 2 assets ending 2035-03-14 (products 10000.00 EUR)\n\
                 - 2035-05-01 to 2036-04-30: 99.99 EUR\n  \
                 for the asset ending 2035-04-30 (products 1999.99 EUR)\n"
            ),
            "{body}"
        );
        // Names are aligned by characters, not bytes.
        let accented = [
            end(
                "CAM-1",
                "Zürich Süd",
                EndKind::Warranty,
                "2035-03-14",
                "1.00",
            ),
            end("CAM-2", "HQ", EndKind::Warranty, "2035-03-14", "1.00"),
        ];
        let (_, body) = compose("Acme", "Zürich", 60, &accented);
        assert!(
            body.contains(
                "CAM-1   DS-2CD2143  Zürich Süd  warranty  2035-03-14\n\
                 CAM-2   DS-2CD2143  HQ          warranty  2035-03-14\n"
            ),
            "{body}"
        );
        let (subject, _) = compose("Acme", "Berlin", 60, &ends[..1]);
        assert_eq!(
            subject,
            "Acme, Berlin: coverage of 1 asset ends on 2035-03-14"
        );
    }
}
