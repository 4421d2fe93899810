//! The any-room responder: every room on demand, with messages, upgrades, cuts and sends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use wiremock::{Mock, Request, Respond, ResponseTemplate, matchers::method};

use super::{BASE_TS, MATRIX_TOKEN, MockHomeserver, percent_decode};

/// Messages of a room of the any-room responder not given a count with [`MockHomeserver::room`].
const DEFAULT_ROOM_MESSAGES: usize = 3;

/// Message counts of the rooms of the any-room responder, by room id.
pub(super) type Rooms = Arc<Mutex<HashMap<String, RoomSpec>>>;

/// A room of the any-room responder: its messages, from where its history cannot be read, and
/// its upgrade links.
#[derive(Debug, Clone, Default)]
pub(super) struct RoomSpec {
    count: usize,
    /// Pages of events before this position answer `M_FORBIDDEN` (a read cut mid-way).
    cut_below: Option<usize>,
    /// The room that replaced it (`m.room.tombstone`).
    successor: Option<String>,
    /// The room it replaced (`m.room.create` `predecessor`).
    predecessor: Option<String>,
}

impl RoomSpec {
    fn new(count: usize) -> Self {
        Self { count, ..Self::default() }
    }
}

/// # Any room on demand
impl MockHomeserver {
    /// Starts a homeserver serving any room on demand ([`Self::serve_any_room`]).
    pub async fn start_any_room() -> Self {
        let hs = Self::start().await;
        hs.serve_any_room().await;
        hs
    }

    /// Mounts the any-room responder: it answers every `GET` (so mocks mounted after it with the
    /// same priority never answer). With the bearer token [`MATRIX_TOKEN`] (otherwise
    /// `M_UNKNOWN_TOKEN`), `/rooms/{room}/state` and `/rooms/{room}/messages` of a room whose id
    /// starts with `!forbidden` answer `M_FORBIDDEN`, of one starting with `!missing`
    /// `M_NOT_FOUND`, of one starting with `!ratelimited` `M_LIMIT_EXCEEDED` (HTTP 429, retry
    /// after two minutes); any other room has a name, a topic, two members and its messages (see
    /// [`Self::room`]; a room whose id starts with `!slow` takes [`SLOW_PAGE`] over each page),
    /// paginated as a homeserver does: tokens `t{n}` are positions in the
    /// timeline, a page holds at most `limit` events (default 10), backwards pages omit `end` at
    /// the start of the room, and a forwards read from the live end finds what was added since.
    pub async fn serve_any_room(&self) {
        Mock::given(method("GET"))
            .respond_with(AnyRoom { rooms: Arc::clone(&self.rooms) })
            .mount(&self.server)
            .await;
        Mock::given(method("PUT")).respond_with(AnySend).mount(&self.server).await;
    }

    /// The messages sent into rooms (`PUT /rooms/{room}/send/{type}/{txnId}`), oldest first:
    /// room id, transaction id and JSON content of each request received.
    pub async fn sent(&self) -> Vec<(String, String, Value)> {
        let requests = self.server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .filter(|r| r.method == wiremock::http::Method::PUT)
            .filter_map(|r| {
                let (room, txn) = send_target(r)?;
                let body = serde_json::from_slice(&r.body).ok()?;
                Some((room, txn, body))
            })
            .collect()
    }

    /// Gives `room` `count` messages (`message 0`.. one minute apart from [`BASE_TS`]) in the
    /// any-room responder (default 3). Calling it again with a larger count adds messages.
    pub fn room(&self, room: &str, count: usize) {
        if let Ok(mut rooms) = self.rooms.lock() {
            let spec = rooms.entry(room.to_owned()).or_insert_with(|| RoomSpec::new(count));
            spec.count = count;
        }
    }

    /// Makes pages of `room` reaching before message `position` answer `M_FORBIDDEN` (`None`:
    /// readable again), as when an account loses access to older history mid-read.
    pub fn cut_room_below(&self, room: &str, position: Option<usize>) {
        if let Ok(mut rooms) = self.rooms.lock() {
            let spec = rooms.entry(room.to_owned()).or_insert_with(|| RoomSpec::new(DEFAULT_ROOM_MESSAGES));
            spec.cut_below = position;
        }
    }

    /// Upgrades `old` to `new`: `old` gets an `m.room.tombstone` naming `new`, `new` an
    /// `m.room.create` naming `old` as its predecessor (both are listed by `/joined_rooms`).
    pub fn upgrade_room(&self, old: &str, new: &str) {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.entry(old.to_owned()).or_insert_with(|| RoomSpec::new(DEFAULT_ROOM_MESSAGES)).successor =
                Some(new.to_owned());
            rooms.entry(new.to_owned()).or_insert_with(|| RoomSpec::new(DEFAULT_ROOM_MESSAGES)).predecessor =
                Some(old.to_owned());
        }
    }
}

/// The any-room responder ([`MockHomeserver::serve_any_room`]).
struct AnyRoom {
    rooms: Rooms,
}

/// The room and transaction id of a `PUT /rooms/{room}/send/{type}/{txnId}`.
fn send_target(request: &Request) -> Option<(String, String)> {
    let path = percent_decode(request.url.path());
    let (room, tail) = path.strip_prefix("/_matrix/client/v3/rooms/")?.split_once("/send/")?;
    let (_, txn) = tail.split_once('/')?;
    Some((room.to_owned(), txn.to_owned()))
}

/// Whether `request` carries the bearer token [`MATRIX_TOKEN`].
fn bears_matrix_token(request: &Request) -> bool {
    request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {MATRIX_TOKEN}"))
}

fn matrix_error(status: u16, errcode: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "errcode": errcode, "error": "mock" }))
}

impl Respond for AnyRoom {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !bears_matrix_token(request) {
            return matrix_error(401, "M_UNKNOWN_TOKEN");
        }
        let path = percent_decode(request.url.path());
        if path == "/_matrix/client/v3/joined_rooms" {
            // The rooms given messages or links, in id order.
            let mut joined: Vec<String> =
                self.rooms.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            joined.sort();
            return ResponseTemplate::new(200).set_body_json(json!({ "joined_rooms": joined }));
        }
        let Some(rest) = path.strip_prefix("/_matrix/client/v3/rooms/") else {
            return matrix_error(404, "M_UNRECOGNIZED");
        };
        let Some((room, endpoint)) = rest.rsplit_once('/') else {
            return matrix_error(404, "M_UNRECOGNIZED");
        };
        if room.starts_with("!forbidden") {
            return matrix_error(403, "M_FORBIDDEN");
        }
        if room.starts_with("!missing") {
            return matrix_error(404, "M_NOT_FOUND");
        }
        if room.starts_with("!ratelimited") {
            // Two minutes, more than any test waits.
            return ResponseTemplate::new(429).set_body_json(
                json!({ "errcode": "M_LIMIT_EXCEEDED", "error": "mock", "retry_after_ms": 120_000 }),
            );
        }
        let spec = self
            .rooms
            .lock()
            .ok()
            .and_then(|m| m.get(room).cloned())
            .unwrap_or_else(|| RoomSpec::new(DEFAULT_ROOM_MESSAGES));
        match endpoint {
            "state" => ResponseTemplate::new(200).set_body_json(any_room_state(room, &spec)),
            "messages" => any_room_page(request, room, &spec),
            _ => matrix_error(404, "M_UNRECOGNIZED"),
        }
    }
}

/// How long the any-room responder takes over each page of a room whose id starts with `!slow`.
pub const SLOW_PAGE: std::time::Duration = std::time::Duration::from_millis(40);

/// A `/messages` page of the any-room responder.
fn any_room_page(request: &Request, room: &str, spec: &RoomSpec) -> ResponseTemplate {
    let query = |key: &str| request.url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
    let forward = query("dir").as_deref() == Some("f");
    let limit = query("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10).max(1);
    // A token is a position in the timeline; one this responder did not issue is the live end.
    let from = query("from").and_then(|t| t.strip_prefix('t').and_then(|n| n.parse::<usize>().ok()));
    let position = from.unwrap_or(spec.count).min(spec.count);
    let (range, end) = if forward {
        let stop = (position + limit).min(spec.count);
        (position..stop, (stop > position).then(|| format!("t{stop}")))
    } else {
        let stop = position.saturating_sub(limit);
        (stop..position, (stop > 0).then(|| format!("t{stop}")))
    };
    if spec.cut_below.is_some_and(|cut| range.start < cut && !range.is_empty()) {
        return matrix_error(403, "M_FORBIDDEN");
    }
    let mut chunk: Vec<Value> = range.map(|i| any_room_message(room, i)).collect();
    if !forward {
        chunk.reverse();
    }
    let mut page = json!({ "start": format!("t{position}"), "chunk": chunk });
    if let Some(end) = end {
        page["end"] = json!(end);
    }
    let response = ResponseTemplate::new(200).set_body_json(page);
    // A slow homeserver, for runs that must still be under way when something happens to them.
    if room.starts_with("!slow") { response.set_delay(SLOW_PAGE) } else { response }
}

/// The any-room responder of sends: with [`MATRIX_TOKEN`], a send into any room but a
/// `!forbidden…` one answers an event id derived from the transaction id (so a repeated
/// transaction answers the same event, as a homeserver does).
struct AnySend;

impl Respond for AnySend {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !bears_matrix_token(request) {
            return matrix_error(401, "M_UNKNOWN_TOKEN");
        }
        let Some((room, txn)) = send_target(request) else {
            return matrix_error(404, "M_UNRECOGNIZED");
        };
        if room.starts_with("!forbidden") {
            return matrix_error(403, "M_FORBIDDEN");
        }
        let id: String = txn.chars().filter(char::is_ascii_alphanumeric).take(40).collect();
        ResponseTemplate::new(200).set_body_json(json!({ "event_id": format!("$sent-{id}") }))
    }
}

/// The state of `room` in the any-room responder, with its upgrade links.
fn any_room_state(room: &str, spec: &RoomSpec) -> Value {
    let ev = |kind: &str, key: &str, content: Value| {
        json!({
            "type": kind, "state_key": key, "event_id": format!("$state-{kind}-{key}"),
            "sender": "@alice:tchap.test", "origin_server_ts": BASE_TS, "room_id": room, "content": content,
        })
    };
    let mut create = json!({ "creator": "@alice:tchap.test", "room_version": "10" });
    if let Some(old) = &spec.predecessor {
        create["predecessor"] = json!({ "room_id": old, "event_id": "$tombstone" });
    }
    let mut state = json!([
        ev("m.room.create", "", create),
        ev("m.room.name", "", json!({ "name": format!("Salle {room}") })),
        ev("m.room.topic", "", json!({ "topic": "Cellule de crise" })),
        ev("m.room.member", "@alice:tchap.test", json!({ "membership": "join" })),
        ev("m.room.member", "@bob:tchap.test", json!({ "membership": "join" })),
    ]);
    if let (Some(new), Some(events)) = (&spec.successor, state.as_array_mut()) {
        events.push(ev("m.room.tombstone", "", json!({ "body": "upgraded", "replacement_room": new })));
    }
    state
}

/// How far back an edit of an `!edited…` room of the any-room responder reaches: the edit at
/// event `i` (for `i % 10 == 9`, `i >= EDIT_REACH`) replaces event `i - EDIT_REACH`.
pub const EDIT_REACH: usize = 25;

/// The `i`-th event of `room` in the any-room responder, one minute apart: `message {i}`, or in a
/// room whose id starts with `!edited`, for `i % 10 == 9` and `i >= 25`, the sender's edit of
/// event `i - 25` (body `message {i - 25} (corrigé)`): far enough back to lie in another page,
/// and beyond the end of a capped read.
fn any_room_message(room: &str, i: usize) -> Value {
    let opaque: String = room.chars().filter(char::is_ascii_alphanumeric).collect();
    let i64_i = i64::try_from(i).unwrap_or(0);
    if room.starts_with("!edited") && i % 10 == 9 && i >= EDIT_REACH {
        let target = i - EDIT_REACH;
        return json!({
            "type": "m.room.message", "event_id": format!("$m{i}-{opaque}"), "sender": "@alice:tchap.test",
            "origin_server_ts": BASE_TS + i64_i * 60_000, "room_id": room,
            "content": {
                "msgtype": "m.text", "body": format!("* message {target} (corrigé)"),
                "m.new_content": { "msgtype": "m.text", "body": format!("message {target} (corrigé)") },
                "m.relates_to": { "rel_type": "m.replace", "event_id": format!("$m{target}-{opaque}") },
            },
        });
    }
    json!({
        "type": "m.room.message", "event_id": format!("$m{i}-{opaque}"), "sender": "@alice:tchap.test",
        "origin_server_ts": BASE_TS + i64_i * 60_000, "room_id": room,
        "content": { "msgtype": "m.text", "body": format!("message {i}") },
    })
}
