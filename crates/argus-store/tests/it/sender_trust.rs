//! What the connector's device knew of a message's sending device, on both backends: each
//! trust stored and read back by every read (a page, one message, the added messages, search),
//! through both of SQLite's insert statements; a message stored before (NULL) read as
//! unrecorded; an undecrypted message re-fetched decrypted taking the trust its decryption
//! found, once; and a stored value that is no trust refused as corrupt.

use argus_domain::{
    Classification::*, MessageRecord, PageRequest, SearchRequest, SenderTrust, StoredMessage, Viewer,
};
use argus_store::Error;
use time::OffsetDateTime;

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, now, run, snapshot, viewer},
};

backend_suite!(
    each_trust_is_read_back_by_every_read,
    a_message_stored_before_reads_as_unrecorded,
    a_message_decrypted_later_takes_its_trust_once,
    a_stored_value_that_is_no_trust_is_corrupt,
);

const JEAN: &str = "@jean.dupont:agent.tchap.gouv.fr";
const ROOM: &str = "!confiance:x.org";

fn text(id: &str, body: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord::text(id.parse().unwrap(), JEAN.parse().unwrap(), body.to_owned(), sent_at)
}

/// A message as the connector hands over one its device decrypted, with `trust`.
fn decrypted(id: &str, body: &str, sent_at: OffsetDateTime, trust: SenderTrust) -> MessageRecord {
    MessageRecord { encrypted: true, decrypted: true, sender_trust: trust, ..text(id, body, sent_at) }
}

/// A message as the connector hands over one it could not decrypt.
fn undecrypted(id: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord {
        encrypted: true,
        msgtype: None,
        body: None,
        sender_trust: SenderTrust::UnknownDevice,
        ..text(id, "", sent_at)
    }
}

/// Event id → trust of each message of the room, as a page reads them.
fn trusts(db: &TestDb, v: &Viewer) -> std::collections::BTreeMap<String, SenderTrust> {
    let page = db.store.messages(v, &rid(ROOM), &PageRequest::first(500)).unwrap();
    by_event(&page.items)
}

fn by_event(messages: &[StoredMessage]) -> std::collections::BTreeMap<String, SenderTrust> {
    messages.iter().map(|m| (m.message.event_id.as_str().to_owned(), m.message.sender_trust)).collect()
}

/// A word found only in the messages of `trust`.
fn word(trust: SenderTrust) -> &'static str {
    match trust {
        SenderTrust::Verified => "pomme",
        SenderTrust::UnverifiedDevice => "poire",
        SenderTrust::IdentityChanged => "cerise",
        SenderTrust::UnknownDevice => "prune",
        SenderTrust::NotEncrypted => "fraise",
    }
}

fn each_trust_is_read_back_by_every_read(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now();
    let mut cursor = db.store.messages_added_from_now(&v, None).unwrap();
    // More than one SQLite multi-row statement's worth (64), and a rest stored row by row.
    let sent: Vec<MessageRecord> = (0..70)
        .map(|i| {
            let trust = SenderTrust::ALL[i % SenderTrust::ALL.len()];
            let body = format!("confiance {} numero{i}", word(trust));
            match trust {
                SenderTrust::NotEncrypted => text(&format!("$m{i}"), &body, t),
                _ => decrypted(&format!("$m{i}"), &body, t, trust),
            }
        })
        .collect();
    let want: std::collections::BTreeMap<String, SenderTrust> =
        sent.iter().map(|m| (m.event_id.as_str().to_owned(), m.sender_trust)).collect();
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, sent)).unwrap();

    assert_eq!(trusts(db, &v), want, "a page of messages");
    for trust in SenderTrust::ALL {
        let i = SenderTrust::ALL.iter().position(|t| *t == trust).unwrap();
        let id = format!("$m{i}");
        let one = db.store.message(&v, &rid(ROOM), &id.parse().unwrap()).unwrap().unwrap();
        assert_eq!(one.message.sender_trust, trust, "{id} read alone");
    }
    let mut added = Vec::new();
    loop {
        let batch = db.store.messages_added(&v, None, &mut cursor, 100).unwrap();
        if batch.is_empty() {
            break;
        }
        added.extend(batch);
    }
    assert_eq!(by_event(&added), want, "the added messages");
    for trust in SenderTrust::ALL {
        let search = SearchRequest {
            query: word(trust).parse().unwrap(),
            room_id: None,
            sender: None,
            from: None,
            to: None,
            first: 50,
            offset: 0,
        };
        let hits = db.store.search(&v, &search).unwrap().hits;
        assert_eq!(hits.len(), 14, "{trust}");
        assert!(hits.iter().all(|h| h.message.message.sender_trust == trust), "search for {trust}");
    }
}

fn a_message_stored_before_reads_as_unrecorded(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now();
    let sent = vec![
        decrypted("$dec", "déchiffré", t, SenderTrust::Verified),
        undecrypted("$sealed", t),
        text("$clear", "en clair", t),
    ];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, sent)).unwrap();
    db.raw().exec("UPDATE messages SET sender_trust = NULL").unwrap();
    let got = trusts(db, &v);
    assert_eq!(got["$dec"], SenderTrust::UnknownDevice);
    assert_eq!(got["$sealed"], SenderTrust::UnknownDevice);
    assert_eq!(got["$clear"], SenderTrust::NotEncrypted);
}

fn a_message_decrypted_later_takes_its_trust_once(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now();
    let first = vec![undecrypted("$later", t), text("$clear", "en clair", t)];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, first)).unwrap();
    assert_eq!(trusts(db, &v)["$later"], SenderTrust::UnknownDevice);
    // Re-fetched, now decrypted by the device from a verified sender: filled in with its trust.
    let again = vec![decrypted("$later", "rempli", t, SenderTrust::Verified)];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, again)).unwrap();
    let got = db.store.message(&v, &rid(ROOM), &"$later".parse().unwrap()).unwrap().unwrap();
    assert_eq!(
        (got.message.body.as_deref(), got.message.sender_trust),
        (Some("rempli"), SenderTrust::Verified)
    );
    // Filled once: a later copy with another trust, or a message stored in clear claimed
    // decrypted, rewrites nothing.
    let forged = vec![
        decrypted("$later", "réécrit", t, SenderTrust::UnverifiedDevice),
        decrypted("$clear", "réécrit", t, SenderTrust::Verified),
    ];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, forged)).unwrap();
    let got = trusts(db, &v);
    assert_eq!((got["$later"], got["$clear"]), (SenderTrust::Verified, SenderTrust::NotEncrypted));
    // Still undecryptable on a re-fetch: its trust stays.
    let sealed = vec![undecrypted("$still", t)];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, sealed)).unwrap();
    let reason = MessageRecord { undecryptable: Some("NO_ROOM_KEY".into()), ..undecrypted("$still", t) };
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, vec![reason])).unwrap();
    assert_eq!(trusts(db, &v)["$still"], SenderTrust::UnknownDevice);
}

fn a_stored_value_that_is_no_trust_is_corrupt(db: &TestDb) {
    let v = viewer("org-a", Secret);
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, vec![text("$m", "x", now())])).unwrap();
    // The schema refuses such a value: it is written past the check, as a damaged database would
    // hold it.
    let mut raw = db.raw();
    assert!(raw.exec("UPDATE messages SET sender_trust = 'TRUSTED'").is_err(), "the CHECK holds");
    if db.is_postgres() {
        raw.exec(
            "DO $$ DECLARE c text; BEGIN SELECT conname INTO c FROM pg_constraint \
             WHERE conrelid = 'messages'::regclass AND pg_get_constraintdef(oid) LIKE '%sender_trust%'; \
             EXECUTE format('ALTER TABLE messages DROP CONSTRAINT %I', c); END $$",
        )
        .unwrap();
        raw.exec("UPDATE messages SET sender_trust = 'TRUSTED'").unwrap();
    } else {
        raw.exec("PRAGMA ignore_check_constraints = ON; UPDATE messages SET sender_trust = 'TRUSTED'")
            .unwrap();
    }
    let err = db.store.messages(&v, &rid(ROOM), &PageRequest::first(10)).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
}
