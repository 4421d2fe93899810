//! Admission of ingestions: a bound on ingestions running at once, in all and per homeserver,
//! and a rate limit per caller. A refused call gets a clear, retryable error; it is counted
//! and logged, not appended to the permanent audit trail (one caller could otherwise fill the
//! trail with refusals).

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

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
    /// Ingestions one caller (JWT `sub` within its organisation) may start per minute.
    pub per_caller_per_minute: u32,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self { max_concurrent: 8, max_concurrent_per_homeserver: 4, per_caller_per_minute: 60 }
    }
}

/// Homeservers tracked at once; past it, idle entries are dropped.
const MAX_TRACKED_HOMESERVERS: usize = 1_024;

/// The admission state shared by every request.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    global: Arc<Semaphore>,
    per_homeserver: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_caller: DefaultKeyedRateLimiter<String>,
}

/// Held while an admitted ingestion runs.
#[derive(Debug)]
pub struct Admitted {
    _global: OwnedSemaphorePermit,
    _homeserver: OwnedSemaphorePermit,
}

impl Admission {
    /// Admission under `limits` (a zero limit is taken as one).
    pub fn new(limits: AdmissionLimits) -> Self {
        let per_minute = NonZeroU32::new(limits.per_caller_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limits,
            global: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            per_homeserver: Mutex::new(HashMap::new()),
            per_caller: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Admits one ingestion by `caller` against `homeserver` (its origin), or refuses it.
    pub fn admit(&self, caller: &str, homeserver: &str) -> Result<Admitted> {
        self.check_caller(caller)?;
        self.acquire(homeserver)
    }

    /// Counts one call by `caller` against its rate, or refuses it. Checked before anything
    /// else of a call, so that no call, refused or failing, escapes the rate (a failing call
    /// still writes an audit record).
    pub fn check_caller(&self, caller: &str) -> Result<()> {
        self.per_caller.check_key(&caller.to_owned()).map_err(|_| Error::TooManyRequests)
    }

    /// Takes a place among the ingestions running, in all and against `homeserver`.
    pub fn acquire(&self, homeserver: &str) -> Result<Admitted> {
        let global = Arc::clone(&self.global).try_acquire_owned().map_err(|_| Error::Busy("this server"))?;
        let semaphore = {
            let mut map = self.per_homeserver.lock().map_err(|_| Error::Internal)?;
            if map.len() >= MAX_TRACKED_HOMESERVERS && !map.contains_key(homeserver) {
                let idle = self.limits.max_concurrent_per_homeserver.max(1);
                map.retain(|_, s| s.available_permits() < idle);
            }
            Arc::clone(map.entry(homeserver.to_owned()).or_insert_with(|| {
                Arc::new(Semaphore::new(self.limits.max_concurrent_per_homeserver.max(1)))
            }))
        };
        let homeserver = semaphore.try_acquire_owned().map_err(|_| Error::Busy("this homeserver"))?;
        Ok(Admitted { _global: global, _homeserver: homeserver })
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(AdmissionLimits::default())
    }
}
