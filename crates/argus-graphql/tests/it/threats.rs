//! Adversarial cases of the threat model seen through the GraphQL layer: refused homeserver
//! URLs, an organisation smuggled in as an argument, soft logout, a token that expires between
//! fetch and commit, and store failures behind a generic message.

use argus_domain::Scope;
use argus_matrix::ConnectorConfig;
use argus_testkit::homeserver::MATRIX_TOKEN;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path_regex, query_param},
};

use crate::harness::{ALL, Harness, Restricted, Secret, TopSecret, error_code, ok, viewer};

const AUDIT: &str = r"{ tchapIngestions(first: 100) { totalCount edges { node { outcome error roomId homeserverUrl messageCount } } } }";

const ROOM: &str = "!salle:tchap.test";

async fn trail(h: &Harness, org: &str) -> Value {
    ok(h.run(&viewer(org, TopSecret, &[Scope::Audit]), AUDIT, json!({})).await)["tchapIngestions"].clone()
}

async fn room_count(h: &Harness, org: &str) -> Value {
    ok(h.run(&viewer(org, TopSecret, &[Scope::Read]), "{ tchapRooms { totalCount } }", json!({})).await)
        ["tchapRooms"]["totalCount"]
        .clone()
}

fn input(homeserver: &str, room: &str) -> Value {
    json!({ "homeserverUrl": homeserver, "accessToken": MATRIX_TOKEN, "roomId": room, "classification": "RESTRICTED" })
}

/// A listener that records every request and answers none usefully: no URL below may reach it.
async fn listener() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(404)).mount(&server).await;
    server
}

/// Ingests with each URL and checks it was refused with `code` and stored nothing; a policy
/// refusal is audited as FAILED under the URL's origin, a malformed URL (`INVALID_INPUT`) is
/// counted and not audited.
async fn assert_refused_and_audited(h: &Harness, org: &str, cases: &[(String, &str)]) {
    let caller = viewer(org, Secret, &ALL);
    for (url, code) in cases {
        let response = h.ingest_with(&caller, input(url, ROOM)).await;
        assert_eq!(error_code(&response), Some(*code), "{url}: {response:#}");
        assert!(response["data"].is_null(), "{url}: {response:#}");
    }
    let audited: Vec<_> = cases.iter().filter(|(_, code)| *code != "INVALID_INPUT").collect();
    let trail = trail(h, org).await;
    assert_eq!(trail["totalCount"], audited.len(), "{trail:#}");
    let edges = trail["edges"].as_array().unwrap_or_else(|| panic!("{trail:#}"));
    // Newest first.
    for ((url, _), edge) in audited.iter().rev().zip(edges) {
        let node = &edge["node"];
        assert_eq!(node["outcome"], "FAILED", "{url}: {node}");
        // Only `scheme://host[:port]` as given: no user information, path or query (the trail
        // is append-only, so a credential written there could never be taken out again).
        let recorded = node["homeserverUrl"].as_str().unwrap_or_else(|| panic!("{node}"));
        for secret in ["secret", "alice@", "syt_pasted", "/_matrix", "_GET", "passwd", "(1)"] {
            assert!(!recorded.contains(secret), "{secret} is in the audit trail: {node}");
        }
        let expected = match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                format!("{scheme}://{}", authority.rsplit('@').next().unwrap_or(""))
            }
            // Not a URL: its scheme alone.
            None => url.split_inclusive(':').next().unwrap_or("").to_owned(),
        };
        assert_eq!(recorded, expected, "{url}");
        assert_eq!(node["roomId"], ROOM, "{node}");
        assert_eq!(node["messageCount"], 0, "{node}");
        assert!(node["error"].as_str().is_some_and(|e| !e.is_empty()), "{url}: {node}");
    }
    assert!(!trail.to_string().contains(MATRIX_TOKEN));
    assert_eq!(room_count(h, org).await, 0);
}

#[tokio::test]
async fn refused_homeserver_urls_are_audited_failures_and_never_connected() {
    let live = listener().await;
    let port = live.address().port();
    // The default policy: no exception, so the listener's loopback address is refused in every
    // spelling that would otherwise reach it.
    let strict = Harness::with_connector(ConnectorConfig::default()).await;
    let policy = "OUTBOUND_POLICY";
    let invalid = "INVALID_INPUT";
    let cases: Vec<(String, &str)> = vec![
        (format!("http://127.0.0.1:{port}"), policy),
        (format!("https://127.0.0.1:{port}"), policy),
        (format!("https://2130706433:{port}"), policy),
        (format!("https://0x7f000001:{port}"), policy),
        (format!("https://0177.0.0.1:{port}"), policy),
        (format!("https://127.1:{port}"), policy),
        (format!("https://[::ffff:127.0.0.1]:{port}"), policy),
        (format!("https://127.0.0.1:{port}/_matrix/x?access_token=syt_pasted#frag"), invalid),
        (format!("https://[::ffff:7f00:1]:{port}"), policy),
        (format!("https://0.0.0.0:{port}"), policy),
        (format!("https://0:{port}"), policy),
        (format!("https://[::]:{port}"), policy),
        ("https://[::1]".to_owned(), policy),
        ("https://10.0.0.1".to_owned(), policy),
        ("https://167772161".to_owned(), policy),
        ("https://172.16.0.1".to_owned(), policy),
        ("https://192.168.1.1".to_owned(), policy),
        ("https://169.254.169.254".to_owned(), policy),
        ("https://2852039166".to_owned(), policy),
        ("https://[::ffff:169.254.169.254]".to_owned(), policy),
        ("https://[fe80::1]".to_owned(), policy),
        ("https://[fd00::1]".to_owned(), policy),
        (format!("https://user:secret@127.0.0.1:{port}"), invalid),
        ("https://user:secret@matrix.agent.tchap.gouv.fr".to_owned(), invalid),
        ("https://alice@matrix.agent.tchap.gouv.fr".to_owned(), invalid),
        (format!("ftp://127.0.0.1:{port}"), invalid),
        (format!("gopher://127.0.0.1:{port}/_GET"), invalid),
        ("file:///etc/passwd".to_owned(), invalid),
        ("javascript:alert(1)".to_owned(), invalid),
    ];
    assert_refused_and_audited(&strict, "dgsi", &cases).await;

    // With the listener's address on the exception list, only the refusals that do not depend
    // on the address are left to stop these.
    let exempt = Harness::new().await;
    let cases: Vec<(String, &str)> = vec![
        (format!("http://user:secret@127.0.0.1:{port}"), invalid),
        (format!("http://alice@127.0.0.1:{port}"), invalid),
        (format!("ftp://127.0.0.1:{port}"), invalid),
        (format!("https://10.0.0.1:{port}"), policy),
    ];
    assert_refused_and_audited(&exempt, "dgsi", &cases).await;

    let received = live.received_requests().await.unwrap_or_default();
    assert!(received.is_empty(), "a refused URL reached the listener: {:?}", received[0].url);
}

#[tokio::test]
async fn an_organisation_passed_as_an_argument_or_input_field_is_never_trusted() {
    let h = Harness::new().await;
    h.hs.room(ROOM, 2);
    let dgsi = viewer("dgsi", Secret, &ALL);
    // Arguments the contract does not have are refused by validation, before any resolver.
    for query in [
        "{ tchapRooms(org: \"anssi\") { totalCount } }",
        "{ tchapRooms(orgId: \"anssi\") { totalCount } }",
        "{ tchapRoom(roomId: \"!a:b\", org: \"anssi\") { roomId } }",
        "{ tchapMessages(roomId: \"!a:b\", tenant: \"anssi\") { totalCount } }",
        "{ tchapStats(org: \"anssi\") { totalRooms } }",
        "{ tchapIngestions(org: \"anssi\") { totalCount } }",
    ] {
        let response = h.run(&dgsi, query, json!({})).await;
        assert!(response["errors"].is_array() && response["data"].is_null(), "{query}: {response:#}");
    }
    let literal = format!(
        "mutation {{ ingestTchapRoom(input: {{ homeserverUrl: \"{}\", accessToken: \"{MATRIX_TOKEN}\", \
         roomId: \"{ROOM}\", classification: RESTRICTED, org: \"anssi\" }}) {{ messagesStored }} }}",
        h.hs.uri()
    );
    let response = h.run(&dgsi, &literal, json!({})).await;
    assert!(response["errors"].is_array() && response["data"].is_null(), "{response:#}");
    assert_eq!(trail(&h, "dgsi").await["totalCount"], 0, "a refused document ran the mutation");

    // The same field in variables: whether the server refuses it or ignores it, the room and
    // its audit record belong to the token's organisation only.
    let mut smuggled = input(&h.hs.uri(), ROOM);
    smuggled["org"] = json!("anssi");
    smuggled["orgId"] = json!("anssi");
    let response = h.ingest_with(&dgsi, smuggled).await;
    for org in ["anssi", "dgsi"] {
        let reader = viewer(org, TopSecret, &[Scope::Read]);
        let room = ok(h
            .run(&reader, "query($r: String!) { tchapRoom(roomId: $r) { roomId } }", json!({ "r": ROOM }))
            .await);
        let trail = trail(&h, org).await;
        if org == "anssi" || response["errors"].is_array() {
            assert!(room["tchapRoom"].is_null(), "{org} got the room: {response:#}");
            assert_eq!(room_count(&h, org).await, 0, "{org}");
            assert_eq!(trail["totalCount"], 0, "{org}: {trail:#}");
        } else {
            assert_eq!(room["tchapRoom"]["roomId"], ROOM, "{response:#}");
            assert_eq!(trail["totalCount"], 1, "{trail:#}");
        }
    }
}

fn matrix_error(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

fn state_path() -> wiremock::matchers::PathRegexMatcher {
    path_regex(r"^/_matrix/client/v3/rooms/[^/]+/state$")
}

fn messages_path() -> wiremock::matchers::PathRegexMatcher {
    path_regex(r"^/_matrix/client/v3/rooms/[^/]+/messages$")
}

/// Answers the room's `/state` with [`state`].
async fn mount_state(hs: &MockServer) {
    Mock::given(method("GET"))
        .and(state_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(state()))
        .mount(hs)
        .await;
}

fn state() -> Value {
    json!([
        { "type": "m.room.create", "state_key": "", "event_id": "$create", "sender": "@alice:tchap.test",
          "origin_server_ts": 1_767_225_600_000_i64, "room_id": ROOM, "content": { "room_version": "10" } },
        { "type": "m.room.name", "state_key": "", "event_id": "$name", "sender": "@alice:tchap.test",
          "origin_server_ts": 1_767_225_600_000_i64, "room_id": ROOM, "content": { "name": "Salle" } },
    ])
}

/// Messages `from..to` (newest first), one minute apart.
fn chunk(from: i64, to: i64) -> Value {
    (from..to)
        .rev()
        .map(|i| {
            json!({
                "type": "m.room.message", "event_id": format!("$m{i}"), "sender": "@alice:tchap.test",
                "origin_server_ts": 1_767_225_600_000_i64 + i * 60_000, "room_id": ROOM,
                "content": { "msgtype": "m.text", "body": format!("message {i}") },
            })
        })
        .collect()
}

#[tokio::test]
async fn a_soft_logout_is_unauthorized_audited_and_not_retried() {
    let hs = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(matrix_error(
            401,
            json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "Token expired", "soft_logout": true }),
        ))
        .mount(&hs)
        .await;
    let h = Harness::new().await;
    let response = h.ingest_with(&viewer("dgsi", Secret, &ALL), input(&hs.uri(), ROOM)).await;
    assert_eq!(error_code(&response), Some("HOMESERVER_UNAUTHORIZED"), "{response:#}");
    assert!(response["data"].is_null(), "{response:#}");
    assert!(!response.to_string().contains(MATRIX_TOKEN));
    // The connector retries other failures (max_retries defaults to 5); not this one.
    assert!(ConnectorConfig::default().max_retries > 0);
    // The state and the first page are asked for at once; neither is asked for twice.
    let requests = hs.received_requests().await.unwrap_or_default();
    let to = |endpoint: &str| requests.iter().filter(|r| r.url.path().ends_with(endpoint)).count();
    assert_eq!(to("/state"), 1, "the refusal was retried");
    assert!(to("/messages") <= 1, "the refusal was retried");
    assert_eq!(requests.len(), to("/state") + to("/messages"));
    let trail = trail(&h, "dgsi").await;
    assert_eq!(trail["totalCount"], 1, "{trail:#}");
    let node = &trail["edges"][0]["node"];
    assert_eq!(node["outcome"], "FAILED");
    assert!(node["error"].as_str().is_some_and(|e| !e.is_empty()), "{node}");
    assert!(!trail.to_string().contains(MATRIX_TOKEN));
    assert_eq!(room_count(&h, "dgsi").await, 0);
}

#[tokio::test]
async fn a_token_expiring_mid_run_is_audited_and_stores_nothing_then_a_retry_succeeds() {
    let hs = MockServer::start().await;
    mount_state(&hs).await;
    // The first page arrives; the token is revoked before the second.
    Mock::given(method("GET"))
        .and(messages_path())
        .and(query_param("from", "t1"))
        .respond_with(matrix_error(
            401,
            json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "Token revoked", "soft_logout": true }),
        ))
        .with_priority(1)
        .mount(&hs)
        .await;
    Mock::given(method("GET"))
        .and(messages_path())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "start": "s0", "end": "t1", "chunk": chunk(5, 10) })),
        )
        .with_priority(2)
        .mount(&hs)
        .await;
    let h = Harness::new().await;
    let alice = viewer("dgsi", Secret, &ALL);
    let response = h.ingest_with(&alice, input(&hs.uri(), ROOM)).await;
    assert_eq!(error_code(&response), Some("HOMESERVER_UNAUTHORIZED"), "{response:#}");
    let pages = hs
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().ends_with("/messages"))
        .count();
    assert_eq!(pages, 2, "the first page was read before the failure, and the failure not retried");
    // Nothing of the page already fetched was stored.
    assert_eq!(room_count(&h, "dgsi").await, 0);
    let trail_after_failure = trail(&h, "dgsi").await;
    assert_eq!(trail_after_failure["totalCount"], 1);
    assert_eq!(trail_after_failure["edges"][0]["node"]["outcome"], "FAILED");

    // With a fresh token the same call goes through and stores every message once.
    hs.reset().await;
    mount_state(&hs).await;
    Mock::given(method("GET"))
        .and(messages_path())
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "start": "s0", "chunk": chunk(0, 10) })),
        )
        .mount(&hs)
        .await;
    let data = ok(h.ingest_with(&alice, input(&hs.uri(), ROOM)).await);
    let p = &data["ingestTchapRoom"];
    assert_eq!(p["messagesStored"], 10, "{p}");
    assert_eq!(p["room"]["messageCount"], 10, "{p}");
    assert_eq!(p["ingestion"]["outcome"], "SUCCEEDED");
    assert_eq!(p["ingestion"]["seq"], 2);
    assert_eq!(room_count(&h, "dgsi").await, 1);
    let classification = ok(h
        .run(
            &viewer("dgsi", Restricted, &[Scope::Read]),
            "query($r: String!) { tchapRoom(roomId: $r) { classification } }",
            json!({ "r": ROOM }),
        )
        .await);
    assert_eq!(classification["tchapRoom"]["classification"], "RESTRICTED");
}

/// Runs `sql` on the harness's SQLite file with the `sqlite3` shell, as someone with access to
/// the file would; `None` (with a loud message) when the shell is not installed.
pub(crate) fn sqlite3(h: &Harness, sql: &str) -> Option<()> {
    let output = match std::process::Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(h.database())
        .arg(sql)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: the sqlite3 shell is not installed");
            return None;
        }
        Err(e) => panic!("sqlite3: {e}"),
    };
    assert!(output.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&output.stderr));
    Some(())
}

/// The first error of `response` is the generic internal error, with nothing of `leaks` in the
/// whole response.
fn assert_generic(response: &Value, h: &Harness, leaks: &[&str]) {
    assert_eq!(error_code(response), Some("INTERNAL"), "{response:#}");
    assert_eq!(response["errors"][0]["message"], "internal error", "{response:#}");
    // Nothing of the failed field: no data, or null in place of a nullable field.
    let data = &response["data"];
    assert!(
        data.is_null() || data.as_object().is_some_and(|o| o.values().all(Value::is_null)),
        "{response:#}"
    );
    let text = response.to_string();
    let dir = h.database().parent().map(|d| d.display().to_string()).unwrap_or_default();
    for leak in leaks.iter().copied().chain([dir.as_str(), "argus.db", "sqlite", "SQLITE", MATRIX_TOKEN]) {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
}

#[tokio::test]
async fn store_failures_are_a_generic_internal_error() {
    let h = Harness::new().await;
    let alice = viewer("dgsi", Secret, &ALL);
    h.hs.room("!first:tchap.test", 2);
    ok(h.ingest(&alice, "!first:tchap.test", Restricted).await);

    // A write that fails inside the transaction (a trigger raising with SQL, a path and a
    // table name in its message).
    let Some(()) = sqlite3(
        &h,
        "CREATE TRIGGER poison BEFORE INSERT ON messages BEGIN \
         SELECT RAISE(ABORT, 'poisoned: INSERT INTO messages at /var/lib/argus/argus.db'); END;",
    ) else {
        return;
    };
    h.hs.room("!second:tchap.test", 2);
    let response = h.ingest(&alice, "!second:tchap.test", Restricted).await;
    assert_generic(&response, &h, &["poisoned", "INSERT", "/var/lib", "trigger"]);
    let trail = trail(&h, "dgsi").await;
    assert_eq!(trail["totalCount"], 2, "{trail:#}");
    let failed = &trail["edges"][0]["node"];
    assert_eq!(failed["outcome"], "FAILED", "{failed}");
    assert_eq!(failed["error"], "internal error", "{failed}");
    assert_eq!(room_count(&h, "dgsi").await, 1, "the failed ingestion stored its room");

    // A stored row the domain rejects, read back.
    sqlite3(&h, "DROP TRIGGER poison; UPDATE rooms SET homeserver_url = 'ftp://evil.example/db';");
    let reader = viewer("dgsi", TopSecret, &[Scope::Read]);
    for query in [
        "{ tchapRooms { edges { node { roomId homeserverUrl } } } }",
        "{ tchapRoom(roomId: \"!first:tchap.test\") { roomId homeserverUrl } }",
    ] {
        let response = h.run(&reader, query, json!({})).await;
        assert_generic(&response, &h, &["evil", "ftp:", "homeserver_url", "SELECT"]);
    }
}

/// `n` aliased ingestions of distinct rooms in one document.
fn aliased_ingestions(h: &Harness, n: usize) -> String {
    let fields: String = (0..n)
        .map(|i| {
            format!(
                "a{i}: ingestTchapRoom(input: {{ homeserverUrl: \"{}\", accessToken: \"{MATRIX_TOKEN}\", \
                 roomId: \"!alias{i}:tchap.test\", classification: RESTRICTED }}) {{ messagesStored }} ",
                h.hs.uri()
            )
        })
        .collect();
    format!("mutation {{ {fields} }}")
}

#[tokio::test]
async fn aliased_mutations_over_the_limits_are_refused_before_any_ingestion_runs() {
    let options = argus_graphql::SchemaOptions { max_fields: 40, ..argus_graphql::SchemaOptions::default() };
    let h = Harness::with_options(options).await;
    let alice = viewer("dgsi", Secret, &ALL);
    // Control: a few aliases run, each one audited.
    ok(h.run(&alice, &aliased_ingestions(&h, 2), json!({})).await);
    assert_eq!(trail(&h, "dgsi").await["totalCount"], 2);
    // Over the field limit: refused as a whole, no resolver ran (no audit record, no room).
    let response = h.run(&alice, &aliased_ingestions(&h, 30), json!({})).await;
    assert!(response["errors"].is_array() && response["data"].is_null(), "{response:#}");
    assert_eq!(trail(&h, "dgsi").await["totalCount"], 2, "an ingestion of the refused document ran");
    assert_eq!(room_count(&h, "dgsi").await, 2);
    // Over the default limits (fields and tokens) as well.
    let h = Harness::new().await;
    let response = h.run(&alice, &aliased_ingestions(&h, 400), json!({})).await;
    assert!(response["errors"].is_array() && response["data"].is_null(), "{response:#}");
    assert_eq!(trail(&h, "dgsi").await["totalCount"], 0, "an ingestion of the refused document ran");
}

#[tokio::test]
async fn a_busy_database_is_a_retryable_unavailable_error_and_the_next_call_succeeds() {
    let options = argus_store::StoreOptions {
        pool_size: 4,
        busy_timeout: std::time::Duration::from_millis(300),
        ..argus_store::StoreOptions::default()
    };
    let h = Harness::with_store_options(options).await;
    h.hs.room("!busy:tchap.test", 3);
    let alice = viewer("dgsi", Secret, &ALL);
    // Someone holds the write lock: a sqlite3 shell inside an endless write transaction.
    let Some(()) = sqlite3(&h, "SELECT 1;") else { return };
    let mut holder = std::process::Command::new("sqlite3")
        .arg(h.database())
        .arg("BEGIN IMMEDIATE; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c;")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    let locked = || {
        let probe = std::process::Command::new("sqlite3")
            .arg(h.database())
            .arg("BEGIN IMMEDIATE; ROLLBACK;")
            .output()
            .unwrap_or_else(|e| panic!("sqlite3: {e}"));
        !probe.status.success()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !locked() {
        assert!(std::time::Instant::now() < deadline, "the shell never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let response = h.ingest(&alice, "!busy:tchap.test", Restricted).await;
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(error_code(&response), Some("UNAVAILABLE"), "{response:#}");
    assert_eq!(response["errors"][0]["extensions"]["retryable"], true, "{response:#}");
    assert_eq!(response["errors"][0]["message"], "the service is temporarily unavailable", "{response:#}");
    let text = response.to_string();
    for leak in ["locked", "sqlite", "SQLITE", "argus.db", MATRIX_TOKEN] {
        assert!(!text.contains(leak), "{leak:?} in {text}");
    }
    // The FAILED record could not be written under the held lock either: it is retried in the
    // background and lands once the lock is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = trail(&h, "dgsi").await;
        if t["totalCount"] == 1 {
            let node = &t["edges"][0]["node"];
            assert_eq!(node["outcome"], "FAILED", "{t:#}");
            assert_eq!(node["roomId"], "!busy:tchap.test", "{t:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the failed ingestion was never audited: {t:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Nothing half-written, and once the lock is gone the same call goes through.
    assert_eq!(room_count(&h, "dgsi").await, 0);
    let data = ok(h.ingest(&alice, "!busy:tchap.test", Restricted).await);
    assert_eq!(data["ingestTchapRoom"]["messagesStored"], 3);
    assert_eq!(data["ingestTchapRoom"]["room"]["messageCount"], 3);
    let newest = &trail(&h, "dgsi").await["edges"][0]["node"];
    assert_eq!(newest["outcome"], "SUCCEEDED", "{newest}");
}

/// Nested connections multiply: `tchapRooms(first: 500) { … messages(first: 500) }` asks for
/// 250,500 items, and aliases add up. Such documents are refused with `LIMIT_EXCEEDED` before
/// the store is read; documents within the limit are answered.
#[tokio::test]
async fn nested_connections_are_bounded_by_a_cost_limit() {
    let h = Harness::new().await;
    h.hs.room("!cout:tchap.test", 3);
    let alice = viewer("dgsi", Secret, &ALL);
    ok(h.ingest(&alice, "!cout:tchap.test", Restricted).await);

    let nested = "{ tchapRooms(first: 500) { edges { node { messages(first: 500) { totalCount } } } } }";
    let response = h.run(&alice, nested, json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    assert!(response.to_string().contains("250500"), "{response:#}");

    // Through a variable, and through aliases that are each within the limit but not together.
    let by_variable =
        "query($n: Int) { tchapRooms(first: 100) { edges { node { messages(first: $n) { totalCount } } } } }";
    let response = h.run(&alice, by_variable, json!({ "n": 200 })).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    let aliases: String = (0..30)
        .map(|i| format!("a{i}: tchapMessages(roomId: \"!cout:tchap.test\", first: 500) {{ totalCount }} "))
        .collect();
    let response = h.run(&alice, &format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    let room = "{ tchapRoom(roomId: \"!cout:tchap.test\") { a: messages(first: 500) { totalCount } b: messages(first: 500) { totalCount } c: messages(first: 500) { totalCount } } }";
    let small = ok(h.run(&alice, room, json!({})).await);
    assert_eq!(small["tchapRoom"]["a"]["totalCount"], 3);

    // Within the limit: answered.
    let fine = "{ tchapRooms(first: 10) { edges { node { messages(first: 100) { totalCount } } } } }";
    let data = ok(h.run(&alice, fine, json!({})).await);
    assert_eq!(data["tchapRooms"]["edges"][0]["node"]["messages"]["totalCount"], 3);
}
