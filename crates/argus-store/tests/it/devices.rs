//! The connector's devices' sealed state, on both backends: items written and read back,
//! replaced and removed; written only under the account watch's lease, held by the writing
//! replica, unexpired, and for the watch's own account (nothing written otherwise); devices of
//! one user and of two organisations kept apart; re-sealing over the value read only; a device
//! forgotten with its items; bad input refused with nothing written; the migration run down and
//! up again over stored rows; and (PostgreSQL) the least-privilege role reading and writing it.

use std::time::Duration;

use argus_domain::{Classification::Restricted, NewAccountWatch, OrgId, SealedToken, Viewer};
use argus_store::{DeviceIdentity, DeviceRef, Error, SealedDeviceItem, WatchCaps};
use time::OffsetDateTime;

use crate::support::{TestDb, backend_suite, now, viewer};

backend_suite!(
    items_are_written_and_read_back,
    a_put_replaces_and_a_delete_removes,
    nothing_is_written_without_the_lease,
    nothing_is_written_for_another_account_than_the_watchs,
    devices_of_one_user_and_of_two_organisations_are_kept_apart,
    items_are_resealed_only_over_the_value_read,
    a_forgotten_device_loses_its_items,
    bad_input_is_refused_with_nothing_written,
    the_migration_runs_down_and_up_again_over_stored_rows,
);

const HS: &str = "https://matrix.agent.tchap.gouv.fr";
const USER: &str = "@service:agent.tchap.gouv.fr";
const LEASE: Duration = Duration::from_secs(60);

fn someone(org: &str) -> Viewer {
    let v = viewer(org, Restricted);
    Viewer::new("alice".parse().unwrap(), v.org, Restricted, [argus_domain::Scope::Ingest])
}

fn sealed(key_id: &str, nonce: &str, ciphertext: &str) -> SealedToken {
    SealedToken { key_id: key_id.into(), nonce: nonce.into(), ciphertext: ciphertext.into() }
}

fn item(kind: &str, key: &str, ciphertext: &str) -> SealedDeviceItem {
    SealedDeviceItem { kind: kind.into(), key: key.into(), sealed: sealed("k1", "bm9uY2U", ciphertext) }
}

fn del(kind: &str, key: &str) -> (String, String) {
    (kind.into(), key.into())
}

/// A new account watch of `user` for `owner`'s organisation.
fn new_watch(owner: &Viewer, user: &str) -> NewAccountWatch {
    NewAccountWatch {
        owner: owner.actor.clone(),
        org: owner.org.clone(),
        homeserver_url: HS.parse().unwrap(),
        user_id: user.into(),
        classification: Restricted,
        timeout_secs: 30,
        rooms: None,
        token: sealed("k1", "bm9uY2U", "dG9rZW4"),
        decrypts: true,
        since: None,
    }
}

/// The account watch of `user` for `owner`'s organisation.
fn watch(db: &TestDb, owner: &Viewer, user: &str) -> i64 {
    let new = new_watch(owner, user);
    db.store.upsert_account_sync_watch(owner, &new, None, WatchCaps::default()).unwrap().id
}

/// Claims every free account watch for `replica` at `at`.
fn claim(db: &TestDb, replica: &str, at: OffsetDateTime) -> usize {
    db.store.claim_account_watches(replica, at, LEASE, 100).unwrap().len()
}

fn device<'a>(org: &'a OrgId, user: &'a str, device_id: &'a str) -> DeviceRef<'a> {
    DeviceRef { org, homeserver_url: HS, user_id: user, device_id }
}

/// (kind, key, ciphertext) of each item of `device`.
fn items(db: &TestDb, device: DeviceRef<'_>) -> Vec<(String, String, String)> {
    db.store.device_items(device).unwrap().into_iter().map(|i| (i.kind, i.key, i.sealed.ciphertext)).collect()
}

fn triple(kind: &str, key: &str, ciphertext: &str) -> (String, String, String) {
    (kind.into(), key.into(), ciphertext.into())
}

fn rows(db: &TestDb) -> i64 {
    db.count("SELECT COUNT(*) AS n FROM e2ee_devices")
        + db.count("SELECT COUNT(*) AS n FROM e2ee_device_items")
}

fn items_are_written_and_read_back(db: &TestDb) {
    let alice = someone("dgsi");
    let id = watch(db, &alice, USER);
    let dev = device(&alice.org, USER, "ARGUSDEV1");
    // Unknown device: nothing, and no row made by reading.
    assert!(db.store.device_items(dev).unwrap().is_empty());
    assert_eq!(rows(db), 0);
    assert_eq!(claim(db, "r1", now()), 1);
    let puts = [
        item("session", "curve25519:abc|sess1", "c2Vzc2lvbg"),
        item("account", "-", "YWNjb3VudA"),
        SealedDeviceItem {
            kind: "inbound_group_session".into(),
            key: "!room:x.org|sender|sid".into(),
            sealed: sealed("k1", "bm9uY2UtMg", "Z3JvdXA"),
        },
    ];
    db.store.write_device_items(id, "r1", dev, &puts, &[]).unwrap();
    let got = db.store.device_items(dev).unwrap();
    // By kind, then key; each with its whole seal.
    let kinds: Vec<&str> = got.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(kinds, ["account", "inbound_group_session", "session"]);
    assert_eq!(got[1], puts[2]);
    assert_eq!(got[0], puts[1]);
    assert_eq!(got[2], puts[0]);
    // A large write, in several statements, all of it.
    let many: Vec<SealedDeviceItem> =
        (0..1_500).map(|i| item("room_key", &format!("k{i:05}"), &format!("dmFs{i}"))).collect();
    db.store.write_device_items(id, "r1", dev, &many, &[]).unwrap();
    assert_eq!(db.store.device_items(dev).unwrap().len(), 1_503);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM e2ee_devices"), 1);
}

fn a_put_replaces_and_a_delete_removes(db: &TestDb) {
    let alice = someone("dgsi");
    let id = watch(db, &alice, USER);
    let dev = device(&alice.org, USER, "ARGUSDEV1");
    assert_eq!(claim(db, "r1", now()), 1);
    let first = [item("account", "-", "djE"), item("session", "s1", "czE"), item("session", "s2", "czI")];
    db.store.write_device_items(id, "r1", dev, &first, &[]).unwrap();
    // Replaced in place (the last of two for one key counts), one removed, one absent
    // removal no error, all in one write.
    let second = [item("account", "-", "djI"), item("account", "-", "djM"), item("session", "s3", "czM")];
    db.store
        .write_device_items(id, "r1", dev, &second, &[del("session", "s1"), del("session", "nope")])
        .unwrap();
    assert_eq!(
        items(db, dev),
        [triple("account", "-", "djM"), triple("session", "s2", "czI"), triple("session", "s3", "czM")]
    );
    // Deletes alone; an item both put and deleted in one write is removed.
    db.store
        .write_device_items(
            id,
            "r1",
            dev,
            &[item("session", "s4", "czQ")],
            &[del("session", "s2"), del("session", "s4")],
        )
        .unwrap();
    assert_eq!(items(db, dev), [triple("account", "-", "djM"), triple("session", "s3", "czM")]);
}

fn nothing_is_written_without_the_lease(db: &TestDb) {
    let alice = someone("dgsi");
    let id = watch(db, &alice, USER);
    let dev = device(&alice.org, USER, "ARGUSDEV1");
    let puts = [item("account", "-", "djE")];
    let refused = |replica: &str| {
        let err = db.store.write_device_items(id, replica, dev, &puts, &[]).unwrap_err();
        assert!(matches!(err, Error::LeaseLost), "{err:?}");
    };
    // Never claimed: nothing, not even the device row.
    refused("r1");
    assert_eq!(rows(db), 0);
    // Claimed long ago: the lease ran out by the store's clock.
    assert_eq!(claim(db, "r1", now() - time::Duration::minutes(10)), 1);
    refused("r1");
    assert_eq!(rows(db), 0);
    // Another replica holds it now.
    assert_eq!(claim(db, "r2", now()), 1);
    refused("r1");
    assert_eq!(rows(db), 0);
    db.store.write_device_items(id, "r2", dev, &puts, &[]).unwrap();
    assert_eq!(items(db, dev), [triple("account", "-", "djE")]);
    // Given back: the former holder writes nothing more, deletes included.
    db.store.release_account_watch(id, "r2").unwrap();
    let err = db.store.write_device_items(id, "r2", dev, &[], &[del("account", "-")]).unwrap_err();
    assert!(matches!(err, Error::LeaseLost), "{err:?}");
    assert_eq!(items(db, dev), [triple("account", "-", "djE")]);
    // Stopped: no more writes, even before the lease runs out.
    assert_eq!(claim(db, "r2", now()), 1);
    assert!(
        db.store.stop_account_watch(id, "r2", "PAUSED: stop", &sealed("k1", "bm9uY2U", "dG9rZW4")).unwrap()
    );
    let err = db.store.write_device_items(id, "r2", dev, &[item("account", "-", "djI")], &[]).unwrap_err();
    assert!(matches!(err, Error::LeaseLost), "{err:?}");
    assert_eq!(items(db, dev), [triple("account", "-", "djE")]);
}

fn nothing_is_written_for_another_account_than_the_watchs(db: &TestDb) {
    let alice = someone("dgsi");
    let id = watch(db, &alice, USER);
    let other_org: OrgId = "other".parse().unwrap();
    assert_eq!(claim(db, "r1", now()), 1);
    let puts = [item("account", "-", "djE")];
    for dev in [
        device(&alice.org, "@someone-else:agent.tchap.gouv.fr", "ARGUSDEV1"),
        device(&other_org, USER, "ARGUSDEV1"),
        DeviceRef { homeserver_url: "https://matrix.other.fr", ..device(&alice.org, USER, "ARGUSDEV1") },
    ] {
        let err = db.store.write_device_items(id, "r1", dev, &puts, &[]).unwrap_err();
        assert!(matches!(err, Error::LeaseLost), "{dev:?}: {err:?}");
    }
    assert_eq!(rows(db), 0);
}

fn devices_of_one_user_and_of_two_organisations_are_kept_apart(db: &TestDb) {
    let alice = someone("dgsi");
    let bob = someone("dgse");
    let a = watch(db, &alice, USER);
    let b = watch(db, &bob, USER);
    assert_eq!(claim(db, "r1", now()), 2);
    let one = device(&alice.org, USER, "ARGUSDEV1");
    let two = device(&alice.org, USER, "ARGUSDEV2");
    let theirs = device(&bob.org, USER, "ARGUSDEV1");
    db.store.write_device_items(a, "r1", one, &[item("account", "-", "b25l")], &[]).unwrap();
    db.store.write_device_items(a, "r1", two, &[item("account", "-", "dHdv")], &[]).unwrap();
    db.store.write_device_items(b, "r1", theirs, &[item("account", "-", "dGhlaXJz")], &[]).unwrap();
    assert_eq!(items(db, one), [triple("account", "-", "b25l")]);
    assert_eq!(items(db, two), [triple("account", "-", "dHdv")]);
    assert_eq!(items(db, theirs), [triple("account", "-", "dGhlaXJz")]);
    // A delete of one device leaves the others' item of the same kind and key.
    db.store.write_device_items(a, "r1", two, &[], &[del("account", "-")]).unwrap();
    assert!(items(db, two).is_empty());
    assert_eq!(items(db, one), [triple("account", "-", "b25l")]);
    assert_eq!(items(db, theirs), [triple("account", "-", "dGhlaXJz")]);
    // One organisation's watch does not write the other's device of the same account.
    let err = db.store.write_device_items(a, "r1", theirs, &[item("account", "-", "eA")], &[]).unwrap_err();
    assert!(matches!(err, Error::LeaseLost), "{err:?}");
    assert_eq!(items(db, theirs), [triple("account", "-", "dGhlaXJz")]);
}

fn items_are_resealed_only_over_the_value_read(db: &TestDb) {
    let alice = someone("dgsi");
    let bob = someone("dgse");
    let a = watch(db, &alice, USER);
    let b = watch(db, &bob, USER);
    assert_eq!(claim(db, "r1", now()), 2);
    let one = device(&alice.org, USER, "ARGUSDEV1");
    let theirs = device(&bob.org, USER, "ARGUSDEV9");
    let mut fresh = item("session", "s2", "bmV3");
    fresh.sealed.key_id = "k2".into();
    db.store
        .write_device_items(
            a,
            "r1",
            one,
            &[item("account", "-", "b2xk"), item("session", "s1", "czE"), fresh],
            &[],
        )
        .unwrap();
    db.store.write_device_items(b, "r1", theirs, &[item("account", "-", "dGhlaXJz")], &[]).unwrap();

    // Those under another key than k2, with their device, at most `limit`.
    let stale = db.store.device_items_to_reseal("k2", 100).unwrap();
    let listed: Vec<(DeviceIdentity, String, String)> =
        stale.iter().map(|(d, i)| (d.clone(), i.kind.clone(), i.key.clone())).collect();
    let mine = DeviceIdentity::from(one);
    let other = DeviceIdentity::from(theirs);
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&(mine.clone(), "account".into(), "-".into())));
    assert!(listed.contains(&(mine.clone(), "session".into(), "s1".into())));
    assert!(listed.contains(&(other.clone(), "account".into(), "-".into())));
    assert_eq!(db.store.device_items_to_reseal("k2", 2).unwrap().len(), 2);

    // Re-sealed over the value read; a second time over the same old seal: refused.
    let (device_of, account) = stale.iter().find(|(d, i)| *d == mine && i.kind == "account").unwrap();
    let new = sealed("k2", "bm9uY2UtMw", "cmVzZWFsZWQ");
    assert!(db.store.reseal_device_item(device_of.to_ref(), "account", "-", &account.sealed, &new).unwrap());
    assert!(
        !db.store
            .reseal_device_item(one, "account", "-", &account.sealed, &sealed("k2", "eA", "eA"))
            .unwrap()
    );
    assert_eq!(items(db, one)[0], triple("account", "-", "cmVzZWFsZWQ"));
    // An item written again meanwhile (a new nonce) keeps its new value.
    let (_, session) = stale.iter().find(|(d, i)| *d == mine && i.kind == "session").unwrap();
    let mut rewritten = item("session", "s1", "d3JpdHRlbg");
    rewritten.sealed.nonce = "bm9uY2UtNA".into();
    db.store.write_device_items(a, "r1", one, std::slice::from_ref(&rewritten), &[]).unwrap();
    assert!(!db.store.reseal_device_item(one, "session", "s1", &session.sealed, &new).unwrap());
    assert_eq!(db.store.device_items(one).unwrap()[1], rewritten);
    // Another device's item of the same kind and key is not touched by this device's seal.
    assert!(
        !db.store.reseal_device_item(one, "account", "-", &item("account", "-", "x").sealed, &new).unwrap()
    );
    assert_eq!(items(db, theirs), [triple("account", "-", "dGhlaXJz")]);
    // What is left to re-seal: the rewritten one (still k1) and the other organisation's.
    let left: Vec<(DeviceIdentity, String)> =
        db.store.device_items_to_reseal("k2", 100).unwrap().into_iter().map(|(d, i)| (d, i.key)).collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&(mine, "s1".into())) && left.contains(&(other, "-".into())));
}

fn a_forgotten_device_loses_its_items(db: &TestDb) {
    let alice = someone("dgsi");
    let id = watch(db, &alice, USER);
    assert_eq!(claim(db, "r1", now()), 1);
    let one = device(&alice.org, USER, "ARGUSDEV1");
    let two = device(&alice.org, USER, "ARGUSDEV2");
    let puts = [item("account", "-", "YQ"), item("session", "s1", "cw"), item("session", "s2", "cw")];
    db.store.write_device_items(id, "r1", one, &puts, &[]).unwrap();
    db.store.write_device_items(id, "r1", two, &puts[..1], &[]).unwrap();
    assert_eq!(db.store.forget_device(one).unwrap(), 3);
    assert!(db.store.device_items(one).unwrap().is_empty());
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM e2ee_devices"), 1);
    assert_eq!(items(db, two), [triple("account", "-", "YQ")]);
    assert_eq!(db.store.forget_device(one).unwrap(), 0);
    // Written again: a new device, empty but for what is written.
    db.store.write_device_items(id, "r1", one, &puts[1..2], &[]).unwrap();
    assert_eq!(items(db, one), [triple("session", "s1", "cw")]);
}

fn bad_input_is_refused_with_nothing_written(db: &TestDb) {
    let alice = someone("dgsi");
    let id = watch(db, &alice, USER);
    assert_eq!(claim(db, "r1", now()), 1);
    let dev = device(&alice.org, USER, "ARGUSDEV1");
    let good = item("account", "-", "YQ");
    let long_key = "k".repeat(1_025);
    let mut big = item("blob", "b", "");
    big.sealed.ciphertext = "A".repeat(argus_store::MAX_DEVICE_ITEM_CIPHERTEXT_LEN + 1);
    let mut no_key_id = item("blob", "b", "YQ");
    no_key_id.sealed.key_id = String::new();
    let bad_puts = [
        item("", "k", "YQ"),
        item(&"x".repeat(65), "k", "YQ"),
        item("session", "", "YQ"),
        item("session", &long_key, "YQ"),
        item("session", "k", ""),
        big,
        no_key_id,
    ];
    for bad in bad_puts {
        let what = format!("{}/{}", bad.kind.len(), bad.key.len());
        let err = db.store.write_device_items(id, "r1", dev, &[good.clone(), bad], &[]).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{what}: {err:?}");
    }
    for bad in [del("", "k"), del("session", ""), del("session", &long_key)] {
        let err =
            db.store.write_device_items(id, "r1", dev, std::slice::from_ref(&good), &[bad]).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    }
    let too_many: Vec<SealedDeviceItem> = (0..10_001).map(|i| item("k", &i.to_string(), "YQ")).collect();
    assert!(matches!(db.store.write_device_items(id, "r1", dev, &too_many, &[]), Err(Error::Invalid(_))));
    let dels: Vec<(String, String)> = (0..5_001).map(|i| del("k", &i.to_string())).collect();
    assert!(matches!(
        db.store.write_device_items(id, "r1", dev, &too_many[..5_000], &dels),
        Err(Error::Invalid(_))
    ));
    for bad_device in [
        device(&alice.org, USER, ""),
        device(&alice.org, USER, &long_key[..256]),
        DeviceRef { homeserver_url: "", ..dev },
    ] {
        assert!(matches!(
            db.store.write_device_items(id, "r1", bad_device, std::slice::from_ref(&good), &[]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(db.store.device_items(bad_device), Err(Error::Invalid(_))));
    }
    assert_eq!(rows(db), 0);
    // Exactly at the bounds: accepted.
    let edge = [
        item(&"x".repeat(64), &"k".repeat(1_024), "YQ"),
        SealedDeviceItem {
            kind: "blob".into(),
            key: "b".into(),
            sealed: sealed("k1", "bm9uY2U", &"A".repeat(argus_store::MAX_DEVICE_ITEM_CIPHERTEXT_LEN)),
        },
    ];
    db.store.write_device_items(id, "r1", device(&alice.org, USER, &long_key[..255]), &edge, &[]).unwrap();
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM e2ee_device_items"), 2);
    // A re-seal out of bounds is refused too.
    let old = &edge[1].sealed;
    let err = db
        .store
        .reseal_device_item(
            device(&alice.org, USER, &long_key[..255]),
            "blob",
            "b",
            old,
            &sealed("", "n", "c"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
}

/// Diesel's form of the version `2026-12-06-000027`.
const DEVICES: &str = "20261206000027";

fn the_migration_runs_down_and_up_again_over_stored_rows(db: &TestDb) {
    let alice = someone("dgsi");
    let id = watch(db, &alice, USER);
    assert_eq!(claim(db, "r1", now()), 1);
    let dev = device(&alice.org, USER, "ARGUSDEV1");
    db.store.write_device_items(id, "r1", dev, &[item("account", "-", "YQ")], &[]).unwrap();
    let v = viewer("dgsi", Restricted);
    let mut sent = crate::support::message("$trusted", now());
    sent.encrypted = true;
    sent.decrypted = true;
    sent.sender_trust = argus_domain::SenderTrust::Verified;
    db.store
        .record_ingestion(
            &crate::support::run(&v, Restricted),
            &crate::support::snapshot("!r:x.org", vec![sent]),
        )
        .unwrap();

    db.raw().migrate(DEVICES, true);
    // Down: the two tables and the column are gone; the message and the watch are kept.
    let tables = if db.is_postgres() {
        "SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'e2ee_device%'"
    } else {
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name LIKE 'e2ee_device%'"
    };
    assert_eq!(db.count(tables), 0);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM messages"), 1);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watches"), 1);

    db.raw().migrate(DEVICES, false);
    assert_eq!(db.count(tables), 2);
    assert!(db.store.device_items(dev).unwrap().is_empty());
    // The trust was not recorded any more: an encrypted message reads as of an unknown device.
    let room = "!r:x.org".parse().unwrap();
    let page = db.store.messages(&v, &room, &argus_domain::PageRequest::first(10)).unwrap();
    assert_eq!(page.items[0].message.sender_trust, argus_domain::SenderTrust::UnknownDevice);
    // The store works on the re-created tables.
    db.store.write_device_items(id, "r1", dev, &[item("account", "-", "Yg")], &[]).unwrap();
    assert_eq!(items(db, dev), [triple("account", "-", "Yg")]);
}

/// The documented least-privilege role (`docs/postgres-least-privilege.sql`) reads and writes
/// the devices' state, re-seals and forgets it.
#[test]
fn postgres_least_privilege_role_keeps_device_state() {
    let Some(db) = crate::support::postgres() else { return };
    let setup = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/postgres-least-privilege.sql"
    ))
    .unwrap();
    db.raw().exec(&setup).unwrap();
    let app_url = db.url.replacen("postgres://postgres@", "postgres://argus_app@", 1);
    let app = argus_store::Store::open(&app_url).unwrap();
    let alice = someone("dgsi");
    let new = new_watch(&alice, USER);
    let id = app.upsert_account_sync_watch(&alice, &new, None, WatchCaps::default()).unwrap().id;
    assert_eq!(app.claim_account_watches("r1", now(), LEASE, 10).unwrap().len(), 1);
    let dev = device(&alice.org, USER, "ARGUSDEV1");
    app.write_device_items(id, "r1", dev, &[item("account", "-", "YQ"), item("session", "s", "cw")], &[])
        .unwrap();
    app.write_device_items(id, "r1", dev, &[item("account", "-", "Yg")], &[del("session", "s")]).unwrap();
    let stored = app.device_items(dev).unwrap();
    assert_eq!(stored.len(), 1);
    let stale = app.device_items_to_reseal("k2", 10).unwrap();
    assert_eq!(stale.len(), 1);
    assert!(
        app.reseal_device_item(dev, "account", "-", &stored[0].sealed, &sealed("k2", "bg", "Yw")).unwrap()
    );
    assert!(app.device_items_to_reseal("k2", 10).unwrap().is_empty());
    assert_eq!(app.forget_device(dev).unwrap(), 1);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM e2ee_devices"), 0);
}
