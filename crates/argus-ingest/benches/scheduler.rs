//! The scheduler with 1,000 watched rooms that have nothing new, against a mock homeserver
//! that takes 40 ms over each `/messages` page, with a per-homeserver concurrency of 8: one
//! cycle's wall time against the bound the homeserver's latency sets (rooms / 8 × 40 ms), and
//! the CPU time this process spends per idle room (the scheduler, the connector, the store and
//! the audit record of each run).
//!
//! The mock homeserver runs in a child process (this binary again, with
//! `ARGUS_BENCH_MOCK=1`), so that its CPU is not counted here. The store is a fresh SQLite file
//! (or `ARGUS_BENCH_DATABASE_URL`, e.g. a PostgreSQL database).
//!
//! `cargo bench -p argus-ingest --bench scheduler`. `ARGUS_BENCH_ROOMS` sets the rooms (default
//! 1,000). Prints what `docs/benchmarks.md` records.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the scheduler is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::{BufRead as _, Write as _},
    sync::Arc,
    time::{Duration, Instant},
};

use argus_domain::{AccessToken, Classification, Scope, Viewer};
use argus_ingest::{
    Admission, AdmissionLimits, Services, TokenKey, TokenKeys,
    scheduler::{Scheduler, SchedulerOptions},
    watch::{WatchRequest, watch_room},
};
use argus_matrix::{Connector, ConnectorConfig};
use argus_store::Store;
use argus_testkit::homeserver::{MATRIX_TOKEN, MockHomeserver, SLOW_PAGE};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const MOCK_ENV: &str = "ARGUS_BENCH_MOCK";
const PER_HOMESERVER: usize = 8;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time of this process so far (user and system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name), in ticks of
    // 1/100 s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn serve_mock() -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let hs = MockHomeserver::start_unrecorded().await;
        hs.serve_any_room().await;
        println!("{}", hs.uri());
        std::io::stdout().flush()?;
        let mut line = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await??;
        Ok(())
    })
}

fn main() -> BenchResult {
    if std::env::var(MOCK_ENV).is_ok() {
        return serve_mock();
    }
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let rooms = env_or("ARGUS_BENCH_ROOMS", 1000).max(1);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(MOCK_ENV, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut uri = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut uri)?;
    let uri = uri.trim().to_owned();

    let dir = tempfile::tempdir()?;
    let url = std::env::var("ARGUS_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("scheduler.db").display()));
    let store = Store::open(&url)?;
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?;
    let mut services = Services::new(store, connector);
    services.token_keys = Some(Arc::new(TokenKeys::new(TokenKey::new(&[11; 32])?, Vec::new())));
    services.watch_limits.min_interval_secs = 1;
    // One owner makes every watch, at once: neither their rate nor their cap is measured here.
    services.admission =
        Admission::new(AdmissionLimits { per_caller_per_minute: u32::MAX, ..AdmissionLimits::default() });
    services.watch_limits.max_per_owner = u32::try_from(rooms)?;
    let services = Arc::new(services);
    let owner = Viewer::new(
        "bench".parse()?,
        "bench-org".parse()?,
        Classification::Secret,
        [Scope::Ingest, Scope::Read],
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        // Each watch reads its room's newest page first (40 ms): made all at once.
        let mut made = tokio::task::JoinSet::new();
        for i in 0..rooms {
            let request = WatchRequest {
                homeserver_url: uri.clone(),
                access_token: AccessToken::new(MATRIX_TOKEN),
                account: None,
                refresh_token: None,
                oauth_client_id: None,
                since: None,
                room_id: format!("!slow-idle-{i}:tchap.test"),
                classification: Classification::Restricted,
                interval_secs: 1,
                recovery_key: None,
            };
            let (services, owner) = (Arc::clone(&services), owner.clone());
            made.spawn(async move { watch_room(&services, &owner, request).await.map(drop) });
        }
        while let Some(made) = made.join_next().await {
            made??;
        }
        BenchResult::Ok(())
    })?;
    let options = SchedulerOptions {
        replica: "bench".into(),
        per_homeserver: PER_HOMESERVER,
        max_concurrent: rooms,
        jitter: 0.0,
        ..SchedulerOptions::default()
    };
    let scheduler = Scheduler::new(Arc::clone(&services), options);
    // The first cycle reads each room's messages; the measured one finds nothing new.
    let first = rt.block_on(scheduler.cycle())?;
    std::thread::sleep(Duration::from_millis(1100));
    let cpu = cpu_time();
    let t = Instant::now();
    let idle = rt.block_on(scheduler.cycle())?;
    let wall = t.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    drop(child.stdin.take());
    let _ = child.wait();
    if first.succeeded != rooms || idle.succeeded != rooms {
        return Err(format!("cycles: {first:?} then {idle:?}").into());
    }
    let bound = SLOW_PAGE * u32::try_from(rooms.div_ceil(PER_HOMESERVER))?;
    println!(
        "scheduler, {rooms} watched rooms with nothing new, {PER_HOMESERVER} at once against one homeserver taking {} ms a page ({}):",
        SLOW_PAGE.as_millis(),
        if url.starts_with("sqlite") { "SQLite" } else { "PostgreSQL" }
    );
    println!("  first cycle (each room read): {first:?}");
    println!(
        "  idle cycle: {:.0} ms; the homeserver's latency bounds it at {:.0} ms: {:.2}× the bound",
        wall.as_secs_f64() * 1000.0,
        bound.as_secs_f64() * 1000.0,
        wall.as_secs_f64() / bound.as_secs_f64()
    );
    println!(
        "  CPU time of this process: {:.0} ms, {:.2} ms per idle room (target ≤ 2 ms)",
        cpu.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0 / rooms as f64
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average after the runs: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}
