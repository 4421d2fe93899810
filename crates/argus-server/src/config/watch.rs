//! `[watch]`: watched rooms, the scheduler that keeps them current, and the keys that seal their
//! tokens.

use std::{path::Path, path::PathBuf, time::Duration};

use serde::Deserialize;

use argus_domain::Secret;
use argus_ingest::{TokenKey, TokenKeys, WatchLimits, live::LiveOptions, scheduler::SchedulerOptions};

use super::{
    forms::paths_or_list,
    key::{Encoding, KeyMaterial},
};
use crate::{Error, Result};

/// The name of the file, in the data directory, holding the generated key that seals watched
/// rooms' tokens when `watch.token_key` / `watch.token_key_file` is not configured.
pub const WATCH_KEY_FILE: &str = "argus-tchap.watch-key";

/// The key that seals watched rooms' tokens: base64, 32 bytes, generated when not configured.
const TOKEN_KEY: KeyMaterial = KeyMaterial {
    name: "watch.token_key",
    file_key: "watch.token_key_file",
    encoding: Encoding::Base64,
    min_len: 32,
    max_len: 32,
    generated: Some(WATCH_KEY_FILE),
};

/// An earlier key, given by file only.
const PREVIOUS_TOKEN_KEY: KeyMaterial = KeyMaterial {
    name: "watch.previous_token_key_files",
    file_key: "watch.previous_token_key_files",
    generated: None,
    ..TOKEN_KEY
};

/// Watched rooms (`watchTchapRoom`) and the scheduler inside `serve`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Run the scheduler inside `serve` (every replica may: they share the due watches).
    pub scheduler: bool,
    /// A file holding the key that seals watched rooms' Matrix tokens, base64 (32 bytes once
    /// decoded). Default: generated in the data directory.
    pub token_key_file: Option<PathBuf>,
    /// The key itself, base64 (for the environment: `ARGUS_WATCH_TOKEN_KEY`).
    pub token_key: Option<Secret>,
    /// Earlier keys, still opening what they sealed until `argus-tchap keys rotate` re-sealed
    /// every token under the current one.
    #[serde(deserialize_with = "paths_or_list")]
    pub previous_token_key_files: Vec<PathBuf>,
    /// The shortest interval a watch may have, in seconds.
    pub min_interval_secs: u32,
    /// Seconds between the scheduler's cycles.
    pub tick_secs: u64,
    /// Scheduled runs at once against one homeserver.
    pub per_homeserver_concurrency: usize,
    /// Scheduled runs at once in all.
    pub max_concurrent: usize,
    /// Seconds a replica holds a claimed watch; past it (the replica died), another takes it.
    pub lease_secs: u64,
    /// Messages one scheduled run reads at most.
    pub max_messages_per_run: u32,
    /// Watches one owner may have; more are refused with `TOO_MANY_WATCHES`.
    pub max_per_owner: u32,
    /// Watches of one organisation, counted over those the caller may see; more are refused
    /// with `TOO_MANY_WATCHES`.
    pub max_per_organisation: u32,
    /// Run the live loops of watched accounts (`watchTchapAccount`) inside `serve`, beside the
    /// scheduler (every replica may: each account's loop runs on one at a time).
    pub live: bool,
    /// Seconds an account's loop holds its lease without renewing it (renewed every third of
    /// it); past it (the replica died), another replica takes the loop over.
    pub live_lease_secs: u64,
    /// Account loops one replica runs at most.
    pub live_max_loops: usize,
    /// Rooms of one account read at once after each answer of its `/sync`.
    pub live_room_concurrency: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        let options = SchedulerOptions::default();
        let limits = WatchLimits::default();
        let live = LiveOptions::default();
        Self {
            scheduler: true,
            token_key_file: None,
            token_key: None,
            previous_token_key_files: Vec::new(),
            min_interval_secs: limits.min_interval_secs,
            tick_secs: options.tick.as_secs(),
            per_homeserver_concurrency: options.per_homeserver,
            max_concurrent: options.max_concurrent,
            lease_secs: options.lease.as_secs(),
            max_messages_per_run: options.max_messages_per_run,
            max_per_owner: limits.max_per_owner,
            max_per_organisation: limits.max_per_org,
            live: true,
            live_lease_secs: live.lease.as_secs(),
            live_max_loops: live.max_loops,
            live_room_concurrency: live.room_concurrency,
        }
    }
}

impl WatchConfig {
    /// The scheduler's options.
    pub fn scheduler_options(&self) -> SchedulerOptions {
        SchedulerOptions {
            tick: Duration::from_secs(self.tick_secs.max(1)),
            lease: Duration::from_secs(self.lease_secs.max(10)),
            per_homeserver: self.per_homeserver_concurrency.max(1),
            max_concurrent: self.max_concurrent.max(1),
            max_messages_per_run: self.max_messages_per_run.max(1),
            ..SchedulerOptions::default()
        }
    }

    /// The live loops' options (their tick is the scheduler's).
    pub fn live_options(&self) -> LiveOptions {
        LiveOptions {
            tick: Duration::from_secs(self.tick_secs.max(1)),
            lease: Duration::from_secs(self.live_lease_secs.max(3)),
            max_loops: self.live_max_loops.max(1),
            room_concurrency: self.live_room_concurrency.max(1),
            max_messages_per_run: self.max_messages_per_run.max(1),
            max_concurrent_reads: self.max_concurrent.max(1),
            per_homeserver: self.per_homeserver_concurrency.max(1),
            ..LiveOptions::default()
        }
    }

    /// The current key (configured, or generated in `data_dir`) and the previous ones.
    pub(super) fn token_keys(&self, data_dir: &Path) -> Result<TokenKeys> {
        let key = |bytes: Vec<u8>| {
            TokenKey::new(&bytes).map_err(|_| Error::Config("watch.token_key must hold 32 bytes".into()))
        };
        let current = key(TOKEN_KEY.resolve_bytes(
            self.token_key.as_ref(),
            self.token_key_file.as_deref(),
            data_dir,
        )?)?;
        let previous = self
            .previous_token_key_files
            .iter()
            .map(|file| PREVIOUS_TOKEN_KEY.resolve_bytes(None, Some(file), data_dir).and_then(key))
            .collect::<Result<Vec<_>>>()?;
        Ok(TokenKeys::new(current, previous))
    }
}
