//! Store benchmark: recording 100k messages through `record_ingestion` against the engine's own
//! ceiling (`INSERT … SELECT` of the same rows), and stats plus the first page of messages on a
//! store of 1M messages in 10k rooms across 10 organisations. SQLite on a file, PostgreSQL on the
//! test kit's throw-away cluster (skipped when PostgreSQL is absent).
//!
//! Prints a Markdown table; the numbers go into `docs/benchmarks.md`.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::time::{Duration, Instant};

use argus_domain::{
    Classification, MessageRecord, PageRequest, RoomSnapshot, Scope, Viewer, from_unix_ms, to_unix_ms,
};
use argus_store::{IngestionRun, Store};
use diesel::{Connection, PgConnection, SqliteConnection, connection::SimpleConnection};
use time::OffsetDateTime;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const MESSAGES: usize = 100_000;
const BIG_ORGS: i64 = 10;
const BIG_ROOMS: i64 = 10_000;
const BIG_MESSAGES: i64 = 1_000_000;

fn viewer(org: &str, clearance: Classification) -> BenchResult<Viewer> {
    Ok(Viewer::new("bench".parse()?, org.parse()?, clearance, [Scope::Read, Scope::Ingest]))
}

fn snapshot(room: &str, n: usize, tag: &str) -> BenchResult<RoomSnapshot> {
    let start = to_unix_ms(OffsetDateTime::now_utc()) - n as i64 * 1000;
    let sender = "@jean.dupont-interieur.gouv.fr:agent.tchap.gouv.fr".parse()?;
    let messages = (0..n)
        .map(|i| {
            Ok(MessageRecord {
                event_id: format!("${tag}{i:08}_acR1l0raoZnm60CBwAVgqbZqoO").parse()?,
                sender: Clone::clone(&sender),
                msgtype: Some("m.text".to_owned()),
                body: Some(format!(
                    "Point de situation {i}: rien à signaler sur le secteur nord, relève à 18h."
                )),
                sent_at: from_unix_ms(start + i as i64 * 1000)?,
                edited: false,
                redacted: false,
                encrypted: false,
                reply_to: None,
                thread_root: None,
                media: None,
            })
        })
        .collect::<BenchResult<Vec<_>>>()?;
    Ok(RoomSnapshot {
        room_id: room.parse()?,
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse()?,
        name: Some("Cellule de crise".to_owned()),
        topic: None,
        canonical_alias: None,
        member_count: 40,
        encrypted: false,
        messages,
        edits: Vec::new(),
        redactions: Vec::new(),
        resume_token: None,
        report: Default::default(),
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
    stats: Duration,
    first_page: Duration,
    rooms_page: Duration,
}

/// Records 100k messages in one ingestion, then copies the same rows with `INSERT … SELECT`.
fn ingestion(store: &Store, raw: &mut Raw) -> BenchResult<(f64, f64)> {
    let v = viewer("bench-org", Classification::Secret)?;
    let snap = snapshot("!ingest:bench.gouv.fr", MESSAGES, "e")?;
    let run = IngestionRun {
        viewer: v.clone(),
        classification: Classification::Restricted,
        started_at: OffsetDateTime::now_utc(),
    };
    let t = Instant::now();
    let r = store.record_ingestion(&run, &snap)?;
    let ingest = t.elapsed();
    if r.messages_stored != MESSAGES as i64 {
        return Err("not every message was stored".into());
    }
    // The ceiling: the same rows, same table and indexes, straight from SQL inside the engine.
    let empty = snapshot("!ceiling:bench.gouv.fr", 0, "c")?;
    store.record_ingestion(&run, &empty)?;
    let sql = "INSERT INTO messages (org_id, room_pk, event_id, sender, msgtype, body, sent_at, edited, \
               edited_at, redacted, encrypted, reply_to, thread_root, media, classification) \
               SELECT m.org_id, (SELECT id FROM rooms WHERE room_id = '!ceiling:bench.gouv.fr'), \
               '$c' || substr(m.event_id, 3), m.sender, m.msgtype, m.body, m.sent_at, m.edited, m.edited_at, \
               m.redacted, m.encrypted, m.reply_to, m.thread_root, m.media, m.classification FROM messages m \
               WHERE m.room_pk = (SELECT id FROM rooms WHERE room_id = '!ingest:bench.gouv.fr') \
               ON CONFLICT (org_id, event_id) DO NOTHING";
    let t = Instant::now();
    raw.exec(&format!("BEGIN; {sql}; COMMIT;"))?;
    let ceiling = t.elapsed();
    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64();
    Ok((rate(ingest), rate(ceiling)))
}

/// Fills a store with 1M messages in 10k rooms across 10 organisations, in bulk SQL.
fn build_big(raw: &mut Raw, postgres: bool) -> BenchResult {
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
    let per_room = BIG_MESSAGES / BIG_ROOMS;
    raw.exec(&format!(
        "BEGIN; INSERT INTO rooms (org_id, room_id, homeserver_url, name, member_count, encrypted, classification, \
         first_seen_at, last_ingested_at) SELECT 'org' || {org}, '!big' || {n} || ':bench.gouv.fr', \
         'https://matrix.agent.tchap.gouv.fr', 'Salon ' || {n}, 10, {bool_false}, s.n % 5, {now}, {now} FROM {series}; COMMIT;",
        org = text(&format!("s.n % {BIG_ORGS}")),
        n = text("s.n"),
        series = series(BIG_ROOMS),
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
        series = series(BIG_MESSAGES),
    ))?;
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

fn sqlite() -> BenchResult<Numbers> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::open(&url)?;
    let mut raw = Raw::Sqlite(SqliteConnection::establish(path.to_str().ok_or("path")?)?);
    raw.exec("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    let (ingest_rate, ceiling_rate) = ingestion(&store, &mut raw)?;

    let big_path = dir.path().join("big.db");
    let big = Store::open(&format!("sqlite://{}", big_path.display()))?;
    let mut raw = Raw::Sqlite(SqliteConnection::establish(big_path.to_str().ok_or("path")?)?);
    raw.exec("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    build_big(&mut raw, false)?;
    let (stats, first_page, rooms_page) = reads(&big)?;
    Ok(Numbers { backend: "SQLite (file, WAL)", ingest_rate, ceiling_rate, stats, first_page, rooms_page })
}

fn postgres() -> BenchResult<Option<Numbers>> {
    let Some(db) = argus_testkit::postgres::fresh_database() else { return Ok(None) };
    let store = Store::open(db.url())?;
    let mut raw = Raw::Postgres(PgConnection::establish(db.url())?);
    let (ingest_rate, ceiling_rate) = ingestion(&store, &mut raw)?;
    let Some(big_db) = argus_testkit::postgres::fresh_database() else { return Ok(None) };
    let big = Store::open(big_db.url())?;
    let mut raw = Raw::Postgres(PgConnection::establish(big_db.url())?);
    build_big(&mut raw, true)?;
    let (stats, first_page, rooms_page) = reads(&big)?;
    Ok(Some(Numbers {
        backend: "PostgreSQL (test kit cluster)",
        ingest_rate,
        ceiling_rate,
        stats,
        first_page,
        rooms_page,
    }))
}

fn main() -> BenchResult {
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let mut rows = vec![sqlite()?];
    rows.extend(postgres()?);
    println!(
        "| backend | record_ingestion msg/s | INSERT…SELECT ceiling msg/s | ratio | stats (1M msgs) | first page of messages | first page of rooms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2}× | {:.1} ms | {:.2} ms | {:.1} ms |",
            n.backend,
            n.ingest_rate,
            n.ceiling_rate,
            n.ingest_rate / n.ceiling_rate,
            n.stats.as_secs_f64() * 1000.0,
            n.first_page.as_secs_f64() * 1000.0,
            n.rooms_page.as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}
