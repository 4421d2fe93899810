//! The crate's error type: why key material could not be used. Messages never contain a key
//! or a secret, and never echo text chosen by the homeserver.

/// Result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a recovery key, secret storage or a key backup could not be used.
///
/// An event that stays undecrypted is not an error: it has its
/// [`Undecryptable`](crate::megolm::Undecryptable) reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The recovery key is not a recovery key, or not the one of this account's secret storage
    /// or key backup.
    #[error("the recovery key is malformed or is not this account's")]
    WrongRecoveryKey,
    /// The key backup's public key is not the recovery key's (or secret storage holds another
    /// backup key): its data cannot be trusted.
    #[error("the key backup does not match the recovery key")]
    KeyBackupMismatch,
    /// The key backup or secret storage uses an algorithm this crate does not read.
    #[error("unsupported key backup: {0}")]
    UnsupportedAlgorithm(String),
    /// Key material read from the homeserver (a key description, a stored secret, the backup's
    /// public key) is not what the specification describes: not base64, the wrong length, not
    /// a Curve25519 key.
    #[error("malformed response from the homeserver: {0}")]
    Malformed(String),
    /// An encrypted attachment's `EncryptedFile` is not version `v2` (`v1`, or no `v`).
    #[error("encrypted attachment: unsupported version (only v2 is accepted)")]
    UnsupportedAttachmentVersion,
    /// An encrypted attachment's key is not an `oct` `A256CTR` key allowed to encrypt and
    /// decrypt.
    #[error("encrypted attachment: unsupported key (expected an oct A256CTR key for encrypt and decrypt)")]
    UnsupportedAttachmentKey,
    /// An encrypted attachment's key is not unpadded base64url of 32 bytes.
    #[error("encrypted attachment: the key is not 32 bytes of base64url")]
    BadAttachmentKeyLength,
    /// An encrypted attachment's `iv` is not base64 of 16 bytes.
    #[error("encrypted attachment: the iv is not 16 bytes of base64")]
    BadAttachmentIv,
    /// An encrypted attachment has no `sha256` hash of 32 bytes of base64.
    #[error("encrypted attachment: no SHA-256 of the ciphertext")]
    NoAttachmentHash,
    /// The ciphertext's SHA-256 is not the one its message declared: it was altered or swapped.
    #[error("encrypted attachment: the ciphertext does not match its declared SHA-256")]
    AttachmentTampered,
    /// A transparency-log proof, checkpoint or tree read does not hold.
    #[error("transparency log: the proof or checkpoint does not verify")]
    BadProof,
    /// A signature (a checkpoint's, a package's) does not verify with the key given.
    #[error("the signature does not verify with the key given")]
    BadSignature,
    /// A signing or verifier key is not of its expected form.
    #[error("malformed signing or verifier key")]
    BadSigningKey,
    /// The connector's device could not keep or read its state (the store behind
    /// [`crate::device::DeviceStateStore`] failed, or lost the lease that lets it write).
    #[error("the device's state could not be kept: {0}")]
    DeviceState(String),
    /// The homeserver could not be reached or refused a request of the connector's device.
    #[error("the homeserver refused a request of the connector's device: {0}")]
    DeviceTransport(String),
    /// The end-to-end-encryption machine failed (its state is not what it expects).
    #[error("the connector's device failed: {0}")]
    Device(String),
    /// Secret storage holds no cross-signing keys (or not the self-signing key) for the account:
    /// the connector's device cannot sign itself.
    #[error("secret storage holds no cross-signing keys for the account")]
    NoCrossSigningKeys,
    /// The cross-signing keys in secret storage are not the account's published identity.
    #[error("the cross-signing keys in secret storage are not the account's identity")]
    CrossSigningMismatch,
    /// The token's device already has end-to-end-encryption keys the connector did not make
    /// (a client's session): the connector does not take it over; it needs a login of its own.
    #[error("the token's device already has end-to-end-encryption keys of a client: give a login of its own")]
    DeviceInUse,
}

impl Error {
    /// A stable code naming the kind of failure, for API layers and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongRecoveryKey => "WRONG_RECOVERY_KEY",
            Self::KeyBackupMismatch => "KEY_BACKUP_MISMATCH",
            Self::UnsupportedAlgorithm(_) => "UNSUPPORTED_KEY_BACKUP",
            Self::Malformed(_) => "MALFORMED_RESPONSE",
            Self::UnsupportedAttachmentVersion => "UNSUPPORTED_VERSION",
            Self::UnsupportedAttachmentKey => "UNSUPPORTED_KEY",
            Self::BadAttachmentKeyLength => "BAD_KEY_LENGTH",
            Self::BadAttachmentIv => "BAD_IV",
            Self::NoAttachmentHash => "NO_HASH",
            Self::AttachmentTampered => "TAMPERED",
            Self::BadProof => "BAD_PROOF",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::BadSigningKey => "BAD_SIGNING_KEY",
            Self::DeviceState(_) => "DEVICE_STATE",
            Self::DeviceTransport(_) => "DEVICE_TRANSPORT",
            Self::Device(_) => "DEVICE",
            Self::NoCrossSigningKeys => "NO_CROSS_SIGNING_KEYS",
            Self::CrossSigningMismatch => "CROSS_SIGNING_MISMATCH",
            Self::DeviceInUse => "DEVICE_IN_USE",
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed(reason.into())
    }

    /// An unsupported `algorithm` of `what`, its name kept only if it looks like an identifier.
    pub(crate) fn unsupported(what: &str, algorithm: &str) -> Self {
        Self::UnsupportedAlgorithm(format!("{what} {}", printable_name(algorithm).unwrap_or_default()))
    }
}

/// Keeps a name sent by the homeserver (an `errcode`, an algorithm) only if it looks like an `errcode` (`M_FOO`,
/// `ORG.EXAMPLE_FOO`), at most 64 bytes, so that no arbitrary text reaches an error.
pub fn printable_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.'));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn codes_and_messages_never_echo_what_the_homeserver_chose() {
        assert_eq!(Error::WrongRecoveryKey.code(), "WRONG_RECOVERY_KEY");
        assert_eq!(
            Error::unsupported("backup algorithm", "m.megolm_backup.v2").code(),
            "UNSUPPORTED_KEY_BACKUP"
        );
        assert_eq!(
            Error::unsupported("backup algorithm", "secret words here").to_string(),
            "unsupported key backup: backup algorithm "
        );
        assert_eq!(
            Error::unsupported("x", "ORG.EXAMPLE_V1").to_string(),
            "unsupported key backup: x ORG.EXAMPLE_V1"
        );
        assert_eq!(Error::malformed("key mac: not base64").code(), "MALFORMED_RESPONSE");
    }
}
