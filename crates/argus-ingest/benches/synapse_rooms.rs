//! Many rooms on a real Synapse: N watched rooms synced by one scheduler cycle, at most N at
//! once against the homeserver (its per-homeserver limit), against N times the rate of one room
//! read alone, in the same run. Also the CPU the rest of the machine (Synapse) and this process
//! spent meanwhile, to tell which bounds the parallel cycle.
//!
//! `cargo bench -p argus-ingest --bench synapse_rooms`. `ARGUS_BENCH_ROOMS` (default 8) rooms of
//! `ARGUS_BENCH_MESSAGES` (default 500) messages. Without Python/pip the bench is skipped
//! loudly, unless `ARGUS_REQUIRE_SYNAPSE=1`.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use argus_domain::{AccessToken, Classification, Scope, Viewer};
use argus_ingest::{
    Admission, AdmissionLimits, Services, TokenKey, TokenKeys,
    ingest::{IngestRequest, Reach, Trigger, ingest_room},
    scheduler::{Scheduler, SchedulerOptions},
    watch::{WatchRequest, watch_room},
};
use argus_matrix::{Connector, ConnectorConfig};
use argus_store::Store;
use argus_testkit::synapse::synapse;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time (user and system, all cores) of the whole machine, and of this process.
fn cpu() -> (Duration, Duration) {
    let machine = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let total: u64 = machine
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).take(3).filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        own.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (Duration::from_millis(total * 10), Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

fn services(dir: &tempfile::TempDir, name: &str) -> BenchResult<Arc<Services>> {
    let store = Store::open(&format!("sqlite://{}", dir.path().join(name).display()))?;
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?;
    let mut services = Services::new(store, connector);
    services.token_keys = Some(Arc::new(TokenKeys::new(TokenKey::new(&[12; 32])?, Vec::new())));
    // One owner ingests and watches every room: neither their rate nor their caps are measured.
    services.admission =
        Admission::new(AdmissionLimits { per_caller_per_minute: u32::MAX, ..AdmissionLimits::default() });
    services.watch_limits.max_per_owner = u32::MAX;
    Ok(Arc::new(services))
}

fn main() -> BenchResult {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let rooms = env_or("ARGUS_BENCH_ROOMS", 8).max(1);
    let messages = env_or("ARGUS_BENCH_MESSAGES", 500).max(1);
    let Some(server) = synapse() else {
        println!("synapse_rooms: skipped (no Synapse; set ARGUS_REQUIRE_SYNAPSE=1 to make this a failure)");
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let alice = server.register("rooms").await?;
        let started = Instant::now();
        let mut ids = Vec::new();
        for i in 0..rooms {
            let room = alice.create_room(Some(&format!("Salle {i}")), None, false).await?;
            alice.send_texts(&room, "Point de situation : rien à signaler, message", messages, 16).await?;
            ids.push(room);
        }
        println!(
            "synapse_rooms: {rooms} rooms of {messages} messages built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let dir = tempfile::tempdir()?;
        let owner =
            Viewer::new("bench".parse()?, "bench-org".parse()?, Classification::Secret, [Scope::Ingest, Scope::Read]);

        // One room alone (after a warm-up read of another, into a store of its own).
        let mut single = Vec::new();
        for (i, room) in ids.iter().enumerate().take(3) {
            let alone = services(&dir, &format!("single-{i}.db"))?;
            let request = IngestRequest {
                homeserver_url: server.base_url().to_owned(),
                access_token: AccessToken::new(alice.access_token.clone()),
                account: None, refresh_token: None, oauth_client_id: None, since: None,
                room_id: room.clone(),
                classification: Classification::Restricted,
                max_messages: Some(100_000),
                recovery_key: None,
                reach: Reach::Current,
                trigger: Trigger::Manual,
                follow_upgrades: false,
            };
            let t = Instant::now();
            let done = ingest_room(&alone, &owner, request, &mut |_| {}).await?;
            if i > 0 {
                single.push(t.elapsed());
            }
            if done.messages_stored < i64::try_from(messages)? {
                return Err(format!("one room stored {}", done.messages_stored).into());
            }
        }
        single.sort();
        let single = single[single.len() / 2];
        let single_rate = messages as f64 / single.as_secs_f64();

        // Every room at once: one scheduler cycle over their watches.
        let together = services(&dir, "together.db")?;
        for room in &ids {
            let request = WatchRequest {
                homeserver_url: server.base_url().to_owned(),
                access_token: AccessToken::new(alice.access_token.clone()),
                account: None, refresh_token: None, oauth_client_id: None, since: None,
                room_id: room.clone(),
                classification: Classification::Restricted,
                interval_secs: 3600,
                recovery_key: None,
            };
            watch_room(&together, &owner, request).await?;
        }
        let options = SchedulerOptions {
            replica: "bench".into(),
            per_homeserver: rooms,
            max_concurrent: rooms,
            max_messages_per_run: 100_000,
            jitter: 0.0,
            ..SchedulerOptions::default()
        };
        let scheduler = Scheduler::new(Arc::clone(&together), options);
        let (machine_before, own_before) = cpu();
        let t = Instant::now();
        let report = scheduler.cycle().await?;
        let wall = t.elapsed();
        let (machine_after, own_after) = cpu();
        if report.succeeded != rooms {
            return Err(format!("cycle: {report:?}").into());
        }
        let parallel_rate = (rooms * messages) as f64 / wall.as_secs_f64();
        let own = own_after.saturating_sub(own_before);
        let others = machine_after.saturating_sub(machine_before).saturating_sub(own);
        let cores = |d: Duration| d.as_secs_f64() / wall.as_secs_f64();
        println!("synapse_rooms: one room alone (median of 2): {:.0} ms, {single_rate:.0} messages/s", single.as_secs_f64() * 1000.0);
        println!(
            "synapse_rooms: {rooms} rooms in one cycle ({rooms} at once): {:.0} ms, {parallel_rate:.0} messages/s = {:.2} × N × one room (target ≥ 0.8)",
            wall.as_secs_f64() * 1000.0,
            parallel_rate / (rooms as f64 * single_rate)
        );
        println!(
            "synapse_rooms: meanwhile this process used {:.2} cores, the rest of the machine (Synapse) {:.2} cores of {}",
            cores(own),
            cores(others),
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        );
        BenchResult::Ok(())
    })
}
