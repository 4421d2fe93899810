//! `GET /_matrix/client/v3/account/whoami` — Client-Server API §"Current account information"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3accountwhoami)).
//!
//! The account the session's token belongs to: the owner of the account data read next.

use ruma::{OwnedUserId, api::client::account::whoami::v3 as endpoint};

use crate::{
    Result,
    transport::{HttpClient, Target},
};

/// The user id of the token's account.
pub(crate) async fn fetch(client: &HttpClient, target: &Target<'_>) -> Result<OwnedUserId> {
    Ok(client.send(target, endpoint::Request::new()).await?.user_id)
}

/// The user id of the token's account and the device the token belongs to.
pub(crate) async fn fetch_with_device(
    client: &HttpClient,
    target: &Target<'_>,
) -> Result<(OwnedUserId, Option<String>)> {
    let answer = client.send(target, endpoint::Request::new()).await?;
    Ok((answer.user_id, answer.device_id.map(|d| d.to_string())))
}
