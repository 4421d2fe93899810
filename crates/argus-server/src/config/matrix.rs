//! `[matrix]`: the connector's outbound policy and the admission of ingestions.

use serde::Deserialize;

use super::forms::string_or_list;

/// The Matrix connector's outbound policy and limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatrixConfig {
    /// Homeservers ingestions may reach; empty = any public host.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_homeservers: Vec<String>,
    /// Private addresses (IPs or CIDR ranges) that may be reached anyway, e.g. `127.0.0.1`.
    #[serde(deserialize_with = "string_or_list")]
    pub allow_private_addresses: Vec<String>,
    /// Server names of homeservers for people outside government: a room's joined members whose
    /// user id is on one of them are counted in its `externalMemberCount`. Default
    /// `["agent.externe.tchap.gouv.fr"]`.
    #[serde(deserialize_with = "string_or_list")]
    pub external_homeservers: Vec<String>,
    /// The identity server that tells an e-mail address's homeserver (`GET
    /// /_matrix/identity/api/v1/info`), e.g. `https://matrix.agent.tchap.gouv.fr`; unset, an
    /// e-mail address given as an account is refused with `IDENTITY_SERVER_UNSET`.
    pub identity_server: Option<String>,
    /// Ingestions running at once on this server; more are refused with `BUSY`.
    pub max_concurrent_ingestions: usize,
    /// Ingestions running at once against one homeserver; more are refused with `BUSY`.
    pub max_concurrent_per_homeserver: usize,
    /// Ingestions one caller may have running at once; more are refused with `CALLER_BUSY`.
    pub max_concurrent_per_caller: usize,
    /// Ingestions (and watches) one caller may start per minute; more are refused with
    /// `TOO_MANY_REQUESTS`. Every room of a joined-rooms call counts.
    pub ingestions_per_caller_per_minute: u32,
    /// Seconds an ingestion run holds its journal row without committing a batch; past it (its
    /// process died), another process audits the run as interrupted.
    pub run_lease_secs: u64,
    /// Seconds one ingestion run may take in all (it commits as it goes: this only bounds a
    /// run that never ends; the rest of a room is read by the next run).
    pub run_deadline_secs: u64,
    /// Seconds one run of a call (the API, the CLI) may read in all; past it the run stops,
    /// keeps what it stored and is audited `DEADLINE_EXCEEDED` (scheduled runs have
    /// `run_deadline_secs`).
    pub interactive_run_deadline_secs: u64,
    /// Rooms one joined-rooms call ingests at most; the others are reported `TOO_MANY_ROOMS`.
    pub joined_rooms_per_call: u32,
    /// Failures of one joined-rooms call audited one by one; past them, rooms the token cannot
    /// read are counted in one audit record of the call.
    pub joined_failures_recorded: u32,
}

impl Default for MatrixConfig {
    fn default() -> Self {
        let admission = argus_graphql::AdmissionLimits::default();
        let limits = argus_ingest::Limits::default();
        Self {
            allowed_homeservers: Vec::new(),
            allow_private_addresses: Vec::new(),
            external_homeservers: argus_matrix::DEFAULT_EXTERNAL_HOMESERVERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            identity_server: None,
            max_concurrent_ingestions: admission.max_concurrent,
            max_concurrent_per_homeserver: admission.max_concurrent_per_homeserver,
            max_concurrent_per_caller: admission.max_concurrent_per_caller,
            ingestions_per_caller_per_minute: admission.per_caller_per_minute,
            run_lease_secs: limits.run_lease.as_secs(),
            run_deadline_secs: argus_matrix::ConnectorConfig::default().stream_deadline.as_secs(),
            interactive_run_deadline_secs: limits.interactive_run_deadline.as_secs(),
            joined_rooms_per_call: limits.joined_rooms_per_call,
            joined_failures_recorded: limits.joined_failures_recorded,
        }
    }
}
