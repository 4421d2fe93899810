//! `[oauth]`: the client that obtains tokens from the identity provider.

use serde::Deserialize;

use argus_domain::Secret;

use super::forms::{scalar_string, string_or_list};
use crate::{Error, Result};

/// An OAuth 2.0 client registered at the identity provider, used by operators and scripts to
/// obtain bearer tokens with the client-credentials grant (RFC 6749 §4.4) when a real signing key
/// is configured and development tokens are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthClientConfig {
    /// The identity provider's token endpoint.
    pub token_url: Option<String>,
    /// The client id.
    #[serde(deserialize_with = "scalar_string")]
    pub client_id: String,
    /// The client secret (prefer `ARGUS_OAUTH_CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// Scopes requested when none are named on the command line.
    #[serde(deserialize_with = "string_or_list")]
    pub scopes: Vec<String>,
}

impl OAuthClientConfig {
    /// Checks what typing alone cannot.
    pub(super) fn validate(&self) -> Result<()> {
        if let Some(url) = &self.token_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Error::Config("oauth.token_url must be an http(s) URL".into()));
            }
            if self.client_id.is_empty() {
                return Err(Error::Config("oauth.client_id is required with oauth.token_url".into()));
            }
        }
        Ok(())
    }
}
