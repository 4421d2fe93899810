//! The error type of the server crate.

/// Result type of the server crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the server could not start, or why a request was not authenticated.
///
/// Messages never contain a token, a secret, SQL or a file path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid or incomplete.
    #[error("{0}")]
    Config(String),
    /// The request carries no bearer token.
    #[error("no bearer token")]
    MissingToken,
    /// The bearer token is malformed, badly signed, expired or lacks a required claim.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The keys that verify tokens could not be fetched from the identity provider.
    #[error("the token signing keys are unavailable")]
    KeysUnavailable,
    /// A development token was requested while a real signing key is configured.
    #[error("a real signing key is configured: mint tokens with the identity provider")]
    NotDevelopment,
    /// The identity provider's token endpoint refused or did not answer a token request.
    #[error("identity provider: {0}")]
    IdentityProvider(String),
    /// The HTTP server could not be started or stopped cleanly.
    #[error("server error: {0}")]
    Server(String),
}

impl Error {
    /// Whether the error means the caller is not authenticated (HTTP 401).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Self::MissingToken | Self::InvalidToken(_))
    }
}
