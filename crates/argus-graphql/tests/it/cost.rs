//! The cost limit of a request wherever a document asks for items: connections under mutation
//! payloads, the versions of a message, and searches, each charged by the most it may read
//! (a search by the matches it ranks), before anything is read or run.

use argus_domain::Scope;
use argus_testkit::homeserver::MATRIX_TOKEN;
use serde_json::{Value, json};

use crate::harness::{ALL, Harness, Restricted, Secret, TopSecret, error_code, ok, viewer};

const ROOM: &str = "!cout:tchap.test";

async fn trail_count(h: &Harness) -> Value {
    let audit = viewer("dgsi", TopSecret, &[Scope::Audit]);
    ok(h.run(&audit, "{ tchapIngestions { totalCount } }", json!({})).await)["tchapIngestions"]["totalCount"]
        .clone()
}

async fn room_count(h: &Harness) -> Value {
    let reader = viewer("dgsi", TopSecret, &[Scope::Read]);
    ok(h.run(&reader, "{ tchapRooms { totalCount } }", json!({})).await)["tchapRooms"]["totalCount"].clone()
}

/// A harness holding `ROOM` (3 messages), and a caller with every scope.
async fn ingested() -> (Harness, argus_domain::Viewer) {
    let h = Harness::new().await;
    h.hs.room(ROOM, 3);
    let alice = viewer("dgsi", Secret, &ALL);
    ok(h.ingest(&alice, ROOM, Restricted).await);
    (h, alice)
}

/// The input of `ingestTchapRoom` for `room` on the harness's homeserver, inline.
fn input(h: &Harness, room: &str) -> String {
    format!(
        "{{ homeserverUrl: \"{}\", accessToken: \"{MATRIX_TOKEN}\", roomId: \"{room}\", classification: RESTRICTED }}",
        h.hs.uri()
    )
}

/// `n` aliased `messages(first: 500)` connections with their bodies.
fn aliased_messages(n: usize) -> String {
    (0..n).map(|i| format!("m{i}: messages(first: 500) {{ edges {{ node {{ body }} }} }} ")).collect()
}

/// Every error of `response` is `LIMIT_EXCEEDED`, and there is at least one.
fn all_limit_exceeded(response: &Value) -> usize {
    let errors = response["errors"].as_array().unwrap_or_else(|| panic!("no errors: {response:#}"));
    assert!(!errors.is_empty(), "{response:#}");
    for error in errors {
        assert_eq!(error["extensions"]["code"], "LIMIT_EXCEEDED", "{response:#}");
    }
    errors.len()
}

/// 30 aliased `messages(first: 500)` under `ingestTchapRoom { room { … } }` ask for 15,000
/// messages: the whole mutation is refused before any ingestion runs (the aliased ingestion
/// before it included), and the homeserver is never called. A payload within the limit is
/// answered.
#[tokio::test]
async fn connections_under_a_mutation_payload_are_charged_before_any_mutation_runs() {
    let h = Harness::new().await;
    h.hs.room(ROOM, 3);
    let alice = viewer("dgsi", Secret, &ALL);
    let document = format!(
        "mutation {{ control: ingestTchapRoom(input: {}) {{ messagesStored }} \
         big: ingestTchapRoom(input: {}) {{ room {{ {} }} }} }}",
        input(&h, "!control:tchap.test"),
        input(&h, ROOM),
        aliased_messages(30)
    );
    let response = h.run(&alice, &document, json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    assert!(response.to_string().contains("15002"), "{response:#}");
    assert!(response["data"].is_null(), "{response:#}");
    assert_eq!(h.hs.request_count().await, 0, "the homeserver was called");
    assert_eq!(trail_count(&h).await, 0, "an ingestion of the refused document ran");
    assert_eq!(room_count(&h).await, 0);

    // The rooms of a joined-rooms ingestion, each with its room's messages.
    let joined = format!(
        "mutation {{ ingestJoinedTchapRooms(input: {{ homeserverUrl: \"{}\", accessToken: \"{MATRIX_TOKEN}\", \
         classification: RESTRICTED }}) {{ rooms {{ roomId result {{ room {{ messages(first: 10) {{ totalCount }} }} }} }} }} }}",
        h.hs.uri()
    );
    let response = h.run(&alice, &joined, json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    assert_eq!(h.hs.request_count().await, 0, "the homeserver was called");
    assert_eq!(trail_count(&h).await, 0);

    // Within the limit: answered.
    let fine = format!(
        "mutation {{ ingestTchapRoom(input: {}) {{ room {{ {} }} }} }}",
        input(&h, ROOM),
        aliased_messages(3)
    );
    let data = ok(h.run(&alice, &fine, json!({})).await);
    let bodies = &data["ingestTchapRoom"]["room"]["m2"]["edges"];
    assert_eq!(bodies.as_array().map(Vec::len), Some(3), "{data:#}");
    assert_eq!(trail_count(&h).await, 1);
}

/// `versions` holds up to 100 versions per message: `tchapMessages(first: 100)` selecting them
/// asks for 100 × (1 + 100) = 10,100 items, through a fragment or a search alike.
#[tokio::test]
async fn versions_are_charged_at_their_longest() {
    let (h, alice) = ingested().await;

    let direct = format!(
        "{{ tchapMessages(roomId: \"{ROOM}\", first: 100) {{ edges {{ node {{ versions {{ body }} }} }} }} }}"
    );
    let response = h.run(&alice, &direct, json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    assert!(response.to_string().contains("10100"), "{response:#}");

    let fragment = format!(
        "query {{ tchapRoom(roomId: \"{ROOM}\") {{ messages(first: 100) {{ edges {{ node {{ ...V }} }} }} }} }} \
         fragment V on TchapMessage {{ eventId versions {{ body }} }}"
    );
    let response = h.run(&alice, &fragment, json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");

    let search = r#"{ tchapSearch(query: "message", first: 100) { edges { node { versions { body } } } } }"#;
    let response = h.run(&alice, search, json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");

    // Aliased lists add up: 50 × (1 + 2 × 100) is over the limit, 50 × (1 + 100) is not.
    let twice = format!(
        "{{ tchapMessages(roomId: \"{ROOM}\", first: 50) {{ edges {{ node {{ a: versions {{ body }} b: versions {{ body }} }} }} }} }}"
    );
    let response = h.run(&alice, &twice, json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    let once = format!(
        "{{ tchapMessages(roomId: \"{ROOM}\", first: 50) {{ edges {{ node {{ versions {{ body }} }} }} }} }}"
    );
    let data = ok(h.run(&alice, &once, json!({})).await);
    assert_eq!(data["tchapMessages"]["edges"].as_array().map(Vec::len), Some(3), "{data:#}");
}

/// Each search ranks up to 10,000 matches whatever its page: a request runs at most 5. Of 130
/// aliased searches (one result each), the ones past the fifth are refused without running, and
/// the request fails (its root fields are non-null).
#[tokio::test]
async fn searches_are_bounded_per_request() {
    let (h, alice) = ingested().await;
    let searches = |n: usize| -> String {
        let fields: String = (0..n)
            .map(|i| format!("s{i}: tchapSearch(query: \"message\", first: 1) {{ __typename }} "))
            .collect();
        format!("{{ {fields} }}")
    };

    let response = h.run(&alice, &searches(130), json!({})).await;
    assert_eq!(all_limit_exceeded(&response), 125, "{response:#}");
    let message = response["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("searches") && message.contains('5'), "{message}");
    assert!(response["data"].is_null(), "{response:#}");

    let data = ok(h.run(&alice, &searches(5), json!({})).await);
    assert_eq!(data.as_object().map(serde_json::Map::len), Some(5));
}

/// A document over the limit is refused before its resolver reads anything: with every stored
/// room unreadable, the answer is `LIMIT_EXCEEDED`, not the store's failure.
#[tokio::test]
async fn the_charge_comes_before_any_read() {
    let (h, alice) = ingested().await;
    // A stored row the domain rejects: any read of the room fails.
    let status = std::process::Command::new("sqlite3")
        .arg(h.database())
        .arg("UPDATE rooms SET homeserver_url = 'ftp://evil.example/db';")
        .status();
    match status {
        Ok(status) => assert!(status.success(), "sqlite3 failed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: the sqlite3 shell is not installed");
            return;
        }
        Err(e) => panic!("sqlite3: {e}"),
    }
    let control = format!("{{ tchapRoom(roomId: \"{ROOM}\") {{ roomId }} }}");
    assert_eq!(error_code(&h.run(&alice, &control, json!({})).await), Some("INTERNAL"));

    let costly = format!(
        "{{ tchapRoom(roomId: \"{ROOM}\") {{ roomId messages(first: 100) {{ edges {{ node {{ versions {{ body }} }} }} }} }} }}"
    );
    let response = h.run(&alice, &costly, json!({})).await;
    assert_eq!(all_limit_exceeded(&response), 1, "{response:#}");
}

/// A room's `stateHistory` is charged as a connection, at its default page of 20 when `first`
/// is left out: under `tchapRooms(first: 500)` it asks for 500 × (1 + 20) = 10,500 items,
/// refused; with `first: 18`, 500 × (1 + 18) = 9,500, answered.
#[tokio::test]
async fn state_history_is_charged_as_a_connection() {
    let (h, alice) = ingested().await;
    let rooms = |history: &str| {
        format!(
            "{{ tchapRooms(first: 500) {{ edges {{ node {{ {history} {{ edges {{ node {{ accessRule }} }} }} }} }} }} }}"
        )
    };
    let response = h.run(&alice, &rooms("stateHistory"), json!({})).await;
    assert_eq!(error_code(&response), Some("LIMIT_EXCEEDED"), "{response:#}");
    assert!(response.to_string().contains("10500"), "{response:#}");
    let data = ok(h.run(&alice, &rooms("stateHistory(first: 18)"), json!({})).await);
    let history = &data["tchapRooms"]["edges"][0]["node"]["stateHistory"]["edges"];
    assert_eq!(history.as_array().map(Vec::len), Some(1), "the room's first state: {data:#}");
}
