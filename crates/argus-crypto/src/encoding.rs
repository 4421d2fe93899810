//! Bounded base64 decoding of what the homeserver sends (padded or not).

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};

use crate::{Error, Result};

/// The most bytes accepted for one encrypted field sent by the homeserver (a session key is
/// under 300 bytes; an encrypted event's ciphertext is bounded by the event size limit, 64 KiB).
pub(crate) const MAX_FIELD_BYTES: usize = 96 * 1024;

/// The bytes of a base64 field named `what` (in errors), at most [`MAX_FIELD_BYTES`] long.
pub(crate) fn decode_b64(what: &'static str, text: &str) -> Result<Vec<u8>> {
    if text.len() > MAX_FIELD_BYTES {
        return Err(Error::malformed(format!("{what}: too long")));
    }
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD.decode(trimmed).map_err(|_| Error::malformed(format!("{what}: not base64")))
}

/// A 16-byte IV from its base64 form.
pub(crate) fn iv_of(what: &'static str, text: &str) -> Result<[u8; 16]> {
    decode_b64(what, text)?.try_into().map_err(|_| Error::malformed(format!("{what}: not 16 bytes")))
}
