//! `POST /_matrix/client/v3/refresh` — Client-Server API §"Refreshing access tokens"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3refresh)).
//!
//! Renews a homeserver-issued access token with its refresh token (spec v1.3). A refresh token
//! that answered is not sent again: a pair that could not be kept yet stays in memory and only
//! its storing is tried again (Synapse would otherwise replace the first successor).

use argus_domain::Secret;
use ruma::api::client::session::refresh_token::v3 as endpoint;

use crate::{
    Error, Result,
    session::TokenPair,
    transport::{HttpClient, Target},
};

/// A new pair from the homeserver; [`Error::TokenRefreshFailed`] when it refuses the refresh
/// token (unknown, used already, soft logout).
pub(crate) async fn renew(
    client: &HttpClient,
    target: &Target<'_>,
    refresh_token: &Secret,
) -> Result<TokenPair> {
    let request = endpoint::Request::new(refresh_token.expose_secret().to_owned());
    let versions = super::get_authorization_server_metadata::renewal_versions();
    match client.send_unauthenticated(target, request, &versions).await {
        Ok(answer) => Ok(TokenPair::renewed(
            answer.access_token,
            answer.refresh_token,
            refresh_token,
            answer.expires_in_ms,
        )),
        Err(Error::Unauthorized { .. } | Error::Forbidden) => Err(Error::refresh_failed(
            "the homeserver refused the refresh token (unknown, used already or revoked)",
        )),
        Err(Error::NotFound | Error::Homeserver { status: 404 | 405, .. }) => {
            Err(Error::refresh_failed("the homeserver does not renew tokens with a refresh token"))
        }
        Err(other) => Err(other),
    }
}
