//! Relay throughput to the JSON Lines sink.
//!
//! Prefills a SQLite outbox with `ARGUS_BENCH_ROWS` rows (default 20,000) through
//! `record_ingestion` of small snapshots, then, on a fresh copy of that database each run,
//! times `Relay::run_once` draining it into a JSON Lines file. The baseline, measured in the
//! same run, writes the same entities straight to a JSON Lines sink (same batch size, same
//! fsync per batch) without the outbox: the ratio is the cost of reading and marking rows. A
//! second baseline, the store floor, only reads and marks the rows (no entity, no sink): the
//! ratio to it is the relay's own overhead.
//!
//! `cargo bench -p argus-fusion --bench relay`

use std::{
    io::Write,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use argus_domain::{
    Classification, Scope,
    testing::{RoomSnapshotBuilder, ViewerBuilder},
};
use argus_fusion::{JsonLinesSink, NetworkNode, Relay, RelayOptions, Sink};
use argus_store::{IngestionRun, Store};

const RUNS: usize = 3;
const BATCH: u32 = 500;

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("argus.db").display())
}

/// Fills a fresh database with `rows` outbox rows over 100 rooms of 4 organisations.
fn prefill(dir: &Path, rows: usize) -> Result<()> {
    let store = Store::open(&sqlite_url(dir))?;
    let orgs = ["dgsi", "anssi", "dgse", "police-nationale.fr"];
    for i in 0..rows {
        let org = orgs[i % orgs.len()];
        let viewer = ViewerBuilder::new(org).actor("bench").scopes([Scope::Ingest]).build();
        let run = IngestionRun {
            viewer,
            classification: Classification::Restricted,
            started_at: time::OffsetDateTime::now_utc(),
        };
        let snapshot = RoomSnapshotBuilder::new(&format!("!room{}:agent.tchap.gouv.fr", i % 100))
            .name(format!("Salon {}", i % 100))
            .topic("Coordination interministérielle")
            .member_count(25)
            .encrypted()
            .build();
        store.record_ingestion(&run, &snapshot)?;
    }
    Ok(())
}

/// Copies the prefilled database (main file and any WAL) into `to`.
fn copy_db(from: &Path, to: &Path) -> Result<()> {
    for name in ["argus.db", "argus.db-wal"] {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name)).context("copying the prefilled database")?;
        }
    }
    Ok(())
}

async fn time_relay(template: &Path, rows: usize) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    copy_db(template, dir.path())?;
    let store = Store::open(&sqlite_url(dir.path()))?;
    let sink: Arc<dyn Sink> = Arc::new(JsonLinesSink::new(dir.path().join("nodes.jsonl")));
    let options =
        RelayOptions { batch_size: BATCH, park_after_attempts: 5, poll_interval: Duration::from_secs(1) };
    let relay = Relay::new(store, vec![sink], options);
    let start = Instant::now();
    let report = relay.run_once().await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(report.delivered as usize == rows, "delivered {} of {rows}", report.delivered);
    Ok(elapsed)
}

async fn time_baseline(entities: &[NetworkNode]) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let sink = JsonLinesSink::new(dir.path().join("nodes.jsonl"));
    let start = Instant::now();
    for chunk in entities.chunks(BATCH as usize) {
        for e in chunk {
            sink.deliver(e).await?;
        }
        sink.flush().await?;
    }
    Ok(start.elapsed())
}

/// The store's own floor: read and mark every row in batches, with no entity and no sink.
async fn time_store_floor(template: &Path, rows: usize) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    copy_db(template, dir.path())?;
    let store = Store::open(&sqlite_url(dir.path()))?;
    let start = Instant::now();
    let marked = tokio::task::spawn_blocking(move || -> Result<usize> {
        let mut marked = 0;
        loop {
            let batch = store.outbox_pending(BATCH)?;
            if batch.is_empty() {
                return Ok(marked);
            }
            let ids: Vec<i64> = batch.iter().map(|row| row.id).collect();
            store.outbox_mark_delivered_batch(&ids)?;
            marked += batch.len();
        }
    })
    .await??;
    let elapsed = start.elapsed();
    anyhow::ensure!(marked == rows, "marked {marked} of {rows}");
    Ok(elapsed)
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn main() -> Result<()> {
    let rows: usize = std::env::var("ARGUS_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut out = std::io::stdout().lock();

    let template = tempfile::tempdir()?;
    let start = Instant::now();
    prefill(template.path(), rows)?;
    writeln!(out, "prefill: {rows} ingestions in {:.1?}", start.elapsed())?;

    let pending = Store::open(&sqlite_url(template.path()))?.outbox_pending(u32::try_from(rows)?)?;
    let entities: Vec<NetworkNode> =
        pending.iter().map(|r| NetworkNode::from_room(&r.payload, r.version)).collect();
    anyhow::ensure!(entities.len() == rows, "prefill left {} rows", entities.len());

    let (mut relay, mut baseline, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        baseline.push(runtime.block_on(time_baseline(&entities))?);
        floor.push(runtime.block_on(time_store_floor(template.path(), rows))?);
        relay.push(runtime.block_on(time_relay(template.path(), rows))?);
    }
    let (relay, baseline, floor) = (median(relay), median(baseline), median(floor));
    let per_s = |d: Duration| rows as f64 / d.as_secs_f64();
    writeln!(out, "baseline (JSON Lines sink alone): {baseline:.1?} = {:.0} entities/s", per_s(baseline))?;
    writeln!(out, "store floor (read + mark only):   {floor:.1?} = {:.0} rows/s", per_s(floor))?;
    writeln!(out, "relay (outbox -> JSON Lines):     {relay:.1?} = {:.0} entities/s", per_s(relay))?;
    writeln!(out, "relay / sink-alone time ratio:  {:.2}", relay.as_secs_f64() / baseline.as_secs_f64())?;
    writeln!(out, "relay / store-floor time ratio: {:.2}", relay.as_secs_f64() / floor.as_secs_f64())?;
    writeln!(out, "target >= 5000 entities/s: {}", if per_s(relay) >= 5000.0 { "met" } else { "NOT met" })?;
    Ok(())
}
