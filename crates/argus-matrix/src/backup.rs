//! Decrypting end-to-end encrypted history from the account's server-side key backup
//! (`m.megolm_backup.v1.curve25519-aes-sha2`), with the cryptography of vodozemac and the
//! RustCrypto crates: nothing here is a primitive of our own.
//!
//! The chain, as the Matrix specification defines it (Client-Server API, "Server-side key
//! backups" and "Secret storage"):
//!
//! 1. [`RecoveryKey`]: the key the user holds, in its base58 form with prefix and parity. It is
//!    either an Element *security key* (a secret-storage key) or a legacy backup recovery key
//!    (the backup's private key itself).
//! 2. A security key is checked against its description in account data
//!    (`m.secret_storage.key.<id>`: `iv` and `mac`, [`SecretStorageKey::check`]) and then
//!    decrypts the secret `m.megolm_backup.v1` (AES-256-CTR and HMAC-SHA-256 under keys derived
//!    with HKDF-SHA-256 from the key and the secret's name, [`SecretStorageKey::decrypt`]): the
//!    backup's private key.
//! 3. [`BackupKey`]: the backup's Curve25519 private key, trusted only once its public key equals
//!    the `public_key` of the backup version's `auth_data` ([`BackupKey::verify`]).
//! 4. Each backed-up session (`session_data`: `ephemeral`, `ciphertext`, `mac`) decrypts into a
//!    megolm session key ([`BackupKey::decrypt_session`]), imported into a [`SessionKeys`] set.
//! 5. An `m.room.encrypted` event (`m.megolm.v1.aes-sha2`) decrypts with its session
//!    ([`SessionKeys::decrypt`]) into the event it carries, checked to belong to the room it was
//!    read from; or it stays undecryptable, with a [`Undecryptable`] reason.
//!
//! Session keys live in memory for one run only (vodozemac zeroises them when dropped); nothing
//! of the backup is stored. Everything the homeserver sends is untrusted input: sizes are
//! bounded, and malformed base64 or JSON is a typed error, never a panic.

use std::{collections::HashMap, fmt, str::FromStr};

use aes::cipher::{KeyIvInit as _, StreamCipher as _};
use argus_domain::Secret;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use sha2::Sha256;
use vodozemac::{
    Curve25519PublicKey, Curve25519SecretKey,
    hazmat::Cipher,
    megolm::{ExportedSessionKey, InboundGroupSession, MegolmMessage, SessionConfig},
    pk_encryption::{Message as PkMessage, PkDecryption},
};

use crate::{Error, Result};

/// The backup algorithm this connector reads.
pub const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
/// The secret-storage algorithm of security keys.
pub const SECRET_STORAGE_ALGORITHM: &str = "m.secret_storage.v1.aes-hmac-sha2";
/// The name of the secret holding the backup's private key.
pub const BACKUP_SECRET: &str = "m.megolm_backup.v1";
/// The only event encryption algorithm of rooms (megolm).
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";

/// The most bytes accepted for one encrypted field sent by the homeserver (a session key is
/// under 300 bytes; an encrypted event's ciphertext is bounded by the event size limit, 64 KiB).
const MAX_FIELD_BYTES: usize = 96 * 1024;

/// The two bytes in front of a recovery key.
const RECOVERY_KEY_PREFIX: [u8; 2] = [0x8b, 0x01];

type HmacSha256 = Hmac<Sha256>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// A 16-byte IV from its base64 form.
fn iv_of(what: &'static str, text: &str) -> Result<[u8; 16]> {
    decode_b64(what, text)?.try_into().map_err(|_| Error::malformed(format!("{what}: not 16 bytes")))
}

fn decode_b64(what: &'static str, text: &str) -> Result<Vec<u8>> {
    if text.len() > MAX_FIELD_BYTES {
        return Err(Error::malformed(format!("{what}: too long")));
    }
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD.decode(trimmed).map_err(|_| Error::malformed(format!("{what}: not base64")))
}

/// The key the user holds: an Element security key or a legacy backup recovery key, 32 bytes.
/// `Debug` never shows it (a [`Secret`]).
#[derive(Clone, Debug)]
pub struct RecoveryKey(Secret<[u8; 32]>);

impl FromStr for RecoveryKey {
    type Err = Error;

    /// Parses the base58 form (spaces ignored): `0x8B 0x01`, the 32 key bytes, and a parity
    /// byte that makes the XOR of all bytes zero.
    fn from_str(text: &str) -> Result<Self> {
        let wrong = || Error::WrongRecoveryKey;
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() || compact.len() > 64 {
            return Err(wrong());
        }
        let bytes = bs58::decode(compact).into_vec().map_err(|_| wrong())?;
        if bytes.len() != 35 || bytes[..2] != RECOVERY_KEY_PREFIX || bytes.iter().fold(0u8, |a, b| a ^ b) != 0
        {
            return Err(wrong());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[2..34]);
        Ok(Self(Secret::from_value(key)))
    }
}

impl RecoveryKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Secret::from_value(bytes))
    }

    /// The base58 form users are shown (groups of four characters).
    pub fn to_base58(&self) -> String {
        let mut bytes = Vec::with_capacity(35);
        bytes.extend_from_slice(&RECOVERY_KEY_PREFIX);
        bytes.extend_from_slice(self.0.expose_value());
        let parity = bytes.iter().fold(0u8, |a, b| a ^ b);
        bytes.push(parity);
        let text = bs58::encode(bytes).into_string();
        text.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// This key as a secret-storage key.
    pub fn as_secret_storage_key(&self) -> SecretStorageKey {
        SecretStorageKey(self.0.clone())
    }

    /// This key as the backup's private key itself (a legacy recovery key).
    pub fn as_backup_key(&self) -> BackupKey {
        BackupKey::from_bytes(*self.0.expose_value())
    }
}

/// The description of a secret-storage key in account data (`m.secret_storage.key.<id>`).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyDescription {
    /// Must be [`SECRET_STORAGE_ALGORITHM`].
    pub algorithm: String,
    /// Base64 IV of the key check.
    #[serde(default)]
    pub iv: Option<String>,
    /// Base64 MAC of the key check.
    #[serde(default)]
    pub mac: Option<String>,
}

/// A secret as secret storage keeps it, under one key (`encrypted.<key id>`).
#[derive(Debug, Clone, Deserialize)]
pub struct EncryptedSecret {
    /// Base64 IV (16 bytes).
    pub iv: String,
    /// Base64 AES-256-CTR ciphertext.
    pub ciphertext: String,
    /// Base64 HMAC-SHA-256 of the ciphertext.
    pub mac: String,
}

/// A secret-storage key (`m.secret_storage.v1.aes-hmac-sha2`). `Debug` never shows it.
#[derive(Clone, Debug)]
pub struct SecretStorageKey(Secret<[u8; 32]>);

impl SecretStorageKey {
    /// The AES-256-CTR keystream and the HMAC-SHA-256 of the secret `name` under this key, from
    /// `iv` (HKDF-SHA-256 of the key, 32 zero bytes of salt, the name as info).
    fn cipher(&self, name: &str, iv: [u8; 16]) -> (Aes256Ctr, HmacSha256) {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), self.0.expose_value());
        let mut okm = [0u8; 64];
        // 64 bytes is far below HKDF-SHA-256's limit.
        let _ = hkdf.expand(name.as_bytes(), &mut okm);
        let (aes, mac) = okm.split_at(32);
        let aes: [u8; 32] = aes.try_into().unwrap_or_else(|_| unreachable!("32 of 64 bytes"));
        let mac = <HmacSha256 as hmac::Mac>::new_from_slice(mac)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        (Aes256Ctr::new(&aes.into(), &iv.into()), mac)
    }

    /// Encrypts `plaintext` as the secret `name` with `iv`, as a client storing a secret does.
    pub fn encrypt(&self, name: &str, plaintext: &[u8], iv: [u8; 16]) -> EncryptedSecret {
        let (mut ctr, mut mac) = self.cipher(name, iv);
        let mut data = plaintext.to_vec();
        ctr.apply_keystream(&mut data);
        mac.update(&data);
        EncryptedSecret {
            iv: STANDARD.encode(iv),
            ciphertext: STANDARD.encode(&data),
            mac: STANDARD.encode(mac.finalize().into_bytes()),
        }
    }

    /// Decrypts the secret `name`, after checking its MAC (constant time): a wrong key or an
    /// altered secret is [`Error::WrongRecoveryKey`] (the caller tells the two apart).
    pub fn decrypt(&self, name: &str, secret: &EncryptedSecret) -> Result<Secret<Vec<u8>>> {
        let iv = iv_of("secret iv", &secret.iv)?;
        let mut data = decode_b64("secret ciphertext", &secret.ciphertext)?;
        let expected = decode_b64("secret mac", &secret.mac)?;
        let (mut ctr, mut mac) = self.cipher(name, iv);
        mac.update(&data);
        mac.verify_slice(&expected).map_err(|_| Error::WrongRecoveryKey)?;
        ctr.apply_keystream(&mut data);
        Ok(Secret::from_value(data))
    }

    /// Checks this key against its description: encrypting 32 zero bytes under the empty name
    /// with the description's IV must give its MAC (compared in constant time). A description
    /// without a check is accepted only by the MAC of the secret itself.
    pub fn check(&self, description: &KeyDescription) -> Result<()> {
        if description.algorithm != SECRET_STORAGE_ALGORITHM {
            return Err(Error::UnsupportedKeyBackup(format!(
                "secret storage algorithm {}",
                crate::error::sanitise_errcode(&description.algorithm).unwrap_or_default()
            )));
        }
        let (Some(iv), Some(expected)) = (&description.iv, &description.mac) else { return Ok(()) };
        let expected = decode_b64("key mac", expected)?;
        let (mut ctr, mut mac) = self.cipher("", iv_of("key iv", iv)?);
        let mut zeros = [0u8; 32];
        ctr.apply_keystream(&mut zeros);
        mac.update(&zeros);
        mac.verify_slice(&expected).map_err(|_| Error::WrongRecoveryKey)
    }
}

/// The backup's private key. Its public key must match the backup version before use.
pub struct BackupKey(PkDecryption);

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BackupKey").field(&self.public_key()).finish()
    }
}

/// What a backed-up session decrypts into.
#[derive(Deserialize)]
struct BackedUpSession {
    algorithm: String,
    session_key: String,
    /// The Curve25519 key of the device that created the session.
    #[serde(default)]
    sender_key: Option<String>,
}

/// One session of `GET /room_keys/keys/{roomId}` (`KeyBackupData`).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyBackupData {
    /// The first message index the backed-up session can decrypt.
    #[serde(default)]
    pub first_message_index: u64,
    /// The encrypted session.
    pub session_data: SessionData,
}

/// The encrypted session of a [`KeyBackupData`].
#[derive(Debug, Clone, Deserialize)]
pub struct SessionData {
    /// Base64 ephemeral Curve25519 key.
    pub ephemeral: String,
    /// Base64 ciphertext.
    pub ciphertext: String,
    /// Base64 MAC.
    pub mac: String,
}

impl BackupKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(PkDecryption::from_key(Curve25519SecretKey::from_slice(&bytes)))
    }

    /// The key from the secret `m.megolm_backup.v1` (base64 of the 32 bytes).
    pub fn from_secret(secret: &Secret<Vec<u8>>) -> Result<Self> {
        let text = std::str::from_utf8(secret.expose_value()).map_err(|_| Error::KeyBackupMismatch)?;
        let bytes: [u8; 32] =
            decode_b64("backup key", text.trim())?.try_into().map_err(|_| Error::KeyBackupMismatch)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The public key, base64 as `auth_data.public_key` holds it.
    pub fn public_key(&self) -> String {
        self.0.public_key().to_base64()
    }

    /// Refuses a backup whose algorithm is not [`BACKUP_ALGORITHM`], or whose `auth_data` public
    /// key is not this key's: its data would be someone else's, or forged.
    pub fn verify(&self, algorithm: &str, auth_public_key: &str) -> Result<()> {
        if algorithm != BACKUP_ALGORITHM {
            return Err(Error::UnsupportedKeyBackup(format!(
                "backup algorithm {}",
                crate::error::sanitise_errcode(algorithm).unwrap_or_default()
            )));
        }
        let theirs = Curve25519PublicKey::from_base64(auth_public_key.trim_end_matches('='))
            .map_err(|_| Error::malformed("backup public key: not a Curve25519 key"))?;
        if theirs != self.0.public_key() {
            return Err(Error::KeyBackupMismatch);
        }
        Ok(())
    }

    /// Decrypts one backed-up session into a megolm session, or says why it cannot be used.
    pub fn decrypt_session(
        &self,
        data: &KeyBackupData,
    ) -> std::result::Result<InboundGroupSession, Undecryptable> {
        self.decrypt_session_with_sender(data).map(|(session, _)| session)
    }

    /// Like [`BackupKey::decrypt_session`], with the Curve25519 key of the device that created
    /// the session, as the backup records it.
    pub fn decrypt_session_with_sender(
        &self,
        data: &KeyBackupData,
    ) -> std::result::Result<(InboundGroupSession, Option<String>), Undecryptable> {
        let s = &data.session_data;
        if [&s.ephemeral, &s.ciphertext, &s.mac].iter().any(|f| f.len() > MAX_FIELD_BYTES) {
            return Err(Undecryptable::Malformed);
        }
        let message = PkMessage::from_base64(&s.ciphertext, &s.mac, &s.ephemeral)
            .map_err(|_| Undecryptable::Malformed)?;
        let plaintext = self.0.decrypt(&message).map_err(|_| Undecryptable::BadMac)?;
        let session: BackedUpSession =
            serde_json::from_slice(&plaintext).map_err(|_| Undecryptable::Malformed)?;
        if session.algorithm != MEGOLM_ALGORITHM {
            return Err(Undecryptable::UnsupportedAlgorithm);
        }
        let key =
            ExportedSessionKey::from_base64(&session.session_key).map_err(|_| Undecryptable::Malformed)?;
        Ok((InboundGroupSession::import(&key, SessionConfig::version_1()), session.sender_key))
    }
}

/// Why an encrypted event stays undecrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Undecryptable {
    /// The backup holds no key for its session.
    NoKeyInBackup,
    /// Its message index is before the first index the backed-up session knows.
    IndexBeforeFirstKnown,
    /// Its MAC or signature does not verify (tampered, or another session's).
    BadMac,
    /// Not `m.megolm.v1.aes-sha2`.
    UnsupportedAlgorithm,
    /// Its content (or the backed-up session) is not what the specification describes.
    Malformed,
    /// It decrypts into an event of another room (a replayed ciphertext).
    WrongRoom,
    /// Its ciphertext (session and message index) was already served as another event.
    Replayed,
    /// It names another sending device than the one the backup records for its session.
    SenderKeyMismatch,
    /// It carries an event of a type this connector does not take from a ciphertext (only
    /// `m.room.message`: a redaction or state inside a ciphertext was never applied by the
    /// homeserver).
    UnsupportedEventType,
}

impl Undecryptable {
    /// A stable code for reports.
    pub const fn code(self) -> &'static str {
        match self {
            Self::NoKeyInBackup => "NO_KEY_IN_BACKUP",
            Self::IndexBeforeFirstKnown => "INDEX_BEFORE_FIRST_KNOWN",
            Self::BadMac => "BAD_MAC",
            Self::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            Self::Malformed => "MALFORMED",
            Self::WrongRoom => "WRONG_ROOM",
            Self::Replayed => "REPLAYED",
            Self::SenderKeyMismatch => "SENDER_KEY_MISMATCH",
            Self::UnsupportedEventType => "UNSUPPORTED_EVENT_TYPE",
        }
    }
}

/// The `content` of an `m.room.encrypted` event.
#[derive(Debug, Clone, Deserialize)]
pub struct EncryptedContent {
    /// `m.megolm.v1.aes-sha2` for room messages.
    pub algorithm: String,
    /// Base64 megolm message.
    #[serde(default)]
    pub ciphertext: Option<String>,
    /// The megolm session that encrypted it.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The Curve25519 key of the sending device (deprecated in the specification, still sent).
    #[serde(default)]
    pub sender_key: Option<String>,
}

/// What an encrypted event carried.
#[derive(Debug, Clone, PartialEq)]
pub struct DecryptedEvent {
    /// Its event type, e.g. `m.room.message`.
    pub event_type: String,
    /// Its content.
    pub content: serde_json::Value,
    /// Its megolm message index.
    pub message_index: u32,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    event_type: String,
    content: serde_json::Value,
    room_id: Option<String>,
}

/// One decryption's outcome.
type Decrypted = std::result::Result<DecryptedEvent, Undecryptable>;

/// The megolm sessions of one run, by session id.
#[derive(Default)]
pub struct SessionKeys {
    sessions: HashMap<String, Held>,
}

/// Ratchet positions kept per session ([`Held::cipher_at`]): enough for a 256-message block in
/// steps of [`CHECKPOINT_STEP`] and the positions above it, bounded so that 10,000 sessions stay
/// within tens of megabytes.
const MAX_CHECKPOINTS: usize = 24;

/// Messages between two kept ratchet positions inside a 256-message block.
const CHECKPOINT_STEP: u32 = 16;

/// Bytes of a megolm (v1) message's truncated MAC and of its Ed25519 signature.
const MAC_BYTES: usize = 8;
const SIGNATURE_BYTES: usize = 64;

/// A session, with its sending device's Curve25519 key as the backup records it: the two move
/// together (into `decrypt_all`'s threads and back).
struct Held {
    session: InboundGroupSession,
    sender_key: Option<String>,
    /// The session's Ed25519 key (a megolm session id is that key, base64), which signs every
    /// message of the session; `None` when it is not a usable key (a weak or malformed one).
    signing_key: Option<ed25519_dalek::VerifyingKey>,
    /// Copies of the session advanced to later messages, by message index: reaching a message
    /// from the nearest one below costs a few hashes instead of up to a thousand from the first
    /// known index (a backwards read meets each session's messages newest page first).
    checkpoints: std::collections::BTreeMap<u32, InboundGroupSession>,
}

/// A copy of `session` (vodozemac sessions are not `Clone`; a pickle is the session's state).
fn copy_session(session: &InboundGroupSession) -> InboundGroupSession {
    InboundGroupSession::from_pickle(session.pickle())
}

impl Held {
    fn new(session: InboundGroupSession, sender_key: Option<String>) -> Self {
        let signing_key = vodozemac::base64_decode(session.session_id())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .and_then(|bytes| ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok())
            .filter(|key| !key.is_weak());
        Self { session, sender_key, signing_key, checkpoints: std::collections::BTreeMap::new() }
    }

    /// The message keys of message `index`, or `None` before the session's first known index.
    /// Positions on the way (block boundaries, every [`CHECKPOINT_STEP`] messages) are kept for
    /// the messages that come next; those above `index` are dropped (reads move one way).
    fn cipher_at(&mut self, index: u32) -> Option<Cipher> {
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

/// A message whose MAC verified and whose plaintext is known, waiting for its signature check.
struct Opened {
    /// The bytes the signature covers (the message up to its signature).
    signed: Vec<u8>,
    signature: ed25519_dalek::Signature,
    key: ed25519_dalek::VerifyingKey,
    plaintext: Vec<u8>,
    message_index: u32,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys").field("sessions", &self.sessions.len()).finish()
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
    pub fn decrypt_all(
        &mut self,
        room_id: &str,
        contents: &[EncryptedContent],
    ) -> Vec<std::result::Result<DecryptedEvent, Undecryptable>> {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(4);
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
    pub fn decrypt(
        &mut self,
        room_id: &str,
        content: &EncryptedContent,
    ) -> std::result::Result<DecryptedEvent, Undecryptable> {
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
    fn open(&mut self, content: &EncryptedContent) -> std::result::Result<Opened, Undecryptable> {
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

/// Whether each opened message's signature verifies: all of them in one batch, and one by one
/// (strictly, as vodozemac does) only when the batch fails.
fn verify_signatures(opened: &[(usize, Opened)]) -> Vec<bool> {
    if opened.is_empty() {
        return Vec::new();
    }
    let messages: Vec<&[u8]> = opened.iter().map(|(_, m)| m.signed.as_slice()).collect();
    let signatures: Vec<ed25519_dalek::Signature> = opened.iter().map(|(_, m)| m.signature).collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = opened.iter().map(|(_, m)| m.key).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return vec![true; opened.len()];
    }
    opened.iter().map(|(_, m)| m.key.verify_strict(&m.signed, &m.signature).is_ok()).collect()
}

/// The event a decrypted plaintext carries, checked to belong to `room_id`.
fn read_payload(room_id: &str, plaintext: &[u8], message_index: u32) -> Decrypted {
    let payload: Payload = serde_json::from_slice(plaintext).map_err(|_| Undecryptable::Malformed)?;
    if payload.room_id.as_deref() != Some(room_id) {
        return Err(Undecryptable::WrongRoom);
    }
    Ok(DecryptedEvent { event_type: payload.event_type, content: payload.content, message_index })
}

/// The key backup of one room, loaded for one run.
#[derive(Debug, Default)]
pub struct RoomKeys {
    /// The room's backed-up megolm sessions that decrypted.
    pub keys: SessionKeys,
    /// Backed-up sessions that did not decrypt, by reason.
    pub unusable: std::collections::BTreeMap<Undecryptable, u64>,
}

/// The most backed-up sessions read for one room.
pub const MAX_ROOM_SESSIONS: usize = 10_000;

#[derive(Deserialize)]
struct DefaultKey {
    key: String,
}

#[derive(Deserialize)]
struct StoredSecret {
    encrypted: HashMap<String, EncryptedSecret>,
}

#[derive(Deserialize)]
struct BackupAlgorithmView {
    algorithm: String,
    auth_data: AuthData,
}

#[derive(Deserialize)]
struct AuthData {
    public_key: String,
}

impl crate::Connector {
    /// Loads the key backup of `room_id` with the user's recovery key: the backup version, the
    /// backup key (from secret storage when the recovery key is a security key, or the key
    /// itself when it is a legacy backup recovery key), verified against the version's public
    /// key, then the room's backed-up sessions, decrypted. Nothing is stored.
    ///
    /// [`Error::NoKeyBackup`] when the account has none, [`Error::WrongRecoveryKey`] when the
    /// key opens neither secret storage nor the backup, [`Error::UnsupportedKeyBackup`] for an
    /// unknown algorithm, [`Error::KeyBackupMismatch`] when secret storage holds a key that is
    /// not the backup's.
    pub async fn load_room_keys(
        &self,
        homeserver: &argus_domain::HomeserverUrl,
        token: &argus_domain::AccessToken,
        room_id: &argus_domain::RoomId,
        recovery_key: &RecoveryKey,
    ) -> Result<RoomKeys> {
        use ruma::api::client::{account::whoami, backup, config::get_global_account_data};
        if !token.is_well_formed() {
            return Err(Error::InvalidInput("the access token is empty or not a valid header value".into()));
        }
        let room = ruma::OwnedRoomId::try_from(room_id.as_str())
            .map_err(|_| Error::InvalidInput("the room id is not a valid Matrix room id".into()))?;
        let client = self.http();
        let transport = client.policy.check_url(&homeserver.url())?;
        let deadline = tokio::time::Instant::now() + client.config.run_deadline;
        let target = crate::transport::Target { homeserver, token, transport, deadline };

        let info = match client.send(&target, backup::get_latest_backup_info::v3::Request::new()).await {
            Ok(info) => info,
            Err(Error::NotFound) => return Err(Error::NoKeyBackup),
            Err(e) => return Err(e),
        };
        let algorithm: BackupAlgorithmView = serde_json::from_str(info.algorithm.json().get())
            .map_err(|_| Error::malformed("the key backup's algorithm is not readable"))?;

        // Secret storage first: a security key opens the secret holding the backup key.
        let user = client.send(&target, whoami::v3::Request::new()).await?.user_id;
        let account_data = |kind: String| {
            let request = get_global_account_data::v3::Request::new(user.clone(), kind.as_str().into());
            async { client.send(&target, request).await.map(|r| r.account_data.json().get().to_owned()) }
        };
        let from_storage = match account_data("m.secret_storage.default_key".to_owned()).await {
            Ok(json) => {
                let default: DefaultKey = serde_json::from_str(&json)
                    .map_err(|_| Error::malformed("secret storage: no default key"))?;
                let description = match account_data(format!("m.secret_storage.key.{}", default.key)).await {
                    Ok(json) => Some(
                        serde_json::from_str::<KeyDescription>(&json)
                            .map_err(|_| Error::malformed("secret storage: unreadable key description"))?,
                    ),
                    // A default key without its description: not usable, try the legacy form.
                    Err(Error::NotFound) => None,
                    Err(e) => return Err(e),
                };
                let key = recovery_key.as_secret_storage_key();
                // A description without a key check cannot tell a wrong key: the legacy form is
                // tried instead.
                let checked = match &description {
                    Some(d)
                        if d.algorithm != SECRET_STORAGE_ALGORITHM || (d.iv.is_some() && d.mac.is_some()) =>
                    {
                        key.check(d)
                    }
                    Some(_) | None => Err(Error::WrongRecoveryKey),
                };
                match checked {
                    Ok(()) => {
                        let stored: StoredSecret =
                            serde_json::from_str(&account_data(BACKUP_SECRET.to_owned()).await?)
                                .map_err(|_| Error::malformed("secret storage: unreadable backup secret"))?;
                        let secret = stored.encrypted.get(&default.key).ok_or(Error::KeyBackupMismatch)?;
                        // The key passed its check: a secret that fails its MAC was altered.
                        let opened = key.decrypt(BACKUP_SECRET, secret).map_err(|e| match e {
                            Error::WrongRecoveryKey => Error::KeyBackupMismatch,
                            other => other,
                        })?;
                        Some(BackupKey::from_secret(&opened)?)
                    }
                    Err(Error::WrongRecoveryKey) => None,
                    Err(e) => return Err(e),
                }
            }
            Err(Error::NotFound) => None,
            Err(e) => return Err(e),
        };
        let backup_key = match from_storage {
            Some(key) => {
                key.verify(&algorithm.algorithm, &algorithm.auth_data.public_key)?;
                key
            }
            // Not a security key of this account: a legacy recovery key is the backup key.
            None => {
                let key = recovery_key.as_backup_key();
                match key.verify(&algorithm.algorithm, &algorithm.auth_data.public_key) {
                    Err(Error::KeyBackupMismatch) => return Err(Error::WrongRecoveryKey),
                    other => other?,
                }
                key
            }
        };

        let sessions = client
            .send(&target, backup::get_backup_keys_for_room::v3::Request::new(info.version.clone(), room))
            .await?
            .sessions;
        if sessions.len() > MAX_ROOM_SESSIONS {
            return Err(Error::malformed(format!(
                "the room's key backup holds more than {MAX_ROOM_SESSIONS} sessions"
            )));
        }
        let mut loaded = RoomKeys::default();
        for raw in sessions.values() {
            let decrypted = serde_json::from_str::<KeyBackupData>(raw.json().get())
                .map_err(|_| Undecryptable::Malformed)
                .and_then(|data| backup_key.decrypt_session_with_sender(&data));
            match decrypted {
                Ok((session, sender_key)) => loaded.keys.insert_from(session, sender_key),
                Err(reason) => *loaded.unusable.entry(reason).or_default() += 1,
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vodozemac::{
        megolm::{GroupSession, SessionKey},
        pk_encryption::PkEncryption,
    };

    use super::*;

    const ROOM: &str = "!crise:tchap.test";

    fn b64(bytes: &[u8]) -> String {
        STANDARD_NO_PAD.encode(bytes)
    }

    /// What a client backing up `session` from `index` uploads.
    fn backed_up(public: &str, session: &InboundGroupSession, index: u32) -> KeyBackupData {
        let mut session =
            InboundGroupSession::import(&session.export_at_first_known_index(), SessionConfig::version_1());
        let key = session.export_at(index).unwrap_or_else(|| panic!("index {index}"));
        let json = json!({
            "algorithm": MEGOLM_ALGORITHM, "sender_key": "c2VuZGVy", "session_key": key.to_base64(),
            "sender_claimed_keys": {}, "forwarded_curve25519_key_chain": []
        });
        let public = Curve25519PublicKey::from_base64(public).unwrap_or_else(|e| panic!("{e}"));
        let message = PkEncryption::from_key(public)
            .encrypt(json.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        KeyBackupData {
            first_message_index: u64::from(index),
            session_data: SessionData {
                ephemeral: message.ephemeral_key.to_base64(),
                ciphertext: b64(&message.ciphertext),
                mac: b64(&message.mac),
            },
        }
    }

    fn encrypt(outbound: &mut GroupSession, room: &str, body: &str) -> EncryptedContent {
        let payload = json!({ "type": "m.room.message", "room_id": room, "content": { "msgtype": "m.text", "body": body } });
        EncryptedContent {
            algorithm: MEGOLM_ALGORITHM.to_owned(),
            ciphertext: Some(outbound.encrypt(payload.to_string()).to_base64()),
            session_id: Some(outbound.session_id()),
            sender_key: None,
        }
    }

    #[test]
    fn recovery_keys_round_trip_and_malformed_ones_are_refused() {
        let key = RecoveryKey::from_bytes([7u8; 32]);
        let text = key.to_base58();
        assert!(text.starts_with("Es"), "{text}");
        let parsed: RecoveryKey = text.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.0.expose_value(), &[7u8; 32]);
        assert!(!format!("{parsed:?}").contains("7, 7"));
        // One character changed breaks the parity (or the base58); nothing panics.
        let mut chars: Vec<char> = text.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
        let altered: String = chars.into_iter().collect();
        for bad in [altered.as_str(), "", "0OIl", "EsT", &"Es".repeat(40)] {
            assert!(matches!(bad.parse::<RecoveryKey>(), Err(Error::WrongRecoveryKey)), "{bad}");
        }
    }

    #[test]
    fn secret_storage_checks_the_key_and_decrypts_the_backup_secret() {
        let key = RecoveryKey::from_bytes([42u8; 32]).as_secret_storage_key();
        let check = key.encrypt("", &[0u8; 32], [1u8; 16]);
        let description = KeyDescription {
            algorithm: SECRET_STORAGE_ALGORITHM.to_owned(),
            iv: Some(check.iv),
            mac: Some(check.mac),
        };
        key.check(&description).unwrap_or_else(|e| panic!("{e}"));
        let other = RecoveryKey::from_bytes([43u8; 32]).as_secret_storage_key();
        assert!(matches!(other.check(&description), Err(Error::WrongRecoveryKey)));
        let unknown = KeyDescription { algorithm: "m.secret_storage.v2".to_owned(), ..description.clone() };
        assert!(matches!(key.check(&unknown), Err(Error::UnsupportedKeyBackup(_))));

        let backup_secret = b64(&[9u8; 32]);
        let stored = key.encrypt(BACKUP_SECRET, backup_secret.as_bytes(), [2u8; 16]);
        let secret = key.decrypt(BACKUP_SECRET, &stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(secret.expose_value(), backup_secret.as_bytes());
        // The wrong key, another secret's name, or an altered ciphertext fail the MAC.
        assert!(matches!(other.decrypt(BACKUP_SECRET, &stored), Err(Error::WrongRecoveryKey)));
        assert!(matches!(key.decrypt("m.cross_signing.master", &stored), Err(Error::WrongRecoveryKey)));
        let mut altered = stored.clone();
        altered.ciphertext = b64(&[0u8; 44]);
        assert!(matches!(key.decrypt(BACKUP_SECRET, &altered), Err(Error::WrongRecoveryKey)));
        let mut garbage = stored;
        garbage.iv = "!!".to_owned();
        assert!(matches!(key.decrypt(BACKUP_SECRET, &garbage), Err(Error::MalformedResponse(_))));
        let backup = BackupKey::from_secret(&secret).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(backup.public_key(), BackupKey::from_bytes([9u8; 32]).public_key());
    }

    #[test]
    fn history_decrypts_from_the_backup_and_each_failure_has_its_reason() {
        let backup = BackupKey::from_bytes([5u8; 32]);
        let public = backup.public_key();
        backup.verify(BACKUP_ALGORITHM, &public).unwrap_or_else(|e| panic!("{e}"));
        let stranger = BackupKey::from_bytes([6u8; 32]).public_key();
        assert!(matches!(backup.verify(BACKUP_ALGORITHM, &stranger), Err(Error::KeyBackupMismatch)));
        assert!(matches!(backup.verify("m.megolm_backup.v2", &public), Err(Error::UnsupportedKeyBackup(_))));

        // A sender's session, a message before its backed-up index, and a rotated session.
        let mut outbound = GroupSession::new(SessionConfig::version_1());
        let inbound = InboundGroupSession::new(
            &SessionKey::from_base64(&outbound.session_key().to_base64()).unwrap_or_else(|e| panic!("{e}")),
            SessionConfig::version_1(),
        );
        let early = encrypt(&mut outbound, ROOM, "avant la sauvegarde");
        let first = encrypt(&mut outbound, ROOM, "rendez-vous à 10h");
        let elsewhere = encrypt(&mut outbound, "!autre:tchap.test", "rejoué");
        let mut rotated = GroupSession::new(SessionConfig::version_1());
        let rotated_inbound = InboundGroupSession::new(&rotated.session_key(), SessionConfig::version_1());
        let after_rotation = encrypt(&mut rotated, ROOM, "nouvelle session");
        let mut unknown = GroupSession::new(SessionConfig::version_1());
        let not_backed_up = encrypt(&mut unknown, ROOM, "jamais sauvegardé");

        let mut keys = SessionKeys::default();
        keys.insert(
            backup.decrypt_session(&backed_up(&public, &inbound, 1)).unwrap_or_else(|e| panic!("{e:?}")),
        );
        keys.insert(
            backup
                .decrypt_session(&backed_up(&public, &rotated_inbound, 0))
                .unwrap_or_else(|e| panic!("{e:?}")),
        );
        assert_eq!(keys.len(), 2);

        let ok = keys.decrypt(ROOM, &first).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok.event_type, "m.room.message");
        assert_eq!(ok.content["body"], "rendez-vous à 10h");
        assert_eq!(ok.message_index, 1);
        assert_eq!(
            keys.decrypt(ROOM, &after_rotation).map(|e| e.content["body"].clone()),
            Ok(json!("nouvelle session"))
        );
        assert_eq!(keys.decrypt(ROOM, &early), Err(Undecryptable::IndexBeforeFirstKnown));
        assert_eq!(keys.decrypt(ROOM, &not_backed_up), Err(Undecryptable::NoKeyInBackup));
        assert_eq!(keys.decrypt(ROOM, &elsewhere), Err(Undecryptable::WrongRoom));
        let mut tampered = first.clone();
        let mut raw =
            STANDARD_NO_PAD.decode(tampered.ciphertext.as_deref().unwrap_or_default()).unwrap_or_default();
        raw[10] ^= 1;
        tampered.ciphertext = Some(b64(&raw));
        assert!(matches!(
            keys.decrypt(ROOM, &tampered),
            Err(Undecryptable::BadMac | Undecryptable::Malformed)
        ));
        let olm = EncryptedContent { algorithm: "m.olm.v1.curve25519-aes-sha2".to_owned(), ..first.clone() };
        assert_eq!(keys.decrypt(ROOM, &olm), Err(Undecryptable::UnsupportedAlgorithm));
        let garbage = EncryptedContent { ciphertext: Some("%%%".to_owned()), ..first.clone() };
        assert_eq!(keys.decrypt(ROOM, &garbage), Err(Undecryptable::Malformed));

        // With the sending device the backup records, an event naming another device is refused.
        let (session, sender) = backup
            .decrypt_session_with_sender(&backed_up(&public, &inbound, 1))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(sender.as_deref(), Some("c2VuZGVy"));
        let mut bound = SessionKeys::default();
        bound.insert_from(session, sender);
        let claimed = |key: &str| EncryptedContent { sender_key: Some(key.to_owned()), ..first.clone() };
        assert_eq!(bound.decrypt(ROOM, &claimed("b3RoZXI")), Err(Undecryptable::SenderKeyMismatch));
        assert!(bound.decrypt(ROOM, &claimed("c2VuZGVy")).is_ok());

        // A backed-up session encrypted to another backup key, or mangled, is refused with a reason.
        let foreign = backed_up(&stranger, &inbound, 0);
        assert_eq!(backup.decrypt_session(&foreign).err(), Some(Undecryptable::BadMac));
        let mut mangled = backed_up(&public, &inbound, 0);
        mangled.session_data.ephemeral = "short".to_owned();
        assert_eq!(backup.decrypt_session(&mangled).err(), Some(Undecryptable::Malformed));
    }

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
