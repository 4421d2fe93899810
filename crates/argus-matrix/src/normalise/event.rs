//! One timeline event, read once: the borrowed views of the fields the snapshot needs, and its
//! classification as a message (its content, relations and attachment), an edit, a redaction
//! or something the snapshot ignores.

use std::borrow::Cow;

use argus_domain::{
    EncryptedFile, EventId, MediaRef, MessageRecord, Redaction, SenderTrust, UserId, from_unix_ms,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::decrypt::Decryption;

/// The fields of a timeline event the snapshot needs. `C` is the content: parsed in the same
/// pass ([`MessageContent`]) on the fast path, kept raw when that pass failed.
#[derive(Deserialize)]
pub(super) struct EventView<'a, C> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) event_id: Cow<'a, str>,
    #[serde(borrow)]
    sender: Cow<'a, str>,
    origin_server_ts: i64,
    #[serde(default, borrow)]
    pub(super) room_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    redacts: Option<Cow<'a, str>>,
    // A missing `content` is `None` (serde's rule for `Option` fields).
    content: Option<C>,
    #[serde(default, borrow)]
    unsigned: Option<Unsigned<'a>>,
}

#[derive(Deserialize)]
struct Unsigned<'a> {
    #[serde(default, borrow)]
    redacted_because: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct MessageContent<'a> {
    #[serde(default, borrow)]
    msgtype: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    info: Option<&'a RawValue>,
    /// An encrypted attachment's `EncryptedFile`, read on its own: a malformed one drops the
    /// file, not the message.
    #[serde(default, borrow)]
    file: Option<&'a RawValue>,
    /// The file name (spec v1.10); read on its own for the same reason.
    #[serde(default, borrow)]
    filename: Option<&'a RawValue>,
    #[serde(default, borrow)]
    redacts: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, rename = "m.relates_to", borrow)]
    relates_to: Option<RelatesTo<'a>>,
    #[serde(default, rename = "m.new_content", borrow)]
    new_content: Option<Box<MessageContent<'a>>>,
}

#[derive(Deserialize, Default)]
struct RelatesTo<'a> {
    #[serde(default, borrow)]
    rel_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default, rename = "m.in_reply_to", borrow)]
    in_reply_to: Option<InReplyTo<'a>>,
    #[serde(default)]
    is_falling_back: bool,
}

#[derive(Deserialize)]
struct InReplyTo<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
}

/// The redaction event a homeserver puts in `unsigned.redacted_because` of what it redacted.
#[derive(Deserialize)]
struct RedactedBecause<'a> {
    #[serde(borrow)]
    sender: Cow<'a, str>,
    origin_server_ts: i64,
    #[serde(default, borrow)]
    content: Option<ReasonOnly<'a>>,
}

#[derive(Deserialize)]
struct ReasonOnly<'a> {
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
}

/// Who, when and why, from `unsigned.redacted_because`; `None` when it cannot be read (the
/// message is still redacted: the homeserver says so).
pub(crate) fn redaction_of(redacted_because: &RawValue) -> Option<Redaction> {
    let because = serde_json::from_str::<RedactedBecause<'_>>(redacted_because.get()).ok()?;
    Some(Redaction {
        redacted_by: because.sender.parse().ok()?,
        redacted_at: from_unix_ms(because.origin_server_ts).ok()?,
        reason: because.content.and_then(|c| c.reason).map(|r| Redaction::bounded_reason(&r)),
    })
}

/// `info` of a media message; read leniently: a field of the wrong type is dropped alone, not
/// the other one nor the message.
#[derive(Deserialize, Default)]
struct MediaInfo<'a> {
    #[serde(default, borrow)]
    mimetype: Option<&'a RawValue>,
    #[serde(default, borrow)]
    size: Option<&'a RawValue>,
}

/// A field read on its own: `None` when absent or of the wrong type.
fn lenient<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<T> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// The msgtypes whose content carries a file; `m.sticker` stands for the sticker event, which
/// has no msgtype of its own.
const MEDIA_TYPES: &[&str] = &["m.image", "m.file", "m.audio", "m.video", STICKER];

/// The event type of a sticker, recorded as its msgtype.
const STICKER: &str = "m.sticker";

/// An edit seen in the range, before folding.
#[derive(Debug)]
pub(super) struct PendingEdit {
    pub(super) event_id: EventId,
    pub(super) target: EventId,
    pub(super) sender: UserId,
    pub(super) sent_at: OffsetDateTime,
    pub(super) msgtype: Option<String>,
    pub(super) body: Option<String>,
    pub(super) media: Option<MediaRef>,
}

/// A redaction seen in the range, before folding.
#[derive(Debug)]
pub(super) struct PendingRedaction {
    pub(super) target: EventId,
    pub(super) redaction: Redaction,
}

/// What one event is to the snapshot.
pub(super) enum Outcome {
    Message(MessageRecord),
    Edit(PendingEdit),
    Redaction(PendingRedaction),
    Ignored,
}

/// The event is not what the specification describes: skipped and counted.
pub(super) struct Malformed;

pub(super) fn is_message_like(kind: &str) -> bool {
    matches!(kind, "m.room.message" | "m.room.encrypted" | "m.room.redaction" | STICKER)
}

/// Classifies one event. `decryption` tells what became of it when it arrived as
/// `m.room.encrypted` and the run had keys: decrypted (`view` is then the event it carried, with
/// its cleartext relation), or not and why; `None` for an event in clear or a run without keys.
pub(super) fn classify(
    view: EventView<'_, MessageContent<'_>>,
    event_id: EventId,
    decryption: Option<Decryption>,
) -> Result<Outcome, Malformed> {
    let kind = &*view.kind;
    if !is_message_like(kind) {
        return Ok(Outcome::Ignored);
    }
    let redacted_because = view.unsigned.as_ref().and_then(|u| u.redacted_because);
    let redacted = redacted_because.is_some();
    let content = match view.content {
        Some(content) => Some(content),
        None if redacted => None,
        None => return Err(Malformed),
    };
    if kind == "m.room.redaction" {
        if redacted {
            return Ok(Outcome::Ignored);
        }
        let target = view.redacts.as_deref().or(content.as_ref().and_then(|c| c.redacts.as_deref()));
        let target = target.ok_or(Malformed)?.parse::<EventId>().map_err(|_| Malformed)?;
        let redaction = Redaction {
            redacted_by: view.sender.parse::<UserId>().map_err(|_| Malformed)?,
            redacted_at: from_unix_ms(view.origin_server_ts).map_err(|_| Malformed)?,
            reason: content.as_ref().and_then(|c| c.reason.as_deref()).map(Redaction::bounded_reason),
        };
        return Ok(Outcome::Redaction(PendingRedaction { target, redaction }));
    }
    let sender = view.sender.parse::<UserId>().map_err(|_| Malformed)?;
    let sent_at = from_unix_ms(view.origin_server_ts).map_err(|_| Malformed)?;
    // Still a ciphertext: its content (and an edit's new content) is unknown. A decrypted event
    // is the event it carried, read below like one in clear, and was encrypted all the same.
    let sealed = kind == "m.room.encrypted";
    let decrypted = matches!(decryption, Some(Decryption::Decrypted(_)));
    let mut record = MessageRecord {
        event_id,
        sender,
        msgtype: None,
        body: None,
        sent_at,
        edited: false,
        redacted,
        encrypted: sealed || decrypted,
        decrypted,
        undecryptable: match decryption {
            Some(Decryption::Failed(reason)) => Some(reason.code().to_owned()),
            _ => None,
        },
        reply_to: None,
        thread_root: None,
        media: None,
        versions: Vec::new(),
        redaction: redacted_because.and_then(redaction_of),
        // The decrypting device's finding; a ciphertext still sealed came from a device nobody
        // checked; an event in clear was never encrypted.
        sender_trust: match decryption {
            Some(Decryption::Decrypted(trust)) => trust,
            _ => SenderTrust::unrecorded(sealed),
        },
    };
    let Some(mut content) = content.filter(|_| !redacted) else {
        return Ok(Outcome::Message(record));
    };
    let relation = content.relates_to.take().unwrap_or_default();
    if relation.rel_type.as_deref() == Some("m.replace") {
        let target =
            relation.event_id.as_deref().ok_or(Malformed)?.parse::<EventId>().map_err(|_| Malformed)?;
        if sealed {
            // The new content is encrypted too: nothing can be applied.
            return Ok(Outcome::Ignored);
        }
        let (msgtype, body, media) = replacement(&mut content)?;
        return Ok(Outcome::Edit(PendingEdit {
            event_id: record.event_id,
            target,
            sender: record.sender,
            sent_at,
            msgtype: Some(msgtype),
            body: Some(body),
            media,
        }));
    }
    if relation.rel_type.as_deref() == Some("m.thread") {
        let root = relation.event_id.as_deref().ok_or(Malformed)?;
        record.thread_root = Some(root.parse().map_err(|_| Malformed)?);
    }
    if let Some(reply) = relation.in_reply_to.filter(|_| !relation.is_falling_back) {
        record.reply_to = Some(reply.event_id.parse().map_err(|_| Malformed)?);
    }
    if !sealed {
        // A sticker has no msgtype: its event type stands for it.
        let msgtype = if kind == STICKER { STICKER } else { content.msgtype.as_deref().ok_or(Malformed)? };
        let body = content.body.as_deref().ok_or(Malformed)?;
        record.media = media_of(msgtype, &content);
        record.msgtype = Some(msgtype.to_owned());
        record.body = Some(body.to_owned());
    }
    Ok(Outcome::Message(record))
}

/// What an edit replaces its original's content with, for an edit sent in clear and one
/// decrypted alike: its `m.new_content` (msgtype, body, attachment), never its own `body`, which
/// is only the fallback shown by clients that do not know edits (`"* …"`).
fn replacement(content: &mut MessageContent<'_>) -> Result<(String, String, Option<MediaRef>), Malformed> {
    let new = content.new_content.take().ok_or(Malformed)?;
    let msgtype = new.msgtype.as_deref().ok_or(Malformed)?;
    let body = new.body.as_deref().ok_or(Malformed)?;
    Ok((msgtype.to_owned(), body.to_owned(), media_of(msgtype, &new)))
}

/// The attachment of a media message or sticker: its plain `mxc://` URI or its
/// `EncryptedFile`, declared MIME type and size, and file name (`filename`, else the body of an
/// `m.file`). The thumbnail (`info.thumbnail_*`) is the sender's preview, not evidence: ignored.
/// Fields of the wrong type, a malformed `file` included, are dropped rather than failing the
/// message.
fn media_of(msgtype: &str, content: &MessageContent<'_>) -> Option<MediaRef> {
    if !MEDIA_TYPES.contains(&msgtype) {
        return None;
    }
    let info: MediaInfo<'_> = lenient(content.info).unwrap_or_default();
    let uri = content.url.as_deref().filter(|u| u.starts_with("mxc://")).map(str::to_owned);
    let file: Option<EncryptedFile> = lenient(content.file).filter(bounded_file);
    let filename = lenient::<String>(content.filename)
        .or_else(|| content.body.as_deref().filter(|_| msgtype == "m.file").map(str::to_owned))
        .map(|name| bounded_name(&name))
        .filter(|name| !name.is_empty());
    Some(MediaRef { uri, mimetype: lenient(info.mimetype), size: lenient(info.size), filename, file })
}

/// The longest file name kept, in bytes (a longer one is cut on a character boundary).
const MAX_FILENAME: usize = 255;

/// A file name as kept: without control characters, at most [`MAX_FILENAME`] bytes.
fn bounded_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_FILENAME));
    for c in name.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_FILENAME {
            break;
        }
        out.push(c);
    }
    out
}

/// Whether an `EncryptedFile` is of a size a real one has (a well-formed `mxc://` URI, a key,
/// a counter block and digests of their lengths, a few key operations): an outsized one is
/// dropped like a malformed one, so that no sender can make a message unstorable.
fn bounded_file(file: &EncryptedFile) -> bool {
    let short = |s: &str, max: usize| s.len() <= max;
    file.url.parse::<argus_domain::MxcUri>().is_ok()
        && short(&file.url, 600)
        && short(&file.iv, 64)
        && short(&file.key.k, 128)
        && short(&file.key.kty, 32)
        && short(&file.key.alg, 32)
        && file.key.key_ops.len() <= 8
        && file.key.key_ops.iter().all(|op| short(op, 32))
        && file.v.as_deref().is_none_or(|v| short(v, 32))
        && file.hashes.len() <= 4
        && file.hashes.iter().all(|(k, v)| short(k, 32) && short(v, 128))
}
