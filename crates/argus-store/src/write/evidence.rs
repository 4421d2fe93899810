//! Evidence: edits and redactions of stored messages under the rules of [`policy::may_edit`]
//! and [`policy::may_redact`], the same within one fetch and across fetches. Every applied
//! edit is kept as a version (the original too), never twice; a redaction purges the content
//! and keeps who, when and why; a redacted edit is withdrawn. Under legal hold ([`Hold::Keep`])
//! the content a redaction purges is sealed first, beside it (`held_*` columns), for readers
//! with `tchap:redacted` only. Edits and redactions whose target is not stored yet wait in
//! [`super::pending`].

use argus_domain::{
    EventId, MessageEdit, MessageRedaction, MessageVersion, Redaction, RoomSnapshot, UserId, policy,
    to_unix_ms,
};
use diesel::{
    BoolExpressionMethods as _, ExpressionMethods as _, OptionalExtension as _, QueryDsl as _,
    RunQueryDsl as _, SelectableHelper as _,
    sql_types::{BigInt, Bool, Nullable, Text},
};

use super::{StoredCounts, messages::media_json, pending, validate::check_content};
use crate::{
    Error, Result,
    db::{DbConn, Sql},
    schema::{message_versions, messages},
};

/// A stored message as the edit and redaction rules need it.
#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = messages)]
struct Original {
    id: i64,
    sender: String,
    msgtype: Option<String>,
    body: Option<String>,
    sent_at: i64,
    edited: bool,
    redacted: bool,
    encrypted: bool,
    decrypted: bool,
}

impl Original {
    /// Its content is unknown: it arrived encrypted and was not decrypted.
    fn undecrypted(&self) -> bool {
        self.encrypted && !self.decrypted
    }
}

fn original(conn: &mut DbConn, org: &str, room_pk: i64, event: &EventId) -> Result<Option<Original>> {
    Ok(messages::table
        .filter(messages::org_id.eq(org))
        .filter(messages::room_pk.eq(room_pk))
        .filter(messages::event_id.eq(event.as_str()))
        .select(Original::as_select())
        .first(conn)
        .optional()?)
}

/// Keeps one version of a message; a version already kept is left as it is. Returns whether
/// the event is (now, or already was) a version of this message.
fn keep_version(conn: &mut DbConn, org: &str, message_pk: i64, v: &MessageVersion) -> Result<bool> {
    let backend = conn.backend();
    check_content(v.msgtype.as_deref(), v.body.as_deref())?;
    let mut sql = Sql::new(backend);
    sql.push("INSERT INTO message_versions (org_id, message_pk, event_id, sender, sent_at, msgtype, body) VALUES (");
    sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(message_pk).push(", ");
    sql.bind::<Text, _>(v.event_id.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(v.sender.as_str().to_owned()).push(", ");
    sql.bind::<BigInt, _>(to_unix_ms(v.sent_at)).push(", ");
    sql.bind::<Nullable<Text>, _>(v.msgtype.clone()).push(", ");
    sql.bind::<Nullable<Text>, _>(v.body.clone()).push(") ON CONFLICT (org_id, event_id) DO NOTHING");
    if sql.build_cached().execute(conn)? == 1 {
        return Ok(true);
    }
    // Kept before: as a version of this message (a re-ingestion), or of another one (an event
    // id a homeserver reused), which this message must not take over.
    Ok(version_owner(conn, org, &v.event_id)? == Some(message_pk))
}

/// The message an event is kept as a version of, if any.
fn version_owner(conn: &mut DbConn, org: &str, event: &EventId) -> Result<Option<i64>> {
    Ok(message_versions::table
        .filter(message_versions::org_id.eq(org))
        .filter(message_versions::event_id.eq(event.as_str()))
        .select(message_versions::message_pk)
        .first(conn)
        .optional()?)
}

/// Makes `latest` the stored content of message `id` unless a later version is already there;
/// `media`, when given, replaces the attachment reference.
fn set_latest(
    conn: &mut DbConn,
    id: i64,
    latest: &MessageVersion,
    media: Option<Option<String>>,
) -> Result<usize> {
    let at = to_unix_ms(latest.sent_at);
    let target = messages::table
        .filter(messages::id.eq(id))
        .filter(messages::redacted.eq(false))
        .filter(messages::edited_at.is_null().or(messages::edited_at.lt(at)));
    let content = (
        messages::body.eq(latest.body.as_deref()),
        messages::msgtype.eq(latest.msgtype.as_deref()),
        messages::edited.eq(true),
        messages::edited_at.eq(at),
    );
    let changed = match media {
        Some(media) => diesel::update(target).set((content, messages::media.eq(media))).execute(conn)?,
        None => diesel::update(target).set(content).execute(conn)?,
    };
    Ok(changed)
}

/// What a redaction does to the content the archive captured before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Legal hold: the content is sealed beside the purged row (the first content held is never
    /// replaced), for readers with `tchap:redacted`.
    Keep,
    /// The content is thrown away, as the homeserver did (`evidence.keep_redacted = false`).
    Purge,
}

impl Hold {
    /// The hold a store runs with.
    pub(crate) fn of(keep_redacted: bool) -> Self {
        if keep_redacted { Self::Keep } else { Self::Purge }
    }
}

/// The versions a purge applies to.
#[derive(Debug, Clone, Copy)]
enum Versions<'a> {
    /// Every version of a message.
    Of { org: &'a str, message_pk: i64 },
    /// One version.
    One(i64),
}

/// Purges the msgtype and body of `versions`; under [`Hold::Keep`] each is sealed first.
fn purge_versions(conn: &mut DbConn, versions: Versions<'_>, hold: Hold) -> Result<()> {
    let mut sql = Sql::new(conn.backend());
    sql.push("UPDATE message_versions SET ");
    if hold == Hold::Keep {
        sql.push("held_msgtype = COALESCE(held_msgtype, msgtype), held_body = COALESCE(held_body, body), ");
    }
    sql.push("msgtype = NULL, body = NULL WHERE ");
    match versions {
        Versions::Of { org, message_pk } => {
            sql.push("org_id = ").bind::<Text, _>(org.to_owned());
            sql.push(" AND message_pk = ").bind::<BigInt, _>(message_pk);
        }
        Versions::One(id) => {
            sql.push("id = ").bind::<BigInt, _>(id);
        }
    }
    sql.push(" AND (msgtype IS NOT NULL OR body IS NOT NULL)");
    sql.build_cached().execute(conn)?;
    Ok(())
}

/// Marks message `id` redacted, purges its content and the bodies of its versions (sealed first
/// under [`Hold::Keep`]), and keeps who redacted it, when and why (the first redaction known is
/// kept).
fn redact(
    conn: &mut DbConn,
    org: &str,
    stored: &Original,
    redaction: Option<&Redaction>,
    hold: Hold,
) -> Result<()> {
    let backend = conn.backend();
    let id = stored.id;
    if let Some(r) = redaction {
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO message_redactions (org_id, message_pk, redacted_by, redacted_at, reason) VALUES (",
        );
        sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(id).push(", ");
        sql.bind::<Text, _>(r.redacted_by.as_str().to_owned()).push(", ");
        sql.bind::<BigInt, _>(to_unix_ms(r.redacted_at)).push(", ");
        sql.bind::<Nullable<Text>, _>(r.reason.as_deref().map(Redaction::bounded_reason));
        sql.push(") ON CONFLICT (org_id, message_pk) DO NOTHING");
        sql.build_cached().execute(conn)?;
    }
    if stored.redacted && !stored.edited {
        // Nothing left to purge.
        return Ok(());
    }
    let mut sql = Sql::new(backend);
    sql.push("UPDATE messages SET ");
    if hold == Hold::Keep {
        sql.push("held_body = COALESCE(held_body, body), held_media = COALESCE(held_media, media), ");
    }
    sql.push("redacted = ").bind::<Bool, _>(true);
    sql.push(", body = NULL, media = NULL WHERE id = ").bind::<BigInt, _>(id);
    sql.build_cached().execute(conn)?;
    if hold == Hold::Purge {
        // Its file's reference goes too: name, key and bytes as the message held them (the
        // blob stays for any other reference to the same bytes).
        crate::attachments::purge_reference(conn, org, id)?;
    }
    purge_versions(conn, Versions::Of { org, message_pk: id }, hold)
}

/// A kept version of a message of the room, found by the event that carried it.
#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = message_versions)]
struct VersionKey {
    id: i64,
    message_pk: i64,
    sender: String,
    sent_at: i64,
}

fn version_of(conn: &mut DbConn, org: &str, room_pk: i64, event: &EventId) -> Result<Option<VersionKey>> {
    Ok(message_versions::table
        .inner_join(messages::table)
        .filter(message_versions::org_id.eq(org))
        .filter(message_versions::event_id.eq(event.as_str()))
        .filter(messages::org_id.eq(org))
        .filter(messages::room_pk.eq(room_pk))
        .select(VersionKey::as_select())
        .first(conn)
        .optional()?)
}

/// Applies a redaction whose target is an edit kept as a version: under the same rule as a
/// message's, the version's content is purged, who withdrew it, when and why are kept, and, when it was the message's current content,
/// the message falls back to the latest version left (the original at least). Returns `None`
/// when the target is no kept version, else whether the redaction was applied.
fn withdraw_version(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    r: &MessageRedaction,
    hold: Hold,
) -> Result<Option<bool>> {
    let backend = conn.backend();
    let Some(version) = version_of(conn, org, room_pk, &r.target)? else {
        return Ok(None);
    };
    let sender: UserId =
        version.sender.parse().map_err(|_| Error::Corrupt("a stored version fails validation"))?;
    if !policy::may_redact(&sender, &r.redaction.redacted_by, r.confirmed) {
        return Ok(Some(false));
    }
    purge_versions(conn, Versions::One(version.id), hold)?;
    // Who withdrew it, when and why (the first redaction known is kept).
    let redaction = &r.redaction;
    let mut sql = Sql::new(backend);
    sql.push(
        "INSERT INTO version_redactions (org_id, message_pk, version_pk, redacted_by, redacted_at, reason) \
         VALUES (",
    );
    sql.bind::<Text, _>(org.to_owned()).push(", ").bind::<BigInt, _>(version.message_pk).push(", ");
    sql.bind::<BigInt, _>(version.id).push(", ");
    sql.bind::<Text, _>(redaction.redacted_by.as_str().to_owned()).push(", ");
    sql.bind::<BigInt, _>(to_unix_ms(redaction.redacted_at)).push(", ");
    sql.bind::<Nullable<Text>, _>(redaction.reason.as_deref().map(Redaction::bounded_reason));
    sql.push(") ON CONFLICT (org_id, version_pk) DO NOTHING");
    sql.build_cached().execute(conn)?;
    // The message shows the latest version still holding content.
    let mut sql = Sql::new(backend);
    sql.push(
        "UPDATE messages SET body = (SELECT v.body FROM message_versions v WHERE v.org_id = messages.org_id \
         AND v.message_pk = messages.id AND v.body IS NOT NULL ORDER BY v.sent_at DESC, v.id DESC LIMIT 1), \
         msgtype = (SELECT v.msgtype FROM message_versions v WHERE v.org_id = messages.org_id \
         AND v.message_pk = messages.id AND v.body IS NOT NULL ORDER BY v.sent_at DESC, v.id DESC LIMIT 1), \
         media = CASE WHEN messages.edited_at = ",
    );
    // The withdrawn edit's attachment goes with it when it was the message's current content.
    sql.bind::<BigInt, _>(version.sent_at).push(" THEN NULL ELSE messages.media END WHERE messages.id = ");
    sql.bind::<BigInt, _>(version.message_pk).push(" AND messages.redacted = ").bind::<Bool, _>(false);
    sql.build_cached().execute(conn)?;
    Ok(Some(true))
}

/// Applies the snapshot's edits and redactions to the stored messages of the room, under the
/// rules of [`policy::may_edit`] and [`policy::may_redact`], the same within one fetch and
/// across fetches; every applied edit is kept as a version (the original too), and never
/// twice. Counts what it applied and refused in `done`.
pub(super) fn apply_edits_and_redactions(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    s: &RoomSnapshot,
    done: &mut StoredCounts,
    hold: Hold,
) -> Result<()> {
    // Messages edited or redacted within the fetch: stored now, or stored earlier (re-fetched).
    for m in s.messages.iter().filter(|m| !m.versions.is_empty() || m.redacted) {
        let Some(stored) = original(conn, org, room_pk, &m.event_id)? else {
            continue;
        };
        if m.redacted {
            // Stored now, it has no content left to hold (the homeserver purged it before the
            // archive read it); stored earlier, what the archive captured then is held.
            redact(conn, org, &stored, m.redaction.as_ref(), hold)?;
            continue;
        }
        // The connector applied only its own sender's edits; a record from elsewhere is held to
        // the same rule.
        let (mut versions, forged): (Vec<_>, Vec<_>) =
            m.versions.iter().partition(|v| v.sender.as_str() == stored.sender);
        done.edits_ignored += forged.len() as u64;
        versions.sort_by(|a, b| (a.sent_at, &a.event_id).cmp(&(b.sent_at, &b.event_id)));
        if stored.undecrypted() || stored.redacted || versions.len() < 2 {
            continue;
        }
        let total = versions.len();
        let mut kept = Vec::with_capacity(total);
        for v in versions {
            if keep_version(conn, org, stored.id, v)? {
                kept.push(v);
            } else {
                done.edits_ignored += 1;
            }
        }
        let refused = kept.len() < total;
        match kept.last() {
            // Some version was refused: the message shows the latest kept one (the original
            // at least), not what the connector folded in; its attachment cannot be told.
            Some(latest) if refused => {
                set_latest(conn, stored.id, latest, Some(None))?;
            }
            Some(latest) if kept.len() > 1 => {
                set_latest(conn, stored.id, latest, Some(media_json(m)?))?;
            }
            _ => {}
        }
    }
    apply_outside(conn, org, room_pk, &s.edits, &s.redactions, done, Outside { keep_pending: true, hold })
}

/// How [`apply_outside`] treats what it cannot apply yet, and what its redactions purge.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outside {
    /// Keep edits and redactions whose target is not stored yet ([`pending::keep_edit`],
    /// [`pending::keep_redaction`]) for the batch that stores it.
    pub(super) keep_pending: bool,
    /// What a redaction does to the content captured before it.
    pub(super) hold: Hold,
}

/// Applies edits and redactions of messages outside the batch (stored earlier, or not yet):
/// oldest edit first, under the same rules; see [`Outside`].
pub(super) fn apply_outside(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    edits: &[MessageEdit],
    redactions: &[MessageRedaction],
    done: &mut StoredCounts,
    Outside { keep_pending, hold }: Outside,
) -> Result<()> {
    let mut edits: Vec<&MessageEdit> = edits.iter().collect();
    edits.sort_by(|a, b| (a.edited_at, &a.event_id).cmp(&(b.edited_at, &b.event_id)));
    let (mut edits_waiting, mut redactions_waiting) = (None, None);
    for e in edits {
        let Some(stored) = original(conn, org, room_pk, &e.target)? else {
            if keep_pending && !pending::keep_edit(conn, org, room_pk, e, &mut edits_waiting)? {
                done.edits_ignored += 1;
            }
            continue;
        };
        let sender: UserId =
            stored.sender.parse().map_err(|_| Error::Corrupt("a stored message fails validation"))?;
        if !policy::may_edit(&sender, stored.undecrypted(), stored.redacted, &e.sender) {
            tracing::info!(edit = %e.event_id, target = %e.target, "ignored an edit not made by the original's sender");
            done.edits_ignored += 1;
            continue;
        }
        if version_owner(conn, org, &e.event_id)?.is_some_and(|owner| owner != stored.id) {
            // An event id already kept for another message: nothing is taken over.
            done.edits_ignored += 1;
            continue;
        }
        if !stored.edited {
            let first = MessageVersion {
                event_id: e.target.clone(),
                sender: sender.clone(),
                sent_at: argus_domain::from_unix_ms(stored.sent_at)?,
                msgtype: stored.msgtype.clone(),
                body: stored.body.clone(),
            };
            keep_version(conn, org, stored.id, &first)?;
        }
        let version = MessageVersion {
            event_id: e.event_id.clone(),
            sender: e.sender.clone(),
            sent_at: e.edited_at,
            msgtype: e.msgtype.clone(),
            body: e.body.clone(),
        };
        if !keep_version(conn, org, stored.id, &version)? {
            done.edits_ignored += 1;
            continue;
        }
        // Counted when it became the message's content (not when re-ingested, or superseded).
        if set_latest(conn, stored.id, &version, None)? > 0 {
            done.edits_applied += 1;
        }
    }
    // Redactions of messages stored by an earlier read.
    for r in redactions {
        let Some(stored) = original(conn, org, room_pk, &r.target)? else {
            // Not a message: perhaps an edit kept as a version of one; else not stored yet.
            match withdraw_version(conn, org, room_pk, r, hold)? {
                Some(false) => done.redactions_ignored += 1,
                Some(true) => {}
                None if keep_pending
                    && !pending::keep_redaction(conn, org, room_pk, r, &mut redactions_waiting)? =>
                {
                    done.redactions_ignored += 1;
                }
                None => {}
            }
            continue;
        };
        let sender: UserId =
            stored.sender.parse().map_err(|_| Error::Corrupt("a stored message fails validation"))?;
        if !policy::may_redact(&sender, &r.redaction.redacted_by, r.confirmed) {
            tracing::info!(target = %r.target, "ignored a redaction the homeserver did not confirm");
            done.redactions_ignored += 1;
            continue;
        }
        redact(conn, org, &stored, Some(&r.redaction), hold)?;
    }
    Ok(())
}
