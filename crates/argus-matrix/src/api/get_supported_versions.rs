//! `GET /_matrix/client/versions` — Client-Server API §"API standards, supported versions"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientversions)).
//!
//! Tells whether the homeserver has the authenticated media routes: spec v1.11 or later, or
//! `org.matrix.msc3916.stable` among its unstable features.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{
    Result,
    media::get_json,
    transport::{HttpClient, Target},
};

#[derive(Deserialize)]
struct Versions {
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    unstable_features: BTreeMap<String, serde_json::Value>,
}

/// Whether the homeserver serves authenticated media (`/_matrix/client/v1/media/…`).
pub(crate) async fn has_authenticated_media(client: &HttpClient, target: &Target<'_>) -> Result<bool> {
    let url = crate::media::homeserver_url(target, &["_matrix", "client", "versions"])?;
    let answer: Versions = get_json(client, target, url).await?;
    Ok(answer.versions.iter().any(|v| at_least_1_11(v))
        || answer.unstable_features.get("org.matrix.msc3916.stable") == Some(&serde_json::Value::Bool(true)))
}

/// Whether a version string (`v1.11`, `v2.0`) is v1.11 or later; anything else is not.
fn at_least_1_11(version: &str) -> bool {
    let Some((major, minor)) = version.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    match (major.parse::<u32>(), minor.parse::<u32>()) {
        (Ok(major), Ok(minor)) => major > 1 || (major == 1 && minor >= 11),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_from_1_11_have_authenticated_media() {
        for (v, yes) in [
            ("v1.11", true),
            ("v1.12", true),
            ("v2.0", true),
            ("v1.10", false),
            ("r0.6.1", false),
            ("v1", false),
        ] {
            assert_eq!(super::at_least_1_11(v), yes, "{v}");
        }
    }
}
