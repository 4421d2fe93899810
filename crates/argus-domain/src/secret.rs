//! The Matrix access token as a secret: it never shows in Debug, Display or serialised output.

use std::fmt;

/// A Matrix access token.
///
/// `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`AccessToken::expose_secret`], so every use of it is visible in review. It does not
/// implement `Serialize`.
///
/// ```
/// use argus_domain::AccessToken;
/// let token = AccessToken::new("syt_c2VjcmV0_abcdef");
/// assert_eq!(format!("{token:?} {token}"), "[redacted] [redacted]");
/// assert_eq!(token.expose_secret(), "syt_c2VjcmV0_abcdef");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the one place that puts it in an `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the token is empty or contains characters that cannot go in an HTTP header.
    pub fn is_well_formed(&self) -> bool {
        !self.0.is_empty() && self.0.len() <= 4096 && self.0.bytes().all(|b| b.is_ascii_graphic())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
