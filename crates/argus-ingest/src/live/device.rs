//! The account loop's end-to-end-encryption device: the connector's own device of the watched
//! account (the device of the watch's access token), an [`argus_crypto::device::Device`] whose
//! state is sealed item by item under the watch-token keys ([`SealedState`]) and written only
//! under the loop's lease, so that a replica taking the loop over opens the same device. At
//! start it uploads its keys, signs itself with the account's self-signing key from secret
//! storage when a recovery key was given (so that clients sharing keys only with cross-signed
//! devices share with it), and saves the keys it receives into the account's key backup when
//! there is one.

use std::{sync::Arc, time::Duration};

use argus_crypto::device::{Device, DeviceItem, DeviceStateStore};
use argus_store::{DeviceIdentity, SealedDeviceItem};

use crate::{Services, TokenKeys, token_keys::DeviceBinding};

/// A device's state in the product's store: each item sealed under the current watch-token key,
/// bound to the device and to its kind and key; written under account watch `watch_id`'s lease
/// held by `replica`.
pub(crate) struct SealedState {
    services: Arc<Services>,
    keys: Arc<TokenKeys>,
    watch_id: i64,
    replica: String,
    device: DeviceIdentity,
}

impl std::fmt::Debug for SealedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedState")
            .field("watch_id", &self.watch_id)
            .field("device_id", &self.device.device_id)
            .finish_non_exhaustive()
    }
}

impl SealedState {
    /// The state of `device` (of the watched account of `watch_id`), written under `replica`'s
    /// lease.
    pub(crate) fn new(
        services: Arc<Services>,
        keys: Arc<TokenKeys>,
        watch_id: i64,
        replica: String,
        device: DeviceIdentity,
    ) -> Self {
        Self { services, keys, watch_id, replica, device }
    }

    fn binding<'a>(&'a self, kind: &'a str, key: &'a str) -> DeviceBinding<'a> {
        DeviceBinding {
            org: &self.device.org,
            homeserver_url: &self.device.homeserver_url,
            user_id: &self.device.user_id,
            device_id: &self.device.device_id,
            kind,
            key,
        }
    }
}

/// A store failure in the device's terms (its code only).
fn state_error(error: &crate::Error) -> argus_crypto::Error {
    argus_crypto::Error::DeviceState(format!("the store failed ({})", error.code()))
}

#[async_trait::async_trait]
impl DeviceStateStore for SealedState {
    async fn load(&self) -> argus_crypto::Result<Vec<DeviceItem>> {
        let device = self.device.clone();
        let sealed = self
            .services
            .with_store(move |store| store.device_items(device.to_ref()))
            .await
            .map_err(|e| state_error(&e))?;
        sealed
            .into_iter()
            .map(|item| {
                let value = self
                    .keys
                    .open_device_item(&item.sealed, self.binding(&item.kind, &item.key))
                    .map_err(|_| argus_crypto::Error::DeviceState("a stored item does not open".into()))?;
                Ok(DeviceItem { kind: item.kind, key: item.key, value })
            })
            .collect()
    }

    async fn write(&self, puts: Vec<DeviceItem>, deletes: Vec<(String, String)>) -> argus_crypto::Result<()> {
        let sealed = puts
            .iter()
            .map(|item| {
                let sealed = self
                    .keys
                    .seal_device_item(&item.value, self.binding(&item.kind, &item.key))
                    .map_err(|_| argus_crypto::Error::DeviceState("an item could not be sealed".into()))?;
                Ok(SealedDeviceItem { kind: item.kind.clone(), key: item.key.clone(), sealed })
            })
            .collect::<argus_crypto::Result<Vec<_>>>()?;
        let device = self.device.clone();
        let (id, replica) = (self.watch_id, self.replica.clone());
        self.services
            .with_store(move |store| {
                store.write_device_items(id, &replica, device.to_ref(), &sealed, &deletes)
            })
            .await
            .map_err(|e| match e {
                crate::Error::Store(argus_store::Error::LeaseLost) => {
                    argus_crypto::Error::DeviceState("the account loop's lease is lost".into())
                }
                other => state_error(&other),
            })
    }
}

/// Whether `error` says the loop's lease is lost (the device must stop with it).
pub(crate) fn lease_lost(error: &argus_crypto::Error) -> bool {
    matches!(error, argus_crypto::Error::DeviceState(reason) if reason.contains("lease is lost"))
}

/// What the device did at start, for the loop's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started {
    /// It is signed by the account's cross-signing identity.
    pub(crate) cross_signed: bool,
    /// Keys it receives are saved into the account's key backup.
    pub(crate) backs_up: bool,
}

/// Brings `device` up: its keys uploaded, signed by the account's identity when `recovery_key`
/// opens secret storage with the cross-signing keys, the key backup enabled when there is one
/// that the recovery key opens. A failure of the optional steps leaves the device decrypting
/// unsigned (logged, by code).
pub(crate) async fn start(
    services: &Services,
    session: &argus_matrix::Session,
    device: &Device,
    recovery_key: Option<&argus_crypto::RecoveryKey>,
    watch_id: i64,
) -> argus_crypto::Result<Started> {
    device.flush().await?;
    let mut started =
        Started { cross_signed: device.is_cross_signed().await.unwrap_or(false), backs_up: false };
    let Some(recovery_key) = recovery_key else { return Ok(started) };
    match services.connector.load_cross_signing_keys(session, recovery_key).await {
        Ok(keys) => match device.sign_self(&keys).await {
            Ok(()) => started.cross_signed = device.is_cross_signed().await?,
            // Tried again later: the homeserver or the store failing now.
            Err(error @ (argus_crypto::Error::DeviceTransport(_) | argus_crypto::Error::DeviceState(_))) => {
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(
                    watch = watch_id,
                    code = error.code(),
                    "the connector's device could not sign itself"
                );
            }
        },
        Err(error) if error.is_retryable() => {
            return Err(argus_crypto::Error::DeviceTransport(error.code().into()));
        }
        Err(error) => {
            tracing::warn!(
                watch = watch_id,
                code = error.code(),
                "the account's cross-signing keys could not be read from secret storage"
            );
        }
    }
    match services.connector.key_backup_public_key(session, recovery_key).await {
        Ok(Some((version, public_key))) => {
            device.enable_backup(&version, &public_key).await?;
            started.backs_up = true;
        }
        Ok(None) => {}
        Err(error) if error.is_retryable() => {
            return Err(argus_crypto::Error::DeviceTransport(error.code().into()));
        }
        Err(error) => {
            tracing::warn!(
                watch = watch_id,
                code = error.code(),
                "the account's key backup could not be read"
            );
        }
    }
    Ok(started)
}

/// How long the account's device may fail to open before the watch stops for it.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(600);

/// How long after a failed start (key upload, signing, backup) it is tried again.
const START_RETRY: Duration = Duration::from_secs(60);

/// Whether the loop may ask `/sync`, as far as the device goes.
#[derive(Debug)]
pub(super) enum Readiness {
    /// The device is open (or the account has none the connector may be).
    Ready,
    /// The device is wanted and not open yet: no `/sync` now.
    NotYet,
    /// The loop's lease is lost.
    LeaseLost,
    /// The watch stops with this reason.
    Halted(String),
}

/// The account's device as a loop holds it: open, started (keys uploaded, signed, backup
/// enabled), or why not.
#[derive(Default)]
pub(super) struct Held {
    device: Option<Arc<Device>>,
    /// The account has no device the connector may be (its token has none, or a client's).
    none: bool,
    /// It was started: keys uploaded, signed when it could be, backup enabled when there is one.
    started: Option<Started>,
    /// When a start was last tried.
    start_tried: Option<tokio::time::Instant>,
    /// Since when opening it has failed.
    failing_since: Option<tokio::time::Instant>,
}

impl Held {
    /// The open device.
    pub(super) fn device(&self) -> Option<&Arc<Device>> {
        self.device.as_ref()
    }

    /// Whether the keys it receives go into the account's key backup.
    pub(super) fn backs_up(&self) -> bool {
        self.started.is_some_and(|s| s.backs_up)
    }

    /// The loop stored an answer's position: the device works, whatever failed before.
    pub(super) fn progressed(&mut self) {
        self.failing_since = None;
    }

    /// Drops the device (its state could not be kept): it is opened again from the store
    /// before the next `/sync`. Failures that keep coming back (an item the store refuses
    /// every time) stop the watch after ten minutes without an answer stored.
    pub(super) fn reopen(&mut self) {
        self.failing_since.get_or_insert_with(tokio::time::Instant::now);
        self.device = None;
        self.started = None;
        self.start_tried = None;
    }

    /// Opens the device when it is not, and starts it when it was not (again a minute after a
    /// failed start); whether the loop may ask `/sync`.
    pub(super) async fn bring_up(
        &mut self,
        services: &Arc<Services>,
        options: &super::LiveOptions,
        watch: &argus_domain::AccountWatch,
        credentials: &crate::token_keys::Credentials,
        session: &argus_matrix::Session,
    ) -> Readiness {
        if self.none {
            return Readiness::Ready;
        }
        if self.failing_since.is_some_and(|since| since.elapsed() >= UNAVAILABLE_FOR) {
            return Readiness::Halted(
                "DEVICE_UNAVAILABLE: the account's end-to-end-encryption device could not keep its state"
                    .into(),
            );
        }
        if self.device.is_none() {
            match open(services, options, watch, session).await {
                Ok(Some(device)) => self.device = Some(device),
                Ok(None) => {
                    self.none = true;
                    return Readiness::Ready;
                }
                Err(Unopened::LeaseLost) => return Readiness::LeaseLost,
                Err(Unopened::Halted(reason)) => return Readiness::Halted(reason),
                // The homeserver or the store unavailable: as long as it takes (`/sync` would
                // fail too).
                Err(Unopened::NotYet { hopeless: false, .. }) => return Readiness::NotYet,
                Err(Unopened::NotYet { code, hopeless: true }) => {
                    let since = *self.failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= UNAVAILABLE_FOR {
                        return Readiness::Halted(format!(
                            "DEVICE_UNAVAILABLE: the account's end-to-end-encryption device could not be opened ({code})"
                        ));
                    }
                    return Readiness::NotYet;
                }
            }
        }
        let Some(device) = self.device.clone() else { return Readiness::NotYet };
        if self.started.is_none() && self.start_tried.is_none_or(|at| at.elapsed() >= START_RETRY) {
            self.start_tried = Some(tokio::time::Instant::now());
            let recovery_key = credentials
                .recovery_key
                .as_ref()
                .and_then(|key| key.expose_secret().parse::<argus_crypto::RecoveryKey>().ok());
            match start(services, session, &device, recovery_key.as_ref(), watch.id).await {
                Ok(started) => {
                    tracing::info!(
                        watch = watch.id,
                        cross_signed = started.cross_signed,
                        backs_up = started.backs_up,
                        "the account's end-to-end-encryption device is up"
                    );
                    self.started = Some(started);
                }
                Err(error) if lease_lost(&error) => return Readiness::LeaseLost,
                Err(error @ argus_crypto::Error::DeviceState(_)) => {
                    tracing::warn!(
                        watch = watch.id,
                        code = error.code(),
                        "the account's device could not start"
                    );
                    self.reopen();
                    return Readiness::NotYet;
                }
                // Its keys could not be uploaded or it could not sign itself now: it still
                // takes and decrypts what it receives; tried again later.
                Err(error) => {
                    tracing::warn!(
                        watch = watch.id,
                        code = error.code(),
                        "the account's device could not start"
                    );
                }
            }
        }
        Readiness::Ready
    }
}

/// Why the account's device was not opened.
#[derive(Debug)]
enum Unopened {
    /// The loop's lease is lost.
    LeaseLost,
    /// The account's token is refused for good (the watch stops with this reason).
    Halted(String),
    /// Not now, with the failure's code; `hopeless` when retrying cannot change it (a state
    /// that does not open, the machine failing), else the homeserver or the store unavailable.
    NotYet { code: &'static str, hopeless: bool },
}

/// Opens the device of `watch`'s account (the device of its access token); `None` when the
/// account has none the connector may be (its token has no device, or a client already
/// published keys for it).
async fn open(
    services: &Arc<Services>,
    options: &super::LiveOptions,
    watch: &argus_domain::AccountWatch,
    session: &argus_matrix::Session,
) -> Result<Option<Arc<Device>>, Unopened> {
    let Some(keys) = services.token_keys.clone() else { return Ok(None) };
    let device_id = match services.connector.whoami_device(session).await {
        Ok((_, Some(device_id))) => device_id,
        Ok((_, None)) => {
            tracing::warn!(
                watch = watch.id,
                "the account's token has no device: no end-to-end-encryption device"
            );
            return Ok(None);
        }
        Err(error) => {
            let error = crate::Error::from(error);
            if let Some(reason) = crate::scheduler::stop_reason(&error) {
                return Err(Unopened::Halted(reason));
            }
            tracing::warn!(watch = watch.id, code = error.code(), "the account's device could not be named");
            return Err(Unopened::NotYet { code: error.code(), hopeless: !error.is_retryable() });
        }
    };
    let device = DeviceIdentity {
        org: watch.org.clone(),
        homeserver_url: watch.homeserver_url.as_str().to_owned(),
        user_id: watch.user_id.clone(),
        device_id: device_id.clone(),
    };
    let state =
        Arc::new(SealedState::new(Arc::clone(services), keys, watch.id, options.replica.clone(), device));
    let transport = Arc::new(argus_matrix::DeviceTransport::new(&services.connector, session.clone()));
    match Device::open(&watch.user_id, &device_id, state, transport).await {
        Ok(device) => Ok(Some(Arc::new(device))),
        Err(error) if lease_lost(&error) => Err(Unopened::LeaseLost),
        Err(argus_crypto::Error::DeviceInUse) => {
            tracing::warn!(
                watch = watch.id,
                "the account's token is a client's session with keys of its own: no end-to-end-encryption device"
            );
            Ok(None)
        }
        Err(error) => {
            tracing::warn!(watch = watch.id, code = error.code(), "the account's device could not be opened");
            let hopeless = match &error {
                argus_crypto::Error::DeviceTransport(_) => false,
                argus_crypto::Error::DeviceState(reason) => reason.contains("does not"),
                _ => true,
            };
            Err(Unopened::NotYet { code: error.code(), hopeless })
        }
    }
}
