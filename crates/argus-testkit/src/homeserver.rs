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

mod any_room;
pub mod bench;
pub mod ev;

use std::sync::Arc;

use serde_json::{Value, json};
use wiremock::{
    Match, Mock, MockServer, Request, ResponseTemplate,
    matchers::{header, method, query_param, query_param_is_missing},
};

use any_room::Rooms;
pub use any_room::{EDIT_REACH, SLOW_PAGE};

/// The access token the endpoint mocks require; tests assert it never leaks.
pub const TOKEN: &str = "syt_YWxpY2U_SECRETsecretSECRET_1a2b3c";

/// The room most endpoint-mock tests read (and the `room_id` of the events of [`ev`]).
pub const ROOM: &str = "!crise:tchap.test";

/// The access token the any-room responder accepts; tests assert it never leaks.
pub const MATRIX_TOKEN: &str = "syt_YXJndXM_SECRETmatrixTOKEN_0a1b2c";

/// Base of the any-room responder's synthetic `origin_server_ts`: 2026-01-01T00:00:00Z.
pub const BASE_TS: i64 = 1_767_225_600_000;

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
