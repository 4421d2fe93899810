//! Domain model of the Argus Tchap connector: identifiers, classifications, the viewer, the
//! records that flow from a Matrix homeserver into storage, and the clearance policy.
//!
//! This crate does no I/O: no runtime, database or HTTP dependency. Every other crate of the
//! connector builds on it, and platform teams can embed it to apply the same policy.
//!
//! ```
//! use argus_domain::{Classification, OrgId, Viewer, Scope, policy};
//!
//! let org: OrgId = "anssi".parse()?;
//! let analyst = Viewer::new("alice".parse()?, org.clone(), Classification::Confidential, [Scope::Read]);
//! assert!(policy::is_visible(&analyst, &org, Classification::Restricted));
//! assert!(!policy::is_visible(&analyst, &org, Classification::Secret));
//! assert!(!policy::is_visible(&analyst, &"dgsi".parse()?, Classification::Unclassified));
//! # Ok::<(), argus_domain::Error>(())
//! ```

mod account_watch;
mod attachment;
mod classification;
mod error;
mod ids;
mod ingestion;
mod message;
pub mod oversight;
mod page;
pub mod policy;
pub mod post;
mod room;
mod room_state;
pub mod search;
mod secret;
#[cfg(feature = "testing")]
pub mod testing;
mod viewer;
pub mod watch;

pub use account_watch::{AccountWatch, FollowedRoom, Membership, NewAccountWatch};
pub use attachment::{Attachment, AttachmentJwk, AttachmentStatus, EncryptedFile, MxcUri, Sha256Digest};
pub use classification::Classification;
pub use error::{Error, Result};
pub use ids::{ActorId, EventId, HomeserverUrl, OrgId, RoomId, UserId, normalise_host};
pub use ingestion::{IngestionOutcome, IngestionRecord, NewIngestion};
pub use message::{
    HeldContent, HeldVersion, MediaRef, MessageEdit, MessageRecord, MessageRedaction, MessageVersion,
    Redaction, SenderTrust, StoredMessage,
};
pub use page::{Page, PageRequest};
pub use post::{PostEvidence, PostPolicy};
pub use room::{FetchReport, HistoryPosition, RoomSnapshot, Stats, StoredRoom};
pub use room_state::{
    MAX_ACCESS_RULE_LEN, MAX_LIFETIME_MS, MIN_RETENTION_MARGIN, Retention, RoomMetadata, access_rule,
};
pub use search::{SearchExpr, SearchHit, SearchQuery, SearchRequest};
pub use secret::{AccessToken, Secret};
pub use viewer::{Scope, Viewer};
pub use watch::{NewWatch, SealedToken, Watch, WatchStatus};

/// Converts a timestamp to whole milliseconds since the Unix epoch (UTC), the storage form.
pub fn to_unix_ms(t: time::OffsetDateTime) -> i64 {
    // i128 nanoseconds / 1e6 always fits i64 for every representable OffsetDateTime.
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Converts milliseconds since the Unix epoch to a UTC timestamp.
///
/// Returns [`Error::InvalidTimestamp`] when the value is outside the representable range.
pub fn from_unix_ms(ms: i64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| Error::InvalidTimestamp(ms))
}
