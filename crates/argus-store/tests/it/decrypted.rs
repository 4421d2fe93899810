//! Messages that arrived end-to-end encrypted, on every backend: a decrypted message reads as
//! encrypted and decrypted whatever path stored it (decrypted at capture, filled in when a later
//! ingestion decrypted it, or stored before that rule and corrected by a migration), and an edit
//! of a decrypted message applies its new content as one of a message sent in clear does.

use argus_domain::{
    Classification::*, MessageEdit, MessageRecord, MessageVersion, PageRequest, SearchRequest, Viewer,
};
use diesel_migrations::MigrationHarness;
use time::{Duration, OffsetDateTime};

use crate::{
    reads::rid,
    schema::{POSTGRES, SQLITE},
    support::{Raw, TestDb, backend_suite, now, run, snapshot, viewer},
};

backend_suite!(
    a_decrypted_message_reads_as_encrypted_whatever_path_stored_it,
    rows_stored_before_are_corrected_by_the_migration,
    edits_of_a_decrypted_message_apply_their_new_content,
);

const JEAN: &str = "@jean.dupont:agent.tchap.gouv.fr";
const ROOM: &str = "!chiffre:x.org";

fn text(id: &str, body: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord::text(id.parse().unwrap(), JEAN.parse().unwrap(), body.to_owned(), sent_at)
}

/// A message as the connector hands over one it decrypted.
fn decrypted(id: &str, body: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord { encrypted: true, decrypted: true, ..text(id, body, sent_at) }
}

/// A message as the connector hands over one it could not decrypt.
fn sealed(id: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord { encrypted: true, msgtype: None, body: None, ..text(id, "", sent_at) }
}

fn stored(db: &TestDb, v: &Viewer, id: &str) -> MessageRecord {
    let page = db.store.messages(v, &rid(ROOM), &PageRequest::first(50)).unwrap();
    page.items.into_iter().find(|m| m.message.event_id.as_str() == id).unwrap().message
}

fn flags(m: &MessageRecord) -> (bool, bool, Option<&str>) {
    (m.encrypted, m.decrypted, m.body.as_deref())
}

/// Rows whose `encrypted` column says a decrypted message never was.
const WRONG: &str = "SELECT COUNT(*) AS n FROM messages WHERE decrypted AND NOT encrypted";

fn a_decrypted_message_reads_as_encrypted_whatever_path_stored_it(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now();
    // Decrypted at capture; a record saying only `decrypted` (as the connector said before);
    // stored while undecryptable; in clear.
    let older = MessageRecord { decrypted: true, ..text("$older", "ancienne forme", t) };
    let first = vec![
        decrypted("$captured", "déchiffré à la capture", t),
        older,
        sealed("$later", t),
        text("$clear", "en clair", t),
    ];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, first)).unwrap();
    // A later ingestion decrypts the one stored undecryptable: its content is filled in.
    let filled = vec![decrypted("$later", "rempli plus tard", t)];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, filled)).unwrap();
    // Filled once: another decrypted copy rewrites nothing.
    let forged = vec![decrypted("$later", "réécrit", t), decrypted("$captured", "réécrit", t)];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, forged)).unwrap();

    let expected = [
        ("$captured", (true, true, Some("déchiffré à la capture"))),
        ("$older", (true, true, Some("ancienne forme"))),
        ("$later", (true, true, Some("rempli plus tard"))),
        ("$clear", (false, false, Some("en clair"))),
    ];
    for (id, want) in expected {
        assert_eq!(flags(&stored(db, &v, id)), want, "{id} in a room's messages");
        let one = db.store.message(&v, &rid(ROOM), &id.parse().unwrap()).unwrap().unwrap();
        assert_eq!(flags(&one.message), want, "{id} read alone");
    }
    let search = SearchRequest {
        query: "déchiffré OR forme OR rempli OR clair".parse().unwrap(),
        room_id: None,
        sender: None,
        from: None,
        to: None,
        first: 10,
        offset: 0,
    };
    let mut hits: Vec<_> = db
        .store
        .search(&v, &search)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.message.message.event_id.as_str().to_owned(), h.message.message.encrypted))
        .collect();
    hits.sort();
    let want = [("$captured", true), ("$clear", false), ("$later", true), ("$older", true)];
    assert_eq!(hits, want.map(|(id, e)| (id.to_owned(), e)), "search results");
    assert_eq!(db.count(WRONG), 0, "as stored");
}

/// Reverts the migrations back to before the one that corrects `encrypted`, then runs them
/// all again.
fn migrate_again(raw: Raw) {
    // Diesel's form of the version `2026-12-04-000017`.
    const CORRECTING: &str = "20261204000017";
    fn redo<C: MigrationHarness<B>, B: diesel::backend::Backend>(
        c: &mut C,
        migrations: fn() -> diesel_migrations::EmbeddedMigrations,
    ) where
        diesel_migrations::EmbeddedMigrations: diesel::migration::MigrationSource<B>,
    {
        while c.applied_migrations().unwrap().iter().any(|v| v.to_string() == CORRECTING) {
            c.revert_last_migration(migrations()).unwrap();
        }
        c.run_pending_migrations(migrations()).unwrap();
    }
    match raw {
        Raw::Sqlite(mut c) => redo(&mut c, || SQLITE),
        Raw::Postgres(mut c) => redo(&mut c, || POSTGRES),
    }
}

fn rows_stored_before_are_corrected_by_the_migration(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now();
    let msgs =
        vec![decrypted("$d1", "un", t), decrypted("$d2", "deux", t), sealed("$s", t), text("$c", "clair", t)];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, msgs)).unwrap();
    // As a release before the rule stored them.
    db.raw().exec("UPDATE messages SET encrypted = FALSE WHERE decrypted").unwrap();
    assert_eq!(db.count(WRONG), 2);
    migrate_again(db.raw());
    assert_eq!(db.count(WRONG), 0);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM messages WHERE encrypted"),
        3,
        "the sealed one stays encrypted"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM messages WHERE NOT encrypted"),
        1,
        "the clear one stays clear"
    );
    assert_eq!(flags(&stored(db, &v, "$d2")), (true, true, Some("deux")));
}

fn edit(id: &str, target: &str, body: &str, at: OffsetDateTime) -> MessageEdit {
    MessageEdit {
        event_id: id.parse().unwrap(),
        sender: JEAN.parse().unwrap(),
        target: target.parse().unwrap(),
        msgtype: Some("m.text".to_owned()),
        body: Some(body.to_owned()),
        edited_at: at,
    }
}

fn version(id: &str, body: &str, at: OffsetDateTime) -> MessageVersion {
    MessageVersion {
        event_id: id.parse().unwrap(),
        sender: JEAN.parse().unwrap(),
        sent_at: at,
        msgtype: Some("m.text".to_owned()),
        body: Some(body.to_owned()),
    }
}

/// `original` with `edits` (event id, body, time) folded in, as the connector hands it over
/// when the edits were in the same read.
fn folded(mut original: MessageRecord, edits: &[(&str, &str, OffsetDateTime)]) -> MessageRecord {
    let first = version(original.event_id.as_str(), original.body.as_deref().unwrap(), original.sent_at);
    original.versions =
        std::iter::once(first).chain(edits.iter().map(|(id, b, at)| version(id, b, *at))).collect();
    original.body = edits.last().map(|(_, b, _)| (*b).to_owned());
    original.edited = true;
    original
}

fn bodies(m: &MessageRecord) -> Vec<Option<&str>> {
    m.versions.iter().map(|v| v.body.as_deref()).collect()
}

fn edits_of_a_decrypted_message_apply_their_new_content(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now() - Duration::hours(1);
    let at = |minutes: i64| t + Duration::minutes(minutes);
    let (old, new) = ("Réunion chiffrée à 14h — préfecture", "Réunion chiffrée à 15h — préfecture");
    let first = vec![
        decrypted("$captured", old, t),
        sealed("$filled", t),
        sealed("$sealed", t),
        folded(decrypted("$fresh", old, t), &[("$fresh-edit", new, at(1))]),
    ];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, first)).unwrap();
    // A later read: an edit of the message decrypted at capture, and of one still undecrypted.
    let mut later = snapshot(ROOM, Vec::new());
    later.edits =
        vec![edit("$captured-edit", "$captured", new, at(2)), edit("$sealed-edit", "$sealed", new, at(2))];
    let r = db.store.record_ingestion(&run(&v, Restricted), &later).unwrap();
    assert_eq!((r.counts.edits_applied, r.counts.edits_ignored), (1, 1), "{:?}", r.counts);
    // A read that decrypts the one stored undecrypted, with its edit folded in.
    let refetch = vec![folded(decrypted("$filled", old, t), &[("$filled-edit", new, at(3))])];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, refetch)).unwrap();

    for id in ["$captured", "$filled", "$fresh"] {
        let m = stored(db, &v, id);
        assert_eq!(flags(&m), (true, true, Some(new)), "{id}");
        assert!(m.edited, "{id}");
        assert_eq!(bodies(&m), [Some(old), Some(new)], "{id}: its versions");
    }
    let m = stored(db, &v, "$sealed");
    assert_eq!(flags(&m), (true, false, None));
    assert!(!m.edited && m.versions.is_empty());
}
