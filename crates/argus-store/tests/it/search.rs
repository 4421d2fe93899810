//! Full-text search, run on every backend: the query language on real text, the gate on
//! message and room, edits and redactions in the index, filters, ranking and paging.

use argus_domain::{
    Classification::{self, *},
    MessageEdit, MessageRecord, MessageRedaction, Redaction, SearchRequest, Viewer,
};
use argus_store::{Error, SearchPage};
use time::{Duration, OffsetDateTime};

use crate::support::{TestDb, backend_suite, now, run, snapshot, viewer};

backend_suite!(
    search_folds_case_and_accents_and_speaks_the_query_language,
    search_is_gated_like_every_read,
    search_follows_edits_and_redactions_and_skips_undecrypted_messages,
    search_filters_ranks_and_pages,
    malformed_searches_are_typed_errors,
    scores_do_not_depend_on_what_the_caller_cannot_see,
    a_message_stored_encrypted_is_completed_when_decrypted_later,
);

fn text(id: &str, sender: &str, body: &str, sent_at: OffsetDateTime) -> MessageRecord {
    MessageRecord::text(id.parse().unwrap(), sender.parse().unwrap(), body.to_owned(), sent_at)
}

const JEAN: &str = "@jean.dupont:agent.tchap.gouv.fr";
const MARIE: &str = "@marie.curie:agent.tchap.gouv.fr";

pub(crate) fn request(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.parse().unwrap_or_else(|e| panic!("{query}: {e}")),
        room_id: None,
        sender: None,
        from: None,
        to: None,
        first: 100,
        offset: 0,
    }
}

fn found(db: &TestDb, viewer: &Viewer, r: &SearchRequest) -> Vec<String> {
    let page: SearchPage = db.store.search(viewer, r).unwrap();
    page.hits.iter().map(|h| h.message.message.event_id.as_str().to_owned()).collect()
}

fn ids(query: &str, db: &TestDb, viewer: &Viewer) -> Vec<String> {
    let mut v = found(db, viewer, &request(query));
    v.sort();
    v
}

fn corpus(db: &TestDb, v: &Viewer, room: &str, level: Classification, t: OffsetDateTime) {
    let msgs = vec![
        text("$a", JEAN, "Réunion à l'École militaire demain matin", t - Duration::minutes(50)),
        text("$b", MARIE, "Le plan de vol du drone est validé", t - Duration::minutes(40)),
        text("$c", JEAN, "Vol annulé : le plan change", t - Duration::minutes(30)),
        text("$d", MARIE, "Les aéronefs de surveillance sont arrivés", t - Duration::minutes(20)),
        text("$e", JEAN, "ECOLE fermée, réunion reportée", t - Duration::minutes(10)),
    ];
    db.store.record_ingestion(&run(v, level), &snapshot(room, msgs)).unwrap();
}

fn search_folds_case_and_accents_and_speaks_the_query_language(db: &TestDb) {
    let v = viewer("org-a", Secret);
    corpus(db, &v, "!s:x.org", Restricted, now());
    assert_eq!(ids("ecole", db, &v), ["$a", "$e"]);
    assert_eq!(ids("École", db, &v), ["$a", "$e"]);
    assert_eq!(ids("reunion ecole", db, &v), ["$a", "$e"]);
    assert_eq!(ids("\"plan de vol\"", db, &v), ["$b"]);
    assert_eq!(ids("plan vol", db, &v), ["$b", "$c"]);
    assert_eq!(ids("plan -drone", db, &v), ["$c"]);
    assert_eq!(ids("plan NOT drone", db, &v), ["$c"]);
    assert_eq!(ids("drone OR militaire", db, &v), ["$a", "$b"]);
    assert_eq!(ids("surv*", db, &v), ["$d"]);
    assert_eq!(ids("aero*", db, &v), ["$d"]);
    assert_eq!(ids("(drone OR ecole) -militaire", db, &v), ["$b", "$e"]);
    assert!(ids("sous-marin", db, &v).is_empty());
    // Quotes and operators inside terms are text, never syntax of the engine.
    assert_eq!(ids("vol' OR '1'='1", db, &v), ["$b", "$c"]);
    assert!(ids("NEAR(plan vol) body:plan", db, &v).is_empty());
    assert_eq!(ids("pla* \"vol\"", db, &v), ["$b", "$c"]);
    // The snippet shows the match, highlighted.
    let page = db.store.search(&v, &request("militaire")).unwrap();
    let snippet = argus_domain::search::snippet_html(&page.hits[0].snippet);
    assert!(snippet.contains("<mark>militaire</mark>"), "{snippet}");
}

fn search_is_gated_like_every_read(db: &TestDb) {
    let t = now();
    let top_a = viewer("org-a", TopSecret);
    let top_b = viewer("org-b", TopSecret);
    corpus(db, &top_a, "!low:x.org", Restricted, t);
    db.store
        .record_ingestion(
            &run(&top_a, Secret),
            &snapshot("!high:x.org", vec![text("$h", JEAN, "drone secret de l'école", t)]),
        )
        .unwrap();
    db.store
        .record_ingestion(
            &run(&top_b, Unclassified),
            &snapshot("!low:x.org", vec![text("$other", JEAN, "drone de l'école voisine", t)]),
        )
        .unwrap();
    assert_eq!(ids("drone", db, &top_a), ["$b", "$h"]);
    assert_eq!(ids("drone", db, &top_b), ["$other"]);
    assert_eq!(ids("drone", db, &viewer("org-a", Restricted)), ["$b"]);
    assert!(ids("drone", db, &viewer("org-a", Unclassified)).is_empty());
    assert!(ids("drone", db, &viewer("org-c", TopSecret)).is_empty());

    // A room raised above the reader's clearance withholds its lower messages too, as its
    // message list does; and asking for it by id equals asking for a room that does not exist.
    db.store.record_ingestion(&run(&top_a, Confidential), &snapshot("!low:x.org", Vec::new())).unwrap();
    assert!(ids("drone", db, &viewer("org-a", Restricted)).is_empty());
    let restricted = viewer("org-a", Restricted);
    let mut in_room = request("drone");
    in_room.room_id = Some("!high:x.org".parse().unwrap());
    let withheld = db.store.search(&restricted, &in_room).unwrap();
    in_room.room_id = Some("!none:x.org".parse().unwrap());
    assert_eq!(withheld, db.store.search(&restricted, &in_room).unwrap());
    assert!(withheld.hits.is_empty());
}

fn search_follows_edits_and_redactions_and_skips_undecrypted_messages(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now() - Duration::hours(1);
    let mut encrypted = text("$enc", JEAN, "", t);
    encrypted.body = None;
    encrypted.msgtype = None;
    encrypted.encrypted = true;
    let msgs = vec![
        text("$orig", JEAN, "rendez-vous au hangar nord", t),
        text("$gone", MARIE, "code d'accès du hangar : 4242", t + Duration::minutes(1)),
        encrypted,
    ];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot("!r:x.org", msgs)).unwrap();
    assert_eq!(ids("hangar", db, &v), ["$gone", "$orig"]);

    let mut later = snapshot("!r:x.org", Vec::new());
    later.edits = vec![MessageEdit {
        event_id: "$edit".parse().unwrap(),
        sender: JEAN.parse().unwrap(),
        target: "$orig".parse().unwrap(),
        msgtype: Some("m.text".to_owned()),
        body: Some("rendez-vous au quai sud".to_owned()),
        edited_at: t + Duration::minutes(5),
    }];
    later.redactions = vec![MessageRedaction {
        target: "$gone".parse().unwrap(),
        redaction: Redaction { redacted_by: MARIE.parse().unwrap(), redacted_at: now(), reason: None },
        confirmed: false,
    }];
    db.store.record_ingestion(&run(&v, Restricted), &later).unwrap();
    // The edited message is found by its current text only; the redacted one is gone.
    assert!(ids("hangar", db, &v).is_empty());
    assert_eq!(ids("quai sud", db, &v), ["$orig"]);
    assert!(ids("4242", db, &v).is_empty());
    let page = db.store.search(&v, &request("quai")).unwrap();
    assert!(page.hits[0].message.message.edited);
    assert_eq!(page.hits[0].message.message.versions.len(), 2);
}

fn search_filters_ranks_and_pages(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now();
    corpus(db, &v, "!one:x.org", Restricted, t);
    let msgs = vec![
        text("$many", MARIE, "drone drone drone", t - Duration::hours(3)),
        text(
            "$old",
            JEAN,
            "un drone parmi beaucoup d'autres mots dans une phrase assez longue",
            t - Duration::hours(2),
        ),
        text(
            "$new",
            JEAN,
            "un drone parmi beaucoup d'autres mots dans une phrase assez longue",
            t - Duration::hours(1),
        ),
    ];
    db.store.record_ingestion(&run(&v, Restricted), &snapshot("!two:x.org", msgs)).unwrap();

    let all = found(db, &v, &request("drone"));
    // The most relevant first; equal relevance, the newest first.
    assert_eq!(all[0], "$many");
    let pos = |id: &str| all.iter().position(|x| x == id).unwrap();
    assert!(pos("$new") < pos("$old"), "{all:?}");
    assert_eq!(all.len(), 4);

    let mut r = request("drone");
    r.room_id = Some("!two:x.org".parse().unwrap());
    assert_eq!(found(db, &v, &r).len(), 3);
    r.sender = Some(JEAN.parse().unwrap());
    assert_eq!(found(db, &v, &r), ["$new", "$old"]);
    r.from = Some(t - Duration::minutes(90));
    assert_eq!(found(db, &v, &r), ["$new"]);
    r.from = None;
    r.to = Some(t - Duration::minutes(90));
    assert_eq!(found(db, &v, &r), ["$old"]);

    // Pages of two walk the same ranking without gap or repeat.
    let mut walked = Vec::new();
    let mut page = request("drone");
    page.first = 2;
    loop {
        let got = db.store.search(&v, &page).unwrap();
        walked.extend(got.hits.iter().map(|h| h.message.message.event_id.as_str().to_owned()));
        if !got.has_next_page {
            break;
        }
        page.offset += 2;
    }
    assert_eq!(walked, all);
}

fn malformed_searches_are_typed_errors(db: &TestDb) {
    let v = viewer("org-a", Secret);
    for bad in ["", "\"open", "NOT x", "(a", "x".repeat(10_000).as_str()] {
        assert!(matches!(
            bad.parse::<argus_domain::SearchQuery>(),
            Err(argus_domain::Error::InvalidSearch(_))
        ));
    }
    for (first, offset) in [(0, 0), (101, 0), (10, 1_001)] {
        let mut r = request("drone");
        r.first = first;
        r.offset = offset;
        assert!(matches!(db.store.search(&v, &r), Err(Error::Invalid(_))), "{first} {offset}");
    }
    let mut r = request("drone");
    r.from = Some(now());
    r.to = Some(now() - Duration::hours(1));
    assert!(matches!(db.store.search(&v, &r), Err(Error::Invalid(_))));
}

/// A score (and so the order) comes from the message's own text: another organisation's or a
/// higher classification's messages holding the same words change nothing a caller sees.
fn scores_do_not_depend_on_what_the_caller_cannot_see(db: &TestDb) {
    let a = viewer("org-a", Restricted);
    let t = now();
    db.store
        .record_ingestion(
            &run(&a, Restricted),
            &snapshot("!a:x.org", vec![text("$mine", JEAN, "opération mardi", t)]),
        )
        .unwrap();
    let score = |q: &str| db.store.search(&a, &request(q)).unwrap().hits[0].score;
    let (probe, control) = (score("opération"), score("mardi"));
    assert_eq!(probe, control);
    let others: Vec<MessageRecord> =
        (0..50).map(|i| text(&format!("$o{i}"), MARIE, "opération prévue, opération confirmée", t)).collect();
    let top_b = viewer("org-b", TopSecret);
    db.store.record_ingestion(&run(&top_b, Unclassified), &snapshot("!b:x.org", others.clone())).unwrap();
    let secret: Vec<MessageRecord> =
        (0..50).map(|i| text(&format!("$s{i}"), MARIE, "opération secrète", t)).collect();
    db.store.record_ingestion(&run(&viewer("org-a", Secret), Secret), &snapshot("!s:x.org", secret)).unwrap();
    assert_eq!(score("opération"), probe);
    assert_eq!(score("mardi"), control);
    assert_eq!(score("opération OR mardi"), score("mardi OR opération"));
}

/// A message first stored encrypted (no key given) gets its content when a later ingestion
/// decrypts it from the key backup, and becomes searchable; one stored in clear is never
/// rewritten by a later "decrypted" copy.
fn a_message_stored_encrypted_is_completed_when_decrypted_later(db: &TestDb) {
    let v = viewer("org-a", Secret);
    let t = now();
    let mut sealed = text("$sealed", JEAN, "", t);
    sealed.body = None;
    sealed.msgtype = None;
    sealed.encrypted = true;
    let clear = text("$clear", MARIE, "texte en clair", t);
    db.store
        .record_ingestion(&run(&v, Restricted), &snapshot("!e:x.org", vec![sealed.clone(), clear.clone()]))
        .unwrap();
    assert!(ids("livraison", db, &v).is_empty());

    let mut still = sealed.clone();
    still.undecryptable = Some("NO_KEY_IN_BACKUP".to_owned());
    db.store.record_ingestion(&run(&v, Restricted), &snapshot("!e:x.org", vec![still])).unwrap();
    let page =
        db.store.messages(&v, &"!e:x.org".parse().unwrap(), &argus_domain::PageRequest::first(10)).unwrap();
    assert_eq!(page.items[0].message.undecryptable.as_deref(), Some("NO_KEY_IN_BACKUP"));

    let mut opened = text("$sealed", JEAN, "livraison au quai nord", t);
    opened.decrypted = true;
    let mut forged = text("$clear", MARIE, "texte réécrit", t);
    forged.decrypted = true;
    let result =
        db.store.record_ingestion(&run(&v, Restricted), &snapshot("!e:x.org", vec![opened, forged])).unwrap();
    assert_eq!(result.counts.messages_stored, 0);
    let page =
        db.store.messages(&v, &"!e:x.org".parse().unwrap(), &argus_domain::PageRequest::first(10)).unwrap();
    let by =
        |id: &str| page.items.iter().find(|m| m.message.event_id.as_str() == id).unwrap().message.clone();
    let m = by("$sealed");
    assert_eq!(m.body.as_deref(), Some("livraison au quai nord"));
    assert!(m.decrypted && m.encrypted && m.undecryptable.is_none());
    assert_eq!(by("$clear").body.as_deref(), Some("texte en clair"));
    assert_eq!(ids("livraison", db, &v), ["$sealed"]);
    assert!(ids("réécrit", db, &v).is_empty());
    assert_eq!(page.total_count, 2);
}

/// PostgreSQL: a large ingestion's search vectors are computed ahead on a second connection.
/// They are the database's own (`argus_search_vector`), every new row gets its vector, and a
/// row with nothing to index gets none. With the helper off, the insert trigger computes the
/// same vectors; without the trigger either, rows would have none, so the vectors found first
/// came from the helper. No update can plant a vector that is not the body's.
#[test]
fn postgres_search_vectors_computed_ahead_are_the_databases_own() {
    let Some(db) = crate::support::postgres() else { return };
    let v = viewer("org-a", Secret);
    let consistent = |room: &str| {
        format!(
            "SELECT count(*) AS n FROM messages m JOIN rooms r ON r.id = m.room_pk \
             WHERE r.room_id = '{room}' AND m.search IS DISTINCT FROM argus_search_vector(m.body, m.redacted)"
        )
    };
    let indexed = |room: &str| {
        format!(
            "SELECT count(*) AS n FROM messages m JOIN rooms r ON r.id = m.room_pk \
             WHERE r.room_id = '{room}' AND m.search IS NOT NULL"
        )
    };
    let big = |n: usize| {
        let mut msgs = crate::support::messages(n, now());
        msgs[7].body = None;
        msgs[7].msgtype = None;
        msgs[7].encrypted = true;
        msgs[8].body = Some(String::new());
        msgs[n - 1].body = Some("Réunion à l'École militaire".to_owned());
        msgs
    };

    let mut raw = db.raw();
    raw.exec("DROP TRIGGER messages_search_insert ON messages").unwrap();
    let stored =
        db.store.record_ingestion(&run(&v, Restricted), &snapshot("!ahead:x.org", big(1_000))).unwrap();
    assert_eq!(stored.counts.messages_stored, 1_000);
    assert_eq!(db.count(&indexed("!ahead:x.org")), 999, "every row with a body has its vector");
    assert_eq!(db.count(&consistent("!ahead:x.org")), 0);
    assert_eq!(db.count("SELECT count(*) AS n FROM messages WHERE body = '' AND search = ''::tsvector"), 1);
    let mut r = request("ecole");
    r.room_id = Some("!ahead:x.org".parse().unwrap());
    assert_eq!(found(&db, &v, &r).len(), 1);

    let options = argus_store::StoreOptions { search_ahead: false, ..argus_store::StoreOptions::default() };
    let without = argus_store::Store::open_with(&db.url, options.clone()).unwrap();
    without.record_ingestion(&run(&v, Restricted), &snapshot("!alone:x.org", big(300))).unwrap();
    assert_eq!(db.count(&indexed("!alone:x.org")), 0, "the helper off and no trigger: no vectors");

    // The helper off, the trigger in place (a fresh database): the same vectors.
    let Some(other) = crate::support::postgres() else { return };
    let without = argus_store::Store::open_with(&other.url, options).unwrap();
    without.record_ingestion(&run(&v, Restricted), &snapshot("!alone:x.org", big(1_000))).unwrap();
    assert_eq!(other.count(&indexed("!alone:x.org")), 999);
    assert_eq!(other.count(&consistent("!alone:x.org")), 0);

    // An update that sets a vector of its own gets the body's instead.
    raw.exec("UPDATE messages SET search = to_tsvector('simple', 'planté') WHERE body LIKE 'Réunion%'")
        .unwrap();
    assert_eq!(db.count(&consistent("!ahead:x.org")), 0);
    assert_eq!(found(&db, &v, &r).len(), 1);
}

/// PostgreSQL: when no helper connection can be had (here the database refuses new
/// connections once the store's own is open), a large ingestion still stores every message,
/// and the insert trigger gives each its vector in the same transaction.
#[test]
fn postgres_ingestion_without_a_helper_connection_still_indexes_every_message() {
    let Some(db) = crate::support::postgres() else { return };
    let crate::support::Guard::Postgres(pg) = &db.guard else { unreachable!() };
    let v = viewer("org-a", Secret);
    db.store.ping().unwrap();
    pg.cluster().execute(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", pg.name())).unwrap();
    let stored = db.store.record_ingestion(
        &run(&v, Restricted),
        &snapshot("!alone:x.org", crate::support::messages(1_000, now())),
    );
    pg.cluster().execute(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", pg.name())).unwrap();
    assert_eq!(stored.unwrap().counts.messages_stored, 1_000);
    assert_eq!(
        db.count(
            "SELECT count(*) AS n FROM messages \
             WHERE search IS NULL OR search IS DISTINCT FROM argus_search_vector(body, redacted)"
        ),
        0
    );
}
