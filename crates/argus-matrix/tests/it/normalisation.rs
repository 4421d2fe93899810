//! Each normalisation rule, through a full read of a mock room.

use argus_domain::RoomSnapshot;
use serde_json::{Value, json};

use crate::mock::{MockHomeserver as Hs, ROOM, ev};

#[expect(clippy::unwrap_used, reason = "test helper: a failed read fails the test")]
/// Reads a room whose timeline is `events` (given oldest first) in one page.
async fn read(mut events: Vec<Value>) -> RoomSnapshot {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    events.reverse();
    hs.messages(ROOM).page(events).mount().await;
    hs.read_with(&Hs::connector()).await.unwrap()
}

fn by_id<'a>(s: &'a RoomSnapshot, id: &str) -> &'a argus_domain::MessageRecord {
    s.messages.iter().find(|m| m.event_id.as_str() == id).unwrap_or_else(|| panic!("{id} missing"))
}

#[tokio::test]
async fn every_msgtype_is_kept() {
    let media = |id: &str, msgtype: &str| {
        ev::event(
            "m.room.message",
            id,
            ev::ALICE,
            1000,
            json!({"msgtype": msgtype, "body": "f.bin", "url": "mxc://tchap.test/abc", "info": {"mimetype": "image/png", "size": 1234}}),
        )
    };
    let s = read(vec![
        ev::msg("$text", 1, "m.text", "bonjour"),
        ev::msg("$notice", 2, "m.notice", "avis"),
        ev::msg("$emote", 3, "m.emote", "salue"),
        media("$image", "m.image"),
        media("$file", "m.file"),
        media("$audio", "m.audio"),
        media("$video", "m.video"),
        ev::event(
            "m.room.message",
            "$loc",
            ev::ALICE,
            5,
            json!({"msgtype": "m.location", "body": "Paris", "geo_uri": "geo:48.85,2.35"}),
        ),
        ev::event(
            "m.room.message",
            "$encfile",
            ev::ALICE,
            6,
            json!({"msgtype": "m.file", "body": "secret.pdf", "file": {"url": "mxc://tchap.test/enc"}}),
        ),
    ])
    .await;
    assert_eq!(s.messages.len(), 9);
    for (id, t) in
        [("$text", "m.text"), ("$notice", "m.notice"), ("$emote", "m.emote"), ("$loc", "m.location")]
    {
        assert_eq!(by_id(&s, id).msgtype.as_deref(), Some(t));
        assert!(by_id(&s, id).media.is_none());
    }
    assert_eq!(by_id(&s, "$text").body.as_deref(), Some("bonjour"));
    for id in ["$image", "$file", "$audio", "$video"] {
        let media = by_id(&s, id).media.clone().unwrap();
        assert_eq!(media.uri.as_deref(), Some("mxc://tchap.test/abc"));
        assert_eq!(media.mimetype.as_deref(), Some("image/png"));
        assert_eq!(media.size, Some(1234));
    }
    assert_eq!(by_id(&s, "$encfile").media.as_ref().unwrap().uri, None);
    assert_eq!(by_id(&s, "$text").sent_at.unix_timestamp_nanos(), 1_000_000);
}

#[tokio::test]
async fn edits_are_folded_into_their_original_latest_wins() {
    let s = read(vec![
        ev::text("$orig", 1000, "premier jet"),
        ev::edit("$edit2", 3000, "$orig", "version finale"),
        ev::edit("$edit1", 2000, "$orig", "deuxième"),
        ev::edit("$elsewhere", 4000, "$old", "corrigé"),
    ])
    .await;
    assert_eq!(s.messages.len(), 1, "edits are not messages");
    let m = by_id(&s, "$orig");
    assert!(m.edited);
    assert_eq!(m.body.as_deref(), Some("version finale"));
    assert_eq!(s.report.edits_applied, 2);
    // Every version is kept, oldest first: the original, then each edit.
    let versions: Vec<_> = m.versions.iter().map(|v| (v.event_id.as_str(), v.body.as_deref())).collect();
    assert_eq!(
        versions,
        [("$orig", Some("premier jet")), ("$edit1", Some("deuxième")), ("$edit2", Some("version finale"))]
    );
    assert_eq!(s.edits.len(), 1);
    assert_eq!(s.edits[0].target.as_str(), "$old");
    assert_eq!(s.edits[0].body.as_deref(), Some("corrigé"));
}

#[tokio::test]
async fn edits_by_another_sender_are_ignored() {
    let mut forged = ev::edit("$forged", 2000, "$orig", "usurpé");
    forged["sender"] = json!(ev::BOB);
    let s = read(vec![ev::text("$orig", 1000, "authentique"), forged]).await;
    assert_eq!(by_id(&s, "$orig").body.as_deref(), Some("authentique"));
    assert!(!by_id(&s, "$orig").edited);
    assert!(by_id(&s, "$orig").versions.is_empty());
    assert_eq!((s.report.edits_applied, s.report.edits_ignored), (0, 1));
}

#[tokio::test]
async fn redactions_are_honoured_in_every_form() {
    let mut pre_redacted = ev::event("m.room.message", "$gone", ev::ALICE, 1, json!({}));
    pre_redacted["unsigned"] = json!({"redacted_because": {
        "type": "m.room.redaction", "event_id": "$r0", "sender": ev::BOB, "origin_server_ts": 5,
        "content": {"reason": "hors sujet"}
    }});
    let media = ev::event(
        "m.room.message",
        "$img",
        ev::ALICE,
        2,
        json!({"msgtype": "m.image", "body": "x.png", "url": "mxc://a/b"}),
    );
    // A redaction by the message's own sender applies without confirmation, in both forms.
    let own = |mut e: Value| {
        e["sender"] = json!(ev::ALICE);
        e
    };
    let s = read(vec![
        pre_redacted,
        media,
        ev::text("$v11", 3, "à supprimer"),
        ev::text("$kept", 4, "toujours là"),
        own(ev::redaction_old("$r1", 10, "$img")),
        own(ev::redaction_v11("$r2", 11, "$v11")),
        // Bob's redaction of Alice's message, which the homeserver does not serve redacted.
        ev::redaction_v11("$r4", 12, "$kept"),
        ev::redaction_v11("$r3", 13, "$stored_earlier"),
    ])
    .await;
    assert_eq!(s.messages.len(), 4);
    for id in ["$gone", "$img", "$v11"] {
        let m = by_id(&s, id);
        assert!(m.redacted, "{id}");
        assert!(m.body.is_none() && m.media.is_none(), "{id}");
    }
    let gone = by_id(&s, "$gone").redaction.clone().expect("who redacted, from redacted_because");
    assert_eq!((gone.redacted_by.as_str(), gone.reason.as_deref()), (ev::BOB, Some("hors sujet")));
    assert_eq!(by_id(&s, "$v11").redaction.as_ref().map(|r| r.redacted_by.as_str()), Some(ev::ALICE));
    assert_eq!(by_id(&s, "$kept").body.as_deref(), Some("toujours là"));
    assert_eq!(s.report.redacted, 3);
    assert_eq!(s.report.redactions_ignored, 1);
    // Outside the range: handed to the store, unconfirmed (the homeserver does not serve the
    // target as redacted), with who sent it.
    assert_eq!(s.redactions.len(), 1);
    assert_eq!(s.redactions[0].target.as_str(), "$stored_earlier");
    assert!(!s.redactions[0].confirmed);
    assert_eq!(s.redactions[0].redaction.redacted_by.as_str(), ev::BOB);
}

#[tokio::test]
async fn a_redacted_edit_is_not_applied() {
    let s = read(vec![ev::text("$orig", 1, "original"), ev::edit("$edit", 2, "$orig", "retiré"), {
        // Withdrawn by its own sender.
        let mut r = ev::redaction_v11("$r", 3, "$edit");
        r["sender"] = json!(ev::ALICE);
        r
    }])
    .await;
    assert_eq!(by_id(&s, "$orig").body.as_deref(), Some("original"));
    assert!(s.redactions.is_empty());
}

#[tokio::test]
async fn replies_and_threads_are_links() {
    let reply = ev::event(
        "m.room.message",
        "$reply",
        ev::BOB,
        2,
        json!({"msgtype": "m.text", "body": "oui", "m.relates_to": {"m.in_reply_to": {"event_id": "$root"}}}),
    );
    let in_thread = ev::event(
        "m.room.message",
        "$t1",
        ev::BOB,
        3,
        json!({"msgtype": "m.text", "body": "dans le fil", "m.relates_to": {
            "rel_type": "m.thread", "event_id": "$root", "is_falling_back": true, "m.in_reply_to": {"event_id": "$root"}}}),
    );
    let s = read(vec![ev::text("$root", 1, "question"), reply, in_thread]).await;
    assert_eq!(by_id(&s, "$reply").reply_to.as_ref().map(|e| e.as_str()), Some("$root"));
    assert_eq!(by_id(&s, "$reply").thread_root, None);
    assert_eq!(by_id(&s, "$t1").thread_root.as_ref().map(|e| e.as_str()), Some("$root"));
    assert_eq!(by_id(&s, "$t1").reply_to, None, "a thread fallback is not a reply");
}

#[tokio::test]
async fn encrypted_events_are_kept_without_body() {
    let enc = ev::event(
        "m.room.encrypted",
        "$enc",
        ev::ALICE,
        1,
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn...", "session_id": "s", "device_id": "D"}),
    );
    let s = read(vec![enc]).await;
    let m = by_id(&s, "$enc");
    assert!(m.encrypted);
    assert!(m.body.is_none() && m.msgtype.is_none());
    assert_eq!(s.report.encrypted, 1);
}

#[tokio::test]
async fn malformed_events_are_skipped_and_counted() {
    let s = read(vec![
        ev::text("$ok", 1, "bien"),
        json!({"type": "m.room.message", "sender": ev::ALICE}),
        json!("not an object"),
        ev::event("m.room.message", "$nobody", ev::ALICE, 2, json!({"msgtype": "m.text"})),
        ev::event("m.room.message", "$badbody", ev::ALICE, 2, json!({"msgtype": "m.text", "body": 42})),
        ev::event("m.room.message", "$badsender", "alice", 2, json!({"msgtype": "m.text", "body": "x"})),
        ev::event("m.room.message", "bad-id", ev::ALICE, 2, json!({"msgtype": "m.text", "body": "x"})),
        ev::event(
            "m.room.message",
            "$badinfo",
            ev::ALICE,
            3,
            json!({"msgtype": "m.image", "body": "i", "url": "mxc://a/b", "info": {"size": "big"}}),
        ),
        ev::event("m.room.member", "$member", ev::ALICE, 4, json!({"membership": 7})),
    ])
    .await;
    assert_eq!(s.messages.len(), 2, "{:?}", s.messages);
    assert_eq!(s.report.malformed_skipped, 6);
    assert_eq!(s.report.events_fetched, 9);
    assert_eq!(
        by_id(&s, "$badinfo").media.as_ref().unwrap().size,
        None,
        "a bad info field drops only itself"
    );
}

#[tokio::test]
async fn events_claiming_another_room_are_dropped() {
    let mut foreign = ev::text("$foreign", 2, "intrus");
    foreign["room_id"] = json!("!other:tchap.test");
    let s = read(vec![ev::text("$mine", 1, "à moi"), foreign]).await;
    assert_eq!(s.messages.len(), 1);
    assert_eq!(s.report.foreign_dropped, 1);
}

#[tokio::test]
async fn duplicate_events_are_kept_once() {
    let s = read(vec![ev::text("$dup", 1, "a"), ev::text("$dup", 1, "a")]).await;
    assert_eq!(s.messages.len(), 1);
}

#[tokio::test]
async fn room_state_is_summarised() {
    let hs = Hs::start().await;
    let st = |t: &str, key: &str, content: Value| json!({"type": t, "state_key": key, "content": content, "sender": ev::ALICE, "event_id": format!("$s{t}{key}"), "origin_server_ts": 1});
    hs.state(ROOM)
        .events(vec![
            st("m.room.name", "", json!({"name": "Salle"})),
            st("m.room.topic", "", json!({"topic": "Sujet"})),
            st("m.room.canonical_alias", "", json!({"alias": "#salle:tchap.test"})),
            st("m.room.encryption", "", json!({"algorithm": "m.megolm.v1.aes-sha2"})),
            st("m.room.member", ev::ALICE, json!({"membership": "join"})),
            st("m.room.member", ev::BOB, json!({"membership": "leave"})),
            st("m.room.member", "@carol:tchap.test", json!({"membership": "join"})),
            st("m.room.member", "@dan:tchap.test", json!({"membership": "invite"})),
        ])
        .mount()
        .await;
    hs.messages(ROOM).page(vec![]).mount().await;
    let s = hs.read_with(&Hs::connector()).await.unwrap();
    assert_eq!(s.name.as_deref(), Some("Salle"));
    assert_eq!(s.topic.as_deref(), Some("Sujet"));
    assert_eq!(s.canonical_alias.as_deref(), Some("#salle:tchap.test"));
    assert_eq!(s.member_count, 2);
    assert!(s.encrypted);
}
