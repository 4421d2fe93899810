//! Tests against a real Synapse homeserver started by `argus-testkit`.
//!
//! Rooms are built through the Matrix client-server API, read with the connector, and the
//! snapshot is compared with what a Matrix client sees (raw `/messages`, `/state` and
//! `/joined_members` of the same user). Every test returns early when Synapse is unavailable
//! (`argus-testkit` prints a loud SKIP banner; `ARGUS_REQUIRE_SYNAPSE=1` makes it a failure).

use std::collections::{BTreeSet, HashMap};

use argus_domain::{AccessToken, HomeserverUrl, MessageRecord, RoomId, RoomSnapshot};
use argus_matrix::{Connector, ConnectorConfig, Error, FetchOptions, Session};
use argus_testkit::synapse::{Synapse, TestUser, synapse};
use serde_json::{Value, json};

/// The server, a connector allowed to reach it over loopback, and its URL.
struct Harness {
    server: &'static Synapse,
    connector: Connector,
    homeserver: HomeserverUrl,
}

fn harness() -> Option<Harness> {
    harness_with(ConnectorConfig::default())
}

fn harness_with(config: ConnectorConfig) -> Option<Harness> {
    let server = synapse()?;
    let config = ConnectorConfig { allow_private_addresses: vec!["127.0.0.1".into()], ..config };
    let connector = Connector::new(config).unwrap_or_else(|e| panic!("connector: {e}"));
    let homeserver = server.base_url().parse().unwrap_or_else(|e| panic!("homeserver URL: {e}"));
    Some(Harness { server, connector, homeserver })
}

impl Harness {
    async fn fetch_as(
        &self,
        user: &TestUser,
        room: &str,
        options: &FetchOptions,
    ) -> argus_matrix::Result<RoomSnapshot> {
        let token = AccessToken::new(user.access_token.clone());
        let room: RoomId = room.parse().unwrap_or_else(|e| panic!("room id {room}: {e}"));
        self.connector.fetch_room(&Session::with_token(self.homeserver.clone(), token), &room, options).await
    }

    async fn fetch_all(&self, user: &TestUser, room: &str) -> RoomSnapshot {
        let options = FetchOptions { max_messages: 100_000, since: None, ..FetchOptions::default() };
        self.fetch_as(user, room, &options).await.unwrap_or_else(|e| panic!("fetch_room: {e}"))
    }
}

/// A message as a Matrix client shows it, computed from the raw timeline (independently of the
/// connector's normaliser): the same fields as [`MessageRecord`], in plain types.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    event_id: String,
    sender: String,
    sent_at_ms: i64,
    msgtype: Option<String>,
    body: Option<String>,
    edited: bool,
    redacted: bool,
    encrypted: bool,
    reply_to: Option<String>,
    thread_root: Option<String>,
    media: Option<(Option<String>, Option<String>, Option<u64>)>,
}

impl Seen {
    fn of(record: &MessageRecord) -> Self {
        Self {
            event_id: record.event_id.as_str().to_owned(),
            sender: record.sender.as_str().to_owned(),
            sent_at_ms: i64::try_from(record.sent_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
            msgtype: record.msgtype.clone(),
            body: record.body.clone(),
            edited: record.edited,
            redacted: record.redacted,
            encrypted: record.encrypted,
            reply_to: record.reply_to.as_ref().map(|id| id.as_str().to_owned()),
            thread_root: record.thread_root.as_ref().map(|id| id.as_str().to_owned()),
            media: record.media.as_ref().map(|m| (m.uri.clone(), m.mimetype.clone(), m.size)),
        }
    }
}

/// What a Matrix client sees of a room, from the raw client-server API.
#[derive(Debug)]
struct ClientView {
    name: Option<String>,
    topic: Option<String>,
    canonical_alias: Option<String>,
    encrypted: bool,
    joined: BTreeSet<String>,
    /// Oldest first, edits applied, as a client renders them.
    messages: Vec<Seen>,
}

const MEDIA_TYPES: &[&str] = &["m.image", "m.file", "m.audio", "m.video"];

/// The value of a call that must succeed for the test to make sense.
fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn is_redacted(event: &Value) -> bool {
    !event["unsigned"]["redacted_because"].is_null()
}

async fn client_view(user: &TestUser, room: &str) -> ClientView {
    let state = must(user.state(room).await, "GET state");
    let state = state.as_array().map_or(&[][..], Vec::as_slice);
    let state_content = |kind: &str| {
        state
            .iter()
            .find(|event| event["type"] == kind && event["state_key"] == "")
            .map(|event| event["content"].clone())
    };
    let members = must(user.joined_members(room).await, "GET joined_members");
    let joined =
        members["joined"].as_object().map(|joined| joined.keys().cloned().collect()).unwrap_or_default();

    let mut timeline = must(user.all_messages(room).await, "GET messages");
    timeline.reverse();
    let is_message =
        |event: &Value| matches!(event["type"].as_str(), Some("m.room.message" | "m.room.encrypted"));
    let is_edit = |event: &Value| event["content"]["m.relates_to"]["rel_type"] == "m.replace";

    // The latest valid edit of each original: same sender, not itself redacted.
    let senders: HashMap<&str, &str> = timeline
        .iter()
        .filter_map(|event| Some((event["event_id"].as_str()?, event["sender"].as_str()?)))
        .collect();
    let mut latest_edit: HashMap<String, &Value> = HashMap::new();
    for edit in timeline.iter().filter(|event| event["type"] == "m.room.message" && is_edit(event)) {
        let Some(target) = edit["content"]["m.relates_to"]["event_id"].as_str() else { continue };
        if is_redacted(edit) || senders.get(target) != edit["sender"].as_str().as_ref() {
            continue;
        }
        let key = |event: &Value| {
            (event["origin_server_ts"].as_i64(), event["event_id"].as_str().map(str::to_owned))
        };
        match latest_edit.get(target) {
            Some(previous) if key(previous) >= key(edit) => {}
            _ => {
                latest_edit.insert(target.to_owned(), edit);
            }
        }
    }

    let messages = timeline
        .iter()
        .filter(|event| is_message(event) && (is_redacted(event) || !is_edit(event)))
        .map(|event| {
            let event_id = text(&event["event_id"]).unwrap_or_default();
            let redacted = is_redacted(event);
            let encrypted = event["type"] == "m.room.encrypted";
            let mut seen = Seen {
                event_id: event_id.clone(),
                sender: text(&event["sender"]).unwrap_or_default(),
                sent_at_ms: event["origin_server_ts"].as_i64().unwrap_or_default(),
                msgtype: None,
                body: None,
                edited: false,
                redacted,
                encrypted,
                reply_to: None,
                thread_root: None,
                media: None,
            };
            if redacted {
                return seen;
            }
            let relation = &event["content"]["m.relates_to"];
            if relation["rel_type"] == "m.thread" {
                seen.thread_root = text(&relation["event_id"]);
            }
            if relation["is_falling_back"] != true {
                seen.reply_to = text(&relation["m.in_reply_to"]["event_id"]);
            }
            if encrypted {
                return seen;
            }
            let edit = latest_edit.get(&event_id);
            let content = edit.map_or(&event["content"], |edit| &edit["content"]["m.new_content"]);
            seen.edited = edit.is_some();
            seen.msgtype = text(&content["msgtype"]);
            seen.body = text(&content["body"]);
            if seen.msgtype.as_deref().is_some_and(|t| MEDIA_TYPES.contains(&t)) {
                seen.media = Some((
                    text(&content["url"]).filter(|url| url.starts_with("mxc://")),
                    text(&content["info"]["mimetype"]),
                    content["info"]["size"].as_u64(),
                ));
            }
            seen
        })
        .collect();

    ClientView {
        name: state_content("m.room.name").and_then(|c| text(&c["name"])),
        topic: state_content("m.room.topic").and_then(|c| text(&c["topic"])),
        canonical_alias: state_content("m.room.canonical_alias").and_then(|c| text(&c["alias"])),
        encrypted: state_content("m.room.encryption").is_some(),
        joined,
        messages,
    }
}

/// Asserts the snapshot says what a Matrix client of the same user sees.
fn assert_matches_client(snapshot: &RoomSnapshot, view: &ClientView) {
    assert_eq!(snapshot.name, view.name, "room name");
    assert_eq!(snapshot.topic, view.topic, "room topic");
    assert_eq!(snapshot.canonical_alias, view.canonical_alias, "canonical alias");
    assert_eq!(snapshot.encrypted, view.encrypted, "encryption");
    assert_eq!(snapshot.member_count as usize, view.joined.len(), "joined members {:?}", view.joined);
    let seen: Vec<Seen> = snapshot.messages.iter().map(Seen::of).collect();
    assert_eq!(seen.len(), view.messages.len(), "message count");
    for (got, want) in seen.iter().zip(&view.messages) {
        assert_eq!(got, want);
    }
    assert!(snapshot.edits.is_empty(), "edits outside the read: {:?}", snapshot.edits);
    assert!(snapshot.redactions.is_empty(), "redactions outside the read: {:?}", snapshot.redactions);
    assert_eq!(snapshot.report.messages, seen.len() as u64);
    assert_eq!(snapshot.report.malformed_skipped, 0);
    assert_eq!(snapshot.report.foreign_dropped, 0);
    assert!(!snapshot.report.truncated);
}

fn message<'a>(snapshot: &'a RoomSnapshot, event_id: &str) -> &'a MessageRecord {
    snapshot
        .messages
        .iter()
        .find(|m| m.event_id.as_str() == event_id)
        .unwrap_or_else(|| panic!("{event_id} missing from the snapshot"))
}

#[tokio::test]
async fn a_lived_in_room_matches_what_a_client_sees() {
    let Some(hs) = harness() else { return };
    let alice = hs.server.register("alice").await.unwrap();
    let bob = hs.server.register("bob").await.unwrap();
    let carol = hs.server.register("carol").await.unwrap();

    let room = alice.create_room(Some("Cellule de crise"), Some("Coordination"), false).await.unwrap();
    for user in [&bob, &carol] {
        alice.invite(&room, &user.user_id).await.unwrap();
        user.join(&room).await.unwrap();
    }
    let hello = alice.send_text(&room, "Bonjour à tous").await.unwrap();
    let notice = bob
        .send_message(&room, &json!({"msgtype": "m.notice", "body": "Rappel : réunion à 14 h"}))
        .await
        .unwrap();
    let emote = carol.send_message(&room, &json!({"msgtype": "m.emote", "body": "arrive"})).await.unwrap();
    alice.set_name(&room, "Cellule de crise — Nord").await.unwrap();
    let image = bob
        .send_message(
            &room,
            &json!({
                "msgtype": "m.image",
                "body": "carte.png",
                "url": format!("mxc://{}/FakeMediaCarte", hs.server.server_name()),
                "info": {"mimetype": "image/png", "size": 48_213, "w": 640, "h": 480}
            }),
        )
        .await
        .unwrap();
    let file = alice
        .send_message(
            &room,
            &json!({
                "msgtype": "m.file",
                "body": "rapport.pdf",
                "url": format!("mxc://{}/FakeMediaRapport", hs.server.server_name()),
                "info": {"mimetype": "application/pdf", "size": 1_024_000}
            }),
        )
        .await
        .unwrap();
    let location = carol
        .send_message(
            &room,
            &json!({"msgtype": "m.location", "body": "Lille", "geo_uri": "geo:50.6292,3.0573"}),
        )
        .await
        .unwrap();
    let reply = bob.reply(&room, &hello, "Bonjour Alice").await.unwrap();
    let root = alice.send_text(&room, "Point de situation").await.unwrap();
    let in_thread = bob.send_in_thread(&room, &root, "RAS côté nord").await.unwrap();
    let thread_reply = carol
        .send_message(
            &room,
            &json!({
                "msgtype": "m.text",
                "body": "Confirmé",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": false,
                    "m.in_reply_to": {"event_id": in_thread}
                }
            }),
        )
        .await
        .unwrap();
    // Two edits by the author (the latest wins) and one by someone else (ignored).
    alice.edit(&room, &hello, "Bonjour à toutes et à tous").await.unwrap();
    bob.edit(&room, &hello, "usurpation").await.unwrap();
    alice.edit(&room, &hello, "Bonjour à toutes et tous").await.unwrap();
    let secret = carol.send_text(&room, "mot de passe : hunter2").await.unwrap();
    alice.redact(&room, &secret, Some("information sensible")).await.unwrap();
    carol.leave(&room).await.unwrap();
    alice.set_topic(&room, "Coordination — niveau 2").await.unwrap();
    let last = bob.send_text(&room, "Fin").await.unwrap();

    let snapshot = hs.fetch_all(&alice, &room).await;
    let view = client_view(&alice, &room).await;
    assert_matches_client(&snapshot, &view);

    // And what was built, explicitly.
    assert_eq!(snapshot.room_id.as_str(), room);
    assert_eq!(snapshot.name.as_deref(), Some("Cellule de crise — Nord"));
    assert_eq!(snapshot.topic.as_deref(), Some("Coordination — niveau 2"));
    assert!(!snapshot.encrypted);
    assert_eq!(snapshot.member_count, 2, "alice and bob joined, carol left");
    let ids: Vec<&str> = snapshot.messages.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            &hello,
            &notice,
            &emote,
            &image,
            &file,
            &location,
            &reply,
            &root,
            &in_thread,
            &thread_reply,
            &secret,
            &last
        ]
    );
    let first = message(&snapshot, &hello);
    assert_eq!(first.body.as_deref(), Some("Bonjour à toutes et tous"));
    assert!(first.edited);
    assert_eq!(first.sender.as_str(), alice.user_id);
    assert_eq!(snapshot.report.edits_applied, 2);
    assert_eq!(message(&snapshot, &notice).msgtype.as_deref(), Some("m.notice"));
    assert_eq!(message(&snapshot, &emote).msgtype.as_deref(), Some("m.emote"));
    let media = message(&snapshot, &image).media.clone().unwrap();
    assert_eq!(media.uri, Some(format!("mxc://{}/FakeMediaCarte", hs.server.server_name())));
    assert_eq!(media.mimetype.as_deref(), Some("image/png"));
    assert_eq!(media.size, Some(48_213));
    assert_eq!(message(&snapshot, &file).media.as_ref().unwrap().size, Some(1_024_000));
    assert_eq!(message(&snapshot, &location).msgtype.as_deref(), Some("m.location"));
    assert!(message(&snapshot, &location).media.is_none());
    assert_eq!(message(&snapshot, &reply).reply_to.as_ref().map(|id| id.as_str()), Some(hello.as_str()));
    let threaded = message(&snapshot, &in_thread);
    assert_eq!(threaded.thread_root.as_ref().map(|id| id.as_str()), Some(root.as_str()));
    assert_eq!(threaded.reply_to, None, "a thread fallback is not a reply");
    let answer = message(&snapshot, &thread_reply);
    assert_eq!(answer.thread_root.as_ref().map(|id| id.as_str()), Some(root.as_str()));
    assert_eq!(answer.reply_to.as_ref().map(|id| id.as_str()), Some(in_thread.as_str()));
    let redacted = message(&snapshot, &secret);
    assert!(redacted.redacted && redacted.body.is_none() && redacted.msgtype.is_none());
    assert_eq!(redacted.sender.as_str(), carol.user_id);
    assert_eq!(snapshot.report.redacted, 1);
    // Synapse hands out an `end` token on the last page; the next request comes back empty.
    assert!((1..=2).contains(&snapshot.report.pages), "{:?}", snapshot.report);
    assert!(snapshot.resume_token.is_some());
    let everything = serde_json::to_string(&snapshot).unwrap();
    assert!(!everything.contains("hunter2"), "redacted content leaked");
    assert!(!everything.contains("usurpation"), "an edit by another sender was applied");
}

#[tokio::test]
async fn an_encrypted_room_keeps_ciphertext_out() {
    let Some(hs) = harness() else { return };
    let alice = hs.server.register("alice").await.unwrap();
    let bob = hs.server.register("bob").await.unwrap();
    let room = alice.create_room(Some("Chiffré"), None, true).await.unwrap();
    alice.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();
    let ciphertext = "AwgAEpABqOCAaP0ZpZbkjzpDzOl1TSs5eInV2eCJsdnqoNlrb3MlZf9dy+T6kqTM1y5Z2gkmE7sZ";
    let encrypted = bob
        .send_event(
            &room,
            "m.room.encrypted",
            &json!({
                "algorithm": "m.megolm.v1.aes-sha2",
                "ciphertext": ciphertext,
                "device_id": bob.device_id,
                "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
                "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ"
            }),
        )
        .await
        .unwrap();
    let plain = alice.send_text(&room, "message en clair").await.unwrap();

    let snapshot = hs.fetch_all(&bob, &room).await;
    assert_matches_client(&snapshot, &client_view(&bob, &room).await);
    assert!(snapshot.encrypted);
    assert_eq!(snapshot.member_count, 2);
    let sealed = message(&snapshot, &encrypted);
    assert!(sealed.encrypted);
    assert_eq!((sealed.msgtype.as_deref(), sealed.body.as_deref()), (None, None));
    assert_eq!(sealed.sender.as_str(), bob.user_id);
    assert_eq!(message(&snapshot, &plain).body.as_deref(), Some("message en clair"));
    assert_eq!(snapshot.report.encrypted, 1);
    assert!(!serde_json::to_string(&snapshot).unwrap().contains(ciphertext));
}

/// Sends `count` numbered messages, a few at a time; returns their event ids.
async fn send_many(user: &TestUser, room: &str, count: usize) -> Vec<String> {
    const IN_FLIGHT: usize = 8;
    let mut ids = Vec::with_capacity(count);
    let mut start = 0;
    while start < count {
        let end = (start + IN_FLIGHT).min(count);
        let batch = (start..end).map(|i| {
            let user = user.clone();
            let room = room.to_owned();
            tokio::spawn(async move { user.send_text(&room, &format!("message {i:05}")).await })
        });
        for handle in futures::future::join_all(batch).await {
            ids.push(must(must(handle, "send task"), "send"));
        }
        start = end;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_two_pages_are_read_completely_and_resumed() {
    let Some(hs) = harness() else { return };
    let alice = hs.server.register("alice").await.unwrap();
    let room = alice.create_room(Some("Volumineux"), None, false).await.unwrap();
    const COUNT: usize = 2_500;
    let sent: BTreeSet<String> = send_many(&alice, &room, COUNT).await.into_iter().collect();

    // Default page size (1000): three pages plus the final empty answer at most.
    let snapshot = hs.fetch_all(&alice, &room).await;
    assert_eq!(snapshot.messages.len(), COUNT);
    assert!(snapshot.report.pages >= 3, "{:?}", snapshot.report);
    let got: BTreeSet<String> = snapshot.messages.iter().map(|m| m.event_id.as_str().to_owned()).collect();
    assert_eq!(got, sent);
    let view = client_view(&alice, &room).await;
    assert_matches_client(&snapshot, &view);

    // A smaller page size reads the same room identically, in more pages.
    let small = harness_with(ConnectorConfig { page_size: 300, ..ConnectorConfig::default() }).unwrap();
    let paged = small.fetch_all(&alice, &room).await;
    assert!(paged.report.pages >= 9, "{:?}", paged.report);
    assert_eq!(paged.messages, snapshot.messages);

    // A capped read keeps the newest messages and says it is truncated.
    let capped = hs
        .fetch_as(
            &alice,
            &room,
            &FetchOptions { max_messages: 1_200, since: None, ..FetchOptions::default() },
        )
        .await
        .unwrap();
    assert!(capped.report.truncated);
    assert_eq!(capped.messages[..], snapshot.messages[COUNT - 1_200..]);

    // Resuming from the snapshot's token reads only what is new.
    let newer = send_many(&alice, &room, 3).await;
    let resumed = hs
        .fetch_as(
            &alice,
            &room,
            &FetchOptions {
                max_messages: 1_000,
                since: snapshot.resume_token.clone(),
                ..FetchOptions::default()
            },
        )
        .await
        .unwrap();
    let new_ids: BTreeSet<String> = resumed.messages.iter().map(|m| m.event_id.as_str().to_owned()).collect();
    assert_eq!(new_ids, newer.into_iter().collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn a_room_the_user_is_not_in_is_forbidden() {
    let Some(hs) = harness() else { return };
    let owner = hs.server.register("owner").await.unwrap();
    let stranger = hs.server.register("stranger").await.unwrap();
    let room = owner.create_room(Some("Privé"), None, false).await.unwrap();
    owner.send_text(&room, "confidentiel").await.unwrap();
    // The client-server API refuses the stranger too.
    assert!(stranger.messages(&room, "b", 10).await.is_err());

    let error = hs.fetch_as(&stranger, &room, &FetchOptions::default()).await.unwrap_err();
    assert!(matches!(error, Error::Forbidden), "{error:?}");
    assert_eq!(error.code(), "ROOM_FORBIDDEN");
    assert!(!error.is_retryable());

    // So is a room that does not exist on the server.
    let missing = format!("!nosuchroom:{}", hs.server.server_name());
    let error = hs.fetch_as(&stranger, &missing, &FetchOptions::default()).await.unwrap_err();
    assert!(matches!(error, Error::Forbidden | Error::NotFound), "{error:?}");
}

#[tokio::test]
async fn an_invalid_token_is_unauthorized_and_never_echoed() {
    let Some(hs) = harness() else { return };
    let owner = hs.server.register("owner").await.unwrap();
    let room = owner.create_room(None, None, false).await.unwrap();
    let bogus = "syt_b3duZXI_NotAValidTokenAtAll_0a1b2c";
    let token = AccessToken::new(bogus);
    let room_id: RoomId = room.parse().unwrap();
    let error = hs
        .connector
        .fetch_room(
            &Session::with_token(hs.homeserver.clone(), token.clone()),
            &room_id,
            &FetchOptions::default(),
        )
        .await
        .unwrap_err();
    match &error {
        Error::Unauthorized { errcode, soft_logout } => {
            assert_eq!(errcode, "M_UNKNOWN_TOKEN");
            assert!(!soft_logout);
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(error.code(), "HOMESERVER_UNAUTHORIZED");
    assert!(!format!("{error} {error:?}").contains(bogus));
}
