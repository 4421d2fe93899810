//! Live capture end to end: `argus-tchap serve` processes run the `/sync` loops of watched
//! accounts (`watchTchapAccount`) against the real Synapse, on SQLite and PostgreSQL.
//!
//! - [`api`]: an account watched over HTTP; messages sent to its rooms reach `tchapMessages`
//!   within seconds; `tchapAccountWatches` shows the watch to its organisation only (at their
//!   clearance); a graceful stop gives the loop back at once to the next process; an unwatched
//!   account's loop stops; bad input is refused with `INVALID_INPUT`; a refused token stops
//!   the watch with its reason, and a refreshable login given again keeps the loop alive
//!   across the token's expiries.
//! - [`crash`]: the process killed with SIGKILL while its loop captures a steady stream of
//!   messages, twice, and started again on the same store: every message is stored exactly
//!   once, none is missing, the audit chain verifies.
//! - [`second_loop`]: a process with room for two loops runs the second account watched while
//!   it runs the first.
//! - [`replicas`]: three processes on one PostgreSQL share three watched accounts, one loop per
//!   account on one replica; one replica killed with SIGKILL, its loops are taken over within
//!   the lease; nothing lost or stored twice.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use argus_domain::{Classification, PageRequest, Scope, Viewer};
use argus_store::{IngestionCursor, Store};
use argus_testkit::{
    postgres::TestDatabase,
    synapse::{Synapse, TestUser},
};
use serde_json::{Value, json};

use crate::harness::{SECRET, dev_jwt};

/// The organisation that watches.
pub(crate) const ORG: &str = "dgsi";

/// Time between two messages of a steady stream.
pub(crate) const EVERY: Duration = Duration::from_millis(100);

/// How long a test waits for something the loops should do in a few seconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(45);

pub(crate) const WATCH: &str = "mutation($input: WatchTchapAccountInput!) { watchTchapAccount(input: $input) {
    id status statusReason account homeserverUrl owner classification interval rooms decryptsHistory roomCount } }";

pub(crate) const WATCHES: &str = "query($after: String) { tchapAccountWatches(first: 10, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id status statusReason lastSyncAt roomCount account interval } }
    nodes { id } } }";

const UNWATCH: &str = "mutation($id: ID!) { unwatchTchapAccount(id: $id) }";

/// One `argus-tchap serve` process, its standard output and error in `<dir>/<name>.log`.
pub(crate) struct Serve {
    child: Child,
    pub(crate) name: String,
    base: String,
    log: PathBuf,
    client: reqwest::Client,
}

impl Serve {
    /// Starts `serve` on `database_url` with `dir` as its data directory (the watch key and the
    /// id keys are generated there once and shared by every process on `dir`), a one-second
    /// tick, live leases of `lease_secs` and `env` on top. `HOSTNAME` is `name`, so the
    /// process's leases (`<hostname>-<pid>-<random>`) say which process holds them.
    pub(crate) fn start(
        database_url: &str,
        dir: &Path,
        name: &str,
        lease_secs: u64,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_argus-tchap"));
        command
            .arg("serve")
            .env("ARGUS_DATABASE_URL", database_url)
            .env("ARGUS_BIND", format!("127.0.0.1:{port}"))
            .env("ARGUS_DATA_DIR", dir)
            .env("ARGUS_JWT_HS256_SECRET", SECRET)
            .env("ARGUS_MATRIX_ALLOW_PRIVATE_ADDRESSES", "127.0.0.1")
            .env("ARGUS_MATRIX_RUN_LEASE_SECS", "4")
            .env("ARGUS_WATCH_TICK_SECS", "1")
            .env("ARGUS_WATCH_LIVE_LEASE_SECS", lease_secs.to_string())
            .env("HOSTNAME", name)
            .env("RUST_LOG", "info")
            .stdout(stderr.try_clone()?)
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().context("starting argus-tchap serve")?;
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { child, name: name.to_owned(), base: format!("http://127.0.0.1:{port}"), log, client })
    }

    /// [`Serve::start`], then waits until it answers `/readyz`.
    pub(crate) async fn ready(
        database_url: &str,
        dir: &Path,
        name: &str,
        lease_secs: u64,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let serve = Self::start(database_url, dir, name, lease_secs, env)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let answer = serve.client.get(format!("{}/readyz", serve.base)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(serve);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow!("{name} never became ready: {}", serve.log_tail()))
    }

    /// The whole body of a GraphQL request (HTTP 200 required).
    async fn graphql(&self, jwt: &str, query: &str, variables: Value) -> Result<Value> {
        let response = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(jwt)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .with_context(|| format!("POST /graphql to {}", self.name))?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "HTTP {status} from {}: {text}", self.name);
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
    }

    /// `data.<field>` of a request that must succeed.
    pub(crate) async fn data(&self, jwt: &str, query: &str, variables: Value, field: &str) -> Result<Value> {
        let body = self.graphql(jwt, query, variables).await?;
        ensure!(body.get("errors").is_none(), "errors for {field} from {}: {body}", self.name);
        body["data"].get(field).cloned().ok_or_else(|| anyhow!("no data.{field} in {body}"))
    }

    /// The `extensions.code` of the first error of a request that must fail.
    async fn error_code(&self, jwt: &str, query: &str, variables: Value) -> Result<String> {
        let body = self.graphql(jwt, query, variables).await?;
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("expected an error with extensions.code, got {body}"))
    }

    /// Kills the process with SIGKILL (`Child::kill` on Unix) and reaps it.
    pub(crate) fn kill(&mut self) -> Result<()> {
        self.child.kill().context("SIGKILL")?;
        self.child.wait().context("reaping a killed process")?;
        Ok(())
    }

    /// Stops the process with SIGTERM (a graceful stop: its loops give their leases back);
    /// fails unless it exits successfully within 30 s.
    pub(crate) async fn terminate(&mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        ensure!(Command::new("kill").args(["-TERM", &pid]).status()?.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "{} exited with {status}: {}", self.name, self.log_tail());
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{} did not stop on SIGTERM", self.name)
    }

    /// Whether `lease_owner` (a stored lease's replica name) is this process's.
    pub(crate) fn holds(&self, lease_owner: &str) -> bool {
        lease_owner.starts_with(&format!("{}-{}-", self.name, self.child.id()))
    }

    /// The end of the process's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("\n--- {} log ---\n{}", self.name, lines[lines.len().saturating_sub(30)..].join("\n"))
    }

    /// The process's whole log.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A steady stream of messages: one every [`EVERY`] to each listed room in turn, sent by one
/// user, until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<Vec<(String, String)>>>,
}

impl Stream {
    fn start(user: &TestUser, rooms: &[String], prefix: &str) -> Self {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (user, rooms, prefix) = (user.clone(), rooms.to_vec(), prefix.to_owned());
        let task = tokio::spawn({
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            async move {
                let mut events = Vec::new();
                for i in 0usize.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let room = &rooms[i % rooms.len()];
                    let event = user.send_text(room, &format!("{prefix} {i:05}")).await?;
                    events.push((room.clone(), event));
                    sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(EVERY).await;
                }
                Ok(events)
            }
        });
        Self { stop, sent, task }
    }

    /// How many messages were sent so far.
    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops sending; the `(room, event id)` of every message sent, in order.
    async fn stop(self) -> Result<Vec<(String, String)>> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?
    }
}

/// A development JWT of `sub` in `org` at `clearance`, with the read and ingest scopes.
pub(crate) fn analyst(sub: &str, org: &str, clearance: Classification) -> Result<String> {
    dev_jwt(sub, org, clearance, &[Scope::Read, Scope::Ingest])
}

/// Watches `user`'s account (RESTRICTED, long-poll `interval` seconds); the watch's id.
async fn watch(serve: &Serve, jwt: &str, synapse: &Synapse, user: &TestUser, interval: i64) -> Result<Value> {
    let input = json!({ "input": {
        "homeserverUrl": synapse.base_url(), "accessToken": user.access_token,
        "classification": "RESTRICTED", "interval": interval,
    }});
    serve.data(jwt, WATCH, input, "watchTchapAccount").await
}

/// Every event id `tchapMessages` lists for `room`, page by page, repeats kept.
async fn event_ids(serve: &Serve, jwt: &str, room: &str) -> Result<Vec<String>> {
    const QUERY: &str = "query($r: String!, $a: String) { tchapMessages(roomId: $r, first: 100, after: $a) {
        pageInfo { hasNextPage endCursor } edges { node { eventId } } } }";
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1_000 {
        let page = serve.data(jwt, QUERY, json!({ "r": room, "a": after }), "tchapMessages").await?;
        for edge in page["edges"].as_array().into_iter().flatten() {
            ids.push(
                edge["node"]["eventId"].as_str().ok_or_else(|| anyhow!("no eventId: {edge}"))?.to_owned(),
            );
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return Ok(ids);
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    bail!("{room}: too many pages")
}

/// Messages stored per room, as `tchapRooms` counts them (a cheap look while a loop works).
pub(crate) async fn stored_counts(serve: &Serve, jwt: &str) -> Result<BTreeMap<String, i64>> {
    let rooms = serve
        .data(
            jwt,
            "{ tchapRooms(first: 100) { edges { node { roomId messageCount } } } }",
            json!({}),
            "tchapRooms",
        )
        .await?;
    Ok(rooms["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["node"]["roomId"].as_str()?.to_owned(), e["node"]["messageCount"].as_i64()?)))
        .collect())
}

/// Waits until every event of `expected` is listed by `tchapMessages` in its room; returns
/// when it happened.
async fn wait_stored(serve: &Serve, jwt: &str, expected: &[(String, String)]) -> Result<Instant> {
    let rooms: BTreeSet<&str> = expected.iter().map(|(room, _)| room.as_str()).collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut stored = BTreeSet::new();
        for room in &rooms {
            stored.extend(event_ids(serve, jwt, room).await?);
        }
        let missing: Vec<&str> =
            expected.iter().map(|(_, e)| e.as_str()).filter(|e| !stored.contains(*e)).collect();
        if missing.is_empty() {
            return Ok(Instant::now());
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {} messages never stored (first {}){}",
            missing.len(),
            expected.len(),
            missing[0],
            serve.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message of `rooms` is stored exactly once and the store holds what Synapse holds:
/// the messages `user` reads from each room on Synapse (every message of these rooms).
async fn exactly_once(serve: &Serve, jwt: &str, user: &TestUser, rooms: &[String]) -> Result<usize> {
    let mut total = 0;
    for room in rooms {
        let stored = event_ids(serve, jwt, room).await?;
        let unique: BTreeSet<&String> = stored.iter().collect();
        ensure!(
            unique.len() == stored.len(),
            "{room}: {} messages stored twice",
            stored.len() - unique.len()
        );
        let truth: BTreeSet<String> = user
            .all_messages(room)
            .await?
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect();
        let stored: BTreeSet<String> = stored.into_iter().collect();
        let missing: Vec<_> = truth.difference(&stored).collect();
        let extra: Vec<_> = stored.difference(&truth).collect();
        ensure!(
            missing.is_empty() && extra.is_empty(),
            "{room}: missing {missing:?}, not on Synapse {extra:?}"
        );
        total += stored.len();
    }
    Ok(total)
}

/// `argus-tchap audit verify` on the store passes; its output.
pub(crate) fn audit_verify(database_url: &str, dir: &Path) -> Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_argus-tchap"))
        .args(["audit", "verify"])
        .env("ARGUS_DATABASE_URL", database_url)
        .env("ARGUS_DATA_DIR", dir)
        .output()
        .context("running argus-tchap audit verify")?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    ensure!(output.status.success(), "audit verify: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    ensure!(stdout.starts_with(&format!("{ORG}: ok, ")), "audit verify: {stdout}");
    Ok(stdout)
}

/// Every audit record of the organisation succeeded, or was a run a kill interrupted; how
/// many there are, and how many were interrupted.
async fn runs_succeeded_or_interrupted(database_url: &str) -> Result<(usize, usize)> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&url)?;
        let viewer = Viewer::new("audit".parse()?, ORG.parse()?, Classification::TopSecret, [Scope::Audit]);
        let mut after = None;
        let (mut seen, mut interrupted) = (0, 0);
        loop {
            let page = store.ingestions(&viewer, &PageRequest::<IngestionCursor> { first: 500, after })?;
            for record in &page.items {
                if let Some(error) = &record.entry.error {
                    ensure!(error == argus_store::INTERRUPTED, "a run failed: {record:?}");
                    interrupted += 1;
                }
            }
            seen += page.items.len();
            match page.items.last() {
                Some(last) if page.has_next_page => after = Some(IngestionCursor { seq: last.seq }),
                _ => return Ok((seen, interrupted)),
            }
        }
    })
    .await?
}

/// The watch API over HTTP on one process: capture, listing, visibility, stop and restart,
/// unwatch, bad input.
pub(crate) async fn api(synapse: &Synapse, database_url: &str, dir: &Path) -> Result<()> {
    let alice = synapse.register("live_api").await?;
    let rooms = vec![
        alice.create_room(Some("Veille A"), None, false).await?,
        alice.create_room(Some("Veille B"), None, false).await?,
    ];
    let mut before = Vec::new();
    for room in &rooms {
        before.push((room.clone(), alice.send_text(room, "Avant la veille").await?));
    }
    // A long lease (renewed every 5 s): a process stopped gracefully must give its loop back
    // rather than leave it to expire.
    let lease = 15;
    let mut serve = Serve::ready(database_url, dir, "api-1", lease, &[]).await?;
    let jwt = analyst("analyste", ORG, Classification::Secret)?;

    // Bad long-poll timeouts are refused before anything is asked or stored.
    for interval in [0, -5, 301, 100_000] {
        let input = json!({ "input": {
            "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token,
            "classification": "RESTRICTED", "interval": interval,
        }});
        let code = serve.error_code(&jwt, WATCH, input).await?;
        ensure!(code == "INVALID_INPUT", "interval {interval}: {code}");
    }
    let none = serve.data(&jwt, WATCHES, json!({}), "tchapAccountWatches").await?;
    ensure!(none["totalCount"] == 0, "a refused watch was stored: {none}");

    let watched = watch(&serve, &jwt, synapse, &alice, 5).await?;
    ensure!(watched["status"] == "ACTIVE" && watched["statusReason"].is_null(), "{watched}");
    ensure!(watched["account"] == alice.user_id.as_str(), "{watched}");
    ensure!(
        watched["homeserverUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with(synapse.base_url().trim_end_matches('/'))),
        "{watched}"
    );
    ensure!(watched["owner"] == "analyste" && watched["classification"] == "RESTRICTED", "{watched}");
    ensure!(
        watched["interval"] == 5 && watched["rooms"].is_null() && watched["decryptsHistory"] == false,
        "{watched}"
    );
    let id = watched["id"].as_str().ok_or_else(|| anyhow!("no id: {watched}"))?.to_owned();

    // History first, then messages as they are sent: each reaches tchapMessages within
    // seconds (the long-poll answers at once), well before the 5 s timeout would.
    wait_stored(&serve, &jwt, &before).await?;
    let mut latencies = Vec::new();
    for i in 0..3 {
        for room in &rooms {
            let sent = Instant::now();
            let event = alice.send_text(room, &format!("En direct {i}")).await?;
            wait_stored(&serve, &jwt, &[(room.clone(), event)]).await?;
            latencies.push(sent.elapsed());
        }
    }
    latencies.sort();
    eprintln!("live api: send-to-tchapMessages latencies {latencies:?}");
    ensure!(latencies.last().is_some_and(|l| *l < Duration::from_secs(4)), "too slow: {latencies:?}");

    // The organisation sees its watch: active, synced, two rooms.
    let deadline = Instant::now() + DEADLINE;
    let listed = loop {
        let listed = serve.data(&jwt, WATCHES, json!({}), "tchapAccountWatches").await?;
        if listed["edges"][0]["node"]["roomCount"] == 2 && !listed["edges"][0]["node"]["lastSyncAt"].is_null()
        {
            break listed;
        }
        ensure!(Instant::now() < deadline, "the watch never showed its two rooms: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let node = &listed["edges"][0]["node"];
    ensure!(listed["totalCount"] == 1 && listed["pageInfo"]["hasNextPage"] == false, "{listed}");
    ensure!(node["id"] == id.as_str() && listed["nodes"][0]["id"] == id.as_str(), "{listed}");
    ensure!(node["status"] == "ACTIVE" && node["statusReason"].is_null(), "{listed}");
    ensure!(node["account"] == alice.user_id.as_str() && node["interval"] == 5, "{listed}");

    // Another organisation's analyst, or one of the same organisation below the watch's
    // classification, sees no watch and cannot remove it.
    for (who, org, clearance) in
        [("analyste", "anssi", Classification::TopSecret), ("stagiaire", ORG, Classification::Unclassified)]
    {
        let other = analyst(who, org, clearance)?;
        let seen = serve.data(&other, WATCHES, json!({}), "tchapAccountWatches").await?;
        ensure!(
            seen["totalCount"] == 0 && seen["edges"] == json!([]) && seen["nodes"] == json!([]),
            "{who}@{org}: {seen}"
        );
        let removed = serve.data(&other, UNWATCH, json!({ "id": id }), "unwatchTchapAccount").await?;
        ensure!(removed == false, "{who}@{org} removed the watch");
    }
    let still = serve.data(&jwt, WATCHES, json!({}), "tchapAccountWatches").await?;
    ensure!(still["totalCount"] == 1, "{still}");

    // A graceful stop gives the lease back: the next process takes the loop over at its first
    // tick, long before the lease would expire, and resumes from the stored position.
    serve.terminate().await?;
    let sent_while_stopped = (rooms[0].clone(), alice.send_text(&rooms[0], "Pendant l'arrêt").await?);
    let restarted = Instant::now();
    serve = Serve::ready(database_url, dir, "api-2", lease, &[]).await?;
    wait_stored(&serve, &jwt, std::slice::from_ref(&sent_while_stopped)).await?;
    let resumed = restarted.elapsed();
    eprintln!("live api: loop resumed {resumed:?} after a graceful restart (lease {lease} s)");
    ensure!(
        resumed < Duration::from_secs(lease),
        "the stopped process kept its lease: resumed after {resumed:?}"
    );

    // Unwatched: true once, then false; an id that names nothing: false.
    let removed = serve.data(&jwt, UNWATCH, json!({ "id": id }), "unwatchTchapAccount").await?;
    ensure!(removed == true, "unwatch: {removed}");
    let again = serve.data(&jwt, UNWATCH, json!({ "id": id }), "unwatchTchapAccount").await?;
    ensure!(again == false, "unwatch twice: {again}");
    let bad = serve.data(&jwt, UNWATCH, json!({ "id": "bm90LWEtd2F0Y2g" }), "unwatchTchapAccount").await?;
    ensure!(bad == false, "unwatch of a bad id: {bad}");
    let gone = serve.data(&jwt, WATCHES, json!({}), "tchapAccountWatches").await?;
    ensure!(gone["totalCount"] == 0 && gone["edges"] == json!([]), "{gone}");

    // Its loop stops at its next lease renewal (a third of the lease): a message sent after
    // that is not captured.
    tokio::time::sleep(Duration::from_secs(lease / 3 + 2)).await;
    let after = alice.send_text(&rooms[1], "Après la fin de la veille").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = event_ids(&serve, &jwt, &rooms[1]).await?;
    ensure!(!stored.contains(&after), "an unwatched account was still captured{}", serve.log_tail());
    ensure!(
        serve.log_text().contains("lease is no longer held"),
        "the loop did not say it stopped{}",
        serve.log_tail()
    );
    exactly_once(&serve, &jwt, &alice, &rooms[..1]).await?;

    tokens(&serve, &jwt, synapse).await?;
    serve.terminate().await?;
    audit_verify(database_url, dir)?;
    Ok(())
}

/// The one account watch `jwt` sees, once `done` holds for it.
async fn wait_watch(serve: &Serve, jwt: &str, what: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = serve.data(jwt, WATCHES, json!({}), "tchapAccountWatches").await?;
        ensure!(listed["totalCount"] == 1, "{listed}");
        let node = &listed["edges"][0]["node"];
        if done(node) {
            return Ok(node.clone());
        }
        ensure!(Instant::now() < deadline, "{what}: {listed}{}", serve.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A token the homeserver refuses stops the watch, with its reason in `tchapAccountWatches`;
/// given again with a refreshable login, the watch resumes and its loop renews the token
/// across its expiries (4 s on the test homeserver).
async fn tokens(serve: &Serve, jwt: &str, synapse: &Synapse) -> Result<()> {
    let carol = synapse.register("live_token").await?;
    let room = carol.create_room(Some("Veille C"), None, false).await?;
    // Dave writes: Carol's tokens are the watch's.
    let dave = synapse.register("live_token_peer").await?;
    carol.invite(&room, &dave.user_id).await?;
    dave.join(&room).await?;
    let watched = watch(serve, jwt, synapse, &carol, 5).await?;
    let first = (room.clone(), dave.send_text(&room, "Avant la déconnexion").await?);
    wait_stored(serve, jwt, std::slice::from_ref(&first)).await?;

    carol.request(reqwest::Method::POST, &["logout"], &[], Some(&json!({}))).await?;
    let stopped = Instant::now();
    let node =
        wait_watch(serve, jwt, "a refused token did not stop the watch", |node| node["status"] != "ACTIVE")
            .await?;
    eprintln!("live api: a logged-out token stopped its watch in {:?}: {node}", stopped.elapsed());
    ensure!(node["id"] == watched["id"] && node["status"] == "PAUSED", "{node}");
    ensure!(
        node["statusReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN")),
        "{node}"
    );

    let login = carol.login_refreshable().await?;
    ensure!(login.expires_in_ms.is_some_and(|ms| ms < 10_000), "the login does not expire soon: {login:?}");
    let input = json!({ "input": {
        "homeserverUrl": synapse.base_url(), "accessToken": login.access_token, "refreshToken": login.refresh_token,
        "classification": "RESTRICTED", "interval": 5,
    }});
    let renewed = serve.data(jwt, WATCH, input, "watchTchapAccount").await?;
    ensure!(renewed["id"] == watched["id"] && renewed["status"] == "ACTIVE", "{renewed}");
    // Messages over three lifetimes of the token, each captured as it comes.
    let mut sent = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let event = (room.clone(), dave.send_text(&room, "Après le renouvellement").await?);
        wait_stored(serve, jwt, std::slice::from_ref(&event)).await?;
        sent.push(event);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let node = wait_watch(serve, jwt, "the renewed watch", |_| true).await?;
    ensure!(node["status"] == "ACTIVE" && node["statusReason"].is_null(), "{node}");
    eprintln!("live api: {} messages captured across the token's expiries", sent.len());
    exactly_once(serve, jwt, &dave, std::slice::from_ref(&room)).await?;
    Ok(())
}

/// A process with room for two loops, already running one, takes a second account watched
/// later: the loop it runs must not use up the room its claim has for new ones.
pub(crate) async fn second_loop(synapse: &Synapse, database_url: &str, dir: &Path) -> Result<()> {
    let jwt = analyst("analyste", ORG, Classification::Secret)?;
    let serve = Serve::ready(database_url, dir, "loops", 3, &[("ARGUS_WATCH_LIVE_MAX_LOOPS", "2")]).await?;
    for (i, name) in ["live_first", "live_second"].into_iter().enumerate() {
        let user = synapse.register(name).await?;
        let room = user.create_room(Some(name), None, false).await?;
        watch(&serve, &jwt, synapse, &user, 5).await?;
        let event = user.send_text(&room, "Message en direct").await?;
        wait_stored(&serve, &jwt, &[(room, event)])
            .await
            .with_context(|| format!("account {} of 2 was not captured", i + 1))?;
    }
    Ok(())
}

/// Kills the process with SIGKILL at the first commit of a room seen after `at_least` messages
/// are stored (the loop busy between an answer and the position that covers it).
async fn kill_when_busy(serve: &mut Serve, jwt: &str, at_least: i64) -> Result<i64> {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        let total: i64 = stored_counts(serve, jwt).await?.values().sum();
        if total >= at_least && last.is_some_and(|last| total > last) {
            serve.kill()?;
            return Ok(total);
        }
        last = Some(total);
        ensure!(Instant::now() < deadline, "never stored {at_least} messages: {total}{}", serve.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL twice while messages stream in, each time a new process on the same store: every
/// message stored exactly once, none missing, the audit chain verified.
pub(crate) async fn crash(synapse: &Synapse, database_url: &str, dir: &Path) -> Result<()> {
    let bob = synapse.register("live_crash").await?;
    let rooms = vec![
        bob.create_room(Some("Flux A"), None, false).await?,
        bob.create_room(Some("Flux B"), None, false).await?,
    ];
    for room in &rooms {
        bob.send_texts(room, "Historique", 10, 4).await?;
    }
    // A short lease: the next process takes the dead one's loop over within 3 s.
    let lease = 3;
    let jwt = analyst("analyste", ORG, Classification::Secret)?;
    let mut serve = Serve::ready(database_url, dir, "crash-1", lease, &[]).await?;
    watch(&serve, &jwt, synapse, &bob, 2).await?;
    let stream = Stream::start(&bob, &rooms, "Flux");

    let started = Instant::now();
    let at = kill_when_busy(&mut serve, &jwt, 30).await?;
    eprintln!(
        "live crash: first SIGKILL with {at} stored, {} sent, after {:?}",
        stream.sent(),
        started.elapsed()
    );
    let restarted = Instant::now();
    serve = Serve::ready(database_url, dir, "crash-2", lease, &[]).await?;
    let at = kill_when_busy(&mut serve, &jwt, at + 10).await?;
    eprintln!(
        "live crash: second SIGKILL with {at} stored, {} sent, {:?} after the restart",
        stream.sent(),
        restarted.elapsed()
    );
    serve = Serve::ready(database_url, dir, "crash-3", lease, &[]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = stream.stop().await?;
    let stopped = Instant::now();
    wait_stored(&serve, &jwt, &sent).await?;
    eprintln!(
        "live crash: {} messages streamed; the last stored {:?} after the stream stopped",
        sent.len(),
        stopped.elapsed()
    );
    // Nothing more comes: the loop is idle, and nothing was stored twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = exactly_once(&serve, &jwt, &bob, &rooms).await?;
    ensure!(total == sent.len() + 20, "stored {total}, sent {}", sent.len() + 20);
    let (runs, interrupted) = runs_succeeded_or_interrupted(database_url).await?;
    let verified = audit_verify(database_url, dir)?;
    eprintln!(
        "live crash: {total} messages stored once each; {runs} runs audited ({interrupted} interrupted by a kill); {verified}"
    );
    serve.terminate().await?;
    Ok(())
}

/// Each watched account's lease owner while its lease runs, by storage id (`None`: no lease,
/// or an expired one).
fn lease_owners(db: &TestDatabase) -> Result<BTreeMap<i64, Option<String>>> {
    let rows = db.cluster().query(
        db.url(),
        "SELECT id, COALESCE(lease_owner, ''), COALESCE(lease_until, 0) FROM account_watches ORDER BY id",
    )?;
    let now_ms =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis())?;
    rows.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut fields = line.split('|');
            let (Some(id), Some(owner), Some(until)) = (fields.next(), fields.next(), fields.next()) else {
                bail!("bad row {line}")
            };
            let running = !owner.is_empty() && until.parse::<i64>()? > now_ms;
            Ok((id.parse()?, running.then(|| owner.to_owned())))
        })
        .collect()
}

/// Which of `replicas` holds each lease (`None`: nobody alive holds it).
pub(crate) fn holders(db: &TestDatabase, replicas: &[Serve]) -> Result<BTreeMap<i64, Option<String>>> {
    Ok(lease_owners(db)?
        .into_iter()
        .map(|(id, owner)| {
            let holder = owner.and_then(|o| replicas.iter().find(|r| r.holds(&o)).map(|r| r.name.clone()));
            (id, holder)
        })
        .collect())
}

/// Waits until `holders` says what `done` wants; what it said then.
pub(crate) async fn wait_holders(
    db: &TestDatabase,
    replicas: &[Serve],
    what: &str,
    done: impl Fn(&BTreeMap<i64, Option<String>>) -> bool,
) -> Result<BTreeMap<i64, Option<String>>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = holders(db, replicas)?;
        if done(&now) {
            return Ok(now);
        }
        ensure!(Instant::now() < deadline, "{what}: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three replicas, three accounts, one loop each on one replica; one replica killed, its loop
/// taken over within the lease; nothing lost or stored twice.
///
/// Each replica first runs one loop at most, so each runs exactly one; the replica holding the
/// oldest watch is then restarted gracefully with room for two (its loop given back and taken
/// again), and the replica holding the newest is killed: only the restarted one has room, and
/// it must take a watch newer than its own over.
pub(crate) async fn replicas(synapse: &Synapse, db: &TestDatabase) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut users = Vec::new();
    let mut rooms = Vec::new();
    for name in ["live_rep_a", "live_rep_b", "live_rep_c"] {
        let user = synapse.register(name).await?;
        let room = user.create_room(Some(&format!("Salle {name}")), None, false).await?;
        user.send_texts(&room, "Historique", 5, 4).await?;
        rooms.push(room);
        users.push(user);
    }
    let lease: u64 = 3;
    let one = [("ARGUS_WATCH_LIVE_MAX_LOOPS", "1")];
    // The first replica applies the migrations; the others start once it is ready.
    let mut replicas = vec![Serve::ready(db.url(), dir.path(), "replica1", lease, &one).await?];
    for name in ["replica2", "replica3"] {
        replicas.push(Serve::ready(db.url(), dir.path(), name, lease, &one).await?);
    }
    let jwt = analyst("analyste", ORG, Classification::Secret)?;
    for user in &users {
        watch(&replicas[0], &jwt, synapse, user, 2).await?;
    }

    // Every account claimed, each by one replica, and it stays so.
    let claimed = wait_holders(db, &replicas, "the accounts were never all claimed", |now| {
        now.len() == 3 && now.values().all(Option::is_some)
    })
    .await?;
    let distinct: BTreeSet<&String> = claimed.values().flatten().collect();
    eprintln!("live replicas: loops {claimed:?}");
    ensure!(distinct.len() == 3, "a replica runs more than its one loop: {claimed:?}");
    let window = Instant::now() + Duration::from_secs(2 * lease);
    while Instant::now() < window {
        let now = holders(db, &replicas)?;
        ensure!(now == claimed, "a loop moved between live replicas: {claimed:?} then {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // All three accounts captured: their history, then messages streamed to each.
    let streams: Vec<Stream> = users
        .iter()
        .zip(&rooms)
        .map(|(user, room)| Stream::start(user, std::slice::from_ref(room), "Direct"))
        .collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let counts = stored_counts(&replicas[0], &jwt).await?;
        if rooms.iter().all(|room| counts.get(room).is_some_and(|n| *n > 7)) {
            break;
        }
        ensure!(Instant::now() < deadline, "the accounts were not all captured live: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The holder of the oldest watch restarted with room for two loops: it gives its loop back
    // on SIGTERM, and its successor takes it again (the others have no room).
    let (oldest, newest) = (*claimed.keys().next().unwrap_or(&0), *claimed.keys().last().unwrap_or(&0));
    let name = claimed[&oldest].clone().ok_or_else(|| anyhow!("no holder of {oldest}"))?;
    let at = replicas.iter().position(|r| r.name == name).ok_or_else(|| anyhow!("no {name}"))?;
    replicas[at].terminate().await?;
    let restarted = Instant::now();
    let successor = format!("{name}b");
    replicas[at] =
        Serve::ready(db.url(), dir.path(), &successor, lease, &[("ARGUS_WATCH_LIVE_MAX_LOOPS", "2")]).await?;
    wait_holders(db, &replicas, "the restarted replica did not take its loop again", |now| {
        now[&oldest].as_deref() == Some(successor.as_str())
    })
    .await?;
    eprintln!(
        "live replicas: {name} restarted gracefully; its loop taken again in {:?}",
        restarted.elapsed()
    );

    // SIGKILL to the holder of the newest watch; the restarted replica takes it over.
    let victim_name = claimed[&newest].clone().ok_or_else(|| anyhow!("no holder of {newest}"))?;
    let victim =
        replicas.iter().position(|r| r.name == victim_name).ok_or_else(|| anyhow!("no {victim_name}"))?;
    let mut killed = replicas.remove(victim);
    killed.kill()?;
    let killed_at = Instant::now();
    let after = wait_holders(db, &replicas, "the killed replica's loop was not taken over", |now| {
        now.get(&newest).is_some_and(Option::is_some)
    })
    .await?;
    let takeover = killed_at.elapsed();
    eprintln!(
        "live replicas: {victim_name} killed; its loop taken over in {takeover:?} (lease {lease} s): {after:?}"
    );
    ensure!(takeover < Duration::from_secs(3 * lease), "takeover took {takeover:?}");
    ensure!(
        after[&newest].as_deref() == Some(successor.as_str()),
        "taken over by a replica without room: {after:?}"
    );
    ensure!(after.values().all(Option::is_some), "a loop has no live replica: {after:?}");

    // Messages keep coming for a while after the takeover; then every one is stored once.
    let sent_at_takeover: usize = streams.iter().map(Stream::sent).sum();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut sent = Vec::new();
    for stream in streams {
        sent.extend(stream.stop().await?);
    }
    ensure!(sent.len() > sent_at_takeover, "nothing was sent after the takeover");
    let stopped = Instant::now();
    wait_stored(&replicas[0], &jwt, &sent).await?;
    eprintln!(
        "live replicas: {} messages streamed; all stored {:?} after the stream stopped",
        sent.len(),
        stopped.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut total = 0;
    for (user, room) in users.iter().zip(&rooms) {
        total += exactly_once(&replicas[0], &jwt, user, std::slice::from_ref(room)).await?;
    }
    ensure!(total == sent.len() + 15, "stored {total}, sent {}", sent.len() + 15);
    // No live replica lost a loop to another (one loop per account at a time).
    for replica in &replicas {
        ensure!(
            !replica.log_text().contains("lease is no longer held"),
            "{} lost a loop{}",
            replica.name,
            replica.log_tail()
        );
    }
    let (runs, interrupted) = runs_succeeded_or_interrupted(db.url()).await?;
    let verified = audit_verify(db.url(), dir.path())?;
    eprintln!(
        "live replicas: {total} messages stored once each; {runs} runs audited ({interrupted} interrupted by the kill); {verified}"
    );
    Ok(())
}
