//! Messages that arrived end-to-end encrypted, as every reader answers them: a decrypted message
//! is `encrypted: true, decrypted: true` in a room's messages (answered in one pass or field by
//! field), in a room's own list and in search results, also when its row was written by a
//! release that stored it as never encrypted.

use argus_domain::{MessageRecord, RoomSnapshot};
use serde_json::{Value, json};

use crate::{
    harness::{ALL, Harness, Secret, TopSecret, ok, viewer},
    threats::sqlite3,
};

const ROOM: &str = "!chiffre:tchap.test";

fn message(n: i64, body: Option<&str>, encrypted: bool, decrypted: bool) -> MessageRecord {
    let sent_at =
        time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000) + time::Duration::minutes(n);
    let mut m = MessageRecord::text(
        format!("$m{n}:tchap.test").parse().unwrap_or_else(|e| panic!("{e}")),
        "@agent:tchap.test".parse().unwrap_or_else(|e| panic!("{e}")),
        body.unwrap_or_default(),
        sent_at,
    );
    if body.is_none() {
        (m.msgtype, m.body) = (None, None);
    }
    (m.encrypted, m.decrypted) = (encrypted, decrypted);
    m
}

fn room() -> RoomSnapshot {
    RoomSnapshot {
        name: Some("Cellule chiffrée".into()),
        member_count: 2,
        encrypted: true,
        messages: vec![
            message(0, Some("rendez-vous déchiffré"), true, true),
            // As an earlier release of the connector handed a decrypted message over.
            message(1, Some("rendez-vous ancien"), false, true),
            message(2, None, true, false),
            message(3, Some("rendez-vous en clair"), false, false),
        ],
        ..RoomSnapshot::new(
            ROOM.parse().unwrap_or_else(|e| panic!("{e}")),
            "https://matrix.tchap.test".parse().unwrap_or_else(|e| panic!("{e}")),
        )
    }
}

/// (eventId, encrypted, decrypted) of each node of `edges`, in order.
fn flags(edges: &Value) -> Vec<(String, bool, bool)> {
    edges
        .as_array()
        .unwrap_or_else(|| panic!("edges: {edges}"))
        .iter()
        .map(|e| {
            let n = &e["node"];
            (
                n["eventId"].as_str().unwrap_or_default().to_owned(),
                n["encrypted"] == true,
                n["decrypted"] == true,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_decrypted_message_reads_as_encrypted_and_decrypted_everywhere() {
    let h = Harness::new().await;
    let top = viewer("dgsi", TopSecret, &ALL);
    h.store_snapshot(&top, Secret, room()).await;
    // A row written by a release that stored decrypted messages as never encrypted (skipped,
    // loudly, without the sqlite3 shell).
    sqlite3(&h, "UPDATE messages SET encrypted = FALSE WHERE event_id = '$m1:tchap.test'");

    let want = |ids: &[i64]| -> Vec<(String, bool, bool)> {
        let all = [(true, true), (true, true), (true, false), (false, false)];
        ids.iter().map(|&i| (format!("$m{i}:tchap.test"), all[i as usize].0, all[i as usize].1)).collect()
    };
    let vars = json!({ "room": ROOM });
    // Answered in one pass (a plain selection), and field by field (through a fragment).
    let plain = "query($room: String!) { tchapMessages(roomId: $room, first: 10) { edges { node { eventId encrypted decrypted } } } }";
    let fields = "query($room: String!) { tchapMessages(roomId: $room, first: 10) { edges { node { ...F } } } } \
                  fragment F on TchapMessage { eventId encrypted decrypted }";
    for doc in [plain, fields] {
        let data = ok(h.run(&top, doc, vars.clone()).await);
        assert_eq!(flags(&data["tchapMessages"]["edges"]), want(&[0, 1, 2, 3]), "{doc}");
    }
    let own = "query($room: String!) { tchapRoom(roomId: $room) { messages(first: 10) { edges { node { eventId encrypted decrypted } } } } }";
    let data = ok(h.run(&top, own, vars).await);
    assert_eq!(flags(&data["tchapRoom"]["messages"]["edges"]), want(&[0, 1, 2, 3]));

    let search = "query($q: String!) { tchapSearch(query: $q, first: 10) { edges { node { eventId encrypted decrypted } } } }";
    let data = ok(h.run(&top, search, json!({ "q": "rendez-vous" })).await);
    let mut found = flags(&data["tchapSearch"]["edges"]);
    found.sort();
    assert_eq!(found, want(&[0, 1, 3]));
}
