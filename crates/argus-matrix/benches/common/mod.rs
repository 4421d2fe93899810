//! What the connector benchmarks share: a runtime, the test kit's mock homeserver serving the
//! benchmark room, and a connector allowed to reach it on loopback.

use argus_domain::{AccessToken, HomeserverUrl, RoomId};
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, HARD_MAX_MESSAGES, Session};
use argus_testkit::homeserver::{MockHomeserver, bench};

/// A bench's result.
pub(crate) type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Everything a read of the benchmark room needs.
pub(crate) struct Reader {
    /// Two worker threads, as the server runs.
    pub(crate) rt: tokio::runtime::Runtime,
    /// The mock homeserver.
    pub(crate) server: MockHomeserver,
    /// A session with it; any token: the mock does not check it.
    pub(crate) session: Session,
    /// The benchmark room.
    pub(crate) room: RoomId,
    /// A connector that may reach 127.0.0.1.
    pub(crate) connector: Connector,
    /// Read the whole room.
    pub(crate) options: FetchOptions,
}

/// A reader of `pages` pages of 1,000 events, served from prepared bytes when `prepared`, else
/// generated per request (so that the mock's own memory stays out of a measurement).
pub(crate) fn reader(pages: usize, prepared: bool) -> BenchResult<Reader> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (server, _) = rt.block_on(MockHomeserver::start_bench(pages, prepared));
    let homeserver: HomeserverUrl = server.uri().parse()?;
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?;
    Ok(Reader {
        rt,
        server,
        session: Session::with_token(homeserver, AccessToken::new("syt_bench_token")),
        room: bench::ROOM.parse()?,
        connector,
        options: FetchOptions { max_messages: HARD_MAX_MESSAGES, since: None, ..FetchOptions::default() },
    })
}
