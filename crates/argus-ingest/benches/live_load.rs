//! Live capture's load on a real Synapse, side by side with room watches, in one run.
//!
//! `ARGUS_BENCH_ACCOUNTS` (5) accounts with `ARGUS_BENCH_IDLE_ROOMS` (200) rooms each (1,000
//! rooms) made by the account on the test kit's Synapse, nothing sent. Four windows of
//! `ARGUS_BENCH_WINDOW_SECS` (180) one after the other, the first 30 s after the rooms were
//! made: nothing watched (Synapse's own idle cost); the accounts watched ([`Live`], one `/sync`
//! loop each, the default 30 s long-poll), after their rooms were captured; the same rooms as
//! room watches at 60 s (the shortest interval allowed by default) run by the [`Scheduler`],
//! after each was read once (every due watch claimed at each tick, so that each room is read
//! every 60 s); nothing watched again. Each mode has a fresh SQLite store. In each window:
//! Synapse's CPU time (`/proc/{pid}/stat`, user and system, of its one Python process), the
//! requests the connector made (a counting reverse proxy on loopback in front of Synapse, which
//! the watches are given as their homeserver; requests counted by endpoint as they pass), and
//! this process's CPU time.
//!
//! The latency of live capture is measured through the server (`argus-server`'s `live`
//! benchmark).
//!
//! `cargo bench -p argus-ingest --bench live_load`. Without Python/pip the bench is skipped
//! loudly, unless `ARGUS_REQUIRE_SYNAPSE=1`. Prints what `docs/benchmarks.md` records.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the loops are measured as they ship.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use argus_domain::{AccessToken, Classification, Membership, RoomId, Scope, Viewer};
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
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

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
    Ok(Viewer::new(
        "bench".parse()?,
        "bench-org".parse()?,
        Classification::Secret,
        [Scope::Ingest, Scope::Read],
    ))
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

/// `count` accounts with `rooms` rooms each, made by the account.
async fn accounts(
    server: &argus_testkit::synapse::Synapse,
    name: &str,
    count: usize,
    rooms: usize,
) -> BenchResult<Vec<Account>> {
    let mut made = Vec::new();
    for a in 0..count {
        let user = server.register(&format!("{name}{a}")).await?;
        let ids = in_parallel((0..rooms).map(|k| {
            let user = user.clone();
            async move {
                let body = json!({ "preset": "private_chat", "name": format!("Cellule {a}-{k}") });
                Ok(user.create_room_with(&body).await?.parse::<RoomId>()?)
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
                    eprintln!("live_load: proxy: {error}");
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
        *counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(endpoint(path))
            .or_default() += 1;
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
            "live_load: {what}: {:.0} s: Synapse CPU {:.2} s ({:.3} s/min); {} requests ({:.1}/min: {}); this process's CPU {:.2} s",
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

fn difference(
    before: &BTreeMap<&'static str, u64>,
    after: BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
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
    let (synapse0, own0, requests0, t0) =
        (cpu_of(synapse_pid), cpu_of("self"), snapshot(counts), Instant::now());
    tokio::time::sleep(length).await;
    let (synapse1, own1, requests1, wall) =
        (cpu_of(synapse_pid), cpu_of("self"), snapshot(counts), t0.elapsed());
    let requests = difference(&requests0, requests1);
    Window {
        wall,
        synapse_cpu: synapse1.saturating_sub(synapse0),
        own_cpu: own1.saturating_sub(own0),
        requests,
    }
}

// ---------------------------------------------------------------------------------------------

async fn load_part(server: &argus_testkit::synapse::Synapse, dir: &tempfile::TempDir) -> BenchResult {
    let (count, per_account) = (env_or("ARGUS_BENCH_ACCOUNTS", 5), env_or("ARGUS_BENCH_IDLE_ROOMS", 200));
    let length = Duration::from_secs(u64::try_from(env_or("ARGUS_BENCH_WINDOW_SECS", 180))?);
    let pid = server.process_id().ok_or("Synapse's process id is unknown")?.to_string();
    let t = Instant::now();
    let accounts = accounts(server, "idle", count, per_account).await?;
    let total = count * per_account;
    println!(
        "live_load: load: {count} accounts × {per_account} rooms = {total} rooms made in {:.1} s",
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
        "live_load: load: the accounts' {total} rooms captured in {:.1} s, with {}",
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
    let options = SchedulerOptions {
        replica: "bench-load-rooms".into(),
        max_concurrent: total,
        ..SchedulerOptions::default()
    };
    let t = Instant::now();
    let before = snapshot(&counts);
    let scheduler = room_watches(&watch_services, &proxy, &accounts, options).await?;
    println!(
        "live_load: load: {total} room watches made and read once in {:.1} s, with {}",
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
        "live_load: load: account watches / room watches: Synapse CPU {:.3}× ({:.3}× above Synapse's idle cost), requests {:.4}× (target ≤ 0.1×)",
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
        println!("live_load: skipped (no Synapse; set ARGUS_REQUIRE_SYNAPSE=1 to make this a failure)");
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    println!("live_load: load average before: {}", load_average());
    rt.block_on(load_part(server, &dir))?;
    println!("live_load: load average after: {}", load_average());
    Ok(())
}
