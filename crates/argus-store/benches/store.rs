//! Store benchmark: recording 100k messages through `record_ingestion` against the engine's own
//! ceiling (`INSERT … SELECT` of the same rows inside the engine; on PostgreSQL also `COPY` of the
//! same rows from the client), and stats plus the first page of messages on a store of 1M
//! messages in 10k rooms across 10 organisations. SQLite on a file, PostgreSQL on the test kit's
//! throw-away cluster (skipped when PostgreSQL is absent).
//!
//! `cargo bench -p argus-store --bench store`. Sizes and runs from the environment (defaults are
//! the targets' sizes): `ARGUS_BENCH_MESSAGES` (100,000 per ingestion), `ARGUS_BENCH_RUNS`
//! (3; medians are reported), `ARGUS_BENCH_BIG_MESSAGES` (1,000,000; 0 skips the reads),
//! `ARGUS_BENCH_BIG_ROOMS` (10,000), `ARGUS_BENCH_BIG_ORGS` (10), `ARGUS_BENCH_BACKENDS`
//! (`sqlite,postgres`).
//!
//! Prints a Markdown table; the numbers go into `docs/benchmarks.md`.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::time::{Duration, Instant};

use argus_domain::{Classification, PageRequest, RoomSnapshot, to_unix_ms};
use argus_store::{IngestionRun, Store};
use diesel::{Connection, PgConnection, SqliteConnection, connection::SimpleConnection};
use time::OffsetDateTime;

mod common;

use common::{BenchResult, viewer};

/// Bench sizes, from the environment.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    messages: usize,
    runs: usize,
    big_orgs: i64,
    big_rooms: i64,
    big_messages: i64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Sizes {
    fn from_env() -> Self {
        Self {
            messages: env_or("ARGUS_BENCH_MESSAGES", 100_000),
            runs: env_or("ARGUS_BENCH_RUNS", 3usize).max(1),
            big_orgs: env_or("ARGUS_BENCH_BIG_ORGS", 10),
            big_rooms: env_or("ARGUS_BENCH_BIG_ROOMS", 10_000),
            big_messages: env_or("ARGUS_BENCH_BIG_MESSAGES", 1_000_000),
        }
    }
}

use argus_store::schema::messages;

fn snapshot(room: &str, n: usize, tag: &str) -> BenchResult<RoomSnapshot> {
    let start = to_unix_ms(OffsetDateTime::now_utc()) - n as i64 * 1000;
    common::snapshot(room, tag, 0..n, start, |i| {
        format!("Point de situation {i}: rien à signaler sur le secteur nord, relève à 18h.")
    })
}

/// Raw access to the benchmark database, for the ceiling and the bulk build.
enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Raw {
    fn exec(&mut self, sql: &str) -> BenchResult {
        match self {
            Raw::Sqlite(c) => c.batch_execute(sql)?,
            Raw::Postgres(c) => c.batch_execute(sql)?,
        }
        Ok(())
    }
}

struct Numbers {
    backend: &'static str,
    ingest_rate: f64,
    ceiling_rate: f64,
    /// PostgreSQL only: `COPY` of the same rows from the client.
    copy_rate: Option<f64>,
    reads: Option<(Duration, Duration, Duration)>,
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `COPY … FROM STDIN` ceiling: the snapshot's rows, as text, into `room_pk`.
fn copy_rows(pg: &mut PgConnection, org: &str, room_pk: i64, snap: &RoomSnapshot, tag: &str) -> BenchResult {
    use diesel::ExecuteCopyFromDsl;
    use messages::dsl as m;
    let rank = Classification::Restricted.rank();
    let n = diesel::copy_from(m::messages)
        .from_raw_data(
            (
                m::org_id,
                m::room_pk,
                m::event_id,
                m::sender,
                m::msgtype,
                m::body,
                m::sent_at,
                m::edited,
                m::redacted,
                m::encrypted,
                m::classification,
            ),
            |out: &mut dyn std::io::Write| -> Result<(), diesel::result::Error> {
                for msg in &snap.messages {
                    // The bench's values hold no tab, newline or backslash: no escaping needed.
                    writeln!(
                        out,
                        "{org}\t{room_pk}\t{tag}{id}\t{sender}\t{msgtype}\t{body}\t{at}\tf\tf\tf\t{rank}",
                        id = &msg.event_id.as_str()[1..],
                        sender = msg.sender.as_str(),
                        msgtype = msg.msgtype.as_deref().unwrap_or("\\N"),
                        body = msg.body.as_deref().unwrap_or("\\N"),
                        at = to_unix_ms(msg.sent_at),
                    )
                    .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
                }
                Ok(())
            },
        )
        .execute(pg)?;
    if n != snap.messages.len() {
        return Err("COPY did not write every row".into());
    }
    Ok(())
}

/// Records `messages` messages in one ingestion, then copies the same rows with
/// `INSERT … SELECT` (and, on PostgreSQL, `COPY`), `runs` times, alternating; returns the
/// medians in messages/s.
fn ingestion(store: &Store, raw: &mut Raw, sizes: Sizes) -> BenchResult<(f64, f64, Option<f64>)> {
    let v = viewer("bench-org", Classification::Secret)?;
    let run = IngestionRun {
        viewer: v.clone(),
        classification: Classification::Restricted,
        started_at: OffsetDateTime::now_utc(),
    };
    let n = sizes.messages;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (mut ingest, mut ceiling, mut copy) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..sizes.runs {
        let room = format!("!ingest{r}:bench.gouv.fr");
        let snap = snapshot(&room, n, &format!("e{r}"))?;
        let t = Instant::now();
        let res = store.record_ingestion(&run, &snap)?;
        ingest.push(rate(t.elapsed()));
        if res.counts.messages_stored != n as i64 {
            return Err("not every message was stored".into());
        }
        // The ceiling: the same rows, same table and indexes, straight from SQL inside the engine.
        let target = format!("!ceiling{r}:bench.gouv.fr");
        store.record_ingestion(&run, &snapshot(&target, 0, "c")?)?;
        let sql = format!(
            "INSERT INTO messages (org_id, room_pk, event_id, sender, msgtype, body, sent_at, edited, \
             edited_at, redacted, encrypted, reply_to, thread_root, media, classification) \
             SELECT m.org_id, (SELECT id FROM rooms WHERE room_id = '{target}'), \
             '$c{r}' || substr(m.event_id, 2), m.sender, m.msgtype, m.body, m.sent_at, m.edited, m.edited_at, \
             m.redacted, m.encrypted, m.reply_to, m.thread_root, m.media, m.classification FROM messages m \
             WHERE m.room_pk = (SELECT id FROM rooms WHERE room_id = '{room}') \
             ON CONFLICT (org_id, event_id) DO NOTHING"
        );
        let t = Instant::now();
        raw.exec(&format!("BEGIN; {sql}; COMMIT;"))?;
        ceiling.push(rate(t.elapsed()));
        if let Raw::Postgres(pg) = raw {
            let target = format!("!copy{r}:bench.gouv.fr");
            store.record_ingestion(&run, &snapshot(&target, 0, "c")?)?;
            let room_pk = {
                use diesel::RunQueryDsl;
                #[derive(diesel::QueryableByName)]
                struct Pk {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    id: i64,
                }
                let pk: Pk = diesel::sql_query("SELECT id FROM rooms WHERE room_id = $1")
                    .bind::<diesel::sql_types::Text, _>(&target)
                    .get_result(pg)?;
                pk.id
            };
            let t = Instant::now();
            pg.transaction(|pg| copy_rows(pg, v.org.as_str(), room_pk, &snap, &format!("$k{r}")))?;
            copy.push(rate(t.elapsed()));
        }
    }
    let copy = (!copy.is_empty()).then(|| median_of(copy));
    Ok((median_of(ingest), median_of(ceiling), copy))
}

/// Fills a store with 1M messages in 10k rooms across 10 organisations, in bulk SQL.
fn build_big(raw: &mut Raw, postgres: bool, sizes: Sizes) -> BenchResult {
    let now = to_unix_ms(OffsetDateTime::now_utc());
    let series = |n: i64| {
        if postgres {
            format!("(SELECT g AS n FROM generate_series(0, {}) g) s", n - 1)
        } else {
            format!(
                "(WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < {}) SELECT n FROM c) s",
                n - 1
            )
        }
    };
    let text = |e: &str| if postgres { format!("({e})::text") } else { format!("CAST({e} AS TEXT)") };
    let bool_false = if postgres { "FALSE" } else { "0" };
    let per_room = (sizes.big_messages / sizes.big_rooms).max(1);
    raw.exec(&format!(
        "BEGIN; INSERT INTO rooms (org_id, room_id, homeserver_url, name, member_count, encrypted, classification, \
         first_seen_at, last_ingested_at) SELECT 'org' || {org}, '!big' || {n} || ':bench.gouv.fr', \
         'https://matrix.agent.tchap.gouv.fr', 'Salon ' || {n}, 10, {bool_false}, s.n % 5, {now}, {now} FROM {series}; COMMIT;",
        org = text(&format!("s.n % {}", sizes.big_orgs)),
        n = text("s.n"),
        series = series(sizes.big_rooms),
    ))?;
    // Message i belongs to room i / per_room; sent over the last 3 days, one room in 3 recently.
    raw.exec(&format!(
        "BEGIN; INSERT INTO messages (org_id, room_pk, event_id, sender, msgtype, body, sent_at, edited, redacted, \
         encrypted, classification) SELECT r.org_id, r.id, '$big' || {n}, '@agent:bench.gouv.fr', 'm.text', \
         'Message de test numero ' || {n}, {now} - ((s.n % {per_room}) * 60000) - ((r.id % 3) * 86400000), \
         {bool_false}, {bool_false}, {bool_false}, r.classification FROM {series} \
         JOIN rooms r ON r.room_id = '!big' || {room} || ':bench.gouv.fr'; COMMIT;",
        n = text("s.n"),
        room = text(&format!("s.n / {per_room}")),
        series = series(sizes.big_messages),
    ))?;
    // The per-room counts `record_ingestion` keeps beside the messages.
    raw.exec(
        "BEGIN; INSERT INTO message_counts (org_id, room_pk, classification, message_count) \
         SELECT org_id, room_pk, classification, COUNT(*) FROM messages GROUP BY org_id, room_pk, classification; COMMIT;",
    )?;
    raw.exec(if postgres { "VACUUM ANALYZE" } else { "ANALYZE" })?;
    Ok(())
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> BenchResult) -> BenchResult<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[runs / 2])
}

fn reads(store: &Store) -> BenchResult<(Duration, Duration, Duration)> {
    let v = viewer("org3", Classification::Secret)?;
    let now = OffsetDateTime::now_utc();
    let stats = store.stats(&v, now)?;
    if stats.total_rooms == 0 || stats.total_messages == 0 {
        return Err("the big store is empty".into());
    }
    let stats_t = median(21, || {
        store.stats(&v, now)?;
        Ok(())
    })?;
    let room = "!big3:bench.gouv.fr".parse()?;
    let page_t = median(21, || {
        let p = store.messages(&v, &room, &PageRequest::first(50))?;
        if p.items.len() != 50 {
            return Err("short page".into());
        }
        Ok(())
    })?;
    let rooms_t = median(21, || {
        store.rooms(&v, &PageRequest::first(50))?;
        Ok(())
    })?;
    Ok((stats_t, page_t, rooms_t))
}

const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384;";

fn sqlite(sizes: Sizes) -> BenchResult<Numbers> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::open(&url)?;
    // The ceiling's connection has the store's own pragmas (foreign keys checked, same cache).
    let mut raw = Raw::Sqlite(SqliteConnection::establish(path.to_str().ok_or("path")?)?);
    raw.exec(SQLITE_PRAGMAS)?;
    let (ingest_rate, ceiling_rate, _) = ingestion(&store, &mut raw, sizes)?;

    let reads = if sizes.big_messages > 0 {
        let big_path = dir.path().join("big.db");
        let big = Store::open(&format!("sqlite://{}", big_path.display()))?;
        let mut raw = Raw::Sqlite(SqliteConnection::establish(big_path.to_str().ok_or("path")?)?);
        raw.exec(SQLITE_PRAGMAS)?;
        build_big(&mut raw, false, sizes)?;
        Some(reads(&big)?)
    } else {
        None
    };
    Ok(Numbers { backend: "SQLite (file, WAL)", ingest_rate, ceiling_rate, copy_rate: None, reads })
}

fn postgres(sizes: Sizes) -> BenchResult<Option<Numbers>> {
    let Some(db) = argus_testkit::postgres::fresh_database() else { return Ok(None) };
    let store = Store::open(db.url())?;
    let mut raw = Raw::Postgres(PgConnection::establish(db.url())?);
    let (ingest_rate, ceiling_rate, copy_rate) = ingestion(&store, &mut raw, sizes)?;
    let reads = if sizes.big_messages > 0 {
        let Some(big_db) = argus_testkit::postgres::fresh_database() else { return Ok(None) };
        let big = Store::open(big_db.url())?;
        let mut raw = Raw::Postgres(PgConnection::establish(big_db.url())?);
        build_big(&mut raw, true, sizes)?;
        Some(reads(&big)?)
    } else {
        None
    };
    Ok(Some(Numbers {
        backend: "PostgreSQL (test kit cluster)",
        ingest_rate,
        ceiling_rate,
        copy_rate,
        reads,
    }))
}

fn main() -> BenchResult {
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let sizes = Sizes::from_env();
    let backends = std::env::var("ARGUS_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let mut rows = Vec::new();
    if backends.contains("sqlite") {
        rows.push(sqlite(sizes)?);
    }
    if backends.contains("postgres") {
        rows.extend(postgres(sizes)?);
    }
    println!(
        "{} messages per ingestion, median of {} runs; reads on {} messages in {} rooms across {} organisations (median of 21)",
        sizes.messages, sizes.runs, sizes.big_messages, sizes.big_rooms, sizes.big_orgs
    );
    println!(
        "| backend | record_ingestion msg/s | INSERT…SELECT msg/s | ratio | COPY msg/s | ratio | stats | first page of messages | first page of rooms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    for n in rows {
        let (copy, copy_ratio) = match n.copy_rate {
            Some(c) => (format!("{c:.0}"), format!("{:.2}×", n.ingest_rate / c)),
            None => ("–".to_owned(), "–".to_owned()),
        };
        let (stats, page, rooms) = match n.reads {
            Some((s, p, r)) => (ms(s), ms(p), ms(r)),
            None => ("–".to_owned(), "–".to_owned(), "–".to_owned()),
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.2}× | {copy} | {copy_ratio} | {stats} | {page} | {rooms} |",
            n.backend,
            n.ingest_rate,
            n.ceiling_rate,
            n.ingest_rate / n.ceiling_rate,
        );
    }
    Ok(())
}
