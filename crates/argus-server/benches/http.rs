//! `tchapMessages(first: 100)` over HTTP on a large store, side by side with what it is
//! measured against, each loaded with `wrk` in the same run:
//!
//! - the same server with the access journal off (every read journaled is the product; off is
//!   this benchmark's switch, `argus_graphql::bench::without_journal`): what the journal costs;
//! - the same Juniper schema types resolving the same 100 rows from memory (no store, no
//!   authentication): what is the executor's and what is ours;
//! - on PostgreSQL, the database's own floor: `pgbench` running the store's page and count
//!   statements (`benches/peers/pgbench/page.sql`) with the same concurrency;
//! - on PostgreSQL, PostGraphile 4.14.1 over the same tables under row-level security for
//!   organisation and clearance (`benches/peers/postgraphile`, installed from npm into
//!   `target/peers/`), with its own `totalCount` and with the count read from `message_counts`.
//!
//! `cargo bench -p argus-server --features bench --bench http`. `ARGUS_BENCH_BACKENDS`
//! (`sqlite,postgres`), `ARGUS_BENCH_MESSAGES` the store size (default 1,000,000),
//! `ARGUS_BENCH_SECONDS` the duration of each load run (default 10), `ARGUS_BENCH_CONNECTIONS`
//! the concurrent connections (default 32). Needs `wrk`; a missing PostgreSQL, `pgbench`, node
//! or npm skips that part loudly.

/// The allocator of the `argus-tchap` binary, so the server is measured as it is deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{path::PathBuf, process::Command, sync::Arc, time::Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context as _, Result, bail};
use argus_domain::{
    Classification, MessageRecord, Scope, Viewer, from_unix_ms,
    testing::{RoomSnapshotBuilder, ViewerBuilder},
};
use argus_server::{
    Config,
    auth::{TokenRequest, mint_dev_token},
    config::KeySource,
};
use argus_store::{DatabaseUrl, IngestionRun, Store, StoreOptions};
use serde_json::{Value, json};

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const ROOM: &str = "!bench:tchap.test";
const HOMESERVER: &str = "https://matrix.tchap.test";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed(store: &Store, viewer: &Viewer, total: u64) -> Result<()> {
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
        let snapshot = RoomSnapshotBuilder::new(ROOM)
            .homeserver(HOMESERVER)
            .name("Salle de benchmark")
            .member_count(50)
            .messages(messages)
            .build();
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
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "30s",
            "--latency",
            "-s",
        ])
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

/// The bench's document, variables included.
fn document() -> String {
    json!({
        "query": "query($r: String!) { tchapMessages(roomId: $r, first: 100) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id eventId sender msgtype body sentAt classification edited redacted encrypted } } } }",
        "variables": { "r": ROOM },
    })
    .to_string()
}

/// What one load run of `url` gives, run on a blocking thread.
async fn load(url: String, token: String, body: String, seconds: u64, connections: u64) -> Result<Load> {
    tokio::task::spawn_blocking(move || wrk(&url, &token, &body, seconds, connections)).await?
}

/// Posts `body` once and checks the answer holds 100 edges at `path` (`data.<field>.edges`).
async fn check(url: &str, token: &str, body: &str, field: &str) -> Result<Value> {
    let payload: Value = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?
        .json()
        .await?;
    let edges = payload["data"][field]["edges"].as_array().map_or(0, Vec::len);
    if edges != 100 {
        bail!("unexpected payload: {payload}");
    }
    Ok(payload)
}

fn line(what: &str, load: &Load) {
    #[expect(clippy::print_stdout, reason = "bench output")]
    {
        println!("  {what}: {:.0} requests/s, p99 {:.1} ms", load.rps, load.p99_ms);
    }
}

fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/peers")
}

/// Starts a two-worker actix server on loopback answering `POST /graphql` with `route()`.
fn loopback_server<F>(route: F) -> Result<(std::net::SocketAddr, actix_web::dev::ServerHandle)>
where
    F: Fn() -> actix_web::Route + Clone + Send + 'static,
{
    let server =
        HttpServer::new(move || App::new().route("/graphql", route())).workers(2).bind("127.0.0.1:0")?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((addr, handle))
}

/// Serves `schema` (the same types, rows from memory) on `POST /graphql`, with one context.
fn memory_server(
    schema: argus_graphql::bench::MemorySchema,
    context: argus_graphql::Context,
) -> Result<(std::net::SocketAddr, actix_web::dev::ServerHandle)> {
    let state = Arc::new((schema, context));
    loopback_server(move || {
        let state = Arc::clone(&state);
        web::post().to(move |body: web::Bytes| {
            let state = Arc::clone(&state);
            async move {
                let Ok(request) = serde_json::from_slice::<juniper::http::GraphQLRequest>(&body) else {
                    return HttpResponse::BadRequest().finish();
                };
                let response = request.execute(&state.0, &state.1).await;
                HttpResponse::Ok().json(&response)
            }
        })
    })
}

/// The database's floor: `pgbench` running the store's two statements for the same page.
fn pgbench(url: &str, room_pk: i64, seconds: u64, connections: u64) -> Result<Option<f64>> {
    let script = peers_dir().join("pgbench/page.sql");
    let output = match Command::new("pgbench")
        .args(["-n", "-M", "prepared", &format!("-c{connections}"), "-j2", &format!("-T{seconds}"), "-f"])
        .arg(&script)
        .args(["-D", "org=bench", "-D", "clr=3", "-D", &format!("pk={room_pk}")])
        .arg(url)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("!!! SKIPPED: pgbench unavailable ({e}); no database floor in this run");
            return Ok(None);
        }
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("pgbench failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .context("no tps in the pgbench output")?
        .parse::<f64>()?;
    Ok(Some(tps))
}

/// PostGraphile over the same database under row-level security: its `totalCount`, then the
/// count from `message_counts`. `None` (after a loud message) when node, npm or psql is missing.
async fn postgraphile(url: &str, room_pk: i64, seconds: u64, connections: u64) -> Result<Option<[Load; 2]>> {
    let dir = peers_dir().join("postgraphile");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let secret = "argus-bench-postgraphile-secret-0123456789";
    let mut child = tokio::process::Command::new(dir.join("start.sh"))
        .arg(url)
        .arg(port.to_string())
        .env("ARGUS_PEER_JWT_SECRET", secret)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let ready =
        tokio::process::Command::new(dir.join("peer.sh")).args(["wait", &port.to_string(), "300"]).status();
    let ready = tokio::select! {
        status = child.wait() => {
            let status = status?;
            if status.code() == Some(77) {
                return Ok(None);
            }
            bail!("PostGraphile exited before answering: {status}");
        }
        ready = ready => ready?,
    };
    if !ready.success() {
        bail!("PostGraphile did not answer");
    }
    let node = |args: &[&str]| -> Result<String> {
        let out = Command::new("node").args(args).env("ARGUS_PEER_JWT_SECRET", secret).output()?;
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let token = node(&[&dir.join("mint-jwt.js").to_string_lossy(), "bench", "3"])?;
    let graphql = format!("http://127.0.0.1:{port}/graphql");
    let mut loads = Vec::new();
    for doc in ["query-totalcount.graphql", "query-counts.graphql"] {
        let body = String::from_utf8(
            Command::new(dir.join("peer.sh"))
                .args(["body"])
                .arg(dir.join(doc))
                .arg(room_pk.to_string())
                .output()?
                .stdout,
        )?;
        check(&graphql, &token, &body, "allMessages").await?;
        loads.push(load(graphql.clone(), token.clone(), body, seconds, connections).await?);
    }
    child.kill().await?;
    let [total, counts]: [Load; 2] = loads.try_into().map_err(|_| anyhow::anyhow!("two loads"))?;
    Ok(Some([total, counts]))
}

/// Seeds a store at `url`, serves it, and loads `tchapMessages(first: 100)`; returns the
/// server's load, its first answer (for the baselines) and the page the store gives.
async fn ours(
    url: DatabaseUrl,
    dir: &std::path::Path,
    total: u64,
    seconds: u64,
    connections: u64,
) -> Result<(Load, Load, Value, Store)> {
    let mut config =
        Config { database_url: url.clone(), data_dir: Some(dir.to_path_buf()), ..Config::default() };
    config.jwt.hs256_secret = Some(argus_domain::Secret::new(SECRET));
    config.fusion.enabled = false;
    let viewer = ViewerBuilder::new("bench").actor("bench").build();
    let seed_viewer = viewer.clone();
    let store = tokio::task::spawn_blocking(move || -> Result<Store> {
        let store = Store::connect(&url, StoreOptions::default())?;
        seed(&store, &seed_viewer, total)?;
        Ok(store)
    })
    .await??;
    let token = token(&config, &viewer)?;
    // The same server with every read journaled (as deployed) and with the journal off,
    // interleaved twice (on, off, on, off), each after a warm-up load of its own, so that
    // neither profits from the other's caches or from the store settling after its seeding;
    // each mode's figure is the mean of its two loads.
    let mut on = Vec::with_capacity(2);
    let mut off = Vec::with_capacity(2);
    let mut payload = Value::Null;
    for journal in [true, false, true, false] {
        let built = argus_server::app::build(&config).await?;
        if !journal {
            argus_graphql::bench::without_journal(built.state.services());
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let server = argus_server::spawn_built(listener, built)?;
        let graphql = format!("http://{}/graphql", server.addr());
        payload = check(&graphql, &token, &document(), "tchapMessages").await?;
        load(graphql.clone(), token.clone(), document(), 2, connections).await?;
        let measured = load(graphql, token.clone(), document(), seconds, connections).await?;
        if journal {
            on.push(measured)
        } else {
            off.push(measured)
        }
        server.stop().await?;
    }
    let mean = |loads: &[Load]| Load {
        rps: loads.iter().map(|l| l.rps).sum::<f64>() / loads.len() as f64,
        p99_ms: loads.iter().map(|l| l.p99_ms).fold(0.0, f64::max),
    };
    let (with_journal, without) = (mean(&on), mean(&off));
    Ok((with_journal, without, payload, store))
}

fn token(config: &Config, viewer: &Viewer) -> Result<String> {
    let source = KeySource::Hs256 { secret: argus_domain::Secret::new(SECRET), generated: false };
    let request = TokenRequest {
        sub: viewer.actor.clone(),
        org: viewer.org.clone(),
        clearance: viewer.clearance,
        scopes: vec![Scope::Read],
        ttl: std::time::Duration::from_secs(3600),
    };
    Ok(mint_dev_token(&config.jwt, &source, &request)?)
}

/// The plain actix handler serialising a prepared payload, and the same Juniper types resolving
/// the store's first page from memory.
async fn baselines(payload: Value, store: &Store, seconds: u64, connections: u64) -> Result<[Load; 2]> {
    let payload = Arc::new(payload);
    let (plain_addr, plain_handle) = loopback_server(move || {
        let payload = Arc::clone(&payload);
        web::post().to(move |_body: web::Bytes| {
            let payload = Arc::clone(&payload);
            async move { HttpResponse::Ok().json(&*payload) }
        })
    })?;
    let plain_load =
        load(format!("http://{plain_addr}/graphql"), String::new(), document(), seconds, connections).await?;
    plain_handle.stop(true).await;

    let viewer = ViewerBuilder::new("bench").actor("bench").build();
    let page = store.messages(&viewer, &ROOM.parse()?, &argus_domain::PageRequest::first(100))?;
    let connector = argus_matrix::Connector::new(argus_matrix::ConnectorConfig::default())?;
    let services = Arc::new(argus_graphql::Services::new(store.clone(), connector));
    let context = argus_graphql::Context::new(viewer, services);
    let (addr, handle) = memory_server(argus_graphql::bench::memory_schema(page), context)?;
    let url = format!("http://{addr}/graphql");
    check(&url, "", &document(), "tchapMessages").await?;
    let memory = load(url, String::new(), document(), seconds, connections).await?;
    handle.stop(true).await;
    Ok([plain_load, memory])
}

#[tokio::main]
#[expect(clippy::print_stdout, reason = "bench output")]
async fn main() -> Result<()> {
    let total = env_u64("ARGUS_BENCH_MESSAGES", 1_000_000);
    let seconds = env_u64("ARGUS_BENCH_SECONDS", 10);
    let connections = env_u64("ARGUS_BENCH_CONNECTIONS", 32);
    let backends = std::env::var("ARGUS_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    println!("tchapMessages(first: 100) on {total} messages, wrk -t2 -c{connections} -d{seconds}s each");
    println!("  load average before: {}", loadavg());

    if backends.contains("sqlite") {
        let dir = tempfile::tempdir()?;
        let url = DatabaseUrl::sqlite_file(dir.path().join("bench.db"));
        let (server, unjournaled, payload, store) =
            ours(url, dir.path(), total, seconds, connections).await?;
        let [plain, memory] = baselines(payload, &store, seconds, connections).await?;
        println!("SQLite:");
        line("argus-server", &server);
        line("argus-server, access journal off", &unjournaled);
        println!("  journal on / off: {:.2}", server.rps / unjournaled.rps);
        line("same Juniper types, 100 rows from memory", &memory);
        line("plain actix JSON handler", &plain);
        println!("  server / Juniper from memory: {:.2}", server.rps / memory.rps);
        println!("  server / plain handler: {:.2}", server.rps / plain.rps);
        println!("  load average: {}", loadavg());
    }

    if backends.contains("postgres") {
        match argus_testkit::postgres::fresh_database() {
            None => println!("PostgreSQL: SKIPPED (no PostgreSQL binaries)"),
            Some(db) => {
                let dir = tempfile::tempdir()?;
                let (server, unjournaled, _, store) =
                    ours(db.url().parse()?, dir.path(), total, seconds, connections).await?;
                drop(store);
                let pk: i64 = db
                    .cluster()
                    .query(db.url(), &format!("SELECT id FROM rooms WHERE room_id = '{ROOM}'"))?
                    .trim()
                    .parse()?;
                let floor = pgbench(db.url(), pk, seconds, connections)?;
                let peer = postgraphile(db.url(), pk, seconds, connections).await?;
                println!("PostgreSQL:");
                line("argus-server", &server);
                line("argus-server, access journal off", &unjournaled);
                println!("  journal on / off: {:.2}", server.rps / unjournaled.rps);
                match floor {
                    Some(tps) => println!(
                        "  pgbench, page + count statements (-M prepared): {tps:.0} pages/s; server / floor: {:.2}",
                        server.rps / tps
                    ),
                    None => println!("  pgbench: SKIPPED"),
                }
                match peer {
                    Some([total_count, counts]) => {
                        line("PostGraphile + RLS, its totalCount", &total_count);
                        line("PostGraphile + RLS, count from message_counts", &counts);
                        println!(
                            "  server / PostGraphile: {:.1} (totalCount), {:.1} (message_counts)",
                            server.rps / total_count.rps,
                            server.rps / counts.rps
                        );
                    }
                    None => println!("  PostGraphile: SKIPPED (node, npm or psql missing)"),
                }
                println!("  load average: {}", loadavg());
            }
        }
    }
    Ok(())
}
