//! A mock Matrix homeserver (wiremock on 127.0.0.1) for the tests and benchmarks of every crate,
//! in the style of matrix-rust-sdk's `MatrixMockServer`.
//!
//! One type, [`MockHomeserver`], used in one of three ways:
//!
//! - **Endpoint mocks**: after [`MockHomeserver::start`], mount exactly the answers a test needs
//!   with readable builders, e.g.
//!   `hs.messages(ROOM).from("t1").page(events).end("t2").mount().await`. They require the
//!   bearer token [`TOKEN`]; the events come from the builders of [`ev`].
//! - **Any room on demand**: [`MockHomeserver::start_any_room`] (or
//!   [`MockHomeserver::serve_any_room`]) answers `/state` and `/messages` of every room: a room
//!   whose id starts with `!forbidden` answers `M_FORBIDDEN`, one starting with `!missing`
//!   answers `M_NOT_FOUND`, a token other than [`MATRIX_TOKEN`] answers `M_UNKNOWN_TOKEN`, and
//!   every other room holds 3 messages, or the number given with [`MockHomeserver::room`].
//! - **Benchmark pages**: [`MockHomeserver::start_bench`] (or
//!   [`MockHomeserver::serve_bench_pages`]) serves a room of pages of
//!   [`bench::PAGE_EVENTS`] realistic events, page `N` for `from=tN` (the first page without
//!   `from`), and an empty `/state`, to any token.
//!
//! The connector-specific helpers (a `ConnectorConfig` allowing 127.0.0.1, typed tokens and room
//! ids) stay with the crates that own those types; this module only speaks HTTP and JSON.
//!
//! ```
//! use argus_testkit::homeserver::{MockHomeserver, ROOM, TOKEN, ev};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), reqwest::Error> {
//! let hs = MockHomeserver::start().await;
//! hs.empty_state(ROOM).await;
//! hs.messages(ROOM).page(ev::texts_newest_first(0, 2)).end("t1").mount().await;
//!
//! let url = format!("{}/_matrix/client/v3/rooms/{ROOM}/messages?dir=b", hs.uri());
//! let page: serde_json::Value =
//!     reqwest::Client::new().get(url).bearer_auth(TOKEN).send().await?.json().await?;
//! assert_eq!(page["chunk"][0]["event_id"], "$e1");
//! assert_eq!(page["end"], "t1");
//! assert_eq!(hs.requests_to("messages").await, 1);
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use wiremock::{
    Match, Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{header, method, query_param, query_param_is_missing},
};

/// The access token the endpoint mocks require; tests assert it never leaks.
pub const TOKEN: &str = "syt_YWxpY2U_SECRETsecretSECRET_1a2b3c";

/// The room most endpoint-mock tests read (and the `room_id` of the events of [`ev`]).
pub const ROOM: &str = "!crise:tchap.test";

/// The access token the any-room responder accepts; tests assert it never leaks.
pub const MATRIX_TOKEN: &str = "syt_YXJndXM_SECRETmatrixTOKEN_0a1b2c";

/// Base of the any-room responder's synthetic `origin_server_ts`: 2026-01-01T00:00:00Z.
pub const BASE_TS: i64 = 1_767_225_600_000;

/// Messages of a room of the any-room responder not given a count with [`MockHomeserver::room`].
const DEFAULT_ROOM_MESSAGES: usize = 3;

/// Message counts of the rooms of the any-room responder, by room id.
type Rooms = Arc<Mutex<HashMap<String, RoomSpec>>>;

/// A room of the any-room responder: its messages, from where its history cannot be read, and
/// its upgrade links.
#[derive(Debug, Clone, Default)]
struct RoomSpec {
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

/// A running mock homeserver (see the [module documentation](self) for its three uses).
pub struct MockHomeserver {
    server: MockServer,
    rooms: Rooms,
}

impl MockHomeserver {
    /// Starts a homeserver with nothing mounted (every request answers 404 until mocks are).
    pub async fn start() -> Self {
        Self::with_server(MockServer::start().await)
    }

    /// Starts a homeserver with nothing mounted that does not record the requests it receives,
    /// so that its own memory stays flat however many it serves (benchmarks);
    /// [`Self::requests_to`] and [`Self::request_count`] then answer 0.
    pub async fn start_unrecorded() -> Self {
        Self::with_server(MockServer::builder().disable_request_recording().start().await)
    }

    fn with_server(server: MockServer) -> Self {
        Self { server, rooms: Arc::default() }
    }

    /// The wiremock server, for custom mocks, `received_requests`, `reset` or its address.
    pub fn server(&self) -> &MockServer {
        &self.server
    }

    /// The base URL, `http://127.0.0.1:<port>` (plain HTTP).
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Number of requests received (0 when started with [`Self::start_unrecorded`]).
    pub async fn request_count(&self) -> usize {
        self.server.received_requests().await.map_or(0, |r| r.len())
    }

    /// Number of requests received for one endpoint of the Client-Server API (`"state"`,
    /// `"messages"`), i.e. whose path ends with `/{endpoint}`.
    pub async fn requests_to(&self, endpoint: &str) -> usize {
        let suffix = format!("/{endpoint}");
        self.server
            .received_requests()
            .await
            .map_or(0, |r| r.iter().filter(|r| r.url.path().ends_with(&suffix)).count())
    }
}

/// # Endpoint mocks
impl MockHomeserver {
    /// A mock of `GET /rooms/{room}/state` (an empty state unless given events or a response).
    pub fn state(&self, room: &str) -> StateMock<'_> {
        StateMock { server: &self.server, room: room.to_owned(), events: Vec::new(), response: None }
    }

    /// A mock of one page of `GET /rooms/{room}/messages` (by default: no events, `start`
    /// `s_live`, no `end`, for requests without `from`).
    pub fn messages(&self, room: &str) -> MessagesMock<'_> {
        MessagesMock {
            server: &self.server,
            room: room.to_owned(),
            from: None,
            start: "s_live".into(),
            end: None,
            events: Vec::new(),
            response: None,
            times: None,
            priority: None,
        }
    }

    /// Mounts an empty state for `room` (the common prelude of timeline tests).
    pub async fn empty_state(&self, room: &str) {
        self.state(room).mount().await;
    }

    /// Starts a homeserver with an empty state for [`ROOM`] whose `/messages` answers `response`
    /// every time.
    pub async fn with_messages_response(response: ResponseTemplate) -> Self {
        let hs = Self::start().await;
        hs.empty_state(ROOM).await;
        hs.messages(ROOM).respond(response).mount().await;
        hs
    }

    /// Mounts an empty state for `room` and a first `/messages` page that answers `failure` the
    /// first `times` times, then `messages` text messages (`$e0`..): a failure a retry overcomes.
    pub async fn first_page_fails(&self, room: &str, failure: ResponseTemplate, times: u64, messages: usize) {
        self.empty_state(room).await;
        self.messages(room).respond(failure).times(times).priority(1).mount().await;
        self.messages(room).page(ev::texts_newest_first(0, messages)).mount().await;
    }
}

/// Matches `/_matrix/client/v3/rooms/{room}/{endpoint}` with the room id percent-decoded.
struct RoomPath {
    room: String,
    endpoint: &'static str,
}

impl Match for RoomPath {
    fn matches(&self, request: &Request) -> bool {
        let path = percent_decode(request.url.path());
        path == format!("/_matrix/client/v3/rooms/{}/{}", self.room, self.endpoint)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The bearer-token matcher of the endpoint mocks.
fn authorised() -> impl Match + 'static {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

/// Builder of a `GET /rooms/{room}/state` mock ([`MockHomeserver::state`]).
#[must_use = "a mock does nothing until mounted"]
pub struct StateMock<'a> {
    server: &'a MockServer,
    room: String,
    events: Vec<Value>,
    response: Option<ResponseTemplate>,
}

impl StateMock<'_> {
    /// Answers these state events.
    pub fn events(mut self, events: Vec<Value>) -> Self {
        self.events = events;
        self
    }

    /// Answers a custom response instead of the events.
    pub fn respond(mut self, response: ResponseTemplate) -> Self {
        self.response = Some(response);
        self
    }

    /// Mounts the mock (for requests with the bearer token [`TOKEN`]).
    pub async fn mount(self) {
        let response = self
            .response
            .unwrap_or_else(|| ResponseTemplate::new(200).set_body_json(Value::Array(self.events)));
        Mock::given(method("GET"))
            .and(RoomPath { room: self.room, endpoint: "state" })
            .and(authorised())
            .respond_with(response)
            .mount(self.server)
            .await;
    }
}

/// Builder of a `GET /rooms/{room}/messages` page mock ([`MockHomeserver::messages`]).
#[must_use = "a mock does nothing until mounted"]
pub struct MessagesMock<'a> {
    server: &'a MockServer,
    room: String,
    from: Option<String>,
    start: String,
    end: Option<String>,
    events: Vec<Value>,
    response: Option<ResponseTemplate>,
    times: Option<u64>,
    priority: Option<u8>,
}

impl MessagesMock<'_> {
    /// Answers only requests with `from=token` (without it: only requests without `from`).
    pub fn from(mut self, token: &str) -> Self {
        self.from = Some(token.to_owned());
        self
    }

    /// The page's `chunk` (newest first for `dir=b`).
    pub fn page(mut self, events: Vec<Value>) -> Self {
        self.events = events;
        self
    }

    /// The page's `start` token (default `s_live`).
    pub fn start(mut self, token: &str) -> Self {
        self.start = token.to_owned();
        self
    }

    /// The page's `end` token (default: none, the last page).
    pub fn end(mut self, token: &str) -> Self {
        self.end = Some(token.to_owned());
        self
    }

    /// Replaces the page by a custom response.
    pub fn respond(mut self, response: ResponseTemplate) -> Self {
        self.response = Some(response);
        self
    }

    /// Answers at most `n` times (then later mocks take over).
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Takes precedence over mocks with a larger number (default 5).
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = Some(p);
        self
    }

    /// The JSON page this mock answers (unless given a custom response).
    pub fn body(&self) -> Value {
        let mut body = json!({ "start": self.start, "chunk": self.events });
        if let Some(end) = &self.end {
            body["end"] = json!(end);
        }
        body
    }

    /// Mounts the mock (for requests with the bearer token [`TOKEN`]).
    pub async fn mount(self) {
        let response = match &self.response {
            Some(r) => r.clone(),
            None => ResponseTemplate::new(200).set_body_json(self.body()),
        };
        let mut mock = Mock::given(method("GET"))
            .and(RoomPath { room: self.room, endpoint: "messages" })
            .and(authorised());
        mock = match &self.from {
            Some(from) => mock.and(query_param("from", from.as_str())),
            None => mock.and(query_param_is_missing("from")),
        };
        let mut mock = mock.respond_with(response);
        if let Some(n) = self.times {
            mock = mock.up_to_n_times(n);
        }
        if let Some(p) = self.priority {
            mock = mock.with_priority(p);
        }
        mock.mount(self.server).await;
    }
}

/// Builders of timeline events in [`ROOM`], for the endpoint mocks.
pub mod ev {
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

/// # Benchmark pages
impl MockHomeserver {
    /// Starts a homeserver that does not record requests ([`Self::start_unrecorded`]) serving
    /// `pages` benchmark pages ([`Self::serve_bench_pages`]); returns it with the prepared page
    /// bodies (`None` unless `prepared`).
    pub async fn start_bench(pages: usize, prepared: bool) -> (Self, Option<Arc<Vec<Vec<u8>>>>) {
        let hs = Self::start_unrecorded().await;
        let bodies = hs.serve_bench_pages(pages, prepared).await;
        (hs, bodies)
    }

    /// Mounts a responder that answers every `GET`, whatever the token: a path ending with
    /// `/state` an empty state, any other one backwards page `N` of `pages` of the room
    /// [`bench::ROOM`] ([`bench::page_body`]) for `from=tN`, page 0 without `from` (and the last
    /// page past the end). The pages are prepared in memory when `prepared` (and returned), or
    /// generated on each request (to keep the server's own memory out of a measurement).
    ///
    /// # Panics
    ///
    /// When `pages` is 0.
    pub async fn serve_bench_pages(&self, pages: usize, prepared: bool) -> Option<Arc<Vec<Vec<u8>>>> {
        assert!(pages > 0, "a benchmark room has at least one page");
        let bodies =
            prepared.then(|| Arc::new((0..pages).map(|p| bench::page_body(p, pages)).collect::<Vec<_>>()));
        Mock::given(method("GET"))
            .respond_with(BenchPages { bodies: bodies.clone(), pages })
            .mount(&self.server)
            .await;
        bodies
    }
}

/// The benchmark responder ([`MockHomeserver::serve_bench_pages`]).
struct BenchPages {
    bodies: Option<Arc<Vec<Vec<u8>>>>,
    pages: usize,
}

impl Respond for BenchPages {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.url.path().ends_with("/state") {
            return ResponseTemplate::new(200).set_body_raw("[]", "application/json");
        }
        let p = bench::page_index(request).min(self.pages - 1);
        let body = match &self.bodies {
            Some(bodies) => bodies[p].clone(),
            None => bench::page_body(p, self.pages),
        };
        ResponseTemplate::new(200).set_body_raw(body, "application/json")
    }
}

/// The room, events and pages of the benchmarks ([`MockHomeserver::serve_bench_pages`]).
pub mod bench {
    use serde_json::{Value, json};
    use wiremock::Request;

    /// The room the benchmarks read.
    pub const ROOM: &str = "!bench:tchap.test";
    /// Events per page.
    pub const PAGE_EVENTS: usize = 1000;

    /// Timeline event `i` of [`ROOM`], realistic: mostly text, some replies, edits (by the
    /// sender of the message they edit), images and membership changes.
    pub fn event(i: usize) -> Value {
        let id = format!("$ev{i:08}_AbCdEfGhIjKlMnOpQrStUvWxYz012345");
        // An edit (i % 20 == 1) comes from the sender of the message it edits.
        let author = if i % 20 == 1 { i - 1 } else { i };
        let sender = format!("@agent{}-interieur.gouv.fr:agent.tchap.gouv.fr", author % 37);
        let ts = 1_700_000_000_000_i64 + i as i64 * 1000;
        let body = format!(
            "Point de situation {i} : rien à signaler sur le secteur nord, équipe relevée à l'heure prévue."
        );
        let content = match i % 20 {
            0 => {
                json!({"msgtype": "m.image", "body": "photo.jpg", "url": "mxc://agent.tchap.gouv.fr/AbCdEfGh", "info": {"mimetype": "image/jpeg", "size": 123_456, "w": 800, "h": 600}})
            }
            1 if i > 1 => {
                json!({"msgtype": "m.text", "body": format!("* {body}"), "m.new_content": {"msgtype": "m.text", "body": body}, "m.relates_to": {"rel_type": "m.replace", "event_id": format!("$ev{:08}_AbCdEfGhIjKlMnOpQrStUvWxYz012345", i - 1)}})
            }
            2 => {
                json!({"msgtype": "m.text", "body": body, "m.relates_to": {"m.in_reply_to": {"event_id": format!("$ev{:08}_AbCdEfGhIjKlMnOpQrStUvWxYz012345", i.saturating_sub(2))}}})
            }
            3 => {
                return json!({"type": "m.room.member", "state_key": sender, "sender": sender, "event_id": id, "origin_server_ts": ts, "room_id": ROOM, "content": {"membership": "join", "displayname": "Agent"}, "unsigned": {"age": 1234}});
            }
            _ => json!({"msgtype": "m.text", "body": body}),
        };
        json!({"type": "m.room.message", "event_id": id, "sender": sender, "origin_server_ts": ts, "room_id": ROOM, "content": content, "unsigned": {"age": 1234}})
    }

    /// The JSON body of backwards page `p` of `pages` (page 0 is the newest): [`PAGE_EVENTS`]
    /// events newest first, `start` `tP` and, but on the last page, `end` `tP+1`.
    pub fn page_body(p: usize, pages: usize) -> Vec<u8> {
        let newest = (pages - p) * PAGE_EVENTS;
        let chunk: Vec<Value> = (newest - PAGE_EVENTS..newest).rev().map(event).collect();
        let mut body = json!({"start": format!("t{p}"), "chunk": chunk});
        if p + 1 < pages {
            body["end"] = json!(format!("t{}", p + 1));
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The page index a request asks for: `N` for `from=tN`, 0 without `from` (the first page).
    pub fn page_index(request: &Request) -> usize {
        request
            .url
            .query_pairs()
            .find(|(k, _)| k == "from")
            .and_then(|(_, v)| v.strip_prefix('t').and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }
}
