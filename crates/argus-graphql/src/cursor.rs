//! Opaque, tamper-proof pagination cursors.
//!
//! A cursor is `base64url(position JSON ‖ tag)`, where `tag = HMAC-SHA256(key, list ‖ org ‖
//! clearance ‖ position JSON)`. The position is the store's keyset cursor; the tag binds it to
//! the list it came from (for messages: the room), the caller's organisation and clearance. A
//! cursor edited, forged, or replayed by a caller of another organisation or clearance is
//! rejected with `BAD_CURSOR`. Even a valid cursor only says where a list resumes: the store
//! still filters every row by the caller's organisation and clearance.

use argus_domain::Viewer;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;

use crate::{Error, Result};

const TAG_LEN: usize = 32;
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
}

impl CursorKind<'_> {
    fn label(&self) -> (&'static str, &str) {
        match self {
            Self::Rooms => ("rooms", ""),
            Self::Messages(room) => ("messages", room),
            Self::Ingestions => ("ingestions", ""),
        }
    }
}

/// The server key that signs cursors.
#[derive(Clone)]
pub struct CursorKey(Vec<u8>);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey([redacted])")
    }
}

impl CursorKey {
    /// A key from configured bytes (at least 32 are recommended).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// A fresh random key: cursors then stay valid for the life of the process.
    pub fn random() -> Self {
        let mut bytes = vec![0_u8; 32];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// The MAC keyed and fed with the binding (list, organisation, clearance), before the
    /// position.
    fn binding(&self, kind: CursorKind<'_>, viewer: &Viewer) -> Hmac<Sha256> {
        // Keys of any length are accepted by HMAC.
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        let (list, room) = kind.label();
        for part in [list.as_bytes(), room.as_bytes(), viewer.org.as_str().as_bytes()] {
            mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(part);
        }
        mac.update(&viewer.clearance.rank().to_be_bytes());
        mac
    }

    /// The signer of every cursor of one page: the key and the binding are hashed once, not
    /// once per edge.
    pub(crate) fn signer(&self, kind: CursorKind<'_>, viewer: &Viewer) -> CursorSigner {
        CursorSigner(self.binding(kind, viewer))
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
        if raw.len() <= TAG_LEN {
            return Err(Error::BadCursor);
        }
        let (data, tag) = raw.split_at(raw.len() - TAG_LEN);
        let mut mac = self.binding(kind, viewer);
        mac.update(data);
        mac.verify_slice(tag).map_err(|_| Error::BadCursor)?;
        serde_json::from_slice(data).map_err(|_| Error::BadCursor)
    }
}

/// Encodes the cursors of one list for one caller ([`CursorKey::signer`]).
pub(crate) struct CursorSigner(Hmac<Sha256>);

impl CursorSigner {
    /// Encodes a keyset position into an opaque cursor.
    pub(crate) fn encode<P: Serialize>(&self, position: &P) -> String {
        // Positions are plain structs of integers: serialisation cannot fail.
        let mut data = serde_json::to_vec(position).unwrap_or_default();
        let mut mac = self.0.clone();
        mac.update(&data);
        data.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(data)
    }
}

#[cfg(test)]
mod tests {
    use argus_domain::{Classification, Scope};
    use argus_store::{IngestionCursor, MessageCursor, RoomCursor};

    use super::*;

    fn viewer(org: &str, clearance: Classification) -> Viewer {
        Viewer::new("a".parse().unwrap(), org.parse().unwrap(), clearance, [Scope::Read])
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
    fn edited_and_forged_cursors_are_rejected() {
        let key = CursorKey::random();
        let v = viewer("dgsi", Classification::Secret);
        let c = key.encode(CursorKind::Ingestions, &v, &IngestionCursor { seq: 9 });
        let mut raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        // {"seq":9} -> {"seq":1}
        if let Some(b) = raw.iter_mut().find(|b| **b == b'9') {
            *b = b'1';
        }
        let edited = URL_SAFE_NO_PAD.encode(&raw);
        assert!(key.decode::<IngestionCursor>(CursorKind::Ingestions, &v, &edited).is_err());
        let forged = URL_SAFE_NO_PAD.encode(br#"{"seq":1}"#);
        assert!(key.decode::<IngestionCursor>(CursorKind::Ingestions, &v, &forged).is_err());
        for garbage in ["", "!!!", "AAAA", &"A".repeat(600)] {
            assert!(key.decode::<IngestionCursor>(CursorKind::Ingestions, &v, garbage).is_err());
        }
    }
}
