//! `GET /_matrix/client/v1/media/config` — Client-Server API §"Content repository"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediaconfig)),
//! or the legacy `GET /_matrix/media/v3/config` on a homeserver without authenticated media.
//!
//! The homeserver's upload cap (`m.upload.size`): no file it holds is larger.

use serde::Deserialize;

use crate::{
    Error, Result,
    media::{get_json, homeserver_url},
    transport::{HttpClient, Target},
};

#[derive(Deserialize)]
struct Config {
    #[serde(default, rename = "m.upload.size")]
    upload_size: Option<serde_json::Value>,
}

/// The homeserver's `m.upload.size`, if it says; a homeserver that does not answer this call
/// (a 4xx) says nothing.
pub(crate) async fn upload_size(
    client: &HttpClient,
    target: &Target<'_>,
    authenticated: bool,
) -> Result<Option<u64>> {
    let path: &[&str] = if authenticated {
        &["_matrix", "client", "v1", "media", "config"]
    } else {
        &["_matrix", "media", "v3", "config"]
    };
    match get_json::<Config>(client, target, homeserver_url(target, path)?).await {
        Ok(config) => Ok(config.upload_size.and_then(|v| v.as_u64())),
        Err(Error::MediaNotFound | Error::Forbidden) => Ok(None),
        Err(Error::Homeserver { status, .. }) if (400..500).contains(&status) => Ok(None),
        Err(e) => Err(e),
    }
}
