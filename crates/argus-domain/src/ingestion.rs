//! Ingestion records: what the audit trail keeps of every ingestion, successful or not.

use std::fmt;

use time::OffsetDateTime;

use crate::{ActorId, Classification, OrgId};

/// How an ingestion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngestionOutcome {
    /// Everything was stored.
    Succeeded,
    /// The run stopped on an error. `message_count` says how many messages the pages it had
    /// already committed stored (0 when nothing was: then nothing but this record was written).
    Failed,
}

impl IngestionOutcome {
    /// The contract name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }
}

impl fmt::Display for IngestionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An audit record to append. Room id and homeserver are kept as given (sanitised), because a
/// failed ingestion may have been refused precisely for an invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIngestion {
    /// Who ran it (`sub`).
    pub actor: ActorId,
    /// Whose chain it goes into.
    pub org: OrgId,
    /// The room id as requested.
    pub room_id: String,
    /// The homeserver as requested.
    pub homeserver_url: String,
    /// Messages newly stored (by a failed run: by the pages it committed before it stopped).
    pub message_count: i64,
    /// The classification requested.
    pub classification: Classification,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
    /// How it ended.
    pub outcome: IngestionOutcome,
    /// Why it failed; must never contain a token.
    pub error: Option<String>,
    /// For a note posted into the room (not an ingestion): what is kept of it.
    pub post: Option<crate::PostEvidence>,
    /// Run by the scheduler for a watched room (the actor is the watch's owner), not by a call.
    pub scheduled: bool,
    /// For a room an operator moved to another homeserver (`argus-tchap rooms rehome`), not an
    /// ingestion: the homeserver it answered to until then; `homeserver_url` is the new one.
    pub rehomed_from: Option<String>,
}

impl NewIngestion {
    /// Makes a caller-supplied value safe to keep: control characters replaced, at most
    /// `max` characters.
    ///
    /// ```
    /// use argus_domain::NewIngestion;
    /// assert_eq!(NewIngestion::sanitise("!a\0b\n", 10), "!a\u{fffd}b\u{fffd}");
    /// assert_eq!(NewIngestion::sanitise(&"x".repeat(600), 255).chars().count(), 255);
    /// ```
    pub fn sanitise(value: &str, max: usize) -> String {
        value
            .chars()
            .take(max)
            .map(|c| if c.is_control() { char::REPLACEMENT_CHARACTER } else { c })
            .collect()
    }

    /// What a FAILED audit record keeps of a homeserver URL as the caller typed it:
    /// `scheme://host[:port]`, as written (not normalised, so that an odd form stays visible),
    /// without user information, path, query or fragment. The trail is append-only: a password
    /// or a token pasted as `?access_token=` written there could never be taken out again.
    ///
    /// ```
    /// use argus_domain::NewIngestion;
    /// let origin = NewIngestion::origin_of;
    /// assert_eq!(origin("https://hs.gouv.fr:8448/_matrix?access_token=syt_x#f"), "https://hs.gouv.fr:8448");
    /// assert_eq!(origin("https://user:secret@0x7f000001:80"), "https://0x7f000001:80");
    /// assert_eq!(origin("javascript:alert(1)"), "javascript:");
    /// assert_eq!(origin("hs.gouv.fr/x?access_token=syt_x"), "hs.gouv.fr");
    /// ```
    pub fn origin_of(url: &str) -> String {
        let end_of = |text: &str| text.find(['/', '\\', '?', '#']).unwrap_or(text.len());
        match url.find("://") {
            Some(scheme_end) => {
                let (scheme, rest) = url.split_at(scheme_end + 3);
                let authority = &rest[..end_of(rest)];
                let host = authority.rfind('@').map_or(authority, |at| &authority[at + 1..]);
                format!("{scheme}{host}")
            }
            None => match url.find(':') {
                Some(colon) if colon < end_of(url) => url[..=colon].to_owned(),
                _ => url[..end_of(url)].to_owned(),
            },
        }
    }
}

/// An audit record as stored: the fields appended plus its place in the organisation's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionRecord {
    /// Opaque, stable storage id.
    pub id: i64,
    /// Position in the organisation's chain, from 1, gapless.
    pub seq: i64,
    /// The appended fields.
    pub entry: NewIngestion,
    /// Hash of the previous record of the chain (32 zero bytes for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 over this record's canonical encoding and `prev_hash`.
    pub hash: [u8; 32],
    /// For a run: the RFC 9162 root over the versions it stored (the transparency log's
    /// `eventsRoot`) and their number; `None` for a post, a move, or a failure that stored
    /// nothing.
    pub events: Option<([u8; 32], u64)>,
}
