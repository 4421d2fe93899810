//! Live capture on a real Synapse, side by side with room watches, in one run.
//!
//! 1. **Latency.** `ARGUS_BENCH_ACCOUNTS` (5) accounts, each in `ARGUS_BENCH_LIVE_ROOMS` (20)
//!    rooms made by the account with a sender invited. `ARGUS_BENCH_MESSAGES` (200) messages
//!    are sent by the sender at `ARGUS_BENCH_RATE` (5) per second into rooms drawn at random
//!    (seeded); each message's latency runs from just before its send request to the first
//!    time `Store::messages` (the gated read `tchapMessages` makes, as the watches' owner) returns
//!    it, the rooms with a message outstanding read every 10 ms. Once with the accounts watched
//!    ([`Live`], one `/sync` loop each, the default 30 s long-poll), then with the same rooms
//!    as room watches at 60 s (the shortest interval allowed by default) run by the
//!    [`Scheduler`] with its default options, each into a fresh SQLite store. The room watches
//!    have all just been read when the sending starts, so their messages are sent over one
//!    interval instead (`ARGUS_BENCH_MESSAGES` per 60 s), meeting every phase of the next poll.
//! 2. **Homeserver load.** `ARGUS_BENCH_ACCOUNTS` more accounts with `ARGUS_BENCH_IDLE_ROOMS`
//!    (200) rooms each (1,000 rooms), nothing sent. Three windows of `ARGUS_BENCH_WINDOW_SECS`
//!    (180) one after the other, 30 s after the rooms were made: nothing watched (Synapse's own
//!    idle cost), the accounts watched (after their rooms were captured), the same rooms as room
//!    watches at 60 s (after each was read once; every due watch claimed at each tick), nothing
//!    watched again. In each window: Synapse's CPU time (`/proc/{pid}/stat`, user and system, of
//!    its one Python process) and the requests the connector made (a counting reverse proxy on
//!    loopback in front of Synapse, used by the watches of this part only; requests counted by
//!    endpoint as they pass), and this process's CPU time.
//!
//! `cargo bench -p argus-ingest --bench live_synapse`; `ARGUS_BENCH_PARTS=latency` or `load`
//! runs one part. Without Python/pip the bench is skipped loudly, unless
//! `ARGUS_REQUIRE_SYNAPSE=1`. Prints what `docs/benchmarks.md` records.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the loops are measured as they ship.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argus_domain::{AccessToken, Classification, Membership, PageRequest, RoomId, Scope, Viewer};
use argus_ingest::{
    Admission, AdmissionLimits, Services, TokenKey, TokenKeys,
    live::{AccountWatchRequest, Live, LiveOptions, watch_account},
    scheduler::{Scheduler, SchedulerOptions},
    watch::{WatchRequest, watch_room},
};
use argus_matrix::{Connector, ConnectorConfig};
use argus_store::Store;
use argus_testkit::synapse::{TestUser, synapse};
use futures::{StreamExt as _, TryStreamExt as _};
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// How often the rooms with a message outstanding are read.
const POLL: Duration = Duration::from_millis(10);
/// Room watches' interval: the shortest allowed by default.
const ROOM_WATCH_INTERVAL: i64 = 60;
/// Requests to Synapse at once while the rooms are made.
const SETUP_WIDTH: usize = 8;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// User and system CPU time of process `pid` (`self` for this one), in ticks of 1/100 s.
fn cpu_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn services(dir: &tempfile::TempDir, name: &str) -> BenchResult<Arc<Services>> {
    let store = Store::open(&format!("sqlite://{}", dir.path().join(name).display()))?;
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?;
    let mut services = Services::new(store, connector);
    services.token_keys = Some(Arc::new(TokenKeys::new(TokenKey::new(&[14; 32])?, Vec::new())));
    // One owner watches every account and room, at once: neither their rate nor their caps are
    // measured.
    services.admission =
        Admission::new(AdmissionLimits { per_caller_per_minute: u32::MAX, ..AdmissionLimits::default() });
    services.watch_limits.max_per_owner = u32::MAX;
    services.watch_limits.max_per_org = u32::MAX;
    Ok(Arc::new(services))
}

fn owner() -> BenchResult<Viewer> {
    Ok(Viewer::new("bench".parse()?, "bench-org".parse()?, Classification::Secret, [Scope::Ingest, Scope::Read]))
}

/// Runs `jobs` at most [`SETUP_WIDTH`] at a time; their results in order.
async fn in_parallel<T, F>(jobs: impl IntoIterator<Item = F>) -> BenchResult<Vec<T>>
where
    F: Future<Output = BenchResult<T>>,
{
    futures::stream::iter(jobs).buffered(SETUP_WIDTH).try_collect().await
}

/// An account and its rooms.
struct Account {
    user: TestUser,
    rooms: Vec<RoomId>,
}

/// `count` accounts with `rooms` rooms each, made by the account (`sender` invited and joined
/// when given).
async fn accounts(
    server: &argus_testkit::synapse::Synapse,
    name: &str,
    count: usize,
    rooms: usize,
    sender: Option<&TestUser>,
) -> BenchResult<Vec<Account>> {
    let mut made = Vec::new();
    for a in 0..count {
        let user = server.register(&format!("{name}{a}")).await?;
        let ids = in_parallel((0..rooms).map(|k| {
            let user = user.clone();
            async move {
                let mut body = json!({ "preset": "private_chat", "name": format!("Cellule {a}-{k}") });
                if let Some(sender) = sender {
                    body["invite"] = json!([sender.user_id]);
                }
                let room = user.create_room_with(&body).await?;
                if let Some(sender) = sender {
                    sender.join(&room).await?;
                }
                Ok(room.parse::<RoomId>()?)
            }
        }))
        .await?;
        made.push(Account { user, rooms: ids });
    }
    Ok(made)
}

fn account_request(homeserver: &str, user: &TestUser) -> AccountWatchRequest {
    AccountWatchRequest {
        homeserver_url: homeserver.to_owned(),
        account: None,
        access_token: AccessToken::new(user.access_token.clone()),
        refresh_token: None,
        oauth_client_id: None,
        recovery_key: None,
        classification: Classification::Restricted,
        rooms: None,
        timeout_secs: None,
        since: None,
    }
}

/// Watches the accounts, runs their loops and waits until each follows its rooms, every one
/// captured; the loops and what stops them.
async fn live_capture(
    services: &Arc<Services>,
    homeserver: &str,
    accounts: &[Account],
) -> BenchResult<(Arc<Live>, Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>)> {
    let owner = owner()?;
    let mut ids = Vec::new();
    for account in accounts {
        ids.push(watch_account(services, &owner, account_request(homeserver, &account.user)).await?.id);
    }
    let live = Arc::new(Live::new(
        Arc::clone(services),
        LiveOptions { replica: "bench-live".into(), ..LiveOptions::default() },
    ));
    let stop = Arc::new(tokio::sync::Notify::new());
    let running = tokio::spawn(Arc::clone(&live).run(Arc::clone(&stop)));
    let deadline = Instant::now() + Duration::from_secs(1800);
    for (id, account) in ids.into_iter().zip(accounts) {
        loop {
            let followed = services.with_store(move |store| store.followed_rooms(id)).await?;
            let captured = followed.iter().filter(|r| r.membership == Membership::Join && !r.due).count();
            if captured >= account.rooms.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("account watch {id}: {captured} rooms captured").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok((live, stop, running))
}

/// Watches every room of the accounts at [`ROOM_WATCH_INTERVAL`]; the scheduler has read each
/// once when this returns.
async fn room_watches(
    services: &Arc<Services>,
    homeserver: &str,
    accounts: &[Account],
    options: SchedulerOptions,
) -> BenchResult<Arc<Scheduler>> {
    let owner = owner()?;
    let requests = accounts.iter().flat_map(|account| {
        account.rooms.iter().map(|room| WatchRequest {
            homeserver_url: homeserver.to_owned(),
            access_token: AccessToken::new(account.user.access_token.clone()),
            account: None,
            refresh_token: None,
            oauth_client_id: None,
            since: None,
            room_id: room.as_str().to_owned(),
            classification: Classification::Restricted,
            interval_secs: ROOM_WATCH_INTERVAL,
            recovery_key: None,
        })
    });
    in_parallel(requests.map(|request| {
        let (services, owner) = (Arc::clone(services), owner.clone());
        async move { Ok(watch_room(&services, &owner, request).await.map(drop)?) }
    }))
    .await?;
    let scheduler = Arc::new(Scheduler::new(Arc::clone(services), options));
    loop {
        let report = scheduler.cycle().await?;
        if report.failed > 0 || report.paused > 0 {
            return Err(format!("a first cycle of the room watches: {report:?}").into());
        }
        if report.claimed == 0 {
            return Ok(scheduler);
        }
    }
}

/// A message sent, waiting to be read back.
struct Sent {
    n: usize,
    room: usize,
    event_id: String,
    at: Instant,
}

/// Sends `messages` messages at `rate` per second into rooms drawn at random, and times each
/// until `Store::messages` returns it (`None`: not within `give_up` after the last send).
async fn latencies(
    services: &Arc<Services>,
    sender: &TestUser,
    rooms: &[RoomId],
    messages: usize,
    rate: f64,
    give_up: Duration,
) -> BenchResult<Vec<Option<Duration>>> {
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
                let event_id = sender.send_text(rooms[room].as_str(), &body).await.map_err(|e| e.to_string())?;
                let _ = tx.send(Sent { n, room, event_id, at });
            }
            Ok::<(), String>(())
        })
    };
    let mut found = vec![None; messages];
    let mut pending: Vec<Sent> = Vec::new();
    let mut last_sent = Instant::now();
    let mut all_sent = false;
    loop {
        loop {
            match rx.try_recv() {
                Ok(sent) => {
                    last_sent = Instant::now();
                    pending.push(sent);
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    all_sent = true;
                    break;
                }
            }
        }
        if all_sent && (pending.is_empty() || last_sent.elapsed() > give_up) {
            break;
        }
        let mut outstanding: Vec<usize> = pending.iter().map(|s| s.room).collect();
        outstanding.sort_unstable();
        outstanding.dedup();
        for room in outstanding {
            let (viewer, id) = (owner.clone(), rooms[room].clone());
            let page = services.with_store(move |store| store.messages(&viewer, &id, &PageRequest::first(1000))).await?;
            let now = Instant::now();
            pending.retain(|sent| {
                let stored = sent.room == room && page.items.iter().any(|m| m.message.event_id.as_str() == sent.event_id);
                if stored {
                    found[sent.n] = Some(now - sent.at);
                }
                !stored
            });
        }
        tokio::time::sleep(POLL).await;
    }
    sending.await?.map_err(|e| format!("sending: {e}"))?;
    Ok(found)
}

fn report_latencies(what: &str, found: &[Option<Duration>]) {
    let mut times: Vec<Duration> = found.iter().flatten().copied().collect();
    times.sort_unstable();
    let at = |q: f64| {
        let i = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len().max(1)) - 1;
        times.get(i).map_or(f64::NAN, Duration::as_secs_f64)
    };
    println!(
        "live_synapse: {what}: {} of {} messages read back; p50 {:.3} s, p95 {:.3} s, max {:.3} s, min {:.3} s",
        times.len(),
        found.len(),
        at(0.5),
        at(0.95),
        times.last().map_or(f64::NAN, Duration::as_secs_f64),
        times.first().map_or(f64::NAN, Duration::as_secs_f64),
    );
}

// ---------------------------------------------------------------------------------------------
// Counting requests: a reverse proxy

/// Requests seen by the proxy, by endpoint.
type Counts = Arc<Mutex<BTreeMap<&'static str, u64>>>;

/// The endpoint of a request path, as the report names it.
fn endpoint(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    if path.ends_with("/sync") {
        "sync"
    } else if path.ends_with("/state") || path.contains("/state/") {
        "state"
    } else if path.ends_with("/messages") {
        "messages"
    } else if path.ends_with("/whoami") {
        "whoami"
    } else if path.ends_with("/filter") {
        "filter"
    } else if path.ends_with("/joined_rooms") {
        "joined_rooms"
    } else if path.ends_with("/versions") {
        "versions"
    } else {
        "other"
    }
}

/// A reverse proxy on a loopback port in front of `upstream`, counting the requests that pass;
/// its base URL.
async fn counting_proxy(upstream: u16, counts: Counts) -> BenchResult<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                if let Err(error) = relay(client, upstream, counts).await {
                    eprintln!("live_synapse: proxy: {error}");
                }
            });
        }
    });
    Ok(url)
}

/// Relays one connection: requests (HTTP/1.1, bodies sized by `Content-Length`) counted and
/// passed on as they are, the answers copied back untouched.
async fn relay(client: TcpStream, upstream: u16, counts: Counts) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let back = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut reader = tokio::io::BufReader::new(client_read);
    let mut line = Vec::new();
    loop {
        let mut head = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).await? == 0 {
                back.abort();
                return Ok(());
            }
            if head.is_empty() && (line == b"\r\n" || line == b"\n") {
                continue;
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head);
        let path = text.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("");
        let mut length = 0_u64;
        for header in text.lines().skip(1) {
            let Some((name, value)) = header.split_once(':') else { continue };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(std::io::Error::other("a chunked request body: not relayed"));
            }
        }
        *counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(endpoint(path)).or_default() += 1;
        server_write.write_all(&head).await?;
        if length > 0 {
            tokio::io::copy(&mut (&mut reader).take(length), &mut server_write).await?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Windows

/// What a window measured.
struct Window {
    wall: Duration,
    synapse_cpu: Duration,
    own_cpu: Duration,
    requests: BTreeMap<&'static str, u64>,
}

impl Window {
    fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    fn per_minute(&self, value: f64) -> f64 {
        value * 60.0 / self.wall.as_secs_f64()
    }

    fn report(&self, what: &str) {
        let requests: Vec<String> = self.requests.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "live_synapse: {what}: {:.0} s: Synapse CPU {:.2} s ({:.3} s/min); {} requests ({:.1}/min: {}); this process's CPU {:.2} s",
            self.wall.as_secs_f64(),
            self.synapse_cpu.as_secs_f64(),
            self.per_minute(self.synapse_cpu.as_secs_f64()),
            self.total(),
            self.per_minute(self.total() as f64),
            if requests.is_empty() { "none".to_owned() } else { requests.join(", ") },
            self.own_cpu.as_secs_f64(),
        );
    }
}

fn snapshot(counts: &Counts) -> BTreeMap<&'static str, u64> {
    counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn difference(before: &BTreeMap<&'static str, u64>, after: BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    after
        .into_iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The requests counted since `before`, as the report shows them.
fn requests_since(before: &BTreeMap<&'static str, u64>, counts: &Counts) -> String {
    let requests = difference(before, snapshot(counts));
    let total: u64 = requests.values().sum();
    let each: Vec<String> = requests.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total} requests ({})", each.join(", "))
}

async fn window(synapse_pid: &str, counts: &Counts, length: Duration) -> Window {
    let (synapse0, own0, requests0, t0) = (cpu_of(synapse_pid), cpu_of("self"), snapshot(counts), Instant::now());
    tokio::time::sleep(length).await;
    let (synapse1, own1, requests1, wall) = (cpu_of(synapse_pid), cpu_of("self"), snapshot(counts), t0.elapsed());
    let requests = difference(&requests0, requests1);
    Window {
        wall,
        synapse_cpu: synapse1.saturating_sub(synapse0),
        own_cpu: own1.saturating_sub(own0),
        requests,
    }
}

// ---------------------------------------------------------------------------------------------

async fn latency_part(server: &argus_testkit::synapse::Synapse, dir: &tempfile::TempDir) -> BenchResult {
    let (count, per_account) = (env_or("ARGUS_BENCH_ACCOUNTS", 5), env_or("ARGUS_BENCH_LIVE_ROOMS", 20));
    let messages = env_or("ARGUS_BENCH_MESSAGES", 200);
    let rate = env_or("ARGUS_BENCH_RATE", 5).max(1) as f64;
    let t = Instant::now();
    let sender = server.register("sender").await?;
    let accounts = accounts(server, "live", count, per_account, Some(&sender)).await?;
    let rooms: Vec<RoomId> = accounts.iter().flat_map(|a| a.rooms.iter().cloned()).collect();
    println!(
        "live_synapse: latency: {count} accounts × {per_account} rooms made in {:.1} s; {messages} messages at {rate}/s",
        t.elapsed().as_secs_f64()
    );

    let live_services = services(dir, "live.db")?;
    let t = Instant::now();
    let (live, stop, running) = live_capture(&live_services, server.base_url(), &accounts).await?;
    println!("live_synapse: latency: the accounts' {} rooms captured in {:.1} s", rooms.len(), t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found = latencies(&live_services, &sender, &rooms, messages, rate, Duration::from_secs(60)).await?;
    report_latencies("account watches (live, /sync)", &found);
    stop.notify_one();
    running.await?;
    drop(live);

    let watch_services = services(dir, "rooms.db")?;
    let options = SchedulerOptions { replica: "bench-rooms".into(), ..SchedulerOptions::default() };
    let scheduler = room_watches(&watch_services, server.base_url(), &accounts, options).await?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let running = tokio::spawn(Arc::clone(&scheduler).run(Arc::clone(&stop)));
    // Every room was just read: sent over one interval, the messages meet every phase of the
    // next poll (a rate of `messages` per interval).
    let interval = Duration::from_secs(u64::try_from(ROOM_WATCH_INTERVAL)?);
    let spread = messages as f64 / interval.as_secs_f64();
    let found = latencies(&watch_services, &sender, &rooms, messages, spread, interval * 3).await?;
    report_latencies(
        &format!("room watches at {ROOM_WATCH_INTERVAL} s (scheduler defaults), sent at {spread:.2}/s over one interval"),
        &found,
    );
    stop.notify_one();
    running.await?;
    Ok(())
}

async fn load_part(server: &argus_testkit::synapse::Synapse, dir: &tempfile::TempDir) -> BenchResult {
    let (count, per_account) = (env_or("ARGUS_BENCH_ACCOUNTS", 5), env_or("ARGUS_BENCH_IDLE_ROOMS", 200));
    let length = Duration::from_secs(u64::try_from(env_or("ARGUS_BENCH_WINDOW_SECS", 180))?);
    let pid = server.process_id().ok_or("Synapse's process id is unknown")?.to_string();
    let t = Instant::now();
    let accounts = accounts(server, "idle", count, per_account, None).await?;
    let total = count * per_account;
    println!(
        "live_synapse: load: {count} accounts × {per_account} rooms = {total} rooms made in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let counts = Counts::default();
    let proxy = counting_proxy(server.port(), Arc::clone(&counts)).await?;

    // What Synapse does in the background after the rooms were made is left to settle.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = window(&pid, &counts, length).await;
    idle.report("nothing watched");

    let live_services = services(dir, "load-live.db")?;
    let t = Instant::now();
    let before = snapshot(&counts);
    let (live, stop, running) = live_capture(&live_services, &proxy, &accounts).await?;
    println!(
        "live_synapse: load: the accounts' {total} rooms captured in {:.1} s, with {}",
        t.elapsed().as_secs_f64(),
        requests_since(&before, &counts)
    );
    let loops = window(&pid, &counts, length).await;
    loops.report(&format!("{count} account watches ({total} rooms)"));
    stop.notify_one();
    running.await?;
    drop(live);

    let watch_services = services(dir, "load-rooms.db")?;
    // Every due watch claimed at each tick, so that each room is read every 60 s (the default
    // of 32 claimed per tick keeps about 350 rooms a minute).
    let options =
        SchedulerOptions { replica: "bench-load-rooms".into(), max_concurrent: total, ..SchedulerOptions::default() };
    let t = Instant::now();
    let before = snapshot(&counts);
    let scheduler = room_watches(&watch_services, &proxy, &accounts, options).await?;
    println!(
        "live_synapse: load: {total} room watches made and read once in {:.1} s, with {}",
        t.elapsed().as_secs_f64(),
        requests_since(&before, &counts)
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let running = tokio::spawn(Arc::clone(&scheduler).run(Arc::clone(&stop)));
    let rooms = window(&pid, &counts, length).await;
    rooms.report(&format!("{total} room watches at {ROOM_WATCH_INTERVAL} s"));
    stop.notify_one();
    running.await?;
    let idle_after = window(&pid, &counts, length).await;
    idle_after.report("nothing watched, again");

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    // Synapse's own idle cost: the lower of the two windows with nothing watched.
    let idle_cpu = idle.synapse_cpu.min(idle_after.synapse_cpu).as_secs_f64();
    let (live_cpu, rooms_cpu) = (loops.synapse_cpu.as_secs_f64(), rooms.synapse_cpu.as_secs_f64());
    println!(
        "live_synapse: load: account watches / room watches: Synapse CPU {:.3}× ({:.3}× above Synapse's idle cost), requests {:.4}× (target ≤ 0.1×)",
        ratio(live_cpu, rooms_cpu),
        ratio((live_cpu - idle_cpu).max(0.0), (rooms_cpu - idle_cpu).max(0.0)),
        ratio(loops.total() as f64, rooms.total() as f64),
    );
    Ok(())
}

fn main() -> BenchResult {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let Some(server) = synapse() else {
        println!("live_synapse: skipped (no Synapse; set ARGUS_REQUIRE_SYNAPSE=1 to make this a failure)");
        return Ok(());
    };
    let parts = std::env::var("ARGUS_BENCH_PARTS").unwrap_or_else(|_| "latency,load".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    println!("live_synapse: load average before: {}", load_average());
    rt.block_on(async {
        if parts.contains("latency") {
            latency_part(server, &dir).await?;
            println!("live_synapse: load average: {}", load_average());
        }
        if parts.contains("load") {
            load_part(server, &dir).await?;
        }
        BenchResult::Ok(())
    })?;
    println!("live_synapse: load average after: {}", load_average());
    Ok(())
}
