//! A wiremock homeserver with readable builders, in the style of matrix-rust-sdk's
//! `MatrixMockServer`: `mock.messages(room).page(events).end("t2").mount().await`.

use std::time::Duration;

use argus_domain::{AccessToken, HomeserverUrl, RoomId, RoomSnapshot};
use argus_matrix::{Connector, ConnectorConfig, FetchOptions};
use serde_json::{Value, json};
use wiremock::{
    Match, Mock, MockServer, Request, ResponseTemplate,
    matchers::{header, method, query_param, query_param_is_missing},
};

/// The token every test uses; tests assert it never leaks.
pub(crate) const TOKEN: &str = "syt_YWxpY2U_SECRETsecretSECRET_1a2b3c";

/// The room most tests read.
pub(crate) const ROOM: &str = "!crise:tchap.test";

/// A mock homeserver.
pub(crate) struct MockHomeserver {
    pub(crate) server: MockServer,
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

impl MockHomeserver {
    pub(crate) async fn start() -> Self {
        Self { server: MockServer::start().await }
    }

    /// The homeserver URL (plain http on 127.0.0.1).
    pub(crate) fn url(&self) -> HomeserverUrl {
        self.server.uri().parse().unwrap_or_else(|e| panic!("mock url: {e}"))
    }

    /// A configuration that exempts 127.0.0.1 and keeps retries and waits short.
    pub(crate) fn config() -> ConnectorConfig {
        ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            run_deadline: Duration::from_secs(20),
            max_retries: 3,
            max_retry_wait: Duration::from_secs(2),
            ..ConnectorConfig::default()
        }
    }

    /// A connector with [`MockHomeserver::config`].
    pub(crate) fn connector() -> Connector {
        Connector::new(Self::config()).unwrap_or_else(|e| panic!("connector: {e}"))
    }

    pub(crate) fn token() -> AccessToken {
        AccessToken::new(TOKEN)
    }

    pub(crate) fn room() -> RoomId {
        ROOM.parse().unwrap_or_else(|e| panic!("room: {e}"))
    }

    /// Mocks `/state` of a room.
    pub(crate) fn state(&self, room: &str) -> StateMock<'_> {
        StateMock { server: &self.server, room: room.to_owned(), events: Vec::new(), response: None }
    }

    /// Mocks one page of `/messages` of a room.
    pub(crate) fn messages(&self, room: &str) -> MessagesMock<'_> {
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

    /// Mocks an empty room state (the common prelude of timeline tests).
    pub(crate) async fn empty_state(&self, room: &str) {
        self.state(room).mount().await;
    }

    /// A homeserver with an empty room state whose `/messages` answers `response` every time.
    pub(crate) async fn with_messages_response(response: ResponseTemplate) -> Self {
        let hs = Self::start().await;
        hs.empty_state(ROOM).await;
        hs.messages(ROOM).respond(response).mount().await;
        hs
    }

    /// Reads [`ROOM`] from this homeserver with `connector`, the test token and default options.
    pub(crate) async fn read_with(&self, connector: &Connector) -> argus_matrix::Result<RoomSnapshot> {
        connector.fetch_room(&self.url(), &Self::token(), &Self::room(), &FetchOptions::default()).await
    }

    /// Mocks an empty room state and a first `/messages` page that answers `failure` the first
    /// `times` times, then `messages` text messages (`$e0`..): a failure a retry overcomes.
    pub(crate) async fn first_page_fails(
        &self,
        room: &str,
        failure: ResponseTemplate,
        times: u64,
        messages: usize,
    ) {
        self.empty_state(room).await;
        self.messages(room).respond(failure).times(times).priority(1).mount().await;
        self.messages(room).page(ev::texts_newest_first(0, messages)).mount().await;
    }

    /// Number of requests received for one endpoint of the Client-Server API (`"state"`,
    /// `"messages"`).
    pub(crate) async fn requests_to(&self, endpoint: &str) -> usize {
        let suffix = format!("/{endpoint}");
        self.server
            .received_requests()
            .await
            .map_or(0, |r| r.iter().filter(|r| r.url.path().ends_with(&suffix)).count())
    }

    /// Number of requests received.
    pub(crate) async fn request_count(&self) -> usize {
        self.server.received_requests().await.map_or(0, |r| r.len())
    }
}

/// Builder of a `/state` mock.
pub(crate) struct StateMock<'a> {
    server: &'a MockServer,
    room: String,
    events: Vec<Value>,
    response: Option<ResponseTemplate>,
}

impl StateMock<'_> {
    pub(crate) fn events(mut self, events: Vec<Value>) -> Self {
        self.events = events;
        self
    }

    pub(crate) fn respond(mut self, response: ResponseTemplate) -> Self {
        self.response = Some(response);
        self
    }

    pub(crate) async fn mount(self) {
        let response = self
            .response
            .unwrap_or_else(|| ResponseTemplate::new(200).set_body_json(Value::Array(self.events)));
        Mock::given(method("GET"))
            .and(RoomPath { room: self.room, endpoint: "state" })
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(response)
            .mount(self.server)
            .await;
    }
}

/// Builder of a `/messages` page mock.
pub(crate) struct MessagesMock<'a> {
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
    pub(crate) fn from(mut self, token: &str) -> Self {
        self.from = Some(token.to_owned());
        self
    }

    pub(crate) fn page(mut self, events: Vec<Value>) -> Self {
        self.events = events;
        self
    }

    pub(crate) fn start(mut self, token: &str) -> Self {
        self.start = token.to_owned();
        self
    }

    pub(crate) fn end(mut self, token: &str) -> Self {
        self.end = Some(token.to_owned());
        self
    }

    /// Replaces the page by a custom response.
    pub(crate) fn respond(mut self, response: ResponseTemplate) -> Self {
        self.response = Some(response);
        self
    }

    /// Answers at most `n` times (then later mocks take over).
    pub(crate) fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Takes precedence over mocks with a larger number (default 5).
    pub(crate) fn priority(mut self, p: u8) -> Self {
        self.priority = Some(p);
        self
    }

    pub(crate) fn body(&self) -> Value {
        let mut body = json!({ "start": self.start, "chunk": self.events });
        if let Some(end) = &self.end {
            body["end"] = json!(end);
        }
        body
    }

    pub(crate) async fn mount(self) {
        let response = match &self.response {
            Some(r) => r.clone(),
            None => ResponseTemplate::new(200).set_body_json(self.body()),
        };
        let mut mock = Mock::given(method("GET"))
            .and(RoomPath { room: self.room, endpoint: "messages" })
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()));
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

/// Builders of timeline events.
pub(crate) mod ev {
    use serde_json::{Value, json};

    use super::ROOM;

    pub(crate) const ALICE: &str = "@alice:tchap.test";
    pub(crate) const BOB: &str = "@bob:tchap.test";

    /// An event of any type in [`ROOM`].
    pub(crate) fn event(kind: &str, id: &str, sender: &str, ts: i64, content: Value) -> Value {
        json!({
            "type": kind, "event_id": id, "sender": sender, "origin_server_ts": ts,
            "room_id": ROOM, "content": content,
        })
    }

    pub(crate) fn msg(id: &str, ts: i64, msgtype: &str, body: &str) -> Value {
        event("m.room.message", id, ALICE, ts, json!({ "msgtype": msgtype, "body": body }))
    }

    pub(crate) fn text(id: &str, ts: i64, body: &str) -> Value {
        msg(id, ts, "m.text", body)
    }

    pub(crate) fn edit(id: &str, ts: i64, target: &str, body: &str) -> Value {
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

    pub(crate) fn redaction_v11(id: &str, ts: i64, target: &str) -> Value {
        event("m.room.redaction", id, BOB, ts, json!({ "redacts": target }))
    }

    pub(crate) fn redaction_old(id: &str, ts: i64, target: &str) -> Value {
        let mut e = event("m.room.redaction", id, BOB, ts, json!({}));
        e["redacts"] = json!(target);
        e
    }

    /// `n` text messages `$e{start}`..`$e{start+n-1}`, newest first (as `dir=b` returns them).
    pub(crate) fn texts_newest_first(start: usize, n: usize) -> Vec<Value> {
        (start..start + n)
            .rev()
            .map(|i| text(&format!("$e{i}"), 1_700_000_000_000 + i as i64, &format!("m{i}")))
            .collect()
    }
}
