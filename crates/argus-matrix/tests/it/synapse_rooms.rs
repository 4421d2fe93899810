//! What Tchap says about a room, read from a real Synapse: retention, access rule, encryption,
//! room version and members on external homeservers; and a read that starts at a date
//! (`timestamp_to_event`): it stops only on the event the homeserver gave for the date (an
//! event dated before the date by its sender does not end it early), and by the events' dates
//! only when the homeserver has no event since then (`M_NOT_FOUND`).

#![expect(clippy::unwrap_used, reason = "a fixture or step that fails is a failed test")]

use std::time::Duration;

use argus_domain::{AccessToken, HistoryPosition, HomeserverUrl, Retention, RoomId, RoomSnapshot};
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, Session};
use argus_testkit::synapse::{TestUser, synapse};
use serde_json::json;
use time::OffsetDateTime;

/// A connector allowed to reach the test Synapse, counting members of `external` as external.
fn connector(external: Vec<String>) -> Connector {
    let config = ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        external_homeservers: external,
        ..ConnectorConfig::default()
    };
    Connector::new(config).unwrap()
}

async fn read(connector: &Connector, user: &TestUser, room: &str, options: &FetchOptions) -> RoomSnapshot {
    let homeserver: HomeserverUrl = synapse().unwrap().base_url().parse().unwrap();
    let session = Session::with_token(homeserver, AccessToken::new(user.access_token.clone()));
    let room: RoomId = room.parse().unwrap();
    connector.fetch_room(&session, &room, options).await.unwrap()
}

fn server_name(user: &TestUser) -> String {
    user.user_id.split_once(':').unwrap().1.to_owned()
}

#[tokio::test]
async fn retention_access_rule_encryption_and_external_members_are_read_from_state() {
    let Some(server) = synapse() else { return };
    let alice = server.register("alice").await.unwrap();
    let bob = server.register("bob").await.unwrap();
    let room = alice
        .create_room_with(&json!({
            "preset": "private_chat",
            "room_version": "10",
            "initial_state": [
                {"type": "m.room.retention", "state_key": "", "content": {"max_lifetime": 86_400_000_u64, "min_lifetime": 3_600_000}},
                {"type": "im.vector.room.access_rules", "state_key": "", "content": {"rule": "unrestricted"}},
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            ],
        }))
        .await
        .unwrap();
    alice.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();

    // On one Synapse every user shares its server name: configured as external, both count.
    let external = connector(vec![server_name(&alice)]);
    let s = read(&external, &alice, &room, &FetchOptions::default()).await;
    let m = &s.metadata;
    assert_eq!(m.room_version.as_deref(), Some("10"));
    assert_eq!(
        m.retention,
        Some(Retention { max_lifetime_ms: Some(86_400_000), min_lifetime_ms: Some(3_600_000) })
    );
    assert_eq!(m.access_rule.as_deref(), Some("unrestricted"));
    assert!(s.encrypted);
    assert_eq!((s.member_count, m.external_member_count), (2, 2));
    // The default list (Tchap's external homeserver) counts no one here.
    let tchap = read(
        &connector(ConnectorConfig::default().external_homeservers),
        &alice,
        &room,
        &FetchOptions::default(),
    )
    .await;
    assert_eq!((tchap.member_count, tchap.metadata.external_member_count), (2, 0));

    // The policy removed (empty content) and the rule changed: read as such.
    alice.set_state(&room, "m.room.retention", "", &json!({})).await.unwrap();
    alice.set_state(&room, "im.vector.room.access_rules", "", &json!({"rule": "restricted"})).await.unwrap();
    bob.leave(&room).await.unwrap();
    let s = read(&external, &alice, &room, &FetchOptions::default()).await;
    assert_eq!(s.metadata.retention, None);
    assert_eq!(s.metadata.access_rule.as_deref(), Some("restricted"));
    assert_eq!((s.member_count, s.metadata.external_member_count), (1, 1));
}

#[tokio::test]
async fn a_read_from_a_date_stops_at_the_first_event_since_then() {
    let Some(server) = synapse() else { return };
    let alice = server.register("alice").await.unwrap();
    let room = alice.create_room(Some("Depuis"), None, false).await.unwrap();
    let before = alice.send_texts(&room, "avant", 3, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = alice.send_texts(&room, "après", 2, 1).await.unwrap();

    let c = connector(Vec::new());
    let options = FetchOptions { start_at: Some(since), ..FetchOptions::default() };
    let s = read(&c, &alice, &room, &options).await;
    let ids: Vec<&str> = s.messages.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(ids, after.iter().map(String::as_str).collect::<Vec<_>>(), "only what was sent since then");
    assert!(before.iter().all(|id| !ids.contains(&id.as_str())));
    assert_eq!(s.history, HistoryPosition::Complete, "complete since the date");
    assert_eq!(s.history_since, Some(since));

    // Without a date the same read goes back to the room's creation.
    let whole = read(&c, &alice, &room, &FetchOptions::default()).await;
    assert_eq!(whole.messages.len(), 5);
    assert_eq!(whole.history_since, None);

    // A date after every event: nothing to read, and nothing is missing.
    let later = FetchOptions {
        start_at: Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
        ..FetchOptions::default()
    };
    let s = read(&c, &alice, &room, &later).await;
    assert!(s.messages.is_empty());
    assert_eq!(s.history, HistoryPosition::Complete);
}

/// Synapse answers `M_NOT_FOUND` for a date after every event: the read then stops at the first
/// event dated before it, and the history is complete since the date.
#[tokio::test]
async fn no_event_since_the_date_reads_nothing_and_is_complete_since_then() {
    let Some(server) = synapse() else { return };
    let alice = server.register("alice").await.unwrap();
    let room = alice.create_room(Some("Rien depuis"), None, false).await.unwrap();
    alice.send_texts(&room, "avant", 2, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = OffsetDateTime::now_utc();
    // What Synapse itself answers for that date.
    let url = format!(
        "{}/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={}&dir=f",
        server.base_url().trim_end_matches('/'),
        argus_domain::to_unix_ms(since)
    );
    let answer = reqwest::Client::new().get(url).bearer_auth(&alice.access_token).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_FOUND", "{body}");

    let c = connector(Vec::new());
    let s = read(&c, &alice, &room, &FetchOptions { start_at: Some(since), ..FetchOptions::default() }).await;
    assert!(s.messages.is_empty(), "everything was sent before the date");
    assert_eq!(s.history, HistoryPosition::Complete);
    assert_eq!(s.history_since, Some(since), "complete since the date, not since the creation");
}

/// A sender sets `origin_server_ts`: an event after the date that claims to be two hours older
/// does not end the read; only the event `timestamp_to_event` gave does (a homeserver that
/// serves such an event is a mock: Synapse dates its own users' events itself).
#[tokio::test]
async fn an_event_dated_before_the_date_does_not_end_a_read_from_it() {
    use crate::mock::{MockHomeserver, ROOM, ev};
    use wiremock::{Mock, ResponseTemplate, matchers};

    let since = OffsetDateTime::now_utc() - time::Duration::days(1);
    let ms = argus_domain::to_unix_ms(since);
    let hs = MockHomeserver::start().await;
    hs.empty_state(ROOM).await;
    Mock::given(matchers::path_regex("/timestamp_to_event$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"event_id": "$first", "origin_server_ts": ms + 1000})),
        )
        .mount(hs.server())
        .await;
    // Newest first, two pages; nothing answers past the second (a read beyond `$first` fails).
    hs.messages(ROOM)
        .page(vec![ev::text("$newest", ms + 5000, "récent"), ev::text("$forged", ms - 7_200_000, "antidaté")])
        .end("t1")
        .mount()
        .await;
    hs.messages(ROOM)
        .from("t1")
        .page(vec![
            ev::text("$middle", ms + 3000, "entre"),
            ev::text("$first", ms + 1000, "premier"),
            ev::text("$before", ms - 86_400_000, "avant"),
        ])
        .end("t2")
        .mount()
        .await;
    let options = FetchOptions { start_at: Some(since), ..FetchOptions::default() };
    let s = MockHomeserver::connector()
        .fetch_room(&hs.session(), &MockHomeserver::room(), &options)
        .await
        .unwrap();
    let mut ids: Vec<&str> = s.messages.iter().map(|m| m.event_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["$first", "$forged", "$middle", "$newest"], "down to the first event since the date");
    assert_eq!(s.history, HistoryPosition::Complete);
    assert_eq!(s.history_since, Some(since));
}

/// Synapse has the endpoint; a homeserver without it (404, `M_UNRECOGNIZED`) fails the read
/// with a typed error instead of reading back to the room's creation.
#[tokio::test]
async fn a_homeserver_without_timestamp_lookup_fails_a_read_from_a_date() {
    use crate::mock::MockHomeserver;
    use wiremock::{Mock, ResponseTemplate, matchers};

    let page = ResponseTemplate::new(200).set_body_json(json!({"chunk": [], "start": "s0"}));
    let options = FetchOptions { start_at: Some(OffsetDateTime::now_utc()), ..FetchOptions::default() };
    // Nothing mounted at the path: a bare 404.
    let hs = MockHomeserver::with_messages_response(page.clone()).await;
    let connector = MockHomeserver::connector();
    let error = connector.fetch_room(&hs.session(), &MockHomeserver::room(), &options).await.unwrap_err();
    assert_eq!(error.code(), "TIMESTAMP_LOOKUP_UNSUPPORTED");
    // Synapse's own answer to an unknown endpoint.
    let hs = MockHomeserver::with_messages_response(page).await;
    Mock::given(matchers::path_regex("/timestamp_to_event$"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})),
        )
        .mount(hs.server())
        .await;
    let error = connector.fetch_room(&hs.session(), &MockHomeserver::room(), &options).await.unwrap_err();
    assert!(matches!(error, argus_matrix::Error::TimestampLookupUnsupported), "{error}");
    // Without a date the same homeserver is read as before.
    assert!(
        connector.fetch_room(&hs.session(), &MockHomeserver::room(), &FetchOptions::default()).await.is_ok()
    );
}

/// A read that never meets the event `timestamp_to_event` gave (it started below it) is not
/// ended by the events' dates: it reads on to the room's creation, everything kept.
#[tokio::test]
async fn a_read_that_never_meets_the_first_event_since_the_date_goes_on_to_the_creation() {
    use crate::mock::{MockHomeserver, ROOM, ev};
    use wiremock::{Mock, ResponseTemplate, matchers};

    let since = OffsetDateTime::now_utc() - time::Duration::days(1);
    let ms = argus_domain::to_unix_ms(since);
    let hs = MockHomeserver::start().await;
    hs.empty_state(ROOM).await;
    Mock::given(matchers::path_regex("/timestamp_to_event$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"event_id": "$elsewhere", "origin_server_ts": ms})),
        )
        .mount(hs.server())
        .await;
    hs.messages(ROOM)
        .page(vec![ev::text("$after", ms + 5000, "après"), ev::text("$older", ms - 86_400_000, "avant")])
        .end("t1")
        .mount()
        .await;
    // The room's start: no `end`.
    hs.messages(ROOM).from("t1").page(vec![ev::text("$oldest", ms - 172_800_000, "création")]).mount().await;
    let options = FetchOptions { start_at: Some(since), ..FetchOptions::default() };
    let s = MockHomeserver::connector()
        .fetch_room(&hs.session(), &MockHomeserver::room(), &options)
        .await
        .unwrap();
    let mut ids: Vec<&str> = s.messages.iter().map(|m| m.event_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["$after", "$older", "$oldest"]);
    assert_eq!(s.history, HistoryPosition::Complete);
}
