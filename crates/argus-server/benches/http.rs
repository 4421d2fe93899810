//! `tchapMessages(first: 100)` over HTTP on a large SQLite store, against a plain actix JSON
//! handler returning the same payload, both measured with `wrk` in the same run.
//!
//! `cargo bench -p argus-server --bench http`. `ARGUS_BENCH_MESSAGES` sets the store size
//! (default 1,000,000), `ARGUS_BENCH_SECONDS` the duration of each load run (default 10),
//! `ARGUS_BENCH_CONNECTIONS` the concurrent connections (default 32). Needs `wrk` on the PATH.

/// The allocator of the `argus-tchap` binary, so the server is measured as it is deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{process::Command, sync::Arc, time::Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context as _, Result, bail};
use argus_domain::{
    Classification, FetchReport, HomeserverUrl, MessageRecord, RoomSnapshot, Scope, Viewer, from_unix_ms,
};
use argus_server::{
    Config,
    auth::{TokenRequest, mint_dev_token},
    config::KeySource,
};
use argus_store::{IngestionRun, Store};
use serde_json::{Value, json};

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const ROOM: &str = "!bench:tchap.test";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed(store: &Store, viewer: &Viewer, total: u64) -> Result<()> {
    let homeserver: HomeserverUrl = "https://matrix.tchap.test".parse()?;
    let chunk = 20_000;
    let mut done = 0;
    let started = Instant::now();
    while done < total {
        let n = chunk.min(total - done);
        let messages = (done..done + n)
            .map(|i| {
                Ok(MessageRecord::text(
                    format!("$event{i:08}_benchmark").parse()?,
                    format!("@agent{}:tchap.test", i % 50).parse()?,
                    format!("Message {i}: point de situation, rien à signaler sur le secteur {}.", i % 97),
                    from_unix_ms(1_767_225_600_000 + i64::try_from(i)? * 1_000)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let snapshot = RoomSnapshot {
            room_id: ROOM.parse()?,
            homeserver_url: homeserver.clone(),
            name: Some("Salle de benchmark".into()),
            topic: None,
            canonical_alias: None,
            member_count: 50,
            encrypted: false,
            messages,
            edits: Vec::new(),
            redactions: Vec::new(),
            resume_token: None,
            report: FetchReport::default(),
        };
        let run = IngestionRun {
            viewer: viewer.clone(),
            classification: Classification::Restricted,
            started_at: time::OffsetDateTime::now_utc(),
        };
        store.record_ingestion(&run, &snapshot)?;
        done += n;
    }
    eprintln!("seeded {total} messages in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

struct Load {
    rps: f64,
    p99_ms: f64,
}

fn wrk(url: &str, token: &str, body: &str, seconds: u64, connections: u64) -> Result<Load> {
    let script = std::env::temp_dir().join(format!("argus-bench-{}.lua", std::process::id()));
    let escaped = body.replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{escaped}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
        ),
    )?;
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim).map(str::to_owned))
    };
    let rps = field("Requests/sec:").context("no Requests/sec")?.parse::<f64>()?;
    let p99 = field("99%").context("no 99% latency")?;
    let p99_ms = if let Some(us) = p99.strip_suffix("us") {
        us.parse::<f64>()? / 1000.0
    } else if let Some(ms) = p99.strip_suffix("ms") {
        ms.parse::<f64>()?
    } else if let Some(s) = p99.strip_suffix('s') {
        s.parse::<f64>()? * 1000.0
    } else {
        bail!("unknown latency unit {p99}")
    };
    if text.contains("Non-2xx") {
        bail!("non-2xx responses: {text}");
    }
    Ok(Load { rps, p99_ms })
}

#[tokio::main]
#[expect(clippy::print_stdout, reason = "bench output")]
async fn main() -> Result<()> {
    let total = env_u64("ARGUS_BENCH_MESSAGES", 1_000_000);
    let seconds = env_u64("ARGUS_BENCH_SECONDS", 10);
    let connections = env_u64("ARGUS_BENCH_CONNECTIONS", 32);
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        database_url: argus_store::DatabaseUrl::sqlite_file(dir.path().join("bench.db")),
        ..Config::default()
    };
    config.jwt.hs256_secret = Some(argus_domain::Secret::new(SECRET));
    config.fusion.enabled = false;

    let viewer = Viewer::new("bench".parse()?, "bench".parse()?, Classification::Secret, [Scope::Read]);
    let url = config.database_url.clone();
    let seed_viewer = viewer.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        seed(&Store::connect(&url, argus_store::StoreOptions::default())?, &seed_viewer, total)
    })
    .await??;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let server = argus_server::spawn(listener, config.clone()).await?;
    let source = KeySource::Hs256 { secret: argus_domain::Secret::new(SECRET), generated: false };
    let request = TokenRequest {
        sub: viewer.actor.clone(),
        org: viewer.org.clone(),
        clearance: viewer.clearance,
        scopes: vec![Scope::Read],
        ttl: std::time::Duration::from_secs(3600),
    };
    let token = mint_dev_token(&config.jwt, &source, &request)?;
    let query = json!({
        "query": "query($r: String!) { tchapMessages(roomId: $r, first: 100) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id eventId sender msgtype body sentAt classification edited redacted encrypted } } } }",
        "variables": { "r": ROOM },
    })
    .to_string();
    let graphql_url = format!("http://{}/graphql", server.addr());
    let payload: Value = reqwest::Client::new()
        .post(&graphql_url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(query.clone())
        .send()
        .await?
        .json()
        .await?;
    let edges = payload["data"]["tchapMessages"]["edges"].as_array().map_or(0, Vec::len);
    if edges != 100 {
        bail!("unexpected payload: {payload}");
    }

    // The baseline: a plain actix handler serialising the same payload.
    let plain_payload = Arc::new(payload);
    let plain = HttpServer::new(move || {
        let payload = Arc::clone(&plain_payload);
        App::new().route(
            "/graphql",
            web::post().to(move |_body: web::Bytes| {
                let payload = Arc::clone(&payload);
                async move { HttpResponse::Ok().json(&*payload) }
            }),
        )
    })
    .workers(2)
    .bind("127.0.0.1:0")?;
    let plain_addr = plain.addrs()[0];
    let plain = plain.run();
    let plain_handle = plain.handle();
    tokio::spawn(plain);

    let (url2, token2, q2) = (graphql_url.clone(), token.clone(), query.clone());
    let ours = tokio::task::spawn_blocking(move || wrk(&url2, &token2, &q2, seconds, connections)).await??;
    let plain_url = format!("http://{plain_addr}/graphql");
    let (t3, q3) = (token.clone(), query.clone());
    let base = tokio::task::spawn_blocking(move || wrk(&plain_url, &t3, &q3, seconds, connections)).await??;

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("tchapMessages(first: 100) on {total} messages, {connections} connections, {seconds} s each:");
    println!(
        "  load average after the runs: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("  argus-server: {:.0} requests/s, p99 {:.1} ms", ours.rps, ours.p99_ms);
    println!("  plain actix JSON handler: {:.0} requests/s, p99 {:.1} ms", base.rps, base.p99_ms);
    println!("  ratio: {:.2}", ours.rps / base.rps);
    plain_handle.stop(true).await;
    server.stop().await?;
    Ok(())
}
