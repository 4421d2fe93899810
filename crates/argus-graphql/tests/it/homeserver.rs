//! A small mock Matrix homeserver (wiremock on 127.0.0.1) serving any room on demand:
//! `!forbidden…` answers M_FORBIDDEN, `!missing…` answers M_NOT_FOUND, a wrong token answers
//! M_UNKNOWN_TOKEN, and every other room has the number of messages given with
//! [`MockHomeserver::room`] (default 3), named after the room.
//!
//! Shared with the server's tests (`#[path]`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

/// The Matrix token every test uses; tests assert it never leaks.
pub(crate) const MATRIX_TOKEN: &str = "syt_YXJndXM_SECRETmatrixTOKEN_0a1b2c";

/// Base of the synthetic `origin_server_ts`: 2026-01-01T00:00:00Z.
pub(crate) const BASE_TS: i64 = 1_767_225_600_000;

/// A running mock homeserver.
pub(crate) struct MockHomeserver {
    server: MockServer,
    rooms: Arc<Mutex<HashMap<String, usize>>>,
}

struct Responder {
    rooms: Arc<Mutex<HashMap<String, usize>>>,
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn error(status: u16, errcode: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "errcode": errcode, "error": "mock" }))
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorised = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {MATRIX_TOKEN}"));
        if !authorised {
            return error(401, "M_UNKNOWN_TOKEN");
        }
        let path = percent_decode(request.url.path());
        let Some(rest) = path.strip_prefix("/_matrix/client/v3/rooms/") else {
            return error(404, "M_UNRECOGNIZED");
        };
        let Some((room, endpoint)) = rest.rsplit_once('/') else {
            return error(404, "M_UNRECOGNIZED");
        };
        if room.starts_with("!forbidden") {
            return error(403, "M_FORBIDDEN");
        }
        if room.starts_with("!missing") {
            return error(404, "M_NOT_FOUND");
        }
        let count = self.rooms.lock().map(|m| m.get(room).copied().unwrap_or(3)).unwrap_or(3);
        match endpoint {
            "state" => ResponseTemplate::new(200).set_body_json(state(room)),
            "messages" => {
                let forward = request.url.query_pairs().any(|(k, v)| k == "dir" && v == "f");
                if forward {
                    // Nothing new since the last read.
                    let from =
                        request.url.query_pairs().find(|(k, _)| k == "from").map(|(_, v)| v.into_owned());
                    ResponseTemplate::new(200).set_body_json(json!({ "start": from, "chunk": [] }))
                } else {
                    let chunk: Vec<Value> = (0..count).rev().map(|i| message(room, i)).collect();
                    ResponseTemplate::new(200).set_body_json(json!({ "start": "s_live_1", "chunk": chunk }))
                }
            }
            _ => error(404, "M_UNRECOGNIZED"),
        }
    }
}

fn state(room: &str) -> Value {
    let ev = |kind: &str, key: &str, content: Value| {
        json!({
            "type": kind, "state_key": key, "event_id": format!("$state-{kind}-{key}"),
            "sender": "@alice:tchap.test", "origin_server_ts": BASE_TS, "room_id": room, "content": content,
        })
    };
    json!([
        ev("m.room.create", "", json!({ "creator": "@alice:tchap.test", "room_version": "10" })),
        ev("m.room.name", "", json!({ "name": format!("Salle {room}") })),
        ev("m.room.topic", "", json!({ "topic": "Cellule de crise" })),
        ev("m.room.member", "@alice:tchap.test", json!({ "membership": "join" })),
        ev("m.room.member", "@bob:tchap.test", json!({ "membership": "join" })),
    ])
}

/// The `i`-th message of `room`, one minute apart.
fn message(room: &str, i: usize) -> Value {
    let opaque: String = room.chars().filter(char::is_ascii_alphanumeric).collect();
    let i64_i = i64::try_from(i).unwrap_or(0);
    json!({
        "type": "m.room.message", "event_id": format!("$m{i}-{opaque}"), "sender": "@alice:tchap.test",
        "origin_server_ts": BASE_TS + i64_i * 60_000, "room_id": room,
        "content": { "msgtype": "m.text", "body": format!("message {i}") },
    })
}

impl MockHomeserver {
    /// Starts the mock.
    pub(crate) async fn start() -> Self {
        let server = MockServer::start().await;
        let rooms = Arc::new(Mutex::new(HashMap::new()));
        Mock::given(method("GET")).respond_with(Responder { rooms: Arc::clone(&rooms) }).mount(&server).await;
        Self { server, rooms }
    }

    /// The base URL (http://127.0.0.1:port).
    pub(crate) fn url(&self) -> String {
        self.server.uri()
    }

    /// Gives `room` `count` messages.
    pub(crate) fn room(&self, room: &str, count: usize) {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.insert(room.to_owned(), count);
        }
    }
}
