//! The keys that seal watched rooms' Matrix tokens at rest: XChaCha20-Poly1305 with a random
//! nonce per token, the associated data binding each ciphertext to its watch (organisation,
//! room, homeserver), so a ciphertext copied to another row does not open. The keys are held
//! outside the database (configuration or file); the database keeps only a key's id, a digest.
//! Rotation: the new key becomes current, the old ones stay as `previous` until every token is
//! re-sealed ([`TokenKeys::reseal`]).

use argus_domain::{AccessToken, ActorId, HomeserverUrl, OrgId, RoomId, SealedToken};
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

    /// Seals `token` for the watch `binding` names, with the current key and a fresh nonce.
    pub fn seal(&self, token: &AccessToken, binding: Binding<'_>) -> Result<SealedToken> {
        let plain = token.expose_secret().as_bytes();
        if plain.is_empty() || plain.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidInput("the access token is empty or too long".into()));
        }
        let mut nonce = [0u8; 24];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..]);
        let aad = binding.associated_data();
        let ciphertext = self
            .current
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad: &aad })
            .map_err(|_| Error::Internal)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(SealedToken {
            key_id: self.current.id.clone(),
            nonce: b64.encode(nonce),
            ciphertext: b64.encode(ciphertext),
        })
    }

    /// Opens a sealed token of the watch `binding` names. Fails with
    /// [`Error::InvalidInput`] when no key of this server sealed it, or it does not open (it was
    /// altered, or moved from another watch); the message never holds the token.
    pub fn open(&self, sealed: &SealedToken, binding: Binding<'_>) -> Result<AccessToken> {
        let key =
            std::iter::once(&self.current).chain(&self.previous).find(|k| k.id == sealed.key_id).ok_or_else(
                || Error::InvalidInput("the watch's token was sealed with a key this server lacks".into()),
            )?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let broken = || Error::InvalidInput("the watch's sealed token does not open".into());
        let nonce = b64.decode(&sealed.nonce).map_err(|_| broken())?;
        let ciphertext = b64.decode(&sealed.ciphertext).map_err(|_| broken())?;
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| broken())?;
        let aad = binding.associated_data();
        let plain = key
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &ciphertext, aad: &aad })
            .map_err(|_| broken())?;
        let text = String::from_utf8(plain).map_err(|_| broken())?;
        Ok(AccessToken::new(text))
    }

    /// The token re-sealed under the current key, or `None` when it already is.
    pub fn reseal(&self, sealed: &SealedToken, binding: Binding<'_>) -> Result<Option<SealedToken>> {
        if sealed.key_id == self.current.id {
            return Ok(None);
        }
        let token = self.open(sealed, binding)?;
        self.seal(&token, binding).map(Some)
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

    fn alice() -> ActorId {
        "alice".parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_sealed_token_opens_only_for_its_watch_and_never_shows_in_clear() {
        let (keys, org, room) = keys();
        let hs = "https://matrix.tchap.test";
        let owner = alice();
        let binding = Binding { org: &org, room_id: &room, homeserver_url: hs, owner: &owner };
        let token = AccessToken::new("syt_secret_matrix_token_123456");
        let sealed = keys.seal(&token, binding).unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.ciphertext.contains("syt_secret"));
        assert!(!format!("{sealed:?}").contains(&sealed.ciphertext));
        let opened = keys.open(&sealed, binding).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.expose_secret(), token.expose_secret());
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
    fn rotation_reseals_under_the_new_key_and_the_old_one_can_then_go() {
        let (old, org, room) = keys();
        let hs = "https://matrix.tchap.test";
        let owner = alice();
        let binding = Binding { org: &org, room_id: &room, homeserver_url: hs, owner: &owner };
        let token = AccessToken::new("syt_secret_matrix_token_123456");
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
        assert_eq!(
            only_new.open(&resealed, binding).map(|t| t.expose_secret().to_owned()).ok().as_deref(),
            Some(token.expose_secret())
        );
        assert!(only_new.open(&sealed, binding).is_err(), "the old key is gone");
        assert!(only_new.holds(rotated.current_id()) && !only_new.holds(&sealed.key_id));
        assert!(TokenKey::new(&[1; 16]).is_err());
    }
}
