//! `entitlement`: who is calling, while the phone rings. C callers ask
//! `Entitlement` by phone, email or serial, a random mix, for D, against an
//! installed base the `import` scenario generated from the same seed (so
//! the keys are known without reading the database). A share of the keys
//! (`--unknown`) names nobody, as calls from new numbers do. Every answer
//! is counted by how it matched: a base that is not there shows as no
//! `found`, not as speed. With `--rate R` the callers share R lookups a
//! second on a fixed schedule instead of asking as fast as they can.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hotline_kit::grpc::{self, BearerToken};
use hotline_proto::contracts::v1::{
    EntitlementRequest, Match, contracts_service_client::ContractsServiceClient,
    entitlement_request::Key,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;

use crate::{
    import::{contact_email, contact_phone, run_of, serial_number},
    ms, percentile, round,
};

const KINDS: [&str; 3] = ["phone", "email", "serial"];

/// What one kind of key saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    found: u64,
    unknown: u64,
    ambiguous: u64,
}

/// The base `import --seed seed --customers customers --assets assets`
/// wrote, and a key of `kind` in it (or, unknown, not in it).
struct Base {
    run: String,
    customers: u64,
    assets: u64,
}

impl Base {
    fn key(&self, kind: usize, unknown: bool, rng: &mut StdRng) -> Key {
        // Unknown keys are the next customers' and assets' after the base:
        // well-formed, and nobody's.
        let customer = if unknown {
            self.customers + rng.random_range(0..self.customers)
        } else {
            rng.random_range(0..self.customers)
        };
        match kind {
            0 => Key::Phone(contact_phone(&self.run, customer, 0)),
            1 => Key::Email(contact_email(&self.run, customer, 0)),
            _ => Key::Serial(serial_number(
                &self.run,
                if unknown {
                    self.assets + rng.random_range(1..=self.assets)
                } else {
                    rng.random_range(1..=self.assets)
                },
            )),
        }
    }
}

pub async fn entitlement(
    seed: u64,
    customers: u64,
    assets: u64,
    unknown: f64,
    concurrency: usize,
    duration: Duration,
    rate: u32,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        customers > 0 && assets > 0,
        "give the --customers and --assets the base was imported with"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&unknown),
        "--unknown is a share from 0 to 1"
    );
    let server =
        std::env::var("HOTLINE_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("HOTLINE_TOKEN").context("HOTLINE_TOKEN is not set")?;
    let base = Arc::new(Base {
        run: run_of(seed),
        customers,
        assets,
    });
    let channel = grpc::channel(&server)?;
    let bearer = BearerToken::new(&token)?;
    let mut probe = ContractsServiceClient::new(InterceptedService::new(channel, bearer.clone()));
    let first = probe
        .entitlement(EntitlementRequest {
            key: Some(Key::Serial(serial_number(&base.run, 1))),
            on: String::new(),
        })
        .await
        .context("the first lookup failed")?
        .into_inner();
    anyhow::ensure!(
        first.r#match() == Match::Found,
        "serial {} is unknown: import the base first \
         (hotline-loadgen import --seed {seed} --customers {customers} --assets {assets})",
        serial_number(&base.run, 1)
    );

    let tallies: Arc<Mutex<[Tally; 3]>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    // Four connections, as a fleet's clients share a few.
    let channels: Vec<_> = (0..4)
        .map(|_| grpc::channel(&server))
        .collect::<anyhow::Result<_>>()?;
    let callers: Vec<_> = (0..concurrency)
        .map(|caller| {
            let mut client = ContractsServiceClient::new(InterceptedService::new(
                channels[caller % channels.len()].clone(),
                bearer.clone(),
            ));
            let (base, tallies, errors) = (base.clone(), tallies.clone(), errors.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ caller as u64);
            // Paced: each caller's share of RATE, on a fixed schedule (a
            // late answer does not push the next call back).
            let mut pace = (rate > 0).then(|| {
                let period = Duration::from_secs_f64(concurrency as f64 / f64::from(rate));
                // Staggered, so the callers do not all ask at once.
                let first = tokio::time::Instant::now()
                    + period.mul_f64(caller as f64 / concurrency as f64);
                let mut ticks = tokio::time::interval_at(first, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                ticks
            });
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if let Some(ticks) = pace.as_mut() {
                        ticks.tick().await;
                    }
                    let kind = rng.random_range(0..KINDS.len());
                    let key = base.key(kind, rng.random_bool(unknown), &mut rng);
                    let sent = Instant::now();
                    let answer = client
                        .entitlement(EntitlementRequest {
                            key: Some(key),
                            on: String::new(),
                        })
                        .await;
                    let took = ms(sent.elapsed());
                    match answer {
                        Ok(answer) => {
                            let mut tallies = tallies.lock().unwrap();
                            let tally = &mut tallies[kind];
                            tally.latencies.push(took);
                            match answer.into_inner().r#match() {
                                Match::Found => tally.found += 1,
                                Match::Ambiguous => tally.ambiguous += 1,
                                _ => tally.unknown += 1,
                            }
                        }
                        Err(status) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("lookup failed: {status}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut tallies = std::mem::take(&mut *tallies.lock().unwrap());
    let mut all: Vec<f64> = tallies
        .iter()
        .flat_map(|t| t.latencies.iter().copied())
        .collect();
    let by_kind: serde_json::Map<String, Value> = KINDS
        .iter()
        .zip(tallies.iter_mut())
        .map(|(kind, tally)| {
            let value = json!({
                "lookups": tally.latencies.len(),
                "found": tally.found,
                "unknown": tally.unknown,
                "ambiguous": tally.ambiguous,
                "p50_ms": percentile(&mut tally.latencies, 50.0),
                "p99_ms": percentile(&mut tally.latencies, 99.0),
            });
            ((*kind).to_owned(), value)
        })
        .collect();
    println!(
        "{}",
        json!({
            "scenario": "entitlement",
            "run": base.run,
            "customers": customers,
            "assets": assets,
            "unknown_share": unknown,
            "rate_asked": rate,
            "concurrency": concurrency,
            "duration_s": round(elapsed),
            "lookups": all.len(),
            "errors": errors.load(Ordering::Relaxed),
            "throughput_per_s": round(all.len() as f64 / elapsed),
            "p50_ms": percentile(&mut all, 50.0),
            "p90_ms": percentile(&mut all, 90.0),
            "p99_ms": percentile(&mut all, 99.0),
            "max_ms": percentile(&mut all, 100.0),
            "by_kind": by_kind,
        })
    );
    Ok(())
}
