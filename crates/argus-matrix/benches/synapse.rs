//! A full read of a 5,000-message room on a real Synapse, against a bare page loop.
//!
//! Builds the room once (a Synapse started by `argus-testkit`, messages sent 16 at a time), then
//! alternates runs of (a) the connector's full read of the room and (b) a bare reqwest loop that
//! GETs `/rooms/{id}/messages?dir=b&limit=<the connector's page size>`, follows `end` and reads
//! the bytes, and reports the median of the per-pair time ratios (target: ≤ 1.2).
//!
//! Run with `cargo bench -p argus-matrix --bench synapse`. `ARGUS_BENCH_MESSAGES` changes the
//! room size, `ARGUS_BENCH_RUNS` the number of pairs (default 7). Without Python/pip the bench is
//! skipped loudly, unless `ARGUS_REQUIRE_SYNAPSE=1`.

use std::time::{Duration, Instant};

use argus_domain::{AccessToken, HomeserverUrl, RoomId};
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, HARD_MAX_MESSAGES, Session};
use argus_testkit::synapse::{TestUser, synapse};
use serde::Deserialize;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Only the pagination token of a `/messages` page; every other field is skipped.
#[derive(Deserialize)]
struct PageEnd {
    end: Option<String>,
}

fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(value) => Ok(value.parse()?),
        Err(_) => Ok(default),
    }
}

/// The baseline: GET every page backwards with a bare reqwest client, following `end` until the
/// homeserver omits it, and read the bytes. Returns (pages, bytes).
async fn bare_loop(
    client: &reqwest::Client,
    user: &TestUser,
    base: &str,
    room: &str,
    limit: u32,
) -> BenchResult<(u32, usize)> {
    let url = format!("{base}/_matrix/client/v3/rooms/{}/messages", room.replace('!', "%21"));
    let limit = limit.to_string();
    let (mut pages, mut bytes) = (0_u32, 0_usize);
    let mut from: Option<String> = None;
    loop {
        let mut query = vec![("dir", "b"), ("limit", limit.as_str())];
        if let Some(from) = &from {
            query.push(("from", from.as_str()));
        }
        let response = client
            .get(&url)
            .query(&query)
            .bearer_auth(&user.access_token)
            .send()
            .await?
            .error_for_status()?;
        let body = response.bytes().await?;
        pages += 1;
        bytes += body.len();
        match serde_json::from_slice::<PageEnd>(&body)?.end {
            Some(end) => from = Some(end),
            None => return Ok((pages, bytes)),
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[expect(clippy::print_stdout, reason = "a bench binary reports on stdout")]
fn main() -> BenchResult {
    // `cargo bench` passes `--bench`; this binary takes no arguments of its own.
    let messages = env_usize("ARGUS_BENCH_MESSAGES", 5_000)?;
    let runs = env_usize("ARGUS_BENCH_RUNS", 7)?.max(1);
    let Some(server) = synapse() else {
        println!("synapse: skipped (no Synapse; set ARGUS_REQUIRE_SYNAPSE=1 to make this a failure)");
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let alice = server.register("bench").await?;
        let room = alice.create_room(Some("Bench"), None, false).await?;
        let started = Instant::now();
        let sent = alice.send_texts(&room, "Point de situation : rien à signaler, message", messages, 16).await?;
        println!("synapse: sent {} messages in {:.1} s", sent.len(), started.elapsed().as_secs_f64());

        let connector = Connector::new(ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            ..ConnectorConfig::default()
        })?;
        let page_size = connector.config().page_size;
        let homeserver: HomeserverUrl = server.base_url().parse()?;
        let session = Session::with_token(homeserver, AccessToken::new(alice.access_token.clone()));
        let room_id: RoomId = room.parse()?;
        let options = FetchOptions { max_messages: HARD_MAX_MESSAGES, since: None, ..FetchOptions::default() };
        let bare = reqwest::Client::builder().no_proxy().build()?;

        let connector_read = || async {
            let started = Instant::now();
            let snapshot = connector.fetch_room(&session, &room_id, &options).await?;
            let elapsed = started.elapsed();
            if snapshot.messages.len() != messages || snapshot.report.truncated {
                return Err(format!("the connector read {} of {messages} messages", snapshot.messages.len()).into());
            }
            BenchResult::Ok((elapsed, snapshot.report.pages))
        };
        let bare_read = || async {
            let started = Instant::now();
            let (pages, bytes) = bare_loop(&bare, &alice, server.base_url(), &room, page_size).await?;
            BenchResult::Ok((started.elapsed(), pages, bytes))
        };

        // Warm-up: Synapse's caches and both clients' connections.
        let (_, connector_pages) = connector_read().await?;
        let (_, bare_pages, bytes) = bare_read().await?;
        println!(
            "synapse: page size {page_size}; connector {connector_pages} pages (+ /state), bare loop {bare_pages} pages, {:.1} MB",
            bytes as f64 / 1e6
        );

        let (mut connector_ms, mut bare_ms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            // Alternate which goes first, so that drift in the machine's load hits both alike.
            let (c, b) = if run % 2 == 0 {
                let c = connector_read().await?.0;
                (c, bare_read().await?.0)
            } else {
                let b = bare_read().await?.0;
                (connector_read().await?.0, b)
            };
            println!("synapse: run {}: connector {:.0} ms, bare loop {:.0} ms, ratio {:.3}", run + 1, ms(c), ms(b), ms(c) / ms(b));
            connector_ms.push(ms(c));
            bare_ms.push(ms(b));
            ratios.push(ms(c) / ms(b));
        }
        let ratio = median(&mut ratios);
        let (connector_median, bare_median) = (median(&mut connector_ms), median(&mut bare_ms));
        println!(
            "synapse: {messages} messages, {runs} pairs: connector median {connector_median:.0} ms ({:.0} messages/s), bare loop median {bare_median:.0} ms; median ratio {ratio:.3} (target <= 1.2: {})",
            messages as f64 / connector_median * 1000.0,
            if ratio <= 1.2 { "met" } else { "not met" }
        );
        BenchResult::Ok(())
    })
}
