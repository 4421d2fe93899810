//! Connector throughput against a raw reqwest loop reading the same pages, and event
//! normalisation against parsing the same page into `serde_json::Value`.
//!
//! Run with `cargo bench -p argus-matrix --bench connector`; ratios go to `docs/benchmarks.md`.

use std::{hint::black_box, time::Duration};

mod common;

use argus_testkit::homeserver::bench;
use common::{BenchResult, Reader, reader};
use criterion::{Criterion, Throughput};

const PAGES: usize = 10;
const TOKEN: &str = "syt_bench_token";

/// The baseline: GET the same pages with a bare reqwest client and read the bytes; with
/// `parse`, also parse each page into `serde_json::Value` (a context line, not the target).
async fn raw_loop(client: &reqwest::Client, base: &str, parse: bool) -> BenchResult<usize> {
    let room = bench::ROOM.replace('!', "%21");
    let mut total = client
        .get(format!("{base}/_matrix/client/v3/rooms/{room}/state"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .bytes()
        .await?
        .len();
    for p in 0..PAGES {
        let from = if p == 0 { String::new() } else { format!("&from=t{p}") };
        let url = format!("{base}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000{from}");
        let bytes = client.get(url).bearer_auth(TOKEN).send().await?.bytes().await?;
        total += bytes.len();
        if parse {
            total += black_box(serde_json::from_slice::<serde_json::Value>(&bytes)?)
                .as_object()
                .map_or(0, |o| o.len());
        }
    }
    Ok(total)
}

fn throughput(c: &mut Criterion) -> BenchResult {
    let Reader { rt, server, session, room, connector, options } = reader(PAGES, true)?;
    let base = server.uri();
    let raw = reqwest::Client::builder().no_proxy().build()?;

    // Both paths must read everything before being timed.
    let snapshot = rt.block_on(connector.fetch_room(&session, &room, &options))?;
    assert_eq!(snapshot.report.events_fetched, (PAGES * bench::PAGE_EVENTS) as u64);
    rt.block_on(raw_loop(&raw, &base, true))?;

    let mut group = c.benchmark_group("read_room_10k_events");
    group.throughput(Throughput::Elements((PAGES * bench::PAGE_EVENTS) as u64));
    group.sample_size(30).measurement_time(Duration::from_secs(10));
    group.bench_function("raw_reqwest_loop", |b| {
        b.iter(|| black_box(rt.block_on(raw_loop(&raw, &base, false)).map_err(|e| e.to_string())))
    });
    group.bench_function("raw_reqwest_loop_parse_value", |b| {
        b.iter(|| black_box(rt.block_on(raw_loop(&raw, &base, true)).map_err(|e| e.to_string())))
    });
    group.bench_function("connector", |b| {
        b.iter(|| {
            black_box(rt.block_on(connector.fetch_room(&session, &room, &options)).map(|s| s.messages.len()))
        })
    });
    group.finish();
    Ok(())
}

fn normalisation(c: &mut Criterion) -> BenchResult {
    let body = bench::page_body(0, 1);
    let mut group = c.benchmark_group("page_1000_events");
    group.throughput(Throughput::Elements(bench::PAGE_EVENTS as u64));
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(&body)).map_err(|e| e.to_string()),
            )
        })
    });
    group.bench_function("ruma_parse_only", |b| {
        b.iter(|| black_box(argus_matrix::bench::parse_page(black_box(&body)).map_err(|e| e.to_string())))
    });
    group.bench_function("connector_normalise", |b| {
        b.iter(|| {
            black_box(
                argus_matrix::bench::normalise_page(black_box(&body), bench::ROOM).map_err(|e| e.to_string()),
            )
        })
    });
    group.finish();
    Ok(())
}

fn main() -> BenchResult {
    let mut c = Criterion::default().configure_from_args();
    normalisation(&mut c)?;
    throughput(&mut c)?;
    c.final_summary();
    Ok(())
}
