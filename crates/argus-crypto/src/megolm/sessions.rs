//! The megolm sessions of one run ([`SessionKeys`]) and the decryption of room events with them:
//! each message's MAC checked and its ciphertext decrypted with the message keys at its index,
//! the signatures of many checked together, the sessions shared out over the machine's cores.

use std::{collections::HashMap, fmt};

use serde::Deserialize;
use vodozemac::megolm::{InboundGroupSession, MegolmMessage};

use super::{
    Decrypted, DecryptedEvent, Decryptor, EncryptedContent, EncryptedEvent, MEGOLM_ALGORITHM, Undecryptable,
    ratchet::Held,
    signatures::{Opened, verify_signatures},
};
use crate::encoding::MAX_FIELD_BYTES;

/// Worker threads a page's decryption is shared out over: the machine's cores, at most four
/// (asked once: on Linux the answer reads the cgroup files).
static THREADS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(4)
});

/// Bytes of a megolm (v1) message's truncated MAC and of its Ed25519 signature.
const MAC_BYTES: usize = 8;
const SIGNATURE_BYTES: usize = 64;

/// The event a ciphertext carries.
#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    event_type: String,
    content: serde_json::Value,
    room_id: Option<String>,
}

/// The megolm sessions of one run, by session id.
#[derive(Default)]
pub struct SessionKeys {
    sessions: HashMap<String, Held>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys").field("sessions", &self.sessions.len()).finish()
    }
}

#[async_trait::async_trait]
impl Decryptor for SessionKeys {
    async fn decrypt_all(&mut self, room_id: &str, events: &[EncryptedEvent<'_>]) -> Vec<Decrypted> {
        let contents: Vec<EncryptedContent> = events.iter().map(|e| e.content.clone()).collect();
        SessionKeys::decrypt_all(self, room_id, &contents)
    }
}

impl SessionKeys {
    /// Adds a session with the sending device's key the backup records: an event of that
    /// session that names another sending device is refused ([`Undecryptable::SenderKeyMismatch`]).
    /// Of two for one session id, the one that knows earlier messages is kept.
    pub fn insert_from(&mut self, session: InboundGroupSession, sender_key: Option<String>) {
        let id = session.session_id();
        match self.sessions.get(&id) {
            Some(known) if known.session.first_known_index() <= session.first_known_index() => {}
            _ => {
                self.sessions.insert(id, Held::new(session, sender_key));
            }
        }
    }

    /// Adds a session whose sending device is not known (see [`SessionKeys::insert_from`]).
    pub fn insert(&mut self, session: InboundGroupSession) {
        self.insert_from(session, None);
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Decrypts many contents read from `room_id`, in the order given for each session (give
    /// them oldest first: a megolm session ratchets forwards cheaply), the sessions shared out
    /// over the machine's cores. Each message is checked as [`SessionKeys::decrypt`] does; the
    /// Ed25519 signatures of a share are checked together ([`ed25519_dalek::verify_batch`],
    /// about a third of the cost of checking them one by one), and one by one only when the
    /// batch fails, to find the messages that do not verify.
    pub fn decrypt_all(&mut self, room_id: &str, contents: &[EncryptedContent]) -> Vec<Decrypted> {
        let threads = *THREADS;
        if threads < 2 || contents.len() < 64 {
            let mut results = vec![Err(Undecryptable::Malformed); contents.len()];
            for (i, r) in self.decrypt_many(room_id, contents.iter().enumerate()) {
                results[i] = r;
            }
            return results;
        }
        // Each session goes to one thread with the indices of its messages, in the given order.
        let mut buckets: Vec<(SessionKeys, Vec<usize>)> =
            (0..threads).map(|_| (SessionKeys::default(), Vec::new())).collect();
        let mut home: HashMap<&str, usize> = HashMap::new();
        for (i, content) in contents.iter().enumerate() {
            let id = content.session_id.as_deref().unwrap_or_default();
            let next = home.len() % threads;
            let b = *home.entry(id).or_insert(next);
            if let Some(session) = self.sessions.remove(id) {
                buckets[b].0.sessions.insert(id.to_owned(), session);
            }
            buckets[b].1.push(i);
        }
        let mut results = vec![Err(Undecryptable::Malformed); contents.len()];
        let done: Vec<(SessionKeys, Vec<(usize, Decrypted)>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = buckets
                .into_iter()
                .map(|(mut keys, indices)| {
                    scope.spawn(move || {
                        let out = keys.decrypt_many(room_id, indices.into_iter().map(|i| (i, &contents[i])));
                        (keys, out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        });
        for (keys, out) in done {
            self.sessions.extend(keys.sessions);
            for (i, r) in out {
                results[i] = r;
            }
        }
        results
    }

    /// Decrypts an `m.room.encrypted` content read from `room_id`.
    pub fn decrypt(&mut self, room_id: &str, content: &EncryptedContent) -> Decrypted {
        self.decrypt_many(room_id, std::iter::once((0, content)))
            .pop()
            .map_or(Err(Undecryptable::Malformed), |(_, r)| r)
    }

    /// Decrypts contents tagged with the caller's positions, in the order given: each one's
    /// MAC checked and its ciphertext decrypted first, then the signatures of all, then the
    /// plaintexts read. Nothing of a message whose signature fails is read.
    fn decrypt_many<'a>(
        &mut self,
        room_id: &str,
        contents: impl Iterator<Item = (usize, &'a EncryptedContent)>,
    ) -> Vec<(usize, Decrypted)> {
        let mut out: Vec<(usize, Decrypted)> = Vec::new();
        let mut opened: Vec<(usize, Opened)> = Vec::new();
        for (i, content) in contents {
            match self.open(content) {
                Ok(message) => {
                    opened.push((out.len(), message));
                    out.push((i, Err(Undecryptable::BadMac)));
                }
                Err(reason) => out.push((i, Err(reason))),
            }
        }
        let verified = verify_signatures(&opened);
        for ((slot, message), good) in opened.into_iter().zip(verified) {
            if good {
                out[slot].1 = read_payload(room_id, &message.plaintext, message.message_index);
            }
        }
        out
    }

    /// Checks a content and its MAC and decrypts its ciphertext; the signature is left to the
    /// caller. The checks are those of vodozemac's `InboundGroupSession::decrypt` (signature,
    /// known index, MAC, decryption), made with its building blocks: the message keys at the
    /// message's index and their cipher.
    fn open(&mut self, content: &EncryptedContent) -> Result<Opened, Undecryptable> {
        if content.algorithm != MEGOLM_ALGORITHM {
            return Err(Undecryptable::UnsupportedAlgorithm);
        }
        let (Some(ciphertext), Some(session_id)) = (&content.ciphertext, &content.session_id) else {
            return Err(Undecryptable::Malformed);
        };
        if ciphertext.len() > MAX_FIELD_BYTES {
            return Err(Undecryptable::Malformed);
        }
        let held = self.sessions.get_mut(session_id).ok_or(Undecryptable::NoKeyInBackup)?;
        if let (Some(claimed), Some(recorded)) = (&content.sender_key, &held.sender_key)
            && claimed != recorded
        {
            return Err(Undecryptable::SenderKeyMismatch);
        }
        let bytes = vodozemac::base64_decode(ciphertext).map_err(|_| Undecryptable::Malformed)?;
        let message = MegolmMessage::from_bytes(&bytes).map_err(|_| Undecryptable::Malformed)?;
        // The bytes checked are the message's own encoding, as vodozemac checks them.
        if message.to_bytes() != bytes {
            return Err(Undecryptable::Malformed);
        }
        let key = held.signing_key.ok_or(Undecryptable::BadMac)?;
        if message.mac().len() != MAC_BYTES {
            return Err(Undecryptable::BadMac);
        }
        let cipher = held.cipher_at(message.message_index()).ok_or(Undecryptable::IndexBeforeFirstKnown)?;
        let signed_len = bytes.len() - SIGNATURE_BYTES;
        cipher
            .verify_truncated_mac(&bytes[..signed_len - MAC_BYTES], message.mac())
            .map_err(|_| Undecryptable::BadMac)?;
        let plaintext = cipher.decrypt(message.ciphertext()).map_err(|_| Undecryptable::Malformed)?;
        let mut signed = bytes;
        signed.truncate(signed_len);
        Ok(Opened {
            signed,
            signature: ed25519_dalek::Signature::from_bytes(&message.signature().to_bytes()),
            key,
            plaintext,
            message_index: message.message_index(),
        })
    }
}

/// The event a decrypted plaintext carries, checked to belong to `room_id`.
fn read_payload(room_id: &str, plaintext: &[u8], message_index: u32) -> Decrypted {
    let payload: Payload = serde_json::from_slice(plaintext).map_err(|_| Undecryptable::Malformed)?;
    if payload.room_id.as_deref() != Some(room_id) {
        return Err(Undecryptable::WrongRoom);
    }
    Ok(DecryptedEvent {
        event_type: payload.event_type,
        content: payload.content,
        message_index,
        sender_trust: argus_domain::SenderTrust::UnknownDevice,
    })
}

#[cfg(test)]
mod tests {
    use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
    use serde_json::json;
    use vodozemac::megolm::{GroupSession, SessionConfig};

    use super::*;
    use crate::{
        megolm::ratchet::MAX_CHECKPOINTS,
        test_support::{ROOM, b64, encrypt},
    };

    #[test]
    fn any_reading_order_decrypts_and_a_bad_signature_spoils_only_its_message() {
        // Two sessions, 1,200 messages each, interleaved as two senders write.
        let mut a = GroupSession::new(SessionConfig::version_1());
        let mut b = GroupSession::new(SessionConfig::version_1());
        let inbound =
            |s: &GroupSession| InboundGroupSession::new(&s.session_key(), SessionConfig::version_1());
        let mut keys = SessionKeys::default();
        keys.insert(inbound(&a));
        keys.insert(inbound(&b));
        let mut history = Vec::new();
        for n in 0..2_400 {
            let session = if n % 2 == 0 { &mut a } else { &mut b };
            history.push(encrypt(session, ROOM, &format!("message {n}")));
        }
        let body = |r: &Decrypted| r.as_ref().map(|e| e.content["body"].clone()).map_err(|u| *u);
        // Pages of 250 read newest page first, each page decrypted oldest first (a backwards read).
        for (p, page) in history.chunks(250).enumerate().rev() {
            let results = keys.decrypt_all(ROOM, page);
            assert_eq!(results.len(), page.len());
            for (i, result) in results.iter().enumerate() {
                let n = p * 250 + i;
                assert_eq!(body(result), Ok(json!(format!("message {n}"))));
                assert_eq!(result.as_ref().map(|e| e.message_index as usize).ok(), Some(n / 2));
            }
        }
        assert!(keys.sessions.values().all(|held| held.checkpoints.len() <= MAX_CHECKPOINTS));
        // Any order at all, one at a time.
        let mut order: Vec<usize> = (0..history.len()).collect();
        let mut state = 0x2545_f491_u64;
        for i in (1..order.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        for &n in order.iter().take(300) {
            assert_eq!(body(&keys.decrypt(ROOM, &history[n])), Ok(json!(format!("message {n}"))));
        }
        // A signature altered (the MAC still right), and a MAC altered: those two fail, their
        // batch neighbours decrypt.
        let mut batch: Vec<EncryptedContent> = history[1_000..1_100].to_vec();
        let raw = |c: &EncryptedContent| {
            STANDARD_NO_PAD.decode(c.ciphertext.as_deref().unwrap_or_default()).unwrap_or_default()
        };
        let mut bad_signature = raw(&batch[10]);
        let last = bad_signature.len() - 1;
        bad_signature[last] ^= 0x40;
        batch[10].ciphertext = Some(b64(&bad_signature));
        let mut bad_mac = raw(&batch[20]);
        let mac_at = bad_mac.len() - SIGNATURE_BYTES - 1;
        bad_mac[mac_at] ^= 1;
        batch[20].ciphertext = Some(b64(&bad_mac));
        let results = keys.decrypt_all(ROOM, &batch);
        for (i, result) in results.iter().enumerate() {
            match i {
                10 | 20 => assert_eq!(body(result), Err(Undecryptable::BadMac), "message {i}"),
                _ => assert_eq!(body(result), Ok(json!(format!("message {}", 1_000 + i)))),
            }
        }
        assert_eq!(body(&keys.decrypt(ROOM, &batch[10])), Err(Undecryptable::BadMac));
    }
}
