//! `[graphql]`: the endpoint's limits and switches, and the key of cursors and node ids.

use std::path::Path;

use serde::Deserialize;

use argus_domain::Secret;

use super::key::{Encoding, KeyMaterial};
use crate::{Error, Result};

/// The file, in the data directory, that keeps the generated cursor and node-id key when
/// `graphql.cursor_key` is not configured.
pub const CURSOR_KEY_FILE: &str = "argus-tchap.cursor-key";

/// The cursor key: base64, at least 32 bytes, generated when not configured.
const CURSOR_KEY: KeyMaterial = KeyMaterial {
    name: "graphql.cursor_key",
    file_key: "graphql.cursor_key",
    encoding: Encoding::Base64,
    min_len: 32,
    max_len: usize::MAX,
    generated: Some(CURSOR_KEY_FILE),
};

/// Limits and switches of the GraphQL endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlConfig {
    /// Introspection; default: on in development, off when a real key is configured.
    pub introspection: Option<bool>,
    /// The GraphiQL page; default: on in development, off when a real key is configured.
    pub graphiql: Option<bool>,
    /// Maximum nesting depth of a query (fragments expanded).
    pub max_depth: usize,
    /// Maximum number of fields of an operation, aliases and fragment spreads counted.
    pub max_fields: usize,
    /// Maximum number of tokens of a document.
    pub max_tokens: usize,
    /// Maximum number of operations in one batched request.
    pub max_batch: usize,
    /// Maximum size of a request body, in bytes.
    pub max_body_bytes: usize,
    /// Key authenticating pagination cursors (base64); default: random per process.
    pub cursor_key: Option<Secret>,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            introspection: None,
            graphiql: None,
            max_depth: 15,
            max_fields: 300,
            max_tokens: 5_000,
            max_batch: 10,
            max_body_bytes: 64 * 1024,
            cursor_key: None,
        }
    }
}

impl GraphqlConfig {
    /// Checks what typing alone cannot.
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_depth == 0 || self.max_fields == 0 || self.max_tokens == 0 || self.max_batch == 0 {
            return Err(Error::Config("graphql limits must be positive".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(Error::Config("graphql.max_body_bytes must be at least 1024".into()));
        }
        Ok(())
    }

    /// Checks the configured cursor key (after the other sections, as loading always has).
    pub(super) fn validate_key(&self) -> Result<()> {
        CURSOR_KEY.configured_bytes(self.cursor_key.as_ref(), None).map(drop)
    }

    /// The configured cursor key, or the one generated and kept in `data_dir`.
    pub(super) fn cursor_key_or_generated(&self, data_dir: &Path) -> Result<Vec<u8>> {
        CURSOR_KEY.resolve_bytes(self.cursor_key.as_ref(), None, data_dir)
    }
}
