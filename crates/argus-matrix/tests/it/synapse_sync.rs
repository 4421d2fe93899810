//! Live capture's `/sync` against a real Synapse: the first sync lists the joined rooms, a
//! later one the rooms with new events (a long-poll answering as soon as one arrives), a gap
//! past the filter's limit is `limited` with a `prev_batch`, kicks, bans, invites and upgrades
//! are told, the archive's filter is accepted, and a refused token is the usual error.

#![expect(clippy::unwrap_used, reason = "a fixture or step that fails is a failed test")]

use std::time::{Duration, Instant};

use argus_domain::{AccessToken, HomeserverUrl, Membership, RoomId};
use argus_matrix::{Connector, ConnectorConfig, Error, FetchOptions, Session, SyncRequest, SyncUpdate};
use argus_testkit::synapse::{TestUser, synapse};
use reqwest::Method;
use serde_json::json;

fn connector_with(config: ConnectorConfig) -> Connector {
    Connector::new(ConnectorConfig { allow_private_addresses: vec!["127.0.0.1".into()], ..config }).unwrap()
}

fn connector() -> Connector {
    connector_with(ConnectorConfig::default())
}

fn session(user: &TestUser) -> Session {
    let homeserver: HomeserverUrl = synapse().unwrap().base_url().parse().unwrap();
    Session::with_token(homeserver, AccessToken::new(user.access_token.clone()))
}

/// One account's syncs through the archive's filter.
struct Syncer {
    connector: Connector,
    session: Session,
    filter_id: String,
}

impl Syncer {
    async fn new(user: &TestUser) -> Self {
        Self::with(connector(), user).await
    }

    async fn with(connector: Connector, user: &TestUser) -> Self {
        let session = session(user);
        let filter_id = connector.create_sync_filter(&session, &user.user_id).await.unwrap();
        Self { connector, session, filter_id }
    }

    async fn sync(&self, since: Option<&str>, timeout: Duration) -> argus_matrix::Result<SyncUpdate> {
        let request =
            SyncRequest { since: since.map(str::to_owned), filter_id: Some(self.filter_id.clone()), timeout };
        self.connector.sync(&self.session, &request).await
    }

    /// The first sync's position.
    async fn position(&self) -> String {
        self.sync(None, Duration::ZERO).await.unwrap().next_batch
    }

    /// What happened since `since` (answering at once).
    async fn since(&self, since: &str) -> SyncUpdate {
        self.sync(Some(since), Duration::ZERO).await.unwrap()
    }
}

fn room_id(room: &str) -> RoomId {
    room.parse().unwrap()
}

fn joined<'a>(update: &'a SyncUpdate, room: &str) -> Option<&'a argus_matrix::JoinedRoomUpdate> {
    update.joined.iter().find(|r| r.room_id.as_str() == room)
}

#[tokio::test]
async fn the_first_sync_lists_every_joined_room_and_a_position() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_first").await.unwrap();
    let bob = server.register("sync_first_bob").await.unwrap();
    let quiet = alice.create_room(Some("Calme"), None, false).await.unwrap();
    let busy = alice.create_room(Some("Crise"), None, true).await.unwrap();
    alice.send_text(&busy, "premier").await.unwrap();
    // A room of bob's the account is not in.
    bob.create_room(Some("Ailleurs"), None, false).await.unwrap();

    let syncer = Syncer::new(&alice).await;
    let first = syncer.sync(None, Duration::from_secs(10)).await.unwrap();
    assert!(!first.next_batch.is_empty());
    let mut rooms: Vec<_> = first.joined.iter().map(|r| r.room_id.clone()).collect();
    rooms.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut expected = vec![room_id(&quiet), room_id(&busy)];
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(rooms, expected);
    // The filter kept the message and the state events of each room's creation.
    assert!(joined(&first, &busy).unwrap().new_events >= 2, "{first:?}");
    assert!(first.events >= 3);
    assert!(first.left.is_empty() && first.invited.is_empty());
    assert_eq!(first.malformed_skipped, 0);

    // The same, without a filter: the homeserver's default.
    let plain = connector()
        .sync(&session(&alice), &SyncRequest { since: None, filter_id: None, timeout: Duration::ZERO })
        .await
        .unwrap();
    assert_eq!(plain.joined.len(), 2);
}

#[tokio::test]
async fn a_message_after_a_sync_shows_its_room_and_next_batch_is_a_messages_token() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_message").await.unwrap();
    let room = alice.create_room(Some("Crise"), None, false).await.unwrap();
    let other = alice.create_room(Some("Calme"), None, false).await.unwrap();
    let syncer = Syncer::new(&alice).await;
    let since = syncer.position().await;

    let sent = alice.send_text(&room, "point de situation").await.unwrap();
    let update = syncer.since(&since).await;
    let changed = joined(&update, &room).unwrap();
    assert!(changed.new_events >= 1 && !changed.limited, "{update:?}");
    assert!(joined(&update, &other).is_none(), "a room where nothing happened is not listed: {update:?}");
    assert_ne!(update.next_batch, since);

    // Synapse takes a sync position as a `/messages` token: the room read forwards from it
    // finds the message sent after it, and nothing before.
    let snapshot = connector()
        .fetch_room(
            &session(&alice),
            &room_id(&room),
            &FetchOptions { since: Some(since.clone()), ..FetchOptions::default() },
        )
        .await
        .unwrap();
    let ids: Vec<_> = snapshot.messages.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(ids, [sent.as_str()]);

    // Nothing since the new position.
    let quiet = syncer.since(&update.next_batch).await;
    assert!(quiet.joined.is_empty(), "{quiet:?}");
}

#[tokio::test]
async fn a_long_poll_answers_when_a_message_arrives() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_poll").await.unwrap();
    let room = alice.create_room(None, None, false).await.unwrap();
    let syncer = Syncer::new(&alice).await;
    let since = syncer.position().await;

    let timeout = Duration::from_secs(10);
    let started = Instant::now();
    let poll = async {
        let update = syncer.sync(Some(&since), timeout).await.unwrap();
        (update, started.elapsed())
    };
    let send = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice.send_text(&room, "maintenant").await.unwrap();
    };
    let ((update, elapsed), ()) = tokio::join!(poll, send);
    assert!(joined(&update, &room).is_some_and(|r| r.new_events >= 1), "{update:?}");
    // Woken by the message, not by the end of the poll.
    assert!(elapsed < timeout, "answered after {elapsed:?}");
}

#[tokio::test]
async fn a_long_poll_outlasts_the_configured_request_timeout() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_patient").await.unwrap();
    alice.create_room(None, None, false).await.unwrap();
    // A request may last 1 s; a long-poll its own timeout more. (No retry: Synapse would let a
    // retry wait for the answer of the first request.)
    let connector = connector_with(ConnectorConfig {
        request_timeout: Duration::from_secs(1),
        max_retries: 0,
        ..ConnectorConfig::default()
    });
    let syncer = Syncer::with(connector, &alice).await;
    let since = syncer.position().await;
    let started = Instant::now();
    let update = syncer.sync(Some(&since), Duration::from_secs(2)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1900), "held {:?}", started.elapsed());
    assert!(update.joined.is_empty(), "{update:?}");
}

#[tokio::test]
async fn more_events_than_the_limit_between_two_syncs_are_limited_with_a_prev_batch() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_gap").await.unwrap();
    let room = alice.create_room(None, None, false).await.unwrap();
    let syncer = Syncer::new(&alice).await;
    let since = syncer.position().await;
    let sent = alice.send_texts(&room, "rafale", 25, 1).await.unwrap();

    let update = syncer.since(&since).await;
    let gap = joined(&update, &room).unwrap();
    assert!(gap.limited, "{update:?}");
    assert_eq!(gap.new_events, 20);
    // Backwards from `prev_batch`: what the answer left out, newest first.
    let prev_batch = gap.prev_batch.clone().unwrap();
    let page = alice.messages_from(&room, Some(&prev_batch), "b", 5).await.unwrap();
    let before: Vec<_> =
        page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let expected: Vec<_> = sent[..5].iter().rev().map(String::as_str).collect();
    assert_eq!(before, expected);
}

#[tokio::test]
async fn a_kick_and_a_ban_are_left_rooms_with_who_and_when() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_admin").await.unwrap();
    let bob = server.register("sync_member").await.unwrap();
    let kicked = alice.create_room(None, None, false).await.unwrap();
    let banned = alice.create_room(None, None, false).await.unwrap();
    let left = alice.create_room(None, None, false).await.unwrap();
    for room in [&kicked, &banned, &left] {
        alice.invite(room, &bob.user_id).await.unwrap();
        bob.join(room).await.unwrap();
    }
    let syncer = Syncer::new(&bob).await;
    let since = syncer.position().await;

    let kick = json!({"user_id": bob.user_id, "reason": "hors sujet"});
    alice.request(Method::POST, &["rooms", &kicked, "kick"], &[], Some(&kick)).await.unwrap();
    alice.request(Method::POST, &["rooms", &banned, "ban"], &[], Some(&kick)).await.unwrap();
    bob.leave(&left).await.unwrap();

    let update = syncer.since(&since).await;
    let membership = |room: &str| {
        let l = update.left.iter().find(|l| l.room_id.as_str() == room).unwrap();
        assert!(l.at.is_some(), "{l:?}");
        (l.membership, l.by.clone().unwrap())
    };
    assert_eq!(membership(&kicked), (Membership::Leave, alice.user_id.clone()));
    assert_eq!(membership(&banned), (Membership::Ban, alice.user_id.clone()));
    assert_eq!(membership(&left), (Membership::Leave, bob.user_id.clone()));
    assert_eq!(update.left.len(), 3);
    assert!(
        update.joined.iter().all(|r| ![&kicked, &banned, &left].contains(&&r.room_id.as_str().to_owned()))
    );
    // Each names the departure's own event: a read of the room stops there.
    for room in [&kicked, &banned, &left] {
        let state = alice.state(room).await.unwrap();
        let member = state
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
            .unwrap();
        let l = update.left.iter().find(|l| l.room_id.as_str() == room.as_str()).unwrap();
        assert_eq!(l.event_id.as_deref(), member["event_id"].as_str(), "{l:?}");
    }
}

#[tokio::test]
async fn an_invite_is_listed_with_its_inviter_and_not_accepted() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_inviter").await.unwrap();
    let bob = server.register("sync_invitee").await.unwrap();
    let syncer = Syncer::new(&bob).await;
    let since = syncer.position().await;
    let room = alice.create_room(Some("Invitation"), None, false).await.unwrap();
    alice.invite(&room, &bob.user_id).await.unwrap();

    let update = syncer.since(&since).await;
    let [invite] = &update.invited[..] else { panic!("{update:?}") };
    assert_eq!(invite.room_id, room_id(&room));
    assert_eq!(invite.inviter.as_deref(), Some(alice.user_id.as_str()));
    assert!(update.joined.is_empty(), "{update:?}");

    // Still only invited: the sync accepted nothing.
    let member = alice
        .request(Method::GET, &["rooms", &room, "state", "m.room.member", &bob.user_id], &[], None)
        .await
        .unwrap();
    assert_eq!(member["membership"], "invite");
    assert!(!syncer.connector.joined_rooms(&syncer.session).await.unwrap().contains(&room_id(&room)));
    // (Synapse strips the invite's state: no time is given, `at` stays unset.)

    // Joined by the account itself: listed with its events, from the join on (Synapse marks a
    // newly joined room's timeline `limited`: what came before the join is left out).
    bob.join(&room).await.unwrap();
    let update = syncer.since(&update.next_batch).await;
    let joined = joined(&update, &room).unwrap();
    assert!(joined.new_events >= 1 && update.invited.is_empty(), "{update:?}");
}

#[tokio::test]
async fn an_upgrade_names_the_successor() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_upgrade").await.unwrap();
    let old = alice.create_room_with(&json!({"preset": "private_chat", "room_version": "10"})).await.unwrap();
    let syncer = Syncer::new(&alice).await;
    let since = syncer.position().await;
    let upgraded = alice
        .request(Method::POST, &["rooms", &old, "upgrade"], &[], Some(&json!({"new_version": "11"})))
        .await
        .unwrap();
    let new = upgraded["replacement_room"].as_str().unwrap();

    let update = syncer.since(&since).await;
    assert_eq!(joined(&update, &old).unwrap().successor, Some(room_id(new)), "{update:?}");
    // The account created the new room: joined, and replacing nothing.
    assert_eq!(joined(&update, new).unwrap().successor, None);
}

#[tokio::test]
async fn a_refused_token_is_unauthorized() {
    let Some(server) = synapse() else { return };
    let homeserver: HomeserverUrl = server.base_url().parse().unwrap();
    let session = Session::with_token(homeserver, AccessToken::new("syt_bm9ib2R5_refused_0000"));
    let request = SyncRequest { since: None, filter_id: None, timeout: Duration::ZERO };
    let err = connector().sync(&session, &request).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(!err.to_string().contains("refused_0000"));
    let err = connector().create_sync_filter(&session, "@nobody:127.0.0.1").await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
}

/// What a sync says to the account's device, through the archive's filter: a to-device message
/// another user sent to the account's device (its raw JSON, type and sender), the one-time key
/// count once keys were uploaded, and a user sharing an encrypted room who logged in a new
/// device in the changed device lists.
#[tokio::test]
async fn to_device_messages_key_counts_and_device_changes_reach_the_device() {
    let Some(server) = synapse() else { return };
    let alice = server.register("sync_device").await.unwrap();
    let bob = server.register("sync_device_bob").await.unwrap();
    let room = alice.create_room(Some("Chiffré"), None, true).await.unwrap();
    alice.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();
    let syncer = Syncer::new(&alice).await;
    let since = syncer.position().await;

    let content = json!({"body": "pour le connecteur", "n": 7});
    let messages = json!({"messages": {&alice.user_id: {&alice.device_id: content.clone()}}});
    bob.request(
        Method::PUT,
        &["sendToDevice", "org.example.test", "txn-sync-device-1"],
        &[],
        Some(&messages),
    )
    .await
    .unwrap();
    let key = json!({"key": "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"});
    alice
        .request(
            Method::POST,
            &["keys", "upload"],
            &[],
            Some(
                &json!({"one_time_keys": {"curve25519:AAAAAQ": key["key"], "curve25519:AAAAAg": key["key"]}}),
            ),
        )
        .await
        .unwrap();
    bob.login_refreshable().await.unwrap();

    let update = syncer.since(&since).await;
    let device = &update.device;
    let received: Vec<serde_json::Value> =
        device.to_device.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let ours: Vec<_> = received.iter().filter(|e| e["type"] == "org.example.test").collect();
    assert_eq!(ours.len(), 1, "{received:?}");
    assert_eq!((ours[0]["sender"].as_str(), &ours[0]["content"]), (Some(bob.user_id.as_str()), &content));
    assert_eq!(device.one_time_keys_counts.get("curve25519"), Some(&2), "{device:?}");
    assert!(device.changed_devices.contains(&bob.user_id), "{device:?}");
    assert_eq!(device.next_batch.as_deref(), Some(update.next_batch.as_str()));
    assert_eq!(update.to_device_dropped, 0);

    // Delivered once: the next sync from there has it no more.
    let again = syncer.since(&update.next_batch).await;
    assert!(again.device.to_device.iter().all(|e| !e.contains("org.example.test")), "{again:?}");
}
