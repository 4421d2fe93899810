//! Operator configuration of the connector and per-read options.

use std::time::Duration;

/// Hard cap on `max_messages` that the API layer enforces; larger values are refused.
pub const HARD_MAX_MESSAGES: u32 = 100_000;

/// Messages read when the caller does not say how many.
pub const DEFAULT_MAX_MESSAGES: u32 = 1_000;

/// Pages per batch of a streamed read when the caller does not say.
pub const DEFAULT_BATCH_PAGES: u32 = 5;

/// Largest `limit` the connector asks `/messages` for.
pub(crate) const MAX_PAGE_SIZE: u32 = 1_000;

/// How the connector reaches homeservers: outbound policy, timeouts, caps and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// Hosts the connector may reach (`matrix.agent.tchap.gouv.fr`, or `host:port`); empty means
    /// any host whose addresses are public.
    pub allowed_homeservers: Vec<String>,
    /// IP addresses or CIDR ranges exempt from the blocklist of private and reserved ranges
    /// (e.g. `"127.0.0.1"`, `"10.1.0.0/16"` for an on-premises homeserver). A homeserver whose
    /// addresses are all exempt may also be reached over plain `http`.
    pub allow_private_addresses: Vec<String>,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one request, from connecting to the last byte of the body.
    pub request_timeout: Duration,
    /// Time allowed for a whole read of a room, retries and waits included.
    pub run_deadline: Duration,
    /// Time allowed for a whole streamed read (`stream_room`), which commits as it goes: it only
    /// bounds a run that never ends.
    pub stream_deadline: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Most `/messages` pages read in one run.
    pub max_pages: u32,
    /// Events asked for per `/messages` page (at most 1000).
    pub page_size: u32,
    /// Retries of one request after a rate limit, a server error or a network failure.
    pub max_retries: u32,
    /// Longest single wait before a retry, whatever the homeserver asks for.
    pub max_retry_wait: Duration,
    /// Most timeline events of every kind (messages, edits, redactions, state, reactions) one
    /// run reads; a run is also held to [`EVENTS_PER_MESSAGE`] times its `max_messages` (plus
    /// one page). Past either, the run fails with `LIMIT_EXCEEDED`.
    pub max_events: u64,
    /// Most bytes of timeline events held at once: by one read (`fetch_room`), or by one batch
    /// of a streamed read (`stream_room`); past it, the run fails with `LIMIT_EXCEEDED`.
    pub max_bytes: u64,
    /// Where files are fetched from ([`crate::Connector::download_media`]).
    pub media_route: MediaRoute,
    /// Longest wait for the next bytes of a file's body; past it the download ends with
    /// `MEDIA_STALLED`.
    pub media_idle_timeout: Duration,
    /// Slowest average a file's body may come at, in bytes per second, once
    /// [`ConnectorConfig::media_rate_grace`] has passed (0: no minimum): a body dribbled slower
    /// ends with `MEDIA_STALLED` instead of holding a download for days. Measured from the
    /// answer's head, so a consumer much slower than it (it reads the stream) counts too.
    pub media_min_rate: u64,
    /// Time a file's body has before its minimum rate applies (slow starts, small files).
    pub media_rate_grace: Duration,
    /// Server names of homeservers for people outside government (Tchap's
    /// `agent.externe.tchap.gouv.fr`): a room's joined members whose user id is on one of them
    /// are counted as external.
    pub external_homeservers: Vec<String>,
    /// The identity server that tells which homeserver an e-mail address belongs to
    /// (`GET {identity_server}/_matrix/identity/api/v1/info?medium=email&address=…`, as Tchap
    /// clients ask it), e.g. `https://matrix.agent.tchap.gouv.fr`; unset, an e-mail address
    /// given as an account is refused with `IDENTITY_SERVER_UNSET`. Reached under the outbound
    /// policy (addresses, plain `http` only to exempt ones), not the homeservers' allow-list.
    pub identity_server: Option<String>,
}

/// The external homeservers when the configuration names none: Tchap's homeserver for people
/// outside government.
pub const DEFAULT_EXTERNAL_HOMESERVERS: &[&str] = &["agent.externe.tchap.gouv.fr"];

/// Where files are fetched from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MediaRoute {
    /// The session's homeserver: the authenticated media route (`/_matrix/client/v1/media/…`),
    /// or the legacy one on a homeserver without it.
    #[default]
    Homeserver,
    /// Element's Matrix Content Scanner, which fetches from the homeserver, scans and answers
    /// the file's bytes (the ciphertext of an encrypted file) or a refusal
    /// (`MCS_MEDIA_NOT_CLEAN`, `MCS_MIME_TYPE_FORBIDDEN`). Reached under the same outbound
    /// policy as homeservers, with the session's token.
    ContentScanner {
        /// The scanner's base URL (the routes are `{base}/_matrix/media_proxy/unstable/…`).
        base_url: url::Url,
    },
}

/// Timeline events a run may read for each message it may return: edits, redactions,
/// reactions and state events count against the run too, so a homeserver cannot make a run of
/// a thousand messages read an unbounded number of other events.
pub const EVENTS_PER_MESSAGE: u64 = 4;

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            allowed_homeservers: Vec::new(),
            allow_private_addresses: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            run_deadline: Duration::from_secs(120),
            stream_deadline: Duration::from_secs(3600),
            max_response_bytes: 16 * 1024 * 1024,
            max_pages: 20_000,
            page_size: MAX_PAGE_SIZE,
            max_retries: 5,
            max_retry_wait: Duration::from_secs(30),
            max_events: 4 * u64::from(crate::HARD_MAX_STREAMED_MESSAGES),
            max_bytes: 512 * 1024 * 1024,
            media_route: MediaRoute::Homeserver,
            media_idle_timeout: Duration::from_secs(30),
            media_min_rate: 16 * 1024,
            media_rate_grace: Duration::from_secs(60),
            external_homeservers: DEFAULT_EXTERNAL_HOMESERVERS.iter().map(|s| (*s).to_owned()).collect(),
            identity_server: None,
        }
    }
}

/// Options of one read of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Most messages to return (1 to [`HARD_MAX_MESSAGES`]); a backwards read keeps the newest.
    pub max_messages: u32,
    /// The resume token of an earlier snapshot: only events after it are read (`dir=f`).
    pub since: Option<String>,
    /// A backfill: read older history backwards from this token (the position an earlier
    /// backwards read stopped at). Excludes `since`.
    pub backfill_from: Option<String>,
    /// Pages per batch of a streamed read ([`crate::Connector::stream_room`]): each batch is
    /// handed over, and committed, on its own, so memory is bounded by it.
    pub batch_pages: u32,
    /// A start date: a read backwards (from the live end or `backfill_from`) stops at the first
    /// event sent at or after it (`timestamp_to_event`, inclusive), its history then complete
    /// since that date. Ignored by a forward read (`since`), which reads only newer events.
    pub start_at: Option<time::OffsetDateTime>,
    /// A forward read (`since`) stops after this event, kept (the account's own departure from
    /// the room: what the homeserver serves past it is not read). Ignored by other reads.
    pub stop_after: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            max_messages: DEFAULT_MAX_MESSAGES,
            since: None,
            backfill_from: None,
            batch_pages: DEFAULT_BATCH_PAGES,
            start_at: None,
            stop_after: None,
        }
    }
}
