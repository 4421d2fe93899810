//! `GET /_matrix/client/v1/auth_metadata` — Client-Server API §"OAuth 2.0 API", server metadata
//! discovery ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1auth_metadata)).
//!
//! Tells whether the homeserver's accounts are those of a next-generation auth server (spec
//! v1.15, MSC3861), and where its token endpoint is: a homeserver that does not know the route
//! (404, `M_UNRECOGNIZED`) issues its tokens itself.

use std::collections::BTreeSet;

use ruma::api::{
    MatrixVersion, SupportedVersions, client::discovery::get_authorization_server_metadata::v1 as endpoint,
};
use url::Url;

use crate::{
    Error, Result,
    transport::{HttpClient, Target},
};

/// The versions whose paths the renewal calls use (`/v3/refresh` is v1.3, `auth_metadata` v1.15).
pub(crate) fn renewal_versions() -> SupportedVersions {
    SupportedVersions {
        versions: BTreeSet::from([MatrixVersion::V1_1, MatrixVersion::V1_3, MatrixVersion::V1_15]),
        features: Default::default(),
    }
}

/// Refuses a token endpoint that is not on its issuer's origin, or not `https` when the
/// homeserver is (plain `http` only reaches addresses on the operator's exception list, as for
/// homeservers). A refresh token is sent there: the metadata must not send it elsewhere.
fn check_endpoint(endpoint: &Url, issuer: &Url, target: &Target<'_>) -> Result<()> {
    if endpoint.origin() != issuer.origin() {
        return Err(Error::policy("the auth server's token endpoint is not on its issuer's origin"));
    }
    let homeserver_https = target.session.homeserver().url().scheme() == "https";
    if endpoint.scheme() != "https" && (homeserver_https || endpoint.scheme() != "http") {
        return Err(Error::policy("the auth server's token endpoint is not https"));
    }
    Ok(())
}

/// The auth server's token endpoint (on its issuer's origin), or `None` when the homeserver
/// issues its tokens itself.
pub(crate) async fn token_endpoint(client: &HttpClient, target: &Target<'_>) -> Result<Option<Url>> {
    match client.send_unauthenticated(target, endpoint::Request::new(), &renewal_versions()).await {
        Ok(answer) => {
            let endpoint: Option<Url> = answer
                .metadata
                .get_field("token_endpoint")
                .map_err(|_| Error::malformed("the auth server's metadata has no valid token_endpoint"))?;
            let endpoint = endpoint
                .ok_or_else(|| Error::malformed("the auth server's metadata has no token_endpoint"))?;
            let issuer: Option<Url> = answer
                .metadata
                .get_field("issuer")
                .map_err(|_| Error::malformed("the auth server's metadata has no valid issuer"))?;
            let issuer =
                issuer.ok_or_else(|| Error::malformed("the auth server's metadata has no issuer"))?;
            check_endpoint(&endpoint, &issuer, target)?;
            Ok(Some(endpoint))
        }
        Err(Error::NotFound | Error::Homeserver { status: 404 | 405, .. }) => Ok(None),
        Err(Error::Homeserver { errcode: Some(code), .. }) if code == "M_UNRECOGNIZED" => Ok(None),
        Err(other) => Err(other),
    }
}
