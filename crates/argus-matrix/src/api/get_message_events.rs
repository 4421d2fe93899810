//! `GET /_matrix/client/v3/rooms/{roomId}/messages` — Client-Server API §"Getting events for a
//! room" ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidmessages)).
//!
//! Reads one page of the room timeline, backwards from the live end or forwards from a token.

use ruma::{
    OwnedRoomId, UInt,
    api::{Direction, client::message::get_message_events::v3 as endpoint},
};

use crate::{
    Result,
    transport::{HttpClient, Target},
};

pub(crate) use endpoint::Response as Page;

/// Fetches one page of at most `limit` events.
pub(crate) async fn fetch(
    client: &HttpClient,
    target: &Target<'_>,
    room: &OwnedRoomId,
    from: Option<String>,
    dir: Direction,
    limit: u32,
) -> Result<Page> {
    let mut request = endpoint::Request::new(room.clone(), dir);
    request.from = from;
    request.limit = UInt::from(limit);
    client.send(target, request).await
}
