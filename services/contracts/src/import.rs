//! The installed base from a CSV file, before any SQL: the header, every
//! row checked by the rules the single-item calls use (the same functions
//! of [`crate::api`]), and the file held together — a serial once, a
//! customer's branch, project, contact and a model with the same values on
//! every row that names them. What comes out is the file's base,
//! deduplicated ([`Base`]), the assets to stage in the order read
//! ([`StagedAsset`]), and the faults by line ([`Faults`]).
//!
//! Names are matched as PostgreSQL keeps them unique: customers, models
//! case-blind; branches, projects and contacts case-blind within their
//! customer; serials case-blind.

use std::collections::HashMap;

use chrono::NaiveDate;
use tonic::Status;

use crate::{
    api::{
        self, MAX_DATE_CHARS, MAX_EMAIL_CHARS, MAX_NAME_CHARS, MAX_NUMBER_CHARS, MAX_PHONE_CHARS,
        MAX_SHORT_CHARS,
    },
    csv::{self, Record},
    domain::{self, Amount},
};

/// The faults an answer lists; the rest are counted.
pub const MAX_LISTED_FAULTS: usize = 100;
/// The most rows one file may hold: what one import holds in memory and in
/// one transaction. A bigger base is imported in several files.
pub const MAX_ROWS: u64 = 2_000_000;

/// A column of the file, and the longest value it takes.
struct Column {
    name: &'static str,
    max: usize,
}

const fn column(name: &'static str, max: usize) -> Column {
    Column { name, max }
}

/// The columns, in the order the issue names them; a file may order them
/// as it likes.
const COLUMNS: [Column; 18] = [
    column("customer", MAX_NAME_CHARS),
    column("branch", MAX_NAME_CHARS),
    column("branch_email", MAX_EMAIL_CHARS),
    column("branch_timezone", MAX_SHORT_CHARS),
    column("region", MAX_SHORT_CHARS),
    column("contact_name", MAX_NAME_CHARS),
    column("contact_email", MAX_EMAIL_CHARS),
    column("contact_phone", MAX_PHONE_CHARS),
    column("project", MAX_NAME_CHARS),
    column("accepted_on", MAX_DATE_CHARS),
    column("lat", MAX_NUMBER_CHARS),
    column("lng", MAX_NUMBER_CHARS),
    column("model", MAX_SHORT_CHARS),
    column("family", MAX_SHORT_CHARS),
    column("serial", MAX_SHORT_CHARS),
    column("price", MAX_NUMBER_CHARS),
    column("currency", MAX_SHORT_CHARS),
    column("firmware", MAX_SHORT_CHARS),
];

/// The header line, for messages.
pub fn header() -> String {
    COLUMNS.map(|c| c.name).join(",")
}

/// Faults by line: the first [`MAX_LISTED_FAULTS`] by line number, and
/// how many there are in all.
#[derive(Debug, Default)]
pub struct Faults {
    listed: Vec<(u64, String)>,
    count: u64,
}

impl Faults {
    pub fn add(&mut self, line: u64, reason: impl Into<String>) {
        self.count += 1;
        self.listed.push((line, reason.into()));
        if self.listed.len() >= 4 * MAX_LISTED_FAULTS {
            self.trim();
        }
    }

    /// Counts `more` faults beyond those added (a query lists the first
    /// ones and counts the rest).
    pub fn count_more(&mut self, more: u64) {
        self.count += more;
    }

    fn trim(&mut self) {
        self.listed.sort_by_key(|(line, _)| *line);
        self.listed.truncate(MAX_LISTED_FAULTS);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The first faults by line (a row's own faults in the order found).
    pub fn listed(mut self) -> Vec<(u64, String)> {
        self.trim();
        self.listed
    }
}

pub struct Customer {
    /// The first line naming it.
    pub line: u64,
    pub name: String,
}

pub struct Branch {
    pub line: u64,
    /// Index into [`Base::customers`].
    pub customer: usize,
    pub name: String,
    pub notice_email: String,
    pub time_zone: String,
    pub region: String,
}

/// Where a contact works: a branch when every row naming them is of one
/// branch; the whole customer when they are named for several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactBranch {
    One(usize),
    Several,
}

pub struct Contact {
    pub line: u64,
    pub customer: usize,
    pub branch: ContactBranch,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

pub struct Project {
    pub line: u64,
    pub customer: usize,
    /// Index into [`Base::branches`]: a branch of the same customer.
    pub branch: usize,
    pub name: String,
    pub accepted_on: NaiveDate,
    pub location: Option<(f64, f64)>,
}

pub struct Model {
    /// The first line giving its family, else the first naming it.
    pub line: u64,
    pub name: String,
    /// `None` when no row gives one: the catalogue must know the model.
    pub family: Option<String>,
}

/// One asset row, checked, to be staged for the merge.
pub struct StagedAsset {
    pub line: u64,
    pub serial: String,
    /// Index into [`Base::projects`].
    pub project: usize,
    /// Index into [`Base::models`].
    pub model: usize,
    pub price: Amount,
    pub currency: String,
    pub firmware: String,
}

/// What the file names, each thing once, with the line that first names
/// it. Indices tie them together.
#[derive(Default)]
pub struct Base {
    pub customers: Vec<Customer>,
    pub branches: Vec<Branch>,
    pub contacts: Vec<Contact>,
    pub projects: Vec<Project>,
    pub models: Vec<Model>,
    customer_keys: HashMap<String, usize>,
    branch_keys: HashMap<(usize, String), usize>,
    contact_keys: HashMap<(usize, String), usize>,
    project_keys: HashMap<(usize, String), usize>,
    model_keys: HashMap<String, usize>,
    /// Contacts by email and by phone: each is one contact's.
    emails: HashMap<String, usize>,
    phones: HashMap<String, usize>,
    /// Upper-cased serials, and the line of each.
    serials: HashMap<Box<str>, u64>,
}

/// A row, every field checked.
struct Row {
    customer: String,
    branch: String,
    notice_email: String,
    time_zone: String,
    region: String,
    contact: Option<(String, Option<String>, Option<String>)>,
    project: String,
    accepted_on: NaiveDate,
    location: Option<(f64, f64)>,
    model: String,
    family: Option<String>,
    serial: String,
    price: Amount,
    currency: String,
    firmware: String,
}

/// A file being imported, fed in pieces.
pub struct Import {
    reader: csv::Reader,
    file: File,
}

/// Everything but the reader, so records can be handed over while the
/// reader holds them.
struct File {
    country_code: String,
    /// Where each of [`COLUMNS`] is in a record, once the header is read.
    positions: Option<[usize; COLUMNS.len()]>,
    /// How many fields the header has: every row has as many.
    width: usize,
    rows: u64,
    faults: Faults,
    base: Base,
    staged: Vec<StagedAsset>,
    /// A fault of the whole file: no more is read.
    refused: Option<Status>,
    /// The costlier checks of the previous row, reused when a row repeats
    /// its values (a customer's rows usually come together).
    last: LastChecked,
}

#[derive(Default)]
struct LastChecked {
    branch_email: Last<String>,
    time_zone: Last<String>,
    contact_email: Last<Option<String>>,
    contact_phone: Last<Option<String>>,
}

/// A column's previous raw value and what checking it gave.
#[derive(Default)]
struct Last<T> {
    raw: String,
    checked: Option<Result<T, String>>,
}

impl<T: Clone> Last<T> {
    /// `check(raw)`, or its answer for the same raw value just before.
    fn check(
        &mut self,
        raw: &str,
        check: impl FnOnce(&str) -> Result<T, Status>,
    ) -> Result<T, Status> {
        match &self.checked {
            Some(checked) if self.raw == raw => checked.clone().map_err(Status::invalid_argument),
            _ => {
                let checked = check(raw);
                self.raw.clear();
                self.raw.push_str(raw);
                self.checked = Some(checked.clone().map_err(|s| s.message().to_owned()));
                checked
            }
        }
    }
}

impl Import {
    /// `country_code` places contacts' national numbers, as for
    /// `AddContact`.
    pub fn new(country_code: &str) -> Self {
        Self {
            reader: csv::Reader::default(),
            file: File {
                country_code: country_code.to_owned(),
                positions: None,
                width: 0,
                rows: 0,
                faults: Faults::default(),
                base: Base::default(),
                staged: Vec::new(),
                refused: None,
                last: LastChecked::default(),
            },
        }
    }

    /// Reads the next piece of the file. An error refuses the whole file
    /// (its header, its size).
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), Status> {
        let file = &mut self.file;
        if file.refused.is_none() {
            self.reader.feed(piece, &mut |record| file.record(record));
        }
        file.refused.clone().map_or(Ok(()), Err)
    }

    /// Ends the file: an error when it had no header or no rows.
    pub fn finish(&mut self) -> Result<(), Status> {
        let file = &mut self.file;
        if file.refused.is_none() {
            self.reader.finish(&mut |record| file.record(record));
        }
        if let Some(refused) = file.refused.clone() {
            return Err(refused);
        }
        if file.positions.is_none() {
            return Err(Status::invalid_argument(format!(
                "the file is empty: give a header line ({}) and a line per asset",
                header()
            )));
        }
        if file.rows == 0 {
            return Err(Status::invalid_argument(
                "the file has a header but no rows: nothing to import",
            ));
        }
        Ok(())
    }

    /// The assets checked since the last call, in file order.
    pub fn take_staged(&mut self) -> Vec<StagedAsset> {
        std::mem::take(&mut self.file.staged)
    }

    /// Data rows read so far.
    pub fn rows(&self) -> u64 {
        self.file.rows
    }

    /// The base the file describes and the faults found in it.
    pub fn into_parts(self) -> (Base, Faults) {
        (self.file.base, self.file.faults)
    }
}

impl File {
    fn record(&mut self, record: &Record) {
        if self.refused.is_some() {
            return;
        }
        let Some(positions) = self.positions else {
            match read_header(record) {
                Ok(positions) => {
                    self.positions = Some(positions);
                    self.width = record.width();
                }
                Err(why) => {
                    self.refused = Some(Status::invalid_argument(format!(
                        "line {}: {why}",
                        record.line
                    )))
                }
            }
            return;
        };
        self.rows += 1;
        if self.rows > MAX_ROWS {
            self.refused = Some(Status::invalid_argument(format!(
                "the file has more than {MAX_ROWS} rows: import it in several files"
            )));
            return;
        }
        if let Some((line, what)) = record.malformed {
            self.faults.add(line, what);
            return;
        }
        if record.width() != self.width {
            self.faults.add(
                record.line,
                format!(
                    "{} fields, but the header has {}: quote a field that holds a comma",
                    record.width(),
                    self.width
                ),
            );
            return;
        }
        let fields = match texts(record, &positions) {
            Ok(fields) => fields,
            Err((line, why)) => {
                self.faults.add(line, why);
                return;
            }
        };
        let row = match self.check(&fields) {
            Ok(row) => row,
            Err(whys) => {
                for why in whys {
                    self.faults.add(record.line, why);
                }
                return;
            }
        };
        match self.base.add(record.line, row) {
            Ok(asset) => self.staged.push(asset),
            Err(whys) => {
                for why in whys {
                    self.faults.add(record.line, why);
                }
            }
        }
    }

    /// Every field of a row checked by the rules of the single-item calls;
    /// every fault of the row, not only the first.
    fn check(&mut self, fields: &[&str; COLUMNS.len()]) -> Result<Row, Vec<String>> {
        let mut whys = Vec::new();
        let [
            customer,
            branch,
            branch_email,
            branch_timezone,
            region,
            contact_name,
            contact_email,
            contact_phone,
            project,
            accepted_on,
            lat,
            lng,
            model,
            family,
            serial,
            price,
            currency,
            firmware,
        ] = *fields;
        let country_code = &self.country_code;
        let last = &mut self.last;
        let mut ok = Checked(&mut whys);
        let customer = ok.of(api::required(customer, "customer", MAX_NAME_CHARS));
        let branch = ok.of(api::required(branch, "branch", MAX_NAME_CHARS));
        let notice_email = ok.of(last.branch_email.check(branch_email, |raw| {
            api::email(raw, "branch_email")?.ok_or_else(|| {
                Status::invalid_argument("give the branch_email: the branch's notices go there")
            })
        }));
        let time_zone = ok.of(last.time_zone.check(branch_timezone, |raw| {
            api::time_zone(raw, "branch_timezone")
        }));
        let region = ok.of(hotline_kit::input::line(region, "region", MAX_SHORT_CHARS));
        let contact_name = ok.of(hotline_kit::input::line(
            contact_name,
            "contact_name",
            MAX_NAME_CHARS,
        ));
        let contact_email = ok.of(last
            .contact_email
            .check(contact_email, |raw| api::email(raw, "contact_email")));
        let contact_phone = ok.of(last.contact_phone.check(contact_phone, |raw| {
            api::phone_number(raw, "contact_phone", country_code)
        }));
        let project = ok.of(api::required(project, "project", MAX_NAME_CHARS));
        let accepted_on = ok.of(api::date(accepted_on, "accepted_on"));
        let lat = ok.of(coordinate(lat, "lat"));
        let lng = ok.of(coordinate(lng, "lng"));
        let location = match (lat, lng) {
            (Some(lat), Some(lng)) => ok.of(api::location(lat, lng)),
            _ => None,
        };
        let model = ok.of(api::required(model, "model", MAX_SHORT_CHARS));
        let family = ok.of(api::family(family, "family"));
        let serial = ok.of(api::required(serial, "serial", MAX_SHORT_CHARS));
        let price = ok.of(api::amount(price, "price"));
        let currency = ok.of(domain::currency(currency).map_err(Status::invalid_argument));
        let firmware = ok.of(hotline_kit::input::line(
            firmware,
            "firmware",
            MAX_SHORT_CHARS,
        ));
        let contact = match (contact_name, contact_email, contact_phone) {
            (Some(None), Some(None), Some(None)) => Some(None),
            (Some(Some(_)), Some(None), Some(None)) => {
                whys.push(api::UNREACHABLE_CONTACT.to_owned());
                None
            }
            (Some(None), Some(_), Some(_)) => {
                whys.push(
                    "give the contact_name of the contact_email or contact_phone: contacts are told apart by name".into(),
                );
                None
            }
            (Some(Some(name)), Some(email), Some(phone)) => Some(Some((name, email, phone))),
            _ => None,
        };
        match (
            customer,
            branch,
            notice_email,
            time_zone,
            region,
            contact,
            project,
            accepted_on,
            location,
            model,
            family,
            serial,
            price,
            currency,
            firmware,
        ) {
            (
                Some(customer),
                Some(branch),
                Some(notice_email),
                Some(time_zone),
                Some(region),
                Some(contact),
                Some(project),
                Some(accepted_on),
                Some(location),
                Some(model),
                Some(family),
                Some(serial),
                Some(price),
                Some(currency),
                Some(firmware),
            ) if whys.is_empty() => Ok(Row {
                customer,
                branch,
                notice_email,
                time_zone,
                region: region.unwrap_or_default(),
                contact,
                project,
                accepted_on,
                location,
                model,
                family,
                serial,
                price,
                currency,
                firmware: firmware.unwrap_or_default(),
            }),
            _ => Err(whys),
        }
    }
}

/// Keeps the faults of a row's fields as they are checked.
struct Checked<'w>(&'w mut Vec<String>);

impl Checked<'_> {
    /// The value, or `None` with its fault kept.
    fn of<T>(&mut self, result: Result<T, Status>) -> Option<T> {
        result
            .map_err(|status| self.0.push(status.message().to_owned()))
            .ok()
    }
}

/// A latitude or longitude: empty, or a plain decimal number.
fn coordinate(value: &str, name: &str) -> Result<Option<f64>, Status> {
    let Some(text) = hotline_kit::input::line(value, name, MAX_NUMBER_CHARS)? else {
        return Ok(None);
    };
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    match text.parse::<f64>() {
        Ok(number) if plain && number.is_finite() => Ok(Some(number)),
        _ => Err(Status::invalid_argument(format!(
            "{name} {text:?} is not a coordinate: write decimal degrees with a point, like 52.52"
        ))),
    }
}

/// Where each column is in the file's records, from the header: names
/// matched case-blind and trimmed, in any order; every column once, and
/// no other.
fn read_header(record: &Record) -> Result<[usize; COLUMNS.len()], String> {
    if let Some((_, what)) = record.malformed {
        return Err(format!("the header: {what}"));
    }
    let mut names = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let Ok(name) = std::str::from_utf8(&field.bytes) else {
            let utf16 =
                field.bytes.starts_with(b"\xFF\xFE") || field.bytes.starts_with(b"\xFE\xFF");
            return Err(if utf16 {
                "the file is UTF-16 text: save it as CSV UTF-8".into()
            } else {
                "the header is not UTF-8 text: save the file as CSV UTF-8".into()
            });
        };
        names.push(name.trim().to_lowercase());
    }
    if let [only] = names.as_slice() {
        for (separator, named) in [(';', "semicolons"), ('\t', "tabs")] {
            if only.contains(separator) {
                return Err(format!(
                    "the columns are separated by {named}: separate them with commas ({})",
                    header()
                ));
            }
        }
    }
    let mut faults = Vec::new();
    let mut positions = [0; COLUMNS.len()];
    for (i, column) in COLUMNS.iter().enumerate() {
        let at: Vec<usize> = (0..names.len())
            .filter(|&n| names[n] == column.name)
            .collect();
        match at.as_slice() {
            [one] => positions[i] = *one,
            [] => faults.push(format!("no column {}", column.name)),
            _ => faults.push(format!("column {} appears {} times", column.name, at.len())),
        }
    }
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !COLUMNS.iter().any(|c| c.name == n.as_str()))
        .map(|n| format!("{n:?}"))
        .collect();
    if !unknown.is_empty() {
        faults.push(format!("unknown columns {}", unknown.join(", ")));
    }
    if record.dropped_fields > 0 {
        faults.push(format!("{} columns", record.width()));
    }
    if faults.is_empty() {
        Ok(positions)
    } else {
        Err(format!(
            "the header has {}: it names each of {} once",
            faults.join("; "),
            header()
        ))
    }
}

/// The record's fields as text, in [`COLUMNS`] order; the first field
/// that is too long or not UTF-8 is the fault, with its line.
fn texts<'r>(
    record: &'r Record,
    positions: &[usize; COLUMNS.len()],
) -> Result<[&'r str; COLUMNS.len()], (u64, String)> {
    let mut texts = [""; COLUMNS.len()];
    for (i, column) in COLUMNS.iter().enumerate() {
        let field = &record.fields[positions[i]];
        if field.overlong {
            return Err((
                field.line,
                format!("{} is longer than {} characters", column.name, column.max),
            ));
        }
        texts[i] = std::str::from_utf8(&field.bytes).map_err(|error| {
            let offset = error.valid_up_to();
            (
                field.line_of(offset),
                format!(
                    "{} is not UTF-8 text (byte 0x{:02X}): save the file as CSV UTF-8",
                    column.name, field.bytes[offset]
                ),
            )
        })?;
    }
    Ok(texts)
}

/// The message for a value that differs from an earlier row's.
fn differs(what: &str, column: &str, here: &str, there: &str, line: u64) -> String {
    format!(
        "{what} has {column} {here:?} here but {there:?} on line {line}: give it the same values on every row"
    )
}

/// A location as the file writes it: `lat,lng`, or empty.
fn place(location: Option<(f64, f64)>) -> String {
    location.map_or_else(String::new, |(lat, lng)| format!("{lat},{lng}"))
}

impl Base {
    /// Adds a checked row: its customer, branch, project, contact and
    /// model once, each compared with what earlier rows said of it.
    fn add(&mut self, line: u64, row: Row) -> Result<StagedAsset, Vec<String>> {
        let mut whys = Vec::new();
        let serial_key: Box<str> = row.serial.to_uppercase().into();
        if let Some(first) = self.serials.get(&serial_key) {
            whys.push(format!(
                "serial {:?} is also on line {first}: a serial is one device, on one row",
                row.serial
            ));
        }
        let customer = self
            .customer_keys
            .get(&row.customer.to_lowercase())
            .copied();
        let customer_name = customer.map_or(row.customer.as_str(), |c| &self.customers[c].name);
        let branch_key = |c: usize| (c, row.branch.to_lowercase());
        let branch = customer.and_then(|c| self.branch_keys.get(&branch_key(c)).copied());
        // Messages are worded only when something differs: most rows
        // repeat what earlier rows said.
        if let Some(b) = branch {
            let known = &self.branches[b];
            let what = || format!("branch {:?} of {customer_name:?}", known.name);
            for (column, here, there) in [
                ("branch_email", &row.notice_email, &known.notice_email),
                ("branch_timezone", &row.time_zone, &known.time_zone),
                ("region", &row.region, &known.region),
            ] {
                if here != there {
                    whys.push(differs(&what(), column, here, there, known.line));
                }
            }
        }
        let project = customer.and_then(|c| {
            self.project_keys
                .get(&(c, row.project.to_lowercase()))
                .copied()
        });
        if let Some(p) = project {
            let known = &self.projects[p];
            let what = || format!("project {:?} of {customer_name:?}", known.name);
            if branch != Some(known.branch) {
                whys.push(format!(
                    "{} is at branch {:?} here but {:?} on line {}: a project is at one branch",
                    what(),
                    row.branch,
                    self.branches[known.branch].name,
                    known.line
                ));
            }
            if row.accepted_on != known.accepted_on {
                let (here, there) = (row.accepted_on.to_string(), known.accepted_on.to_string());
                whys.push(differs(&what(), "accepted_on", &here, &there, known.line));
            }
            if row.location != known.location {
                let (here, there) = (place(row.location), place(known.location));
                whys.push(differs(&what(), "lat,lng", &here, &there, known.line));
            }
        }
        let contact = match &row.contact {
            Some((name, email, phone)) => {
                let known = customer
                    .and_then(|c| self.contact_keys.get(&(c, name.to_lowercase())).copied());
                if let Some(k) = known {
                    let known = &self.contacts[k];
                    let what = || format!("contact {:?} of {customer_name:?}", known.name);
                    let text = |v: &Option<String>| v.clone().unwrap_or_default();
                    for (column, here, there) in [
                        ("contact_email", email, &known.email),
                        ("contact_phone", phone, &known.phone),
                    ] {
                        if here != there {
                            whys.push(differs(
                                &what(),
                                column,
                                &text(here),
                                &text(there),
                                known.line,
                            ));
                        }
                    }
                }
                for (column, value, holders) in [
                    ("contact_email", email, &self.emails),
                    ("contact_phone", phone, &self.phones),
                ] {
                    let holder = value.as_ref().and_then(|v| holders.get(v)).copied();
                    if let Some(h) = holder.filter(|h| Some(*h) != known) {
                        let other = &self.contacts[h];
                        whys.push(format!(
                            "{column} {:?} is also {:?}'s of {:?} on line {}: it belongs to one contact",
                            value.as_deref().unwrap_or_default(),
                            other.name,
                            self.customers[other.customer].name,
                            other.line
                        ));
                    }
                }
                known
            }
            None => None,
        };
        let model = self.model_keys.get(&row.model.to_lowercase()).copied();
        if let (Some(m), Some(family)) = (model, &row.family) {
            let known = &self.models[m];
            if let Some(known_family) = known.family.as_ref().filter(|f| *f != family) {
                let what = format!("model {:?}", known.name);
                whys.push(differs(&what, "family", family, known_family, known.line));
            }
        }
        if !whys.is_empty() {
            return Err(whys);
        }

        self.serials.insert(serial_key, line);
        let customer = customer.unwrap_or_else(|| {
            self.customers.push(Customer {
                line,
                name: row.customer.clone(),
            });
            self.customer_keys
                .insert(row.customer.to_lowercase(), self.customers.len() - 1);
            self.customers.len() - 1
        });
        let branch = branch.unwrap_or_else(|| {
            self.branches.push(Branch {
                line,
                customer,
                name: row.branch.clone(),
                notice_email: row.notice_email,
                time_zone: row.time_zone,
                region: row.region,
            });
            self.branch_keys
                .insert(branch_key(customer), self.branches.len() - 1);
            self.branches.len() - 1
        });
        let project = project.unwrap_or_else(|| {
            self.projects.push(Project {
                line,
                customer,
                branch,
                name: row.project.clone(),
                accepted_on: row.accepted_on,
                location: row.location,
            });
            self.project_keys.insert(
                (customer, row.project.to_lowercase()),
                self.projects.len() - 1,
            );
            self.projects.len() - 1
        });
        if let Some((name, email, phone)) = row.contact {
            match contact {
                Some(k) => {
                    let known = &mut self.contacts[k];
                    if known.branch != ContactBranch::One(branch) {
                        known.branch = ContactBranch::Several;
                    }
                }
                None => {
                    let k = self.contacts.len();
                    self.contact_keys.insert((customer, name.to_lowercase()), k);
                    if let Some(email) = &email {
                        self.emails.insert(email.clone(), k);
                    }
                    if let Some(phone) = &phone {
                        self.phones.insert(phone.clone(), k);
                    }
                    self.contacts.push(Contact {
                        line,
                        customer,
                        branch: ContactBranch::One(branch),
                        name,
                        email,
                        phone,
                    });
                }
            }
        }
        let model = match model {
            Some(m) => {
                let known = &mut self.models[m];
                if known.family.is_none() && row.family.is_some() {
                    // The line that gives the family answers for it.
                    known.family = row.family;
                    known.line = line;
                }
                m
            }
            None => {
                self.models.push(Model {
                    line,
                    name: row.model.clone(),
                    family: row.family,
                });
                self.model_keys
                    .insert(row.model.to_lowercase(), self.models.len() - 1);
                self.models.len() - 1
            }
        };
        Ok(StagedAsset {
            line,
            serial: row.serial,
            project,
            model,
            price: row.price,
            currency: row.currency,
            firmware: row.firmware,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = "Acme,Berlin,berlin@acme.example,Europe/Berlin,north,Ann Lee,ann@acme.example,+49301234567,HQ,2024-01-15,52.52,13.405,DS-2CD2143,camera,CAM-1,6000,EUR,5.7.3";

    /// Imports `text` whole: the base, the faults as (line, reason), and
    /// the staged serials.
    fn read(text: &str) -> (Base, Vec<(u64, String)>, Vec<String>) {
        let mut import = Import::new("49");
        import.feed(text.as_bytes()).unwrap();
        import.finish().unwrap();
        let serials = import.take_staged().into_iter().map(|a| a.serial).collect();
        let (base, faults) = import.into_parts();
        (base, faults.listed(), serials)
    }

    #[test]
    fn columns_are_found_by_name_in_any_order_and_letter_case() {
        let header = header();
        let mut names: Vec<&str> = header.split(',').collect();
        names.reverse();
        let fields: Vec<&str> = ROW.split(',').rev().collect();
        let file = format!(
            " {} \n{}\n",
            names.join(" , ").to_uppercase(),
            fields.join(",")
        );
        let (base, faults, serials) = read(&file);
        assert!(faults.is_empty(), "{faults:?}");
        assert_eq!(serials, ["CAM-1"]);
        assert_eq!(base.customers[0].name, "Acme");
        assert_eq!(base.contacts[0].phone.as_deref(), Some("+49301234567"));
    }

    #[test]
    fn a_header_that_does_not_name_each_column_once_refuses_the_file() {
        let mut import = Import::new("");
        let refused = import
            .feed(format!("{},notes,serial\n", header()).as_bytes())
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with(
                "line 1: the header has column serial appears 2 times; unknown columns \"notes\""
            ),
            "{refused:?}"
        );
        assert!(import.feed(ROW.as_bytes()).is_err(), "nothing more is read");
    }

    #[test]
    fn rows_must_agree_on_what_they_share_and_a_contact_of_two_branches_is_the_customers() {
        let other_branch = ROW
            .replace("Berlin,berlin@", "Potsdam,potsdam@")
            .replace("HQ,", "Lobby,")
            .replace("CAM-1", "CAM-2");
        let moved = ROW
            .replace("HQ,2024-01-15", "HQ,2024-02-01")
            .replace("CAM-1", "CAM-3");
        let shared = ROW
            .replace("Ann Lee,", "Bob Ray,")
            .replace("+49301234567", "")
            .replace("CAM-1", "CAM-4");
        let file = format!("{}\n{ROW}\n{other_branch}\n{moved}\n{shared}\n", header());
        let (base, faults, serials) = read(&file);
        assert_eq!(serials, ["CAM-1", "CAM-2"]);
        assert_eq!(base.contacts.len(), 1);
        assert_eq!(base.contacts[0].branch, ContactBranch::Several);
        assert_eq!(
            faults,
            [
                (
                    4,
                    "project \"HQ\" of \"Acme\" has accepted_on \"2024-02-01\" here but \"2024-01-15\" on line 2: give it the same values on every row".to_owned()
                ),
                (
                    5,
                    "contact_email \"ann@acme.example\" is also \"Ann Lee\"'s of \"Acme\" on line 2: it belongs to one contact".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_value_repeated_after_a_fault_is_refused_again() {
        let bad = ROW.replace("ann@acme.example", "ann@");
        let file = format!("{}\n{bad}\n{}\n", header(), bad.replace("CAM-1", "CAM-2"));
        let (_, faults, serials) = read(&file);
        assert!(serials.is_empty());
        assert_eq!(faults.len(), 2, "{faults:?}");
        assert!(
            faults
                .iter()
                .all(|(_, why)| why.contains("is not an email address"))
        );
    }
}
