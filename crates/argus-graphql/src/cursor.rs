//! Opaque pagination cursors and node ids.
//!
//! A cursor is `base64url(nonce ‖ AES-256-SIV(position JSON))` (RFC 5297, nonce-based: the
//! binding, the list it came from, for messages the room, the caller's organisation and
//! clearance, and a random 16-byte nonce are its associated data). AES-SIV runs on the AES
//! instructions; for a 30-byte position it costs a fraction of an XChaCha20-Poly1305 seal
//! (measured in docs/benchmarks.md), which mattered at a hundred cursors per page. The position (a storage id, a time) is therefore unreadable as well as
//! tamper-proof: a cursor edited, forged, or replayed by a caller of another organisation or
//! clearance fails to decrypt and is rejected with `BAD_CURSOR`. Even a valid cursor only says
//! where a list resumes: the store still filters every row by organisation and clearance.
//!
//! A node id is `base64url(HMAC-SHA256(id key, organisation ‖ type ‖ storage id))`, cut to
//! 16 bytes: stable for one organisation under one key, unrelated across organisations, and
//! telling nothing of the counters storage ids come from (which are shared by every
//! organisation, so plain ids would show one tenant another's volume).
//!
//! Both keys are derived (HKDF-SHA256) from the one configured secret.

use aes_siv::{KeyInit as _, siv::Aes256Siv};
use argus_domain::{Secret, Viewer};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;

use crate::{Error, Result};

/// Bytes of a cursor's random nonce.
const NONCE_LEN: usize = 16;
/// Bytes of the SIV tag.
const TAG_LEN: usize = 16;
/// Bytes of an AES-256-SIV key (a MAC key and an encryption key).
const SIV_KEY_LEN: usize = 64;
/// Bytes of a node id's keyed hash.
const ID_LEN: usize = 16;
/// Longest cursor accepted (the JSON positions are well under 200 bytes).
const MAX_CURSOR_LEN: usize = 512;

/// The list a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind<'a> {
    /// `tchapRooms`.
    Rooms,
    /// `tchapMessages` / `TchapRoom.messages` of one room.
    Messages(&'a str),
    /// `tchapIngestions`.
    Ingestions,
    /// `TchapRoom.stateHistory` of one room.
    RoomStates(&'a str),
    /// `tchapSearch`, bound to the search it pages (query and filters, in canonical form).
    Search(&'a str),
    /// `tchapWatches`.
    Watches,
    /// `tchapAccessLog`.
    AccessLog,
    /// `tchapAccountWatches`.
    AccountWatches,
}

impl CursorKind<'_> {
    fn label(&self) -> (&'static str, &str) {
        match self {
            Self::Rooms => ("rooms", ""),
            Self::Messages(room) => ("messages", room),
            Self::Ingestions => ("ingestions", ""),
            Self::RoomStates(room) => ("room-states", room),
            Self::Search(search) => ("search", search),
            Self::Watches => ("watches", ""),
            Self::AccessLog => ("access", ""),
            Self::AccountWatches => ("account-watches", ""),
        }
    }
}

/// The server secret behind cursors and node ids.
#[derive(Clone, Debug)]
pub struct CursorKey {
    cipher: Secret<[u8; SIV_KEY_LEN]>,
    ids: Secret<Hmac<Sha256>>,
}

impl CursorKey {
    /// Keys derived from configured bytes (at least 32 are recommended).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let secret = bytes.into();
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"argus-tchap"), &secret);
        let (mut cursor_key, mut id_key) = ([0_u8; SIV_KEY_LEN], [0_u8; 32]);
        // 64 bytes is far below HKDF-SHA256's limit of 8,160.
        let _ = hkdf.expand(b"cursor encryption (AES-SIV)", &mut cursor_key);
        let _ = hkdf.expand(b"node ids", &mut id_key);
        let cipher = cursor_key;
        let ids = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&id_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        Self { cipher: Secret::from_value(cipher), ids: Secret::from_value(ids) }
    }

    /// A fresh random key: cursors and ids then hold for the life of the process only.
    pub fn random() -> Self {
        let mut bytes = vec![0_u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        Self::new(bytes)
    }

    /// The associated data binding a cursor: list, room, organisation, clearance.
    fn binding(kind: CursorKind<'_>, viewer: &Viewer) -> Vec<u8> {
        let (list, room) = kind.label();
        let mut aad = Vec::with_capacity(64);
        for part in [list.as_bytes(), room.as_bytes(), viewer.org.as_str().as_bytes()] {
            aad.extend_from_slice(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&viewer.clearance.rank().to_be_bytes());
        aad
    }

    /// The encoder of every cursor of one page: the binding is computed once, not per edge.
    pub(crate) fn signer(&self, kind: CursorKind<'_>, viewer: &Viewer) -> CursorSigner {
        CursorSigner { cipher: self.siv(), aad: Self::binding(kind, viewer) }
    }

    /// An AES-SIV instance under the cursor key.
    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new(self.cipher.expose_value().into())
    }

    /// Encodes a keyset position into an opaque cursor for `viewer`.
    pub fn encode<P: Serialize>(&self, kind: CursorKind<'_>, viewer: &Viewer, position: &P) -> String {
        self.signer(kind, viewer).encode(position)
    }

    /// Decodes a cursor issued by [`CursorKey::encode`] for the same list and caller.
    pub fn decode<P: DeserializeOwned>(
        &self,
        kind: CursorKind<'_>,
        viewer: &Viewer,
        cursor: &str,
    ) -> Result<P> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(Error::BadCursor);
        }
        let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| Error::BadCursor)?;
        if raw.len() <= NONCE_LEN + TAG_LEN {
            return Err(Error::BadCursor);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let aad = Self::binding(kind, viewer);
        let data = self.siv().decrypt([aad.as_slice(), nonce], sealed).map_err(|_| Error::BadCursor)?;
        serde_json::from_slice(&data).map_err(|_| Error::BadCursor)
    }

    /// The opaque id of a node of type `kind` with storage id `id`, as `viewer`'s organisation
    /// sees it.
    pub fn node_id(&self, kind: &str, viewer: &Viewer, id: i64) -> String {
        let mut mac = self.ids.expose_value().clone();
        for part in [viewer.org.as_str().as_bytes(), kind.as_bytes()] {
            mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(part);
        }
        mac.update(&id.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&digest[..ID_LEN])
    }
}

/// Encodes the cursors of one list for one caller ([`CursorKey::signer`]).
pub(crate) struct CursorSigner {
    cipher: Aes256Siv,
    aad: Vec<u8>,
}

impl CursorSigner {
    /// Encrypts a keyset position into an opaque cursor.
    pub(crate) fn encode<P: Serialize>(&mut self, position: &P) -> String {
        // Positions are plain structs of integers: serialisation cannot fail.
        let data = serde_json::to_vec(position).unwrap_or_default();
        let mut nonce = [0_u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..]);
        // Encryption fails only with more associated data than SIV takes (two here).
        let sealed = self.cipher.encrypt([self.aad.as_slice(), &nonce], &data).unwrap_or_default();
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(raw)
    }
}

#[cfg(test)]
mod tests {
    use argus_domain::{Classification, testing::ViewerBuilder};
    use argus_store::{IngestionCursor, MessageCursor, RoomCursor};

    use super::*;

    fn viewer(org: &str, clearance: Classification) -> Viewer {
        ViewerBuilder::new(org).actor("a").clearance(clearance).build()
    }

    #[test]
    fn round_trip() {
        let key = CursorKey::random();
        let v = viewer("dgsi", Classification::Secret);
        let pos = RoomCursor { last_activity_ms: Some(1_700_000_000_000), id: 42 };
        let c = key.encode(CursorKind::Rooms, &v, &pos);
        assert_eq!(key.decode::<RoomCursor>(CursorKind::Rooms, &v, &c).unwrap(), pos);
        let m = MessageCursor { sent_at_ms: 5, id: 7 };
        let c = key.encode(CursorKind::Messages("!r:x"), &v, &m);
        assert_eq!(key.decode::<MessageCursor>(CursorKind::Messages("!r:x"), &v, &c).unwrap(), m);
    }

    #[test]
    fn cursors_do_not_cross_tenants_lists_rooms_clearances_or_keys() {
        let key = CursorKey::random();
        let v = viewer("dgsi", Classification::Secret);
        let c = key.encode(CursorKind::Ingestions, &v, &IngestionCursor { seq: 9 });
        let bad = |r: Result<IngestionCursor>| assert!(matches!(r, Err(Error::BadCursor)));
        bad(key.decode(CursorKind::Ingestions, &viewer("anssi", Classification::Secret), &c));
        bad(key.decode(CursorKind::Ingestions, &viewer("dgsi", Classification::TopSecret), &c));
        bad(key.decode(CursorKind::Rooms, &v, &c));
        bad(CursorKey::random().decode(CursorKind::Ingestions, &v, &c));
        let m = key.encode(CursorKind::Messages("!a:x"), &v, &MessageCursor { sent_at_ms: 1, id: 1 });
        assert!(key.decode::<MessageCursor>(CursorKind::Messages("!b:x"), &v, &m).is_err());
    }

    #[test]
    fn cursors_do_not_show_the_position() {
        let key = CursorKey::random();
        let v = viewer("dgsi", Classification::Secret);
        let c = key.encode(CursorKind::Ingestions, &v, &IngestionCursor { seq: 987_654 });
        let raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("987654"));
        assert!(!raw.windows(3).any(|w| w == b"seq"));
        // Two cursors of one position differ (random nonce): equal positions are not linkable.
        assert_ne!(c, key.encode(CursorKind::Ingestions, &v, &IngestionCursor { seq: 987_654 }));
    }

    #[test]
    fn node_ids_are_keyed_per_organisation_and_stable() {
        let key = CursorKey::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let a = viewer("dgsi", Classification::Secret);
        let b = viewer("anssi", Classification::Secret);
        let id = key.node_id("TchapRoom", &a, 42);
        assert_eq!(id, key.node_id("TchapRoom", &viewer("dgsi", Classification::Restricted), 42));
        assert_eq!(
            id,
            CursorKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).node_id("TchapRoom", &a, 42)
        );
        assert_ne!(id, key.node_id("TchapRoom", &b, 42));
        assert_ne!(id, key.node_id("TchapMessage", &a, 42));
        assert_ne!(id, key.node_id("TchapRoom", &a, 43));
        let raw = URL_SAFE_NO_PAD.decode(&id).unwrap();
        assert_eq!(raw.len(), 16);
        assert!(!String::from_utf8_lossy(&raw).contains("42"));
    }

    #[test]
    fn edited_and_forged_cursors_are_rejected() {
        let key = CursorKey::random();
        let v = viewer("dgsi", Classification::Secret);
        let c = key.encode(CursorKind::Ingestions, &v, &IngestionCursor { seq: 9 });
        let mut raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        // One flipped bit of the sealed position.
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let edited = URL_SAFE_NO_PAD.encode(&raw);
        assert!(key.decode::<IngestionCursor>(CursorKind::Ingestions, &v, &edited).is_err());
        let forged = URL_SAFE_NO_PAD.encode(br#"{"seq":1}"#);
        assert!(key.decode::<IngestionCursor>(CursorKind::Ingestions, &v, &forged).is_err());
        for garbage in ["", "!!!", "AAAA", &"A".repeat(600)] {
            assert!(key.decode::<IngestionCursor>(CursorKind::Ingestions, &v, garbage).is_err());
        }
    }
}
