//! Transparency log benchmark: inclusion and consistency proofs on an organisation's log of 10
//! million entries on SQLite (a file). The log's stored hashes are built first, quickly: the
//! leaves are generated, their stored hashes computed with `argus_crypto::tlog::hashes_to_store`
//! over the tree's frontier held in memory, and inserted in large transactions (a few minutes
//! for 10 million entries). Each proof then reads its `O(log n)` hashes in one statement.
//!
//! `cargo bench -p argus-store --bench log`. `ARGUS_BENCH_LOG_ENTRIES` sets the size (10,000,000;
//! e.g. 100000 for a quick run). Criterion reports each proof's time; the target is a median
//! under 50 ms.

use std::{collections::BTreeMap, hint::black_box, time::Instant};

use argus_crypto::tlog::{self, Digest, HashSource};
use argus_domain::OrgId;
use argus_store::{Store, schema::log_hashes};
use criterion::Criterion;
use diesel::{Connection, RunQueryDsl, SqliteConnection, connection::SimpleConnection};

/// Result of a benchmark step.
type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Rows inserted per statement (three binds each), and per transaction.
const ROWS_PER_INSERT: usize = 10_000;
const ROWS_PER_TRANSACTION: usize = 1_000_000;

/// The hashes the next append reads: those of the complete subtrees the tree is made of.
struct Frontier(BTreeMap<u64, Digest>);

impl HashSource for Frontier {
    fn hashes(&self, indexes: &[u64]) -> argus_crypto::Result<Vec<Digest>> {
        indexes.iter().map(|i| self.0.get(i).copied().ok_or(argus_crypto::Error::BadProof)).collect()
    }
}

impl Frontier {
    /// Keeps only the subtrees of a tree of `size` leaves.
    fn prune(&mut self, size: u64) {
        let keep: Vec<u64> = (0..64u8)
            .filter(|l| size >> l & 1 == 1)
            .map(|l| tlog::stored_hash_index(l, (size >> l) - 1))
            .collect();
        self.0.retain(|k, _| keep.contains(k));
    }
}

/// Builds the stored hashes of a log of `entries` leaves for `org` in the SQLite file `path`;
/// returns its root.
fn build(path: &str, org: &str, entries: u64) -> BenchResult<Digest> {
    let mut conn = SqliteConnection::establish(path)?;
    conn.batch_execute("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    let mut frontier = Frontier(BTreeMap::new());
    let mut rows: Vec<(String, i64, String)> = Vec::with_capacity(ROWS_PER_TRANSACTION);
    let flush = |conn: &mut SqliteConnection, rows: &mut Vec<(String, i64, String)>| -> BenchResult {
        conn.transaction(|conn| {
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let values: Vec<_> = chunk
                    .iter()
                    .map(|(o, i, h)| {
                        use diesel::ExpressionMethods as _;
                        (log_hashes::org_id.eq(o), log_hashes::hash_index.eq(*i), log_hashes::hash.eq(h))
                    })
                    .collect();
                diesel::insert_into(log_hashes::table).values(&values).execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        rows.clear();
        Ok(())
    };
    for n in 0..entries {
        let leaf = tlog::leaf_hash(format!("{{\"entry\":{n}}}").as_bytes());
        let new = tlog::hashes_to_store(n, leaf, &frontier)?;
        let start = tlog::stored_hash_index(0, n);
        for (i, h) in new.into_iter().enumerate() {
            let index = start + i as u64;
            frontier.0.insert(index, h);
            rows.push((org.to_owned(), i64::try_from(index)?, hex::encode(h)));
        }
        frontier.prune(n + 1);
        if rows.len() >= ROWS_PER_TRANSACTION {
            flush(&mut conn, &mut rows)?;
        }
    }
    flush(&mut conn, &mut rows)?;
    // The frontier holds the complete subtrees the root is made of.
    Ok(tlog::tree_root(entries, &frontier)?)
}

fn main() -> BenchResult {
    let entries: u64 =
        std::env::var("ARGUS_BENCH_LOG_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log.db");
    let path = path.to_str().ok_or("a temporary path that is not UTF-8")?;
    // The schema, by the store's own migrations.
    drop(Store::open(&format!("sqlite://{path}"))?);
    let org: OrgId = "bench".parse()?;
    let started = Instant::now();
    let root = build(path, org.as_str(), entries)?;
    eprintln!("built a log of {entries} entries in {:.1?}", started.elapsed());
    let store = Store::open(&format!("sqlite://{path}"))?;
    let size = entries;

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group(format!("log of {entries} entries"));
    let mut next = 0x9e37_79b9_7f4a_7c15_u64;
    group.bench_function("log_inclusion", |b| {
        b.iter(|| {
            next = next.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let index = next % size;
            black_box(store.log_inclusion(&org, index, size).map(|p| p.len()))
        });
    });
    group.bench_function("log_consistency", |b| {
        b.iter(|| {
            next = next.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let old = 1 + next % size;
            black_box(store.log_consistency(&org, old, size).map(|p| p.len()))
        });
    });
    group.finish();
    // The proofs verify against the tree built (the benchmark measures real proofs).
    let old = size / 2 + 1;
    let proof = store.log_consistency(&org, old, size)?;
    assert!(!proof.is_empty() || old == size);
    let index = size / 3;
    let proof = store.log_inclusion(&org, index, size)?;
    tlog::verify_inclusion(
        index,
        size,
        tlog::leaf_hash(format!("{{\"entry\":{index}}}").as_bytes()),
        &proof,
        root,
    )?;
    c.final_summary();
    Ok(())
}
