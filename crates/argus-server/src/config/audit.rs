//! `[audit]`: the key of the audit chain.

use std::path::PathBuf;

use serde::Deserialize;

use argus_domain::Secret;

use super::key::{Encoding, KeyMaterial};
use crate::{Error, Result};

/// The audit chain's key: base64, at least 32 bytes, never generated.
const AUDIT_KEY: KeyMaterial = KeyMaterial {
    name: "audit.key",
    file_key: "audit.key_file",
    encoding: Encoding::Base64,
    min_len: 32,
    max_len: usize::MAX,
    generated: None,
};

/// The key that keys the audit chain (HMAC-SHA256), held outside the database so that someone
/// who can write the database cannot rewrite the trail and hash it again. Give it by file or by
/// environment, never in the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// A file holding the key, base64 (at least 32 bytes once decoded).
    pub key_file: Option<PathBuf>,
    /// The key itself, base64 (for the environment: `ARGUS_AUDIT_KEY`).
    pub key: Option<Secret>,
}

impl AuditConfig {
    /// The key, when one is configured (value or file).
    pub(super) fn audit_key(&self) -> Result<Option<argus_store::AuditKey>> {
        AUDIT_KEY
            .configured_bytes(self.key.as_ref(), self.key_file.as_deref())?
            .map(|bytes| {
                argus_store::AuditKey::new(bytes)
                    .map_err(|_| Error::Config("audit.key must hold at least 32 bytes".into()))
            })
            .transpose()
    }
}
