//! The keys that seal watched rooms' credentials at rest (the owner's Matrix token, and their
//! recovery key for a watch that decrypts, in one ciphertext): XChaCha20-Poly1305 with a random
//! nonce per watch, the associated data binding each ciphertext to its watch (organisation,
//! room, homeserver, owner), so a ciphertext copied to another row does not open. An account's
//! refresh-token pair, shared by its watches, is bound to the account instead (organisation,
//! owner, homeserver, Matrix user: [`AccountBinding`]). The keys are held
//! outside the database (configuration or file); the database keeps only a key's id, a digest.
//! Rotation: the new key becomes current, the old ones stay as `previous` until every token is
//! re-sealed ([`TokenKeys::reseal`]).

use argus_domain::{AccessToken, ActorId, HomeserverUrl, OrgId, RoomId, SealedToken, Secret};
use base64::Engine as _;
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead as _, KeyInit as _, Payload},
};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// Bytes of a token key.
pub const KEY_BYTES: usize = 32;

/// Longest token sealed (a Matrix access token is far shorter).
const MAX_TOKEN_BYTES: usize = 4096;

/// Longest recovery key sealed (a base58 recovery key is 59 characters with its spaces).
const MAX_RECOVERY_KEY_BYTES: usize = 256;

/// What starts the plaintext of credentials that hold a recovery key: the token follows, then a
/// NUL byte, then the key. Credentials without one are the token's bytes alone, as every watch
/// sealed its token before watches could decrypt (a well-formed token never holds a NUL byte,
/// so the two cannot be mistaken).
const WITH_RECOVERY_KEY: &[u8] = b"\0argus-watch-credentials-v2\0";

/// What starts the plaintext of credentials that hold a refresh token: a JSON object follows
/// ([`Renewable`]). Versions 1 and 2 still open; credentials without a refresh token are still
/// sealed as version 1 or 2.
const RENEWABLE: &[u8] = b"\0argus-watch-credentials-v3\0";

/// Longest OAuth 2.0 client id sealed.
const MAX_CLIENT_ID_BYTES: usize = 256;

/// What a watch's sealed ciphertext holds. `Debug` shows no secret.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The owner's Matrix access token.
    pub access_token: AccessToken,
    /// The owner's recovery key, for a watch whose runs decrypt encrypted history.
    pub recovery_key: Option<Secret>,
    /// The refresh token that renews the access token (used once: each renewal seals the new
    /// pair in place of the old).
    pub refresh_token: Option<Secret>,
    /// When the access token expires, when known.
    pub expires_at: Option<time::OffsetDateTime>,
    /// How long the access token lived when issued, when known.
    pub lifetime: Option<std::time::Duration>,
    /// The OAuth 2.0 client id the tokens were issued to (a next-generation auth server's).
    pub oauth_client_id: Option<String>,
}

/// The version 3 plaintext after its prefix.
#[derive(serde::Serialize, serde::Deserialize)]
struct Renewable {
    access_token: String,
    refresh_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovery_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lifetime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oauth_client_id: Option<String>,
}

impl Credentials {
    /// The token pair these credentials hold.
    pub fn pair(&self) -> argus_matrix::TokenPair {
        argus_matrix::TokenPair {
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            expires_at: self.expires_at,
            lifetime: self.lifetime,
        }
    }

    /// The same credentials with `pair` in place of their tokens.
    pub fn with_pair(&self, pair: &argus_matrix::TokenPair) -> Self {
        Self {
            access_token: pair.access_token.clone(),
            refresh_token: pair.refresh_token.clone(),
            expires_at: pair.expires_at,
            lifetime: pair.lifetime,
            ..self.clone()
        }
    }

    /// The plaintext sealed; [`Error::InvalidInput`] for a token or key that cannot be sealed.
    fn encode(&self) -> Result<Vec<u8>> {
        let token = self.access_token.expose_secret().as_bytes();
        if !self.access_token.is_well_formed() || token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidInput("the access token is empty, malformed or too long".into()));
        }
        if let Some(refresh_token) = &self.refresh_token {
            return self.encode_renewable(refresh_token);
        }
        let Some(key) = &self.recovery_key else {
            return Ok(token.to_vec());
        };
        let key = key.expose_secret().as_bytes();
        if key.is_empty() || key.len() > MAX_RECOVERY_KEY_BYTES || key.contains(&0) {
            return Err(Error::InvalidInput("the recovery key is empty, malformed or too long".into()));
        }
        let mut plain = Vec::with_capacity(WITH_RECOVERY_KEY.len() + token.len() + 1 + key.len());
        plain.extend_from_slice(WITH_RECOVERY_KEY);
        plain.extend_from_slice(token);
        plain.push(0);
        plain.extend_from_slice(key);
        Ok(plain)
    }

    /// The version 3 plaintext, for credentials with a refresh token.
    fn encode_renewable(&self, refresh_token: &Secret) -> Result<Vec<u8>> {
        if !refresh_token.is_well_formed() || refresh_token.expose_secret().len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidInput("the refresh token is empty, malformed or too long".into()));
        }
        if let Some(key) = &self.recovery_key
            && (key.expose_secret().is_empty() || key.expose_secret().len() > MAX_RECOVERY_KEY_BYTES)
        {
            return Err(Error::InvalidInput("the recovery key is empty, malformed or too long".into()));
        }
        if let Some(id) = &self.oauth_client_id
            && (id.is_empty() || id.len() > MAX_CLIENT_ID_BYTES || id.chars().any(char::is_control))
        {
            return Err(Error::InvalidInput("the OAuth client id is empty, malformed or too long".into()));
        }
        let renewable = Renewable {
            access_token: self.access_token.expose_secret().to_owned(),
            refresh_token: refresh_token.expose_secret().to_owned(),
            recovery_key: self.recovery_key.as_ref().map(|k| k.expose_secret().to_owned()),
            expires_at_ms: self.expires_at.map(argus_domain::to_unix_ms),
            lifetime_ms: self.lifetime.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            oauth_client_id: self.oauth_client_id.clone(),
        };
        let mut plain = RENEWABLE.to_vec();
        serde_json::to_writer(&mut plain, &renewable).map_err(|_| Error::Internal)?;
        Ok(plain)
    }

    /// The credentials a plaintext holds; `None` when it is not one this code seals.
    fn decode(plain: &[u8]) -> Option<Self> {
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_owned);
        if let Some(rest) = plain.strip_prefix(RENEWABLE) {
            let r: Renewable = serde_json::from_slice(rest).ok()?;
            return Some(Self {
                access_token: AccessToken::new(r.access_token),
                recovery_key: r.recovery_key.map(Secret::new),
                refresh_token: Some(Secret::new(r.refresh_token)),
                expires_at: r.expires_at_ms.and_then(|ms| argus_domain::from_unix_ms(ms).ok()),
                lifetime: r.lifetime_ms.map(std::time::Duration::from_millis),
                oauth_client_id: r.oauth_client_id,
            });
        }
        let Some(rest) = plain.strip_prefix(WITH_RECOVERY_KEY) else {
            return Some(Self { access_token: AccessToken::new(text(plain)?), ..Self::default() });
        };
        let split = rest.iter().position(|&b| b == 0)?;
        let (token, key) = (&rest[..split], &rest[split + 1..]);
        Some(Self {
            access_token: AccessToken::new(text(token)?),
            recovery_key: Some(Secret::new(text(key)?)),
            ..Self::default()
        })
    }
}

/// One key: its id and its cipher. `Debug` shows the id only.
pub struct TokenKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl TokenKey {
    /// A key from its 32 bytes; [`Error::InvalidInput`] for any other length.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != KEY_BYTES {
            return Err(Error::InvalidInput(format!("a token key is {KEY_BYTES} bytes")));
        }
        let digest = Sha256::new().chain_update(b"argus-watch-token-key\0").chain_update(bytes).finalize();
        let id = hex::encode(&digest[..8]);
        let cipher = XChaCha20Poly1305::new_from_slice(bytes)
            .map_err(|_| Error::InvalidInput(format!("a token key is {KEY_BYTES} bytes")))?;
        Ok(Self { id, cipher })
    }

    /// The key's id (a digest of it, safe to store and show).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What a sealed token belongs to: its associated data. The owner is part of it: a ciphertext
/// put back under another owner's name (someone writing the database) does not open.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The watch's organisation.
    pub org: &'a OrgId,
    /// The watch's room.
    pub room_id: &'a RoomId,
    /// The watch's homeserver, as stored.
    pub homeserver_url: &'a str,
    /// The watch's owner, whose token it is.
    pub owner: &'a ActorId,
}

impl<'a> Binding<'a> {
    /// The binding of `owner`'s watch of `room_id` in `org` read from `homeserver`.
    pub fn of(
        org: &'a OrgId,
        room_id: &'a RoomId,
        homeserver: &'a HomeserverUrl,
        owner: &'a ActorId,
    ) -> Self {
        Self { org, room_id, homeserver_url: homeserver.as_str(), owner }
    }

    fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"argus-watch-token\0".to_vec();
        for part in [self.org.as_str(), self.room_id.as_str(), self.homeserver_url, self.owner.as_str()] {
            aad.extend_from_slice(part.as_bytes());
            aad.push(0);
        }
        aad
    }
}

/// What an account's sealed token pair belongs to (a credential shared by the account's
/// watches): organisation, owner, homeserver and Matrix user, not a room. Its associated data
/// differs from any watch's, so neither opens as the other.
#[derive(Debug, Clone, Copy)]
pub struct AccountBinding<'a> {
    /// The organisation.
    pub org: &'a OrgId,
    /// The Argus user who gave the pair.
    pub owner: &'a ActorId,
    /// The homeserver, as stored.
    pub homeserver_url: &'a str,
    /// The Matrix user id of the session.
    pub user_id: &'a str,
}

impl AccountBinding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"argus-account-token\0".to_vec();
        for part in [self.org.as_str(), self.owner.as_str(), self.homeserver_url, self.user_id] {
            aad.extend_from_slice(part.as_bytes());
            aad.push(0);
        }
        aad
    }
}

/// What an account watch's sealed credentials (its access token and recovery key; a
/// refresh-token pair lives in the account's shared row) belong to: the account as
/// [`AccountBinding`] names it, under associated data of its own, so that neither an account's
/// pair nor a room watch's token opens as an account watch's, nor the other way round.
#[derive(Debug, Clone, Copy)]
pub struct AccountWatchBinding<'a>(pub AccountBinding<'a>);

impl AccountWatchBinding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"argus-account-watch-token\0".to_vec();
        aad.extend_from_slice(&self.0.associated_data());
        aad
    }
}

/// What one sealed item of a connector device's state belongs to: the device (organisation,
/// homeserver, Matrix user, device id) and the item (kind and key), so that an item moved to
/// another device, or put under another kind or key, does not open.
#[derive(Debug, Clone, Copy)]
pub struct DeviceBinding<'a> {
    /// The organisation.
    pub org: &'a OrgId,
    /// The homeserver, as stored.
    pub homeserver_url: &'a str,
    /// The Matrix user.
    pub user_id: &'a str,
    /// The device id.
    pub device_id: &'a str,
    /// The item's kind.
    pub kind: &'a str,
    /// The item's key within its kind.
    pub key: &'a str,
}

impl DeviceBinding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"argus-device-state\0".to_vec();
        for part in
            [self.org.as_str(), self.homeserver_url, self.user_id, self.device_id, self.kind, self.key]
        {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// The current key, which seals, and earlier ones, which still open what they sealed.
#[derive(Debug)]
pub struct TokenKeys {
    current: TokenKey,
    previous: Vec<TokenKey>,
}

impl TokenKeys {
    /// Keys with `current` sealing and `previous` opening only.
    pub fn new(current: TokenKey, previous: Vec<TokenKey>) -> Self {
        Self { current, previous }
    }

    /// The current key's id.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Whether one of these keys has the id `key_id`.
    pub fn holds(&self, key_id: &str) -> bool {
        std::iter::once(&self.current).chain(&self.previous).any(|k| k.id == key_id)
    }

    /// Seals `credentials` for the watch `binding` names, with the current key and a fresh
    /// nonce.
    pub fn seal(&self, credentials: &Credentials, binding: Binding<'_>) -> Result<SealedToken> {
        self.seal_with(credentials, &binding.associated_data())
    }

    /// Seals an account's pair (`credentials`) for the account `binding` names.
    pub fn seal_account(
        &self,
        credentials: &Credentials,
        binding: AccountBinding<'_>,
    ) -> Result<SealedToken> {
        self.seal_with(credentials, &binding.associated_data())
    }

    /// Opens an account's sealed pair (as [`TokenKeys::open`] a watch's).
    pub fn open_account(&self, sealed: &SealedToken, binding: AccountBinding<'_>) -> Result<Credentials> {
        self.open_with(sealed, &binding.associated_data())
    }

    /// An account's pair re-sealed under the current key, or `None` when it already is.
    pub fn reseal_account(
        &self,
        sealed: &SealedToken,
        binding: AccountBinding<'_>,
    ) -> Result<Option<SealedToken>> {
        if sealed.key_id == self.current.id {
            return Ok(None);
        }
        let credentials = self.open_account(sealed, binding)?;
        self.seal_account(&credentials, binding).map(Some)
    }

    /// Seals an account watch's credentials for the account `binding` names.
    pub fn seal_account_watch(
        &self,
        credentials: &Credentials,
        binding: AccountWatchBinding<'_>,
    ) -> Result<SealedToken> {
        self.seal_with(credentials, &binding.associated_data())
    }

    /// Opens an account watch's sealed credentials (as [`TokenKeys::open`] a room watch's).
    pub fn open_account_watch(
        &self,
        sealed: &SealedToken,
        binding: AccountWatchBinding<'_>,
    ) -> Result<Credentials> {
        self.open_with(sealed, &binding.associated_data())
    }

    /// An account watch's credentials re-sealed under the current key, or `None` when they
    /// already are.
    pub fn reseal_account_watch(
        &self,
        sealed: &SealedToken,
        binding: AccountWatchBinding<'_>,
    ) -> Result<Option<SealedToken>> {
        if sealed.key_id == self.current.id {
            return Ok(None);
        }
        let credentials = self.open_account_watch(sealed, binding)?;
        self.seal_account_watch(&credentials, binding).map(Some)
    }

    fn seal_with(&self, credentials: &Credentials, aad: &[u8]) -> Result<SealedToken> {
        let plain = credentials.encode()?;
        self.seal_bytes(&plain, aad)
    }

    /// Seals one item of a connector device's state (its serialised bytes) for the item
    /// `binding` names.
    pub fn seal_device_item(&self, plain: &[u8], binding: DeviceBinding<'_>) -> Result<SealedToken> {
        self.seal_bytes(plain, &binding.associated_data())
    }

    /// Opens a sealed item of a device's state (as [`TokenKeys::open`] a watch's token).
    pub fn open_device_item(
        &self,
        sealed: &SealedToken,
        binding: DeviceBinding<'_>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        self.open_bytes(sealed, &binding.associated_data())
    }

    /// A device item re-sealed under the current key, or `None` when it already is.
    pub fn reseal_device_item(
        &self,
        sealed: &SealedToken,
        binding: DeviceBinding<'_>,
    ) -> Result<Option<SealedToken>> {
        if sealed.key_id == self.current.id {
            return Ok(None);
        }
        let plain = self.open_device_item(sealed, binding)?;
        self.seal_device_item(&plain, binding).map(Some)
    }

    fn seal_bytes(&self, plain: &[u8], aad: &[u8]) -> Result<SealedToken> {
        let mut nonce = [0u8; 24];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..]);
        let ciphertext = self
            .current
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
            .map_err(|_| Error::Internal)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(SealedToken {
            key_id: self.current.id.clone(),
            nonce: b64.encode(nonce),
            ciphertext: b64.encode(ciphertext),
        })
    }

    /// Opens the sealed credentials of the watch `binding` names. Fails with
    /// [`Error::InvalidInput`] when no key of this server sealed them, or they do not open
    /// (altered, or moved from another watch); the message never holds a secret.
    pub fn open(&self, sealed: &SealedToken, binding: Binding<'_>) -> Result<Credentials> {
        self.open_with(sealed, &binding.associated_data())
    }

    fn open_with(&self, sealed: &SealedToken, aad: &[u8]) -> Result<Credentials> {
        let plain = self.open_bytes(sealed, aad)?;
        Credentials::decode(&plain)
            .ok_or_else(|| Error::InvalidInput("the watch's sealed token does not open".into()))
    }

    fn open_bytes(&self, sealed: &SealedToken, aad: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let key =
            std::iter::once(&self.current).chain(&self.previous).find(|k| k.id == sealed.key_id).ok_or_else(
                || Error::InvalidInput("the watch's token was sealed with a key this server lacks".into()),
            )?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let broken = || Error::InvalidInput("the watch's sealed token does not open".into());
        let nonce = b64.decode(&sealed.nonce).map_err(|_| broken())?;
        let ciphertext = b64.decode(&sealed.ciphertext).map_err(|_| broken())?;
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| broken())?;
        key.cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &ciphertext, aad })
            .map(zeroize::Zeroizing::new)
            .map_err(|_| broken())
    }

    /// The credentials re-sealed under the current key, or `None` when they already are.
    pub fn reseal(&self, sealed: &SealedToken, binding: Binding<'_>) -> Result<Option<SealedToken>> {
        if sealed.key_id == self.current.id {
            return Ok(None);
        }
        let credentials = self.open(sealed, binding)?;
        self.seal(&credentials, binding).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (TokenKeys, OrgId, RoomId) {
        let key = TokenKey::new(&[7; 32]).unwrap_or_else(|e| panic!("{e}"));
        let org: OrgId = "dgsi".parse().unwrap_or_else(|e| panic!("{e}"));
        let room: RoomId = "!a:tchap.test".parse().unwrap_or_else(|e| panic!("{e}"));
        (TokenKeys::new(key, Vec::new()), org, room)
    }

    const RECOVERY_KEY: &str = "EsTc LW2K PGiF wKEA 3As5 g5c4 BXwk qeeJ ZJV8 Q9fu gUMN UE4d";

    fn creds(token: &str, recovery_key: Option<&str>) -> Credentials {
        Credentials {
            access_token: AccessToken::new(token),
            recovery_key: recovery_key.map(Secret::new),
            ..Credentials::default()
        }
    }

    #[test]
    fn a_refresh_token_is_sealed_with_its_expiry_and_client_id_and_older_versions_still_open() {
        let (keys, org, room) = keys();
        let owner = alice();
        let binding =
            Binding { org: &org, room_id: &room, homeserver_url: "https://matrix.tchap.test", owner: &owner };
        let expires_at = argus_domain::from_unix_ms(1_900_000_000_123).unwrap_or_else(|e| panic!("{e}"));
        let renewable = Credentials {
            refresh_token: Some(Secret::new("syr_secret_refresh_token_42")),
            expires_at: Some(expires_at),
            lifetime: Some(std::time::Duration::from_secs(300)),
            oauth_client_id: Some("01JCLIENT".into()),
            ..creds("syt_secret_matrix_token_123456", Some(RECOVERY_KEY))
        };
        let sealed = keys.seal(&renewable, binding).unwrap_or_else(|e| panic!("{e}"));
        let opened = keys.open(&sealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.access_token.expose_secret(), "syt_secret_matrix_token_123456");
        assert_eq!(
            opened.refresh_token.as_ref().map(Secret::expose_secret),
            Some("syr_secret_refresh_token_42")
        );
        assert_eq!(opened.recovery_key.as_ref().map(Secret::expose_secret), Some(RECOVERY_KEY));
        assert_eq!(
            (opened.expires_at, opened.lifetime, opened.oauth_client_id.as_deref()),
            (Some(expires_at), Some(std::time::Duration::from_secs(300)), Some("01JCLIENT"))
        );
        let shown = format!("{opened:?} {:?}", opened.pair());
        assert!(!shown.contains("syr_secret") && !shown.contains("syt_secret"), "{shown}");
        // Versions 1 and 2 are still what credentials without a refresh token seal to.
        let v2 = creds("syt_v2_token_0000", Some(RECOVERY_KEY)).encode().unwrap_or_else(|e| panic!("{e}"));
        assert!(v2.starts_with(WITH_RECOVERY_KEY));
        let bad =
            Credentials { refresh_token: Some(Secret::new("syr with space")), ..creds("syt_ok_token", None) };
        let error = keys.seal(&bad, binding).map(drop).unwrap_err();
        assert!(error.code() == "INVALID_INPUT" && !error.to_string().contains("syr"));
    }

    #[test]
    fn a_recovery_key_is_sealed_with_the_token_and_a_bare_token_still_opens() {
        let (keys, org, room) = keys();
        let owner = alice();
        let binding =
            Binding { org: &org, room_id: &room, homeserver_url: "https://matrix.tchap.test", owner: &owner };
        let both = creds("syt_secret_matrix_token_123456", Some(RECOVERY_KEY));
        let sealed = keys.seal(&both, binding).unwrap_or_else(|e| panic!("{e}"));
        let opened = keys.open(&sealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.access_token.expose_secret(), "syt_secret_matrix_token_123456");
        assert_eq!(opened.recovery_key.as_ref().map(Secret::expose_secret), Some(RECOVERY_KEY));
        let shown = format!("{opened:?} {sealed:?}");
        assert!(!shown.contains("syt_secret") && !shown.contains("EsTc"), "{shown}");
        // What a watch sealed before it could hold a key (the token's bytes alone) opens as a
        // token without a key.
        let bare = creds("syt_older_watch_token_0000", None);
        let sealed = keys.seal(&bare, binding).unwrap_or_else(|e| panic!("{e}"));
        let plain = bare.encode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain, b"syt_older_watch_token_0000");
        let opened = keys.open(&sealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.access_token.expose_secret(), "syt_older_watch_token_0000");
        assert!(opened.recovery_key.is_none());
        // A token or key that cannot be sealed is refused, with neither in the message.
        for bad in [
            creds("syt with space", None),
            creds("syt_ok_token", Some("")),
            creds("syt_ok_token", Some("a\0b")),
        ] {
            let error = keys.seal(&bad, binding).map(drop).unwrap_err();
            assert_eq!(error.code(), "INVALID_INPUT");
            assert!(!error.to_string().contains("syt"));
        }
    }

    fn alice() -> ActorId {
        "alice".parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_sealed_token_opens_only_for_its_watch_and_never_shows_in_clear() {
        let (keys, org, room) = keys();
        let hs = "https://matrix.tchap.test";
        let owner = alice();
        let binding = Binding { org: &org, room_id: &room, homeserver_url: hs, owner: &owner };
        let token = creds("syt_secret_matrix_token_123456", None);
        let sealed = keys.seal(&token, binding).unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.ciphertext.contains("syt_secret"));
        assert!(!format!("{sealed:?}").contains(&sealed.ciphertext));
        let opened = keys.open(&sealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.access_token.expose_secret(), token.access_token.expose_secret());
        assert!(opened.recovery_key.is_none());
        // Twice sealed: two nonces, two ciphertexts.
        assert_ne!(keys.seal(&token, binding).map(|s| s.ciphertext).ok(), Some(sealed.ciphertext.clone()));
        // Moved to another room's watch, or another organisation's: it does not open.
        let other_room: RoomId = "!b:tchap.test".parse().unwrap_or_else(|e| panic!("{e}"));
        let moved = Binding { org: &org, room_id: &other_room, homeserver_url: hs, owner: &owner };
        assert_eq!(keys.open(&sealed, moved).map(drop).map_err(|e| e.code()), Err("INVALID_INPUT"));
        let other_org: OrgId = "anssi".parse().unwrap_or_else(|e| panic!("{e}"));
        let moved = Binding { org: &other_org, room_id: &room, homeserver_url: hs, owner: &owner };
        assert!(keys.open(&sealed, moved).is_err());
        let mallory: ActorId = "mallory".parse().unwrap_or_else(|e| panic!("{e}"));
        let moved = Binding { org: &org, room_id: &room, homeserver_url: hs, owner: &mallory };
        assert!(keys.open(&sealed, moved).is_err(), "another owner's name");
        // Altered: it does not open.
        let mut altered = sealed.clone();
        altered.ciphertext.replace_range(0..4, "AAAA");
        assert!(keys.open(&altered, binding).is_err());
    }

    #[test]
    fn an_accounts_pair_opens_only_for_that_account_and_never_as_a_watchs_token() {
        let (keys, org, room) = keys();
        let owner = alice();
        let hs = "https://matrix.tchap.test";
        let pair =
            Credentials { refresh_token: Some(Secret::new("syr_SECRET")), ..creds("syt_SECRET", None) };
        let account =
            AccountBinding { org: &org, owner: &owner, homeserver_url: hs, user_id: "@a:tchap.test" };
        let sealed = keys.seal_account(&pair, account).unwrap_or_else(|e| panic!("{e}"));
        let opened = keys.open_account(&sealed, account).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.refresh_token.as_ref().map(Secret::expose_secret), Some("syr_SECRET"));
        let other_user = AccountBinding { user_id: "@b:tchap.test", ..account };
        assert!(keys.open_account(&sealed, other_user).is_err());
        let watch = Binding { org: &org, room_id: &room, homeserver_url: hs, owner: &owner };
        assert!(keys.open(&sealed, watch).is_err(), "not a watch's token");
        let watch_sealed = keys.seal(&pair, watch).unwrap_or_else(|e| panic!("{e}"));
        assert!(keys.open_account(&watch_sealed, account).is_err(), "not an account's pair");
        let rotated = TokenKeys::new(
            TokenKey::new(&[8; 32]).unwrap_or_else(|e| panic!("{e}")),
            vec![TokenKey::new(&[7; 32]).unwrap_or_else(|e| panic!("{e}"))],
        );
        let resealed = rotated.reseal_account(&sealed, account).unwrap_or_else(|e| panic!("{e}"));
        let resealed = resealed.unwrap_or_else(|| panic!("resealed"));
        assert_eq!(resealed.key_id, rotated.current_id());
        assert!(rotated.open_account(&resealed, account).is_ok());
        assert!(!resealed.ciphertext.contains("SECRET"));
    }

    #[test]
    fn rotation_reseals_under_the_new_key_and_the_old_one_can_then_go() {
        let (old, org, room) = keys();
        let hs = "https://matrix.tchap.test";
        let owner = alice();
        let binding = Binding { org: &org, room_id: &room, homeserver_url: hs, owner: &owner };
        let token = creds("syt_secret_matrix_token_123456", Some(RECOVERY_KEY));
        let sealed = old.seal(&token, binding).unwrap_or_else(|e| panic!("{e}"));
        let new_key = TokenKey::new(&[9; 32]).unwrap_or_else(|e| panic!("{e}"));
        let old_key = TokenKey::new(&[7; 32]).unwrap_or_else(|e| panic!("{e}"));
        let rotated = TokenKeys::new(new_key, vec![old_key]);
        let resealed = rotated
            .reseal(&sealed, binding)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("resealed"));
        assert_eq!(resealed.key_id, rotated.current_id());
        assert_eq!(rotated.reseal(&resealed, binding).map(|r| r.is_none()).ok(), Some(true));
        let only_new = TokenKeys::new(TokenKey::new(&[9; 32]).unwrap_or_else(|e| panic!("{e}")), Vec::new());
        let opened = only_new.open(&resealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.access_token.expose_secret(), token.access_token.expose_secret());
        assert_eq!(
            opened.recovery_key.as_ref().map(Secret::expose_secret),
            Some(RECOVERY_KEY),
            "the key moves too"
        );
        assert!(only_new.open(&sealed, binding).is_err(), "the old key is gone");
        assert!(only_new.holds(rotated.current_id()) && !only_new.holds(&sealed.key_id));
        assert!(TokenKey::new(&[1; 16]).is_err());
    }

    #[test]
    fn a_device_item_opens_only_as_the_item_and_device_it_was_sealed_for() {
        let (keys, org, _) = keys();
        let binding = DeviceBinding {
            org: &org,
            homeserver_url: "https://matrix.tchap.test",
            user_id: "@service:tchap.test",
            device_id: "ARGUSDEV",
            kind: "account",
            key: "",
        };
        let plain = br#"{"pickle":"secret olm account"}"#;
        let sealed = keys.seal_device_item(plain, binding).unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.ciphertext.contains("secret"));
        let opened = keys.open_device_item(&sealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.as_slice(), plain);
        for moved in [
            DeviceBinding { device_id: "OTHERDEV", ..binding },
            DeviceBinding { user_id: "@other:tchap.test", ..binding },
            DeviceBinding { kind: "olm_session", ..binding },
            DeviceBinding { key: "x", ..binding },
            // Parts are length-prefixed: shifting bytes between two parts changes the binding.
            DeviceBinding { kind: "accoun", key: "t", ..binding },
        ] {
            assert!(keys.open_device_item(&sealed, moved).is_err(), "{moved:?}");
        }
        let rotated = TokenKeys::new(
            TokenKey::new(&[9; 32]).unwrap_or_else(|e| panic!("{e}")),
            vec![TokenKey::new(&[7; 32]).unwrap_or_else(|e| panic!("{e}"))],
        );
        let resealed = rotated.reseal_device_item(&sealed, binding).unwrap_or_else(|e| panic!("{e}"));
        let resealed = resealed.unwrap_or_else(|| panic!("sealed under the old key: resealed"));
        assert_eq!(resealed.key_id, rotated.current_id());
        assert!(rotated.reseal_device_item(&resealed, binding).unwrap_or_else(|e| panic!("{e}")).is_none());
        let opened = rotated.open_device_item(&resealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.as_slice(), plain);
    }
}
