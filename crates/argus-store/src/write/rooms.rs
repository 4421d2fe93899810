//! Rooms: the room's row upserted by each commit (its classification never lowered, its
//! positions those of the homeserver it was first read from), and its stored message counts.

use argus_domain::{Classification, HistoryPosition, RoomSnapshot, policy};
use diesel::{
    ExpressionMethods as _, QueryDsl as _, RunQueryDsl as _,
    sql_types::{BigInt, SmallInt, Text},
};

use super::IngestionRun;
use crate::{
    Result,
    db::{DbConn, Sql},
    read::{self, Gate},
    schema::{message_counts, messages, rooms},
};

/// Inserts or updates the room; returns its storage id, merged classification, and the
/// homeserver it was stored from (`None` for a new room). A room keeps the homeserver it was
/// first read from, and that server's resume position, when another server answers for it.
pub(super) fn upsert_room(
    conn: &mut DbConn,
    run: &IngestionRun,
    s: &RoomSnapshot,
    now: i64,
) -> Result<(i64, Classification, Option<String>)> {
    let existing = read::room_key(conn, &Gate::whole_org(&run.viewer.org), &s.room_id)?;
    let stored = existing.as_ref().map(|r| crate::rows::rank(r.classification)).transpose()?;
    let merged = policy::merge_classification(stored, run.classification);

    let content = (
        rooms::name.eq(s.name.as_deref()),
        rooms::topic.eq(s.topic.as_deref()),
        rooms::canonical_alias.eq(s.canonical_alias.as_deref()),
        rooms::member_count.eq(i64::from(s.member_count)),
        rooms::encrypted.eq(s.encrypted),
        rooms::classification.eq(merged.rank()),
        rooms::last_ingested_at.eq(now),
        rooms::predecessor_room_id.eq(s.predecessor.as_ref().map(argus_domain::RoomId::as_str)),
        rooms::successor_room_id.eq(s.successor.as_ref().map(argus_domain::RoomId::as_str)),
    );
    // Where older history continues: `None` leaves it as stored.
    let history: Option<(Option<&str>, bool)> = match &s.history {
        HistoryPosition::Unchanged => None,
        HistoryPosition::Continues(token) => Some((Some(token.as_str()), false)),
        HistoryPosition::Complete => Some((None, true)),
    };
    match &existing {
        Some(r) => {
            let target = rooms::table.filter(rooms::id.eq(r.id));
            if r.homeserver_url == s.homeserver_url.as_str() {
                // Positions are that homeserver's: another server's tokens mean nothing to it.
                diesel::update(target).set(content).execute(conn)?;
                if let Some(resume) = &s.resume_token {
                    diesel::update(target).set(rooms::resume_token.eq(resume)).execute(conn)?;
                }
                if let Some((token, complete)) = history {
                    diesel::update(target)
                        .set((rooms::backfill_token.eq(token), rooms::history_complete.eq(complete)))
                        .execute(conn)?;
                }
            } else {
                diesel::update(target).set(content).execute(conn)?;
            }
            Ok((r.id, merged, Some(r.homeserver_url.clone())))
        }
        None => {
            let (backfill, complete) = history.unwrap_or((None, false));
            let id: i64 = diesel::insert_into(rooms::table)
                .values((
                    rooms::org_id.eq(run.viewer.org.as_str()),
                    rooms::room_id.eq(s.room_id.as_str()),
                    rooms::homeserver_url.eq(s.homeserver_url.as_str()),
                    content,
                    rooms::first_seen_at.eq(now),
                    rooms::resume_token.eq(s.resume_token.as_deref()),
                    rooms::backfill_token.eq(backfill),
                    rooms::history_complete.eq(complete),
                ))
                .returning(rooms::id)
                .get_result(conn)?;
            Ok((id, merged, None))
        }
    }
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
