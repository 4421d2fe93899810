//! The Ed25519 signatures of megolm messages, checked in one batch
//! ([`ed25519_dalek::verify_batch`], about a third of the cost of checking them one by one), and
//! one by one only when the batch fails, to find the messages that do not verify.

/// A message whose MAC verified and whose plaintext is known, waiting for its signature check.
pub(super) struct Opened {
    /// The bytes the signature covers (the message up to its signature).
    pub(super) signed: Vec<u8>,
    pub(super) signature: ed25519_dalek::Signature,
    pub(super) key: ed25519_dalek::VerifyingKey,
    pub(super) plaintext: Vec<u8>,
    pub(super) message_index: u32,
}

/// Whether each opened message's signature verifies: all of them in one batch, and one by one
/// (strictly, as vodozemac does) only when the batch fails.
pub(super) fn verify_signatures(opened: &[(usize, Opened)]) -> Vec<bool> {
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
