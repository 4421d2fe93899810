//! Watched rooms: a room the scheduler keeps current on an interval with a Matrix token (and,
//! for encrypted rooms, a recovery key) held sealed, encrypted at rest; what a watch is, and the
//! sealed form of its credentials.

use std::fmt;

use time::OffsetDateTime;

use crate::{ActorId, Classification, HomeserverUrl, OrgId, RoomId};

/// Whether the scheduler runs a watch, and if not, what stopped it. Every status but
/// [`WatchStatus::Active`] stops the watch until its owner gives it again (a new token, or the
/// same one once the account is usable again), which makes it active.
///
/// ```
/// use argus_domain::WatchStatus;
///
/// assert_eq!(WatchStatus::stopped_by("ACCOUNT_EXPIRED: the account has expired"), WatchStatus::AccountExpired);
/// assert_eq!(WatchStatus::stopped_by("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN"), WatchStatus::Paused);
/// assert_eq!(WatchStatus::parse("ACCOUNT_LOCKED"), Some(WatchStatus::AccountLocked));
/// assert!(WatchStatus::Active.runs() && !WatchStatus::AccountLocked.runs());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchStatus {
    /// Synced on its interval.
    Active,
    /// Not run until its token is replaced: the homeserver refused the token (`M_UNKNOWN_TOKEN`,
    /// soft logout), or the run cannot succeed without the owner (a recovery key that no longer
    /// opens the backup, the room answering to another homeserver).
    Paused,
    /// Not run: the account has expired on its homeserver (`ORG_MATRIX_EXPIRED_ACCOUNT`, account
    /// validity). Given again once the account is renewed, it runs again.
    AccountExpired,
    /// Not run: the homeserver's administrator locked the account (`M_USER_LOCKED`). Given again
    /// once the account is unlocked, it runs again.
    AccountLocked,
}

impl WatchStatus {
    /// The stored and contract name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Paused => "PAUSED",
            Self::AccountExpired => "ACCOUNT_EXPIRED",
            Self::AccountLocked => "ACCOUNT_LOCKED",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ACTIVE" => Some(Self::Active),
            "PAUSED" => Some(Self::Paused),
            "ACCOUNT_EXPIRED" => Some(Self::AccountExpired),
            "ACCOUNT_LOCKED" => Some(Self::AccountLocked),
            _ => None,
        }
    }

    /// Whether the scheduler runs a watch in this status.
    pub const fn runs(self) -> bool {
        matches!(self, Self::Active)
    }

    /// The status a watch stopped for `reason` takes. A reason begins with its stable code
    /// (`CODE: words`): an account's state (`ACCOUNT_EXPIRED`, `ACCOUNT_LOCKED`) is its own
    /// status; anything else pauses the watch.
    pub fn stopped_by(reason: &str) -> Self {
        let code = reason.split_once(':').map_or(reason, |(code, _)| code).trim();
        match Self::parse(code) {
            Some(status @ (Self::AccountExpired | Self::AccountLocked)) => status,
            _ => Self::Paused,
        }
    }
}

impl fmt::Display for WatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token encrypted with an AEAD key held outside the database: the key's id, the nonce and
/// the ciphertext (with its tag), each as stored (base64). Bound to its watch by the associated
/// data, so a ciphertext moved to another row does not open.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedToken {
    /// Which key sealed it (a digest of the key, never the key).
    pub key_id: String,
    /// The nonce, base64.
    pub nonce: String,
    /// The ciphertext and tag, base64.
    pub ciphertext: String,
}

impl fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedToken").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// A watch to create (or to renew: same organisation and room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWatch {
    /// Who watches: scheduled runs are audited as theirs.
    pub owner: ActorId,
    /// Whose archive the room goes into.
    pub org: OrgId,
    /// The room.
    pub room_id: RoomId,
    /// Where it is read from.
    pub homeserver_url: HomeserverUrl,
    /// The classification of every run.
    pub classification: Classification,
    /// Seconds between runs.
    pub interval_secs: u32,
    /// The owner's credentials, sealed: the Matrix token, and the recovery key when `decrypts`.
    pub token: SealedToken,
    /// Whether the sealed credentials hold a recovery key: the watch's runs decrypt
    /// end-to-end encrypted history from the owner's key backup.
    pub decrypts: bool,
    /// Every run captures only what was sent at or after this time.
    pub since: Option<OffsetDateTime>,
}

/// A watch as stored (never with its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Opaque, stable storage id.
    pub id: i64,
    /// Whose archive the room goes into.
    pub org: OrgId,
    /// Who watches.
    pub owner: ActorId,
    /// The room.
    pub room_id: RoomId,
    /// Where it is read from.
    pub homeserver_url: HomeserverUrl,
    /// The classification of every run.
    pub classification: Classification,
    /// Seconds between runs.
    pub interval_secs: u32,
    /// Whether the scheduler runs it.
    pub status: WatchStatus,
    /// Why it is not run (a stable code and words, never a token).
    pub status_reason: Option<String>,
    /// When it is due next.
    pub next_run_at: OffsetDateTime,
    /// When it last ran.
    pub last_run_at: Option<OffsetDateTime>,
    /// How its last run ended (`SUCCEEDED`, `FAILED`).
    pub last_outcome: Option<String>,
    /// Why its last run failed (never a token).
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Whether it holds the owner's recovery key (sealed with the token): its runs decrypt
    /// end-to-end encrypted history.
    pub decrypts: bool,
    /// Every run captures only what was sent at or after this time.
    pub since: Option<OffsetDateTime>,
}
