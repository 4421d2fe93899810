//! Live capture's latency on a real Synapse, through the server as it is deployed: from a
//! message sent to the homeserver to (a) the first time `Store::messages` returns it (the gated
//! read `tchapMessages` makes) and (b) its arrival at a GraphQL subscriber
//! (`tchapMessagesAdded` over `graphql-transport-ws`), for the same messages in the same run.
//!
//! `ARGUS_BENCH_ACCOUNTS` (5) accounts, each in `ARGUS_BENCH_ROOMS` (20) rooms made by the
//! account with a sender invited, on the test kit's Synapse. The server is started from its
//! `Config` (SQLite store in a temporary folder, scheduler and live loops on, fusion off,
//! mimalloc) and the subscriber, a WebSocket client cleared for every message, subscribes to
//! every room before anything is sent. `ARGUS_BENCH_MESSAGES` (200) messages are sent by the
//! sender into rooms drawn at random (seeded); each latency runs from just before the send
//! request; the rooms with a message outstanding are read every 10 ms.
//!
//! 1. The accounts watched (`watch_account`, the default 30 s long-poll), their rooms captured
//!    first; the messages sent at `ARGUS_BENCH_RATE` (5) per second.
//! 2. Today's way, in a second server with live capture off and a fresh store: the same rooms as
//!    room watches at 60 s (the shortest interval allowed by default), the scheduler with its
//!    default options; each room read once first. Every room was then read at about the same
//!    time, so the messages are sent over one interval instead (`ARGUS_BENCH_MESSAGES` per
//!    60 s), meeting every phase of the next poll.
//!
//! `cargo bench -p argus-server --bench live`. Without Python/pip the bench is skipped loudly,
//! unless `ARGUS_REQUIRE_SYNAPSE=1`. Prints what `docs/benchmarks.md` records.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the server is measured as it is deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use argus_domain::{AccessToken, Classification, PageRequest, RoomId, Scope, Viewer};
use argus_ingest::{
    Services,
    live::{AccountWatchRequest, watch_account},
    watch::{WatchRequest, watch_room},
};
use argus_server::{
    Config, RunningServer,
    auth::{TokenRequest, mint_dev_token},
    config::KeySource,
};
use argus_testkit::synapse::{Synapse, TestUser, synapse};
use futures::{SinkExt as _, StreamExt as _};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest as _, http::HeaderValue},
};

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const ORG: &str = "bench-org";
/// How often the rooms with a message outstanding are read.
const POLL: Duration = Duration::from_millis(10);
/// Room watches' interval: the shortest allowed by default.
const ROOM_WATCH_INTERVAL: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn owner() -> Result<Viewer> {
    Ok(Viewer::new("bench".parse()?, ORG.parse()?, Classification::Secret, [Scope::Ingest, Scope::Read]))
}

/// A server on a fresh SQLite store in `dir`, live capture on or off; its ingestion services.
async fn server(dir: &tempfile::TempDir, live: bool) -> Result<(RunningServer, Config, Arc<Services>)> {
    let mut config = Config {
        database_url: argus_store::DatabaseUrl::sqlite_file(dir.path().join("argus.db")),
        data_dir: Some(dir.path().to_path_buf()),
        ..Config::default()
    };
    config.jwt.hs256_secret = Some(argus_domain::Secret::new(SECRET));
    config.matrix.allow_private_addresses = vec!["127.0.0.1".into()];
    // One owner watches every account and room at once: neither their rate nor their caps are
    // measured.
    config.matrix.ingestions_per_caller_per_minute = u32::MAX;
    config.watch.max_per_owner = u32::MAX;
    config.watch.max_per_organisation = u32::MAX;
    config.fusion.enabled = false;
    config.watch.live = live;
    let built = argus_server::app::build(&config).await?;
    let app = Arc::clone(&built.state.services().app);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let running = argus_server::spawn_built(listener, built)?;
    Ok((running, config, app))
}

/// A subscriber of every room the bench's organisation may see: the time each message's
/// event id arrived.
struct Subscriber {
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(running: &RunningServer, config: &Config) -> Result<Self> {
        let request = TokenRequest {
            sub: format!("analyst@{ORG}").parse()?,
            org: ORG.parse()?,
            clearance: Classification::Secret,
            scopes: vec![Scope::Read],
            ttl: Duration::from_secs(3600),
        };
        let source = KeySource::Hs256 { secret: argus_domain::Secret::new(SECRET), generated: false };
        let token = mint_dev_token(&config.jwt, &source, &request)?;
        let mut ws = format!("ws://{}/graphql", running.addr()).into_client_request()?;
        ws.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
        let (mut socket, _) = connect_async(ws).await?;
        let init =
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        socket.send(Message::text(init.to_string())).await?;
        let ack = socket.next().await.context("closed before connection_ack")??;
        if !ack.to_text().is_ok_and(|t| t.contains("connection_ack")) {
            bail!("no connection_ack: {ack:?}");
        }
        let subscribe = json!({ "type": "subscribe", "id": "1",
            "payload": { "query": "subscription { tchapMessagesAdded { eventId } }" } });
        socket.send(Message::text(subscribe.to_string())).await?;
        let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let seen = Arc::clone(&arrived);
        let task = tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let now = Instant::now();
                let Message::Text(text) = frame else { continue };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match value["type"].as_str() {
                    Some("next") => {
                        if let Some(id) = value["payload"]["data"]["tchapMessagesAdded"]["eventId"].as_str() {
                            seen.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned(), now);
                        }
                    }
                    Some("pong") => {}
                    _ => println!("live: the subscriber got {value}"),
                }
            }
        });
        // The subscription reads what is stored after it starts: give it that time.
        let metrics = format!("http://{}/metrics", running.addr());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = reqwest::get(&metrics).await?.text().await?;
            let open = text
                .lines()
                .find_map(|l| l.strip_prefix("argus_graphql_subscriptions_open "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            if open.is_some_and(|n| n >= 1.0) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the subscription did not open");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { arrived, task })
    }

    fn arrival(&self, event_id: &str) -> Option<Instant> {
        self.arrived.lock().unwrap_or_else(PoisonError::into_inner).get(event_id).copied()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An account and its rooms.
struct Account {
    user: TestUser,
    rooms: Vec<RoomId>,
}

async fn accounts(server: &Synapse, sender: &TestUser, count: usize, rooms: usize) -> Result<Vec<Account>> {
    let mut made = Vec::new();
    for a in 0..count {
        let user = server.register(&format!("live{a}")).await?;
        let ids = futures::stream::iter((0..rooms).map(|k| {
            let user = user.clone();
            async move {
                let body = json!({ "preset": "private_chat", "name": format!("Cellule {a}-{k}"),
                                   "invite": [sender.user_id] });
                let room = user.create_room_with(&body).await?;
                sender.join(&room).await?;
                Ok::<_, anyhow::Error>(room.parse::<RoomId>()?)
            }
        }))
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        made.push(Account { user, rooms: ids });
    }
    Ok(made)
}

/// A message sent, waiting to be read back.
struct Sent {
    n: usize,
    room: usize,
    event_id: String,
    at: Instant,
}

/// Each message's latency to the store read and to the subscriber (`None`: not within
/// `give_up` after the last send).
type Latencies = Vec<(Option<Duration>, Option<Duration>)>;

/// Sends `messages` messages at `rate` per second into rooms drawn at random; times each until
/// `Store::messages` returns it and until the subscriber has it.
async fn latencies(
    app: &Arc<Services>,
    subscriber: &Subscriber,
    sender: &TestUser,
    rooms: &[RoomId],
    messages: usize,
    rate: f64,
    give_up: Duration,
) -> Result<Latencies> {
    let owner = owner()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sent>();
    let sending = {
        let (sender, rooms) = (sender.clone(), rooms.to_vec());
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(29);
            let start = tokio::time::Instant::now();
            for n in 0..messages {
                tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
                let room = rng.gen_range(0..rooms.len());
                let at = Instant::now();
                let body = format!("Point de situation {n} : relève de l'équipe de nuit confirmée.");
                let event_id = sender.send_text(rooms[room].as_str(), &body).await?;
                let _ = tx.send(Sent { n, room, event_id, at });
            }
            anyhow::Ok(())
        })
    };
    let mut found: Latencies = vec![(None, None); messages];
    let mut sent: Vec<Sent> = Vec::new();
    let mut last_sent = Instant::now();
    let mut all_sent = false;
    loop {
        loop {
            match rx.try_recv() {
                Ok(one) => {
                    last_sent = Instant::now();
                    sent.push(one);
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    all_sent = true;
                    break;
                }
            }
        }
        for one in &sent {
            if found[one.n].1.is_none() {
                found[one.n].1 =
                    subscriber.arrival(&one.event_id).map(|t| t.saturating_duration_since(one.at));
            }
        }
        let mut outstanding: Vec<usize> =
            sent.iter().filter(|s| found[s.n].0.is_none()).map(|s| s.room).collect();
        let waiting = sent.iter().any(|s| found[s.n].1.is_none());
        if all_sent && ((outstanding.is_empty() && !waiting) || last_sent.elapsed() > give_up) {
            break;
        }
        outstanding.sort_unstable();
        outstanding.dedup();
        for room in outstanding {
            let (viewer, id) = (owner.clone(), rooms[room].clone());
            let page =
                app.with_store(move |store| store.messages(&viewer, &id, &PageRequest::first(1000))).await?;
            let now = Instant::now();
            for one in sent.iter().filter(|s| s.room == room) {
                if found[one.n].0.is_none()
                    && page.items.iter().any(|m| m.message.event_id.as_str() == one.event_id)
                {
                    found[one.n].0 = Some(now - one.at);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    sending.await??;
    Ok(found)
}

fn report(what: &str, found: &Latencies) {
    for (to, pick) in [("store read", 0), ("subscriber", 1)] {
        let mut times: Vec<Duration> =
            found.iter().filter_map(|l| if pick == 0 { l.0 } else { l.1 }).collect();
        times.sort_unstable();
        let at = |q: f64| {
            let i = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len().max(1)) - 1;
            times.get(i).map_or(f64::NAN, Duration::as_secs_f64)
        };
        println!(
            "live: {what}, to the {to}: {} of {} messages; p50 {:.3} s, p95 {:.3} s, max {:.3} s, min {:.3} s",
            times.len(),
            found.len(),
            at(0.5),
            at(0.95),
            times.last().map_or(f64::NAN, Duration::as_secs_f64),
            times.first().map_or(f64::NAN, Duration::as_secs_f64),
        );
    }
}

/// Waits until `check` holds, looking every 200 ms for at most 10 minutes.
async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(600);
    while !check().await? {
        if Instant::now() > deadline {
            bail!("{what}: not within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn live_phase(
    synapse: &Synapse,
    sender: &TestUser,
    accounts: &[Account],
    messages: usize,
    rate: f64,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (running, config, app) = server(&dir, true).await?;
    let owner = owner()?;
    let t = Instant::now();
    let mut ids = Vec::new();
    for account in accounts {
        let request = AccountWatchRequest {
            homeserver_url: synapse.base_url().to_owned(),
            account: None,
            access_token: AccessToken::new(account.user.access_token.clone()),
            refresh_token: None,
            oauth_client_id: None,
            recovery_key: None,
            classification: Classification::Restricted,
            rooms: None,
            timeout_secs: None,
            since: None,
        };
        ids.push((watch_account(&app, &owner, request).await?.id, account.rooms.len()));
    }
    for (id, rooms) in ids {
        wait_until("the accounts' rooms captured", || {
            let app = Arc::clone(&app);
            async move {
                let followed = app.with_store(move |store| store.followed_rooms(id)).await?;
                Ok(followed.iter().filter(|r| !r.due).count() >= rooms)
            }
        })
        .await?;
    }
    let rooms: Vec<RoomId> = accounts.iter().flat_map(|a| a.rooms.iter().cloned()).collect();
    println!(
        "live: {} account watches, their {} rooms captured in {:.1} s",
        accounts.len(),
        rooms.len(),
        t.elapsed().as_secs_f64()
    );
    let subscriber = Subscriber::start(&running, &config).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let found = latencies(&app, &subscriber, sender, &rooms, messages, rate, Duration::from_secs(60)).await?;
    report(&format!("account watches (/sync, {rate}/s)"), &found);
    drop(subscriber);
    running.stop().await?;
    Ok(())
}

async fn room_watch_phase(
    synapse: &Synapse,
    sender: &TestUser,
    accounts: &[Account],
    messages: usize,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (running, config, app) = server(&dir, false).await?;
    let owner = owner()?;
    let t = Instant::now();
    for account in accounts {
        for room in &account.rooms {
            let request = WatchRequest {
                homeserver_url: synapse.base_url().to_owned(),
                access_token: AccessToken::new(account.user.access_token.clone()),
                account: None,
                refresh_token: None,
                oauth_client_id: None,
                since: None,
                room_id: room.as_str().to_owned(),
                classification: Classification::Restricted,
                interval_secs: i64::try_from(ROOM_WATCH_INTERVAL.as_secs())?,
                recovery_key: None,
            };
            watch_room(&app, &owner, request).await?;
        }
    }
    let rooms: Vec<RoomId> = accounts.iter().flat_map(|a| a.rooms.iter().cloned()).collect();
    for room in &rooms {
        wait_until("each room watch run once", || {
            let (app, owner, room) = (Arc::clone(&app), owner.clone(), room.clone());
            async move {
                let watch = app.with_store(move |store| store.watch(&owner, &room)).await?;
                Ok(watch.ok_or_else(|| anyhow!("a room watch is missing"))?.last_run_at.is_some())
            }
        })
        .await?;
    }
    println!(
        "live: {} room watches at {} s, each run once in {:.1} s",
        rooms.len(),
        ROOM_WATCH_INTERVAL.as_secs(),
        t.elapsed().as_secs_f64()
    );
    let subscriber = Subscriber::start(&running, &config).await?;
    let spread = messages as f64 / ROOM_WATCH_INTERVAL.as_secs_f64();
    let found =
        latencies(&app, &subscriber, sender, &rooms, messages, spread, ROOM_WATCH_INTERVAL * 3).await?;
    report(
        &format!(
            "room watches at {} s (scheduler defaults; {spread:.2}/s over one interval)",
            ROOM_WATCH_INTERVAL.as_secs()
        ),
        &found,
    );
    drop(subscriber);
    running.stop().await?;
    Ok(())
}

fn main() -> Result<()> {
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let Some(synapse) = synapse() else {
        println!("live: skipped (no Synapse; set ARGUS_REQUIRE_SYNAPSE=1 to make this a failure)");
        return Ok(());
    };
    let (count, per_account) = (env_or("ARGUS_BENCH_ACCOUNTS", 5), env_or("ARGUS_BENCH_ROOMS", 20));
    let messages = env_or("ARGUS_BENCH_MESSAGES", 200);
    let rate = env_or("ARGUS_BENCH_RATE", 5).max(1) as f64;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    println!("live: load average before: {}", load_average());
    rt.block_on(async {
        let t = Instant::now();
        let sender = synapse.register("sender").await?;
        let accounts = accounts(synapse, &sender, count, per_account).await?;
        println!(
            "live: {count} accounts × {per_account} rooms made in {:.1} s; {messages} messages",
            t.elapsed().as_secs_f64()
        );
        live_phase(synapse, &sender, &accounts, messages, rate).await?;
        println!("live: load average: {}", load_average());
        room_watch_phase(synapse, &sender, &accounts, messages).await
    })?;
    println!("live: load average after: {}", load_average());
    Ok(())
}
