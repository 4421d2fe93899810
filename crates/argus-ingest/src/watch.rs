//! Watched rooms: a caller asks for a room to be kept current on an interval with their Matrix
//! token (and, for an encrypted room, their recovery key), sealed at once together
//! ([`crate::TokenKeys`]) and never readable back. The checks are those of an ingestion (scope,
//! the caller's rate, outbound policy, clearance), plus the interval's bounds and caps on
//! watches per owner and per organisation. An account may be given instead of the homeserver
//! URL: it is resolved and its token confirmed first ([`crate::ingest`] does the same).
//!
//! A start date (`since`) applies to every run of the watch: the room's history is captured
//! from that date, not back to its creation.
//!
//! The homeserver is asked before the archive: a watch is made only with a token that reads the
//! room. A room stored or watched above the caller's clearance therefore answers as a missing
//! one (same code, message and time) to anyone the homeserver does not let read it; only a
//! reader of the room learns, as an ingestion would tell them, that the archive holds it above
//! their clearance. The caps count only the watches the caller may see.

use argus_domain::{
    AccessToken, Classification, HomeserverUrl, NewWatch, RoomId, Scope, Viewer, Watch, policy,
};

use argus_matrix::TokenPair;

use crate::{
    Admission, Error, Result, Services, account,
    token_keys::{AccountBinding, Binding, Credentials},
};

/// A watch as the caller gave it. `Debug` shows the token and the key as `[redacted]`.
#[derive(Debug)]
pub struct WatchRequest {
    /// Base URL of the homeserver.
    pub homeserver_url: String,
    /// A Matrix user id or an e-mail address, resolved to the homeserver instead of
    /// `homeserver_url` (exactly one of the two is given).
    pub account: Option<String>,
    /// The account's refresh token, beside the access token: the token is renewed before it
    /// expires or when the homeserver refuses it. The pair is kept once for the account (its
    /// Matrix user, from `whoami`), replacing the account's stored pair; every watch of the
    /// account given a refresh token reads with that one pair.
    pub refresh_token: Option<argus_domain::Secret>,
    /// The OAuth 2.0 client id the tokens were issued to (a next-generation auth server's),
    /// sealed with them: renewing them at the auth server's token endpoint needs it.
    pub oauth_client_id: Option<String>,
    /// Capture only what was sent at or after this time.
    pub since: Option<time::OffsetDateTime>,
    /// The owner's Matrix access token, sealed at once.
    pub access_token: AccessToken,
    /// The Matrix room id.
    pub room_id: String,
    /// Classification of every run.
    pub classification: Classification,
    /// Seconds between runs.
    pub interval_secs: i64,
    /// The owner's recovery key (Element security key or legacy backup recovery key): the
    /// watch's runs decrypt end-to-end encrypted history from the owner's key backup. Sealed
    /// with the token; never returned.
    pub recovery_key: Option<argus_domain::Secret>,
}

/// Creates or renews (same room: new token, interval, owner; a paused watch resumes) the watch
/// of a room for `viewer`'s organisation.
pub async fn watch_room(services: &Services, viewer: &Viewer, mut request: WatchRequest) -> Result<Watch> {
    policy::require_scope(viewer, Scope::Ingest)?;
    // Counted like an ingestion: one caller cannot make watches faster than they may ingest.
    services.admission.check_caller(&Admission::caller_of(viewer))?;
    let keys = services.token_keys.clone().ok_or(Error::WatchesDisabled)?;
    // An account instead of a URL: resolved (its token confirmed below, through the call's
    // token source); the homeserver found is the one sealed into the watch's binding. A watch
    // refused before it exists is not audited, whatever refused it (as for a URL).
    let account = request.account.take();
    let resolved = account::resolve(services, &mut request.homeserver_url, account.as_deref())
        .await
        .map_err(|unresolved| unresolved.error)?;
    let homeserver: HomeserverUrl = request.homeserver_url.parse()?;
    let room_id: RoomId = request.room_id.parse()?;
    if !request.access_token.is_well_formed() {
        return Err(Error::InvalidInput("the access token is empty or malformed".into()));
    }
    let limits = services.watch_limits;
    let interval_secs = u32::try_from(request.interval_secs)
        .ok()
        .filter(|s| (limits.min_interval_secs..=limits.max_interval_secs).contains(s))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "interval must be between {} and {} seconds",
                limits.min_interval_secs, limits.max_interval_secs
            ))
        })?;
    policy::check_may_classify(viewer, request.classification)?;
    crate::ingest::check_since(request.since)?;
    services.connector.check_homeserver(&homeserver)?;
    // A key that is not a recovery key is refused now; one that does not open the owner's
    // backup pauses the watch at its first run (the backup is read then, not here).
    let recovery_key = checked_recovery_key(request.recovery_key.as_ref())?;
    // The homeserver first, the archive only for a token that reads the room, and the account
    // confirmed with the same token source. A token given with its refresh token may be renewed
    // by these checks: the renewed pair is what is kept (the refresh token given is then used
    // up).
    let given = TokenPair::given(request.access_token, request.refresh_token);
    let (tokens, renewable) =
        crate::ingest::call_tokens(services, &homeserver, given.clone(), request.oauth_client_id.clone());
    let check = argus_matrix::Session::shared(homeserver.clone(), tokens);
    if let Some(resolved) = &resolved {
        account::confirm(services, &check, resolved).await?;
    }
    services.may_read_room(&check, &room_id).await?;
    let decrypts = recovery_key.is_some();
    // A refresh-token pair belongs to the account's session, not to the room: it is kept once
    // for the account (its Matrix user, as the homeserver names it), and every watch of that
    // account refers to it. The watch's own sealed token then holds the recovery key and the
    // access token only.
    let credential = match &renewable {
        Some(renewing) => {
            let user_id = services.connector.whoami(&check).await?;
            let pair = account_pair(
                &keys,
                viewer,
                &homeserver,
                user_id.as_str(),
                renewing,
                request.oauth_client_id,
            )?;
            Some(pair)
        }
        None => None,
    };
    let access_token = credential.as_ref().map_or(given.access_token, |(_, token)| token.clone());
    let credentials = Credentials { access_token, recovery_key, ..Credentials::default() };
    let token = keys.seal(&credentials, Binding::of(&viewer.org, &room_id, &homeserver, &viewer.actor))?;
    let credential = credential.map(|(new, _)| new);
    let new = NewWatch {
        owner: viewer.actor.clone(),
        org: viewer.org.clone(),
        room_id,
        homeserver_url: homeserver,
        classification: request.classification,
        interval_secs,
        token,
        decrypts,
        since: request.since,
    };
    let v = viewer.clone();
    let caps = argus_store::WatchCaps { per_owner: limits.max_per_owner, per_org: limits.max_per_org };
    let watch = services
        .with_store(move |store| store.upsert_account_watch(&v, &new, credential.as_ref(), caps))
        .await?;
    tracing::info!(
        actor = %viewer.actor, org = %viewer.org, room = %watch.room_id, interval = watch.interval_secs,
        decrypts = watch.decrypts, "room watched"
    );
    Ok(watch)
}

/// A recovery key as given, checked to be one and kept in its canonical form (a key that does
/// not open the owner's backup stops the watch at its first read, not here).
pub(crate) fn checked_recovery_key(
    given: Option<&argus_domain::Secret>,
) -> Result<Option<argus_domain::Secret>> {
    Ok(given
        .map(|text| {
            text.expose_secret()
                .parse::<argus_crypto::RecoveryKey>()
                .map(|key| argus_domain::Secret::new(key.to_base58()))
                .map_err(argus_matrix::Error::from)
        })
        .transpose()?)
}

/// The account row of a renewable pair given by `viewer` for `user_id` at `homeserver` (what
/// `renewing` holds now: the checks may have renewed it), sealed for the account, with the
/// access token of that pair.
pub(crate) fn account_pair(
    keys: &crate::TokenKeys,
    viewer: &Viewer,
    homeserver: &HomeserverUrl,
    user_id: &str,
    renewing: &argus_matrix::RefreshingTokens,
    oauth_client_id: Option<String>,
) -> Result<(argus_store::NewCredential, AccessToken)> {
    let pair = renewing.pair();
    let shared = Credentials { oauth_client_id, ..Credentials::default() }.with_pair(&pair);
    let binding = AccountBinding {
        org: &viewer.org,
        owner: &viewer.actor,
        homeserver_url: homeserver.as_str(),
        user_id,
    };
    let new = argus_store::NewCredential {
        org: viewer.org.clone(),
        owner: viewer.actor.clone(),
        homeserver_url: homeserver.as_str().to_owned(),
        user_id: user_id.to_owned(),
        token: keys.seal_account(&shared, binding)?,
    };
    Ok((new, pair.access_token))
}

/// Stops watching a room; whether `viewer` had a watch of it they may see.
pub async fn unwatch_room(services: &Services, viewer: &Viewer, room_id: &str) -> Result<bool> {
    policy::require_scope(viewer, Scope::Ingest)?;
    let room_id: RoomId = room_id.parse()?;
    let v = viewer.clone();
    let removed = services.with_store(move |store| store.remove_watch(&v, &room_id)).await?;
    if removed {
        tracing::info!(actor = %viewer.actor, org = %viewer.org, "room unwatched");
    }
    Ok(removed)
}

/// The watches `viewer` may see, oldest first, after storage id `after`.
pub async fn watches(
    services: &Services,
    viewer: &Viewer,
    first: u32,
    after: Option<i64>,
) -> Result<Vec<Watch>> {
    policy::require_scope(viewer, Scope::Read)?;
    let v = viewer.clone();
    services.with_store(move |store| store.watches(&v, first, after)).await
}

/// What re-sealing every watch's token and every account's shared pair under the current key
/// did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Watch tokens (room and account watches) re-sealed.
    pub resealed: u64,
    /// Account pairs (shared by an account's watches) re-sealed.
    pub accounts: u64,
    /// Items of the connector's devices' state re-sealed.
    pub device_items: u64,
    /// Tokens and pairs already under the current key.
    pub current: u64,
    /// Tokens and pairs that did not open with any key held (left as they are).
    pub unopened: u64,
    /// Tokens and pairs replaced while they were re-sealed (a renewal, a new token given): the
    /// new value is sealed by whoever wrote it; run the rotation again to be sure.
    pub changed: u64,
}

/// Re-seals every watch's credentials (room and account watches) and every account's shared
/// pair under the current key
/// (`keys rotate`): afterwards the previous keys can be dropped from the configuration. A
/// renewal racing the rotation loses its swap, re-reads the re-sealed pair and swaps again.
pub async fn rotate_token_keys(services: &Services) -> Result<Rotation> {
    let keys = services.token_keys.clone().ok_or(Error::WatchesDisabled)?;
    let sealed = services.with_store(|store| store.sealed_watch_tokens()).await?;
    let mut rotation = Rotation::default();
    for entry in sealed {
        let binding = Binding {
            org: &entry.org,
            room_id: &entry.room_id,
            homeserver_url: &entry.homeserver_url,
            owner: &entry.owner,
        };
        match keys.reseal(&entry.token, binding) {
            Ok(None) => rotation.current += 1,
            Ok(Some(new)) => {
                let (id, old) = (entry.id, entry.token.clone());
                if services.with_store(move |store| store.reseal_watch_token(id, &old, &new)).await? {
                    rotation.resealed += 1;
                } else {
                    rotation.changed += 1;
                }
            }
            Err(error) => {
                tracing::warn!(watch = entry.id, code = error.code(), "a watch's token did not open");
                rotation.unopened += 1;
            }
        }
    }
    let shared = services.with_store(|store| store.sealed_credentials()).await?;
    for entry in shared {
        let binding = AccountBinding {
            org: &entry.org,
            owner: &entry.owner,
            homeserver_url: &entry.homeserver_url,
            user_id: &entry.user_id,
        };
        match keys.reseal_account(&entry.token, binding) {
            Ok(None) => rotation.current += 1,
            Ok(Some(new)) => {
                let (id, old) = (entry.id, entry.token.clone());
                if services.with_store(move |store| store.reseal_credential(id, &old, &new)).await? {
                    rotation.accounts += 1;
                } else {
                    rotation.changed += 1;
                }
            }
            Err(error) => {
                tracing::warn!(credential = entry.id, code = error.code(), "an account's token did not open");
                rotation.unopened += 1;
            }
        }
    }
    let accounts = services.with_store(|store| store.sealed_account_watch_tokens()).await?;
    for entry in accounts {
        let binding = crate::token_keys::AccountWatchBinding(AccountBinding {
            org: &entry.org,
            owner: &entry.owner,
            homeserver_url: &entry.homeserver_url,
            user_id: &entry.user_id,
        });
        match keys.reseal_account_watch(&entry.token, binding) {
            Ok(None) => rotation.current += 1,
            Ok(Some(new)) => {
                let (id, old) = (entry.id, entry.token.clone());
                if services.with_store(move |store| store.reseal_account_watch_token(id, &old, &new)).await? {
                    rotation.resealed += 1;
                } else {
                    rotation.changed += 1;
                }
            }
            Err(error) => {
                tracing::warn!(
                    account_watch = entry.id,
                    code = error.code(),
                    "an account watch's token did not open"
                );
                rotation.unopened += 1;
            }
        }
    }
    reseal_device_items(services, &keys, &mut rotation).await?;
    Ok(rotation)
}

/// Items of device state re-sealed per batch.
const DEVICE_ITEMS_PER_BATCH: usize = 500;

/// Re-seals the connector's devices' state under the current key, batch by batch, until a
/// batch re-seals nothing (what is left did not open, or changed meanwhile).
async fn reseal_device_items(
    services: &Services,
    keys: &std::sync::Arc<crate::TokenKeys>,
    rotation: &mut Rotation,
) -> Result<()> {
    let current = keys.current_id().to_owned();
    let mut skipped = std::collections::HashSet::new();
    loop {
        // Items left unopened come back first: the batch reaches past them.
        let (id, limit) = (current.clone(), DEVICE_ITEMS_PER_BATCH + skipped.len());
        let batch = services.with_store(move |store| store.device_items_to_reseal(&id, limit)).await?;
        let mut progress = false;
        for (device, item) in batch {
            let slot = (device.clone(), item.kind.clone(), item.key.clone(), item.sealed.nonce.clone());
            if skipped.contains(&slot) {
                continue;
            }
            let binding = crate::token_keys::DeviceBinding {
                org: &device.org,
                homeserver_url: &device.homeserver_url,
                user_id: &device.user_id,
                device_id: &device.device_id,
                kind: &item.kind,
                key: &item.key,
            };
            match keys.reseal_device_item(&item.sealed, binding) {
                Ok(None) => rotation.current += 1,
                Ok(Some(new)) => {
                    let old = item.sealed.clone();
                    let (kind, key) = (item.kind.clone(), item.key.clone());
                    let d = device.clone();
                    let replaced = services
                        .with_store(move |store| {
                            store.reseal_device_item(d.to_ref(), &kind, &key, &old, &new)
                        })
                        .await?;
                    if replaced {
                        rotation.device_items += 1;
                        progress = true;
                    } else {
                        rotation.changed += 1;
                        skipped.insert(slot);
                    }
                }
                Err(error) => {
                    tracing::warn!(code = error.code(), "an item of a device's state did not open");
                    rotation.unopened += 1;
                    skipped.insert(slot);
                }
            }
        }
        if !progress {
            return Ok(());
        }
    }
}
