//! Property tests of every read path against the clearance policy: random organisations,
//! rooms, messages, classifications and viewers; no read returns a row of another
//! organisation or above the viewer's clearance, and every count equals the ground truth
//! computed with `argus_domain::policy` over the generated data. The fusion outbox, read for
//! the whole organisation, carries each organisation's own rooms with their full counts.

use std::{
    collections::BTreeMap,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use argus_domain::{Classification, IngestionOutcome, NewIngestion, PageRequest, Viewer, policy};
use argus_store::{IngestionCursor, MessageCursor, RoomCursor, Store};
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

use crate::support::{TestDb, message, snapshot, viewer};

const ORGS: usize = 3;
const ROOMS: usize = 4;
const MESSAGES: usize = 6;

#[derive(Debug, Clone)]
struct Step {
    org: usize,
    room: usize,
    level: Classification,
    /// Which of the room's messages this read returned.
    msgs: Vec<usize>,
    /// A failed run instead of a successful one.
    failed: bool,
}

#[derive(Debug, Clone)]
struct Case {
    /// Minutes before "now" each (room, message) was sent.
    ages: Vec<i64>,
    steps: Vec<Step>,
    /// (organisation, clearance); organisation `ORGS` holds nothing.
    viewers: Vec<(usize, Classification)>,
    page_size: u32,
}

fn level() -> impl Strategy<Value = Classification> {
    (0usize..5).prop_map(|i| Classification::ALL[i])
}

fn case() -> impl Strategy<Value = Case> {
    let step = (
        0..ORGS,
        0..ROOMS,
        level(),
        proptest::collection::vec(0..MESSAGES, 0..=MESSAGES),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(org, room, level, msgs, failed)| Step { org, room, level, msgs, failed });
    (
        proptest::collection::vec(0i64..3000, ROOMS * MESSAGES),
        proptest::collection::vec(step, 1..10),
        proptest::collection::vec((0..=ORGS, level()), 1..5),
        1u32..5,
    )
        .prop_map(|(ages, steps, viewers, page_size)| Case { ages, steps, viewers, page_size })
}

/// What the store should hold, computed with the domain policy.
#[derive(Debug, Default)]
struct Model {
    /// (org, room) -> (room level, message -> level).
    rooms: BTreeMap<(usize, usize), (Classification, BTreeMap<usize, Classification>)>,
    /// org -> classifications of its audit records.
    audit: BTreeMap<usize, Vec<Classification>>,
}

static CASE: AtomicU64 = AtomicU64::new(0);

fn run_case(store: &Store, prefix: &str, c: &Case, verify_chains: bool) {
    let now = crate::support::now();
    let org_name = |o: usize| format!("{prefix}o{o}");
    let sent = |room: usize, m: usize| now - Duration::minutes(c.ages[room * MESSAGES + m]);
    let event = |room: usize, m: usize| format!("$r{room}m{m}");
    let room_name = |room: usize| format!("!room{room}:x.org");

    let mut model = Model::default();
    // The fusion outbox row each successful step must leave: (org, room, version, level,
    // message count and newest message over the whole organisation's copy of the room).
    let mut fusion: Vec<(String, String, i64, Classification, i64, Option<OffsetDateTime>)> = Vec::new();
    for s in &c.steps {
        let ingester = viewer(&org_name(s.org), Classification::TopSecret);
        if s.failed {
            store
                .record_failure(&NewIngestion {
                    actor: ingester.actor.clone(),
                    org: ingester.org.clone(),
                    room_id: room_name(s.room),
                    homeserver_url: "https://x.org".to_owned(),
                    message_count: 0,
                    classification: s.level,
                    started_at: now,
                    finished_at: None,
                    outcome: IngestionOutcome::Failed,
                    error: Some("unreachable".to_owned()),
                    post: None,
                    scheduled: false,
                    rehomed_from: None,
                })
                .unwrap();
            // Filed at the room's stored level when that is higher.
            let stored = model.rooms.get(&(s.org, s.room)).map(|r| r.0);
            model.audit.entry(s.org).or_default().push(policy::merge_classification(stored, s.level));
            continue;
        }
        let msgs = s.msgs.iter().map(|&m| message(&event(s.room, m), sent(s.room, m))).collect();
        let run = argus_store::IngestionRun { viewer: ingester, classification: s.level, started_at: now };
        store.record_ingestion(&run, &snapshot(&room_name(s.room), msgs)).unwrap();
        let entry = model.rooms.entry((s.org, s.room)).or_insert((s.level, BTreeMap::new()));
        entry.0 = policy::merge_classification(Some(entry.0), s.level);
        let merged = entry.0;
        for &m in &s.msgs {
            let l = entry.1.entry(m).or_insert(merged);
            *l = policy::merge_classification(Some(*l), merged);
        }
        let audit = model.audit.entry(s.org).or_default();
        // Filed at the room's effective level.
        audit.push(merged);
        let last = entry.1.keys().map(|&m| sent(s.room, m)).max();
        fusion.push((
            org_name(s.org),
            room_name(s.room),
            audit.len() as i64,
            merged,
            entry.1.len() as i64,
            last,
        ));
    }

    // The fusion read path: one pending row per successful ingestion, in commit order, carrying
    // only its own organisation's room as of that commit. (On the shared PostgreSQL database,
    // only this case's organisations.)
    let ours = format!("{prefix}o");
    let rows: Vec<_> = store
        .outbox_pending(100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.org.as_str().starts_with(&ours))
        .collect();
    assert_eq!(rows.len(), fusion.len());
    for (row, (org, room, version, level, count, last)) in rows.iter().zip(&fusion) {
        assert_eq!(
            (row.org.as_str(), row.room_id.as_str(), row.version),
            (org.as_str(), room.as_str(), *version)
        );
        let p = &row.payload;
        assert_eq!((p.org.as_str(), p.room_id.as_str()), (org.as_str(), room.as_str()));
        assert_eq!(
            (p.classification, p.message_count, p.last_activity_at),
            (*level, *count, *last),
            "{row:?}"
        );
    }

    for &(o, clearance) in &c.viewers {
        let v: Viewer = viewer(&org_name(o), clearance);
        // Ground truth: visible rooms with visible message counts and newest visible time.
        let mut truth: BTreeMap<String, (i64, Option<OffsetDateTime>)> = BTreeMap::new();
        for (&(org, room), (level, msgs)) in &model.rooms {
            if !policy::is_visible(&v, &org_name(org).parse().unwrap(), *level) {
                continue;
            }
            let visible: Vec<usize> =
                msgs.iter().filter(|(_, l)| **l <= clearance).map(|(m, _)| *m).collect();
            let last = visible.iter().map(|&m| sent(room, m)).max();
            truth.insert(room_name(room), (visible.len() as i64, last));
        }

        // List, all pages.
        let mut listed = BTreeMap::new();
        let mut after = None;
        loop {
            let page = store.rooms(&v, &PageRequest { first: c.page_size, after }).unwrap();
            assert_eq!(page.total_count, truth.len() as i64);
            for r in &page.items {
                assert_eq!(r.org, v.org);
                assert!(r.classification <= clearance);
                listed.insert(r.room_id.to_string(), (r.message_count, r.last_activity_at));
            }
            if !page.has_next_page {
                break;
            }
            after = Some(RoomCursor::of(page.items.last().unwrap()));
        }
        assert_eq!(listed, truth);

        // Lookups and messages of every room id any organisation used.
        for room in 0..ROOMS {
            let id = room_name(room).parse().unwrap();
            let got = store.room(&v, &id).unwrap();
            assert_eq!(
                got.as_ref().map(|r| (r.message_count, r.last_activity_at)),
                truth.get(&room_name(room)).copied()
            );
            let mut total = None;
            let mut seen = 0;
            let mut after = None;
            loop {
                let page = store.messages(&v, &id, &PageRequest { first: c.page_size, after }).unwrap();
                total.get_or_insert(page.total_count);
                for m in &page.items {
                    assert!(m.classification <= clearance);
                    assert_eq!(m.room_id, id);
                }
                seen += page.items.len() as i64;
                if !page.has_next_page {
                    break;
                }
                after = Some(MessageCursor::of(page.items.last().unwrap()));
            }
            let expected = truth.get(&room_name(room)).map_or(0, |t| t.0);
            assert_eq!((total, seen), (Some(expected), expected));
        }

        // Stats over the same set.
        let stats = store.stats(&v, now).unwrap();
        assert_eq!(stats.total_rooms, truth.len() as i64);
        assert_eq!(stats.total_messages, truth.values().map(|t| t.0).sum::<i64>());
        let active = truth.values().filter(|t| policy::is_active(t.1, now)).count() as i64;
        assert_eq!(stats.active_rooms_last_24h, active);

        // Audit history.
        let expected =
            model.audit.get(&o).map_or(0, |a| a.iter().filter(|l| **l <= clearance).count()) as i64;
        let mut seen = 0;
        let mut after = None;
        loop {
            let page = store.ingestions(&v, &PageRequest { first: c.page_size, after }).unwrap();
            assert_eq!(page.total_count, expected);
            for r in &page.items {
                assert_eq!(r.entry.org, v.org);
                assert!(r.entry.classification <= clearance);
            }
            seen += page.items.len() as i64;
            if !page.has_next_page {
                break;
            }
            after = Some(IngestionCursor::of(page.items.last().unwrap()));
        }
        assert_eq!(seen, expected);
    }
    // On the shared PostgreSQL database every earlier case's chains are there too: verifying
    // them all each time would grow quadratically, and the audit suite covers verification.
    if verify_chains {
        assert!(store.audit_verify(&[]).unwrap().iter().all(|v| v.is_ok()));
    }
}

proptest! {
    #[test]
    fn sqlite_reads_follow_policy(c in case()) {
        let store = Store::open("sqlite::memory:").unwrap();
        run_case(&store, "", &c, true);
    }
}

fn pg() -> Option<&'static TestDb> {
    static DB: OnceLock<Option<TestDb>> = OnceLock::new();
    DB.get_or_init(crate::support::postgres).as_ref()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases((ProptestConfig::default().cases / 40).max(8)))]
    #[test]
    fn postgres_reads_follow_policy(c in case()) {
        let Some(db) = pg() else { return Ok(()) };
        let prefix = format!("case{}-", CASE.fetch_add(1, Ordering::Relaxed));
        run_case(&db.store, &prefix, &c, false);
    }
}
