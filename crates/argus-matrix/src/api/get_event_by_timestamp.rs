//! `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event` — Client-Server API §"Room
//! events by timestamp", spec v1.6 ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event)).
//!
//! The first event of the room sent at or after a time (`dir=f`): where a read that starts at
//! a date stops going back.

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, UInt,
    api::{
        Direction, MatrixVersion, SupportedVersions, client::room::get_event_by_timestamp::v1 as endpoint,
    },
};

use crate::{
    Error, Result,
    transport::{HttpClient, Target},
};

/// The first event of `room` sent at or after `ts_ms` (UTC milliseconds); `None` when the room
/// has none. A homeserver without the endpoint is [`Error::TimestampLookupUnsupported`].
pub(crate) async fn first_since(
    client: &HttpClient,
    target: &Target<'_>,
    room: &OwnedRoomId,
    ts_ms: u64,
) -> Result<Option<OwnedEventId>> {
    let ts = UInt::new(ts_ms)
        .map(MilliSecondsSinceUnixEpoch)
        .ok_or_else(|| Error::InvalidInput("the start date is out of range".into()))?;
    let request = endpoint::Request::new(room.clone(), ts, Direction::Forward);
    // The stable path, which the specification added in v1.6.
    let versions = SupportedVersions { versions: [MatrixVersion::V1_6].into(), features: Default::default() };
    match client.send_as(target, request, &versions).await {
        Ok(found) => Ok(Some(found.event_id)),
        // Synapse's answer when no event is found in that direction.
        Err(Error::NotFound) => Ok(None),
        Err(Error::Homeserver { status: 404 | 405 | 501, .. }) => Err(Error::TimestampLookupUnsupported),
        Err(Error::Homeserver { errcode: Some(code), .. }) if code == "M_UNRECOGNIZED" => {
            Err(Error::TimestampLookupUnsupported)
        }
        Err(other) => Err(other),
    }
}
