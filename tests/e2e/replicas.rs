//! Three `argus-tchap serve` processes on one PostgreSQL, sharing the watched rooms of a real
//! Synapse through leases: every watched room is synced once per interval (not once per
//! replica), a replica killed with SIGKILL loses nothing (what it committed stays, another
//! replica takes its watches over once their leases expire, an interrupted run is audited),
//! no message is stored twice, and every audit chain verifies.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use argus_domain::{Classification, PageRequest, Scope, Viewer};
use argus_store::{IngestionCursor, Store};
use argus_testkit::{postgres::TestDatabase, synapse::Synapse};
use serde_json::{Value, json};

use crate::harness::{SECRET, dev_jwt};

/// Seconds between a watch's runs.
const INTERVAL: u64 = 2;

/// One `argus-tchap serve` process.
struct Replica {
    child: Child,
    base: String,
}

impl Replica {
    fn start(database_url: &str, dir: &std::path::Path, name: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(env!("CARGO_BIN_EXE_argus-tchap"))
            .arg("serve")
            .env("ARGUS_DATABASE_URL", database_url)
            .env("ARGUS_BIND", format!("127.0.0.1:{port}"))
            .env("ARGUS_DATA_DIR", dir)
            .env("ARGUS_JWT_HS256_SECRET", SECRET)
            .env("ARGUS_MATRIX_ALLOW_PRIVATE_ADDRESSES", "127.0.0.1")
            .env("ARGUS_MATRIX_RUN_LEASE_SECS", "4")
            .env("ARGUS_WATCH_TICK_SECS", "1")
            .env("ARGUS_WATCH_MIN_INTERVAL_SECS", INTERVAL.to_string())
            .env("ARGUS_WATCH_LEASE_SECS", "10")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting argus-tchap serve")?;
        Ok(Self { child, base: format!("http://127.0.0.1:{port}") })
    }

    async fn wait_ready(&self, client: &reqwest::Client) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if client.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow!("replica {} never became ready", self.base))
    }

    async fn graphql(
        &self,
        client: &reqwest::Client,
        jwt: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value> {
        let body: Value = client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(jwt)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        ensure!(body.get("errors").is_none(), "errors: {body}");
        Ok(body["data"].clone())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages stored per room, as the organisation sees them.
async fn counts(replica: &Replica, client: &reqwest::Client, jwt: &str) -> Result<BTreeMap<String, i64>> {
    let data = replica
        .graphql(
            client,
            jwt,
            "{ tchapRooms(first: 50) { edges { node { roomId messageCount } } } }",
            json!({}),
        )
        .await?;
    let edges = data["tchapRooms"]["edges"].as_array().cloned().unwrap_or_default();
    Ok(edges
        .iter()
        .filter_map(|e| Some((e["node"]["roomId"].as_str()?.to_owned(), e["node"]["messageCount"].as_i64()?)))
        .collect())
}

async fn wait_for_counts(
    replica: &Replica,
    client: &reqwest::Client,
    jwt: &str,
    expected: &BTreeMap<String, i64>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = counts(replica, client, jwt).await?;
        if &now == expected {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the rooms never reached {expected:?}: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The organisation's audit records, oldest first.
fn records(store: &Store) -> Result<Vec<argus_domain::IngestionRecord>> {
    let viewer = Viewer::new("audit".parse()?, "dgsi".parse()?, Classification::TopSecret, [Scope::Audit]);
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.ingestions(&viewer, &PageRequest::<IngestionCursor> { first: 500, after })?;
        all.extend(page.items.iter().cloned());
        match page.items.last() {
            Some(last) if page.has_next_page => after = Some(IngestionCursor { seq: last.seq }),
            _ => break,
        }
    }
    all.reverse();
    Ok(all)
}

pub(crate) async fn run(synapse: &Synapse, db: &TestDatabase) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = synapse.register("replicas_alice").await?;
    let mut rooms = Vec::new();
    for i in 0..4 {
        let room = alice.create_room(Some(&format!("Veille {i}")), None, false).await?;
        alice.send_texts(&room, "Point de situation", 40, 8).await?;
        rooms.push(room);
    }
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    // The first replica applies the migrations; the others start once it is ready.
    let first = Replica::start(db.url(), dir.path(), "replica-1")?;
    first.wait_ready(&client).await?;
    let mut others = Vec::new();
    for name in ["replica-2", "replica-3"] {
        let replica = Replica::start(db.url(), dir.path(), name)?;
        replica.wait_ready(&client).await?;
        others.push(replica);
    }
    let jwt =
        dev_jwt("analyste", "dgsi", Classification::Secret, &[Scope::Read, Scope::Ingest, Scope::Audit])?;
    for room in &rooms {
        let input = json!({ "input": {
            "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": room,
            "classification": "RESTRICTED", "interval": INTERVAL,
        }});
        let data = first
            .graphql(
                &client,
                &jwt,
                "mutation($input: WatchTchapRoomInput!) { watchTchapRoom(input: $input) { status } }",
                input,
            )
            .await?;
        ensure!(data["watchTchapRoom"]["status"] == "ACTIVE", "{data}");
    }
    let mut expected: BTreeMap<String, i64> = rooms.iter().map(|r| (r.clone(), 40)).collect();
    wait_for_counts(&first, &client, &jwt, &expected).await?;

    // New messages arrive while the third replica is killed with SIGKILL.
    for room in &rooms {
        alice.send_texts(room, "Nouvelle information", 15, 8).await?;
    }
    let mut killed = others.pop().ok_or_else(|| anyhow!("no third replica"))?;
    killed.child.kill().context("SIGKILL")?;
    killed.child.wait()?;
    for count in expected.values_mut() {
        *count += 15;
    }
    wait_for_counts(&first, &client, &jwt, &expected).await?;

    // Synced once per interval, not once per replica: over a window, each room's scheduled runs
    // number about window / interval.
    let store = tokio::task::spawn_blocking({
        let url = db.url().to_owned();
        move || Store::open(&url)
    })
    .await??;
    let before = records(&store)?.len();
    let window = Duration::from_secs(8);
    tokio::time::sleep(window).await;
    let trail = records(&store)?;
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &trail[before..] {
        ensure!(record.entry.scheduled, "an unscheduled run: {record:?}");
        *runs.entry(record.entry.room_id.as_str()).or_default() += 1;
    }
    let most = (window.as_secs() / INTERVAL) as usize + 2;
    for room in &rooms {
        let n = runs.get(room.as_str()).copied().unwrap_or(0);
        ensure!(
            (2..=most).contains(&n),
            "{room} ran {n} times in {window:?} (interval {INTERVAL} s): {runs:?}"
        );
    }
    // Nothing twice, nothing missing: the counts are Synapse's; every record verifies; a run the
    // kill interrupted is audited as such.
    for room in &rooms {
        let truth = alice.all_messages(room).await?.iter().filter(|e| e["type"] == "m.room.message").count();
        ensure!(expected[room] == truth as i64, "{room}: stored {}, Synapse holds {truth}", expected[room]);
    }
    ensure!(counts(&first, &client, &jwt).await? == expected, "counts moved");
    for record in &trail {
        if let Some(error) = &record.entry.error {
            ensure!(error == argus_store::INTERRUPTED, "a run failed: {record:?}");
        }
    }
    let verified = store.audit_verify(&[])?;
    ensure!(verified.iter().all(argus_store::ChainVerification::is_ok), "{verified:?}");
    drop(others);
    drop(first);
    Ok(())
}
