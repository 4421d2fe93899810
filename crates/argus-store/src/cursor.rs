//! Keyset positions of the three paged lists.
//!
//! A cursor only says where a list resumes; every read still applies the viewer's organisation
//! and clearance, so a forged or edited cursor can skip rows but never reveal one.

use argus_domain::{IngestionRecord, StoredMessage, StoredRoom, to_unix_ms};

/// Position in the room list (most recent activity first, rooms without messages last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RoomCursor {
    /// Newest visible message of the last room returned, UTC ms; `None` if it had none.
    pub last_activity_ms: Option<i64>,
    /// Storage id of the last room returned.
    pub id: i64,
}

impl RoomCursor {
    /// The position just after `room`.
    pub fn of(room: &StoredRoom) -> Self {
        Self { last_activity_ms: room.last_activity_at.map(to_unix_ms), id: room.id }
    }
}

/// Position in a room's messages (oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MessageCursor {
    /// `sent_at` of the last message returned, UTC ms.
    pub sent_at_ms: i64,
    /// Storage id of the last message returned.
    pub id: i64,
}

impl MessageCursor {
    /// The position just after `message`.
    pub fn of(message: &StoredMessage) -> Self {
        Self { sent_at_ms: to_unix_ms(message.message.sent_at), id: message.id }
    }
}

/// Position in the ingestion history (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IngestionCursor {
    /// Chain position of the last record returned.
    pub seq: i64,
}

impl IngestionCursor {
    /// The position just after `record`.
    pub fn of(record: &IngestionRecord) -> Self {
        Self { seq: record.seq }
    }
}
