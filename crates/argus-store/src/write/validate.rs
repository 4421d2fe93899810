//! Input checks: the longest values the store keeps, and no NUL characters, checked over a
//! whole snapshot before anything is written.

use argus_domain::{HistoryPosition, MessageRecord, RoomSnapshot};

use crate::{Error, Result};

/// Longest accepted values, in bytes.
const MAX_NAME: usize = 4096;
const MAX_TOPIC: usize = 65_536;
const MAX_ALIAS: usize = 255;
const MAX_TOKEN: usize = 4096;
const MAX_MSGTYPE: usize = 255;
pub(super) const MAX_BODY: usize = 65_536;
const MAX_MEDIA_URI: usize = 2048;
const MAX_MIMETYPE: usize = 255;
pub(super) const MAX_MEDIA_JSON: usize = 4096;

/// Rejects text the store will not keep: too long, or containing NUL.
pub(super) fn check_text(value: Option<&str>, max: usize, kind: &'static str) -> Result<()> {
    match value {
        Some(v) if v.len() > max => Err(Error::invalid(kind, "too long")),
        Some(v) if v.contains('\0') => Err(Error::invalid(kind, "NUL characters are not allowed")),
        _ => Ok(()),
    }
}

/// Rejects a message type or body the store will not keep.
pub(super) fn check_content(msgtype: Option<&str>, body: Option<&str>) -> Result<()> {
    check_text(msgtype, MAX_MSGTYPE, "message type")?;
    check_text(body, MAX_BODY, "message body")
}

fn check_message(m: &MessageRecord) -> Result<()> {
    check_content(m.msgtype.as_deref(), m.body.as_deref())?;
    if let Some(media) = &m.media {
        check_text(media.uri.as_deref(), MAX_MEDIA_URI, "media URI")?;
        check_text(media.mimetype.as_deref(), MAX_MIMETYPE, "media type")?;
        if media.size.is_some_and(|s| i64::try_from(s).is_err()) {
            return Err(Error::invalid("media size", "too large"));
        }
    }
    Ok(())
}

/// Checks a whole snapshot before anything is written.
pub(super) fn validate(snapshot: &RoomSnapshot) -> Result<()> {
    check_text(snapshot.name.as_deref(), MAX_NAME, "room name")?;
    check_text(snapshot.topic.as_deref(), MAX_TOPIC, "room topic")?;
    check_text(snapshot.canonical_alias.as_deref(), MAX_ALIAS, "room alias")?;
    check_text(snapshot.resume_token.as_deref(), MAX_TOKEN, "resume token")?;
    if let HistoryPosition::Continues(token) = &snapshot.history {
        check_text(Some(token), MAX_TOKEN, "backfill token")?;
    }
    snapshot.messages.iter().try_for_each(check_message)?;
    for e in &snapshot.edits {
        check_content(e.msgtype.as_deref(), e.body.as_deref())?;
    }
    Ok(())
}
