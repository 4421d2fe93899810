//! Rooms: the room's row upserted by each commit (its classification never lowered), only from
//! the homeserver it was archived from; a room moved to another homeserver by an operator; its
//! stored message counts.

use argus_domain::{
    Classification, HistoryPosition, HomeserverUrl, RoomId, RoomSnapshot, Viewer, policy, to_unix_ms,
};
use diesel::{
    ExpressionMethods as _, QueryDsl as _, RunQueryDsl as _,
    sql_types::{BigInt, SmallInt, Text},
};

use super::IngestionRun;
use crate::{
    Error, Result,
    db::{DbConn, Sql},
    read::{self, Gate},
    rows::{RoomKey, rank},
    schema::{message_counts, messages, rooms},
};

/// The homeserver a stored room answers to.
fn home_of(room: &RoomKey) -> Result<HomeserverUrl> {
    room.homeserver_url.parse().map_err(|_| Error::Corrupt("a stored room fails validation"))
}

/// Refuses a run of a stored room from another homeserver than the one it was archived from
/// (the same server written another way is the same: [`HomeserverUrl::same_server`]): the
/// client API carries no event signatures, so the archive trusts only the server it read the
/// room from. [`Error::HomeserverMismatch`], or [`Error::Withheld`] for a room above the
/// caller's clearance (which is all its commit would have told them).
pub(super) fn check_source(room: &RoomKey, viewer: &Viewer, homeserver: &HomeserverUrl) -> Result<()> {
    if home_of(room)?.same_server(homeserver) {
        return Ok(());
    }
    let level = rank(room.classification)?;
    Err(if policy::is_visible(viewer, &viewer.org, level) {
        Error::HomeserverMismatch
    } else {
        Error::Withheld
    })
}

/// Checks, before anything is written, that a run of `room_id` from `homeserver` may begin:
/// refused ([`check_source`]) when the caller may see the room and it answers to another
/// server. A room withheld from the caller is not looked at: the run begins as for a room not
/// in the archive, and its first commit is refused.
pub(super) fn check_run_source(
    conn: &mut DbConn,
    viewer: &Viewer,
    room_id: &RoomId,
    homeserver: &HomeserverUrl,
) -> Result<()> {
    match read::room_key(conn, &Gate::of(viewer), room_id)? {
        Some(room) => check_source(&room, viewer, homeserver),
        None => Ok(()),
    }
}

/// Inserts or updates the room with the positions read; returns its storage id and merged
/// classification. A room stored from another homeserver is refused before anything is
/// written ([`check_source`]).
pub(super) fn upsert_room(
    conn: &mut DbConn,
    run: &IngestionRun,
    s: &RoomSnapshot,
    now: i64,
) -> Result<(i64, Classification)> {
    let existing = read::room_key(conn, &Gate::whole_org(&run.viewer.org), &s.room_id)?;
    if let Some(room) = &existing {
        check_source(room, &run.viewer, &s.homeserver_url)?;
    }
    let stored = existing.as_ref().map(|r| rank(r.classification)).transpose()?;
    let merged = policy::merge_classification(stored, run.classification);

    let content = (
        rooms::name.eq(s.name.as_deref()),
        rooms::topic.eq(s.topic.as_deref()),
        rooms::canonical_alias.eq(s.canonical_alias.as_deref()),
        rooms::member_count.eq(i64::from(s.member_count)),
        rooms::encrypted.eq(s.encrypted),
        rooms::classification.eq(merged.rank()),
        rooms::last_ingested_at.eq(now),
        rooms::predecessor_room_id.eq(s.predecessor.as_ref().map(RoomId::as_str)),
        rooms::successor_room_id.eq(s.successor.as_ref().map(RoomId::as_str)),
    );
    let meta = &s.metadata;
    let retention = meta.retention.unwrap_or_default();
    let lifetime = |ms: Option<u64>| ms.and_then(|ms| i64::try_from(ms).ok());
    let metadata = (
        rooms::room_version.eq(meta.room_version.as_deref()),
        rooms::retention_max_lifetime_ms.eq(lifetime(retention.max_lifetime_ms)),
        rooms::retention_min_lifetime_ms.eq(lifetime(retention.min_lifetime_ms)),
        rooms::access_rule.eq(meta.access_rule.as_deref()),
        rooms::external_member_count.eq(i64::from(meta.external_member_count)),
    );
    // The history is complete since the read's start date (or since the room's creation).
    let since = s.history_since.map(to_unix_ms);
    // Where older history continues: `None` leaves it as stored.
    let history: Option<(Option<&str>, bool)> = match &s.history {
        HistoryPosition::Unchanged => None,
        HistoryPosition::Continues(token) => Some((Some(token.as_str()), false)),
        HistoryPosition::Complete => Some((None, true)),
    };
    match &existing {
        Some(r) => {
            let target = rooms::table.filter(rooms::id.eq(r.id));
            diesel::update(target).set(content).execute(conn)?;
            diesel::update(target).set(metadata).execute(conn)?;
            if let Some(resume) = &s.resume_token {
                diesel::update(target).set(rooms::resume_token.eq(resume)).execute(conn)?;
            }
            if let Some((token, complete)) = history {
                diesel::update(target)
                    .set((rooms::backfill_token.eq(token), rooms::history_complete.eq(complete)))
                    .execute(conn)?;
                if complete {
                    diesel::update(target).set(rooms::history_since.eq(since)).execute(conn)?;
                }
            }
            Ok((r.id, merged))
        }
        None => {
            let (backfill, complete) = history.unwrap_or((None, false));
            let id: i64 = diesel::insert_into(rooms::table)
                .values((
                    rooms::org_id.eq(run.viewer.org.as_str()),
                    rooms::room_id.eq(s.room_id.as_str()),
                    rooms::homeserver_url.eq(s.homeserver_url.as_str()),
                    content,
                    metadata,
                    rooms::history_since.eq(since.filter(|_| complete)),
                    rooms::first_seen_at.eq(now),
                    rooms::resume_token.eq(s.resume_token.as_deref()),
                    rooms::backfill_token.eq(backfill),
                    rooms::history_complete.eq(complete),
                ))
                .returning(rooms::id)
                .get_result(conn)?;
            Ok((id, merged))
        }
    }
}

/// A room moved to another homeserver: the one it answered to until then, and its level.
#[derive(Debug)]
pub(super) struct Moved {
    pub(super) from: HomeserverUrl,
    pub(super) classification: Classification,
}

/// Moves a stored room of `org` to `homeserver` inside the caller's transaction (which holds
/// the room's lock): from now on it answers to that server only. Its positions were the old
/// server's and mean nothing to the new one: the next run reads from the live end, and older
/// history is read again from there, skipping what is stored. `None` when `org` holds no such
/// room; [`Error::Invalid`] when it already answers to that server.
pub(super) fn rehome(
    conn: &mut DbConn,
    org: &argus_domain::OrgId,
    room_id: &RoomId,
    homeserver: &HomeserverUrl,
) -> Result<Option<Moved>> {
    let Some(room) = read::room_key(conn, &Gate::whole_org(org), room_id)? else {
        return Ok(None);
    };
    let from = home_of(&room)?;
    if from.same_server(homeserver) {
        return Err(Error::invalid("homeserver", "the room already answers to that homeserver"));
    }
    diesel::update(rooms::table.filter(rooms::id.eq(room.id)))
        .set((
            rooms::homeserver_url.eq(homeserver.as_str()),
            rooms::resume_token.eq(None::<&str>),
            rooms::backfill_token.eq(None::<&str>),
            rooms::history_complete.eq(false),
            rooms::history_since.eq(None::<i64>),
        ))
        .execute(conn)?;
    Ok(Some(Moved { from, classification: rank(room.classification)? }))
}

/// Adds `n` messages at `level` to the room's stored counts.
pub(super) fn add_message_count(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    level: Classification,
    n: i64,
) -> Result<()> {
    let backend = conn.backend();
    if n == 0 {
        return Ok(());
    }
    let mut sql = Sql::new(backend);
    sql.push("INSERT INTO message_counts (org_id, room_pk, classification, message_count) VALUES (");
    sql.bind::<Text, _>(org).push(", ").bind::<BigInt, _>(room_pk).push(", ");
    sql.bind::<SmallInt, _>(level.rank()).push(", ").bind::<BigInt, _>(n);
    sql.push(
        ") ON CONFLICT (org_id, room_pk, classification) \
         DO UPDATE SET message_count = message_counts.message_count + excluded.message_count",
    );
    sql.build().execute(conn)?;
    Ok(())
}

/// Replaces the room's stored counts by a count of its messages.
pub(super) fn recount_messages(conn: &mut DbConn, org: &str, room_pk: i64) -> Result<()> {
    diesel::delete(
        message_counts::table
            .filter(message_counts::org_id.eq(org))
            .filter(message_counts::room_pk.eq(room_pk)),
    )
    .execute(conn)?;
    let counts = messages::table
        .filter(messages::org_id.eq(org))
        .filter(messages::room_pk.eq(room_pk))
        .group_by((messages::org_id, messages::room_pk, messages::classification))
        .select((messages::org_id, messages::room_pk, messages::classification, diesel::dsl::count_star()));
    diesel::insert_into(message_counts::table)
        .values(counts)
        .into_columns((
            message_counts::org_id,
            message_counts::room_pk,
            message_counts::classification,
            message_counts::message_count,
        ))
        .execute(conn)?;
    Ok(())
}
