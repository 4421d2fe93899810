//! `GET /_matrix/client/v3/joined_rooms` — Client-Server API §"Room membership"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3joined_rooms)).
//!
//! The rooms the token's account has joined.

use ruma::{OwnedRoomId, api::client::membership::joined_rooms::v3 as endpoint};

use crate::{
    Result,
    transport::{HttpClient, Target},
};

/// The joined rooms, as the homeserver lists them.
pub(crate) async fn fetch(client: &HttpClient, target: &Target<'_>) -> Result<Vec<OwnedRoomId>> {
    Ok(client.send(target, endpoint::Request::new()).await?.joined_rooms)
}
