//! `GET /_matrix/client/v3/sync` — Client-Server API §"Syncing"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync)).
//!
//! One long-poll of the account's rooms: what happened since `since` (everything, without it),
//! through a stored filter, held open by the homeserver up to `timeout` while nothing happens.
//! The account is not marked online (`set_presence=offline`) and only state changes are asked
//! for (`full_state=false`). The unused fallback key types are also read under their unstable
//! name (`org.matrix.msc2732.device_unused_fallback_key_types`, MSC2732) when the stable one is
//! absent.

use std::time::Duration;

use ruma::{
    api::client::sync::sync_events::v3::{self as endpoint, Filter},
    presence::PresenceState,
};

use crate::{
    Result,
    transport::{HttpClient, Target},
};

pub(crate) use endpoint::Response;

/// What the answer says under unstable names only.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Unstable {
    /// `org.matrix.msc2732.device_unused_fallback_key_types`.
    #[serde(default, rename = "org.matrix.msc2732.device_unused_fallback_key_types")]
    pub(crate) unused_fallback_key_types: Option<Vec<String>>,
}

/// One `/sync` from `since` through the filter `filter_id`, held open up to `timeout`; with
/// what the answer says under unstable names (read only when the stable names are absent).
pub(crate) async fn fetch(
    client: &HttpClient,
    target: &Target<'_>,
    since: Option<String>,
    filter_id: Option<String>,
    timeout: Duration,
) -> Result<(Response, Unstable)> {
    let mut request = endpoint::Request::new();
    request.since = since;
    request.filter = filter_id.map(Filter::FilterId);
    request.full_state = false;
    request.set_presence = PresenceState::Offline;
    request.timeout = Some(timeout);
    client.send_reading(target, request, unstable).await
}

/// The unstable fields of `body` that `response` lacks under their stable names (a second,
/// skimming pass over the body: only when needed and only for the homeservers that still send
/// the unstable names alone).
fn unstable(response: &Response, body: &[u8]) -> Unstable {
    // Synapse sends both names: the body is skimmed again only for a homeserver that does not.
    if response.device_unused_fallback_key_types.is_some() {
        return Unstable::default();
    }
    serde_json::from_slice(body).unwrap_or_default()
}
