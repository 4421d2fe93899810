//! The crate's error type. Messages are words and stable codes only: never a key, a token, a
//! file path or text chosen by the sender or the homeserver.

/// Result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a file could not be staged, decrypted, stored, read or scanned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body went over the byte cap; nothing of it is kept.
    #[error("the file is larger than the cap of {cap} bytes")]
    TooLarge {
        /// The cap, in bytes.
        cap: u64,
    },
    /// The ciphertext's SHA-256 is not the one its message declared; nothing was decrypted.
    #[error("the ciphertext does not match its declared SHA-256")]
    Tampered,
    /// The `EncryptedFile` is refused; the string is its stable code (`UNSUPPORTED_VERSION`,
    /// `UNSUPPORTED_KEY`, `BAD_KEY_LENGTH`, `BAD_IV`, `NO_HASH`).
    #[error("the encrypted file is refused: {0}")]
    InvalidEncryptedFile(String),
    /// The incoming body failed while it was read.
    #[error("the body could not be read: {0}")]
    Body(String),
    /// The scanner could not be reached or did not answer in time.
    #[error("the scanner is unavailable: {0}")]
    ScannerUnavailable(String),
    /// The scanner gave up on a limit (its stream size limit, say): the file is not clean.
    #[error("the scanner reached a limit: {0}")]
    ScanLimit(String),
    /// The scanner answered something other than a verdict.
    #[error("unexpected reply from the scanner: {0}")]
    ScannerReply(String),
    /// The blob store does not hold this digest.
    #[error("no such blob")]
    NotFound,
    /// The byte range asked for is not within the blob.
    #[error("the range is not within the blob's {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size, in bytes.
        size: u64,
    },
    /// The object store failed.
    #[error("the object store failed: {0}")]
    Storage(String),
    /// A local file operation failed.
    #[error("file operation failed: {0:?}")]
    Io(std::io::ErrorKind),
    /// The configuration (a store URL, a scanner address) is not usable.
    #[error("invalid media configuration: {0}")]
    Config(String),
}

impl Error {
    /// A stable code naming the kind of failure, for the recorded reason and API layers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "TOO_LARGE",
            Self::Tampered => "TAMPERED",
            Self::InvalidEncryptedFile(_) => "INVALID_ENCRYPTED_FILE",
            Self::Body(_) => "BODY_FAILED",
            Self::ScannerUnavailable(_) => "SCANNER_UNAVAILABLE",
            Self::ScanLimit(_) => "SCAN_LIMIT",
            Self::ScannerReply(_) => "SCANNER_REPLY",
            Self::NotFound => "NOT_FOUND",
            Self::RangeNotSatisfiable { .. } => "RANGE_NOT_SATISFIABLE",
            Self::Storage(_) => "STORAGE",
            Self::Io(_) => "IO",
            Self::Config(_) => "CONFIG",
        }
    }

    /// Whether trying again later may succeed (the scanner or the store was away), as opposed
    /// to a verdict on the file itself. A scanner limit is retryable: the file stays pending,
    /// never clean, until the scanner's limits allow it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Body(_)
                | Self::ScannerUnavailable(_)
                | Self::ScanLimit(_)
                | Self::ScannerReply(_)
                | Self::Storage(_)
                | Self::Io(_)
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error.kind())
    }
}

impl From<argus_crypto::Error> for Error {
    fn from(error: argus_crypto::Error) -> Self {
        match error {
            argus_crypto::Error::AttachmentTampered => Self::Tampered,
            other => Self::InvalidEncryptedFile(other.code().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn crypto_refusals_keep_their_code() {
        let error = Error::from(argus_crypto::Error::BadAttachmentKeyLength);
        assert!(matches!(&error, Error::InvalidEncryptedFile(code) if code == "BAD_KEY_LENGTH"));
        assert_eq!(error.code(), "INVALID_ENCRYPTED_FILE");
        assert!(matches!(Error::from(argus_crypto::Error::AttachmentTampered), Error::Tampered));
        assert!(!Error::Tampered.is_retryable());
        assert!(Error::ScannerUnavailable("down".to_owned()).is_retryable());
    }
}
