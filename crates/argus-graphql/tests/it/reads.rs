//! Reads: tenant and clearance isolation, pagination, cursors, scopes and document limits.

use argus_domain::Scope;
use argus_graphql::SchemaOptions;
use serde_json::{Value, json};

use crate::harness::{ALL, Harness, Restricted, Secret, TopSecret, Unclassified, error_code, ok, viewer};

const ROOMS: &str = r"query($first: Int, $after: String) {
  tchapRooms(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { roomId classification messageCount } }
  }
}";

const MESSAGES: &str = r"query($room: String!, $first: Int, $after: String) {
  tchapMessages(roomId: $room, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id eventId roomId sender msgtype body sentAt classification edited redacted encrypted } }
  }
}";

const ROOM: &str = r"query($room: String!) {
  tchapRoom(roomId: $room) { roomId classification messageCount messages(first: 2) { totalCount edges { node { body } } } }
}";

const STATS: &str = "{ tchapStats { totalRooms totalMessages activeRoomsLast24h } }";

/// dgsi: !s (SECRET, 4 messages), !r (RESTRICTED, 2 messages); anssi: !s (UNCLASSIFIED, 4).
pub(crate) async fn two_tenants() -> Harness {
    let h = Harness::new().await;
    h.hs.room("!s:tchap.test", 4);
    h.hs.room("!r:tchap.test", 2);
    ok(h.ingest(&viewer("dgsi", TopSecret, &ALL), "!s:tchap.test", Secret).await);
    ok(h.ingest(&viewer("dgsi", TopSecret, &ALL), "!r:tchap.test", Restricted).await);
    ok(h.ingest(&viewer("anssi", Secret, &ALL), "!s:tchap.test", Unclassified).await);
    h
}

fn room_ids(data: &Value) -> Vec<String> {
    data["tchapRooms"]["edges"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["node"]["roomId"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn nobody_sees_across_organisations_or_above_clearance() {
    let h = two_tenants().await;
    let top = viewer("dgsi", TopSecret, &[Scope::Read]);
    let low = viewer("dgsi", Restricted, &[Scope::Read]);
    let other = viewer("anssi", TopSecret, &[Scope::Read]);

    let all = ok(h.run(&top, ROOMS, json!({})).await);
    assert_eq!(all["tchapRooms"]["totalCount"], 2);
    let only_r = ok(h.run(&low, ROOMS, json!({})).await);
    assert_eq!(room_ids(&only_r), vec!["!r:tchap.test"]);
    assert_eq!(only_r["tchapRooms"]["totalCount"], 1);
    let anssi = ok(h.run(&other, ROOMS, json!({})).await);
    assert_eq!(room_ids(&anssi), vec!["!s:tchap.test"]);
    assert_eq!(anssi["tchapRooms"]["edges"][0]["node"]["classification"], "UNCLASSIFIED");

    // A withheld room looks exactly like a missing one.
    let withheld = ok(h.run(&low, ROOM, json!({ "room": "!s:tchap.test" })).await);
    let missing = ok(h.run(&low, ROOM, json!({ "room": "!nope:tchap.test" })).await);
    assert_eq!(withheld, missing);
    assert!(withheld["tchapRoom"].is_null());
    let msgs = ok(h.run(&low, MESSAGES, json!({ "room": "!s:tchap.test" })).await);
    assert_eq!(msgs["tchapMessages"]["totalCount"], 0);
    assert_eq!(msgs["tchapMessages"]["edges"], json!([]));

    let visible = ok(h.run(&top, ROOM, json!({ "room": "!s:tchap.test" })).await);
    assert_eq!(visible["tchapRoom"]["messageCount"], 4);
    assert_eq!(visible["tchapRoom"]["messages"]["totalCount"], 4);
    assert_eq!(visible["tchapRoom"]["messages"]["edges"][0]["node"]["body"], "message 0");

    let h = &h;
    let stats = |v| async move { ok(h.run(&v, STATS, json!({})).await)["tchapStats"].clone() };
    assert_eq!(
        stats(top.clone()).await,
        json!({ "totalRooms": 2, "totalMessages": 6, "activeRoomsLast24h": 0 })
    );
    assert_eq!(
        stats(low.clone()).await,
        json!({ "totalRooms": 1, "totalMessages": 2, "activeRoomsLast24h": 0 })
    );
    assert_eq!(
        stats(other.clone()).await,
        json!({ "totalRooms": 1, "totalMessages": 4, "activeRoomsLast24h": 0 })
    );
}

#[tokio::test]
async fn messages_page_oldest_first_with_cursors() {
    let h = Harness::new().await;
    h.hs.room("!long:tchap.test", 120);
    let v = viewer("dgsi", Secret, &ALL);
    ok(h.ingest(&v, "!long:tchap.test", Restricted).await);
    let mut after: Option<String> = None;
    let mut bodies = Vec::new();
    let mut pages = 0;
    loop {
        let data =
            ok(h.run(&v, MESSAGES, json!({ "room": "!long:tchap.test", "first": 50, "after": after })).await);
        let conn = &data["tchapMessages"];
        assert_eq!(conn["totalCount"], 120);
        for e in conn["edges"].as_array().unwrap() {
            bodies.push(e["node"]["body"].as_str().unwrap().to_owned());
            assert_eq!(e["node"]["classification"], "RESTRICTED");
            assert_eq!(e["node"]["msgtype"], "m.text");
        }
        pages += 1;
        if conn["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..120).map(|i| format!("message {i}")).collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn forged_tampered_and_foreign_cursors_are_rejected() {
    let h = two_tenants().await;
    let dgsi = viewer("dgsi", TopSecret, &[Scope::Read]);
    let anssi = viewer("anssi", TopSecret, &[Scope::Read]);
    let page = ok(h.run(&dgsi, ROOMS, json!({ "first": 1 })).await);
    let cursor = page["tchapRooms"]["pageInfo"]["endCursor"].as_str().unwrap().to_owned();
    // The same cursor works for its owner...
    let next = ok(h.run(&dgsi, ROOMS, json!({ "first": 1, "after": cursor })).await);
    assert_eq!(next["tchapRooms"]["edges"].as_array().map(Vec::len), Some(1));
    // ...but not for another organisation, another list, or once edited.
    let foreign = h.run(&anssi, ROOMS, json!({ "after": cursor })).await;
    assert_eq!(error_code(&foreign), Some("BAD_CURSOR"));
    let other_list = h.run(&dgsi, MESSAGES, json!({ "room": "!s:tchap.test", "after": cursor })).await;
    assert_eq!(error_code(&other_list), Some("BAD_CURSOR"));
    let mut edited = cursor.clone().into_bytes();
    edited[3] = if edited[3] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    assert_eq!(error_code(&h.run(&dgsi, ROOMS, json!({ "after": edited })).await), Some("BAD_CURSOR"));
    // A hand-made keyset position is refused.
    let forged = "eyJsYXN0X2FjdGl2aXR5X21zIjpudWxsLCJpZCI6MX0";
    assert_eq!(error_code(&h.run(&dgsi, ROOMS, json!({ "after": forged })).await), Some("BAD_CURSOR"));
}

#[tokio::test]
async fn page_sizes_are_bounded() {
    let h = Harness::new().await;
    let v = viewer("dgsi", Secret, &ALL);
    assert_eq!(error_code(&h.run(&v, ROOMS, json!({ "first": 501 })).await), Some("INVALID_INPUT"));
    assert_eq!(error_code(&h.run(&v, ROOMS, json!({ "first": -1 })).await), Some("INVALID_INPUT"));
    ok(h.run(&v, ROOMS, json!({ "first": 500 })).await);
    ok(h.run(&v, ROOMS, json!({ "first": 0 })).await);
    let bad_room = h.run(&v, MESSAGES, json!({ "room": "!a/../b" })).await;
    assert_eq!(error_code(&bad_room), Some("INVALID_INPUT"));
}

#[tokio::test]
async fn each_read_needs_its_scope() {
    let h = Harness::new().await;
    let nothing = viewer("dgsi", TopSecret, &[]);
    let reader = viewer("dgsi", TopSecret, &[Scope::Read]);
    for query in [
        "{ tchapRooms { totalCount } }",
        "{ tchapRoom(roomId: \"!a:b\") { roomId } }",
        "{ tchapMessages(roomId: \"!a:b\") { totalCount } }",
        STATS,
        "{ tchapIngestions { totalCount } }",
    ] {
        let response = h.run(&nothing, query, json!({})).await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{query}: {response}");
    }
    let audit = h.run(&reader, "{ tchapIngestions { totalCount } }", json!({})).await;
    assert_eq!(error_code(&audit), Some("FORBIDDEN"));
    let auditor = viewer("dgsi", TopSecret, &[Scope::Audit]);
    ok(h.run(&auditor, "{ tchapIngestions { totalCount } }", json!({})).await);
}

#[tokio::test]
async fn deep_wide_and_introspective_documents_are_refused_before_resolvers() {
    let options =
        SchemaOptions { introspection: false, max_depth: 5, max_fields: 40, ..SchemaOptions::default() };
    let h = Harness::with_options(options).await;
    let v = viewer("dgsi", TopSecret, &ALL);
    let refused = |r: &Value| r["errors"].is_array() && r["data"].is_null();
    ok(h.run(&v, "{ tchapRooms { edges { node { roomId } } } }", json!({})).await);
    let deep = "{ tchapRooms { edges { node { messages { edges { node { id } } } } } } }";
    let r = h.run(&v, deep, json!({})).await;
    assert!(refused(&r), "{r}");
    let fragments = "query { tchapRooms { ...A } } \
        fragment A on TchapRoomConnection { edges { ...B } } \
        fragment B on TchapRoomEdge { node { ...C } } \
        fragment C on TchapRoom { messages { edges { node { id } } } }";
    let r = h.run(&v, fragments, json!({})).await;
    assert!(refused(&r), "{r}");
    let aliases: String = (0..50).map(|i| format!("a{i}: tchapStats {{ totalRooms }} ")).collect();
    let r = h.run(&v, &format!("{{ {aliases} }}"), json!({})).await;
    assert!(refused(&r), "{r}");
    let r = h.run(&v, "{ __schema { types { name } } }", json!({})).await;
    assert!(refused(&r), "{r}");
    let r = h.run(&v, "{ __type(name: \"TchapRoom\") { name } }", json!({})).await;
    assert!(refused(&r), "{r}");
}

/// Messages of every shape a plain selection reads: media, a reply in a thread, an edit (with
/// its versions), a redaction with who, when and why, an undecryptable event.
fn varied_room() -> argus_domain::RoomSnapshot {
    use argus_domain::{
        MediaRef, from_unix_ms,
        testing::{MessageRecordBuilder, RoomSnapshotBuilder},
    };
    let at = |s: i64| from_unix_ms(1_767_225_600_000 + s * 1_000).unwrap_or_else(|e| panic!("{e}"));
    let text = |i: i64, body: &str| {
        MessageRecordBuilder::new(&format!("$v{i}:tchap.test"))
            .sender("@alice:tchap.test")
            .body(body)
            .sent_at(at(i))
    };
    let image = text(1, "photo.jpg").msgtype("m.image").media(MediaRef {
        uri: Some("mxc://tchap.test/abc".into()),
        mimetype: Some("image/jpeg".into()),
        size: Some(12),
        ..Default::default()
    });
    let reply = text(2, "« citation » \"quoted\" \\ \u{1F600}")
        .reply_to("$v1:tchap.test")
        .thread_root("$v1:tchap.test");
    let redacted = text(3, "gone").redacted("@mod:tchap.test", at(10), Some("hors sujet"));
    let encrypted = text(4, "").encrypted();
    RoomSnapshotBuilder::new("!varied:tchap.test")
        .homeserver("https://matrix.tchap.test")
        .name("Salle")
        .member_count(2)
        .messages([text(0, "bonjour"), image, reply, redacted, encrypted].map(MessageRecordBuilder::build))
        .build()
}

#[tokio::test]
async fn plain_edges_answer_as_the_executor_does() {
    let h = Harness::new().await;
    let top = viewer("dgsi", TopSecret, &ALL);
    h.store_snapshot(&top, Secret, varied_room()).await;
    let fields = "__typename id eventId roomId sender msgtype body sentAt classification edited redacted \
                  encrypted decrypted undecryptableReason replyTo threadRoot mediaUri mediaMimetype redactedBy redactedAt redactionReason";
    let doc = |edge: &str, node: &str| {
        format!(
            "query($room: String!) {{ tchapMessages(roomId: $room, first: 10) {{ totalCount edges {{ {edge} }} }} \
             again: tchapMessages(roomId: $room, first: 2) {{ edges {{ node {{ {node} }} }} }} }}"
        )
    };
    let vars = json!({ "room": "!varied:tchap.test" });
    // The plain form (answered in one pass), with aliases and __typename at both levels...
    let plain = doc(&format!("__typename c: cursor n: node {{ {fields} text: body }}"), "b: body a: sentAt");
    // ...and forms the executor answers field by field: a directive, a fragment, an inline
    // fragment, a field asked twice under one key.
    let generic = [
        doc(
            &format!("__typename c: cursor @include(if: true) n: node {{ {fields} text: body }}"),
            "b: body a: sentAt",
        ),
        format!(
            "{} fragment F on TchapMessage {{ {fields} text: body }}",
            doc("__typename c: cursor n: node { ...F }", "b: body a: sentAt")
        ),
        doc(
            &format!("__typename c: cursor n: node {{ ... on TchapMessage {{ {fields} }} text: body }}"),
            "b: body a: sentAt b: body",
        ),
    ];
    let reference = ok(h.run(&top, &plain, vars.clone()).await);
    let edges = reference["tchapMessages"]["edges"].as_array().map_or(0, Vec::len);
    assert_eq!(edges, 5, "{reference}");
    assert_eq!(reference["tchapMessages"]["edges"][1]["n"]["mediaUri"], "mxc://tchap.test/abc");
    assert_eq!(reference["tchapMessages"]["edges"][3]["n"]["redactionReason"], "hors sujet");
    for document in &generic {
        let other = ok(h.run(&top, document, vars.clone()).await);
        // Cursors carry a random nonce: compare everything else, key order included.
        let strip = |v: &Value| {
            let mut v = v.clone();
            for list in ["tchapMessages"] {
                if let Some(edges) = v[list]["edges"].as_array_mut() {
                    for e in edges {
                        e["c"] = Value::Null;
                    }
                }
            }
            serde_json::to_string(&v).unwrap_or_default()
        };
        assert_eq!(strip(&reference), strip(&other), "{document}");
    }
}
