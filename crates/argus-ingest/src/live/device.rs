//! The account loop's end-to-end-encryption device: the connector's own device of the watched
//! account (the device of the watch's access token), an [`argus_crypto::device::Device`] whose
//! state is sealed item by item under the watch-token keys ([`SealedState`]) and written only
//! under the loop's lease, so that a replica taking the loop over opens the same device. At
//! start it uploads its keys, signs itself with the account's self-signing key from secret
//! storage when a recovery key was given (so that clients sharing keys only with cross-signed
//! devices share with it), and saves the keys it receives into the account's key backup when
//! there is one.

use std::sync::Arc;

use argus_crypto::device::{Device, DeviceItem, DeviceStateStore};
use argus_domain::OrgId;
use argus_store::{DeviceRef, SealedDeviceItem};

use crate::{Services, TokenKeys, token_keys::DeviceBinding};

/// A device's state in the product's store: each item sealed under the current watch-token key,
/// bound to the device and to its kind and key; written under account watch `watch_id`'s lease
/// held by `replica`.
pub(crate) struct SealedState {
    services: Arc<Services>,
    keys: Arc<TokenKeys>,
    watch_id: i64,
    replica: String,
    org: OrgId,
    homeserver_url: String,
    user_id: String,
    device_id: String,
}

impl std::fmt::Debug for SealedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedState")
            .field("watch_id", &self.watch_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl SealedState {
    /// The state of `device_id` of the watched account of `watch_id` (organisation,
    /// homeserver, user), written under `replica`'s lease.
    #[expect(clippy::too_many_arguments, reason = "the device's whole identity")]
    pub(crate) fn new(
        services: Arc<Services>,
        keys: Arc<TokenKeys>,
        watch_id: i64,
        replica: String,
        org: OrgId,
        homeserver_url: String,
        user_id: String,
        device_id: String,
    ) -> Self {
        Self { services, keys, watch_id, replica, org, homeserver_url, user_id, device_id }
    }

    fn binding<'a>(&'a self, kind: &'a str, key: &'a str) -> DeviceBinding<'a> {
        DeviceBinding {
            org: &self.org,
            homeserver_url: &self.homeserver_url,
            user_id: &self.user_id,
            device_id: &self.device_id,
            kind,
            key,
        }
    }

    fn device(&self) -> argus_store::DeviceIdentity {
        argus_store::DeviceIdentity::from(DeviceRef {
            org: &self.org,
            homeserver_url: &self.homeserver_url,
            user_id: &self.user_id,
            device_id: &self.device_id,
        })
    }
}

/// A store failure in the device's terms (its code only).
fn state_error(error: &crate::Error) -> argus_crypto::Error {
    argus_crypto::Error::DeviceState(format!("the store failed ({})", error.code()))
}

#[async_trait::async_trait]
impl DeviceStateStore for SealedState {
    async fn load(&self) -> argus_crypto::Result<Vec<DeviceItem>> {
        let device = self.device();
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
        let device = self.device();
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
            Err(error) if lease_lost(&error) => return Err(error),
            Err(error) => {
                tracing::warn!(
                    watch = watch_id,
                    code = error.code(),
                    "the connector's device could not sign itself"
                );
            }
        },
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

/// Why the account's device was not opened, when the loop must stop for it.
#[derive(Debug)]
pub(super) enum Unopened {
    /// The loop's lease is lost.
    LeaseLost,
    /// The account's token is refused for good (the watch stops with this reason).
    Halted(String),
}

/// Opens and starts the device of `watch`'s account (the device of its access token), `None`
/// when it cannot be had now (logged, by code: the loop captures without it and tries again
/// later), with whether it saves keys into the key backup.
pub(super) async fn open(
    services: &Arc<Services>,
    options: &super::LiveOptions,
    watch: &argus_domain::AccountWatch,
    credentials: &crate::token_keys::Credentials,
    session: &argus_matrix::Session,
) -> Result<Option<(Arc<Device>, bool)>, Unopened> {
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
            return Ok(None);
        }
    };
    let state = Arc::new(SealedState::new(
        Arc::clone(services),
        keys,
        watch.id,
        options.replica.clone(),
        watch.org.clone(),
        watch.homeserver_url.as_str().to_owned(),
        watch.user_id.clone(),
        device_id.clone(),
    ));
    let transport = Arc::new(argus_matrix::DeviceTransport::new(&services.connector, session.clone()));
    let device = match Device::open(&watch.user_id, &device_id, state, transport).await {
        Ok(device) => Arc::new(device),
        Err(error) if lease_lost(&error) => return Err(Unopened::LeaseLost),
        Err(error) => {
            tracing::warn!(watch = watch.id, code = error.code(), "the account's device could not be opened");
            return Ok(None);
        }
    };
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
            Ok(Some((device, started.backs_up)))
        }
        Err(error) if lease_lost(&error) => Err(Unopened::LeaseLost),
        Err(error) => {
            // Its keys could not be uploaded now: it still decrypts what it holds, and uploads
            // with its next requests.
            tracing::warn!(watch = watch.id, code = error.code(), "the account's device could not start");
            Ok(Some((device, false)))
        }
    }
}
