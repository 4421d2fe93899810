//! A megolm session held for a run, with the ratchet positions a read passed kept, so that an
//! older page starts from the nearest one below instead of the session's first known index.

use std::collections::BTreeMap;

use vodozemac::{hazmat::Cipher, megolm::InboundGroupSession};

/// Ratchet positions kept per session ([`Held::cipher_at`]): enough for a 256-message block in
/// steps of [`CHECKPOINT_STEP`] and the positions above it, bounded so that 10,000 sessions stay
/// within tens of megabytes.
pub(super) const MAX_CHECKPOINTS: usize = 24;

/// Messages between two kept ratchet positions inside a 256-message block.
const CHECKPOINT_STEP: u32 = 16;

/// A session, with its sending device's Curve25519 key as the backup records it: the two move
/// together (into `decrypt_all`'s threads and back).
pub(super) struct Held {
    pub(super) session: InboundGroupSession,
    pub(super) sender_key: Option<String>,
    /// The session's Ed25519 key (a megolm session id is that key, base64), which signs every
    /// message of the session; `None` when it is not a usable key (a weak or malformed one).
    pub(super) signing_key: Option<ed25519_dalek::VerifyingKey>,
    /// Copies of the session advanced to later messages, by message index: reaching a message
    /// from the nearest one below costs a few hashes instead of up to a thousand from the first
    /// known index (a backwards read meets each session's messages newest page first).
    pub(super) checkpoints: BTreeMap<u32, InboundGroupSession>,
}

/// A copy of `session` (vodozemac sessions are not `Clone`; a pickle is the session's state).
fn copy_session(session: &InboundGroupSession) -> InboundGroupSession {
    InboundGroupSession::from_pickle(session.pickle())
}

impl Held {
    pub(super) fn new(session: InboundGroupSession, sender_key: Option<String>) -> Self {
        let signing_key = vodozemac::base64_decode(session.session_id())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .and_then(|bytes| ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok())
            .filter(|key| !key.is_weak());
        Self { session, sender_key, signing_key, checkpoints: BTreeMap::new() }
    }

    /// The message keys of message `index`, or `None` before the session's first known index.
    /// Positions on the way (block boundaries, every [`CHECKPOINT_STEP`] messages) are kept for
    /// the messages that come next; those above `index` are dropped (reads move one way).
    pub(super) fn cipher_at(&mut self, index: u32) -> Option<Cipher> {
        if index < self.session.first_known_index() {
            return None;
        }
        drop(self.checkpoints.split_off(&index.saturating_add(1)));
        let mut at = match self.checkpoints.last_key_value() {
            Some((_, nearest)) => copy_session(nearest),
            None => copy_session(&self.session),
        };
        let start = at.first_known_index();
        let block = index & !0xff;
        let stops = [index & !0xff_ffff, index & !0xffff]
            .into_iter()
            .chain((block..index).step_by(CHECKPOINT_STEP as usize))
            .filter(|&stop| stop > start);
        for stop in stops {
            at.advance_to(stop);
            self.checkpoints.insert(stop, copy_session(&at));
        }
        at.advance_to(index);
        let cipher = at.get_cipher_at(index);
        self.checkpoints.insert(index, at);
        while self.checkpoints.len() > MAX_CHECKPOINTS {
            self.checkpoints.pop_first();
        }
        cipher
    }
}
