//! Streamed ingestion of a 1,000,000-event room from a mock homeserver: peak memory of the
//! whole run, and its throughput against each of its stages alone, measured in the same run.
//!
//! - fetch: the connector's streamed read alone (`Connector::stream_room`, batches dropped);
//! - normalise: normalising the same pages in memory (no HTTP);
//! - store: `Store::commit_pages` of the same batches, normalised beforehand (not timed);
//! - end to end: `ingest_room`, the use-case the mutation and the CLI run, into a fresh SQLite
//!   file; its peak resident memory (`VmHWM`, reset just before the run) is the process's.
//!
//! The mock homeserver runs in a child process (this binary again, with
//! `ARGUS_BENCH_MOCK_PAGES`) serving prepared `/messages` pages of 1,000 events, so that neither
//! its memory nor its CPU is counted here.
//!
//! `cargo bench -p argus-ingest --features bench --bench stream`. `ARGUS_BENCH_PAGES` sets the
//! pages of 1,000 events (default 1,000: one million events). Prints what `docs/benchmarks.md`
//! records.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the use-case is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::{BufRead as _, Write as _},
    time::{Duration, Instant},
};

use argus_domain::{AccessToken, Classification, HomeserverUrl, RoomId, Scope, Viewer};
use argus_ingest::{
    Services,
    ingest::{IngestRequest, Reach, Trigger, ingest_room},
};
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, Session};
use argus_store::{IngestionRun, Store};
use argus_testkit::homeserver::{MockHomeserver, bench};
use time::OffsetDateTime;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const MOCK_ENV: &str = "ARGUS_BENCH_MOCK_PAGES";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A field of `/proc/self/status`, in kB.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the process's peak resident set (`VmHWM`) to its current size.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn connector() -> BenchResult<Connector> {
    Ok(Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        run_deadline: Duration::from_secs(3600),
        ..ConnectorConfig::default()
    })?)
}

/// The child: serves `pages` prepared pages and prints its address; stops when its standard
/// input closes (the parent ended).
fn serve_mock(pages: usize) -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let (hs, _bodies) = MockHomeserver::start_bench(pages, true).await;
        println!("{}", hs.uri());
        std::io::stdout().flush()?;
        let mut line = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await??;
        Ok(())
    })
}

fn main() -> BenchResult {
    if let Ok(pages) = std::env::var(MOCK_ENV) {
        return serve_mock(pages.parse()?);
    }
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let pages = env_or("ARGUS_BENCH_PAGES", 1000).max(1);
    let events = pages * bench::PAGE_EVENTS;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(MOCK_ENV, pages.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut uri = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut uri)?;
    let homeserver: HomeserverUrl = uri.trim().parse()?;
    let room: RoomId = bench::ROOM.parse()?;
    let viewer = Viewer::new(
        "bench".parse()?,
        "bench-org".parse()?,
        Classification::Secret,
        [Scope::Ingest, Scope::Read],
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let batch_pages = env_or("ARGUS_BENCH_BATCH_PAGES", argus_matrix::DEFAULT_BATCH_PAGES as usize).max(1);
    let max_messages = u32::try_from(events)?;

    // end to end first, in a process that has done nothing else yet: the use-case into a fresh
    // store, and the peak memory of the process meanwhile.
    let mut services = Services::new(
        Store::open(&format!("sqlite://{}", dir.path().join("e2e.db").display()))?,
        connector()?,
    );
    services.limits.batch_pages = u32::try_from(batch_pages)?;
    let request = IngestRequest {
        homeserver_url: homeserver.as_str().to_owned(),
        access_token: AccessToken::new("syt_bench_token"),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: bench::ROOM.to_owned(),
        classification: Classification::Restricted,
        max_messages: Some(i64::from(max_messages)),
        recovery_key: None,
        reach: Reach::Current,
        trigger: Trigger::Manual,
        follow_upgrades: false,
    };
    let before = status_kb("VmRSS:");
    reset_peak();
    let t = Instant::now();
    let summary = rt.block_on(ingest_room(&services, &viewer, request, &mut |_| {}))?;
    let end_to_end = t.elapsed();
    let peak = status_kb("VmHWM:");
    // fetch: the connector's streamed read, batches dropped.
    let conn = connector()?;
    let t = Instant::now();
    let fetched = rt.block_on(async {
        let options = FetchOptions { max_messages, ..FetchOptions::default() };
        let session = Session::with_token(homeserver.clone(), AccessToken::new("syt_bench_token"));
        let mut stream = conn.stream_room(session, room.clone(), options, None);
        let mut messages = 0;
        while let Some(batch) = stream.next_batch().await {
            messages = batch?.report.messages;
        }
        BenchResult::Ok(messages)
    })?;
    let fetch = t.elapsed();

    // normalise and store: page bodies generated here (not timed), normalised (timed), then
    // committed in batches as the use-case does (timed).
    let store = Store::open(&format!("sqlite://{}", dir.path().join("store.db").display()))?;
    let run = IngestionRun {
        viewer: viewer.clone(),
        classification: Classification::Restricted,
        started_at: OffsetDateTime::now_utc(),
    };
    let ticket = store.begin_run(&run, &room, &homeserver, Duration::from_secs(3600), false)?;
    let (mut normalise, mut commit) = (Duration::ZERO, Duration::ZERO);
    let mut stored = 0;
    for first in (0..pages).step_by(batch_pages) {
        let bodies: Vec<Vec<u8>> =
            (first..(first + batch_pages).min(pages)).map(|p| bench::page_body(p, pages)).collect();
        let t = Instant::now();
        let batch = argus_matrix::bench::normalise_batch(&bodies, &room, &homeserver)?;
        normalise += t.elapsed();
        drop(bodies);
        let t = Instant::now();
        stored += store.commit_pages(&ticket, &batch)?.messages_stored;
        commit += t.elapsed();
    }
    store.finish_run(&ticket, None)?;
    drop(store);

    drop(child.stdin.take());
    let _ = child.wait();
    if summary.messages_stored != stored {
        return Err(format!("end to end stored {}, the store stage {stored}", summary.messages_stored).into());
    }

    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "streamed ingestion of {events} events ({pages} pages, batches of {batch_pages}; {fetched} messages, {stored} stored):"
    );
    for (name, d) in
        [("fetch", fetch), ("normalise", normalise), ("store", commit), ("end to end", end_to_end)]
    {
        println!("  {name:<10} {:>9.0} ms  {:>9.0} events/s", ms(d), rate(d));
    }
    let slowest = [("fetch", fetch), ("normalise", normalise), ("store", commit)]
        .into_iter()
        .max_by_key(|(_, d)| *d)
        .unwrap_or(("fetch", fetch));
    println!(
        "  end to end / slowest stage ({}): {:.2}× (throughput ratio; target ≥ 0.7×)",
        slowest.0,
        slowest.1.as_secs_f64() / end_to_end.as_secs_f64()
    );
    println!(
        "  peak resident memory during the end-to-end run: {:.1} MiB (resident before it: {:.1} MiB; target < 150 MB)",
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average after the runs: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}
