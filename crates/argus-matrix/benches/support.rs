//! A local mock homeserver serving prepared `/messages` pages, shared by the benchmarks.

use std::sync::Arc;

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

/// The room the benchmarks read.
pub(crate) const ROOM: &str = "!bench:tchap.test";
/// Events per page.
pub(crate) const PAGE_EVENTS: usize = 1000;

/// One realistic timeline event: mostly text, some replies, edits, media and state.
pub(crate) fn event(i: usize) -> Value {
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

/// The body of backwards page `p` of `pages` (page 0 is the newest).
pub(crate) fn page_body(p: usize, pages: usize) -> Vec<u8> {
    let newest = (pages - p) * PAGE_EVENTS;
    let chunk: Vec<Value> = (newest - PAGE_EVENTS..newest).rev().map(event).collect();
    let mut body = json!({"start": format!("t{p}"), "chunk": chunk});
    if p + 1 < pages {
        body["end"] = json!(format!("t{}", p + 1));
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The page index a request asks for (`from=tN`, none for the first page).
pub(crate) fn page_index(request: &Request) -> usize {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == "from")
        .and_then(|(_, v)| v.strip_prefix('t').and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Serves `/state` and the pages of a room.
struct Homeserver {
    pages: Option<Arc<Vec<Vec<u8>>>>,
    count: usize,
}

impl Respond for Homeserver {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.url.path().ends_with("/state") {
            return ResponseTemplate::new(200).set_body_raw("[]", "application/json");
        }
        let p = page_index(request).min(self.count - 1);
        let body = match &self.pages {
            Some(pages) => pages[p].clone(),
            None => page_body(p, self.count),
        };
        ResponseTemplate::new(200).set_body_raw(body, "application/json")
    }
}

/// Starts a homeserver with `count` pages, prepared in memory (`prepared`) or generated on
/// each request (to keep the server's own memory out of a measurement).
pub(crate) async fn start(count: usize, prepared: bool) -> (MockServer, Option<Arc<Vec<Vec<u8>>>>) {
    let server = MockServer::builder().disable_request_recording().start().await;
    let pages = prepared.then(|| Arc::new((0..count).map(|p| page_body(p, count)).collect::<Vec<_>>()));
    Mock::given(method("GET")).respond_with(Homeserver { pages: pages.clone(), count }).mount(&server).await;
    (server, pages)
}
