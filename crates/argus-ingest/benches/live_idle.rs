//! Live capture when nothing happens: the CPU time this process spends per long-poll cycle of an
//! idle account, and the memory of a loop whose first `/sync` lists 100 or 1,000 joined rooms.
//!
//! The mock homeserver runs in a child process (this binary again, with `ARGUS_BENCH_MOCK=1`),
//! so that neither its CPU nor its memory is counted here: wiremock (requests not recorded)
//! answering `whoami`, the filter upload, `/state` and `/messages` of any room (three messages,
//! the start of the room), and `/sync`: the first one (no `since`) lists the account's joined
//! rooms, each with a timeline of `ARGUS_BENCH_TIMELINE` events (full bodies, as a homeserver
//! ignoring the filter would send them); every later one answers an empty sync (a new
//! `next_batch`, no room) after 20 ms, as a long-poll that saw nothing would, only sooner.
//!
//! CPU: `ARGUS_BENCH_ACCOUNTS` (default `10,100`) account watches of 10 rooms each, one [`Live`]
//! running their loops over a fresh SQLite store. Once every room is captured (the loops are
//! idle), this process's CPU time (`/proc/self/stat`, user and system) over
//! `ARGUS_BENCH_SECONDS` (default 10) against the idle `/sync` answers the mock served
//! meanwhile: everything a cycle costs (the request, the answer's parsing, the position stored
//! under the lease in one transaction), with the loops' lease renewals and the replica's claims.
//!
//! Memory: one child process per case (rooms, timeline events per room), each with one account
//! watch whose first `/sync` lists that many rooms: its resident memory once set up, then its
//! peak (`VmHWM`, reset first) and current resident memory once every room is captured and the
//! loop has gone idle for a second; medians of three processes. Each case runs twice: with mimalloc as the binary ships it,
//! and with `MIMALLOC_PURGE_DELAY=0` (freed memory handed back at once), so that what stays
//! resident once idle is what the process still holds rather than what the allocator kept.
//!
//! `cargo bench -p argus-ingest --bench live_idle`. Prints what `docs/benchmarks.md` records.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the loops are measured as they ship.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::{BufRead as _, Write as _},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use argus_domain::{AccessToken, Classification, Membership, Scope, Viewer};
use argus_ingest::{
    Admission, AdmissionLimits, Services, TokenKey, TokenKeys,
    live::{AccountWatchRequest, Live, LiveOptions, watch_account},
};
use argus_matrix::{Connector, ConnectorConfig};
use argus_store::Store;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const MOCK_ENV: &str = "ARGUS_BENCH_MOCK";
const MEMORY_ENV: &str = "ARGUS_BENCH_MEMORY_CASE";
/// How long an idle `/sync` takes to answer.
const IDLE_SYNC: Duration = Duration::from_millis(20);
/// Rooms of each account in the CPU measurement.
const CPU_ROOMS: usize = 10;
const SERVER: &str = "tchap.test";
/// Processes per memory case (medians reported).
const RUNS: usize = 3;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// CPU time of this process so far (user and system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name), in ticks of
    // 1/100 s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A `kB` line of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// The mock homeserver (child process)

fn account_token(i: usize) -> String {
    format!("syt_YmVuY2g_bench{i}_0a1b2c")
}

fn account_user(i: usize) -> String {
    format!("@bench{i}:{SERVER}")
}

fn room_id(account: usize, k: usize) -> String {
    format!("!r{k}-a{account}:{SERVER}")
}

/// The account a request's bearer token belongs to.
fn account_of(request: &Request) -> Option<usize> {
    let auth = request.headers.get("authorization")?.to_str().ok()?;
    auth.strip_prefix("Bearer syt_YmVuY2g_bench")?.strip_suffix("_0a1b2c")?.parse().ok()
}

fn message(room: &str, id: &str, ts: i64, body: &str) -> Value {
    json!({
        "type": "m.room.message", "event_id": id, "sender": "@alice:tchap.test",
        "origin_server_ts": ts, "room_id": room,
        "content": { "msgtype": "m.text", "body": body },
    })
}

/// The first `/sync` answer of `account`: `rooms` joined rooms with `timeline` events each.
fn first_sync(account: usize, rooms: usize, timeline: usize) -> Value {
    let body = "Point de situation : la cellule de crise se réunit à 14 h en salle B, \
                merci de confirmer votre présence et de relayer aux équipes de terrain.";
    let mut join = serde_json::Map::new();
    for k in 0..rooms {
        let room = room_id(account, k);
        let events: Vec<Value> = (0..timeline)
            .map(|j| message(&room, &format!("$e{j}-r{k}-a{account}"), 1_767_225_600_000 + j as i64, body))
            .collect();
        join.insert(
            room,
            json!({
                "timeline": { "events": events, "limited": timeline >= 20, "prev_batch": format!("p{k}") },
                "state": { "events": [] },
            }),
        );
    }
    json!({ "next_batch": "s1", "rooms": { "join": join } })
}

/// What the child's mock serves.
struct Fake {
    rooms: usize,
    timeline: usize,
    /// Idle `/sync` answers served.
    idle_syncs: Arc<AtomicU64>,
}

fn error(status: u16, errcode: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "errcode": errcode, "error": "mock" }))
}

impl Respond for Fake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path().to_owned();
        if path == "/_matrix/client/versions" {
            return ResponseTemplate::new(200).set_body_json(json!({ "versions": ["v1.11"] }));
        }
        let Some(account) = account_of(request) else { return error(401, "M_UNKNOWN_TOKEN") };
        let query =
            |key: &str| request.url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
        if path == "/_matrix/client/v3/account/whoami" {
            return ResponseTemplate::new(200).set_body_json(
                json!({ "user_id": account_user(account), "device_id": "BENCH", "is_guest": false }),
            );
        }
        if path.starts_with("/_matrix/client/v3/user/") && path.ends_with("/filter") {
            return ResponseTemplate::new(200).set_body_json(json!({ "filter_id": "1" }));
        }
        if path == "/_matrix/client/v3/sync" {
            return match query("since").and_then(|s| s.strip_prefix('s')?.parse::<u64>().ok()) {
                None => {
                    ResponseTemplate::new(200).set_body_json(first_sync(account, self.rooms, self.timeline))
                }
                Some(n) => {
                    self.idle_syncs.fetch_add(1, Ordering::Relaxed);
                    ResponseTemplate::new(200)
                        .set_body_json(json!({ "next_batch": format!("s{}", n + 1) }))
                        .set_delay(IDLE_SYNC)
                }
            };
        }
        let Some((room, endpoint)) =
            path.strip_prefix("/_matrix/client/v3/rooms/").and_then(|rest| rest.rsplit_once('/'))
        else {
            return error(404, "M_UNRECOGNIZED");
        };
        let room = room.replace("%21", "!").replace("%3A", ":");
        match endpoint {
            "state" => {
                let ev = |kind: &str, key: &str, content: Value| {
                    json!({ "type": kind, "state_key": key, "event_id": format!("$state-{kind}-{key}"),
                            "sender": "@alice:tchap.test", "origin_server_ts": 1_767_225_600_000_i64,
                            "room_id": room, "content": content })
                };
                ResponseTemplate::new(200).set_body_json(json!([
                    ev("m.room.create", "", json!({ "creator": "@alice:tchap.test", "room_version": "10" })),
                    ev("m.room.name", "", json!({ "name": "Cellule de crise" })),
                    ev("m.room.member", "@alice:tchap.test", json!({ "membership": "join" })),
                ]))
            }
            "messages" => {
                // Backwards from the live end: three messages and the start of the room; any
                // other read (forwards from a position): nothing new.
                let backwards = query("dir").as_deref() == Some("b");
                if backwards && query("from").is_none() {
                    let opaque: String = room.chars().filter(char::is_ascii_alphanumeric).collect();
                    let chunk: Vec<Value> = (0..3)
                        .rev()
                        .map(|i| message(&room, &format!("$m{i}-{opaque}"), 1_767_225_600_000 + i, "message"))
                        .collect();
                    ResponseTemplate::new(200).set_body_json(json!({ "start": "t3", "chunk": chunk }))
                } else {
                    let from = query("from").unwrap_or_else(|| "t3".into());
                    ResponseTemplate::new(200).set_body_json(json!({ "start": from, "chunk": [] }))
                }
            }
            _ => error(404, "M_UNRECOGNIZED"),
        }
    }
}

/// The child: serves the mock until its stdin closes; each line read answers the idle syncs
/// served so far.
fn serve_mock() -> BenchResult {
    let rooms = env_or("ARGUS_BENCH_ROOMS", CPU_ROOMS);
    let timeline = env_or("ARGUS_BENCH_TIMELINE", 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let server = MockServer::builder().disable_request_recording().start().await;
        let idle_syncs = Arc::new(AtomicU64::new(0));
        Mock::given(wiremock::matchers::any())
            .respond_with(Fake { rooms, timeline, idle_syncs: Arc::clone(&idle_syncs) })
            .mount(&server)
            .await;
        println!("{}", server.uri());
        std::io::stdout().flush()?;
        loop {
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|n| (n, line))
            })
            .await??;
            if line.0 == 0 {
                return Ok(());
            }
            println!("{}", idle_syncs.load(Ordering::Relaxed));
            std::io::stdout().flush()?;
        }
    })
}

/// A mock homeserver in a child process.
struct MockChild {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    uri: String,
}

impl MockChild {
    fn start(rooms: usize, timeline: usize) -> BenchResult<Self> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .env(MOCK_ENV, "1")
            .env("ARGUS_BENCH_ROOMS", rooms.to_string())
            .env("ARGUS_BENCH_TIMELINE", timeline.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut uri = String::new();
        stdout.read_line(&mut uri)?;
        Ok(Self { child, stdout, uri: uri.trim().to_owned() })
    }

    /// Idle `/sync` answers served so far.
    fn idle_syncs(&mut self) -> BenchResult<u64> {
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        stdin.write_all(b"count\n")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().parse()?)
    }
}

impl Drop for MockChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The loops

fn services(dir: &tempfile::TempDir, name: &str, accounts: usize) -> BenchResult<Arc<Services>> {
    let store = Store::open(&format!("sqlite://{}", dir.path().join(name).display()))?;
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?;
    let mut services = Services::new(store, connector);
    services.token_keys = Some(Arc::new(TokenKeys::new(TokenKey::new(&[13; 32])?, Vec::new())));
    // One owner watches every account, at once: neither their rate nor their cap is measured.
    services.admission =
        Admission::new(AdmissionLimits { per_caller_per_minute: u32::MAX, ..AdmissionLimits::default() });
    services.watch_limits.max_per_owner = u32::try_from(accounts)?;
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

/// Watches accounts `0..accounts` of the mock (long-poll timeout 1 s: the mock answers in
/// 20 ms anyway); their watch ids.
async fn watch_accounts(services: &Services, uri: &str, accounts: usize) -> BenchResult<Vec<i64>> {
    let owner = owner()?;
    let mut ids = Vec::new();
    for i in 0..accounts {
        let request = AccountWatchRequest {
            homeserver_url: uri.to_owned(),
            account: None,
            access_token: AccessToken::new(account_token(i)),
            refresh_token: None,
            oauth_client_id: None,
            recovery_key: None,
            classification: Classification::Restricted,
            rooms: None,
            timeout_secs: Some(1),
            since: None,
        };
        ids.push(watch_account(services, &owner, request).await?.id);
    }
    Ok(ids)
}

/// Waits until every watch follows `rooms` joined rooms, none left to capture.
async fn wait_captured(services: &Arc<Services>, ids: &[i64], rooms: usize) -> BenchResult {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut done = true;
        for &id in ids {
            let followed = services.with_store(move |store| store.followed_rooms(id)).await?;
            let captured = followed.iter().filter(|r| r.membership == Membership::Join && !r.due).count();
            if captured < rooms {
                done = false;
                break;
            }
        }
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the rooms were not captured within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn live(services: &Arc<Services>) -> Arc<Live> {
    Arc::new(Live::new(
        Arc::clone(services),
        LiveOptions { replica: "bench".into(), ..LiveOptions::default() },
    ))
}

/// CPU per idle cycle with `accounts` idle accounts.
fn cpu_case(accounts: usize, seconds: u64) -> BenchResult {
    let mut mock = MockChild::start(CPU_ROOMS, 1)?;
    let dir = tempfile::tempdir()?;
    let services = services(&dir, "live.db", accounts)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let live = live(&services);
    let ids = rt.block_on(watch_accounts(&services, &mock.uri, accounts))?;
    let running = rt.spawn(Arc::clone(&live).run(Arc::clone(&stop)));
    let t = Instant::now();
    rt.block_on(wait_captured(&services, &ids, CPU_ROOMS))?;
    let captured = t.elapsed();
    // A second of idle cycles first, then the measured window.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, syncs0, t0) = (cpu_time(), mock.idle_syncs()?, Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, syncs1, wall) = (cpu_time(), mock.idle_syncs()?, t0.elapsed());
    stop.notify_one();
    rt.block_on(running)?;
    if !live.running().is_empty() {
        return Err("loops still running after the stop".into());
    }
    let cycles = syncs1.saturating_sub(syncs0);
    let cpu = cpu1.saturating_sub(cpu0);
    println!(
        "live_idle: {accounts} idle accounts ({CPU_ROOMS} rooms each, captured in {:.1} s): {cycles} idle cycles in {:.1} s \
         ({:.1} per account per second, each answered after {} ms)",
        captured.as_secs_f64(),
        wall.as_secs_f64(),
        cycles as f64 / wall.as_secs_f64() / accounts as f64,
        IDLE_SYNC.as_millis()
    );
    println!(
        "live_idle:   CPU time of this process {:.0} ms = {:.3} ms per cycle (target ≤ 1 ms); {:.2} cores",
        cpu.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0 / cycles.max(1) as f64,
        cpu.as_secs_f64() / wall.as_secs_f64()
    );
    Ok(())
}

/// One memory case, in a process of its own: prints `rooms timeline base_kib peak_kib now_kib`.
fn memory_child(rooms: usize, timeline: usize) -> BenchResult {
    let mock = MockChild::start(rooms, timeline)?;
    let dir = tempfile::tempdir()?;
    let services = services(&dir, "live.db", 1)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let ids = rt.block_on(watch_accounts(&services, &mock.uri, 1))?;
    let live = live(&services);
    let base = status_kib("VmRSS");
    // Reset the peak to what is resident now.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let running = rt.spawn(Arc::clone(&live).run(Arc::clone(&stop)));
    let t = Instant::now();
    rt.block_on(wait_captured(&services, &ids, rooms))?;
    let captured = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (peak, now) = (status_kib("VmHWM"), status_kib("VmRSS"));
    stop.notify_one();
    rt.block_on(running)?;
    // The database the captures wrote (SQLite keeps up to 16 MiB of it cached per connection).
    let database: u64 = ["live.db", "live.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.path().join(name)).ok())
        .map(|m| m.len() / 1024)
        .sum();
    println!("{rooms} {timeline} {base} {peak} {now} {} {database}", captured.as_millis());
    Ok(())
}

fn memory_case(rooms: usize, timeline: usize, purge: bool) -> BenchResult {
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.env(MEMORY_ENV, format!("{rooms},{timeline}"));
        if purge {
            command.env("MIMALLOC_PURGE_DELAY", "0");
        }
        let output = command.stderr(std::process::Stdio::inherit()).output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<u64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        let [_, _, base, peak, now, millis, database] = fields[..] else {
            return Err(format!("memory case {rooms},{timeline}: {text}").into());
        };
        runs.push((peak.saturating_sub(base), now.saturating_sub(base), base, millis, database));
    }
    let median = |f: fn(&(u64, u64, u64, u64, u64)) -> u64| {
        let mut values: Vec<u64> = runs.iter().map(f).collect();
        values.sort_unstable();
        values[values.len() / 2]
    };
    let (peak, now, base, millis, database) =
        (median(|r| r.0), median(|r| r.1), median(|r| r.2), median(|r| r.3), median(|r| r.4));
    let body = serde_json::to_vec(&first_sync(0, rooms, timeline))?.len();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let each: Vec<String> = runs.iter().map(|r| format!("+{:.1}", mib(r.0))).collect();
    println!(
        "live_idle: first /sync of {rooms} rooms × {timeline} timeline events ({:.2} MiB answer){}, captured in {:.1} s \
         (database {:.1} MiB): resident {:.1} MiB before; peak +{:.1} MiB (runs {}); once idle +{:.1} MiB (medians of {RUNS})",
        body as f64 / (1024.0 * 1024.0),
        if purge { ", MIMALLOC_PURGE_DELAY=0" } else { "" },
        millis as f64 / 1000.0,
        mib(database),
        mib(base),
        mib(peak),
        each.join(" "),
        mib(now),
    );
    Ok(())
}

fn main() -> BenchResult {
    if std::env::var(MOCK_ENV).is_ok() {
        return serve_mock();
    }
    if let Ok(case) = std::env::var(MEMORY_ENV) {
        let [rooms, timeline] = case.split(',').filter_map(|v| v.parse().ok()).collect::<Vec<usize>>()[..]
        else {
            return Err(format!("{MEMORY_ENV}={case}").into());
        };
        return memory_child(rooms, timeline);
    }
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    println!("live_idle: load average before: {}", load_average());
    let seconds = u64::try_from(env_or("ARGUS_BENCH_SECONDS", 10))?;
    for accounts in env_list("ARGUS_BENCH_ACCOUNTS", "10,100") {
        cpu_case(accounts.max(1), seconds)?;
    }
    for purge in [false, true] {
        for (rooms, timeline) in [(100, 1), (100, 20), (1000, 1), (1000, 20)] {
            memory_case(rooms, timeline, purge)?;
        }
    }
    println!("live_idle: load average after: {}", load_average());
    Ok(())
}
