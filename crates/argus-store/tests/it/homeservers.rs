//! One homeserver per stored room: the client API carries no event signatures, so a stored room
//! answers only to the homeserver it was archived from. Another homeserver answering for the
//! same room id in the same organisation is refused (`HOMESERVER_MISMATCH`) before anything is
//! written, whenever it comes (at the start of its run, or racing another run to the first
//! commit); the same server written another way is the same server. An operator moves a room
//! to another homeserver explicitly, with a REHOME record in the chain.

use std::time::Duration;

use argus_domain::{
    ActorId,
    Classification::{Restricted, Secret},
    HistoryPosition, IngestionOutcome, MessageEdit, MessageRecord, MessageRedaction, OrgId, PageRequest,
    Redaction, RoomSnapshot,
};
use argus_store::{Error, Store};

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, message, messages, now, run, snapshot, viewer},
};

backend_suite!(
    a_stored_room_answers_only_to_its_homeserver,
    the_first_commit_settles_a_race_between_homeservers,
    an_operator_moves_a_room_to_another_homeserver_audited,
);

/// The homeserver the fixtures' rooms are archived from (`support::snapshot`).
const HOME: &str = "https://matrix.agent.tchap.gouv.fr";

/// Another homeserver answering for the same room ids.
const ROGUE: &str = "https://rogue.example.org";

const LEASE: Duration = Duration::from_secs(60);

/// `s` as read from `server`.
fn from(server: &str, mut s: RoomSnapshot) -> RoomSnapshot {
    s.homeserver_url = server.parse().unwrap();
    s
}

/// What another homeserver serves for a stored room: another name, topic, member count and
/// successor, a forged message backdated before the first stored one, an edit and a redaction of
/// stored messages in their senders' names, and positions of its own.
fn forged(room: &str, stored: &[MessageRecord]) -> RoomSnapshot {
    let mut lie = message("$forged", stored[0].sent_at - time::Duration::days(30));
    lie.body = Some("Ordre : tout détruire".to_owned());
    let mut s = from(ROGUE, snapshot(room, vec![lie]));
    s.name = Some("Salle piratée".to_owned());
    s.topic = Some("Réécrit".to_owned());
    s.member_count = 999;
    s.successor = Some("!elsewhere:rogue.example.org".parse().unwrap());
    s.resume_token = Some("rogue-token".to_owned());
    s.edits = vec![MessageEdit {
        event_id: "$rogue-edit".parse().unwrap(),
        sender: stored[0].sender.clone(),
        target: stored[0].event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some("réécrit".to_owned()),
        edited_at: now(),
    }];
    s.redactions = vec![MessageRedaction {
        target: stored[1].event_id.clone(),
        redaction: Redaction { redacted_by: stored[1].sender.clone(), redacted_at: now(), reason: None },
        confirmed: true,
    }];
    s
}

/// Everything the store holds of organisation `org-a`, to compare before and after a refusal.
fn everything(db: &TestDb, room: &str) -> String {
    let v = viewer("org-a", Secret);
    let stored = db.store.room(&v, &rid(room)).unwrap();
    let messages = db.store.messages(&v, &rid(room), &PageRequest::first(100)).unwrap().items;
    let counts: Vec<i64> =
        ["rooms", "messages", "message_versions", "ingestions", "outbox", "ingestion_runs"]
            .iter()
            .map(|t| db.count(&format!("SELECT COUNT(*) AS n FROM {t}")))
            .collect();
    format!("{stored:?}\n{messages:?}\n{counts:?}")
}

/// The stable code of a store error.
fn code(result: argus_store::Result<impl std::fmt::Debug>) -> &'static str {
    match result {
        Ok(done) => panic!("accepted: {done:?}"),
        Err(e) => e.code(),
    }
}

fn begin(
    store: &Store,
    s: &RoomSnapshot,
    clearance: argus_domain::Classification,
) -> argus_store::Result<argus_store::RunTicket> {
    store.begin_run(
        &run(&viewer("org-a", clearance), Restricted),
        &s.room_id,
        &s.homeserver_url,
        LEASE,
        false,
    )
}

/// A room archived from one homeserver is not rewritten from another: neither through a run
/// (refused when it begins, before the other server is even read), nor by pages committed under
/// a run begun otherwise. Nothing is written. The same server written another way is the same.
fn a_stored_room_answers_only_to_its_homeserver(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let room = "!home:x.org";
    let stored = messages(3, now() - time::Duration::hours(1));
    s.record_ingestion(&run(&v, Restricted), &snapshot(room, stored.clone())).unwrap();
    let before = everything(db, room);

    // A whole run from the other homeserver: refused, nothing written.
    let lie = forged(room, &stored);
    assert_eq!(code(s.record_ingestion(&run(&v, Restricted), &lie)), "HOMESERVER_MISMATCH");
    assert_eq!(everything(db, room), before);
    // Refused as the run begins: no journal row, the other server never needs to be read.
    assert_eq!(code(begin(s, &lie, Secret)), "HOMESERVER_MISMATCH");
    assert_eq!(everything(db, room), before);
    // Another scheme or port is another server.
    for other in ["http://matrix.agent.tchap.gouv.fr", "https://matrix.agent.tchap.gouv.fr:8448"] {
        let again = from(other, snapshot(room, messages(1, now())));
        assert_eq!(code(s.record_ingestion(&run(&v, Restricted), &again)), "HOMESERVER_MISMATCH", "{other}");
    }
    assert_eq!(everything(db, room), before);

    // The same server written another way (case, default port, trailing slash or dot, a path):
    // its pages are stored and its positions kept.
    for (i, same) in [
        "https://MATRIX.agent.tchap.gouv.fr:443/",
        "https://matrix.agent.tchap.gouv.fr./",
        "https://matrix.agent.tchap.gouv.fr/_matrix/base",
    ]
    .iter()
    .enumerate()
    {
        let mut more = from(same, snapshot(room, messages(1, now())));
        more.resume_token = Some(format!("t-same-{i}"));
        let done = s.record_ingestion(&run(&v, Restricted), &more).unwrap();
        assert_eq!(done.counts.messages_stored, 1, "{same}");
        assert_eq!(done.room.resume_token, more.resume_token, "{same}");
        assert_eq!(done.room.homeserver_url.as_str(), HOME, "{same}");
    }

    // Another organisation archives the same room id from wherever it reads it.
    let other_org = viewer("org-b", Secret);
    let theirs = s.record_ingestion(&run(&other_org, Restricted), &forged(room, &stored)).unwrap();
    assert_eq!(theirs.room.homeserver_url.as_str(), ROGUE);
    assert_eq!(s.room(&v, &rid(room)).unwrap().unwrap().name.as_deref(), Some("Room !home:x.org"));

    // A room held above the caller's clearance answers as it did before: the run begins as for
    // a room not in the archive (no early answer tells of it) and its commit is withheld.
    let high = "!high:x.org";
    s.record_ingestion(&run(&v, Secret), &snapshot(high, messages(2, now()))).unwrap();
    let lie = forged(high, &messages(2, now()));
    let ticket = begin(s, &lie, Restricted).unwrap();
    assert_eq!(code(s.commit_pages(&ticket, &lie)), "ABOVE_CLEARANCE");
    s.finish_run(&ticket, Some("withheld".to_owned())).unwrap();
    assert_eq!(s.room(&v, &rid(high)).unwrap().unwrap().name.as_deref(), Some("Room !high:x.org"));
}

/// Two runs of a room not yet stored, from two homeservers, both begun before either commits:
/// the first commit stores the room; the other run's commit is refused and writes nothing, and
/// its FAILED record sends nothing to the fusion sink.
fn the_first_commit_settles_a_race_between_homeservers(db: &TestDb) {
    let s = &db.store;
    let room = "!race:x.org";
    let genuine = snapshot(room, messages(2, now() - time::Duration::hours(1)));
    let lie = forged(room, &genuine.messages);
    let first = begin(s, &genuine, Secret).unwrap();
    let second = begin(s, &lie, Secret).unwrap();
    assert_eq!(s.commit_pages(&first, &genuine).unwrap().messages_stored, 2);
    let before = everything(db, room);
    assert_eq!(code(s.commit_pages(&second, &lie)), "HOMESERVER_MISMATCH");
    assert_eq!(everything(db, room), before);
    let refused = s.finish_run(&second, Some("refused".to_owned())).unwrap();
    assert_eq!(refused.ingestion.entry.outcome, IngestionOutcome::Failed);
    assert_eq!(refused.messages_stored, 0);
    s.finish_run(&first, None).unwrap();
    let outbox = s.outbox_pending(10).unwrap();
    assert_eq!(outbox.len(), 1, "only the genuine run reaches the fusion sink");
    assert_eq!(outbox[0].payload.name.as_deref(), Some("Room !race:x.org"));
    assert_eq!(outbox[0].payload.homeserver_url.as_str(), HOME);
    let kept = s.room(&viewer("org-a", Secret), &rid(room)).unwrap().unwrap();
    assert_eq!((kept.homeserver_url.as_str(), kept.member_count), (HOME, 12));
}

/// An operator moves a room to another homeserver (a real migration): from then on the room
/// answers to the new server only, its old positions are dropped, and the chain holds a REHOME
/// record naming both servers, bound like every other link.
fn an_operator_moves_a_room_to_another_homeserver_audited(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let (org, operator): (OrgId, ActorId) = ("org-a".parse().unwrap(), "operator".parse().unwrap());
    let room = "!moving:x.org";
    let mut first = snapshot(room, messages(3, now() - time::Duration::hours(1)));
    first.history = HistoryPosition::Continues("t-older".to_owned());
    s.record_ingestion(&run(&v, Secret), &first).unwrap();
    let rogue = ROGUE.parse().unwrap();

    // Nothing to move: a room not in the organisation, or only in another one.
    assert_eq!(s.rehome_room(&operator, &org, &rid("!absent:x.org"), &rogue).unwrap(), None);
    assert_eq!(s.rehome_room(&operator, &"org-b".parse().unwrap(), &rid(room), &rogue).unwrap(), None);
    // Not to the server it already answers to, however written.
    let same = "https://MATRIX.agent.tchap.gouv.fr:443/".parse().unwrap();
    assert!(matches!(s.rehome_room(&operator, &org, &rid(room), &same), Err(Error::Invalid(_))));
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM ingestions"), 1);

    let record = s.rehome_room(&operator, &org, &rid(room), &rogue).unwrap().unwrap();
    let e = &record.entry;
    assert_eq!((e.actor.as_str(), e.room_id.as_str()), ("operator", room));
    assert_eq!((e.homeserver_url.as_str(), e.rehomed_from.as_deref()), (ROGUE, Some(HOME)));
    assert_eq!((e.outcome, e.message_count, e.classification), (IngestionOutcome::Succeeded, 0, Secret));
    assert!(e.post.is_none() && !e.scheduled);
    assert_eq!(record.seq, 2);
    // Filed at the room's level, read back as written.
    let trail = s.ingestions(&v, &PageRequest::first(10)).unwrap().items;
    assert_eq!(trail[0], record);
    assert!(s.ingestions(&viewer("org-a", Restricted), &PageRequest::first(10)).unwrap().items.is_empty());
    // The room answers to the new server, from its live end; nothing else changed.
    let moved = s.room(&v, &rid(room)).unwrap().unwrap();
    assert_eq!(moved.homeserver_url.as_str(), ROGUE);
    assert_eq!((moved.resume_token, moved.backfill_token, moved.history_complete), (None, None, false));
    assert_eq!(moved.message_count, 3);
    assert_eq!(s.outbox_pending(10).unwrap().len(), 1, "a move alone sends nothing to the fusion sink");

    // The old server is refused now, the new one stores.
    let old = snapshot(room, messages(1, now()));
    assert!(matches!(s.record_ingestion(&run(&v, Secret), &old), Err(Error::HomeserverMismatch)));
    let new = s.record_ingestion(&run(&v, Secret), &from(ROGUE, snapshot(room, messages(1, now())))).unwrap();
    assert_eq!((new.counts.messages_stored, new.room.message_count), (1, 4));

    // The move is a link of the chain: its servers and its kind are bound.
    let heads = s.audit_heads().unwrap();
    assert!(s.audit_verify(&heads).unwrap().iter().all(|c| c.is_ok()));
    crate::audit::drop_triggers(db);
    for tamper in [
        "UPDATE ingestions SET previous_homeserver_url = 'https://elsewhere.example' WHERE seq = 2",
        "UPDATE ingestions SET homeserver_url = 'https://elsewhere.example' WHERE seq = 2",
        "UPDATE ingestions SET action = 'INGEST', previous_homeserver_url = NULL WHERE seq = 2",
    ] {
        db.raw().exec(tamper).unwrap();
        let v = s.audit_verify(&heads).unwrap();
        assert_eq!(v[0].first_bad_seq, Some(2), "{tamper}");
        db.raw()
            .exec(&format!(
                "UPDATE ingestions SET action = 'REHOME', previous_homeserver_url = '{HOME}', \
                 homeserver_url = '{ROGUE}' WHERE seq = 2"
            ))
            .unwrap();
        assert!(s.audit_verify(&heads).unwrap()[0].is_ok());
    }
    // The schema keeps the kind and its column together.
    assert!(db.raw().exec("UPDATE ingestions SET previous_homeserver_url = NULL WHERE seq = 2").is_err());
    assert!(db.raw().exec("UPDATE ingestions SET previous_homeserver_url = 'x' WHERE seq = 1").is_err());
}
