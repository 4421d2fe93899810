//! PostgreSQL: the full-text search vectors of an ingestion's messages, computed on a second
//! connection ahead of the insert.
//!
//! `to_tsvector` and the GIN index's merge are most of what the search index costs a message
//! (docs/benchmarks.md, "Search"). Here a helper thread, on its own connection and so on its own
//! database process (another core), computes the vectors of the next chunks while the writer
//! inserts the current one with the vectors it was handed. Every 32,000 rows (counted over all
//! the store's ingestions) the index's pending list is merged (`gin_clean_pending_list`): by the
//! helper between chunks in a large ingestion, else on a thread of its own after the helper's
//! last chunk, so that the writer's inserts only append to the list.
//!
//! The vectors are the database's own (`argus_search_vector`, the function the triggers use), in
//! its binary form, never decoded here. The writer's transaction is unchanged: a chunk's rows and
//! their vectors commit or roll back together. Whatever fails on the helper's side (no
//! connection free, a statement error, no right to merge the list) only means that the rows go
//! in without vectors, and the insert trigger computes them in the writer's transaction, as it
//! does for every other insert.

use std::{
    ops::Range,
    sync::{
        Arc,
        atomic::{
            AtomicBool, AtomicUsize,
            Ordering::{Acquire, Relaxed, Release},
        },
        mpsc,
    },
};

use diesel::{
    RunQueryDsl as _,
    pg::{Pg, PgConnection, PgValue},
    sql_types::{Array, Nullable, Text},
};

use crate::db::{DbConn, Pooled};

/// PostgreSQL's `tsvector` type (OIDs fixed by the server's catalogue).
#[derive(Debug, Clone, Copy, Default, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(oid = 3614, array_oid = 3643))]
pub(crate) struct TsVector;

/// One message's search vector in PostgreSQL's binary form, passed through undecoded. Its
/// lexemes are the message's words: `Debug` shows only its size.
#[derive(Clone, PartialEq, Eq, diesel::deserialize::FromSqlRow, diesel::expression::AsExpression)]
#[diesel(sql_type = TsVector)]
pub(crate) struct SearchVector(Vec<u8>);

impl std::fmt::Debug for SearchVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SearchVector({} bytes)", self.0.len())
    }
}

impl diesel::deserialize::FromSql<TsVector, Pg> for SearchVector {
    fn from_sql(value: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        Ok(Self(value.as_bytes().to_vec()))
    }
}

impl diesel::serialize::ToSql<TsVector, Pg> for SearchVector {
    fn to_sql<'b>(&'b self, out: &mut diesel::serialize::Output<'b, '_, Pg>) -> diesel::serialize::Result {
        use std::io::Write as _;
        out.write_all(&self.0)?;
        Ok(diesel::serialize::IsNull::No)
    }
}

/// The vectors of one chunk, in the chunk's order (`None`: no text to index).
pub(crate) type ChunkVectors = Vec<Option<SearchVector>>;

/// Fewer new messages than this are inserted without a helper (the chunk would be one).
pub(crate) const MIN_ROWS: usize = 256;

/// Rows inserted between two merges of the index's pending list: a merge's cost per row falls
/// as it takes more rows at once (measured in docs/benchmarks.md), and this many stay well
/// under the list's own limit, past which an insert would merge it itself.
const MERGE_ROWS: usize = 32_000;

/// How long an ingestion waits for the pool to open a helper connection when none is idle.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The first chunk's rows: nobody computed its vectors ahead, so the writer waits for them.
const FIRST_CHUNK: usize = 128;

/// The most rows per statement with a helper.
const MAX_ROWS_PER_CHUNK: usize = 2_000;

/// How `n` rows are cut when a helper computes their vectors: a short first chunk (the writer
/// waits for its vectors), then chunks each [`GROWTH`] times the one before, up to
/// [`MAX_ROWS_PER_CHUNK`]: a row's vector costs the helper less than its insert costs the
/// writer, so the next chunk's vectors are ready by the time the writer needs them.
pub(crate) fn chunks(n: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = FIRST_CHUNK as f64;
    while start < n {
        let len = (size as usize).clamp(1, n - start);
        out.push(start..start + len);
        start += len;
        size = (size * GROWTH).min(MAX_ROWS_PER_CHUNK as f64);
    }
    out
}

/// How much larger each chunk is than the one before (the helper computes a vector in about
/// 0.7 of the time the writer takes to insert its row; docs/benchmarks.md).
const GROWTH: f64 = 1.35;

/// The store's state of the index's pending list, shared by all its ingestions: rows inserted
/// with vectors computed ahead since the last merge, and whether a merge is running.
#[derive(Debug, Default)]
pub(crate) struct MergeState {
    unmerged: AtomicUsize,
    merging: AtomicBool,
}

impl MergeState {
    /// Counts `rows` more; whether a merge is due (and now claimed by the caller).
    fn add_and_claim(&self, rows: usize) -> bool {
        let pending = self.unmerged.fetch_add(rows, Relaxed) + rows;
        if pending < MERGE_ROWS || self.merging.swap(true, Acquire) {
            return false;
        }
        // Another claimer may have merged since this count was taken: look again, now alone.
        let now = self.unmerged.load(Relaxed);
        if now < MERGE_ROWS {
            self.release();
            return false;
        }
        // Only the claimer subtracts: rows other ingestions add meanwhile stay counted.
        let _ = self.unmerged.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(now)));
        true
    }

    /// Ends the claimed merge.
    fn release(&self) {
        self.merging.store(false, Release);
    }
}

/// Where ingestions take their helper connections: the store's helper pool and pending-list
/// state.
pub(crate) struct Source<'a> {
    /// The store's pool of helper connections (apart from its callers' pool).
    pub(crate) pool: &'a crate::db::DbPool,
    /// The store's pending-list state.
    pub(crate) merges: &'a Arc<MergeState>,
}

impl Source<'_> {
    /// A helper connection, when one is idle or can be opened within [`OPEN_WAIT`]: a busy
    /// pool is not waited for longer, and the rows then get their vectors from the trigger.
    pub(crate) fn take(&self) -> Option<Helper> {
        let conn = self.pool.try_get().or_else(|| {
            (self.pool.state().connections < self.pool.max_size())
                .then(|| self.pool.get_timeout(OPEN_WAIT).ok())
                .flatten()
        })?;
        Some(Helper { conn, merges: self.merges.clone() })
    }
}

/// What an ingestion's helper works with.
pub(crate) struct Helper {
    /// A PostgreSQL connection outside any transaction.
    pub(crate) conn: Pooled,
    /// The store's pending-list state, so that runs committed in batches smaller than
    /// [`MERGE_ROWS`] still get merges.
    pub(crate) merges: Arc<MergeState>,
}

/// A helper thread's side of the pipeline, for the writer: the chunks' vectors, in order.
pub(crate) struct Ahead {
    vectors: mpsc::Receiver<Option<ChunkVectors>>,
}

impl Ahead {
    /// Starts the helper on `helper` for `bodies` (one per message to insert, `None` for one
    /// without indexable text), cut in `chunks`. The helper owns the connection and gives it
    /// back to the pool when it ends: when every chunk is sent, or as soon as the writer stops
    /// asking. A merge that falls due with the last chunk runs on after the helper ends, on its
    /// own thread, so that the writer never waits for it.
    pub(crate) fn start<'scope, 'env: 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        helper: Helper,
        bodies: &'env [Option<&'env str>],
        chunks: Vec<Range<usize>>,
    ) -> Ahead {
        // The helper runs up to a merge's worth of chunks ahead, so that the writer has vectors
        // to insert while the helper merges.
        let per = chunks.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
        let (tx, vectors) = mpsc::sync_channel(MERGE_ROWS.div_ceil(per));
        scope.spawn(move || {
            let Helper { mut conn, merges } = helper;
            let DbConn::Postgres(pg) = &mut **conn else { return };
            let last = chunks.len().saturating_sub(1);
            let total = bodies.len();
            let mut healthy = true;
            let mut due = false;
            for (i, range) in chunks.into_iter().enumerate() {
                let rows = range.len();
                let computed = if healthy { chunk_vectors(pg, &bodies[range]) } else { None };
                healthy &= computed.is_some();
                if tx.send(computed).is_err() {
                    // The writer stopped (its transaction failed): no merge for rows not kept.
                    if due {
                        merges.release();
                    }
                    return;
                }
                // The entries the writer inserted so far go into the index proper while it
                // inserts the chunks sent ahead, when there are enough of those (a large
                // ingestion); otherwise after the last chunk.
                if healthy && merges.add_and_claim(rows) {
                    if i < last && total >= 2 * MERGE_ROWS {
                        merge_pending(pg);
                        merges.release();
                    } else {
                        due = true;
                    }
                }
            }
            if due {
                // After the last chunk nobody waits for the merge: it goes on while the writer
                // commits (and, in a streamed run, while the next pages are read).
                let state = merges.clone();
                let merge = move || {
                    if let DbConn::Postgres(pg) = &mut **conn {
                        merge_pending(pg);
                    }
                    merges.release();
                };
                if std::thread::Builder::new().name("argus-search-merge".into()).spawn(merge).is_err() {
                    state.release();
                }
            }
        });
        Ahead { vectors }
    }

    /// The next chunk's vectors, waiting for them if the helper is behind; `None` when the
    /// helper could not compute them (the insert trigger then does).
    pub(crate) fn next(&mut self) -> Option<ChunkVectors> {
        self.vectors.recv().ok().flatten()
    }
}

/// The search vectors of `bodies`, in their order; `None` on any failure (the writer checks
/// that they are as many as its chunk's rows).
fn chunk_vectors(pg: &mut PgConnection, bodies: &[Option<&str>]) -> Option<ChunkVectors> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Array<Nullable<TsVector>>>)]
        vectors: Option<ChunkVectors>,
    }
    let row: Row = diesel::sql_query(
        "SELECT array_agg(argus_search_vector(u.body, false) ORDER BY u.n) AS vectors \
         FROM UNNEST($1::text[]) WITH ORDINALITY AS u(body, n)",
    )
    .bind::<Array<Nullable<Text>>, _>(bodies)
    .get_result(pg)
    .map_err(|e| {
        // Converting notes the failure on this thread, which gives the connection back.
        let e = crate::Error::from(e);
        tracing::debug!(error = %e, "search vectors not computed ahead");
    })
    .ok()?;
    row.vectors
}

/// Merges the search index's pending list into the index. When it cannot (the role does not own
/// the index, say), the inserts merge the list themselves when it is full, as without a helper.
fn merge_pending(pg: &mut PgConnection) {
    diesel::sql_query("SELECT gin_clean_pending_list('messages_search'::regclass)")
        .execute(pg)
        .map_err(|e| {
            let e = crate::Error::from(e);
            tracing::debug!(error = %e, "search index pending list not merged");
        })
        .ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once_growing_from_a_short_first_one() {
        for n in [0, 1, 127, 128, 129, 256, 4_500, 100_000] {
            let chunks = chunks(n);
            assert_eq!(chunks.iter().map(Range::len).sum::<usize>(), n, "{n}");
            assert!(chunks.windows(2).all(|w| w[0].end == w[1].start), "{n}");
            assert!(chunks.iter().all(|r| !r.is_empty() && r.len() <= MAX_ROWS_PER_CHUNK), "{n}");
            if let Some(first) = chunks.first() {
                assert_eq!((first.start, first.len()), (0, n.min(FIRST_CHUNK)));
            }
        }
        let big = chunks(100_000);
        assert!(big.windows(2).take(8).all(|w| w[1].len() as f64 <= w[0].len() as f64 * GROWTH + 2.0));
    }

    #[test]
    fn a_vector_shows_only_its_size() {
        let v = SearchVector(b"\x01\0\0\0hangar\0".to_vec());
        assert_eq!(format!("{v:?}"), "SearchVector(11 bytes)");
    }

    #[test]
    fn a_merge_is_claimed_once_per_merge_rows_and_counts_are_kept() {
        let state = MergeState::default();
        assert!(!state.add_and_claim(MERGE_ROWS - 1));
        assert!(state.add_and_claim(1));
        // While it runs, nobody else claims, and what others add stays counted.
        assert!(!state.add_and_claim(MERGE_ROWS));
        state.release();
        assert!(state.add_and_claim(0));
        state.release();
        assert!(!state.add_and_claim(MERGE_ROWS - 1));
    }
}
