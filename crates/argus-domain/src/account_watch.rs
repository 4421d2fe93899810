//! Watched accounts (live capture): every joined room of a Matrix account (or the listed ones)
//! kept current by one `/sync` long-poll loop per account, instead of one poll per room; what
//! such a watch is, and what it records of the account's rooms (joined, left, banned, invited).

use std::fmt;

use time::OffsetDateTime;

use crate::{ActorId, Classification, HomeserverUrl, OrgId, RoomId, SealedToken, WatchStatus};

/// An account watch to create, or to renew (same organisation, homeserver and Matrix user: a
/// new token, rooms, timeout, classification; a stopped watch becomes active, its positions
/// kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccountWatch {
    /// Who watches: the loop's runs are audited as theirs.
    pub owner: ActorId,
    /// Whose archive the rooms go into.
    pub org: OrgId,
    /// Where the account lives.
    pub homeserver_url: HomeserverUrl,
    /// The Matrix user the token belongs to, as the homeserver named it (`whoami`).
    pub user_id: String,
    /// The classification of every room captured.
    pub classification: Classification,
    /// The long-poll timeout of each `/sync`, in seconds.
    pub timeout_secs: u32,
    /// Only these rooms (and the rooms that replace them); `None`: every joined room.
    pub rooms: Option<Vec<RoomId>>,
    /// The owner's credentials, sealed: the Matrix token, and the recovery key when `decrypts`.
    pub token: SealedToken,
    /// Whether the sealed credentials hold a recovery key.
    pub decrypts: bool,
    /// A room's history is captured from this time (`None`: all of it).
    pub since: Option<OffsetDateTime>,
}

/// An account watch as stored (never with its token or positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountWatch {
    /// Opaque, stable storage id.
    pub id: i64,
    /// Whose archive the rooms go into.
    pub org: OrgId,
    /// Who watches.
    pub owner: ActorId,
    /// Where the account lives.
    pub homeserver_url: HomeserverUrl,
    /// The Matrix user the token belongs to.
    pub user_id: String,
    /// The classification of every room captured.
    pub classification: Classification,
    /// The long-poll timeout of each `/sync`, in seconds.
    pub timeout_secs: u32,
    /// Only these rooms; `None`: every joined room.
    pub rooms: Option<Vec<RoomId>>,
    /// Whether a loop runs it.
    pub status: WatchStatus,
    /// Why it is not run (a stable code and words, never a token).
    pub status_reason: Option<String>,
    /// When its last `/sync` answered and was stored.
    pub last_sync_at: Option<OffsetDateTime>,
    /// Rooms it follows (joined, not left), as the viewer may count them.
    pub room_count: i64,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Whether it holds the owner's recovery key.
    pub decrypts: bool,
    /// A room's history is captured from this time (`None`: all of it).
    pub since: Option<OffsetDateTime>,
}

/// The account's membership of a room, as the loop last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Membership {
    /// Joined: captured.
    Join,
    /// Left (or kicked): no longer captured.
    Leave,
    /// Banned: no longer captured.
    Ban,
    /// Invited: recorded, never accepted, not captured.
    Invite,
}

impl Membership {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Join => "JOIN",
            Self::Leave => "LEAVE",
            Self::Ban => "BAN",
            Self::Invite => "INVITE",
        }
    }

    /// The membership a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "JOIN" => Some(Self::Join),
            "LEAVE" => Some(Self::Leave),
            "BAN" => Some(Self::Ban),
            "INVITE" => Some(Self::Invite),
            _ => None,
        }
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room an account watch follows or has followed, with the account's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedRoom {
    /// The room.
    pub room_id: RoomId,
    /// The account's membership.
    pub membership: Membership,
    /// Who changed it (the inviter, who kicked or banned), as the homeserver said.
    pub by: Option<String>,
    /// When it changed (the membership event's time, else when the loop saw it).
    pub changed_at: OffsetDateTime,
    /// Whether the room still has to be captured (its last capture failed, or it was just
    /// joined): the loop runs it again before it counts as current.
    pub due: bool,
}
