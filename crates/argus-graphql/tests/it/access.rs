//! The access journal: every read of content (a room's messages, a search) leaves an entry
//! with what it returned before the answer leaves; `tchapAccessLog` is gated like the audit
//! trail; a read whose entry cannot be written fails with `UNAVAILABLE`.

use argus_domain::Scope;
use serde_json::{Value, json};

use crate::harness::{Harness, Restricted, Secret, TopSecret, error_code, ok, viewer};

const ACCESS_LOG: &str = r"query($first: Int, $after: String, $actor: String, $room: String) {
  tchapAccessLog(first: $first, after: $after, actor: $actor, roomId: $room) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id actor action roomIds query itemCount classification at } }
  }
}";

const MESSAGES: &str = r"query($room: String!, $first: Int) {
  tchapMessages(roomId: $room, first: $first) { edges { node { body } } }
}";

const ROOM_MESSAGES: &str = r"query($room: String!) {
  tchapRoom(roomId: $room) { messages(first: 10) { edges { node { body } } } }
}";

const SEARCH: &str = r"query($q: String!) {
  tchapSearch(query: $q, first: 100) { edges { node { body } } }
}";

const METADATA: &str = r"{ tchapRooms { totalCount } tchapStats { totalRooms totalMessages } }";

fn nodes(data: &Value) -> Vec<Value> {
    data["tchapAccessLog"]["edges"]
        .as_array()
        .map(|edges| edges.iter().map(|e| e["node"].clone()).collect())
        .unwrap_or_default()
}

/// (action, roomIds, query, itemCount, classification) of each entry, newest first.
fn summary(data: &Value) -> Vec<(String, Value, Value, i64, String)> {
    nodes(data)
        .iter()
        .map(|n| {
            (
                n["action"].as_str().unwrap_or_default().to_owned(),
                n["roomIds"].clone(),
                n["query"].clone(),
                n["itemCount"].as_i64().unwrap_or(-1),
                n["classification"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `!s` holds 4 SECRET messages, `!r` 2 RESTRICTED ones (organisation `dgsi`).
async fn journaled() -> Harness {
    let h = crate::reads::two_tenants().await;
    let reader = viewer("dgsi", TopSecret, &[Scope::Read]);
    // Lists and statistics carry no content: not journaled.
    ok(h.run(&reader, METADATA, json!({})).await);
    let page = ok(h.run(&reader, MESSAGES, json!({ "room": "!s:tchap.test", "first": 3 })).await);
    assert_eq!(page["tchapMessages"]["edges"].as_array().map(Vec::len), Some(3));
    ok(h.run(&reader, ROOM_MESSAGES, json!({ "room": "!r:tchap.test" })).await);
    let found = ok(h.run(&reader, SEARCH, json!({ "q": "message" })).await);
    assert_eq!(found["tchapSearch"]["edges"].as_array().map(Vec::len), Some(6));
    h
}

#[tokio::test]
async fn every_read_of_content_is_journaled_with_what_it_returned() {
    let h = journaled().await;
    let auditor = viewer("dgsi", TopSecret, &[Scope::Audit]);
    let data = ok(h.run(&auditor, ACCESS_LOG, json!({})).await);
    assert_eq!(
        summary(&data),
        vec![
            (
                "SEARCH".into(),
                json!(["!r:tchap.test", "!s:tchap.test"]),
                json!("message"),
                6,
                "SECRET".into()
            ),
            ("READ_MESSAGES".into(), json!(["!r:tchap.test"]), Value::Null, 2, "RESTRICTED".into()),
            ("READ_MESSAGES".into(), json!(["!s:tchap.test"]), Value::Null, 3, "SECRET".into()),
        ],
        "{data:#}"
    );
    assert_eq!(data["tchapAccessLog"]["totalCount"], 3);
    let first = &nodes(&data)[0];
    assert_eq!(first["actor"], "agent@dgsi");
    let at = time::OffsetDateTime::parse(
        first["at"].as_str().unwrap_or_default(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("at: {e}"));
    assert!((time::OffsetDateTime::now_utc() - at).whole_minutes().abs() < 5, "{at}");

    // Filters: one room's reads, one actor's; pages newest first with cursors.
    let room = ok(h.run(&auditor, ACCESS_LOG, json!({ "room": "!r:tchap.test" })).await);
    assert_eq!(summary(&room).iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["SEARCH", "READ_MESSAGES"]);
    let nobody = ok(h.run(&auditor, ACCESS_LOG, json!({ "actor": "someone@else" })).await);
    assert_eq!(nobody["tchapAccessLog"]["totalCount"], 0);
    let page = ok(h.run(&auditor, ACCESS_LOG, json!({ "first": 2 })).await);
    assert_eq!(page["tchapAccessLog"]["pageInfo"]["hasNextPage"], true);
    let after = page["tchapAccessLog"]["pageInfo"]["endCursor"].clone();
    let rest = ok(h.run(&auditor, ACCESS_LOG, json!({ "first": 2, "after": after })).await);
    assert_eq!(summary(&rest), summary(&data)[2..].to_vec());
}

#[tokio::test]
async fn the_access_log_is_gated_like_the_audit_trail() {
    let h = journaled().await;
    // Another organisation sees none of it.
    let other = viewer("anssi", TopSecret, &[Scope::Audit]);
    let data = ok(h.run(&other, ACCESS_LOG, json!({})).await);
    assert_eq!(data["tchapAccessLog"]["totalCount"], 0);
    assert_eq!(nodes(&data), Vec::<Value>::new());
    // A lower clearance sees the entries filed at or below it only.
    let low = viewer("dgsi", Restricted, &[Scope::Audit]);
    let data = ok(h.run(&low, ACCESS_LOG, json!({})).await);
    assert_eq!(
        summary(&data),
        vec![("READ_MESSAGES".into(), json!(["!r:tchap.test"]), Value::Null, 2, "RESTRICTED".into())]
    );
    let secret = viewer("dgsi", Secret, &[Scope::Audit]);
    assert_eq!(ok(h.run(&secret, ACCESS_LOG, json!({})).await)["tchapAccessLog"]["totalCount"], 3);
    // Without tchap:audit, nothing.
    let reader = viewer("dgsi", TopSecret, &[Scope::Read, Scope::AuditChain]);
    assert_eq!(error_code(&h.run(&reader, ACCESS_LOG, json!({})).await), Some("FORBIDDEN"));
}

/// Makes every insert into the transparency log's tables fail, as a full or broken disk would.
pub(crate) fn refuse_log_writes(h: &Harness) -> Option<()> {
    let tables = std::process::Command::new("sqlite3")
        .arg(h.database())
        .arg("SELECT name FROM sqlite_master WHERE type = 'table' AND (name LIKE '%log%' OR name LIKE '%access%')")
        .output();
    let tables = match tables {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: the sqlite3 shell is not installed");
            return None;
        }
        Err(e) => panic!("sqlite3: {e}"),
    };
    let tables: Vec<&str> = tables.lines().filter(|t| !t.is_empty()).collect();
    assert!(!tables.is_empty(), "the store has no log table");
    for table in tables {
        crate::threats::sqlite3(
            h,
            &format!(
                "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
            ),
        )?;
    }
    Some(())
}

#[tokio::test]
async fn a_read_whose_entry_cannot_be_written_fails_unavailable_and_returns_nothing() {
    let h = crate::reads::two_tenants().await;
    if refuse_log_writes(&h).is_none() {
        return;
    }
    let reader = viewer("dgsi", TopSecret, &[Scope::Read]);
    for (query, variables) in [
        (MESSAGES, json!({ "room": "!s:tchap.test", "first": 3 })),
        (ROOM_MESSAGES, json!({ "room": "!r:tchap.test" })),
        (SEARCH, json!({ "q": "message" })),
    ] {
        let response = h.run(&reader, query, variables).await;
        assert_eq!(error_code(&response), Some("UNAVAILABLE"), "{response:#}");
        assert!(!response.to_string().contains("message 0"), "content returned: {response:#}");
    }
    // Reads without content are not journaled, so they still answer.
    ok(h.run(&reader, METADATA, json!({})).await);
}
