//! Messages as they are stored, for a subscriber (`tchapMessagesAdded`): the messages a viewer
//! may see whose rows were committed since the subscriber last asked, each handed over once,
//! read through the [`Gate`] with the filters of a room's page of messages (the message's
//! organisation and classification, and its room's), so that a subscriber never receives what
//! `Store::messages` would not return to the same viewer.
//!
//! How the cursor moves, and why no late commit is lost on PostgreSQL: [`AddedCursor`].

use std::collections::{BTreeSet, VecDeque};

use argus_domain::{RoomId, StoredMessage};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Text},
};

use crate::{
    Backend, Error, Result,
    db::{self, DbConn, Sql},
    read::{Gate, LIMIT_NOT_PLANNED, MAX_PAGE_SIZE, attach_evidence, push_ids},
    rows::MessageRow,
};

/// Above `settled`, the most ids a cursor remembers as handed over; past it the oldest are
/// settled whether or not the transactions in flight have ended (see [`AddedCursor`]).
pub const MAX_KNOWN: usize = 16_384;

/// When a subscription starts, how far below the highest visible id late commits are still
/// handed over (see [`AddedCursor`]).
pub const START_WINDOW: i64 = 4_096;

/// The most horizons a cursor waits on: past it the newest is widened instead (a later horizon
/// settles later, never wrongly).
const MAX_HORIZONS: usize = 64;

/// Where a subscriber's reading of newly stored messages stands: made by
/// [`crate::Store::messages_added_from_now`], moved by each [`crate::Store::messages_added`]
/// with the same viewer and room. Held in memory by the subscriber, never shown.
///
/// # Storage order, and commits that become visible out of order
///
/// A subscriber follows the messages' storage ids (`messages.id`), which grow in the order rows
/// are inserted. On SQLite that is also the order they become visible: one writer at a time, so
/// once a reader sees id `M`, every id below it is committed or never will be. On PostgreSQL it
/// is not: ids come from a sequence when a row is inserted, and a transaction that took id 10
/// may commit after one that took id 11. A reader that remembered "11, done" would never return
/// 10. So the cursor keeps two marks:
///
/// - `settled`: every id at or below it that will ever be visible has been considered (handed
///   over, or there before the subscription started), and is never read again;
/// - above it, the ids already handed over (`known`, a bounded set): each read takes the visible
///   ids above `settled` that are not known yet, in id order, so a late commit of a lower id is
///   found at the next read, and nothing is handed over twice.
///
/// `settled` moves up by the database's own account of the transactions in flight. Each read
/// notes, in its snapshot, the highest visible id `high` and the snapshot's `xmax` (the first
/// transaction id not yet assigned: every transaction that held an id when the snapshot was
/// taken is below it). Every id below `high` was taken before `high` was (the sequence only
/// grows, one value at a time: the default cache of 1), hence before the snapshot, by a
/// transaction that already had a transaction id: the store's writers write the room's row
/// before they insert its messages (the write path's room upsert comes first), so a writer holds a transaction id
/// before it takes its first message id. Once a later snapshot's `xmin` (the oldest transaction
/// still in flight) has reached that `xmax`, all those transactions have ended, and every id up
/// to `high` is final: `settled` moves to `high` (no further than what the reads have covered),
/// and the known ids at or below it are forgotten. Transactions in flight anywhere on the
/// PostgreSQL cluster hold `xmin` back, read-only ones excepted; while one stays open, the known
/// set grows by what is handed over. It is bounded ([`MAX_KNOWN`]): past it the oldest known ids
/// are settled anyway, and a message whose transaction was still open at that point (open for
/// longer than the subscriber took to receive thousands of messages) could then be missed; this
/// is logged. On SQLite a read's own snapshot settles it (`xmin` = `xmax` = 0).
///
/// A subscription starts at "now" ([`crate::Store::messages_added_from_now`]): it hands over
/// what is committed after it started. A transaction in flight then may hold ids below the
/// highest visible one: of the [`START_WINDOW`] ids below it, those visible are noted as known
/// and the others, committed later, are handed over (an id further below is not).
///
/// Messages are handed over as they are when read (a message edited or redacted before the read
/// is handed over edited or redacted); a later edit or redaction of a message handed over is not
/// handed over again. A room or a message the viewer may not see is skipped as if absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddedCursor {
    /// Every id at or below this has been considered for good.
    settled: i64,
    /// Ids above `settled` already handed over (or visible when the subscription started).
    known: BTreeSet<i64>,
    /// Reads whose highest id waits for the transactions then in flight to end, oldest first.
    horizons: VecDeque<Horizon>,
}

/// What one read saw: once every transaction below `xmax` has ended, every id up to `high` is
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Horizon {
    xmax: i64,
    high: i64,
}

/// A snapshot's marks: the oldest transaction in flight, the first not yet assigned, and the
/// highest message id visible (0, 0 and the highest id on SQLite).
#[derive(Debug, Clone, Copy, QueryableByName)]
struct Marks {
    #[diesel(sql_type = BigInt)]
    xmin: i64,
    #[diesel(sql_type = BigInt)]
    xmax: i64,
    #[diesel(sql_type = BigInt)]
    high: i64,
}

/// A message row with its room's Matrix id.
#[derive(Debug, QueryableByName)]
struct AddedRow {
    #[diesel(embed)]
    message: MessageRow,
    #[diesel(sql_type = Text)]
    added_room_id: String,
}

#[derive(Debug, QueryableByName)]
struct IdRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

impl AddedCursor {
    /// Ids at or below this are settled (for tests of the crates above: how far a cursor went).
    pub fn settled(&self) -> i64 {
        self.settled
    }

    /// How many ids above [`Self::settled`] the cursor remembers.
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Takes in what a read saw (`marks`) and covered (every visible id up to `through` was
    /// considered), and settles what is final.
    fn observe(&mut self, marks: Marks, through: i64) {
        if marks.high > self.settled {
            let horizon = Horizon { xmax: marks.xmax, high: marks.high };
            let full = self.horizons.len() >= MAX_HORIZONS;
            match self.horizons.back_mut() {
                // The same transactions in flight (no id assigned since), or too many waiting:
                // the newest horizon widens (both marks only grow).
                Some(last) if last.xmax == horizon.xmax || full => {
                    last.xmax = last.xmax.max(horizon.xmax);
                    last.high = last.high.max(horizon.high);
                }
                _ => self.horizons.push_back(horizon),
            }
        }
        let ready = self.horizons.iter().filter(|h| h.xmax <= marks.xmin).map(|h| h.high).max();
        if let Some(ready) = ready {
            self.settle(ready.min(through));
        }
        if self.known.len() > MAX_KNOWN {
            let excess = self.known.len() - MAX_KNOWN;
            if let Some(&cut) = self.known.iter().nth(excess - 1) {
                tracing::warn!(
                    settled = cut,
                    "a write transaction has stayed open long: new messages are settled without waiting for it"
                );
                self.settle(cut);
            }
        }
    }

    /// Moves `settled` up to `to` (never down), forgetting what it leaves behind.
    fn settle(&mut self, to: i64) {
        if to <= self.settled {
            return;
        }
        self.settled = to;
        self.known = self.known.split_off(&to.saturating_add(1));
        self.horizons.retain(|h| h.high > to);
    }
}

/// The snapshot's marks (see [`Marks`]).
fn marks(conn: &mut DbConn) -> Result<Marks> {
    let sql = match conn.backend() {
        Backend::Sqlite => "SELECT 0 AS xmin, 0 AS xmax, COALESCE((SELECT MAX(id) FROM messages), 0) AS high",
        Backend::Postgres => {
            "SELECT CAST(CAST(pg_snapshot_xmin(t.s) AS TEXT) AS BIGINT) AS xmin, \
             CAST(CAST(pg_snapshot_xmax(t.s) AS TEXT) AS BIGINT) AS xmax, \
             COALESCE((SELECT MAX(id) FROM messages), 0) AS high \
             FROM (SELECT pg_current_snapshot() AS s) t"
        }
    };
    let mut query = Sql::new(conn.backend());
    query.push(sql);
    Ok(query.build_cached().get_result(conn)?)
}

/// Appends `FROM messages m JOIN rooms r … WHERE` the gate on both, the room when one is
/// named, and `m.id > above`.
fn push_visible(sql: &mut Sql<'_>, gate: &Gate, room: Option<&RoomId>, above: i64) {
    sql.push(" FROM messages m JOIN rooms r ON r.id = m.room_pk WHERE ");
    gate.apply(sql, "m");
    sql.push(" AND ");
    gate.apply(sql, "r");
    if let Some(room) = room {
        sql.push(" AND r.room_id = ").bind::<Text, _>(room.as_str().to_owned());
    }
    sql.push(" AND m.id > ").bind::<BigInt, _>(above);
}

/// The ids of the visible messages above `above`, in id order, at most `limit`.
fn visible_ids(
    conn: &mut DbConn,
    gate: &Gate,
    room: Option<&RoomId>,
    above: i64,
    limit: usize,
) -> Result<Vec<i64>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT m.id");
    push_visible(&mut sql, gate, room, above);
    sql.push(" ORDER BY m.id LIMIT ").bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX));
    sql.push(LIMIT_NOT_PLANNED);
    let rows: Vec<IdRow> = sql.build_cached().load(conn)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The visible messages `ids`, in id order, with their versions, redactions, held content and
/// attachments as a page of messages has them.
fn messages_of(conn: &mut DbConn, gate: &Gate, ids: &[i64]) -> Result<Vec<StoredMessage>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(conn.backend());
    sql.push(
        "SELECT m.id, m.event_id, m.sender, m.msgtype, m.body, m.sent_at, m.edited, m.redacted, \
         m.encrypted, m.decrypted, m.undecryptable, m.reply_to, m.thread_root, m.media, m.classification, \
         m.sender_trust, r.room_id AS added_room_id",
    );
    push_visible(&mut sql, gate, None, 0);
    sql.push(" AND m.id IN ");
    push_ids(&mut sql, ids);
    sql.push(" ORDER BY m.id");
    let rows: Vec<AddedRow> = sql.build().load(conn)?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let room: RoomId =
            row.added_room_id.parse().map_err(|_| Error::Corrupt("a stored room id is malformed"))?;
        messages.push(row.message.into_domain(&room)?);
    }
    attach_evidence(conn, gate, &mut messages)?;
    Ok(messages)
}

/// A cursor at "now" for `gate` and `room` (see the module documentation).
pub(crate) fn start(conn: &mut DbConn, gate: &Gate, room: Option<&RoomId>) -> Result<AddedCursor> {
    let (marks, visible, floor) = db::in_transaction(conn, db::TxMode::Read, |conn| {
        let marks = marks(conn)?;
        let floor = marks.high.saturating_sub(START_WINDOW).max(0);
        let visible =
            visible_ids(conn, gate, room, floor, usize::try_from(START_WINDOW).unwrap_or(usize::MAX))?;
        Ok((marks, visible, floor))
    })?;
    let mut cursor =
        AddedCursor { settled: floor, known: visible.into_iter().collect(), horizons: VecDeque::new() };
    cursor.observe(marks, i64::MAX);
    Ok(cursor)
}

/// The next messages for `cursor` (at most `limit`, in id order), and the cursor moved past
/// them; the cursor is left as it was when the read fails.
pub(crate) fn next(
    conn: &mut DbConn,
    gate: &Gate,
    room: Option<&RoomId>,
    cursor: &mut AddedCursor,
    limit: u32,
) -> Result<Vec<StoredMessage>> {
    let limit = usize::try_from(limit.clamp(1, MAX_PAGE_SIZE)).unwrap_or(1);
    let (marks, through, taken, messages) = db::in_transaction(conn, db::TxMode::Read, |conn| {
        let marks = marks(conn)?;
        // The known ids are among the visible ones: reading that many more finds `limit` new
        // ones when there are.
        let scan = cursor.known.len() + limit;
        let ids = visible_ids(conn, gate, room, cursor.settled, scan)?;
        let taken: Vec<i64> =
            ids.iter().copied().filter(|id| !cursor.known.contains(id)).take(limit).collect();
        // Every visible id up to `through` is known or taken.
        let through = match (taken.len() == limit, ids.len() == scan) {
            (true, _) => taken.last().copied().unwrap_or(i64::MAX),
            (false, true) => ids.last().copied().unwrap_or(i64::MAX),
            (false, false) => i64::MAX,
        };
        let messages = messages_of(conn, gate, &taken)?;
        Ok((marks, through, taken, messages))
    })?;
    cursor.known.extend(taken);
    cursor.observe(marks, through);
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::{AddedCursor, Marks};

    fn marks(xmin: i64, xmax: i64, high: i64) -> Marks {
        Marks { xmin, xmax, high }
    }

    #[test]
    fn a_horizon_settles_once_the_transactions_in_flight_have_ended() {
        let mut cursor = AddedCursor { settled: 10, ..AddedCursor::default() };
        cursor.known.extend([11, 13]);
        // Transactions 100..=104 were in flight; id 12 may still come.
        cursor.observe(marks(100, 105, 13), i64::MAX);
        assert_eq!((cursor.settled, cursor.known_len()), (10, 2));
        // 100 has ended, 101 has not.
        cursor.observe(marks(101, 107, 13), i64::MAX);
        assert_eq!(cursor.settled, 10);
        // Everything below 105 has ended: ids up to 13 are final; the newer read's are not.
        cursor.known.insert(14);
        cursor.observe(marks(105, 108, 14), i64::MAX);
        assert_eq!((cursor.settled, cursor.known.iter().copied().collect::<Vec<_>>()), (13, vec![14]));
        // Nothing in flight: the read's own snapshot settles it.
        cursor.observe(marks(108, 108, 14), i64::MAX);
        assert_eq!((cursor.settled, cursor.known_len()), (14, 0));
        assert!(cursor.horizons.is_empty());
    }

    #[test]
    fn a_cursor_never_settles_past_what_its_reads_covered() {
        let mut cursor = AddedCursor::default();
        cursor.known.extend([1, 2, 3]);
        cursor.observe(marks(0, 0, 50), 3);
        assert_eq!((cursor.settled, cursor.known_len()), (3, 0));
        // The horizon waits for the rest of the reading.
        cursor.observe(marks(0, 0, 50), i64::MAX);
        assert_eq!(cursor.settled, 50);
    }

    #[test]
    fn the_known_set_and_the_horizons_stay_bounded() {
        let mut cursor = AddedCursor::default();
        let open = 7; // a transaction that never ends
        for i in 1..=(super::MAX_KNOWN as i64 + 10) {
            cursor.known.insert(i);
            cursor.observe(marks(open, open + i, i), i64::MAX);
            assert!(cursor.known_len() <= super::MAX_KNOWN);
            assert!(cursor.horizons.len() <= super::MAX_HORIZONS);
        }
        assert_eq!(cursor.settled, 10);
    }
}
