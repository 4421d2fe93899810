//! Room upgrades and joined rooms: the predecessor and successor links kept on the room;
//! upgrades followed on request (each its own audited run, a loop cut, an unreadable successor
//! reported and audited without failing the call); every joined room ingested in one call.

use argus_domain::{IngestionOutcome, PageRequest, RoomId};
use argus_ingest::ingest::{IngestRequest, ingest_joined, ingest_room};
use argus_store::IngestionCursor;
use argus_testkit::homeserver::MATRIX_TOKEN;

use crate::support::{Env, analyst, backend_suite};

backend_suite!(
    upgrades_are_linked_and_followed_on_request,
    an_unreadable_successor_is_reported_and_audited_without_failing_the_call,
    every_joined_room_is_ingested_in_one_call,
);

fn request(env: &Env, room: &str, follow_upgrades: bool) -> IngestRequest {
    crate::support::request_from(&env.hs.uri(), MATRIX_TOKEN, room, follow_upgrades)
}

fn id(room: &str) -> RoomId {
    room.parse().unwrap_or_else(|e| panic!("{e}"))
}

async fn outcomes(env: &Env) -> Vec<(String, IngestionOutcome, i64)> {
    let v = analyst("dgsi");
    let page = env
        .with_store(move |s| s.ingestions(&v, &PageRequest::<IngestionCursor> { first: 100, after: None }))
        .await;
    let mut records: Vec<_> = page
        .items
        .iter()
        .map(|r| (r.entry.room_id.clone(), r.entry.outcome, r.entry.message_count))
        .collect();
    records.reverse();
    records
}

async fn upgrades_are_linked_and_followed_on_request(env: Env) {
    let (a, b, c) = ("!v1:tchap.test", "!v2:tchap.test", "!v3:tchap.test");
    env.hs.room(a, 5);
    env.hs.room(b, 4);
    env.hs.room(c, 3);
    env.hs.upgrade_room(a, b);
    env.hs.upgrade_room(b, c);
    let alice = analyst("dgsi");
    // Without asking, only the room itself; its link is kept.
    let alone = ingest_room(&env.services, &alice, request(&env, a, false), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(alone.room.successor, Some(id(b)));
    assert!(alone.upgrades.is_empty());
    // Asked: each successor in turn, each its own run.
    let done = ingest_room(&env.services, &alice, request(&env, a, true), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let followed: Vec<_> = done
        .upgrades
        .iter()
        .map(|u| (u.room_id.as_str(), u.result.as_ref().map(|s| s.messages_stored).ok()))
        .collect();
    assert_eq!(followed, [(b, Some(4)), (c, Some(3))]);
    let second = done.upgrades[0].result.as_ref().unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((second.room.predecessor.clone(), second.room.successor.clone()), (Some(id(a)), Some(id(c))));
    use IngestionOutcome::Succeeded as S;
    assert_eq!(
        outcomes(&env).await,
        [(a.to_owned(), S, 5), (a.to_owned(), S, 0), (b.to_owned(), S, 4), (c.to_owned(), S, 3)]
    );

    // A loop of upgrades is followed once round.
    env.hs.upgrade_room(c, a);
    let looped = ingest_room(&env.services, &alice, request(&env, b, true), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rooms: Vec<_> = looped.upgrades.iter().map(|u| u.room_id.as_str()).collect();
    assert_eq!(rooms, [c, a]);
}

async fn an_unreadable_successor_is_reported_and_audited_without_failing_the_call(env: Env) {
    let (old, gone) = ("!old:tchap.test", "!forbidden-new:tchap.test");
    env.hs.room(old, 2);
    env.hs.upgrade_room(old, gone);
    let alice = analyst("dgsi");
    let done = ingest_room(&env.services, &alice, request(&env, old, true), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.messages_stored, 2);
    assert_eq!(done.upgrades.len(), 1);
    let (code, message) =
        done.upgrades[0].result.as_ref().err().cloned().unwrap_or_else(|| panic!("forbidden"));
    assert_eq!(code, "ROOM_FORBIDDEN");
    assert!(!message.contains(MATRIX_TOKEN));
    use IngestionOutcome::{Failed as F, Succeeded as S};
    assert_eq!(outcomes(&env).await, [(old.to_owned(), S, 2), (gone.to_owned(), F, 0)]);
    let (v, r) = (alice.clone(), id(gone));
    assert!(env.with_store(move |s| s.room(&v, &r)).await.is_none(), "nothing stored of it");
}

async fn every_joined_room_is_ingested_in_one_call(env: Env) {
    for (room, n) in [("!j1:tchap.test", 3), ("!j2:tchap.test", 6), ("!forbidden-j3:tchap.test", 1)] {
        env.hs.room(room, n);
    }
    let alice = analyst("dgsi");
    let request = env.joined(MATRIX_TOKEN);
    let mut finished = Vec::new();
    let rooms = ingest_joined(&env.services, &alice, request, &mut |room, report| {
        if report.is_none() {
            finished.push(room.to_owned());
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let seen: Vec<_> = rooms
        .iter()
        .map(|r| (r.room_id.as_str(), r.result.as_ref().map(|s| s.messages_stored).map_err(|e| e.0)))
        .collect();
    assert_eq!(
        seen,
        [
            ("!forbidden-j3:tchap.test", Err("ROOM_FORBIDDEN")),
            ("!j1:tchap.test", Ok(3)),
            ("!j2:tchap.test", Ok(6))
        ]
    );
    assert_eq!(finished.len(), 3);
    assert_eq!(outcomes(&env).await.len(), 3, "one audit record per room");
    // A wrong token fails the discovery, before any room.
    let refused = env.joined("syt_wrong_token_0123456789");
    let error = ingest_joined(&env.services, &alice, refused, &mut |_, _| {}).await.err();
    assert_eq!(error.map(|e| e.code()), Some("HOMESERVER_UNAUTHORIZED"));
}
