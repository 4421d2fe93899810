//! `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}` — Client-Server API
//! §"Sending events to a room" ([spec](https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid)).
//!
//! Sends one `m.room.message`. The transaction id makes a retry idempotent: the homeserver
//! answers a repeated transaction of the same access token with the event it already created,
//! so the transport may retry a send that timed out without posting the message twice.

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedTransactionId, api::client::message::send_message_event::v3 as endpoint,
    events::room::message::RoomMessageEventContent,
};

use crate::{
    Error, Result,
    transport::{HttpClient, Target},
};

/// Sends `content` into `room` under transaction `txn_id`; the id of the event created.
pub(crate) async fn send(
    client: &HttpClient,
    target: &Target<'_>,
    room: OwnedRoomId,
    txn_id: &str,
    content: &RoomMessageEventContent,
) -> Result<OwnedEventId> {
    let request = endpoint::Request::new(room, OwnedTransactionId::from(txn_id), content)
        .map_err(|_| Error::InvalidInput("the note cannot be encoded".into()))?;
    Ok(client.send(target, request).await?.event_id)
}
