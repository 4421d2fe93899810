//! Admission of ingestions: a bound on ingestions running at once, in all, per homeserver and
//! per caller, and a rate limit per caller (which watch creation shares). A refused call gets a
//! clear error; it is counted and logged, not appended to the permanent audit trail (one caller
//! could otherwise fill the trail with refusals).

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

use argus_domain::Viewer;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Error, Result};

/// How many ingestions may run, and how often one caller may start one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Ingestions running at once on this server.
    pub max_concurrent: usize,
    /// Ingestions running at once against one homeserver.
    pub max_concurrent_per_homeserver: usize,
    /// Ingestions one caller may have running at once, so that one caller cannot take every
    /// place.
    pub max_concurrent_per_caller: usize,
    /// Ingestions one caller (JWT `sub` within its organisation) may start per minute.
    pub per_caller_per_minute: u32,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 8,
            max_concurrent_per_homeserver: 4,
            max_concurrent_per_caller: 2,
            per_caller_per_minute: 60,
        }
    }
}

/// Homeservers, or callers, tracked at once; past it, idle entries are dropped.
const MAX_TRACKED_KEYS: usize = 1_024;

/// The admission state shared by every request.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    global: Arc<Semaphore>,
    per_homeserver: Places,
    per_caller: Places,
    rate: DefaultKeyedRateLimiter<String>,
}

/// Held while an admitted ingestion runs.
#[derive(Debug)]
pub struct Admitted {
    _caller: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
    _homeserver: OwnedSemaphorePermit,
}

impl Admission {
    /// Admission under `limits` (a zero limit is taken as one, a limit past what a semaphore
    /// holds as that).
    pub fn new(limits: AdmissionLimits) -> Self {
        let per_minute = NonZeroU32::new(limits.per_caller_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limits,
            global: Arc::new(Semaphore::new(limits.max_concurrent.clamp(1, Semaphore::MAX_PERMITS))),
            per_homeserver: Places::new(limits.max_concurrent_per_homeserver),
            per_caller: Places::new(limits.max_concurrent_per_caller),
            rate: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// The key under which `viewer`'s calls are counted and their places held: their `sub`
    /// within their organisation.
    pub fn caller_of(viewer: &Viewer) -> String {
        format!("{}/{}", viewer.org, viewer.actor)
    }

    /// Admits one ingestion by `caller` against `homeserver` (its origin), or refuses it.
    pub fn admit(&self, caller: &str, homeserver: &str) -> Result<Admitted> {
        self.check_caller(caller)?;
        self.acquire(caller, homeserver)
    }

    /// Counts one call by `caller` against its rate, or refuses it. Checked before anything
    /// else of a call, so that no call, refused or failing, escapes the rate (a failing call
    /// still writes an audit record).
    pub fn check_caller(&self, caller: &str) -> Result<()> {
        self.rate.check_key(&caller.to_owned()).map_err(|_| Error::TooManyRequests)
    }

    /// Waits until `caller`'s rate allows one more call, and counts it: the parts of one call
    /// (the rooms of a joined-rooms call) go at the caller's rate, never past it.
    pub async fn wait_for_caller(&self, caller: &str) {
        self.rate.until_key_ready(&caller.to_owned()).await;
    }

    /// Takes a place among the ingestions running: `caller`'s own, all of them, and those
    /// against `homeserver`.
    pub fn acquire(&self, caller: &str, homeserver: &str) -> Result<Admitted> {
        let caller = self.per_caller.take(caller)?.ok_or(Error::CallerBusy(self.per_caller.per_key))?;
        let global = Arc::clone(&self.global).try_acquire_owned().map_err(|_| Error::Busy("this server"))?;
        let homeserver = self.per_homeserver.take(homeserver)?.ok_or(Error::Busy("this homeserver"))?;
        Ok(Admitted { _caller: caller, _global: global, _homeserver: homeserver })
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(AdmissionLimits::default())
    }
}

/// Places held by key (a homeserver, a caller): at most so many at once for each key.
#[derive(Debug)]
struct Places {
    per_key: usize,
    held: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Places {
    /// `per_key` places for each key (zero is taken as one).
    fn new(per_key: usize) -> Self {
        Self { per_key: per_key.clamp(1, Semaphore::MAX_PERMITS), held: Mutex::new(HashMap::new()) }
    }

    /// One of `key`'s places, or `None` when they are all held.
    fn take(&self, key: &str) -> Result<Option<OwnedSemaphorePermit>> {
        let semaphore = {
            let mut map = self.held.lock().map_err(|_| Error::Internal)?;
            if map.len() >= MAX_TRACKED_KEYS && !map.contains_key(key) {
                map.retain(|_, s| s.available_permits() < self.per_key);
            }
            Arc::clone(map.entry(key.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.per_key))))
        };
        Ok(semaphore.try_acquire_owned().ok())
    }
}
