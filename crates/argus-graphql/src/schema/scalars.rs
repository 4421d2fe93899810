//! The scalars and leaf values of the schema: `DateTime`, `Classification`, opaque ids, and
//! the saturating conversions of counts to GraphQL `Int`.

use juniper::{GraphQLEnum, GraphQLScalar, ID};
use time::{OffsetDateTime, UtcOffset};

use crate::Context;

/// An RFC 3339 timestamp in UTC with a fixed width: always milliseconds, e.g.
/// `2026-05-26T08:00:29.000Z`, so that ordering the text orders the times.
#[derive(GraphQLScalar, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(
    name = "DateTime",
    with = date_time,
    parse_token(String),
    specified_by_url = "https://graphql-scalars.dev/docs/scalars/date-time"
)]
pub struct DateTime(pub OffsetDateTime);

mod date_time {
    use super::{DateTime, OffsetDateTime, UtcOffset};

    pub(super) fn to_output(v: &DateTime) -> String {
        let t = v.0.to_offset(UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    pub(super) fn from_input(s: &str) -> Result<DateTime, Box<str>> {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| DateTime(t.to_offset(UtcOffset::UTC)))
            .map_err(|_| "invalid DateTime: expected RFC 3339".into())
    }
}

/// The text of a [`DateTime`], as the scalar serialises it.
pub(crate) fn date_time_text(v: &DateTime) -> String {
    date_time::to_output(v)
}

/// A GraphQL `Int` from a count, saturating.
pub(crate) fn int(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

/// A GraphQL `Int` from a report counter, saturating.
pub(crate) fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// An opaque id, stable for the caller's organisation: see [`crate::CursorKey::node_id`].
pub(crate) fn opaque_id(context: &Context, kind: &str, id: i64) -> ID {
    ID::new(context.services().cursor_key.node_id(kind, context.viewer(), id))
}

/// Secrecy levels, lowest first. A viewer sees a record only if record level <= viewer clearance.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Classification")]
pub enum GqlClassification {
    /// Not protected ("NON PROTÉGÉ").
    #[graphql(name = "UNCLASSIFIED")]
    Unclassified,
    /// Restricted distribution ("DIFFUSION RESTREINTE").
    #[graphql(name = "RESTRICTED")]
    Restricted,
    /// Confidential.
    #[graphql(name = "CONFIDENTIAL")]
    Confidential,
    /// Secret.
    #[graphql(name = "SECRET")]
    Secret,
    /// Top secret ("TRÈS SECRET").
    #[graphql(name = "TOP_SECRET")]
    TopSecret,
}

impl From<argus_domain::Classification> for GqlClassification {
    fn from(c: argus_domain::Classification) -> Self {
        use argus_domain::Classification as C;
        match c {
            C::Unclassified => Self::Unclassified,
            C::Restricted => Self::Restricted,
            C::Confidential => Self::Confidential,
            C::Secret => Self::Secret,
            C::TopSecret => Self::TopSecret,
        }
    }
}

impl From<GqlClassification> for argus_domain::Classification {
    fn from(c: GqlClassification) -> Self {
        match c {
            GqlClassification::Unclassified => Self::Unclassified,
            GqlClassification::Restricted => Self::Restricted,
            GqlClassification::Confidential => Self::Confidential,
            GqlClassification::Secret => Self::Secret,
            GqlClassification::TopSecret => Self::TopSecret,
        }
    }
}

/// What is known of the device that sent a message, as the connector's end-to-end-encryption device found it when it decrypted the message.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "SenderTrust")]
pub enum GqlSenderTrust {
    /// The sending device was signed by its owner's cross-signing identity, and that identity is the one first seen for the owner.
    #[graphql(name = "VERIFIED")]
    Verified,
    /// The sending device is the sender's, but their cross-signing identity did not sign it.
    #[graphql(name = "UNVERIFIED_DEVICE")]
    UnverifiedDevice,
    /// The sender's cross-signing identity is not the one first seen for them.
    #[graphql(name = "IDENTITY_CHANGED")]
    IdentityChanged,
    /// The sending device is not known to be the sender's: its key came from the key backup or another indirect source, the device is unknown, or the key was sent by another user's device; also what a message that stayed encrypted is.
    #[graphql(name = "UNKNOWN_DEVICE")]
    UnknownDevice,
    /// The message was not end-to-end encrypted.
    #[graphql(name = "NOT_ENCRYPTED")]
    NotEncrypted,
}

impl From<argus_domain::SenderTrust> for GqlSenderTrust {
    fn from(t: argus_domain::SenderTrust) -> Self {
        use argus_domain::SenderTrust as T;
        match t {
            T::Verified => Self::Verified,
            T::UnverifiedDevice => Self::UnverifiedDevice,
            T::IdentityChanged => Self::IdentityChanged,
            T::UnknownDevice => Self::UnknownDevice,
            T::NotEncrypted => Self::NotEncrypted,
        }
    }
}
