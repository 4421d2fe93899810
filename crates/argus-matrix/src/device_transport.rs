//! How the account's end-to-end-encryption device reaches its homeserver
//! ([`DeviceTransport`], an [`argus_crypto::device::Transport`]): the requests the device's
//! machine builds (key uploads and queries, key claims, to-device messages, signature uploads),
//! sent under the same session, HTTP clients and outbound policy as every other call of the
//! connector. Only Client-Server API paths are sent; a refused token is renewed once like any
//! other call's; every other answer goes back to the machine whatever its status.

use std::time::Duration;

use argus_crypto::device::{HttpAnswer, HttpCall, Transport};

use crate::{Connector, Error, MAX_SYNC_RESPONSE_BYTES, Session, transport::RequestBounds};

/// The path prefix of every request a device may send: the Client-Server API.
pub const DEVICE_PATH_PREFIX: &str = "/_matrix/client/";

/// The longest a device's request may take, from connecting to its answer's last byte.
pub const DEVICE_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer a device's request accepts, in bytes: the sync bound (a key query for
/// the members of large rooms lists many devices).
pub const MAX_DEVICE_RESPONSE_BYTES: usize = MAX_SYNC_RESPONSE_BYTES;

/// The longest path and query a device may send, in bytes.
const MAX_PATH_LEN: usize = 8 * 1024;

/// The [`Transport`] of an account's device: its requests sent as the account, through the
/// connector's HTTP clients and outbound policy, with the account's [`Session`] (whose token
/// source renews its token). Cheap to clone.
///
/// Each request may take [`DEVICE_REQUEST_TIMEOUT`] and its answer [`MAX_DEVICE_RESPONSE_BYTES`];
/// network failures are retried like any call's within the connector's retry bounds.
#[derive(Debug, Clone)]
pub struct DeviceTransport {
    connector: Connector,
    session: Session,
}

impl DeviceTransport {
    /// The transport of the device of the account behind `session`, through `connector`.
    pub fn new(connector: &Connector, session: Session) -> Self {
        Self { connector: connector.clone(), session }
    }

    /// Sends `call`; the connector's own error when no answer was had.
    async fn exchange(&self, call: &HttpCall) -> crate::Result<HttpAnswer> {
        let method = match call.method {
            "GET" => http::Method::GET,
            "POST" => http::Method::POST,
            "PUT" => http::Method::PUT,
            _ => return Err(Error::InvalidInput("a device sends only GET, POST and PUT requests".into())),
        };
        let url = self.url(&call.path_and_query)?;
        let client = self.connector.http();
        let config = &client.config;
        let bounds =
            RequestBounds { timeout: DEVICE_REQUEST_TIMEOUT, max_response_bytes: MAX_DEVICE_RESPONSE_BYTES };
        let within = DEVICE_REQUEST_TIMEOUT + config.run_deadline.max(config.request_timeout);
        let target = client.target_with(&self.session, within, bounds)?;
        let response = client.send_authorised_raw(&target, method, &url, &call.body).await?;
        Ok(HttpAnswer { status: response.status().as_u16(), body: response.into_body() })
    }

    /// The URL of `path_and_query` on the session's homeserver: refused unless it stays a
    /// Client-Server API path of that homeserver once resolved (no `..` or encoded dots
    /// leading elsewhere, no fragment, no control characters).
    fn url(&self, path_and_query: &str) -> crate::Result<url::Url> {
        let refused = || {
            Error::InvalidInput(format!(
                "a device may send only requests to paths under {DEVICE_PATH_PREFIX}"
            ))
        };
        if !path_and_query.starts_with(DEVICE_PATH_PREFIX)
            || path_and_query.len() > MAX_PATH_LEN
            || path_and_query.contains('#')
            || path_and_query.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(refused());
        }
        let base = self.session.homeserver().url();
        let prefix = format!("{}{DEVICE_PATH_PREFIX}", base.path().trim_end_matches('/'));
        let url = url::Url::parse(&format!("{}{path_and_query}", base.as_str().trim_end_matches('/')))
            .map_err(|_| refused())?;
        if url.origin() != base.origin() || !url.path().starts_with(&prefix) || url.fragment().is_some() {
            return Err(refused());
        }
        Ok(url)
    }
}

#[async_trait::async_trait]
impl Transport for DeviceTransport {
    async fn send(&self, call: HttpCall) -> argus_crypto::Result<HttpAnswer> {
        self.exchange(&call).await.map_err(|e| {
            tracing::warn!(code = e.code(), method = call.method, "a request of the account's device failed");
            argus_crypto::Error::DeviceTransport(e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use argus_domain::AccessToken;

    use super::*;

    #[test]
    fn only_client_server_paths_of_the_homeserver_are_sent() {
        let connector = Connector::new(crate::ConnectorConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let homeserver = "https://matrix.a.fr".parse().unwrap_or_else(|e| panic!("{e}"));
        let transport =
            DeviceTransport::new(&connector, Session::with_token(homeserver, AccessToken::new("t")));
        let url = transport.url("/_matrix/client/v3/keys/query?x=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.as_str(), "https://matrix.a.fr/_matrix/client/v3/keys/query?x=1");
        for refused in [
            "/_matrix/media/v3/upload",
            "/_matrix/client/../media/v3/config",
            "/_matrix/client/%2e%2e/federation/v1/version",
            "/_matrix/client/v3/keys/query#f",
            "/_matrix/client/v3/keys query",
            "/_synapse/admin/v1/users",
            "//evil.example/_matrix/client/v3",
            "/_matrix/clientx/v3",
        ] {
            let err = transport.url(refused).unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT", "{refused}");
        }
    }
}
