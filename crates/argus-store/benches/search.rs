//! Search benchmark: `Store::search` on a store of 1M messages (100 rooms of one organisation,
//! bodies of ~12 words from a 5,000-word vocabulary drawn with a Zipf-like skew), p50 and p99
//! of a selective term (in 0.005 % of messages), a common term (in 10 %), a prefix and a phrase;
//! and `record_ingestion` of 100k messages with the full-text index kept against the same store
//! with the index removed, then the same as a streamed run (`commit_pages` of batches of 4,500
//! messages, `ARGUS_BENCH_BATCH`, as `ingest_room` commits pages of 1,000 events 5 at a time).
//! SQLite on a file, PostgreSQL on the test kit's throw-away cluster (skipped when PostgreSQL is
//! absent).
//!
//! `cargo bench -p argus-store --bench search`. From the environment:
//! `ARGUS_BENCH_SEARCH_MESSAGES` (1,000,000), `ARGUS_BENCH_SEARCHES` (200 per query),
//! `ARGUS_BENCH_MESSAGES` (100,000 per timed ingestion), `ARGUS_BENCH_RUNS` (3, medians),
//! `ARGUS_BENCH_BACKENDS` (`sqlite,postgres`).
//!
//! Prints Markdown tables; the numbers go into `docs/benchmarks.md`.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::time::{Duration, Instant};

use argus_domain::{Classification, RoomSnapshot, SearchRequest, to_unix_ms};
use argus_store::{IngestionRun, Store, StoreOptions};
use diesel::{Connection, PgConnection, SqliteConnection, connection::SimpleConnection};
use time::OffsetDateTime;

mod common;

use common::BenchResult;

/// Opens a fresh store (`true`: one that will not keep the full-text index, so it computes no
/// search vectors ahead), with what removes its full-text index.
type Opener<'a> = dyn Fn(bool) -> BenchResult<(Store, Box<dyn FnOnce() -> BenchResult>)> + 'a;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const ROOMS: usize = 100;
const SELECTIVE: &str = "zéphyrine";
const COMMON: &str = "rapport";

/// A deterministic generator (SplitMix64): the same corpus on every run and backend.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A vocabulary of pronounceable words, with accents now and then.
fn vocabulary() -> Vec<String> {
    let onsets = ["b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "tr", "pl"];
    let vowels = ["a", "e", "i", "o", "u", "é", "ou", "è", "an", "on"];
    let mut rng = Rng(7);
    (0..5_000)
        .map(|_| {
            let syllables = 2 + rng.below(2);
            (0..syllables)
                .map(|_| {
                    format!(
                        "{}{}",
                        onsets[rng.below(onsets.len() as u64) as usize],
                        vowels[rng.below(vowels.len() as u64) as usize]
                    )
                })
                .collect::<String>()
        })
        .collect()
}

/// The body of message `i`: ~12 words, word `k` of the vocabulary with weight ~1/(k+1).
fn body(i: usize, words: &[String], rng: &mut Rng) -> String {
    let mut out = Vec::with_capacity(14);
    for _ in 0..12 {
        // Inverse of a harmonic-like CDF: small ranks are frequent.
        let u = (rng.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
        let rank = ((words.len() as f64).powf(u) - 1.0) as usize;
        out.push(words[rank.min(words.len() - 1)].as_str());
    }
    if i % 10 == 3 {
        out.insert(4, COMMON);
    }
    if i % 20_000 == 11 {
        out.insert(2, SELECTIVE);
    }
    out.join(" ")
}

fn snapshot(
    room: &str,
    first: usize,
    n: usize,
    words: &[String],
    rng: &mut Rng,
) -> BenchResult<RoomSnapshot> {
    let start = to_unix_ms(OffsetDateTime::now_utc()) - 10_000_000_000;
    common::snapshot(room, "s", first..first + n, start, |i| body(i, words, rng))
}

fn fill(store: &Store, total: usize) -> BenchResult<Duration> {
    let words = vocabulary();
    let mut rng = Rng(42);
    let v = common::viewer("dgsi", Classification::Secret)?;
    let per_room = total / ROOMS;
    let started = Instant::now();
    for r in 0..ROOMS {
        let snap = snapshot(&format!("!search{r}:bench.gouv.fr"), r * per_room, per_room, &words, &mut rng)?;
        let run = IngestionRun {
            viewer: v.clone(),
            classification: Classification::Restricted,
            started_at: OffsetDateTime::now_utc(),
        };
        store.record_ingestion(&run, &snap)?;
    }
    Ok(started.elapsed())
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1).min(samples.len() - 1)]
    };
    (at(0.5), at(0.99))
}

/// p50 and p99 of `searches` runs of `query` (first page of 20), and its number of results on
/// that page.
fn time_query(store: &Store, query: &str, searches: usize) -> BenchResult<(Duration, Duration, usize)> {
    let v = common::viewer("dgsi", Classification::Secret)?;
    let request = SearchRequest {
        query: query.parse()?,
        room_id: None,
        sender: None,
        from: None,
        to: None,
        first: 20,
        offset: 0,
    };
    let hits = store.search(&v, &request)?.hits.len();
    let mut samples = Vec::with_capacity(searches);
    for _ in 0..searches {
        let t = Instant::now();
        store.search(&v, &request)?;
        samples.push(t.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    Ok((p50, p99, hits))
}

/// Messages per second of an ingestion of `n` fresh messages into a fresh store, median of
/// `runs`: one `record_ingestion` when `batch` is `None`, else a streamed run as `ingest_room`
/// writes one (`begin_run`, `commit_pages` of `batch` messages each, `finish_run`).
/// `drop_index` removes the full-text index first.
fn ingest_rate(
    open: &Opener<'_>,
    n: usize,
    batch: Option<usize>,
    runs: usize,
    drop_index: bool,
) -> BenchResult<f64> {
    let words = vocabulary();
    let mut rates = Vec::new();
    for run_no in 0..runs {
        let (store, drop) = open(drop_index)?;
        if drop_index {
            drop()?;
        }
        let mut rng = Rng(1_000 + run_no as u64);
        let room = "!ingest:bench.gouv.fr";
        let per = batch.unwrap_or(n).max(1);
        let batches = (0..n)
            .step_by(per)
            .map(|first| snapshot(room, first, per.min(n - first), &words, &mut rng))
            .collect::<BenchResult<Vec<_>>>()?;
        let run = IngestionRun {
            viewer: common::viewer("dgsi", Classification::Secret)?,
            classification: Classification::Restricted,
            started_at: OffsetDateTime::now_utc(),
        };
        let t = Instant::now();
        if batch.is_none() {
            store.record_ingestion(&run, &batches[0])?;
        } else {
            let first = &batches[0];
            let ticket = store.begin_run(
                &run,
                &first.room_id,
                &first.homeserver_url,
                Duration::from_secs(600),
                false,
            )?;
            for pages in &batches {
                store.commit_pages(&ticket, pages)?;
            }
            store.finish_run(&ticket, None)?;
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// SQLite without the index: the triggers and the FTS5 table go; the write path's one indexing
/// statement then feeds a view that discards its rows (an `INSTEAD OF` trigger doing nothing,
/// about 0.3 µs per row: a baseline slightly slower than no statement at all).
const DROP_FTS_SQLITE: &str = "DROP TRIGGER messages_fts_update; DROP TRIGGER messages_fts_delete; \
     DROP TABLE messages_fts; CREATE VIEW messages_fts (rowid, body, org) AS SELECT 1, 1, 1 WHERE 0; \
     CREATE TRIGGER messages_fts_discard INSTEAD OF INSERT ON messages_fts BEGIN SELECT 1 WHERE 0; END;";
/// PostgreSQL without the index: the GIN index and the triggers that compute vectors go, and
/// the store computes none ahead; the `search` column stays, NULL in every row (an array of
/// NULLs bound per statement, a few bytes per row).
const DROP_FTS_POSTGRES: &str = "DROP INDEX messages_search; DROP TRIGGER messages_search_insert ON messages; \
     DROP TRIGGER messages_search_update ON messages;";

struct Row {
    backend: &'static str,
    build: Duration,
    queries: Vec<(String, Duration, Duration, usize)>,
    with_index: f64,
    without_index: f64,
    streamed_with: f64,
    streamed_without: f64,
}

fn run_backend(
    backend: &'static str,
    big: Store,
    analyze: Option<&dyn Fn() -> BenchResult>,
    open: &Opener<'_>,
) -> BenchResult<Row> {
    let total = env_or("ARGUS_BENCH_SEARCH_MESSAGES", 1_000_000usize);
    let searches = env_or("ARGUS_BENCH_SEARCHES", 200usize).max(1);
    let n = env_or("ARGUS_BENCH_MESSAGES", 100_000usize);
    let runs = env_or("ARGUS_BENCH_RUNS", 3usize).max(1);
    let build = fill(&big, total)?;
    // The steady state: the planner's statistics cover the new rows (autovacuum's analyze would
    // get there on its own a little later; before it, PostgreSQL may plan a sequential scan).
    if let Some(analyze) = analyze {
        analyze()?;
    }
    let mut queries = Vec::new();
    let words = vocabulary();
    let queries_text = [
        SELECTIVE.to_owned(),
        COMMON.to_owned(),
        "rapp*".to_owned(),
        format!("{COMMON} {}", words[3]),
        format!("\"{} {}\"", words[0], words[1]),
    ];
    for q in queries_text {
        let (p50, p99, hits) = time_query(&big, &q, searches)?;
        queries.push((q, p50, p99, hits));
    }
    let with_index = ingest_rate(open, n, None, runs, false)?;
    let without_index = ingest_rate(open, n, None, runs, true)?;
    let batch = Some(env_or("ARGUS_BENCH_BATCH", 4_500usize).max(1));
    let streamed_with = ingest_rate(open, n, batch, runs, false)?;
    let streamed_without = ingest_rate(open, n, batch, runs, true)?;
    Ok(Row { backend, build, queries, with_index, without_index, streamed_with, streamed_without })
}

fn main() -> BenchResult {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let backends = std::env::var("ARGUS_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let mut rows = Vec::new();
    if backends.contains("sqlite") {
        let dir = tempfile::tempdir()?;
        let big = Store::open(&format!("sqlite://{}", dir.path().join("big.db").display()))?;
        let counter = std::cell::Cell::new(0);
        let base = dir.path().to_owned();
        let open = move |_: bool| -> BenchResult<(Store, Box<dyn FnOnce() -> BenchResult>)> {
            counter.set(counter.get() + 1);
            let path = base.join(format!("ingest{}.db", counter.get()));
            let store = Store::open(&format!("sqlite://{}", path.display()))?;
            let drop = move || -> BenchResult {
                SqliteConnection::establish(path.to_str().ok_or("path")?)?.batch_execute(DROP_FTS_SQLITE)?;
                Ok(())
            };
            Ok((store, Box::new(drop)))
        };
        rows.push(run_backend("SQLite (file, WAL)", big, None, &open)?);
    }
    if backends.contains("postgres") {
        if let Some(db) = argus_testkit::postgres::fresh_database() {
            let big = Store::open(db.url())?;
            let keep = std::cell::RefCell::new(Vec::new());
            let open = |unindexed: bool| -> BenchResult<(Store, Box<dyn FnOnce() -> BenchResult>)> {
                let fresh = argus_testkit::postgres::fresh_database().ok_or("no PostgreSQL")?;
                let url = fresh.url().to_owned();
                keep.borrow_mut().push(fresh);
                let options = StoreOptions { search_ahead: !unindexed, ..StoreOptions::default() };
                let store = Store::open_with(&url, options)?;
                let drop = move || -> BenchResult {
                    PgConnection::establish(&url)?.batch_execute(DROP_FTS_POSTGRES)?;
                    Ok(())
                };
                Ok((store, Box::new(drop)))
            };
            let url = db.url().to_owned();
            let analyze = move || -> BenchResult {
                PgConnection::establish(&url)?.batch_execute("ANALYZE")?;
                Ok(())
            };
            rows.push(run_backend("PostgreSQL (test kit cluster)", big, Some(&analyze), &open)?);
            drop(db);
        } else {
            println!("SKIPPED: PostgreSQL is not installed; the PostgreSQL row is missing");
        }
    }
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!("\n| backend | query | results on page | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        for (q, p50, p99, hits) in &row.queries {
            println!("| {} | `{q}` | {hits} | {} | {} |", row.backend, ms(*p50), ms(*p99));
        }
    }
    println!("\n| backend | corpus build | record_ingestion msg/s with index | without | ratio |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.0} s | {:.0} | {:.0} | {:.2}× |",
            row.backend,
            row.build.as_secs_f64(),
            row.with_index,
            row.without_index,
            row.with_index / row.without_index
        );
    }
    println!("\n| backend | streamed (batches of commit_pages) msg/s with index | without | ratio |");
    println!("|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2}× |",
            row.backend,
            row.streamed_with,
            row.streamed_without,
            row.streamed_with / row.streamed_without
        );
    }
    Ok(())
}
