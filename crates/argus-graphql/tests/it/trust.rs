//! `TchapMessage.senderTrust`: what is known of each message's sending device, read back as it
//! was stored in a room's messages (answered in one pass or field by field), a room's own list,
//! search results and `tchapMessagesAdded`; a row written before devices existed reads as
//! unrecorded (`UNKNOWN_DEVICE` when it arrived encrypted, else `NOT_ENCRYPTED`); and the
//! clearance gate is unchanged.

use std::time::Duration;

use argus_domain::{MessageRecord, RoomSnapshot, Scope, SenderTrust};
use serde_json::{Value, json};

use crate::{
    harness::{ALL, Harness, Restricted, Secret, TopSecret, ok, viewer},
    subscription::{context, next_item, subscribe},
    threats::sqlite3,
};

const ROOM: &str = "!appareils:tchap.test";

/// Each message: its event id, whether it was decrypted, its trust as stored.
const MESSAGES: [(&str, Option<bool>, SenderTrust); 6] = [
    ("$verified:tchap.test", Some(true), SenderTrust::Verified),
    ("$unverified:tchap.test", Some(true), SenderTrust::UnverifiedDevice),
    ("$changed:tchap.test", Some(true), SenderTrust::IdentityChanged),
    ("$backup:tchap.test", Some(true), SenderTrust::UnknownDevice),
    // Stayed encrypted.
    ("$sealed:tchap.test", Some(false), SenderTrust::UnknownDevice),
    // Never encrypted.
    ("$plain:tchap.test", None, SenderTrust::NotEncrypted),
];

fn message(n: usize, event_id: &str, decrypted: Option<bool>, trust: SenderTrust) -> MessageRecord {
    let sent_at = time::OffsetDateTime::UNIX_EPOCH
        + time::Duration::days(20_000)
        + time::Duration::minutes(i64::try_from(n).unwrap_or_default());
    let mut m = MessageRecord::text(
        event_id.parse().unwrap_or_else(|e| panic!("{e}")),
        "@agent:tchap.test".parse().unwrap_or_else(|e| panic!("{e}")),
        format!("appareil {n}"),
        sent_at,
    );
    if decrypted == Some(false) {
        (m.msgtype, m.body) = (None, None);
    }
    (m.encrypted, m.decrypted, m.sender_trust) = (decrypted.is_some(), decrypted == Some(true), trust);
    m
}

fn room(room_id: &str, messages: Vec<MessageRecord>) -> RoomSnapshot {
    RoomSnapshot {
        name: Some("Appareils".into()),
        member_count: 2,
        encrypted: true,
        messages,
        ..RoomSnapshot::new(
            room_id.parse().unwrap_or_else(|e| panic!("{e}")),
            "https://matrix.tchap.test".parse().unwrap_or_else(|e| panic!("{e}")),
        )
    }
}

fn all_messages() -> Vec<MessageRecord> {
    MESSAGES.iter().enumerate().map(|(n, (eid, d, t))| message(n, eid, *d, *t)).collect()
}

/// (eventId, senderTrust) of each node of `edges`, in order.
fn trusts(edges: &Value) -> Vec<(String, String)> {
    edges
        .as_array()
        .unwrap_or_else(|| panic!("edges: {edges}"))
        .iter()
        .map(|e| {
            let n = &e["node"];
            (
                n["eventId"].as_str().unwrap_or_default().to_owned(),
                n["senderTrust"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn stored() -> Vec<(String, String)> {
    MESSAGES.iter().map(|(eid, _, t)| ((*eid).to_owned(), t.code().to_owned())).collect()
}

#[tokio::test]
async fn each_trust_reads_back_everywhere_and_the_gate_is_unchanged() {
    let h = Harness::new().await;
    let top = viewer("dgsi", TopSecret, &ALL);
    h.store_snapshot(&top, Secret, room(ROOM, all_messages())).await;

    let vars = json!({ "room": ROOM });
    let plain = "query($room: String!) { tchapMessages(roomId: $room, first: 10) { edges { node { eventId senderTrust } } } }";
    let fields = "query($room: String!) { tchapMessages(roomId: $room, first: 10) { edges { node { ...F } } } } \
                  fragment F on TchapMessage { eventId senderTrust }";
    for doc in [plain, fields] {
        let data = ok(h.run(&top, doc, vars.clone()).await);
        assert_eq!(trusts(&data["tchapMessages"]["edges"]), stored(), "{doc}");
    }
    let own = "query($room: String!) { tchapRoom(roomId: $room) { messages(first: 10) { edges { node { eventId senderTrust } } } } }";
    let data = ok(h.run(&top, own, vars.clone()).await);
    assert_eq!(trusts(&data["tchapRoom"]["messages"]["edges"]), stored());

    // Search hits are messages too (the one left encrypted has no body to find).
    let search =
        "query($q: String!) { tchapSearch(query: $q, first: 10) { edges { node { eventId senderTrust } } } }";
    let data = ok(h.run(&top, search, json!({ "q": "appareil" })).await);
    let mut found = trusts(&data["tchapSearch"]["edges"]);
    found.sort();
    let mut want: Vec<_> = stored().into_iter().filter(|(eid, _)| eid != "$sealed:tchap.test").collect();
    want.sort();
    assert_eq!(found, want);

    // Below the room's classification, nothing of it is read.
    let low = viewer("dgsi", Restricted, &[Scope::Read]);
    let data = ok(h.run(&low, plain, vars.clone()).await);
    assert_eq!(data["tchapMessages"]["edges"], json!([]));
    let data = ok(h.run(&low, search, json!({ "q": "appareil" })).await);
    assert_eq!(data["tchapSearch"]["edges"], json!([]));
}

#[tokio::test]
async fn a_row_stored_without_a_trust_reads_as_unrecorded() {
    let h = Harness::new().await;
    let top = viewer("dgsi", TopSecret, &ALL);
    h.store_snapshot(&top, Secret, room(ROOM, all_messages())).await;
    // Rows written by a release from before devices (skipped, loudly, without the sqlite3 shell).
    if sqlite3(&h, "UPDATE messages SET sender_trust = NULL").is_none() {
        return;
    }
    let doc = "query($room: String!) { tchapMessages(roomId: $room, first: 10) { edges { node { eventId senderTrust } } } }";
    let data = ok(h.run(&top, doc, json!({ "room": ROOM })).await);
    let want: Vec<(String, String)> = MESSAGES
        .iter()
        .map(|(eid, decrypted, _)| {
            let trust = if decrypted.is_some() { "UNKNOWN_DEVICE" } else { "NOT_ENCRYPTED" };
            ((*eid).to_owned(), trust.to_owned())
        })
        .collect();
    assert_eq!(trusts(&data["tchapMessages"]["edges"]), want);
}

#[tokio::test]
async fn a_message_added_arrives_with_its_trust() {
    let h = Harness::new().await;
    let writer = viewer("dgsi", TopSecret, &[Scope::Read]);
    let reader = viewer("dgsi", Secret, &[Scope::Read]);
    let ctx = context(&h, &reader);
    let doc = format!("subscription {{ tchapMessagesAdded(roomId: \"{ROOM}\") {{ eventId senderTrust }} }}");
    let mut stream = subscribe(&h, &ctx, &doc).await.unwrap_or_else(|e| panic!("{e}"));
    let added = vec![
        message(0, "$verified:tchap.test", Some(true), SenderTrust::Verified),
        message(1, "$changed:tchap.test", Some(true), SenderTrust::IdentityChanged),
    ];
    h.store_snapshot(&writer, Secret, room(ROOM, added)).await;
    h.services.app.new_messages.notify();
    let mut arrived = Vec::new();
    while arrived.len() < 2 {
        let (item, ended) = next_item(&mut stream, Duration::from_secs(5)).await;
        let item = item.unwrap_or_else(|| panic!("nothing arrived (ended: {ended})"));
        arrived.push(item.unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(
        arrived,
        [
            json!({ "eventId": "$verified:tchap.test", "senderTrust": "VERIFIED" }),
            json!({ "eventId": "$changed:tchap.test", "senderTrust": "IDENTITY_CHANGED" }),
        ]
    );
}
