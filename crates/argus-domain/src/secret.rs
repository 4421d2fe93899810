//! The one secret type: Matrix access tokens, recovery keys, signing and webhook secrets,
//! database URLs. It never shows in `Debug`, `Display` or serialised output.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret value.
///
/// `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose_secret`], so every use of it is visible in review. It does not implement
/// `Serialize`; it deserialises from a plain string (configuration files, the environment).
///
/// ```
/// use argus_domain::Secret;
/// let token = Secret::new("syt_c2VjcmV0_abcdef");
/// assert_eq!(format!("{token:?} {token}"), "[redacted] [redacted]");
/// assert_eq!(token.expose_secret(), "syt_c2VjcmV0_abcdef");
/// ```
///
/// Keys held as bytes are secrets too (`Secret<Vec<u8>>`, `Secret<[u8; 32]>`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T = String>(T);

/// A Matrix access token.
pub type AccessToken = Secret;

impl<T> Secret<T> {
    /// Wraps a secret value of any type (key bytes, say).
    pub const fn from_value(secret: T) -> Self {
        Self(secret)
    }

    /// The secret value itself.
    pub fn expose_value(&self) -> &T {
        &self.0
    }
}

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that uses it (an `Authorization` header, a key
    /// derivation, a connection).
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the secret can go in an HTTP header as a bearer token: 1 to 4096 printable
    /// ASCII characters.
    ///
    /// ```
    /// use argus_domain::Secret;
    /// assert!(Secret::new("syt_abc").is_well_formed());
    /// assert!(!Secret::new("").is_well_formed());
    /// assert!(!Secret::new("a b").is_well_formed());
    /// ```
    pub fn is_well_formed(&self) -> bool {
        !self.0.is_empty() && self.0.len() <= 4096 && self.0.bytes().all(|b| b.is_ascii_graphic())
    }

    /// `text` with the secret replaced by `[redacted]` wherever it appears (a secret shorter
    /// than 8 bytes is left alone: it would match ordinary words): what a message kept in an
    /// audit record or a log line is made of.
    ///
    /// ```
    /// use argus_domain::Secret;
    /// let token = Secret::new("syt_0123456789");
    /// assert_eq!(token.scrub("refused syt_0123456789".to_owned()), "refused [redacted]");
    /// ```
    pub fn scrub(&self, text: String) -> String {
        if self.0.len() >= 8 && text.contains(&self.0) { text.replace(&self.0, "[redacted]") } else { text }
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// From a string; a number or boolean (as the environment may give one) is taken as its text.
/// The error never repeats the value.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn deserialises_from_scalars_without_echoing_them() {
        let s: Secret = serde_json::from_str("\"hunter2\"").unwrap_or_default();
        assert_eq!(s.expose_secret(), "hunter2");
        let n: Secret = serde_json::from_str("12345").unwrap_or_default();
        assert_eq!(n.expose_secret(), "12345");
        let err = serde_json::from_str::<Secret>("[\"hunter2\"]").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| !e.contains("hunter2")));
    }
}
