//! Builders of timeline events in [`ROOM`], for the endpoint mocks.

use serde_json::{Value, json};

use super::ROOM;

/// The sender of messages and edits.
pub const ALICE: &str = "@alice:tchap.test";
/// The sender of redactions.
pub const BOB: &str = "@bob:tchap.test";

/// An event of any type in [`ROOM`].
pub fn event(kind: &str, id: &str, sender: &str, ts: i64, content: Value) -> Value {
    json!({
        "type": kind, "event_id": id, "sender": sender, "origin_server_ts": ts,
        "room_id": ROOM, "content": content,
    })
}

/// An `m.room.message` from [`ALICE`] with this `msgtype` and `body`.
pub fn msg(id: &str, ts: i64, msgtype: &str, body: &str) -> Value {
    event("m.room.message", id, ALICE, ts, json!({ "msgtype": msgtype, "body": body }))
}

/// An `m.text` message from [`ALICE`].
pub fn text(id: &str, ts: i64, body: &str) -> Value {
    msg(id, ts, "m.text", body)
}

/// An edit (`m.replace`) by [`ALICE`] of `target`, whose new body is `body`.
pub fn edit(id: &str, ts: i64, target: &str, body: &str) -> Value {
    event(
        "m.room.message",
        id,
        ALICE,
        ts,
        json!({
            "msgtype": "m.text", "body": format!("* {body}"),
            "m.new_content": { "msgtype": "m.text", "body": body },
            "m.relates_to": { "rel_type": "m.replace", "event_id": target },
        }),
    )
}

/// A redaction by [`BOB`] of `target` in the room version 11 form (`content.redacts`).
pub fn redaction_v11(id: &str, ts: i64, target: &str) -> Value {
    event("m.room.redaction", id, BOB, ts, json!({ "redacts": target }))
}

/// A redaction by [`BOB`] of `target` in the older form (top-level `redacts`).
pub fn redaction_old(id: &str, ts: i64, target: &str) -> Value {
    let mut e = event("m.room.redaction", id, BOB, ts, json!({}));
    e["redacts"] = json!(target);
    e
}

/// `n` text messages `$e{start}`..`$e{start+n-1}`, newest first (as `dir=b` returns them).
pub fn texts_newest_first(start: usize, n: usize) -> Vec<Value> {
    (start..start + n)
        .rev()
        .map(|i| text(&format!("$e{i}"), 1_700_000_000_000 + i as i64, &format!("m{i}")))
        .collect()
}
