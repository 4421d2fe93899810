//! The throw-away PostgreSQL cluster starts, hands out databases and drops them.

use argus_testkit::postgres;

#[test]
fn creates_two_databases_and_drops_them() {
    let Some(first) = postgres::fresh_database() else {
        return;
    };
    let second = postgres::fresh_database().unwrap();
    let cluster = postgres::cluster().unwrap();
    assert_ne!(first.url(), second.url());
    let prefix = format!("postgres://postgres@127.0.0.1:{}/argus_test_", cluster.port());
    assert!(first.url().starts_with(&prefix), "{}", first.url());
    assert!(second.url().starts_with(&prefix), "{}", second.url());

    // Both databases are reachable and writable.
    for db in [&first, &second] {
        cluster.query(db.url(), "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)").unwrap();
        assert_eq!(cluster.query(db.url(), "SELECT count(*) FROM t").unwrap(), "1");
    }
    let exists = |name: &str| {
        cluster
            .query(cluster.admin_url(), &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"))
            .unwrap()
    };
    let (first_name, second_name) = (first.name().to_owned(), second.name().to_owned());
    assert_eq!(exists(&first_name), "1");
    assert_eq!(exists(&second_name), "1");
    drop(first);
    drop(second);
    assert_eq!(exists(&first_name), "0");
    assert_eq!(exists(&second_name), "0");
}

#[test]
fn parallel_tests_get_distinct_databases() {
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| postgres::fresh_database().map(|db| db.url().to_owned())))
        .collect();
    let mut urls: Vec<String> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
    let n = urls.len();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), n);
}

#[test]
fn a_cluster_of_its_own_restarts_without_touching_the_shared_one() {
    let Some(shared) = postgres::cluster() else {
        return;
    };
    let own = postgres::own_cluster().unwrap();
    assert_ne!(own.port(), shared.port());
    let db = own.create_database().unwrap();
    own.stop_now().unwrap();
    assert!(own.query(db.url(), "SELECT 1").is_err(), "stopped");
    assert_eq!(shared.query(shared.admin_url(), "SELECT 1").unwrap(), "1");
    own.start_again().unwrap();
    assert_eq!(own.query(db.url(), "SELECT 1").unwrap(), "1");
}
