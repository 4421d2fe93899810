//! A stored room answers only to the homeserver it was archived from, through the ingestion
//! use-case: another homeserver (with any token) is refused with `HOMESERVER_MISMATCH` before it
//! is read, audited FAILED without the token, and nothing is stored or sent to the fusion sink;
//! a watch of the room from that server is refused the same way and paused; an upgrade archived
//! from another server is reported; after an operator moves the room, the new server is read.

use std::{sync::Arc, time::Duration};

use argus_domain::{
    AccessToken, ActorId, Classification, IngestionOutcome, IngestionRecord, PageRequest, RoomId, WatchStatus,
};
use argus_ingest::{
    ingest::ingest_room,
    scheduler::{Scheduler, SchedulerOptions},
    watch::{WatchRequest, watch_room, watches},
};
use argus_store::IngestionCursor;
use argus_testkit::homeserver::{BASE_TS, MATRIX_TOKEN, MockHomeserver, ROOM, TOKEN, ev};
use serde_json::{Value, json};

use crate::support::{Env, analyst, backend_suite, request_from};

backend_suite!(
    another_homeserver_cannot_rewrite_a_stored_room,
    an_upgrade_archived_from_another_homeserver_is_reported,
);

/// A state event of [`ROOM`].
fn state(kind: &str, key: &str, content: Value) -> Value {
    let mut event = ev::event(kind, &format!("$rogue-{kind}-{key}"), ev::ALICE, BASE_TS, content);
    event["state_key"] = json!(key);
    event
}

/// Another homeserver answering for [`ROOM`] to any token it is given ([`TOKEN`]): another name,
/// topic, member count and successor, and a forged message backdated a month before the room's
/// first one, with an edit of a stored message in its sender's name.
async fn rogue() -> MockHomeserver {
    let hs = MockHomeserver::start().await;
    let members = (0..40)
        .map(|i| state("m.room.member", &format!("@m{i}:rogue.test"), json!({ "membership": "join" })));
    let mut events = vec![
        state("m.room.create", "", json!({ "creator": ev::ALICE, "room_version": "10" })),
        state("m.room.name", "", json!({ "name": "Salle piratée" })),
        state("m.room.topic", "", json!({ "topic": "Réécrit" })),
        state(
            "m.room.tombstone",
            "",
            json!({ "body": "moved", "replacement_room": "!elsewhere:rogue.test" }),
        ),
    ];
    events.extend(members);
    hs.state(ROOM).events(events).mount().await;
    let forged = ev::text("$forged", BASE_TS - 30 * 24 * 3600 * 1000, "Ordre : tout détruire");
    let edit = ev::edit("$rogue-edit", BASE_TS, "$m0-crisetchaptest", "réécrit");
    hs.messages(ROOM).page(vec![edit, forged]).mount().await;
    hs
}

fn id(room: &str) -> RoomId {
    room.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// The room, its messages and the fusion outbox, as the analyst's organisation holds them.
async fn archived(env: &Env) -> String {
    let v = analyst("dgsi");
    env.with_store(move |s| {
        let room = s.room(&v, &id(ROOM))?;
        let messages = s.messages(&v, &id(ROOM), &PageRequest::first(100))?.items;
        let outbox = s.outbox_pending(100)?;
        Ok(format!("{room:?}\n{messages:?}\n{outbox:?}"))
    })
    .await
}

async fn trail(env: &Env) -> Vec<IngestionRecord> {
    let v = analyst("dgsi");
    let mut items = env
        .with_store(move |s| s.ingestions(&v, &PageRequest::<IngestionCursor> { first: 100, after: None }))
        .await
        .items;
    items.reverse();
    items
}

async fn another_homeserver_cannot_rewrite_a_stored_room(env: Env) {
    env.hs.room(ROOM, 3);
    let alice = analyst("dgsi");
    let genuine = ingest_room(
        &env.services,
        &alice,
        request_from(&env.hs.uri(), MATRIX_TOKEN, ROOM, false),
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(genuine.messages_stored, 3);
    let before = archived(&env).await;
    let rogue = rogue().await;

    // Refused before the other server is read; audited FAILED without the token; nothing stored.
    let refused =
        ingest_room(&env.services, &alice, request_from(&rogue.uri(), TOKEN, ROOM, false), &mut |_| {})
            .await
            .err()
            .unwrap_or_else(|| panic!("another homeserver rewrote the room"));
    assert_eq!(refused.code(), "HOMESERVER_MISMATCH");
    assert!(!refused.public_message().contains(TOKEN));
    assert_eq!(rogue.request_count().await, 0);
    assert_eq!(archived(&env).await, before);
    let records = trail(&env).await;
    let last = records.last().unwrap_or_else(|| panic!("no record"));
    assert_eq!((last.entry.outcome, last.entry.message_count), (IngestionOutcome::Failed, 0));
    assert_eq!(last.entry.homeserver_url, rogue.uri());
    let reason = last.entry.error.as_deref().unwrap_or_default();
    assert!(reason.contains("another homeserver") && !reason.contains(TOKEN), "{reason}");

    // A watch of the room from that server: its scheduled run is refused the same way, audited,
    // and the watch paused (every run would be refused) until it is given again.
    let watch = WatchRequest {
        homeserver_url: rogue.uri(),
        access_token: AccessToken::new(TOKEN),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: ROOM.to_owned(),
        classification: Classification::Restricted,
        interval_secs: 1,
        recovery_key: None,
    };
    watch_room(&env.services, &alice, watch).await.unwrap_or_else(|e| panic!("{e}"));
    // Creating the watch asks that server whether the token may read the room (so that a room
    // withheld from the caller and a missing one answer alike); its runs never read it.
    let asked = rogue.request_count().await;
    let scheduler = Scheduler::new(
        Arc::clone(&env.services),
        SchedulerOptions { replica: "replica-a".into(), jitter: 0.0, ..SchedulerOptions::default() },
    );
    let report = scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.paused), (1, 1), "{report:?}");
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed[0].status, WatchStatus::Paused);
    let reason = listed[0].status_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("HOMESERVER_MISMATCH: "), "{reason}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(scheduler.cycle().await.map(|r| r.claimed).ok(), Some(0));
    let records = trail(&env).await;
    let last = records.last().unwrap_or_else(|| panic!("no record"));
    assert!(last.entry.scheduled && last.entry.outcome == IngestionOutcome::Failed);
    assert_eq!(rogue.request_count().await, asked);
    assert_eq!(archived(&env).await, before);

    // An operator moves the room (a real migration): the new server is read, the old refused.
    let (operator, org, rogue_url): (ActorId, _, _) = (
        "operator".parse().unwrap_or_else(|e| panic!("{e}")),
        alice.org.clone(),
        rogue.uri().parse().unwrap_or_else(|e| panic!("{e}")),
    );
    let moved = env.with_store(move |s| s.rehome_room(&operator, &org, &id(ROOM), &rogue_url)).await;
    assert!(moved.is_some_and(|r| r.entry.rehomed_from.as_deref() == Some(env.hs.uri().as_str())));
    let read =
        ingest_room(&env.services, &alice, request_from(&rogue.uri(), TOKEN, ROOM, false), &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((read.room.homeserver_url.as_str(), read.messages_stored), (rogue.uri().as_str(), 1));
    let old = ingest_room(
        &env.services,
        &alice,
        request_from(&env.hs.uri(), MATRIX_TOKEN, ROOM, false),
        &mut |_| {},
    )
    .await
    .err()
    .map(|e| e.code());
    assert_eq!(old, Some("HOMESERVER_MISMATCH"));
    let verified = env.with_store(|s| s.audit_verify(&[])).await;
    assert!(verified.iter().all(|c| c.is_ok()), "{verified:?}");
}

/// Following upgrades reaches only rooms that answer to the same homeserver: a successor
/// archived from another server is reported (and audited) as refused, without failing the call.
async fn an_upgrade_archived_from_another_homeserver_is_reported(env: Env) {
    let (old, new) = ("!up1:tchap.test", "!up2:tchap.test");
    let elsewhere = MockHomeserver::start_any_room().await;
    elsewhere.room(new, 2);
    let alice = analyst("dgsi");
    ingest_room(&env.services, &alice, request_from(&elsewhere.uri(), MATRIX_TOKEN, new, false), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    env.hs.room(old, 3);
    env.hs.room(new, 4);
    env.hs.upgrade_room(old, new);
    let done =
        ingest_room(&env.services, &alice, request_from(&env.hs.uri(), MATRIX_TOKEN, old, true), &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.messages_stored, 3);
    let outcomes: Vec<_> =
        done.upgrades.iter().map(|u| (u.room_id.as_str(), u.result.as_ref().err().map(|e| e.0))).collect();
    assert_eq!(outcomes, [(new, Some("HOMESERVER_MISMATCH"))]);
    let v = alice.clone();
    let kept = env.with_store(move |s| s.room(&v, &id(new))).await.unwrap_or_else(|| panic!("stored"));
    assert_eq!((kept.homeserver_url.as_str(), kept.message_count), (elsewhere.uri().as_str(), 2));
}
