//! The rules of the installed base, pure: amounts and currencies, the
//! warranty's last day, a contract's term and its 5% cap (P6), and the
//! coverage of an asset on a day (P1).

use std::{cmp::Ordering, collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};

/// Months of warranty when a project does not say otherwise (P1).
pub const DEFAULT_WARRANTY_MONTHS: u32 = 12;
/// The longest warranty or contract term we accept: ten years.
pub const MAX_TERM_MONTHS: u32 = 120;
/// The cap of P6: a year of maintenance costs at most 5% of the covered
/// products' price, i.e. `annual_fee * 20 <= price`.
pub const CAP_PERCENT: i64 = 5;

/// An amount of money in minor units (cents): never a float, so 0.1 + 0.2
/// is 0.30 and a cap compared to the cent is compared exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Amount(pub i64);

/// What `NUMERIC(14,2)` holds: twelve digits before the point.
const MAX_AMOUNT_CENTS: i64 = 99_999_999_999_999;

impl FromStr for Amount {
    type Err = String;

    /// `1234`, `1234.5`, `1234.50`; not `1e3`, `-5`, `1.234`, `NaN`, `1,5`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || {
            format!(
                "{text:?} is not an amount: write digits with at most two decimals after a point, like 1234.50"
            )
        };
        let (units, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
        if units.is_empty()
            || units.len() > 12
            || !units.bytes().all(|b| b.is_ascii_digit())
            || (text.contains('.') && fraction.is_empty())
            || fraction.len() > 2
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(refuse());
        }
        let units: i64 = units.parse().map_err(|_| refuse())?;
        let cents = match fraction.len() {
            0 => 0,
            1 => fraction.parse::<i64>().map_err(|_| refuse())? * 10,
            _ => fraction.parse::<i64>().map_err(|_| refuse())?,
        };
        Ok(Amount(units * 100 + cents))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let cents = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", cents / 100, cents % 100)
    }
}

impl Amount {
    /// Whether PostgreSQL's `NUMERIC(14,2)` can hold it.
    pub fn fits_column(self) -> bool {
        (0..=MAX_AMOUNT_CENTS).contains(&self.0)
    }
}

/// An ISO 4217 code: three upper-case letters (`eur` is taken as `EUR`).
pub fn currency(text: &str) -> Result<String, String> {
    let code = text.trim().to_ascii_uppercase();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(format!(
            "{text:?} is not a currency: write its ISO 4217 code, like EUR or USD"
        ))
    }
}

/// A calendar day written `YYYY-MM-DD`.
pub fn date(text: &str, name: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .ok()
        .filter(|d| (1900..=2999).contains(&d.year()))
        .ok_or_else(|| format!("{name} {text:?} is not a date: write it as YYYY-MM-DD"))
}

/// An address, lower-cased: the kit's rule, which dispatch's directory
/// shares.
pub use hotline_kit::input::email;

/// An IANA time zone name (`Europe/Berlin`), as chrono-tz knows them.
pub fn time_zone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not a time zone: write an IANA name, like Europe/Berlin or Asia/Shanghai"
        )
    })
}

/// The last day covered by a term of `months` that starts on `start`
/// (inclusive), in calendar months: the day before the same day-of-month
/// `months` later (1 Jan + 12 → 31 Dec). When that day does not exist in
/// the final month (31 Aug + 6 → "31 Feb"), the term runs to the end of
/// that month (28 or 29 Feb): a term is never shorter than its months.
/// `None` past the calendar's end.
pub fn last_day(start: NaiveDate, months: u32) -> Option<NaiveDate> {
    let anniversary = start.checked_add_months(Months::new(months))?;
    if anniversary.day() == start.day() {
        anniversary.pred_opt()
    } else {
        // chrono clamped to the end of the month: that month end is covered.
        Some(anniversary)
    }
}

/// A contract's length in whole calendar months: the `n` whose
/// [`last_day`] from `start` is `end`. A term of anything else (1 Jan to
/// 15 Mar) is refused, naming the two whole-month ends around it, rather
/// than annualised by days: a fee cap to the cent needs an exact term.
pub fn term_months(start: NaiveDate, end: NaiveDate) -> Result<u32, String> {
    if end < start {
        return Err(format!(
            "the contract ends ({end}) before it starts ({start}): give an end on or after the start"
        ));
    }
    let guess = (end.year() - start.year()) * 12 + end.month() as i32 - start.month() as i32;
    let mut before = None;
    for months in (guess - 1).max(1)..=(guess + 1).max(1) {
        let months = months as u32;
        match last_day(start, months).map(|last| last.cmp(&end)) {
            Some(Ordering::Equal) if months <= MAX_TERM_MONTHS => return Ok(months),
            Some(Ordering::Equal) => break,
            Some(Ordering::Less) => before = Some(months),
            _ => {}
        }
    }
    if guess > MAX_TERM_MONTHS as i32 {
        return Err(format!(
            "a contract runs at most {MAX_TERM_MONTHS} months; end it by {}",
            last_day(start, MAX_TERM_MONTHS).unwrap_or(end)
        ));
    }
    let shorter = before.and_then(|m| last_day(start, m).map(|d| (m, d)));
    let longer = (before.unwrap_or(0) + 1..=MAX_TERM_MONTHS)
        .find_map(|m| last_day(start, m).filter(|d| *d > end).map(|d| (m, d)));
    let options: Vec<String> = [shorter, longer]
        .into_iter()
        .flatten()
        .map(|(months, day)| {
            format!(
                "{day} ({months} month{})",
                if months == 1 { "" } else { "s" }
            )
        })
        .collect();
    Err(format!(
        "a contract runs whole calendar months: from {start}, end it on {}",
        options.join(" or ")
    ))
}

/// The warranty's last day (inclusive) of a project accepted on `accepted_on`.
pub fn warranty_until(accepted_on: NaiveDate, months: u32) -> Option<NaiveDate> {
    last_day(accepted_on, months)
}

/// The covered assets' total price in the contract's currency; refused
/// when nothing is covered or the prices are in another or several
/// currencies (a cap across currencies needs exchange rates we do not
/// keep).
pub fn covered_price(currency: &str, prices: &[(Amount, &str)]) -> Result<Amount, String> {
    if prices.is_empty() {
        return Err(
            "a contract covers at least one asset: name projects with assets, or serials".into(),
        );
    }
    let mut currencies: Vec<&str> = prices.iter().map(|(_, c)| *c).collect();
    currencies.sort_unstable();
    currencies.dedup();
    if currencies.len() > 1 {
        return Err(format!(
            "the covered assets are priced in {}: a contract covers assets priced in one currency; split it by currency",
            currencies.join(" and ")
        ));
    }
    if currencies[0] != currency {
        return Err(format!(
            "the fee is in {currency} but the covered assets are priced in {}: give the fee in {}",
            currencies[0], currencies[0]
        ));
    }
    Ok(Amount(prices.iter().map(|(a, _)| a.0).sum()))
}

/// The highest fee the cap allows for a term of `months` over assets worth
/// `price`: 5% of the price a year, for `months` twelfths of a year,
/// rounded down to the cent (a fee at the limit is allowed, one cent more
/// is not).
pub fn max_fee(price: Amount, months: u32) -> Amount {
    let cents = i128::from(price.0) * i128::from(CAP_PERCENT) * i128::from(months) / (100 * 12);
    Amount(i64::try_from(cents).unwrap_or(i64::MAX))
}

/// P6: the fee for the term, annualised (`fee × 12 / months`), must not
/// exceed 5% of the covered price. Compared in integers
/// (`fee × 12 × 100 <= price × 5 × months`), so exactly 5% passes and one
/// cent over fails.
pub fn check_cap(fee: Amount, currency: &str, months: u32, price: Amount) -> Result<(), String> {
    let annualised = i128::from(fee.0) * 12 * 100;
    if annualised <= i128::from(price.0) * i128::from(CAP_PERCENT) * i128::from(months) {
        return Ok(());
    }
    let limit = max_fee(price, months);
    if months == 12 {
        Err(format!(
            "the annual fee {fee} {currency} exceeds {CAP_PERCENT}% of the covered products' price ({price} {currency}): at most {limit} {currency}"
        ))
    } else {
        let per_year =
            Amount(i64::try_from(i128::from(fee.0) * 12 / i128::from(months)).unwrap_or(i64::MAX));
        Err(format!(
            "the fee {fee} {currency} for {months} months ({per_year} {currency} a year) exceeds {CAP_PERCENT}% a year of the covered products' price ({price} {currency}): at most {limit} {currency} for {months} months"
        ))
    }
}

/// What promise covers an asset on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Coverage {
    None,
    Contract,
    Warranty,
}

impl Coverage {
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::None => "none",
            Coverage::Contract => "contract",
            Coverage::Warranty => "warranty",
        }
    }
}

/// A contract term covering an asset.
#[derive(Debug, Clone)]
pub struct Term<Id> {
    pub contract: Id,
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// An asset's coverage on a day, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageOn<Id> {
    pub coverage: Coverage,
    pub until: Option<NaiveDate>,
    pub contract: Option<Id>,
    pub reason: String,
}

/// Warranty while `on <= warranty_until` (P1), else a contract whose term
/// holds `on` (P6), else none. The reason names the dates a caller would
/// be told.
pub fn coverage_on<Id: Clone>(
    on: NaiveDate,
    warranty_until: NaiveDate,
    terms: &[Term<Id>],
) -> CoverageOn<Id> {
    if on <= warranty_until {
        return CoverageOn {
            coverage: Coverage::Warranty,
            until: Some(warranty_until),
            contract: None,
            reason: format!("in warranty until {warranty_until}"),
        };
    }
    if let Some(term) = terms.iter().find(|t| t.start <= on && on <= t.end) {
        return CoverageOn {
            coverage: Coverage::Contract,
            until: Some(term.end),
            contract: Some(term.contract.clone()),
            reason: format!(
                "warranty ended {warranty_until}; under maintenance contract until {}",
                term.end
            ),
        };
    }
    let next = terms.iter().filter(|t| t.start > on).map(|t| t.start).min();
    let reason = match next {
        Some(start) => format!(
            "warranty ended {warranty_until}; no contract on {on} (the next starts {start})"
        ),
        None => format!("warranty ended {warranty_until} and no maintenance contract covers {on}"),
    };
    CoverageOn {
        coverage: Coverage::None,
        until: None,
        contract: None,
        reason,
    }
}

/// The day it is at `now` in `time_zone` (an IANA name): coverage ends at
/// the site's midnight. A name chrono-tz does not know (none is stored:
/// zones are checked on the way in) counts as UTC.
pub fn today_at(now: DateTime<Utc>, time_zone: &str) -> NaiveDate {
    match time_zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => now.with_timezone(&tz).date_naive(),
        Err(_) => now.date_naive(),
    }
}

/// What ends: an asset's warranty, or a maintenance contract covering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndKind {
    Warranty,
    Contract,
}

impl EndKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndKind::Warranty => "warranty",
            EndKind::Contract => "contract",
        }
    }
}

/// The last day of an asset's coverage, announced ahead of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub kind: EndKind,
    /// The last day covered (inclusive).
    pub on: NaiveDate,
}

/// The ends of an asset's coverage to announce on `today`: its warranty's
/// last day and each contract's, when it falls from `today` to `ahead_days`
/// later (both included) and nothing covers the day after — a warranty
/// followed by a contract, or a contract by the next, runs on and is not
/// announced; a contract that ends inside the warranty neither. An end
/// already past is never announced: a renewal offered after the fact
/// tells the branch nothing it can still act on in time.
pub fn ends_to_announce<Id>(
    today: NaiveDate,
    ahead_days: u32,
    warranty_until: NaiveDate,
    terms: &[Term<Id>],
) -> Vec<End> {
    let Some(horizon) = today.checked_add_days(Days::new(u64::from(ahead_days))) else {
        return Vec::new();
    };
    let covered = |day: NaiveDate| {
        day <= warranty_until || terms.iter().any(|t| t.start <= day && day <= t.end)
    };
    let mut ends: Vec<End> = std::iter::once(End {
        kind: EndKind::Warranty,
        on: warranty_until,
    })
    .chain(terms.iter().map(|t| End {
        kind: EndKind::Contract,
        on: t.end,
    }))
    .filter(|end| today <= end.on && end.on <= horizon)
    .filter(|end| end.on.succ_opt().is_some_and(|next| !covered(next)))
    .collect();
    ends.sort_by_key(|end| (end.on, end.kind));
    ends
}

/// A renewal quote: a 12-month maintenance contract from the day after
/// some assets' coverage ends, at the highest fee the 5% cap allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
    pub currency: String,
    /// The covered products' total price.
    pub price: Amount,
    /// The fee for the 12 months: [`max_fee`] of `price`, to the cent below.
    pub fee: Amount,
    /// How many assets it covers.
    pub assets: usize,
}

/// The months a renewal quote runs: the usual yearly contract.
pub const RENEWAL_MONTHS: u32 = 12;

/// Quotes renewing assets whose coverage ends on the given days: one per
/// start day (the day after the end) and currency, since a contract has
/// one start and one currency; each at the cap over its assets' price.
pub fn renewal_quotes(ends: &[(NaiveDate, Amount, &str)]) -> Vec<Quote> {
    let mut groups: BTreeMap<(NaiveDate, &str), Vec<(Amount, &str)>> = BTreeMap::new();
    for &(end, price, currency) in ends {
        if let Some(start) = end.succ_opt() {
            groups
                .entry((start, currency))
                .or_default()
                .push((price, currency));
        }
    }
    groups
        .into_iter()
        .filter_map(|((start, currency), prices)| {
            let price = covered_price(currency, &prices).ok()?;
            Some(Quote {
                starts_on: start,
                ends_on: last_day(start, RENEWAL_MONTHS)?,
                currency: currency.to_owned(),
                price,
                fee: max_fee(price, RENEWAL_MONTHS),
                assets: prices.len(),
            })
        })
        .collect()
}

/// How much of a ticket's text is read for serials, and how many words of
/// it are looked up: a huge or hostile body costs one bounded probe.
pub const MAX_SCANNED_BYTES: usize = 64 * 1024;
pub const MAX_SERIAL_CANDIDATES: usize = 100;
/// A serial candidate's length: the shortest worth a probe, and the
/// longest serial the installed base accepts.
const SERIAL_CHARS: std::ops::RangeInclusive<usize> = 3..=100;

/// The words of `texts` (a subject, a body) that could be serials,
/// upper-cased, each once, in the order they are written: runs of ASCII
/// letters, digits, `-`, `_` and `.` (those three not at either end, so
/// `CAM-1.` at the end of a sentence is `CAM-1`), 3 to 100 characters,
/// with at least one digit (a serial has one; plain words do not).
/// Everything else separates words: spaces, `/`, `:`, `#`, `,`, brackets,
/// any non-ASCII letter. At most [`MAX_SCANNED_BYTES`] of the texts
/// together are read (a word cut by that limit is dropped) and at most
/// [`MAX_SERIAL_CANDIDATES`] words kept.
pub fn serial_candidates(texts: &[&str]) -> Vec<String> {
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let mut budget = MAX_SCANNED_BYTES;
    let mut found: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for text in texts {
        let bytes = text.as_bytes();
        let read = bytes.len().min(budget);
        budget -= read;
        let cut = read < bytes.len();
        let mut words = bytes[..read].split(|b| !word_byte(*b)).peekable();
        while let Some(word) = words.next() {
            if cut && words.peek().is_none() {
                // The limit may have cut this word short: never look up a part.
                break;
            }
            let word = word
                .iter()
                .position(|b| b.is_ascii_alphanumeric())
                .map_or(&[][..], |start| &word[start..]);
            let word = word
                .iter()
                .rposition(|b| b.is_ascii_alphanumeric())
                .map_or(&[][..], |end| &word[..=end]);
            if !SERIAL_CHARS.contains(&word.len()) || !word.iter().any(u8::is_ascii_digit) {
                continue;
            }
            // ASCII only: upper-cased as PostgreSQL's upper() does.
            let upper = String::from_utf8_lossy(word).to_ascii_uppercase();
            if seen.insert(upper.clone()) {
                found.push(upper);
                if found.len() == MAX_SERIAL_CANDIDATES {
                    return found;
                }
            }
        }
        if budget == 0 {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        date(text, "day").unwrap()
    }

    fn amount(text: &str) -> Amount {
        text.parse().unwrap()
    }

    #[test]
    fn amounts_are_read_to_the_cent_and_nothing_else_is() {
        assert_eq!(amount("1234.5"), Amount(123_450));
        assert_eq!(amount("1234.50"), Amount(123_450));
        assert_eq!(amount("1234"), Amount(123_400));
        assert_eq!(amount("0.01"), Amount(1));
        assert_eq!(amount("999999999999.99").0, MAX_AMOUNT_CENTS);
        for bad in [
            "1e3",
            "-5",
            "-0.01",
            "1.234",
            "NaN",
            "inf",
            "",
            ".5",
            "1.",
            "1,50",
            "+5",
            "1 000",
            "0x10",
            "1234567890123",
        ] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Amount(123_450).to_string(), "1234.50");
        assert_eq!(Amount(5).to_string(), "0.05");
    }

    #[test]
    fn currencies_are_three_letters() {
        assert_eq!(currency("eur").unwrap(), "EUR");
        for bad in ["EURO", "E1R", "", "€"] {
            assert!(currency(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn warranty_ends_the_day_before_the_anniversary() {
        assert_eq!(
            warranty_until(day("2024-03-15"), 12),
            Some(day("2025-03-14"))
        );
        assert_eq!(
            warranty_until(day("2025-01-01"), 12),
            Some(day("2025-12-31"))
        );
        assert_eq!(
            warranty_until(day("2024-12-31"), 1),
            Some(day("2025-01-30"))
        );
        assert_eq!(
            warranty_until(day("2024-03-01"), 12),
            Some(day("2025-02-28"))
        );
        assert_eq!(
            warranty_until(day("2023-03-01"), 12),
            Some(day("2024-02-29")),
            "leap year"
        );
    }

    #[test]
    fn warranty_into_a_shorter_month_runs_to_its_end() {
        // 31 Aug + 6 months has no 31 Feb: end of February, 29th in a leap year.
        assert_eq!(
            warranty_until(day("2023-08-31"), 6),
            Some(day("2024-02-29"))
        );
        assert_eq!(
            warranty_until(day("2022-08-31"), 6),
            Some(day("2023-02-28"))
        );
        assert_eq!(
            warranty_until(day("2023-08-30"), 6),
            Some(day("2024-02-29"))
        );
        assert_eq!(
            warranty_until(day("2023-08-29"), 6),
            Some(day("2024-02-28"))
        );
        assert_eq!(
            warranty_until(day("2024-02-29"), 12),
            Some(day("2025-02-28"))
        );
        assert_eq!(
            warranty_until(day("2024-02-29"), 48),
            Some(day("2028-02-28"))
        );
        assert_eq!(
            warranty_until(day("2024-01-31"), 1),
            Some(day("2024-02-29"))
        );
    }

    #[test]
    fn contract_terms_are_whole_calendar_months() {
        assert_eq!(term_months(day("2025-01-01"), day("2025-12-31")), Ok(12));
        assert_eq!(term_months(day("2025-01-01"), day("2025-06-30")), Ok(6));
        assert_eq!(term_months(day("2023-08-31"), day("2024-02-29")), Ok(6));
        assert_eq!(term_months(day("2025-03-15"), day("2027-03-14")), Ok(24));
        assert_eq!(term_months(day("2025-01-01"), day("2025-01-31")), Ok(1));
        let odd = term_months(day("2025-01-01"), day("2025-03-15")).unwrap_err();
        assert!(
            odd.contains("2025-02-28 (2 months) or 2025-03-31 (3 months)"),
            "{odd}"
        );
        let short = term_months(day("2025-01-01"), day("2025-01-10")).unwrap_err();
        assert!(short.contains("2025-01-31 (1 month)"), "{short}");
        assert!(term_months(day("2025-01-02"), day("2025-01-01")).is_err());
        assert!(
            term_months(day("2025-01-01"), day("2040-12-31")).is_err(),
            "over ten years"
        );
    }

    #[test]
    fn exactly_five_percent_is_allowed_and_one_cent_more_is_not() {
        let price = amount("10000.00");
        assert_eq!(check_cap(amount("500.00"), "EUR", 12, price), Ok(()));
        let over = check_cap(amount("500.01"), "EUR", 12, price).unwrap_err();
        assert_eq!(
            over,
            "the annual fee 500.01 EUR exceeds 5% of the covered products' price (10000.00 EUR): at most 500.00 EUR"
        );
        assert_eq!(max_fee(price, 12), amount("500.00"));
    }

    #[test]
    fn shorter_and_longer_terms_are_annualised() {
        let price = amount("10000.00");
        // 6 months: 250.00 is 500.00 a year, the limit.
        assert_eq!(check_cap(amount("250.00"), "EUR", 6, price), Ok(()));
        let over = check_cap(amount("250.01"), "EUR", 6, price).unwrap_err();
        assert!(over.contains("(500.02 EUR a year)"), "{over}");
        assert!(over.ends_with("at most 250.00 EUR for 6 months"), "{over}");
        // 24 months: 1000.00 for two years is 500.00 a year.
        assert_eq!(check_cap(amount("1000.00"), "EUR", 24, price), Ok(()));
        assert!(check_cap(amount("1000.01"), "EUR", 24, price).is_err());
        // Limits that are not whole cents round down: 5% of 0.10 a year is 0.005.
        assert_eq!(max_fee(amount("0.10"), 12), Amount(0));
        assert!(check_cap(Amount(1), "EUR", 12, amount("0.10")).is_err());
        assert_eq!(max_fee(amount("1000.00"), 7), amount("29.16"));
        assert_eq!(
            check_cap(amount("29.16"), "EUR", 7, amount("1000.00")),
            Ok(())
        );
        assert!(check_cap(amount("29.17"), "EUR", 7, amount("1000.00")).is_err());
    }

    #[test]
    fn the_covered_price_is_in_one_currency_and_the_fees() {
        let eur = [(amount("6000.00"), "EUR"), (amount("4000.00"), "EUR")];
        assert_eq!(covered_price("EUR", &eur), Ok(amount("10000.00")));
        let other = covered_price("USD", &eur).unwrap_err();
        assert!(
            other.contains("the fee is in USD but the covered assets are priced in EUR"),
            "{other}"
        );
        let mixed = covered_price("EUR", &[(Amount(1), "USD"), (Amount(1), "EUR")]).unwrap_err();
        assert!(mixed.contains("priced in EUR and USD"), "{mixed}");
        assert!(covered_price("EUR", &[]).is_err());
    }

    #[test]
    fn coverage_is_warranty_then_contract_then_none() {
        let until = day("2025-03-14");
        let terms = [Term {
            contract: 7,
            start: day("2025-03-15"),
            end: day("2026-03-14"),
        }];
        let on = |d| coverage_on(day(d), until, &terms);
        assert_eq!(
            on("2025-03-14").coverage,
            Coverage::Warranty,
            "the last day is covered"
        );
        assert_eq!(on("2025-03-14").until, Some(until));
        let contract = on("2025-03-15");
        assert_eq!(contract.coverage, Coverage::Contract);
        assert_eq!(contract.until, Some(day("2026-03-14")));
        assert_eq!(contract.contract, Some(7));
        let none = on("2026-03-15");
        assert_eq!(none.coverage, Coverage::None);
        assert_eq!(none.until, None);
        assert!(
            none.reason.contains("warranty ended 2025-03-14"),
            "{}",
            none.reason
        );
        let gap = coverage_on(day("2025-02-01"), day("2025-01-01"), &terms);
        assert!(
            gap.reason.contains("the next starts 2025-03-15"),
            "{}",
            gap.reason
        );
    }

    #[test]
    fn zones_and_dates_are_checked() {
        assert!(time_zone("Europe/Berlin").is_ok());
        assert!(time_zone("Mars/Olympus").is_err());
        assert!(date("2025-02-30", "start").is_err());
    }

    fn ends(today: &str, until: &str, terms: &[(&str, &str)]) -> Vec<(EndKind, String)> {
        let terms: Vec<Term<u32>> = terms
            .iter()
            .map(|(start, end)| Term {
                contract: 1,
                start: day(start),
                end: day(end),
            })
            .collect();
        ends_to_announce(day(today), 60, day(until), &terms)
            .into_iter()
            .map(|end| (end.kind, end.on.to_string()))
            .collect()
    }

    #[test]
    fn an_end_is_announced_from_sixty_days_ahead_to_its_last_day() {
        let warranty = |on: &str| vec![(EndKind::Warranty, on.to_owned())];
        // 2025-03-14 is 61 days after 2025-01-12, 60 after 2025-01-13.
        assert!(ends("2025-01-12", "2025-03-14", &[]).is_empty());
        assert_eq!(
            ends("2025-01-13", "2025-03-14", &[]),
            warranty("2025-03-14")
        );
        assert_eq!(
            ends("2025-03-14", "2025-03-14", &[]),
            warranty("2025-03-14")
        );
        assert!(
            ends("2025-03-15", "2025-03-14", &[]).is_empty(),
            "an end already past is not announced"
        );
        assert!(ends("2019-06-01", "2018-01-01", &[]).is_empty());
    }

    #[test]
    fn month_ends_and_leap_years_are_the_warranty_rules() {
        // 31 Aug 2023 + 6 months runs to 29 Feb 2024 (a leap year): the
        // notice window opens 60 days before it, on 31 Dec 2023.
        let until = warranty_until(day("2023-08-31"), 6).unwrap();
        assert_eq!(until, day("2024-02-29"));
        let terms: [Term<u32>; 0] = [];
        assert!(ends_to_announce(day("2023-12-30"), 60, until, &terms).is_empty());
        assert_eq!(
            ends_to_announce(day("2023-12-31"), 60, until, &terms),
            [End {
                kind: EndKind::Warranty,
                on: day("2024-02-29")
            }]
        );
        // The year after, February has 28 days: 60 days before is 30 Dec.
        let until = warranty_until(day("2024-02-29"), 12).unwrap();
        assert_eq!(until, day("2025-02-28"));
        assert!(ends_to_announce(day("2024-12-29"), 60, until, &terms).is_empty());
        assert_eq!(
            ends_to_announce(day("2024-12-30"), 60, until, &terms).len(),
            1
        );
    }

    #[test]
    fn coverage_that_runs_on_is_not_announced() {
        // A contract from the day after the warranty: nothing lapses then,
        // but the contract's own end is announced in its turn.
        let followed = [("2025-03-15", "2026-03-14")];
        assert!(ends("2025-02-01", "2025-03-14", &followed).is_empty());
        assert_eq!(
            ends("2026-02-01", "2025-03-14", &followed),
            [(EndKind::Contract, "2026-03-14".to_owned())]
        );
        // One day without coverage between them: the warranty lapses.
        let gap = [("2025-03-16", "2026-03-15")];
        assert_eq!(
            ends("2025-02-01", "2025-03-14", &gap),
            [(EndKind::Warranty, "2025-03-14".to_owned())]
        );
        // A contract followed by the next one.
        let renewed = [("2025-03-15", "2026-03-14"), ("2026-03-15", "2027-03-14")];
        assert!(ends("2026-02-01", "2025-03-14", &renewed).is_empty());
        // A contract ending inside the warranty leaves the asset covered:
        // only the warranty's end is announced.
        let inside = [("2024-06-01", "2025-01-31")];
        assert_eq!(
            ends("2025-01-15", "2025-03-14", &inside),
            [(EndKind::Warranty, "2025-03-14".to_owned())]
        );
        // Warranty and contract both ending within the window: only the
        // contract's end lapses.
        let short = [("2025-03-15", "2025-04-14")];
        assert_eq!(
            ends("2025-02-20", "2025-03-14", &short),
            [(EndKind::Contract, "2025-04-14".to_owned())]
        );
    }

    #[test]
    fn today_is_the_sites_day() {
        let now = DateTime::parse_from_rfc3339("2025-01-12T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(today_at(now, "Europe/Berlin"), day("2025-01-13"));
        assert_eq!(today_at(now, "America/New_York"), day("2025-01-12"));
        assert_eq!(today_at(now, "Mars/Olympus"), day("2025-01-12"));
    }

    #[test]
    fn renewal_quotes_are_at_the_cap_per_start_day_and_currency() {
        let quotes = renewal_quotes(&[
            (day("2025-03-14"), amount("6000.00"), "EUR"),
            (day("2025-03-14"), amount("4000.00"), "EUR"),
            (day("2025-03-14"), amount("1000.10"), "USD"),
            (day("2025-02-28"), amount("19.99"), "EUR"),
        ]);
        assert_eq!(
            quotes,
            [
                Quote {
                    starts_on: day("2025-03-01"),
                    ends_on: day("2026-02-28"),
                    currency: "EUR".into(),
                    price: amount("19.99"),
                    // 5% of 19.99 is 0.9995: floored to the cent.
                    fee: amount("0.99"),
                    assets: 1,
                },
                Quote {
                    starts_on: day("2025-03-15"),
                    ends_on: day("2026-03-14"),
                    currency: "EUR".into(),
                    price: amount("10000.00"),
                    fee: amount("500.00"),
                    assets: 2,
                },
                Quote {
                    starts_on: day("2025-03-15"),
                    ends_on: day("2026-03-14"),
                    currency: "USD".into(),
                    price: amount("1000.10"),
                    fee: amount("50.00"),
                    assets: 1,
                },
            ]
        );
        // Every quote is a contract the cap accepts, and one cent more is not.
        for quote in &quotes {
            assert_eq!(
                check_cap(quote.fee, &quote.currency, RENEWAL_MONTHS, quote.price),
                Ok(())
            );
            assert!(
                check_cap(
                    Amount(quote.fee.0 + 1),
                    &quote.currency,
                    RENEWAL_MONTHS,
                    quote.price
                )
                .is_err()
            );
            assert_eq!(
                term_months(quote.starts_on, quote.ends_on),
                Ok(RENEWAL_MONTHS)
            );
        }
    }

    #[test]
    fn serial_candidates_are_words_with_a_digit_in_the_order_written() {
        let found = serial_candidates(&[
            "Re: CAM-1 offline",
            "Hello, the recorder nvr-1. (S/N: 7F3A9C) and CAM-1 again; v5.7.3 — Kamera-7 ünd X9",
        ]);
        assert_eq!(found, ["CAM-1", "NVR-1", "7F3A9C", "V5.7.3", "KAMERA-7"]);
        assert!(serial_candidates(&["no serial here, only words"]).is_empty());
        assert!(
            serial_candidates(&["A1 9 --- ... _-_"]).is_empty(),
            "too short"
        );
        let long = format!("X1{}", "Y".repeat(99));
        assert!(
            serial_candidates(&[&long]).is_empty(),
            "longer than a serial"
        );
        assert_eq!(serial_candidates(&["a/b CAM-2/NVR-3"]), ["CAM-2", "NVR-3"]);
        assert_eq!(serial_candidates(&["\0CAM-4\u{1b}[2J"]), ["CAM-4"]);
    }

    #[test]
    fn a_huge_or_hostile_body_is_read_only_so_far() {
        let words: String = (0..10_000).map(|i| format!("SN{i} ")).collect();
        let found = serial_candidates(&[&words]);
        assert_eq!(found.len(), MAX_SERIAL_CANDIDATES);
        assert_eq!(found[0], "SN0");
        // A serial past the limit is not read; one cut by it is not guessed.
        let padded = format!("{}CAM-12345", " ".repeat(MAX_SCANNED_BYTES - 5));
        assert!(serial_candidates(&[&padded]).is_empty());
        let after = format!("{} CAM-9", "x".repeat(MAX_SCANNED_BYTES));
        assert!(serial_candidates(&["CAM-8", &after]).contains(&"CAM-8".to_owned()));
        assert_eq!(serial_candidates(&["CAM-8", &after]).len(), 1);
        let nul = "CAM\u{0}1 CAM-\u{0}-2 \u{202e}CAM-3";
        assert_eq!(serial_candidates(&[nul]), ["CAM-3"]);
    }
}
