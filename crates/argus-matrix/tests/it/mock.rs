//! The testkit's mock homeserver ([`argus_testkit::homeserver`]) with the connector's types:
//! a configuration allowing it, a connector, the test token and room, and its URL as a
//! [`HomeserverUrl`]. Everything else (the endpoint-mock builders `hs.messages(room)`,
//! `hs.state(room)`, the request counts, the wiremock server) comes from the testkit type.

use std::{ops::Deref, time::Duration};

use argus_domain::{AccessToken, HomeserverUrl, RoomId, RoomSnapshot};
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, Session};
use argus_testkit::homeserver;
pub(crate) use argus_testkit::homeserver::{ROOM, TOKEN, ev};
use wiremock::ResponseTemplate;

/// A mock homeserver (derefs to [`homeserver::MockHomeserver`]).
pub(crate) struct MockHomeserver(homeserver::MockHomeserver);

impl Deref for MockHomeserver {
    type Target = homeserver::MockHomeserver;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl MockHomeserver {
    pub(crate) async fn start() -> Self {
        Self(homeserver::MockHomeserver::start().await)
    }

    /// The homeserver URL (plain http on 127.0.0.1).
    pub(crate) fn url(&self) -> HomeserverUrl {
        self.uri().parse().unwrap_or_else(|e| panic!("mock url: {e}"))
    }

    /// A configuration that exempts 127.0.0.1 and keeps retries and waits short.
    pub(crate) fn config() -> ConnectorConfig {
        ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            run_deadline: Duration::from_secs(20),
            max_retries: 3,
            max_retry_wait: Duration::from_secs(2),
            ..ConnectorConfig::default()
        }
    }

    /// A connector with [`MockHomeserver::config`].
    pub(crate) fn connector() -> Connector {
        Connector::new(Self::config()).unwrap_or_else(|e| panic!("connector: {e}"))
    }

    /// The token the endpoint mocks require.
    pub(crate) fn token() -> AccessToken {
        AccessToken::new(TOKEN)
    }

    /// [`ROOM`] as a room id.
    pub(crate) fn room() -> RoomId {
        ROOM.parse().unwrap_or_else(|e| panic!("room: {e}"))
    }

    /// A homeserver with an empty room state whose `/messages` answers `response` every time.
    pub(crate) async fn with_messages_response(response: ResponseTemplate) -> Self {
        Self(homeserver::MockHomeserver::with_messages_response(response).await)
    }

    /// A session with this homeserver and the test token.
    pub(crate) fn session(&self) -> Session {
        Session::with_token(self.url(), Self::token())
    }

    /// Reads [`ROOM`] from this homeserver with `connector`, the test token and default options.
    pub(crate) async fn read_with(&self, connector: &Connector) -> argus_matrix::Result<RoomSnapshot> {
        connector.fetch_room(&self.session(), &Self::room(), &FetchOptions::default()).await
    }
}
