//! End-to-end ingestion of an end-to-end encrypted room against the same room in plaintext, in
//! one run: 100,000 events from the local mock homeserver (the benchmark pages of
//! `argus_testkit::homeserver`), once as served, once with every `m.room.message` encrypted by
//! one of 100 megolm sessions (the test kit's sending device, relations in clear) and a key
//! backup holding the 100 sessions, ingested with the legacy backup recovery key. Both through
//! the ingest use-case into fresh SQLite stores; medians of `ARGUS_BENCH_RUNS` (default 3).
//!
//! `cargo bench -p argus-graphql --bench encrypted`. `ARGUS_BENCH_PAGES` sets the pages of 1,000
//! events (default 100). Prints the numbers that go into `docs/benchmarks.md`.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use argus_domain::{AccessToken, Classification, Scope, Secret, Viewer};
use argus_graphql::{
    Services,
    ingest::{IngestRequest, ingest_room},
};
use argus_matrix::{Connector, ConnectorConfig, HARD_MAX_MESSAGES};
use argus_store::Store;
use argus_testkit::{
    e2ee::{Sender, recovery_key_text},
    homeserver::{MockHomeserver, bench},
};
use serde_json::{Value, json};
use wiremock::{
    Mock, Request, Respond, ResponseTemplate,
    matchers::{method, path, path_regex},
};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const SESSIONS: usize = 100;
const BACKUP_KEY: [u8; 32] = [0x21; 32];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The plaintext pages, with every `m.room.message` encrypted (relations kept in clear).
fn encrypted_pages(pages: usize, senders: &mut [Sender]) -> BenchResult<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(pages);
    let mut n = 0usize;
    for p in 0..pages {
        let mut body: Value = serde_json::from_slice(&bench::page_body(p, pages))?;
        if let Some(chunk) = body["chunk"].as_array_mut() {
            for event in chunk.iter_mut() {
                if event["type"] != "m.room.message" {
                    continue;
                }
                let mut content = event["content"].take();
                let relates_to = content.as_object_mut().and_then(|c| c.remove("m.relates_to"));
                let sender = &mut senders[n % SESSIONS];
                n += 1;
                event["content"] =
                    sender.encrypt(bench::ROOM, "m.room.message", &content, relates_to.as_ref());
                event["type"] = json!("m.room.encrypted");
            }
        }
        out.push(serde_json::to_vec(&body)?);
    }
    Ok(out)
}

/// Serves the encrypted pages (and an empty state) like the benchmark responder does.
struct Pages(Vec<Vec<u8>>);

impl Respond for Pages {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.url.path().ends_with("/state") {
            return ResponseTemplate::new(200).set_body_raw("[]", "application/json");
        }
        let p = bench::page_index(request).min(self.0.len() - 1);
        ResponseTemplate::new(200).set_body_raw(self.0[p].clone(), "application/json")
    }
}

async fn encrypted_homeserver(pages: usize) -> BenchResult<MockHomeserver> {
    let mut senders: Vec<Sender> = (0..SESSIONS).map(|_| Sender::new()).collect();
    // Each session is exported at index 0 before it encrypts anything.
    let public = vodozemac_public_key();
    let mut sessions = serde_json::Map::new();
    for s in &mut senders {
        sessions.insert(s.session_id(), s.backed_up(&public, 0)?);
    }
    let bodies = encrypted_pages(pages, &mut senders)?;
    let hs = MockHomeserver::start_unrecorded().await;
    let server = hs.server();
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/room_keys/version"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": { "public_key": public.to_base64() }, "count": SESSIONS, "etag": "1", "version": "1",
        })))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/account/whoami"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "user_id": "@bench:tchap.test" })))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/_matrix/client/v3/user/.*/account_data/.*$"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({ "errcode": "M_NOT_FOUND", "error": "none" })),
        )
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/_matrix/client/v3/room_keys/keys/.*$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "sessions": sessions })))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET")).respond_with(Pages(bodies)).with_priority(5).mount(server).await;
    Ok(hs)
}

fn vodozemac_public_key() -> vodozemac::Curve25519PublicKey {
    vodozemac::Curve25519PublicKey::from(&vodozemac::Curve25519SecretKey::from_slice(&BACKUP_KEY))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> BenchResult {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let pages = env_or("ARGUS_BENCH_PAGES", 100).max(1);
    let runs = env_or("ARGUS_BENCH_RUNS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (plain, _) = rt.block_on(MockHomeserver::start_bench(pages, true));
    let encrypted = rt.block_on(encrypted_homeserver(pages))?;
    let viewer = Viewer::new(
        "bench".parse()?,
        "bench-org".parse()?,
        Classification::Secret,
        [Scope::Read, Scope::Ingest],
    );
    let dir = tempfile::tempdir()?;
    let connector = || {
        Connector::new(ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            ..ConnectorConfig::default()
        })
    };
    let ingest =
        |hs: &MockHomeserver, key: Option<String>, name: String| -> BenchResult<(Duration, i64, u64)> {
            let services = Services::new(
                Store::open(&format!("sqlite://{}", dir.path().join(name).display()))?,
                connector()?,
            );
            let request = IngestRequest {
                homeserver_url: hs.uri(),
                access_token: AccessToken::new("syt_bench_token"),
                account: None,
                refresh_token: None,
                oauth_client_id: None,
                since: None,
                room_id: bench::ROOM.to_owned(),
                classification: Classification::Restricted,
                max_messages: Some(i64::from(HARD_MAX_MESSAGES)),
                recovery_key: key.map(Secret::new),
                reach: argus_graphql::ingest::Reach::Current,
                trigger: argus_graphql::ingest::Trigger::Manual,
                follow_upgrades: false,
            };
            let t = Instant::now();
            let done = rt.block_on(ingest_room(&services.app, &viewer, request, &mut |_| {}))?;
            Ok((t.elapsed(), done.messages_stored, done.report.decrypted))
        };
    let (mut plain_t, mut enc_t) = (Vec::new(), Vec::new());
    let mut counts = (0, 0, 0);
    for r in 0..runs {
        // They take turns at going first (the second writer meets the first one's write-back).
        let key = Some(recovery_key_text(&BACKUP_KEY));
        let (p, e) = if r % 2 == 0 {
            let p = ingest(&plain, None, format!("plain-{r}.db"))?;
            (p, ingest(&encrypted, key, format!("enc-{r}.db"))?)
        } else {
            let e = ingest(&encrypted, key, format!("enc-{r}.db"))?;
            (ingest(&plain, None, format!("plain-{r}.db"))?, e)
        };
        if p.1 != e.1 {
            return Err(format!("plaintext stored {} messages, encrypted {}", p.1, e.1).into());
        }
        counts = (p.1, e.1, e.2);
        plain_t.push(p.0);
        enc_t.push(e.0);
    }
    let (p, e) = (median(plain_t), median(enc_t));
    println!(
        "{} events ({pages} pages), {} messages stored each, {} events decrypted from {SESSIONS} backed-up sessions; median of {runs} runs",
        pages * bench::PAGE_EVENTS,
        counts.0,
        counts.2
    );
    println!("  plaintext  {:>8.1} ms", p.as_secs_f64() * 1000.0);
    println!("  encrypted  {:>8.1} ms", e.as_secs_f64() * 1000.0);
    println!("  encrypted / plaintext throughput: {:.2}× (target ≥ 0.5×)", p.as_secs_f64() / e.as_secs_f64());
    Ok(())
}
