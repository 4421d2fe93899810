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

/// The `EncryptedFile` of the specification's example ("Sending encrypted attachments").
fn encrypted_file(url: &str) -> Value {
    json!({
        "url": url,
        "key": {"kty": "oct", "key_ops": ["encrypt", "decrypt"], "alg": "A256CTR",
                "k": "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA", "ext": true},
        "iv": "X85+XgHN+HEAAAAAAAAAAA",
        "hashes": {"sha256": "5qG4fFnbbVdlAB1Q72JDKwCagV6Dbkx9uds4rSak37c"},
        "v": "v2"
    })
}

#[tokio::test]
async fn media_keep_their_file_name_and_encrypted_file_but_not_their_thumbnail() {
    let content = |msgtype: &str, extra: Value| {
        let mut c = json!({"msgtype": msgtype, "body": "rapport.pdf",
                           "info": {"mimetype": "application/pdf", "size": 2048,
                                    "thumbnail_url": "mxc://tchap.test/thumb",
                                    "thumbnail_file": encrypted_file("mxc://tchap.test/thumbenc"),
                                    "thumbnail_info": {"mimetype": "image/png", "size": 10}}});
        if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
            c.extend(extra);
        }
        c
    };
    let s = read(vec![
        ev::event(
            "m.room.message",
            "$plain",
            ev::ALICE,
            1,
            content("m.file", json!({"url": "mxc://tchap.test/pdf"})),
        ),
        ev::event(
            "m.room.message",
            "$named",
            ev::ALICE,
            2,
            content(
                "m.image",
                json!({"url": "mxc://tchap.test/img", "filename": "photo.jpg", "body": "Vue du pont"}),
            ),
        ),
        ev::event(
            "m.room.message",
            "$unnamed",
            ev::ALICE,
            3,
            content("m.video", json!({"url": "mxc://tchap.test/vid"})),
        ),
        ev::event(
            "m.room.message",
            "$enc",
            ev::ALICE,
            4,
            content("m.audio", json!({"file": encrypted_file("mxc://tchap.test/ciphertext"), "filename": 7})),
        ),
        ev::event(
            "m.room.message",
            "$badfile",
            ev::ALICE,
            5,
            content("m.file", json!({"file": {"url": "mxc://tchap.test/x", "key": "not a key"}})),
        ),
        ev::event(
            "m.room.message",
            "$huge",
            ev::ALICE,
            7,
            content(
                "m.file",
                json!({"url": "mxc://tchap.test/huge", "body": format!("a\u{0}b{}", "é".repeat(3000)),
                       "info": {"mimetype": "application/pdf"}}),
            ),
        ),
        ev::event(
            "m.room.message",
            "$outsized",
            ev::ALICE,
            8,
            content("m.file", {
                let mut f = encrypted_file("mxc://tchap.test/outsized");
                f["iv"] = json!("A".repeat(10_000));
                json!({"file": f})
            }),
        ),
        ev::event(
            "m.sticker",
            "$sticker",
            ev::BOB,
            6,
            json!({"body": "Chat qui salue", "url": "mxc://tchap.test/sticker",
                   "info": {"mimetype": "image/webp", "size": 512, "w": 128, "h": 128}}),
        ),
    ])
    .await;
    assert_eq!(s.messages.len(), 8, "a malformed file keeps its message");
    let media = |id: &str| by_id(&s, id).media.clone().unwrap_or_else(|| panic!("{id} has no media"));

    let plain = media("$plain");
    assert_eq!(plain.uri.as_deref(), Some("mxc://tchap.test/pdf"), "never the thumbnail");
    assert_eq!((plain.mimetype.as_deref(), plain.size), (Some("application/pdf"), Some(2048)));
    assert_eq!(plain.filename.as_deref(), Some("rapport.pdf"), "an m.file's body is its name");
    assert_eq!(plain.file, None, "the thumbnail's EncryptedFile is not the file's");

    assert_eq!(media("$named").filename.as_deref(), Some("photo.jpg"));
    assert_eq!(by_id(&s, "$named").body.as_deref(), Some("Vue du pont"));
    assert_eq!(media("$unnamed").filename, None, "only an m.file's body names it");

    let enc = media("$enc");
    assert_eq!(enc.uri, None);
    let file = enc.file.clone().unwrap_or_else(|| panic!("no EncryptedFile"));
    assert_eq!(file.url, "mxc://tchap.test/ciphertext");
    assert_eq!((file.key.alg.as_str(), file.v.as_deref()), ("A256CTR", Some("v2")));
    assert_eq!(
        file.hashes.get("sha256").map(String::as_str),
        Some("5qG4fFnbbVdlAB1Q72JDKwCagV6Dbkx9uds4rSak37c")
    );
    assert_eq!(enc.mxc_uri(), Some("mxc://tchap.test/ciphertext"));
    assert_eq!(enc.filename, None, "a file name of the wrong type is dropped alone");
    assert_eq!(enc.mimetype.as_deref(), Some("application/pdf"));

    let bad = media("$badfile");
    assert_eq!((bad.file, bad.uri, bad.filename.as_deref()), (None, None, Some("rapport.pdf")));

    // A sender cannot make a message unstorable: a file name is kept without control
    // characters, cut to 255 bytes on a character boundary; an outsized EncryptedFile is dropped.
    let huge = media("$huge").filename.unwrap_or_default();
    assert!(huge.len() <= 255 && huge.starts_with("abé") && !huge.contains('\u{0}'), "{}", huge.len());
    assert_eq!(media("$outsized").file, None);

    let sticker = by_id(&s, "$sticker");
    assert_eq!(sticker.msgtype.as_deref(), Some("m.sticker"));
    assert_eq!(sticker.body.as_deref(), Some("Chat qui salue"));
    let sticker = media("$sticker");
    assert_eq!(sticker.uri.as_deref(), Some("mxc://tchap.test/sticker"));
    assert_eq!(
        (sticker.mimetype.as_deref(), sticker.size, sticker.filename),
        (Some("image/webp"), Some(512), None)
    );
}

#[tokio::test]
async fn an_edit_replaces_the_file_with_its_new_content() {
    let original = ev::event(
        "m.room.message",
        "$orig",
        ev::ALICE,
        1,
        json!({"msgtype": "m.file", "body": "v1.pdf", "url": "mxc://tchap.test/v1"}),
    );
    let edit = ev::event(
        "m.room.message",
        "$edit",
        ev::ALICE,
        2,
        json!({"msgtype": "m.file", "body": "* v2.pdf",
               "m.new_content": {"msgtype": "m.file", "body": "v2.pdf",
                                 "file": encrypted_file("mxc://tchap.test/v2"),
                                 "info": {"mimetype": "application/pdf", "size": 99, "thumbnail_url": "mxc://tchap.test/t"}},
               "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}}),
    );
    let s = read(vec![original, edit]).await;
    let m = by_id(&s, "$orig");
    assert!(m.edited);
    let media = m.media.clone().unwrap_or_else(|| panic!("no media"));
    assert_eq!(media.uri, None);
    assert_eq!(media.file.map(|f| f.url).as_deref(), Some("mxc://tchap.test/v2"));
    assert_eq!((media.filename.as_deref(), media.size), (Some("v2.pdf"), Some(99)));
    assert_eq!(m.versions.len(), 2);
}
