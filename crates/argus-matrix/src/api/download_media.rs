//! `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}` — Client-Server API
//! §"Content repository" ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid)),
//! and the legacy `GET /_matrix/media/v3/download/{serverName}/{mediaId}` of homeservers
//! without authenticated media (sent with the token in the header all the same).

use argus_domain::MxcUri;

use crate::{
    Result,
    media::{MediaRequest, homeserver_url},
    transport::Target,
};

/// The download of `uri` from the session's homeserver, by the authenticated route or the
/// legacy one.
pub(crate) fn request(
    target: &Target<'_>,
    uri: &MxcUri,
    authenticated: bool,
    cap: u64,
) -> Result<MediaRequest> {
    let (server, media) = (uri.server_name(), uri.media_id());
    if authenticated {
        let url = homeserver_url(target, &["_matrix", "client", "v1", "media", "download", server, media])?;
        return Ok(MediaRequest::get(url, cap));
    }
    let mut url = homeserver_url(target, &["_matrix", "media", "v3", "download", server, media])?;
    url.query_pairs_mut().append_pair("allow_redirect", "true");
    Ok(MediaRequest::get(url, cap))
}
