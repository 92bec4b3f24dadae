//! `import`: the installed base in bulk, through the real server.
//!
//! Generates a CSV of C customers and A assets as a vendor's spreadsheet
//! has them: each customer with 1 to 3 branches, a contact or two, a
//! project per branch (a second one for some), about A/C assets spread
//! over its projects, six models of three families, prices in the
//! customer's currency. It streams the file to `ImportInstalledBase` in
//! 1 MiB pieces (what `hotline import installed-base` does), then streams
//! it again — which must change nothing — and reports both timings. Names,
//! serials, emails and phones carry the run's id, so runs do not collide.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::stream;
use hotline_kit::grpc::{self, BearerToken};
use hotline_proto::contracts::v1::{self as pb, contracts_service_client::ContractsServiceClient};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;

use crate::round;

const HEADER: &str = "customer,branch,branch_email,branch_timezone,region,contact_name,contact_email,contact_phone,project,accepted_on,lat,lng,model,family,serial,price,currency,firmware";
const MODELS: [(&str, &str); 6] = [
    ("DS-2CD2143G2-I", "camera"),
    ("DS-2CD2T47G2-L", "camera"),
    ("DS-2CD3356G2-IS", "camera"),
    ("DS-2DE4425IW-DE", "ptz"),
    ("DS-7608NXI-K2", "nvr"),
    ("DS-9664NI-M8", "nvr"),
];
const ZONES: [(&str, &str); 4] = [
    ("Europe/Berlin", "EUR"),
    ("Europe/Paris", "EUR"),
    ("America/New_York", "USD"),
    ("Asia/Shanghai", "CNY"),
];
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
const FIRMWARE: [&str; 3] = ["5.7.3", "5.8.0", "4.1.2"];
/// The size of the pieces the file is sent in, as the CLI sends it.
const PIECE_BYTES: usize = 1 << 20;

/// The CSV of `customers` customers holding `assets` assets in all.
pub fn generate(customers: u64, assets: u64, run: &str, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut csv = String::with_capacity((assets as usize + 1) * 200);
    csv.push_str(HEADER);
    csv.push('\n');
    let mut serial = 0u64;
    for c in 0..customers {
        // Asset counts vary around the mean and add up to `assets`: the
        // boundaries of each customer's share, each moved at most 0.4 of
        // a share.
        let boundary = |i: u64, jitter: f64| {
            if i == 0 || i == customers {
                i * assets / customers.max(1)
            } else {
                ((i as f64 + jitter) * assets as f64 / customers as f64) as u64
            }
        };
        let jitter_start = rng_jitter(seed, c);
        let jitter_end = rng_jitter(seed, c + 1);
        let own = boundary(c + 1, jitter_end).saturating_sub(boundary(c, jitter_start));
        let customer = format!("Customer {run}-{c}");
        let (zone, currency) = ZONES[rng.random_range(0..ZONES.len())];
        let branches = rng.random_range(1..=3u64);
        let contacts = rng.random_range(1..=2u64);
        let mut projects = Vec::new();
        for b in 0..branches {
            let count = if rng.random_bool(0.3) { 2 } else { 1 };
            for p in 0..count {
                let accepted = chrono::NaiveDate::from_ymd_opt(2019, 1, 1)
                    .and_then(|d| d.checked_add_days(chrono::Days::new(rng.random_range(0..2500))))
                    .unwrap_or_default();
                projects.push((
                    b,
                    format!("Site {b}-{p}"),
                    accepted,
                    rng.random_range(-60.0..60.0f64),
                    rng.random_range(-170.0..170.0f64),
                ));
            }
        }
        for a in 0..own {
            // A site's devices are listed together, as in a spreadsheet.
            let at = (a * projects.len() as u64 / own) as usize;
            let (b, project, accepted, lat, lng) = &projects[at];
            let k = b % contacts;
            let (model, family) = MODELS[rng.random_range(0..MODELS.len())];
            let cents = rng.random_range(10_000..900_000u64);
            serial += 1;
            csv.push_str(&format!(
                "{customer},Branch {b},b{b}.c{c}.{run}@customers.example,{zone},{region},Contact {k},{},{},{project},{accepted},{lat:.5},{lng:.5},{model},{family},{},{}.{:02},{currency},{}\n",
                contact_email(run, c, k),
                contact_phone(run, c, k),
                serial_number(run, serial),
                cents / 100,
                cents % 100,
                FIRMWARE[(serial % 3) as usize],
                region = REGIONS[(c % 4) as usize],
            ));
        }
    }
    csv.into_bytes()
}

/// The run's id in every name of a file generated from `seed`.
pub fn run_of(seed: u64) -> String {
    format!("{:08x}", StdRng::seed_from_u64(seed).random::<u32>())
}

/// Contact `k`'s email at customer `c` (every customer has contact 0).
pub fn contact_email(run: &str, c: u64, k: u64) -> String {
    format!("k{k}.c{c}.{run}@customers.example")
}

/// Contact `k`'s phone at customer `c`: unique across contacts, +49, three
/// digits of the run, the customer and the contact.
pub fn contact_phone(run: &str, c: u64, k: u64) -> String {
    let area = 100 + u64::from_str_radix(&run[..4], 16).unwrap_or(0) % 900;
    format!("+49{area}{c:07}{k}")
}

/// The `n`th asset's serial, from 1.
pub fn serial_number(run: &str, n: u64) -> String {
    format!("SN-{run}-{n:08}")
}

/// A customer boundary's jitter in [-0.4, 0.4), the same for both
/// customers that share it.
fn rng_jitter(seed: u64, boundary: u64) -> f64 {
    StdRng::seed_from_u64(seed ^ boundary.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .random_range(-0.4..0.4)
}

pub type Client =
    ContractsServiceClient<InterceptedService<tonic::transport::Channel, BearerToken>>;

/// Streams `file` to the server: the summary and the seconds it took.
pub async fn send(
    client: &mut Client,
    file: Arc<Vec<u8>>,
) -> anyhow::Result<(pb::ImportSummary, f64)> {
    let pieces = file.len().div_ceil(PIECE_BYTES);
    let chunks = stream::iter((0..pieces).map(move |i| pb::ImportChunk {
        data: file[i * PIECE_BYTES..((i + 1) * PIECE_BYTES).min(file.len())].to_vec(),
    }));
    let started = Instant::now();
    let summary = client
        .import_installed_base(chunks)
        .await
        .context("the import failed")?
        .into_inner();
    Ok((summary, started.elapsed().as_secs_f64()))
}

fn counts(counts: &Option<pb::ImportCounts>) -> Value {
    let c = counts.unwrap_or_default();
    json!({ "created": c.created, "updated": c.updated, "unchanged": c.unchanged })
}

fn pass(summary: &pb::ImportSummary, seconds: f64) -> Value {
    json!({
        "seconds": round(seconds),
        "rows_per_s": round(summary.rows as f64 / seconds),
        "errors": summary.error_count,
        "first_errors": summary.errors.iter().take(5)
            .map(|e| format!("line {}: {}", e.line, e.reason)).collect::<Vec<_>>(),
        "customers": counts(&summary.customers),
        "branches": counts(&summary.branches),
        "contacts": counts(&summary.contacts),
        "projects": counts(&summary.projects),
        "models": counts(&summary.models),
        "assets": counts(&summary.assets),
    })
}

pub async fn import(
    customers: u64,
    assets: u64,
    seed: u64,
    save: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        customers > 0 && assets >= customers,
        "give at least one asset per customer"
    );
    let server =
        std::env::var("HOTLINE_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("HOTLINE_TOKEN").context("HOTLINE_TOKEN is not set (a manager's)")?;
    let run = run_of(seed);
    let started = Instant::now();
    let file = generate(customers, assets, &run, seed);
    let generated = started.elapsed().as_secs_f64();
    if let Some(path) = save {
        std::fs::write(&path, &file).with_context(|| format!("writing {}", path.display()))?;
    }
    let bytes = file.len();
    let file = Arc::new(file);
    let channel = grpc::channel_waiting(&server, Duration::from_secs(900))?;
    let mut client =
        ContractsServiceClient::new(InterceptedService::new(channel, BearerToken::new(&token)?));
    let (first, first_s) = send(&mut client, file.clone()).await?;
    let (again, again_s) = send(&mut client, file).await?;
    let changed = |s: &pb::ImportSummary| {
        [
            &s.customers,
            &s.branches,
            &s.contacts,
            &s.projects,
            &s.models,
            &s.assets,
        ]
        .iter()
        .any(|c| c.is_some_and(|c| c.created + c.updated > 0))
    };
    let mut again_pass = pass(&again, again_s);
    again_pass["changed"] = json!(changed(&again));
    let report = json!({
        "scenario": "import",
        "run": run,
        "customers": customers,
        "assets": assets,
        "rows": first.rows,
        "bytes": bytes,
        "generate_s": round(generated),
        "import": pass(&first, first_s),
        "again": again_pass,
    });
    println!("{report}");
    Ok(())
}
