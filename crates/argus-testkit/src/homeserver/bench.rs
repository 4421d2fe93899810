//! The room, events and pages of the benchmarks ([`MockHomeserver::serve_bench_pages`]).

use std::sync::Arc;

use serde_json::{Value, json};
use wiremock::{Mock, Request, Respond, ResponseTemplate, matchers::method};

use super::MockHomeserver;

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
    /// [`ROOM`] ([`page_body`]) for `from=tN`, page 0 without `from` (and the last
    /// page past the end). The pages are prepared in memory when `prepared` (and returned), or
    /// generated on each request (to keep the server's own memory out of a measurement).
    ///
    /// # Panics
    ///
    /// When `pages` is 0.
    pub async fn serve_bench_pages(&self, pages: usize, prepared: bool) -> Option<Arc<Vec<Vec<u8>>>> {
        assert!(pages > 0, "a benchmark room has at least one page");
        let bodies = prepared.then(|| Arc::new((0..pages).map(|p| page_body(p, pages)).collect::<Vec<_>>()));
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
        let p = page_index(request).min(self.pages - 1);
        let body = match &self.bodies {
            Some(bodies) => bodies[p].clone(),
            None => page_body(p, self.pages),
        };
        ResponseTemplate::new(200).set_body_raw(body, "application/json")
    }
}
