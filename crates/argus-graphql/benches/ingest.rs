//! End-to-end ingestion of 100,000 events from a local mock homeserver through the ingest
//! use-case (`ingest_room`, what `ingestTchapRoom` and `argus-tchap ingest` run), against each of
//! its stages measured alone in the same run:
//!
//! - fetch: the connector's read of the room alone (`Connector::fetch_room`: requests, response
//!   parsing and normalisation, nothing stored);
//! - normalise: normalising the same prepared pages in memory (no HTTP);
//! - store: `Store::record_ingestion` of the snapshot the fetch produced (already normalised).
//!
//! The mock homeserver is wiremock on 127.0.0.1 serving prepared `/messages` pages of 1,000
//! events and an empty `/state` (the benchmark pages of `argus_testkit::homeserver`, as in the
//! connector benchmarks). Each run ingests into a fresh SQLite file store; store and end to end
//! take turns at going first (the second writer of 100k rows meets the first one's dirty pages
//! being written back); medians of `ARGUS_BENCH_RUNS` runs (default 6).
//!
//! `cargo bench -p argus-graphql --bench ingest`. `ARGUS_BENCH_PAGES` sets the pages of 1,000
//! events (default 100). Prints the numbers that go into `docs/benchmarks.md`.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the use-case is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use argus_domain::{
    AccessToken, Classification, HomeserverUrl, RoomId, RoomSnapshot, Scope, testing::ViewerBuilder,
};
use argus_graphql::{
    Services,
    ingest::{IngestRequest, ingest_room},
};
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, HARD_MAX_MESSAGES, Session};
use argus_store::{IngestionRun, Store};
use argus_testkit::homeserver::{MockHomeserver, bench};
use time::OffsetDateTime;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn connector() -> BenchResult<Connector> {
    Ok(Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fresh_store(dir: &tempfile::TempDir, name: &str) -> BenchResult<Store> {
    Ok(Store::open(&format!("sqlite://{}", dir.path().join(name).display()))?)
}

struct Stages {
    fetch: Duration,
    normalise: Duration,
    store: Duration,
    end_to_end: Duration,
    events: u64,
    messages: u64,
    stored: i64,
}

fn main() -> BenchResult {
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let pages = env_or("ARGUS_BENCH_PAGES", 100).max(1);
    let runs = env_or("ARGUS_BENCH_RUNS", 6).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (server, prepared) = rt.block_on(MockHomeserver::start_bench(pages, true));
    let prepared = prepared.ok_or("no prepared pages")?;
    let homeserver: HomeserverUrl = server.uri().parse()?;
    let room: RoomId = bench::ROOM.parse()?;
    let session = Session::with_token(homeserver.clone(), AccessToken::new("syt_bench_token"));
    let max_messages = HARD_MAX_MESSAGES;
    let v = ViewerBuilder::new("bench-org").actor("bench").scopes([Scope::Read, Scope::Ingest]).build();
    let dir = tempfile::tempdir()?;

    let mut fetch = Vec::new();
    let mut normalise = Vec::new();
    let mut store = Vec::new();
    let mut end_to_end = Vec::new();
    let mut last: Option<(u64, u64, i64)> = None;
    for r in 0..runs {
        // fetch: the connector alone.
        let conn = connector()?;
        let t = Instant::now();
        let snapshot: RoomSnapshot = rt.block_on(conn.fetch_room(
            &session,
            &room,
            &FetchOptions { max_messages, since: None, ..FetchOptions::default() },
        ))?;
        fetch.push(t.elapsed());

        // normalise: the same pages, in memory.
        let t = Instant::now();
        let mut kept = 0;
        for body in prepared.iter() {
            kept += argus_matrix::bench::normalise_page(body, bench::ROOM)?;
        }
        normalise.push(t.elapsed());
        if kept == 0 {
            return Err("nothing normalised".into());
        }

        // store: the normalised snapshot, recorded in a fresh store.
        let mut measure_store = || -> BenchResult<i64> {
            let s = fresh_store(&dir, &format!("store-{r}.db"))?;
            let run = IngestionRun {
                viewer: v.clone(),
                classification: Classification::Restricted,
                started_at: OffsetDateTime::now_utc(),
            };
            let t = Instant::now();
            let recorded = s.record_ingestion(&run, &snapshot)?;
            store.push(t.elapsed());
            Ok(recorded.counts.messages_stored)
        };
        // end to end: the use-case, into another fresh store.
        let mut measure_end_to_end = || -> BenchResult<i64> {
            let services = Services::new(fresh_store(&dir, &format!("e2e-{r}.db"))?, connector()?);
            let request = IngestRequest {
                recovery_key: None,
                homeserver_url: homeserver.as_str().to_owned(),
                access_token: AccessToken::new("syt_bench_token"),
                account: None,
                refresh_token: None,
                oauth_client_id: None,
                since: None,
                room_id: bench::ROOM.to_owned(),
                classification: Classification::Restricted,
                max_messages: Some(i64::from(max_messages)),
                reach: argus_graphql::ingest::Reach::Current,
                trigger: argus_graphql::ingest::Trigger::Manual,
                follow_upgrades: false,
            };
            let t = Instant::now();
            let summary = rt.block_on(ingest_room(&services.app, &v, request, &mut |_| {}))?;
            end_to_end.push(t.elapsed());
            Ok(summary.messages_stored)
        };
        // The two write 100k rows into fresh files; whichever runs second meets the first one's
        // dirty pages still being written back, so they take turns.
        let (recorded, stored_end_to_end) = if r % 2 == 0 {
            let recorded = measure_store()?;
            (recorded, measure_end_to_end()?)
        } else {
            let stored = measure_end_to_end()?;
            (measure_store()?, stored)
        };
        if stored_end_to_end != recorded {
            return Err(format!(
                "end to end stored {stored_end_to_end} messages, the store stage {recorded}"
            )
            .into());
        }
        last = Some((snapshot.report.events_fetched, snapshot.report.messages, recorded));
    }
    let (events, messages, stored) = last.ok_or("no run")?;
    let s = Stages {
        fetch: median(fetch),
        normalise: median(normalise),
        store: median(store),
        end_to_end: median(end_to_end),
        events,
        messages,
        stored,
    };
    report(&s, pages, runs);
    Ok(())
}

fn report(s: &Stages, pages: usize, runs: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rate = |d: Duration| s.events as f64 / d.as_secs_f64();
    let slowest = [("fetch", s.fetch), ("normalise", s.normalise), ("store", s.store)]
        .into_iter()
        .max_by_key(|(_, d)| *d)
        .unwrap_or(("fetch", s.fetch));
    println!(
        "ingestion of {} events ({pages} pages; {} messages, {} stored), median of {runs} runs:",
        s.events, s.messages, s.stored
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average after the runs: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for (name, d) in
        [("fetch", s.fetch), ("normalise", s.normalise), ("store", s.store), ("end to end", s.end_to_end)]
    {
        println!("  {name:<10} {:>8.1} ms  {:>9.0} events/s", ms(d), rate(d));
    }
    println!(
        "  end to end / slowest stage ({}): {:.2}× (throughput ratio; target ≥ 0.7×)",
        slowest.0,
        slowest.1.as_secs_f64() / s.end_to_end.as_secs_f64()
    );
}
