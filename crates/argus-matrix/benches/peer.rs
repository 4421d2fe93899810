//! The connector against a peer a user could pick instead: matrix-nio's `room_messages` paging
//! (`benches/peers/nio`, installed from PyPI into `target/peers/nio-venv`) over the same mock
//! homeserver and the same 100,000 events (100 prepared pages of 1,000), measured in one run.
//! Both page backwards from the newest event following `end` until the homeserver omits it;
//! nio parses every event into its own event objects, the connector normalises them into
//! records.
//!
//! `cargo bench -p argus-matrix --bench peer`. `ARGUS_BENCH_RUNS` (default 3) runs of each,
//! medians. A missing Python, venv or network for pip skips the peer loudly.

use std::{path::PathBuf, process::Command, time::Instant};

mod common;

use argus_testkit::homeserver::bench;
use common::{BenchResult, Reader, reader};

const PAGES: usize = 100;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The venv's python, or `None` when the peer cannot be installed (the script said why).
fn nio_python(peers: &std::path::Path) -> BenchResult<Option<String>> {
    let out = Command::new(peers.join("nio/setup.sh")).stderr(std::process::Stdio::inherit()).output()?;
    if out.status.code() == Some(77) {
        return Ok(None);
    }
    if !out.status.success() {
        return Err("the nio peer's setup failed".into());
    }
    let stdout = String::from_utf8(out.stdout)?;
    Ok(stdout.lines().last().map(str::to_owned))
}

#[expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]
fn main() -> BenchResult {
    let runs: usize = std::env::var("ARGUS_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers");
    // Prepared pages: the mock serves the same bytes to both readers at no cost of its own.
    let Reader { rt, server, session, room, connector, options } = reader(PAGES, true)?;

    let python = nio_python(&peers)?;
    let mut ours = Vec::new();
    let mut nio = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let snapshot = rt.block_on(connector.fetch_room(&session, &room, &options))?;
        ours.push(started.elapsed().as_secs_f64());
        if snapshot.report.events_fetched != (PAGES * bench::PAGE_EVENTS) as u64 {
            return Err("the connector did not read every event".into());
        }
        drop(snapshot);
        if let Some(python) = &python {
            let out = Command::new(python)
                .arg(peers.join("nio/paging.py"))
                .args(["--homeserver", &server.uri(), "--token", "syt_bench_token", "--room", bench::ROOM])
                .args(["--limit", "1000", "--repeat", "1"])
                .output()?;
            if !out.status.success() {
                return Err(format!("nio failed: {}", String::from_utf8_lossy(&out.stderr)).into());
            }
            let line: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            if line["events"].as_u64() != Some((PAGES * bench::PAGE_EVENTS) as u64) {
                return Err(format!("nio did not read every event: {line}").into());
            }
            nio.push(line["seconds"].as_f64().ok_or("no seconds from nio")?);
        }
    }
    let ours = median(ours);
    println!("100,000 events in 100 pages, median of {runs} runs:");
    println!("  argus-matrix Connector::fetch_room: {:.3} s ({:.0} events/s)", ours, 100_000.0 / ours);
    if nio.is_empty() {
        println!("  matrix-nio: SKIPPED (see the message above)");
    } else {
        let nio = median(nio);
        println!(
            "  matrix-nio 0.26 AsyncClient.room_messages: {:.3} s ({:.0} events/s)",
            nio,
            100_000.0 / nio
        );
        println!("  connector / nio throughput: {:.1}x (target >= 5x)", nio / ours);
    }
    Ok(())
}
