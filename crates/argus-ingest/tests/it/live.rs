//! Live capture against the real Synapse, on each backend: one `/sync` loop per watched account
//! stores what is sent while it runs (each event once, in every room of the account), fills a
//! gap past the sync filter's limit after a stop, follows the rooms the account joins (their
//! history from the watch's date), leaves, is banned from or is invited to (never accepting),
//! keeps to the listed rooms and the rooms that replace them, shares a room watched both ways
//! with the scheduler without storing anything twice, renews an expiring token, stops on a
//! refused one, runs on one replica at a time (taken over after a crash), decrypts with the
//! owner's recovery key, and refuses bad input before anything is stored.

#![expect(clippy::unwrap_used, reason = "a fixture or step that fails is a failed test")]

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    sync::Arc,
    time::{Duration, Instant},
};

use argus_domain::{
    AccessToken, AccountWatch, Classification, FollowedRoom, Membership, PageRequest, RoomId, Secret, Viewer,
    WatchStatus,
};
use argus_ingest::{
    Services,
    live::{AccountWatchRequest, Live, LiveOptions, account_watches, unwatch_account, watch_account},
    scheduler::{Scheduler, SchedulerOptions},
    watch::{WatchRequest, watch_room},
};
use argus_store::MessageCursor;
use argus_testkit::{
    e2ee::{KeyBackup, Sender},
    synapse::{Synapse, TestUser, synapse},
};
use reqwest::Method;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::support::{Env, analyst, backend_suite};

backend_suite!(
    messages_sent_while_the_loop_runs_are_stored_once_in_every_room,
    a_gap_past_the_filter_limit_is_filled_after_a_stop_each_event_once,
    a_room_larger_than_a_read_s_cap_is_read_over_several_answers,
    rooms_joined_while_watched_are_captured_with_history_from_the_watch_s_date,
    rooms_left_banned_and_invited_are_recorded_and_no_longer_captured,
    a_kick_while_the_loop_was_stopped_is_recorded_with_what_came_before_it_and_nothing_after,
    only_listed_rooms_and_their_replacements_are_captured,
    a_room_no_longer_listed_is_not_captured_even_when_it_was_due,
    a_watch_given_again_while_its_loop_runs_is_run_as_given,
    a_room_watched_both_ways_stores_each_message_once,
    a_refresh_across_token_expiries_keeps_the_loop_alive,
    a_refused_token_pauses_the_watch_and_ends_its_loop,
    an_expired_or_locked_account_stops_its_watch_with_its_own_status,
    one_replica_runs_the_loop_and_another_takes_it_over,
    encrypted_rooms_are_stored_decrypted_with_the_recovery_key,
    bad_input_is_refused_and_nothing_is_stored,
);

/// How long anything may take to appear.
const PATIENCE: Duration = Duration::from_secs(20);

/// The long-poll timeout of the watches (seconds).
const POLL_SECS: i64 = 2;

/// Polls until a condition holds, failing the test after [`PATIENCE`].
pub(crate) struct Patience {
    what: String,
    until: Instant,
}

impl Patience {
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), until: Instant::now() + PATIENCE }
    }

    /// Waits a little, or fails showing `seen` when the time is up.
    pub(crate) async fn wait(&self, seen: impl Debug) {
        assert!(Instant::now() < self.until, "{}: not after {PATIENCE:?}; last seen {seen:?}", self.what);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn options(replica: &str) -> LiveOptions {
    LiveOptions {
        replica: replica.to_owned(),
        tick: Duration::from_millis(200),
        lease: Duration::from_secs(3),
        max_loops: 16,
        room_concurrency: 4,
        max_messages_per_run: 10_000,
        max_concurrent_reads: 8,
        per_homeserver: 4,
    }
}

/// A replica's live loops, running until stopped.
pub(crate) struct Running {
    pub(crate) live: Arc<Live>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(crate) fn start(services: &Arc<Services>, replica: &str) -> Self {
        Self::start_with(services, options(replica))
    }

    fn start_with(services: &Arc<Services>, options: LiveOptions) -> Self {
        let live = Arc::new(Live::new(Arc::clone(services), options));
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(Arc::clone(&live).run(Arc::clone(&stop)));
        Self { live, stop, task }
    }

    /// Stops the replica: each loop gives its lease back.
    pub(crate) async fn stop(self) {
        self.stop.notify_one();
        self.task.await.unwrap();
        assert!(self.live.running().is_empty());
    }
}

/// A replica whose loops run on a runtime of their own, which dies at once (as a killed
/// process does: no lease given back, nothing more written).
pub(crate) struct Doomed {
    pub(crate) live: Arc<Live>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Doomed {
    pub(crate) fn start(services: Arc<Services>, replica: &str) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let live = Arc::new(Live::new(services, options(replica)));
        runtime.spawn(Arc::clone(&live).run(Arc::new(Notify::new())));
        Self { live, runtime: Some(runtime) }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn homeserver() -> &'static Synapse {
    synapse().unwrap()
}

/// A watch of `user`'s account at RESTRICTED with a short long-poll, every joined room.
pub(crate) fn account_request(user: &TestUser) -> AccountWatchRequest {
    AccountWatchRequest {
        homeserver_url: homeserver().base_url().to_owned(),
        account: None,
        access_token: AccessToken::new(user.access_token.clone()),
        refresh_token: None,
        oauth_client_id: None,
        recovery_key: None,
        classification: Classification::Restricted,
        rooms: None,
        timeout_secs: Some(POLL_SECS),
        since: None,
    }
}

pub(crate) async fn watch(env: &Env, viewer: &Viewer, request: AccountWatchRequest) -> AccountWatch {
    watch_account(&env.services, viewer, request).await.unwrap_or_else(|e| panic!("{}: {e}", e.code()))
}

/// The account watches `viewer` sees.
pub(crate) async fn listed(env: &Env, viewer: &Viewer) -> Vec<AccountWatch> {
    account_watches(&env.services, viewer, 50, None).await.unwrap().0
}

/// `id` as `viewer` sees it.
pub(crate) async fn watch_by_id(env: &Env, viewer: &Viewer, id: i64) -> AccountWatch {
    listed(env, viewer).await.into_iter().find(|w| w.id == id).unwrap()
}

/// Waits until watch `id` has stored a `/sync` answer.
pub(crate) async fn first_sync(env: &Env, viewer: &Viewer, id: i64) {
    let patience = Patience::new("a first /sync stored");
    loop {
        let watch = watch_by_id(env, viewer, id).await;
        if watch.last_sync_at.is_some() {
            return;
        }
        patience.wait(&watch).await;
    }
}

/// The rooms watch `id` follows, by room id.
async fn followed(env: &Env, id: i64) -> HashMap<String, FollowedRoom> {
    let rooms = env.with_store(move |s| s.followed_rooms(id)).await;
    rooms.into_iter().map(|room| (room.room_id.as_str().to_owned(), room)).collect()
}

/// Waits until watch `id` follows `room` with `membership`; returns the row.
async fn until_followed(env: &Env, id: i64, room: &str, membership: Membership) -> FollowedRoom {
    let patience = Patience::new(format!("{room} followed as {membership}"));
    loop {
        let rooms = followed(env, id).await;
        match rooms.get(room) {
            Some(row) if row.membership == membership && !row.due => return row.clone(),
            _ => patience.wait(&rooms).await,
        }
    }
}

pub(crate) fn room_id(room: &str) -> RoomId {
    room.parse().unwrap()
}

/// Every event id stored for `room` as `viewer` sees it, oldest first.
pub(crate) async fn stored_ids(env: &Env, viewer: &Viewer, room: &str) -> Vec<String> {
    let room = room_id(room);
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let (v, r) = (viewer.clone(), room.clone());
        let page = env.with_store(move |s| s.messages(&v, &r, &PageRequest { first: 200, after })).await;
        ids.extend(page.items.iter().map(|m| m.message.event_id.to_string()));
        match page.items.last() {
            Some(last) if page.has_next_page => after = Some(MessageCursor::of(last)),
            _ => return ids,
        }
    }
}

/// Waits until `room` holds exactly `expected` (in this order), each once.
pub(crate) async fn until_stored(env: &Env, viewer: &Viewer, room: &str, expected: &[String]) {
    let patience = Patience::new(format!("{} messages stored in {room}", expected.len()));
    loop {
        let ids = stored_ids(env, viewer, room).await;
        if ids == expected {
            return;
        }
        assert!(
            ids.iter().all(|id| expected.contains(id)) && unique(&ids),
            "{room} holds what it should not: {ids:?}, expected {expected:?}"
        );
        patience.wait(&ids).await;
    }
}

pub(crate) fn unique(ids: &[String]) -> bool {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    counts.values().all(|&n| n == 1)
}

async fn is_stored(env: &Env, viewer: &Viewer, room: &str) -> bool {
    let (v, r) = (viewer.clone(), room_id(room));
    env.with_store(move |s| s.room(&v, &r)).await.is_some()
}

/// The messages the audit trail says `viewer`'s organisation's runs stored, and its failed
/// runs.
async fn audited(env: &Env, viewer: &Viewer) -> (i64, Vec<String>) {
    let trail = env.trail(viewer).await;
    let stored = trail.iter().map(|r| r.entry.message_count).sum();
    let failed = trail.iter().filter_map(|r| r.entry.error.clone()).collect();
    (stored, failed)
}

/// How many `/sync` answers watch `id` stores while its account is idle for 1.5 s (sampled
/// every 100 ms): with a long-poll of [`POLL_SECS`], one or two.
async fn idle_syncs(env: &Env, viewer: &Viewer, id: i64) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..15 {
        seen.insert(watch_by_id(env, viewer, id).await.last_sync_at);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.len() - 1
}

pub(crate) async fn register(name: &str) -> TestUser {
    homeserver().register(name).await.unwrap()
}

async fn messages_sent_while_the_loop_runs_are_stored_once_in_every_room(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_bob").await;
    let crisis = bob.create_room(Some("Crise"), None, false).await.unwrap();
    let quiet = bob.create_room(Some("Calme"), None, false).await.unwrap();
    let before = bob.send_texts(&crisis, "avant", 2, 1).await.unwrap();
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&bob)).await;
    assert_eq!((made.status, made.last_sync_at, made.room_count), (WatchStatus::Active, None, 0));
    assert_eq!((made.user_id.as_str(), made.timeout_secs), (bob.user_id.as_str(), 2));

    let live = Running::start(&env.services, "replica-a");
    // The first answer lists both rooms: the history of each is captured.
    until_stored(&env, &alice, &crisis, &before).await;
    until_followed(&env, made.id, &quiet, Membership::Join).await;

    // Sent while the loop runs, alternating between the rooms.
    let (mut in_crisis, mut in_quiet) = (before.clone(), Vec::new());
    for i in 0..3 {
        in_crisis.push(bob.send_text(&crisis, &format!("point {i}")).await.unwrap());
        in_quiet.push(bob.send_text(&quiet, &format!("calme {i}")).await.unwrap());
    }
    until_stored(&env, &alice, &crisis, &in_crisis).await;
    until_stored(&env, &alice, &quiet, &in_quiet).await;

    let watch = watch_by_id(&env, &alice, made.id).await;
    assert!(watch.last_sync_at.is_some_and(|at| at > made.created_at), "{watch:?}");
    assert_eq!((watch.status, watch.room_count, watch.status_reason), (WatchStatus::Active, 2, None));
    let rooms = followed(&env, made.id).await;
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    assert!(rooms.values().all(|r| r.membership == Membership::Join && !r.due), "{rooms:?}");
    assert_eq!(live.live.running(), [made.id]);
    // Idle: one request per long-poll.
    let syncs = idle_syncs(&env, &alice, made.id).await;
    assert!(syncs <= 2, "{syncs} answers in 1.5 s");

    // Unwatched: its loop ends at its next lease renewal, and captures nothing more.
    assert!(unwatch_account(&env.services, &alice, made.id).await.unwrap());
    let patience = Patience::new("the loop of a removed watch ends");
    while !live.live.running().is_empty() {
        patience.wait(live.live.running()).await;
    }
    bob.send_text(&crisis, "plus suivi").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stored_ids(&env, &alice, &crisis).await, in_crisis);
    assert!(live.live.running().is_empty() && listed(&env, &alice).await.is_empty());
    live.stop().await;
    // Each message counted by one run of the audit trail, as the owner's, none failed.
    assert_eq!(audited(&env, &alice).await, (8, Vec::new()));
    let trail = env.trail(&alice).await;
    assert!(trail.iter().all(|r| r.entry.scheduled && r.entry.actor.as_str() == "alice"), "{trail:?}");
}

async fn a_gap_past_the_filter_limit_is_filled_after_a_stop_each_event_once(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_gap").await;
    let room = bob.create_room(Some("Rafale"), None, false).await.unwrap();
    let mut expected = vec![bob.send_text(&room, "premier").await.unwrap()];
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&bob)).await;
    let live = Running::start(&env.services, "replica-a");
    until_stored(&env, &alice, &room, &expected).await;
    first_sync(&env, &alice, made.id).await;
    live.stop().await;

    // 45 messages while no loop runs: more than the filter's 20, the next answer is limited.
    expected.extend(bob.send_texts(&room, "rafale", 45, 1).await.unwrap());
    let live = Running::start(&env.services, "replica-b");
    until_stored(&env, &alice, &room, &expected).await;
    // And the loop goes on.
    expected.push(bob.send_text(&room, "après").await.unwrap());
    until_stored(&env, &alice, &room, &expected).await;
    live.stop().await;
    assert_eq!(stored_ids(&env, &alice, &room).await.len(), 47);
    assert_eq!(audited(&env, &alice).await, (47, Vec::new()));
}

async fn a_room_larger_than_a_read_s_cap_is_read_over_several_answers(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_capped").await;
    let room = bob.create_room(Some("Longue"), None, false).await.unwrap();
    let mut expected = bob.send_texts(&room, "histoire", 34, 1).await.unwrap();
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&bob)).await;
    // At most 10 messages per room and answer: the room stays due until it is read through.
    let live =
        Running::start_with(&env.services, LiveOptions { max_messages_per_run: 10, ..options("replica-a") });
    until_stored(&env, &alice, &room, &expected).await;
    until_followed(&env, made.id, &room, Membership::Join).await;
    let runs = env.trail(&alice).await;
    assert!(runs.len() >= 4 && runs.iter().all(|r| r.entry.message_count <= 10), "{runs:?}");
    // Then new messages, a dozen at once: more than one read's cap again.
    expected.extend(bob.send_texts(&room, "rafale", 12, 1).await.unwrap());
    until_stored(&env, &alice, &room, &expected).await;
    until_followed(&env, made.id, &room, Membership::Join).await;
    let syncs = idle_syncs(&env, &alice, made.id).await;
    assert!(syncs <= 2, "{syncs} answers in 1.5 s");
    live.stop().await;
    assert_eq!(audited(&env, &alice).await, (46, Vec::new()));
}

async fn rooms_joined_while_watched_are_captured_with_history_from_the_watch_s_date(env: Env) {
    let Some(_) = synapse() else { return };
    let alice_user = register("live_host").await;
    let bob = register("live_joiner").await;
    let carol = register("live_dated").await;
    // A room with a message, then another after a date the second watch starts from.
    let room = alice_user.create_room(Some("Rejoint"), None, false).await.unwrap();
    let early = alice_user.send_text(&room, "avant la date").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = alice_user.send_text(&room, "après la date").await.unwrap();

    // Bob's account watched from the start of history, Carol's from the date (another
    // organisation: each keeps its own archive of the room).
    let (dgsi, dgse) = (analyst("dgsi"), analyst("dgse"));
    let whole = watch(&env, &dgsi, account_request(&bob)).await;
    let dated =
        watch(&env, &dgse, AccountWatchRequest { since: Some(since), ..account_request(&carol) }).await;
    assert_eq!(dated.since.map(argus_domain::to_unix_ms), Some(argus_domain::to_unix_ms(since)));
    let live = Running::start(&env.services, "replica-a");
    first_sync(&env, &dgsi, whole.id).await;
    first_sync(&env, &dgse, dated.id).await;
    assert!(!is_stored(&env, &dgsi, &room).await);

    // Invited and joined while watched: captured, with the history each watch wants.
    for user in [&bob, &carol] {
        alice_user.invite(&room, &user.user_id).await.unwrap();
        user.join(&room).await.unwrap();
    }
    until_stored(&env, &dgsi, &room, &[early.clone(), late.clone()]).await;
    until_stored(&env, &dgse, &room, std::slice::from_ref(&late)).await;
    until_followed(&env, whole.id, &room, Membership::Join).await;
    until_followed(&env, dated.id, &room, Membership::Join).await;

    // And what comes next, in both archives.
    let next = alice_user.send_text(&room, "ensuite").await.unwrap();
    until_stored(&env, &dgsi, &room, &[early, late.clone(), next.clone()]).await;
    until_stored(&env, &dgse, &room, &[late, next]).await;
    assert_eq!(watch_by_id(&env, &dgsi, whole.id).await.room_count, 1);
    live.stop().await;
}

async fn rooms_left_banned_and_invited_are_recorded_and_no_longer_captured(env: Env) {
    let Some(_) = synapse() else { return };
    let host = register("live_admin").await;
    let bob = register("live_member").await;
    let home = bob.create_room(Some("Maison"), None, false).await.unwrap();
    let left = host.create_room(Some("Quittée"), None, false).await.unwrap();
    let banned = host.create_room(Some("Bannie"), None, false).await.unwrap();
    for room in [&left, &banned] {
        host.invite(room, &bob.user_id).await.unwrap();
        bob.join(room).await.unwrap();
    }
    let first_left = host.send_text(&left, "avant le départ").await.unwrap();
    let first_banned = host.send_text(&banned, "avant le bannissement").await.unwrap();
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&bob)).await;
    let live = Running::start(&env.services, "replica-a");
    until_stored(&env, &alice, &left, std::slice::from_ref(&first_left)).await;
    until_stored(&env, &alice, &banned, std::slice::from_ref(&first_banned)).await;
    assert_eq!(until_followed(&env, made.id, &home, Membership::Join).await.by, None);

    bob.leave(&left).await.unwrap();
    let ban = json!({"user_id": bob.user_id, "reason": "hors sujet"});
    host.request(Method::POST, &["rooms", &banned, "ban"], &[], Some(&ban)).await.unwrap();
    let invited = host.create_room(Some("Invitation"), None, false).await.unwrap();
    host.invite(&invited, &bob.user_id).await.unwrap();

    let row = until_followed(&env, made.id, &left, Membership::Leave).await;
    assert_eq!(row.by.as_deref(), Some(bob.user_id.as_str()));
    let row = until_followed(&env, made.id, &banned, Membership::Ban).await;
    assert_eq!(row.by.as_deref(), Some(host.user_id.as_str()));
    let row = until_followed(&env, made.id, &invited, Membership::Invite).await;
    assert_eq!(row.by.as_deref(), Some(host.user_id.as_str()));

    // Later messages there are not captured: once a later message of the account's own room
    // is, the loop has seen them.
    host.send_text(&left, "après le départ").await.unwrap();
    host.send_text(&banned, "après le bannissement").await.unwrap();
    host.send_text(&invited, "pendant l'invitation").await.unwrap();
    let barrier = bob.send_text(&home, "témoin").await.unwrap();
    until_stored(&env, &alice, &home, &[barrier]).await;
    assert_eq!(stored_ids(&env, &alice, &left).await, [first_left]);
    assert_eq!(stored_ids(&env, &alice, &banned).await, [first_banned]);
    assert!(!is_stored(&env, &alice, &invited).await);

    // The invite was never accepted.
    let member = host
        .request(Method::GET, &["rooms", &invited, "state", "m.room.member", &bob.user_id], &[], None)
        .await
        .unwrap();
    assert_eq!(member["membership"], "invite");
    let watch = watch_by_id(&env, &alice, made.id).await;
    assert_eq!((watch.status, watch.room_count), (WatchStatus::Active, 1), "{watch:?}");
    live.stop().await;
}

async fn a_kick_while_the_loop_was_stopped_is_recorded_with_what_came_before_it_and_nothing_after(env: Env) {
    let Some(_) = synapse() else { return };
    let host = register("live_kicker").await;
    let bob = register("live_kicked").await;
    let home = bob.create_room(Some("Maison"), None, false).await.unwrap();
    let room = host.create_room(Some("Expulsion"), None, false).await.unwrap();
    host.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();
    let welcome = host.send_text(&room, "bienvenue").await.unwrap();
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&bob)).await;
    let live = Running::start(&env.services, "replica-a");
    until_stored(&env, &alice, &room, std::slice::from_ref(&welcome)).await;
    first_sync(&env, &alice, made.id).await;
    live.stop().await;
    // The poll the stopped loop left under way is answered (and kept by Synapse for a retry
    // of it) at the next event: one in the account's own room.
    let mut in_home = vec![bob.send_text(&home, "témoin").await.unwrap()];
    tokio::time::sleep(Duration::from_millis(500)).await;

    // While no loop runs, a last message reaches the account, then it is kicked; the room goes
    // on without it.
    let last = host.send_text(&room, "juste avant").await.unwrap();
    let kick = json!({"user_id": bob.user_id, "reason": "fin de mission"});
    host.request(Method::POST, &["rooms", &room, "kick"], &[], Some(&kick)).await.unwrap();
    host.send_text(&room, "après l'expulsion").await.unwrap();

    let live = Running::start(&env.services, "replica-b");
    let row = until_followed(&env, made.id, &room, Membership::Leave).await;
    assert_eq!(row.by.as_deref(), Some(host.user_id.as_str()));
    in_home.push(bob.send_text(&home, "ensuite").await.unwrap());
    until_stored(&env, &alice, &home, &in_home).await;
    live.stop().await;
    // What was sent before the kick is read (up to the kick), nothing after it.
    let mut expected = vec![welcome, last];
    expected.sort();
    let mut stored = stored_ids(&env, &alice, &room).await;
    stored.sort();
    assert_eq!(stored, expected);
    assert_eq!(watch_by_id(&env, &alice, made.id).await.room_count, 1);
}

async fn only_listed_rooms_and_their_replacements_are_captured(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_listed").await;
    let body = json!({"preset": "private_chat", "room_version": "10", "name": "Listée"});
    let listed_room = bob.create_room_with(&body).await.unwrap();
    let other = bob.create_room(Some("Ignorée"), None, false).await.unwrap();
    let mut in_listed = vec![bob.send_text(&listed_room, "dans la liste").await.unwrap()];
    bob.send_text(&other, "hors liste").await.unwrap();
    let alice = analyst("dgsi");
    let request = AccountWatchRequest { rooms: Some(vec![listed_room.clone()]), ..account_request(&bob) };
    let made = watch(&env, &alice, request).await;
    assert_eq!(made.rooms, Some(vec![room_id(&listed_room)]));
    let live = Running::start(&env.services, "replica-a");
    until_stored(&env, &alice, &listed_room, &in_listed).await;

    bob.send_text(&other, "toujours hors liste").await.unwrap();
    in_listed.push(bob.send_text(&listed_room, "encore dans la liste").await.unwrap());
    until_stored(&env, &alice, &listed_room, &in_listed).await;
    assert!(!is_stored(&env, &alice, &other).await);
    let rooms = followed(&env, made.id).await;
    assert_eq!(rooms.keys().collect::<Vec<_>>(), [&listed_room], "{rooms:?}");

    // Upgraded: the account (its creator) is in the new room, which is followed too.
    let upgraded = bob
        .request(Method::POST, &["rooms", &listed_room, "upgrade"], &[], Some(&json!({"new_version": "11"})))
        .await
        .unwrap();
    let new = upgraded["replacement_room"].as_str().unwrap().to_owned();
    let in_new = vec![bob.send_text(&new, "dans la nouvelle salle").await.unwrap()];
    until_stored(&env, &alice, &new, &in_new).await;
    until_followed(&env, made.id, &new, Membership::Join).await;
    let more = vec![in_new[0].clone(), bob.send_text(&new, "et encore").await.unwrap()];
    until_stored(&env, &alice, &new, &more).await;
    assert!(!is_stored(&env, &alice, &other).await);
    let watch = watch_by_id(&env, &alice, made.id).await;
    assert_eq!(watch.room_count, 2, "{watch:?}");
    live.stop().await;

    // Still followed by the next loop (the replacement is known from the archive).
    let live = Running::start(&env.services, "replica-b");
    bob.send_text(&other, "hors liste, encore").await.unwrap();
    let more = [more, vec![bob.send_text(&new, "après la reprise").await.unwrap()]].concat();
    until_stored(&env, &alice, &new, &more).await;
    assert!(!is_stored(&env, &alice, &other).await);
    live.stop().await;
}

async fn a_room_no_longer_listed_is_not_captured_even_when_it_was_due(env: Env) {
    let Some(server) = synapse() else { return };
    let bob = register("live_relisted").await;
    let dropped = bob.create_room(Some("Retirée"), None, false).await.unwrap();
    let kept = bob.create_room(Some("Gardée"), None, false).await.unwrap();
    bob.send_text(&dropped, "retirée de la liste").await.unwrap();
    let alice = analyst("dgsi");
    let first = AccountWatchRequest { rooms: Some(vec![dropped.clone()]), ..account_request(&bob) };
    let made = watch(&env, &alice, first).await;
    // Where a loop left the watch: synced, the listed room still to capture (its last read
    // failed or stopped at its cap).
    let homeserver = server.base_url().parse().unwrap();
    let session = argus_matrix::Session::with_token(homeserver, AccessToken::new(bob.access_token.clone()));
    let request = argus_matrix::SyncRequest { since: None, filter_id: None, timeout: Duration::ZERO };
    let position = env.services.connector.sync(&session, &request).await.unwrap().next_batch;
    let (id, now) = (made.id, OffsetDateTime::now_utc());
    let progress = argus_store::SyncProgress {
        sync_token: position,
        synced_at: now,
        rooms: vec![FollowedRoom {
            room_id: room_id(&dropped),
            membership: Membership::Join,
            by: None,
            changed_at: now,
            due: true,
        }],
    };
    let recorded = env
        .with_store(move |s| {
            let claimed = s.claim_account_watches("replica-x", now, Duration::from_secs(30), 10)?;
            assert_eq!(claimed.len(), 1);
            let recorded = s.record_sync(id, "replica-x", &progress)?;
            s.release_account_watch(id, "replica-x")?;
            Ok(recorded)
        })
        .await;
    assert!(recorded);

    // The owner lists another room instead: only that one is captured from now on.
    let second = AccountWatchRequest { rooms: Some(vec![kept.clone()]), ..account_request(&bob) };
    assert_eq!(watch(&env, &alice, second).await.id, made.id);
    let live = Running::start(&env.services, "replica-a");
    bob.send_text(&dropped, "toujours retirée").await.unwrap();
    let mut in_kept = vec![bob.send_text(&kept, "dans la liste").await.unwrap()];
    until_stored(&env, &alice, &kept, &in_kept).await;
    bob.send_text(&dropped, "encore retirée").await.unwrap();
    in_kept.push(bob.send_text(&kept, "témoin").await.unwrap());
    until_stored(&env, &alice, &kept, &in_kept).await;
    // Nothing left to capture: the loop long-polls.
    let syncs = idle_syncs(&env, &alice, made.id).await;
    assert!(syncs <= 2, "{syncs} answers in 1.5 s");
    live.stop().await;
    assert!(!is_stored(&env, &alice, &dropped).await, "a room no longer listed was captured");
}

async fn a_watch_given_again_while_its_loop_runs_is_run_as_given(env: Env) {
    let Some(_) = synapse() else { return };
    let host = register("live_regiven_host").await;
    let bob = register("live_regiven").await;
    let first_room = host.create_room(Some("Première"), None, false).await.unwrap();
    let second_room = host.create_room(Some("Seconde"), None, false).await.unwrap();
    for room in [&first_room, &second_room] {
        host.invite(room, &bob.user_id).await.unwrap();
        bob.join(room).await.unwrap();
    }
    let in_first = vec![host.send_text(&first_room, "première liste").await.unwrap()];
    let alice = analyst("dgsi");
    let first = AccountWatchRequest { rooms: Some(vec![first_room.clone()]), ..account_request(&bob) };
    let made = watch(&env, &alice, first).await;
    let live = Running::start(&env.services, "replica-a");
    until_stored(&env, &alice, &first_room, &in_first).await;
    assert!(!is_stored(&env, &alice, &second_room).await);

    // Given again while its loop runs: another device's token, another room; the old device
    // then logs out.
    let login = bob.login_refreshable().await.unwrap();
    let second = AccountWatchRequest {
        access_token: AccessToken::new(login.access_token.clone()),
        refresh_token: Some(Secret::new(login.refresh_token.clone())),
        rooms: Some(vec![second_room.clone()]),
        ..account_request(&bob)
    };
    assert_eq!(watch(&env, &alice, second).await.id, made.id);
    bob.request(Method::POST, &["logout"], &[], Some(&json!({}))).await.unwrap();

    // The loop runs as given now: the new room captured with the new token, the old one not.
    host.send_text(&first_room, "plus dans la liste").await.unwrap();
    let mut in_second = vec![host.send_text(&second_room, "seconde liste").await.unwrap()];
    until_stored(&env, &alice, &second_room, &in_second).await;
    in_second.push(host.send_text(&second_room, "encore").await.unwrap());
    until_stored(&env, &alice, &second_room, &in_second).await;
    let watch = watch_by_id(&env, &alice, made.id).await;
    assert_eq!((watch.status, watch.status_reason.as_deref()), (WatchStatus::Active, None), "{watch:?}");
    assert_eq!(stored_ids(&env, &alice, &first_room).await, in_first);
    assert_eq!(live.live.running(), [made.id]);
    live.stop().await;
}

async fn a_room_watched_both_ways_stores_each_message_once(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_both").await;
    let room = bob.create_room(Some("Deux fois"), None, false).await.unwrap();
    let mut expected = bob.send_texts(&room, "avant", 3, 1).await.unwrap();
    let alice = analyst("dgsi");
    let request = WatchRequest {
        homeserver_url: homeserver().base_url().to_owned(),
        account: None,
        access_token: AccessToken::new(bob.access_token.clone()),
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.clone(),
        classification: Classification::Restricted,
        interval_secs: 1,
        recovery_key: None,
    };
    watch_room(&env.services, &alice, request).await.unwrap();
    watch(&env, &alice, account_request(&bob)).await;
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(&env.services),
        SchedulerOptions {
            replica: "replica-s".into(),
            jitter: 0.0,
            tick: Duration::from_millis(200),
            ..SchedulerOptions::default()
        },
    ));
    let stop_scheduler = Arc::new(Notify::new());
    let scheduling = tokio::spawn(Arc::clone(&scheduler).run(Arc::clone(&stop_scheduler)));
    let live = Running::start(&env.services, "replica-a");

    // Messages a little apart: read by the scheduler's runs and the loop's alike.
    for i in 0..12 {
        expected.push(bob.send_text(&room, &format!("message {i}")).await.unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    until_stored(&env, &alice, &room, &expected).await;
    // Both go on a while longer: nothing more is stored.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    live.stop().await;
    stop_scheduler.notify_one();
    scheduling.await.unwrap();
    assert_eq!(stored_ids(&env, &alice, &room).await, expected);
    // Each message counted by exactly one run, whichever it was; no run failed.
    assert_eq!(audited(&env, &alice).await, (15, Vec::new()));
}

async fn a_refresh_across_token_expiries_keeps_the_loop_alive(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_refresh").await;
    let room = bob.create_room(Some("Renouvelée"), None, false).await.unwrap();
    let login = bob.login_refreshable().await.unwrap();
    let alice = analyst("dgsi");
    let request = AccountWatchRequest {
        access_token: AccessToken::new(login.access_token.clone()),
        refresh_token: Some(Secret::new(login.refresh_token.clone())),
        ..account_request(&bob)
    };
    let made = watch(&env, &alice, request).await;
    let live = Running::start(&env.services, "replica-a");
    first_sync(&env, &alice, made.id).await;

    // About 13 s of messages: three expiries of the 4 s token.
    let mut expected = Vec::new();
    for i in 0..13 {
        expected.push(bob.send_text(&room, &format!("minute {i}")).await.unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    until_stored(&env, &alice, &room, &expected).await;
    let watch = watch_by_id(&env, &alice, made.id).await;
    assert_eq!((watch.status, watch.status_reason.as_deref()), (WatchStatus::Active, None));
    assert_eq!(live.live.running(), [made.id]);
    live.stop().await;
    let shown = format!("{watch:?} {:?}", env.trail(&alice).await);
    assert!(!shown.contains(&login.access_token) && !shown.contains(&login.refresh_token));
}

async fn a_refused_token_pauses_the_watch_and_ends_its_loop(env: Env) {
    let Some(_) = synapse() else { return };
    let host = register("live_host_out").await;
    let bob = register("live_logged_out").await;
    let room = host.create_room(Some("Déconnexion"), None, false).await.unwrap();
    host.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&bob)).await;
    let live = Running::start(&env.services, "replica-a");
    first_sync(&env, &alice, made.id).await;
    assert_eq!(live.live.running(), [made.id]);

    // The device logs out: its token is refused from now on.
    bob.request(Method::POST, &["logout"], &[], Some(&json!({}))).await.unwrap();
    let meanwhile = host.send_text(&room, "après la déconnexion").await.unwrap();
    let patience = Patience::new("the loop ends");
    while !live.live.running().is_empty() {
        patience.wait(live.live.running()).await;
    }
    let paused = watch_by_id(&env, &alice, made.id).await;
    let reason = paused.status_reason.clone().unwrap_or_default();
    assert_eq!(paused.status, WatchStatus::Paused, "{paused:?}");
    assert!(reason.starts_with("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN"), "{reason}");
    assert!(!reason.contains(&bob.access_token));
    // Not claimed again, however long the replica runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(live.live.cycle().await.unwrap(), 0);
    assert!(live.live.running().is_empty());
    assert!(stored_ids(&env, &alice, &room).await.is_empty());

    // Given again with a new login: active, its loop resumes where it stood, and what was
    // sent meanwhile is captured.
    let login = bob.login_refreshable().await.unwrap();
    let request = AccountWatchRequest {
        access_token: AccessToken::new(login.access_token.clone()),
        refresh_token: Some(Secret::new(login.refresh_token.clone())),
        ..account_request(&bob)
    };
    let again = watch(&env, &alice, request).await;
    assert_eq!((again.id, again.status, again.status_reason), (made.id, WatchStatus::Active, None));
    until_stored(&env, &alice, &room, &[meanwhile]).await;
    assert_eq!(live.live.running(), [made.id]);
    live.stop().await;
}

async fn an_expired_or_locked_account_stops_its_watch_with_its_own_status(env: Env) {
    let Some(server) = synapse() else { return };
    let admin = server.register_admin("live_states_admin").await.unwrap();
    let locked = register("live_locked").await;
    let expired = register("live_expired").await;
    let alice = analyst("dgsi");
    let mut rooms = Vec::new();
    for user in [&locked, &expired] {
        let room = user.create_room(Some("États"), None, false).await.unwrap();
        let sent = user.send_text(&room, "avant").await.unwrap();
        let made = watch(&env, &alice, account_request(user)).await;
        rooms.push((made.id, room, vec![sent]));
    }
    let live = Running::start(&env.services, "replica-a");
    for (_, room, sent) in &rooms {
        until_stored(&env, &alice, room, sent).await;
    }

    admin.set_account_locked(&locked.user_id, true).await.unwrap();
    admin.expire_account(&expired.user_id).await.unwrap();
    let patience = Patience::new("both loops end");
    while !live.live.running().is_empty() {
        patience.wait(live.live.running()).await;
    }
    for ((id, _, _), (status, undone)) in
        rooms.iter().zip([(WatchStatus::AccountLocked, "unlocked"), (WatchStatus::AccountExpired, "renewed")])
    {
        let stopped = watch_by_id(&env, &alice, *id).await;
        let reason = stopped.status_reason.clone().unwrap_or_default();
        assert_eq!(stopped.status, status, "{stopped:?}");
        assert!(reason.starts_with(&format!("{}: ", status.as_str())) && reason.contains(undone), "{reason}");
    }

    // Usable again and given again: active, and what was said meanwhile is captured.
    admin.set_account_locked(&locked.user_id, false).await.unwrap();
    admin.renew_account(&expired.user_id).await.unwrap();
    for (user, (id, room, sent)) in [&locked, &expired].into_iter().zip(&mut rooms) {
        sent.push(user.send_text(room, "après").await.unwrap());
        let again = watch(&env, &alice, account_request(user)).await;
        assert_eq!((again.id, again.status, again.status_reason), (*id, WatchStatus::Active, None));
    }
    for (_, room, sent) in &rooms {
        until_stored(&env, &alice, room, sent).await;
    }
    live.stop().await;
}

async fn one_replica_runs_the_loop_and_another_takes_it_over(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_replicas").await;
    let room = bob.create_room(Some("Relève"), None, false).await.unwrap();
    let alice = analyst("dgsi");
    let made = watch(&env, &alice, account_request(&bob)).await;

    // Replica A first: it holds the loop; B, started after, finds it taken.
    let mut a = Doomed::start(env.replica(|_| {}), "replica-a");
    let patience = Patience::new("replica A runs the loop");
    while a.live.running() != [made.id] {
        patience.wait(a.live.running()).await;
    }
    first_sync(&env, &alice, made.id).await;
    let b = Running::start(&env.replica(|_| {}), "replica-b");
    let mut expected = vec![bob.send_text(&room, "sous A").await.unwrap()];
    until_stored(&env, &alice, &room, &expected).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((a.live.running(), b.live.running()), (vec![made.id], Vec::new()));

    // A dies without giving its lease back: B takes the loop over once the lease ran out.
    a.kill();
    let killed = Instant::now();
    expected.push(bob.send_text(&room, "pendant la relève").await.unwrap());
    let patience = Patience::new("replica B takes the loop over");
    while b.live.running() != [made.id] {
        patience.wait(b.live.running()).await;
    }
    assert!(killed.elapsed() >= Duration::from_secs(1), "taken over before the lease ran out");
    until_stored(&env, &alice, &room, &expected).await;
    expected.push(bob.send_text(&room, "sous B").await.unwrap());
    until_stored(&env, &alice, &room, &expected).await;

    // B stops and gives the lease back: C takes over at its next look.
    let c = Running::start(&env.replica(|_| {}), "replica-c");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(c.live.running().is_empty());
    b.stop().await;
    let stopped = Instant::now();
    let patience = Patience::new("replica C takes the loop over");
    while c.live.running() != [made.id] {
        patience.wait(c.live.running()).await;
    }
    assert!(stopped.elapsed() < Duration::from_secs(3), "a released lease is taken at once");
    expected.push(bob.send_text(&room, "sous C").await.unwrap());
    until_stored(&env, &alice, &room, &expected).await;
    c.stop().await;
    assert_eq!(stored_ids(&env, &alice, &room).await, expected);
    let watch = watch_by_id(&env, &alice, made.id).await;
    assert_eq!(watch.status, WatchStatus::Active);
}

async fn encrypted_rooms_are_stored_decrypted_with_the_recovery_key(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_e2ee").await;
    let room = bob.create_room(Some("Chiffrée"), None, true).await.unwrap();
    let mut sender = Sender::new();
    let early = sender.send_text(&bob, &room, "chiffré avant").await.unwrap();
    let backup = KeyBackup::create(&bob, [0x61; 32], [0x62; 32]).await.unwrap();
    backup.upload(&bob, &room, &mut sender, 0).await.unwrap();
    let alice = analyst("dgsi");
    let request = AccountWatchRequest {
        recovery_key: Some(Secret::new(backup.security_key())),
        ..account_request(&bob)
    };
    let made = watch(&env, &alice, request).await;
    assert!(made.decrypts);
    let live = Running::start(&env.services, "replica-a");
    until_stored(&env, &alice, &room, std::slice::from_ref(&early)).await;
    let late = sender.send_text(&bob, &room, "chiffré pendant").await.unwrap();
    until_stored(&env, &alice, &room, &[early.clone(), late.clone()]).await;
    live.stop().await;

    let page = {
        let (v, r) = (alice.clone(), room_id(&room));
        env.with_store(move |s| s.messages(&v, &r, &PageRequest { first: 10, after: None })).await
    };
    let seen: Vec<_> = page
        .items
        .iter()
        .map(|m| {
            (m.message.event_id.to_string(), m.message.body.clone(), m.message.encrypted, m.message.decrypted)
        })
        .collect();
    assert_eq!(
        seen,
        [
            (early, Some("chiffré avant".to_owned()), true, true),
            (late, Some("chiffré pendant".to_owned()), true, true),
        ]
    );
}

async fn bad_input_is_refused_and_nothing_is_stored(env: Env) {
    let Some(_) = synapse() else { return };
    let bob = register("live_refused").await;
    let stranger = register("live_stranger").await;
    let own = bob.create_room(Some("À lui"), None, false).await.unwrap();
    let theirs = stranger.create_room(Some("Pas à lui"), None, false).await.unwrap();
    let alice = analyst("dgsi");
    let many: Vec<String> = (0..1001).map(|i| format!("!room{i}:{}", homeserver().server_name())).collect();
    let cases: Vec<(&str, AccountWatchRequest, &str)> = vec![
        (
            "no room",
            AccountWatchRequest { rooms: Some(Vec::new()), ..account_request(&bob) },
            "INVALID_INPUT",
        ),
        ("1,001 rooms", AccountWatchRequest { rooms: Some(many), ..account_request(&bob) }, "INVALID_INPUT"),
        (
            "a bad room id",
            AccountWatchRequest {
                rooms: Some(vec![own.clone(), "#alias:tchap.test".into()]),
                ..account_request(&bob)
            },
            "INVALID_INPUT",
        ),
        (
            "interval 0",
            AccountWatchRequest { timeout_secs: Some(0), ..account_request(&bob) },
            "INVALID_INPUT",
        ),
        (
            "interval 301",
            AccountWatchRequest { timeout_secs: Some(301), ..account_request(&bob) },
            "INVALID_INPUT",
        ),
        (
            "above clearance",
            AccountWatchRequest { classification: Classification::TopSecret, ..account_request(&bob) },
            "ABOVE_CLEARANCE",
        ),
        (
            "a room it cannot read",
            AccountWatchRequest { rooms: Some(vec![own.clone(), theirs.clone()]), ..account_request(&bob) },
            "ROOM_FORBIDDEN",
        ),
    ];
    for (what, request, code) in cases {
        match watch_account(&env.services, &alice, request).await {
            Ok(watch) => panic!("{what}: accepted {watch:?}"),
            Err(error) => {
                assert_eq!(error.code(), code, "{what}: {error}");
                assert!(!error.to_string().contains(&bob.access_token), "{what}");
            }
        }
    }
    let (watches, total) = account_watches(&env.services, &alice, 50, None).await.unwrap();
    assert!(watches.is_empty() && total == 0, "{watches:?}");
    // Nothing for a loop to claim either.
    let live = Running::start(&env.services, "replica-a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(live.live.running().is_empty());
    live.stop().await;
    for room in [&own, &theirs] {
        assert!(!is_stored(&env, &alice, room).await);
    }
    // The same watch, valid, is taken.
    let request = AccountWatchRequest {
        rooms: Some(vec![own.clone()]),
        timeout_secs: Some(300),
        ..account_request(&bob)
    };
    assert_eq!(watch(&env, &alice, request).await.timeout_secs, 300);
}
