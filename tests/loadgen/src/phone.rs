//! `cti`: PBX call events into tickets. C concurrent PBX lines each play
//! whole calls (`newCall`, `answer`, `hangup`, an answered inbound call from
//! a number of its own, so every call opens a ticket) for D. Events count as
//! accepted on the PBX's `200`; a call counts as in tickets when intake has
//! recorded the ticket it went on (`intake.calls.forwarded_at`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hotline_kit::{config::Config, db};
use serde_json::json;

use crate::{ms, percentile, round, until_done};

pub async fn cti(concurrency: usize, duration: Duration) -> anyhow::Result<()> {
    let config = Config::load(None)?;
    let token = std::env::var("HOTLINE_INTAKE__CTI_TOKEN")
        .context("HOTLINE_INTAKE__CTI_TOKEN is not set")?;
    let url = format!("http://{}/api/v1/cti/{token}", config.http_addr);
    let pool = db::pool(&config, "intake")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (accepted, errors, calls) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let deadline = started + duration;
    let lines: Vec<_> = (0..concurrency)
        .map(|line| {
            let (client, url, run) = (client.clone(), url.clone(), run.clone());
            let (latencies, accepted, errors, calls) = (
                latencies.clone(),
                accepted.clone(),
                errors.clone(),
                calls.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let call_id = format!("lg-{run}-{line}-{n}");
                    // A number of its own per call: +49 + 11 digits.
                    let from = format!("+4915{:03}{:06}", line % 1000, n % 1_000_000);
                    for (event, extra) in [
                        ("newCall", ""),
                        ("answer", "&user=agent"),
                        ("hangup", "&cause=normalClearing"),
                    ] {
                        let body = format!(
                            "event={event}&callId={call_id}&direction=in&from={}&to=200{extra}",
                            from.replace('+', "%2B")
                        );
                        let sent = Instant::now();
                        let answer = client
                            .post(&url)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(body)
                            .send()
                            .await;
                        match answer {
                            Ok(response) if response.status().is_success() => {
                                latencies.lock().unwrap().push(ms(sent.elapsed()));
                                accepted.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for line in lines {
        line.await?;
    }
    let sending = started.elapsed();
    // Until every call of the run is on a ticket (or 120 s).
    let (done, total) = until_done(
        &pool,
        "SELECT count(forwarded_at), count(*) FROM calls WHERE call_id LIKE $1",
        &format!("lg-{run}-%"),
    )
    .await?;
    let into_tickets = started.elapsed();
    let mut latencies = latencies.lock().unwrap().clone();
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "scenario": "cti",
            "concurrency": concurrency,
            "duration_s": round(sending.as_secs_f64()),
            "events_accepted": accepted,
            "errors": errors.load(Ordering::Relaxed),
            "accepted_per_s": round(accepted as f64 / sending.as_secs_f64()),
            "calls": total,
            "calls_in_tickets": done,
            "all_in_tickets_s": round(into_tickets.as_secs_f64()),
            "events_into_tickets_per_s": round((done * 3) as f64 / into_tickets.as_secs_f64()),
            "http_p50_ms": percentile(&mut latencies, 50.0),
            "http_p99_ms": percentile(&mut latencies, 99.0),
            "http_p999_ms": percentile(&mut latencies, 99.9),
        })
    );
    Ok(())
}
