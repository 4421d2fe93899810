//! `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}` — Client-Server API §"Getting events
//! for a room" ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomideventeventid)).
//!
//! Asks the homeserver whether it serves a stored message as redacted: a redaction event alone
//! proves nothing (the homeserver applies it only when the redactor was entitled to), the
//! target's `unsigned.redacted_because` does.

use ruma::{OwnedEventId, OwnedRoomId, api::client::room::get_room_event::v3 as endpoint};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    normalise::redaction_of,
    transport::{HttpClient, Target},
};

#[derive(Deserialize)]
struct EventView<'a> {
    #[serde(default, borrow)]
    unsigned: Option<UnsignedView<'a>>,
}

#[derive(Deserialize)]
struct UnsignedView<'a> {
    #[serde(default, borrow)]
    redacted_because: Option<&'a RawValue>,
}

/// What the homeserver says of a message someone redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// Served redacted, with who redacted it, when and why when readable.
    Redacted(Option<argus_domain::Redaction>),
    /// Served unredacted, or not served at all (unknown, or not visible to the account).
    NotRedacted,
}

/// Fetches `event` of `room` and tells whether the homeserver serves it redacted.
pub(crate) async fn confirm_redaction(
    client: &HttpClient,
    target: &Target<'_>,
    room: &OwnedRoomId,
    event: &str,
) -> Result<Confirmation> {
    let Ok(event) = OwnedEventId::try_from(event) else {
        return Ok(Confirmation::NotRedacted);
    };
    match client.send(target, endpoint::Request::new(room.clone(), event)).await {
        Ok(response) => Ok(confirmation_of(response.event.json().get())),
        // Unknown, not visible to the account, or refused: nothing is confirmed.
        Err(Error::NotFound | Error::Forbidden) => Ok(Confirmation::NotRedacted),
        Err(Error::Homeserver { status, .. }) if (400..500).contains(&status) => {
            Ok(Confirmation::NotRedacted)
        }
        Err(e) => Err(e),
    }
}

/// Reads the confirmation from an event's JSON; an unreadable event confirms nothing.
pub(crate) fn confirmation_of(json: &str) -> Confirmation {
    match serde_json::from_str::<EventView<'_>>(json) {
        Ok(EventView { unsigned: Some(UnsignedView { redacted_because: Some(because) }) }) => {
            Confirmation::Redacted(redaction_of(because))
        }
        _ => Confirmation::NotRedacted,
    }
}
