//! What the package says of each message, once: the model both `data/messages.jsonl` and
//! `data/transcript.html` are written from, so that they cannot say different things.

use std::collections::{HashMap, HashSet};

use argus_domain::{
    AttachmentStatus, Classification, MessageRecord, SenderTrust, StoredMessage, oversight::VersionKind,
};
use argus_store::{DisclosureSource, SourceVersion};
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::check::{VersionKey, kind_name};

/// A time as the package writes it: RFC 3339, UTC.
pub(crate) fn utc(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// A time in milliseconds since the epoch, as the package writes it.
pub(crate) fn utc_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_or_else(|_| ms.to_string(), utc)
}

/// One line of `data/messages.jsonl`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Line<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) sent_at: String,
    pub(crate) msgtype: Option<&'a str>,
    pub(crate) body: Option<&'a str>,
    pub(crate) edited: bool,
    pub(crate) redacted: bool,
    pub(crate) encrypted: bool,
    /// What is known of the sending device (a [`SenderTrust`] code): `NOT_ENCRYPTED` exactly
    /// when the message was not encrypted.
    pub(crate) sender_trust: SenderTrust,
    pub(crate) classification: Classification,
    pub(crate) reply_to: Option<&'a str>,
    pub(crate) thread_root: Option<&'a str>,
    /// Every version proven against its run's `eventsRoot`, in the order the runs stored them.
    pub(crate) versions: Vec<VersionLine<'a>>,
    /// Versions whose content a logged redaction purged: listed, not claimed (no proof).
    pub(crate) redacted_versions: Vec<PurgedLine<'a>>,
    pub(crate) redaction: Option<RedactionLine<'a>>,
    /// Content a later redaction purged, kept under legal hold (for a requester who may read it).
    pub(crate) held: Option<HeldLine<'a>>,
    pub(crate) attachment: Option<AttachmentLine<'a>>,
}

/// A version of a message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VersionLine<'a> {
    pub(crate) kind: &'static str,
    pub(crate) event_id: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) sent_at: String,
    pub(crate) msgtype: Option<&'a str>,
    pub(crate) body: Option<&'a str>,
    pub(crate) reason: Option<&'a str>,
    pub(crate) target: Option<&'a str>,
    pub(crate) declared_sha256: Option<&'a str>,
    /// The log index of the run's AUDIT entry.
    pub(crate) run: u64,
    /// Its position among the run's leaves.
    pub(crate) position: u64,
}

/// A version whose content a redaction purged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PurgedLine<'a> {
    pub(crate) kind: &'static str,
    pub(crate) event_id: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) sent_at: String,
}

/// Who redacted a message, when and why.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RedactionLine<'a> {
    pub(crate) by: &'a str,
    pub(crate) at: String,
    pub(crate) reason: Option<&'a str>,
}

/// Content held after a redaction purged it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeldLine<'a> {
    pub(crate) body: Option<&'a str>,
    pub(crate) versions: Vec<HeldVersionLine<'a>>,
}

/// A version's content held after a redaction purged it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeldVersionLine<'a> {
    pub(crate) event_id: &'a str,
    pub(crate) msgtype: Option<&'a str>,
    pub(crate) body: Option<&'a str>,
}

/// The file a message carries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttachmentLine<'a> {
    pub(crate) sha256: Option<String>,
    pub(crate) name: Option<&'a str>,
    pub(crate) mimetype: Option<&'a str>,
    pub(crate) sniffed_mimetype: Option<&'a str>,
    pub(crate) size: Option<u64>,
    pub(crate) status: &'static str,
    pub(crate) reason: Option<&'a str>,
    pub(crate) threat: Option<&'a str>,
    /// The file in the package (under `data/`), when it is in it.
    pub(crate) file: Option<String>,
    /// The log index of its ATTACHMENT entry, when one was recorded.
    pub(crate) log_index: Option<u64>,
}

/// The canonical bytes of the run's versions in the package, one a line (canonical JSON holds
/// no line break), under `data/`.
pub(crate) fn versions_file(run: u64) -> String {
    format!("log/versions/{run}/versions.jsonl")
}

/// Their inclusion proofs in the run's `eventsRoot`, line for line: the version's position
/// among the run's leaves, then the proof's hashes in base64, separated by spaces.
pub(crate) fn proofs_file(run: u64) -> String {
    format!("log/versions/{run}/proofs.txt")
}

/// Whether a file goes into the package.
pub(crate) fn packaged(status: AttachmentStatus, include_quarantined: bool) -> bool {
    status == AttachmentStatus::Stored || (include_quarantined && status == AttachmentStatus::Infected)
}

/// The source indexed for writing.
pub(crate) struct Index<'a> {
    versions: HashMap<&'a str, Vec<&'a SourceVersion>>,
    run_index: HashMap<i64, u64>,
    attachment_index: HashMap<&'a str, u64>,
    purged: &'a HashSet<VersionKey>,
    include_quarantined: bool,
}

impl<'a> Index<'a> {
    pub(crate) fn new(
        source: &'a DisclosureSource,
        purged: &'a HashSet<VersionKey>,
        include_quarantined: bool,
    ) -> Self {
        let mut versions: HashMap<&str, Vec<&SourceVersion>> = HashMap::new();
        for v in &source.versions {
            versions.entry(v.message_event_id.as_str()).or_default().push(v);
        }
        let run_index = source.runs.iter().map(|r| (r.run_id, r.entry.index)).collect();
        let attachment_index = source
            .attachments
            .iter()
            .filter_map(|a| a.entry.as_ref().map(|e| (a.event_id.as_str(), e.index)))
            .collect();
        Self { versions, run_index, attachment_index, purged, include_quarantined }
    }

    /// The line of `message`.
    pub(crate) fn line(&self, stored: &'a StoredMessage) -> Line<'a> {
        let m = &stored.message;
        let all = self.versions.get(m.event_id.as_str()).map(Vec::as_slice).unwrap_or_default();
        let (purged, proven): (Vec<&SourceVersion>, Vec<&SourceVersion>) =
            all.iter().partition(|v| self.purged.contains(&(v.run_id, v.position)));
        let redacted_versions = purged
            .iter()
            .map(|v| PurgedLine {
                kind: kind_name(v.kind),
                event_id: &v.leaf.event_id,
                sender: &v.leaf.sender,
                sent_at: utc_ms(v.leaf.sent_at),
            })
            .collect();
        let versions = Some(proven)
            .map(|vs| {
                vs.into_iter()
                    .filter_map(|v| {
                        let run = *self.run_index.get(&v.run_id)?;
                        let leaf = &v.leaf;
                        Some(VersionLine {
                            kind: kind_name(v.kind),
                            event_id: &leaf.event_id,
                            sender: &leaf.sender,
                            sent_at: utc_ms(leaf.sent_at),
                            msgtype: leaf.msgtype.as_deref(),
                            body: leaf.body.as_deref(),
                            reason: leaf.reason.as_deref(),
                            target: leaf.target.as_deref(),
                            declared_sha256: leaf.attachment.as_ref().and_then(|a| a.sha256.as_deref()),
                            run,
                            position: v.position,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let redaction = m.redaction.as_ref().map(|r| RedactionLine {
            by: r.redacted_by.as_str(),
            at: utc(r.redacted_at),
            reason: r.reason.as_deref(),
        });
        let held = stored.held.as_ref().map(|h| HeldLine {
            body: h.body.as_deref(),
            versions: h
                .versions
                .iter()
                .map(|v| HeldVersionLine {
                    event_id: v.event_id.as_str(),
                    msgtype: v.msgtype.as_deref(),
                    body: v.body.as_deref(),
                })
                .collect(),
        });
        let attachment = stored.attachment.as_ref().map(|a| {
            let sha256 = a.sha256.map(|d| d.to_hex());
            let file = sha256
                .as_ref()
                .filter(|_| packaged(a.status, self.include_quarantined))
                .map(|s| format!("attachments/{s}"));
            AttachmentLine {
                sha256,
                name: a.filename.as_deref(),
                mimetype: a.declared_mimetype.as_deref(),
                sniffed_mimetype: a.sniffed_mimetype.as_deref(),
                size: a.size.or(a.declared_size),
                status: a.status.as_str(),
                reason: a.reason.as_deref(),
                threat: a.threat.as_deref(),
                file,
                log_index: self.attachment_index.get(m.event_id.as_str()).copied(),
            }
        });
        Line {
            event_id: m.event_id.as_str(),
            sender: m.sender.as_str(),
            sent_at: utc(m.sent_at),
            msgtype: m.msgtype.as_deref(),
            body: m.body.as_deref(),
            edited: m.edited,
            redacted: m.redacted,
            encrypted: m.was_encrypted(),
            sender_trust: sender_trust(m),
            classification: stored.classification,
            reply_to: m.reply_to.as_ref().map(|e| e.as_str()),
            thread_root: m.thread_root.as_ref().map(|e| e.as_str()),
            versions,
            redacted_versions,
            redaction,
            held,
            attachment,
        }
    }
}

/// What the package says of a message's sending device: what was recorded, except that a
/// message not encrypted is [`SenderTrust::NotEncrypted`] and an encrypted one recorded so is
/// [`SenderTrust::UnknownDevice`] (nothing is known of its device), so that the package never
/// contradicts its `encrypted`.
pub(crate) fn sender_trust(m: &MessageRecord) -> SenderTrust {
    match (m.was_encrypted(), m.sender_trust) {
        (false, _) => SenderTrust::NotEncrypted,
        (true, SenderTrust::NotEncrypted) => SenderTrust::UnknownDevice,
        (true, trust) => trust,
    }
}

/// Whether a version kind is a redaction.
pub(crate) fn is_redaction(kind: &str) -> bool {
    kind == kind_name(VersionKind::Redaction)
}
