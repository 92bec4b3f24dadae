//! `dispatch`: routing under load, with the whole fleet. The scenario
//! imports a small installed base (the `import` generator: assets of three
//! model families at branches of four regions), adds PEOPLE agents with a
//! mix of skills (one or two of the families) and regions (one or two, or
//! none: all), states them online (again every 30 s, inside any heartbeat
//! time-to-live of a minute or more), then opens tickets at RATE a second
//! for D from unknown senders, each naming a serial of the base, so that
//! `contracts` resolves the asset and routing needs its family's skill in
//! its branch's region.
//!
//! It reports, from `ticket.assigned` events: assignment latency from the
//! ticket's creation (its `created_at`) to the event's time (p50, p99,
//! max), tickets never assigned and, of those, how many had someone
//! eligible at the end (online, under capacity, with the skill, serving
//! the region: checked here from the directory and the queue, not taken
//! from routing's own words), and the spread of load among people of equal
//! skills and regions (the largest max − min of assigned tickets in any
//! such group of two or more).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use hotline_kit::{
    config::Config,
    grpc::{self, BearerToken},
    testing::EventTap,
    time::from_timestamp,
};
use hotline_proto::{
    contracts::v1::contracts_service_client::ContractsServiceClient,
    dispatch::v1::{self as dpb, dispatch_service_client::DispatchServiceClient},
    events::v1::event_envelope::Payload,
    tickets::v1::{CreateTicketRequest, ticket_service_client::TicketServiceClient},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{import, percentile, round};

const FAMILIES: [&str; 3] = ["camera", "ptz", "nvr"];
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
/// The base the tickets name: small, so importing it takes seconds.
const CUSTOMERS: u64 = 400;
const ASSETS: u64 = 4_000;

type Dispatch = DispatchServiceClient<InterceptedService<Channel, BearerToken>>;

/// One agent of the run, as added.
struct Agent {
    email: String,
    skills: Vec<&'static str>,
    regions: Vec<&'static str>,
}

impl Agent {
    fn generate(run: &str, i: usize, rng: &mut StdRng) -> Self {
        let mut skills: Vec<&str> = FAMILIES.to_vec();
        let mut regions: Vec<&str> = REGIONS.to_vec();
        // One or two skills; one or two regions, or (a tenth) all of them.
        let keep = rng.random_range(1..=2);
        while skills.len() > keep {
            skills.remove(rng.random_range(0..skills.len()));
        }
        if rng.random_bool(0.9) {
            let keep = rng.random_range(1..=2);
            while regions.len() > keep {
                regions.remove(rng.random_range(0..regions.len()));
            }
        } else {
            regions.clear();
        }
        skills.sort_unstable();
        regions.sort_unstable();
        Self {
            email: format!("a{i}.{run}@desk.example"),
            skills,
            regions,
        }
    }

    /// Whether the agent may take a ticket needing `skills` in `region`.
    fn fits(&self, skills: &[String], region: &str) -> bool {
        skills.iter().all(|s| self.skills.contains(&s.as_str()))
            && (region.is_empty() || self.regions.is_empty() || self.regions.contains(&region))
    }
}

pub async fn dispatch(
    people: usize,
    capacity: u32,
    rate: u32,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        people > 0 && rate > 0,
        "give at least one person and a rate"
    );
    let config = Config::load(None)?;
    let server =
        std::env::var("HOTLINE_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("HOTLINE_TOKEN").context("HOTLINE_TOKEN is not set (a manager's)")?;
    let bearer = BearerToken::new(&token)?;
    let channels: Vec<Channel> = (0..4)
        .map(|_| grpc::channel(&server))
        .collect::<anyhow::Result<_>>()?;
    let run = import::run_of(seed);
    let mut rng = StdRng::seed_from_u64(seed);

    // The base the tickets name.
    let started = Instant::now();
    let file = Arc::new(import::generate(CUSTOMERS, ASSETS, &run, seed));
    let mut contracts = ContractsServiceClient::new(InterceptedService::new(
        grpc::channel_waiting(&server, Duration::from_secs(300))?,
        bearer.clone(),
    ));
    let (summary, _) = import::send(&mut contracts, file).await?;
    anyhow::ensure!(
        summary.error_count == 0,
        "the generated base was refused: {:?}",
        summary.errors.first()
    );
    let imported_s = started.elapsed().as_secs_f64();

    // The people, online.
    let started = Instant::now();
    let agents: Arc<Vec<Agent>> = Arc::new(
        (0..people)
            .map(|i| Agent::generate(&run, i, &mut rng))
            .collect(),
    );
    let mut directory =
        DispatchServiceClient::new(InterceptedService::new(channels[0].clone(), bearer.clone()));
    for agent in agents.iter() {
        directory
            .add_person(dpb::AddPersonRequest {
                name: format!("Agent {}", agent.email),
                email: agent.email.clone(),
                roles: vec!["agent".into()],
                skills: agent.skills.iter().map(|s| (*s).to_owned()).collect(),
                regions: agent.regions.iter().map(|r| (*r).to_owned()).collect(),
                capacity: Some(capacity),
                ..Default::default()
            })
            .await
            .with_context(|| format!("adding {}", agent.email))?;
    }
    let presence = tokio::spawn(keep_online(directory.clone(), agents.clone()));
    // The first round of presence, all of it, before any ticket.
    online(&mut directory, &agents).await?;
    let people_s = started.elapsed().as_secs_f64();

    // Assignments as they are announced.
    let assigned: Arc<Mutex<HashMap<String, (String, f64)>>> = Arc::default();
    let mut tap = EventTap::bound(&config, "ticket.assigned").await?;
    let listener = {
        let assigned = assigned.clone();
        tokio::spawn(async move {
            while let Some((event, _)) = tap.next(Duration::from_secs(3600)).await {
                let Some(Payload::TicketAssigned(change)) = event.payload else {
                    continue;
                };
                let Some(ticket) = change.ticket else {
                    continue;
                };
                let created = ticket.created_at.as_ref().and_then(from_timestamp);
                let at = event.occurred_at.as_ref().and_then(from_timestamp);
                if let (Some(created), Some(at)) = (created, at) {
                    let ms = (at - created).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    // The first assignment counts; a later move is not routing's latency.
                    assigned
                        .lock()
                        .unwrap()
                        .entry(ticket.id)
                        .or_insert((ticket.assignee, ms));
                }
            }
        })
    };

    // Tickets at RATE a second, each on its own task.
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let sending = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while sending.elapsed() < duration {
        ticks.tick().await;
        n += 1;
        let serial = import::serial_number(&run, rng.random_range(1..=ASSETS));
        let mut client = TicketServiceClient::new(InterceptedService::new(
            channels[(n % 4) as usize].clone(),
            bearer.clone(),
        ));
        let (created, errors) = (created.clone(), errors.clone());
        tasks.spawn(async move {
            let request = CreateTicketRequest {
                subject: format!("Camera {serial} offline"),
                body: format!("Since this morning {serial} shows no picture."),
                contact: format!("site{n}@sites.example"),
                ..Default::default()
            };
            match client.create_ticket(request).await {
                Ok(answer) => {
                    if let Some(ticket) = answer.into_inner().ticket {
                        created.lock().unwrap().push(ticket.id);
                    }
                }
                Err(status) => {
                    if errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                        eprintln!("create failed: {status}");
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let sent_s = sending.elapsed().as_secs_f64();

    // Until every ticket is assigned, or nothing moved for 10 s.
    let created: HashSet<String> = created.lock().unwrap().iter().cloned().collect();
    let mut last = (0usize, Instant::now());
    let waited = Instant::now();
    loop {
        let done = {
            let assigned = assigned.lock().unwrap();
            created
                .iter()
                .filter(|id| assigned.contains_key(*id))
                .count()
        };
        if done == created.len() || last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled_s = waited.elapsed().as_secs_f64();
    listener.abort();

    // Tickets still waiting, and whether someone could have taken them.
    let people_now = directory
        .list_people(dpb::ListPeopleRequest {
            role: "agent".into(),
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .people;
    let room: HashMap<&str, bool> = people_now
        .iter()
        .map(|p| {
            (
                p.email.as_str(),
                p.presence == dpb::Presence::Online as i32 && p.assigned < p.capacity,
            )
        })
        .collect();
    let queue = directory
        .list_queue(dpb::ListQueueRequest { limit: 10_000 })
        .await?
        .into_inner();
    let mut unassigned = 0u64;
    let mut with_someone = 0u64;
    let mut reasons: HashMap<String, u64> = HashMap::new();
    for waiting in queue
        .tickets
        .iter()
        .filter(|t| created.contains(&t.ticket_id))
    {
        unassigned += 1;
        *reasons.entry(waiting.reason.clone()).or_default() += 1;
        let eligible = agents.iter().any(|a| {
            a.fits(&waiting.skills, &waiting.region)
                && room.get(a.email.as_str()).copied().unwrap_or(false)
        });
        if eligible {
            with_someone += 1;
        }
    }
    presence.abort();

    let assigned = assigned.lock().unwrap();
    let mut latencies: Vec<f64> = created
        .iter()
        .filter_map(|id| assigned.get(id).map(|(_, ms)| *ms))
        .collect();
    let mut load: HashMap<&str, u64> = HashMap::new();
    for id in &created {
        if let Some((person, _)) = assigned.get(id) {
            *load.entry(person.as_str()).or_default() += 1;
        }
    }
    // Groups of equal skills and regions: the largest spread in any.
    let mut groups: HashMap<(Vec<&str>, Vec<&str>), Vec<u64>> = HashMap::new();
    for agent in agents.iter() {
        groups
            .entry((agent.skills.clone(), agent.regions.clone()))
            .or_default()
            .push(load.get(agent.email.as_str()).copied().unwrap_or(0));
    }
    let spread = groups
        .values()
        .filter(|loads| loads.len() > 1)
        .map(|loads| loads.iter().max().unwrap_or(&0) - loads.iter().min().unwrap_or(&0))
        .max()
        .unwrap_or(0);
    let mut top_reasons: Vec<(String, u64)> = reasons.into_iter().collect();
    top_reasons.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    top_reasons.truncate(5);
    println!(
        "{}",
        json!({
            "scenario": "dispatch",
            "run": run,
            "people": people,
            "capacity": capacity,
            "rate_asked": rate,
            "import_s": round(imported_s),
            "people_online_s": round(people_s),
            "duration_s": round(sent_s),
            "tickets": created.len(),
            "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
            "created_per_s": round(created.len() as f64 / sent_s),
            "assigned": latencies.len(),
            "settled_s": round(settled_s),
            "assign_p50_ms": percentile(&mut latencies, 50.0),
            "assign_p90_ms": percentile(&mut latencies, 90.0),
            "assign_p99_ms": percentile(&mut latencies, 99.0),
            "assign_max_ms": percentile(&mut latencies, 100.0),
            "unassigned": unassigned,
            "unassigned_with_someone_eligible": with_someone,
            "unassigned_reasons": top_reasons,
            "groups": groups.len(),
            "max_spread_in_group": spread,
        })
    );
    Ok(())
}

/// States every agent online.
async fn online(directory: &mut Dispatch, agents: &[Agent]) -> anyhow::Result<()> {
    for agent in agents {
        directory
            .set_presence(dpb::SetPresenceRequest {
                presence: dpb::Presence::Online as i32,
                person: agent.email.clone(),
            })
            .await
            .with_context(|| format!("{} online", agent.email))?;
    }
    Ok(())
}

/// States them online again every 30 s, as their consoles' heartbeats would.
async fn keep_online(mut directory: Dispatch, agents: Arc<Vec<Agent>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        if let Err(error) = online(&mut directory, &agents).await {
            eprintln!("presence: {error:#}");
        }
    }
}
