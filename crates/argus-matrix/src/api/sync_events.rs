//! `GET /_matrix/client/v3/sync` — Client-Server API §"Syncing"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync)).
//!
//! One long-poll of the account's rooms: what happened since `since` (everything, without it),
//! through a stored filter, held open by the homeserver up to `timeout` while nothing happens.
//! The account is not marked online (`set_presence=offline`) and only state changes are asked
//! for (`full_state=false`).

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

/// One `/sync` from `since` through the filter `filter_id`, held open up to `timeout`.
pub(crate) async fn fetch(
    client: &HttpClient,
    target: &Target<'_>,
    since: Option<String>,
    filter_id: Option<String>,
    timeout: Duration,
) -> Result<Response> {
    let mut request = endpoint::Request::new();
    request.since = since;
    request.filter = filter_id.map(Filter::FilterId);
    request.full_state = false;
    request.set_presence = PresenceState::Offline;
    request.timeout = Some(timeout);
    client.send(target, request).await
}
