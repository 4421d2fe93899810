//! `GET /_matrix/client/v3/user/{userId}/account_data/{type}` — Client-Server API §"Client
//! config" ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3useruseridaccount_datatype)).
//!
//! Reads one global account data event of the account: where secret storage keeps its default
//! key, the descriptions of its keys and the secrets themselves.

use ruma::{OwnedUserId, api::client::config::get_global_account_data::v3 as endpoint};

use crate::{
    Result,
    transport::{HttpClient, Target},
};

/// The content of the account data `kind` of `user`, as JSON text ([`crate::Error::NotFound`]
/// when the account has none).
pub(crate) async fn fetch(
    client: &HttpClient,
    target: &Target<'_>,
    user: &OwnedUserId,
    kind: &str,
) -> Result<String> {
    let request = endpoint::Request::new(user.clone(), kind.into());
    Ok(client.send(target, request).await?.account_data.json().get().to_owned())
}
