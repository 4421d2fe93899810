//! `TchapRoom`'s account of what Tchap says about a room (retention, retention risk, access
//! rule, external members, encryption, room version), and `ingestTchapRoom` with `since`,
//! against a real Synapse.

use std::time::Duration;

use argus_domain::Scope;
use argus_matrix::ConnectorConfig;
use argus_testkit::synapse::synapse;
use serde_json::{Value, json};

use crate::harness::{ALL, Harness, Restricted, error_code, ok, viewer};

const ROOM: &str = r"
query($roomId: String!) {
  tchapRoom(roomId: $roomId) {
    encrypted roomVersion accessRule externalMemberCount memberCount
    retention { maxLifetime minLifetime } retentionRisk
    historyComplete historySince messageCount
  }
}";

const INGEST: &str = r"
mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) { messagesStored room { historyComplete historySince messageCount } }
}";

/// A harness reading the test Synapse, which counts members of `external` as external.
async fn harness(external: Vec<String>) -> Harness {
    Harness::with_connector(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        external_homeservers: external,
        ..ConnectorConfig::default()
    })
    .await
}

#[tokio::test]
async fn a_room_shows_what_its_state_says() {
    let Some(server) = synapse() else { return };
    let alice = server.register("alice").await.unwrap();
    let bob = server.register("bob").await.unwrap();
    let room = alice
        .create_room_with(&json!({
            "preset": "private_chat",
            "initial_state": [
                {"type": "m.room.retention", "state_key": "", "content": {"max_lifetime": 604_800_000_u64, "min_lifetime": 86_400_000}},
                {"type": "im.vector.room.access_rules", "state_key": "", "content": {"rule": "unrestricted"}},
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            ],
        }))
        .await
        .unwrap();
    alice.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();
    // Every user of the test Synapse shares its server name: named as external, both count.
    let server_name = alice.user_id.split_once(':').unwrap().1.to_owned();
    let h = harness(vec![server_name]).await;
    let analyst = viewer("dgsi", Restricted, &ALL);
    ok(h.ingest_with(
        &analyst,
        json!({"homeserverUrl": server.base_url(), "accessToken": alice.access_token, "roomId": room, "classification": "RESTRICTED"}),
    )
    .await);
    let shown = ok(h.run(&analyst, ROOM, json!({"roomId": room})).await)["tchapRoom"].clone();
    assert_eq!(shown["encrypted"], true);
    assert!(shown["roomVersion"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(shown["accessRule"], "unrestricted");
    assert_eq!((shown["memberCount"].as_i64(), shown["externalMemberCount"].as_i64()), (Some(2), Some(2)));
    assert_eq!(shown["retention"], json!({"maxLifetime": 604_800_000.0, "minLifetime": 86_400_000.0}));
    assert_eq!(shown["retentionRisk"], true, "no watch keeps it: {shown}");

    // Read at a lower clearance or by another organisation: not there at all.
    for other in
        [viewer("dgsi", argus_domain::Classification::Unclassified, &ALL), viewer("dgse", Restricted, &ALL)]
    {
        assert_eq!(ok(h.run(&other, ROOM, json!({"roomId": room})).await)["tchapRoom"], Value::Null);
    }
    // Without the read scope: refused.
    let no_read = viewer("dgsi", Restricted, &[Scope::Ingest]);
    assert!(error_code(&h.run(&no_read, ROOM, json!({"roomId": room})).await).is_some());
}

#[tokio::test]
async fn an_ingestion_since_a_date_stores_only_what_was_sent_since() {
    let Some(server) = synapse() else { return };
    let alice = server.register("alice").await.unwrap();
    let room = alice.create_room(Some("Depuis"), None, false).await.unwrap();
    alice.send_texts(&room, "avant", 3, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice.send_texts(&room, "après", 2, 1).await.unwrap();
    let since_text = since.format(&time::format_description::well_known::Rfc3339).unwrap();

    let h = harness(Vec::new()).await;
    let analyst = viewer("dgsi", Restricted, &ALL);
    let input = json!({
        "homeserverUrl": server.base_url(), "accessToken": alice.access_token, "roomId": room,
        "classification": "RESTRICTED", "since": since_text,
    });
    let done = ok(h.run(&analyst, INGEST, json!({"input": input})).await)["ingestTchapRoom"].clone();
    assert_eq!(done["messagesStored"], 2, "{done}");
    assert_eq!(done["room"]["messageCount"], 2);
    assert_eq!(done["room"]["historyComplete"], true);
    let shown_since = done["room"]["historySince"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(shown_since, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(argus_domain::to_unix_ms(parsed), argus_domain::to_unix_ms(since));
}

const HISTORY: &str = r"
query($roomId: String!, $first: Int, $after: String) {
  tchapRoom(roomId: $roomId) {
    accessRule retention { maxLifetime }
    stateHistory(first: $first, after: $after) {
      totalCount pageInfo { hasNextPage endCursor }
      edges { cursor node {
        observedAt name topic encrypted roomVersion accessRule externalMemberCount
        retention { maxLifetime minLifetime }
      } }
    }
  }
}";

#[tokio::test]
async fn a_room_keeps_its_history_of_state() {
    let Some(server) = synapse() else { return };
    let alice = server.register("alice").await.unwrap();
    let room = alice
        .create_room_with(&json!({
            "preset": "private_chat",
            "name": "Cellule",
            "initial_state": [
                {"type": "m.room.retention", "state_key": "", "content": {"max_lifetime": 604_800_000_u64}},
                {"type": "im.vector.room.access_rules", "state_key": "", "content": {"rule": "restricted"}},
            ],
        }))
        .await
        .unwrap();
    alice.send_text(&room, "avant").await.unwrap();
    let h = harness(Vec::new()).await;
    let analyst = viewer("dgsi", Restricted, &ALL);
    let ingest = json!({"homeserverUrl": server.base_url(), "accessToken": alice.access_token, "roomId": room, "classification": "RESTRICTED"});
    ok(h.ingest_with(&analyst, ingest.clone()).await);
    // Read again unchanged: the history keeps one entry.
    ok(h.ingest_with(&analyst, ingest.clone()).await);
    let history = |shown: &Value| shown["tchapRoom"]["stateHistory"].clone();
    let once = ok(h.run(&analyst, HISTORY, json!({"roomId": room})).await);
    assert_eq!(history(&once)["totalCount"], 1, "{once}");

    // The room opened to external accounts and its retention shortened.
    alice
        .set_state(
            &room,
            "m.room.retention",
            "",
            &json!({"max_lifetime": 86_400_000, "min_lifetime": 3_600_000}),
        )
        .await
        .unwrap();
    alice
        .set_state(&room, "im.vector.room.access_rules", "", &json!({"rule": "unrestricted"}))
        .await
        .unwrap();
    alice.send_text(&room, "après").await.unwrap();
    ok(h.ingest_with(&analyst, ingest).await);

    let shown = ok(h.run(&analyst, HISTORY, json!({"roomId": room})).await);
    let states = history(&shown);
    assert_eq!(states["totalCount"], 2, "{shown}");
    let nodes: Vec<&Value> = states["edges"].as_array().unwrap().iter().map(|e| &e["node"]).collect();
    let (new, old) = (nodes[0], nodes[1]);
    assert_eq!(new["accessRule"], "unrestricted");
    assert_eq!(new["retention"], json!({"maxLifetime": 86_400_000.0, "minLifetime": 3_600_000.0}));
    assert_eq!(old["accessRule"], "restricted");
    assert_eq!(old["retention"], json!({"maxLifetime": 604_800_000.0, "minLifetime": null}));
    for node in [new, old] {
        assert_eq!((node["name"].as_str(), node["encrypted"].as_bool()), (Some("Cellule"), Some(false)));
        assert!(node["roomVersion"].as_str().is_some_and(|v| !v.is_empty()));
        assert_eq!(node["externalMemberCount"], 0);
    }
    assert!(new["observedAt"].as_str() >= old["observedAt"].as_str(), "newest first");
    // The room's own fields show the latest.
    assert_eq!(shown["tchapRoom"]["accessRule"], "unrestricted");

    // Paged one at a time with opaque cursors: newest, then the one before.
    let first = ok(h.run(&analyst, HISTORY, json!({"roomId": room, "first": 1})).await);
    let page = history(&first);
    assert_eq!(
        (page["pageInfo"]["hasNextPage"].as_bool(), page["edges"][0]["node"]["accessRule"].as_str()),
        (Some(true), Some("unrestricted"))
    );
    let cursor = page["pageInfo"]["endCursor"].as_str().unwrap();
    assert!(!cursor.contains('{') && cursor.len() > 20, "opaque: {cursor}");
    let next = ok(h.run(&analyst, HISTORY, json!({"roomId": room, "first": 1, "after": cursor})).await);
    let page = history(&next);
    assert_eq!(
        (page["pageInfo"]["hasNextPage"].as_bool(), page["edges"][0]["node"]["accessRule"].as_str()),
        (Some(false), Some("restricted"))
    );
    // Another organisation, even with a cursor of this history: no room, so no history.
    let other = viewer("dgse", Restricted, &ALL);
    let refused = h.run(&other, HISTORY, json!({"roomId": room, "first": 1, "after": cursor})).await;
    assert_eq!(ok(refused.clone())["tchapRoom"], Value::Null, "the room is not theirs: {refused}");
    // At a lower clearance: no room, so no history.
    let low = viewer("dgsi", argus_domain::Classification::Unclassified, &ALL);
    assert_eq!(ok(h.run(&low, HISTORY, json!({"roomId": room})).await)["tchapRoom"], Value::Null);
}
