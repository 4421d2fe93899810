//! GraphQL over WebSocket against the real server, with a real WebSocket client
//! (`tokio-tungstenite`), on SQLite and PostgreSQL: `connection_init` with a valid token is
//! acknowledged and a message stored afterwards arrives as `next`; a token refused closes the
//! connection with 4403; a token that expires ends the subscription and the connection; a
//! subscriber of a lower clearance or another organisation receives nothing while the
//! permitted one receives the message.

use std::time::{Duration, Instant};

use argus_domain::{
    Classification::{self, Restricted, Secret, TopSecret, Unclassified},
    Scope,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder},
};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest as _, http::HeaderValue},
};

use crate::harness::TestServer;

const SUBSCRIPTION: &str = "subscription { tchapMessagesAdded { eventId roomId body classification } }";

/// Longer than the subscriptions' poll interval: what would arrive has arrived by then.
const SETTLED: Duration = Duration::from_millis(2_500);

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server sent.
#[derive(Debug, PartialEq)]
enum Event {
    /// A protocol message (the server's keep-alive `pong`s are skipped).
    Json(Value),
    /// The close frame's code and reason (1006 when the connection ended without one).
    Closed(u16, String),
    /// Nothing within the wait.
    Quiet,
}

struct Client {
    socket: Socket,
}

impl Client {
    /// Opens a connection offering `graphql-transport-ws` (or no subprotocol).
    async fn open(server: &TestServer, protocol: bool) -> Self {
        let mut request = server.ws_url().into_client_request().unwrap_or_else(|e| panic!("request: {e}"));
        if protocol {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
        }
        let (socket, response) = connect_async(request).await.unwrap_or_else(|e| panic!("connect: {e}"));
        assert_eq!(
            response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()),
            Some("graphql-transport-ws")
        );
        Self { socket }
    }

    /// Opens a connection and sends `connection_init` with `payload`.
    async fn init(server: &TestServer, payload: Value) -> Self {
        let mut client = Self::open(server, true).await;
        client.send(json!({ "type": "connection_init", "payload": payload })).await;
        client
    }

    /// A connection acknowledged for `token`, subscribed as operation `1`, once the server counts
    /// `open` subscriptions (the protocol does not confirm a subscription: what is stored before
    /// it started is not new to it).
    async fn subscribed(server: &TestServer, token: &str, open: u64) -> Self {
        let mut client = Self::init(server, json!({ "Authorization": format!("Bearer {token}") })).await;
        assert_eq!(
            client.next(Duration::from_secs(5)).await,
            Event::Json(json!({ "type": "connection_ack" }))
        );
        client.subscribe("1", SUBSCRIPTION).await;
        wait_for_open(server, open).await;
        client
    }

    async fn send(&mut self, message: Value) {
        self.socket.send(Message::text(message.to_string())).await.unwrap_or_else(|e| panic!("send: {e}"));
    }

    async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query } })).await;
    }

    /// The next event within `wait`.
    async fn next(&mut self, wait: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return Event::Quiet;
            };
            match frame {
                None | Some(Err(_)) => return Event::Closed(1006, String::new()),
                Some(Ok(Message::Text(text))) => {
                    let value: Value =
                        serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{e}: {text}"));
                    if value["type"] != "pong" {
                        return Event::Json(value);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(Event::Closed(1005, String::new()), |f| {
                        Event::Closed(u16::from(f.code), f.reason.as_str().to_owned())
                    });
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The event ids of the `next` messages of operation `1` that arrive within `wait`, until
    /// the connection goes quiet or closes.
    async fn received(&mut self, wait: Duration) -> Vec<String> {
        let mut ids = Vec::new();
        while let Event::Json(message) = self.next(wait).await {
            assert_eq!((&message["type"], &message["id"]), (&json!("next"), &json!("1")), "{message}");
            ids.push(
                message["payload"]["data"]["tchapMessagesAdded"]["eventId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        ids
    }
}

/// The server's `argus_graphql_subscriptions_open`.
async fn open_subscriptions(server: &TestServer) -> Option<u64> {
    let response = server.client.get(server.url("/metrics")).send().await.ok()?;
    let text = response.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("argus_graphql_subscriptions_open "))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits until the server counts `open` subscriptions.
async fn wait_for_open(server: &TestServer, open: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_subscriptions(server).await != Some(open) {
        assert!(
            Instant::now() < deadline,
            "{:?} subscriptions open, not {open}",
            open_subscriptions(server).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stores one message of `room` in `org` at `classification` straight into the store.
async fn store(
    store: &argus_store::Store,
    org: &str,
    classification: Classification,
    room: &str,
    event: &str,
) {
    let viewer = ViewerBuilder::new(org).actor(&format!("writer@{org}")).clearance(TopSecret).build();
    let run =
        argus_store::IngestionRun { viewer, classification, started_at: time::OffsetDateTime::now_utc() };
    let message = MessageRecordBuilder::new(event).body(format!("body of {event}")).build();
    let snapshot = RoomSnapshotBuilder::new(room).messages([message]).build();
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.record_ingestion(&run, &snapshot))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn a_valid_token_is_acknowledged_and_a_message_stored_afterwards_arrives(postgres: bool) {
    let Some((server, store_)) = TestServer::start_on(postgres).await else { return };
    store(&store_, "dgsi", Restricted, "!a:tchap.test", "$before").await;
    let token = server.token("dgsi", Secret, &[Scope::Read]);
    let mut client = Client::subscribed(&server, &token, 1).await;
    // The key `token`, and `authorization` in any case, are accepted too.
    let mut by_token = Client::init(&server, json!({ "token": token })).await;
    assert_eq!(by_token.next(Duration::from_secs(5)).await, Event::Json(json!({ "type": "connection_ack" })));
    let mut lower_case = Client::init(&server, json!({ "authorization": format!("bearer {token}") })).await;
    assert_eq!(
        lower_case.next(Duration::from_secs(5)).await,
        Event::Json(json!({ "type": "connection_ack" }))
    );

    store(&store_, "dgsi", Restricted, "!a:tchap.test", "$after").await;
    assert_eq!(
        client.next(SETTLED).await,
        Event::Json(json!({
            "type": "next", "id": "1",
            "payload": { "data": { "tchapMessagesAdded": {
                "eventId": "$after", "roomId": "!a:tchap.test", "body": "body of $after", "classification": "RESTRICTED"
            } } }
        }))
    );
    assert_eq!(client.next(SETTLED).await, Event::Quiet, "delivered twice, or a message from before");
    assert_eq!(open_subscriptions(&server).await, Some(1));
    // The client completes its subscription (juniper confirms it); the connection stays open.
    client.send(json!({ "type": "complete", "id": "1" })).await;
    assert_eq!(
        client.next(Duration::from_secs(5)).await,
        Event::Json(json!({ "type": "complete", "id": "1" }))
    );
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.next(Duration::from_secs(2)).await, Event::Quiet);
    drop((by_token, lower_case));
    wait_for_open(&server, 0).await;
    server.stop().await;
}

#[tokio::test]
async fn sqlite_a_valid_token_is_acknowledged_and_a_message_stored_afterwards_arrives() {
    a_valid_token_is_acknowledged_and_a_message_stored_afterwards_arrives(false).await;
}

#[tokio::test]
async fn postgres_a_valid_token_is_acknowledged_and_a_message_stored_afterwards_arrives() {
    a_valid_token_is_acknowledged_and_a_message_stored_afterwards_arrives(true).await;
}

async fn only_the_permitted_subscriber_receives_the_message(postgres: bool) {
    let Some((server, store_)) = TestServer::start_on(postgres).await else { return };
    let mut permitted = Client::subscribed(&server, &server.token("dgsi", Secret, &[Scope::Read]), 1).await;
    let mut lower = Client::subscribed(&server, &server.token("dgsi", Restricted, &[Scope::Read]), 2).await;
    let mut other_org =
        Client::subscribed(&server, &server.token("anssi", TopSecret, &[Scope::Read]), 3).await;
    let mut no_read =
        Client::init(&server, json!({ "token": server.token("dgsi", TopSecret, &[Scope::Ingest]) })).await;
    assert_eq!(no_read.next(Duration::from_secs(5)).await, Event::Json(json!({ "type": "connection_ack" })));
    no_read.subscribe("1", SUBSCRIPTION).await;
    let Event::Json(refused) = no_read.next(Duration::from_secs(5)).await else { panic!("no answer") };
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");

    store(&store_, "dgsi", Secret, "!s:tchap.test", "$secret").await;
    store(&store_, "anssi", Unclassified, "!u:tchap.test", "$anssi").await;
    assert_eq!(permitted.received(SETTLED).await, ["$secret"]);
    assert_eq!(lower.received(SETTLED).await, Vec::<String>::new());
    assert_eq!(other_org.received(SETTLED).await, ["$anssi"]);
    // A server that stops closes its connections at once, going away.
    server.stop().await;
    for client in [&mut permitted, &mut lower, &mut other_org] {
        assert!(matches!(client.next(Duration::from_secs(5)).await, Event::Closed(1001, _)));
    }
}

#[tokio::test]
async fn sqlite_only_the_permitted_subscriber_receives_the_message() {
    only_the_permitted_subscriber_receives_the_message(false).await;
}

#[tokio::test]
async fn postgres_only_the_permitted_subscriber_receives_the_message() {
    only_the_permitted_subscriber_receives_the_message(true).await;
}

#[tokio::test]
async fn a_refused_or_missing_token_closes_the_connection_with_4403() {
    let server = TestServer::start().await;
    let good = server.token("dgsi", Secret, &[Scope::Read]);
    let (head, _) = good.rsplit_once('.').unwrap_or_else(|| panic!("not a JWT"));
    let forged = format!("{head}.c2lnbmF0dXJl");
    let expired = server.token_for("dgsi", Secret, &[Scope::Read], Duration::ZERO);
    let cases = [
        ("no payload", json!(null)),
        ("no token", json!({ "other": "value" })),
        ("a bad signature", json!({ "Authorization": format!("Bearer {forged}") })),
        ("not a bearer token", json!({ "Authorization": format!("Basic {good}") })),
        ("garbage", json!({ "token": "a.b.c" })),
    ];
    for (why, payload) in cases {
        let mut client = Client::init(&server, payload).await;
        let Event::Closed(code, reason) = client.next(Duration::from_secs(5)).await else {
            panic!("{why}: not closed")
        };
        assert_eq!(code, 4403, "{why}: {reason}");
        assert!(reason.starts_with("Forbidden"), "{why}: {reason}");
        assert!(
            !reason.contains(&good[..20]) && !reason.contains("c2lnbmF0dXJl"),
            "{why}: the token is echoed"
        );
    }
    // A token already past its expiry (within the leeway a request has) is admitted and closed
    // at once.
    let mut client = Client::init(&server, json!({ "token": expired })).await;
    let mut events = Vec::new();
    while let event @ (Event::Json(_) | Event::Closed(..)) = client.next(Duration::from_secs(3)).await {
        let closed = matches!(event, Event::Closed(..));
        events.push(event);
        if closed {
            break;
        }
    }
    assert!(matches!(events.last(), Some(Event::Closed(4403, _))), "{events:?}");
    // Subscribing before connection_init: 4401.
    let mut early = Client::open(&server, true).await;
    early.subscribe("1", SUBSCRIPTION).await;
    assert!(matches!(early.next(Duration::from_secs(5)).await, Event::Closed(4401, _)));
    server.stop().await;
}

#[tokio::test]
async fn a_token_that_expires_ends_the_subscription_and_the_connection() {
    let server = TestServer::start().await;
    let token = server.token_for("dgsi", Secret, &[Scope::Read], Duration::from_secs(2));
    let started = Instant::now();
    let mut client = Client::subscribed(&server, &token, 1).await;
    let mut events = Vec::new();
    let ended = loop {
        match client.next(Duration::from_secs(6)).await {
            Event::Quiet => panic!("still open past the token's expiry: {events:?}"),
            Event::Closed(code, reason) => break (code, reason),
            Event::Json(message) => events.push(message),
        }
    };
    let elapsed = started.elapsed();
    // `exp` has a resolution of one second: the token lived between one and two seconds.
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(ended.0, 4403, "{ended:?}");
    assert!(ended.1.contains("expired"), "{ended:?}");
    // The subscription itself ended first, saying why, when the client heard it before the close.
    for message in &events {
        match message["type"].as_str() {
            Some("next") => {
                assert_eq!(message["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED")
            }
            Some("complete") => assert_eq!(message["id"], "1"),
            _ => panic!("unexpected {message}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_protocol_is_enforced() {
    let server = TestServer::start().await;
    // Without the subprotocol, no upgrade.
    let mut request = server.ws_url().into_client_request().unwrap_or_else(|e| panic!("{e}"));
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-ws"));
    assert!(connect_async(request).await.is_err(), "upgraded without graphql-transport-ws");
    // A message that is not of the protocol: 4400; one larger than the body limit: 1009.
    let mut client = Client::open(&server, true).await;
    client.socket.send(Message::text("{\"type\":\"hello\"}")).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(client.next(Duration::from_secs(5)).await, Event::Closed(4400, _)));
    let mut client = Client::open(&server, true).await;
    let huge = json!({ "type": "connection_init", "payload": { "token": "x".repeat(70 * 1024) } });
    let _ = client.socket.send(Message::text(huge.to_string())).await;
    assert!(matches!(client.next(Duration::from_secs(5)).await, Event::Closed(1009, _)));
    // Subscriptions are not served over HTTP.
    let (status, body) =
        server.graphql(&server.token("dgsi", Secret, &[Scope::Read]), SUBSCRIPTION, json!({})).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].clone()),
        (200, json!("OPERATION_NOT_SUPPORTED"))
    );
    server.stop().await;
}
