//! Peak memory of a read of 100,000 events (100 pages of 1,000), as the process's high-water
//! mark (`VmHWM` in `/proc/self/status`). The mock homeserver generates each page on request so
//! that its own memory stays out of the measurement.
//!
//! Run with `cargo bench -p argus-matrix --bench memory`.

mod common;

use argus_testkit::homeserver::bench;
use common::{BenchResult, Reader, reader};

const PAGES: usize = 100;

/// The resident-set high-water mark of this process, in KiB.
fn vm_hwm_kib() -> BenchResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmHWM")?.parse()?)
}

#[expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]
fn main() -> BenchResult {
    let Reader { rt, server: _server, session, room, connector, options } = reader(PAGES, false)?;
    let before = vm_hwm_kib()?;
    let started = std::time::Instant::now();
    let snapshot = rt.block_on(connector.fetch_room(&session, &room, &options))?;
    let elapsed = started.elapsed();
    let after = vm_hwm_kib()?;
    let r = &snapshot.report;
    println!(
        "memory: read {} events ({} pages, {} messages, {} edits applied) in {:.2} s; VmHWM before {:.1} MiB, after {:.1} MiB (target < 300 MiB)",
        r.events_fetched,
        r.pages,
        r.messages,
        r.edits_applied,
        elapsed.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    if r.events_fetched != (PAGES * bench::PAGE_EVENTS) as u64 {
        return Err("not every event was read".into());
    }
    if after > 300 * 1024 {
        return Err("peak memory above 300 MiB".into());
    }
    Ok(())
}
