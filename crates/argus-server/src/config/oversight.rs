//! `[oversight]`: the transparency log's name and the two signing keys of oversight: the log's
//! signed-note key (checkpoints) and the packages' minisign key (disclosure packages). Each is
//! given by value (the environment), by file, or generated once in the data directory
//! (readable by the owner only) and read back from there afterwards; never in the database,
//! never logged.

use std::path::{Path, PathBuf};

use argus_crypto::{package_signing::PackageSigner, tlog::LogSigner};
use argus_graphql::oversight::Keys;
use serde::Deserialize;

use argus_domain::Secret;

use super::key::load_or_generate;
use crate::{Error, Result};

/// The log's signed-note secret generated in the data directory when none is configured.
pub const LOG_SIGNING_KEY_FILE: &str = "oversight-log.key";

/// The packages' minisign secret key generated in the data directory when none is configured.
pub const PACKAGE_SIGNING_KEY_FILE: &str = "oversight-package.key";

/// The comment line of a minisign secret key given as its base64 line alone.
const MINISIGN_COMMENT: &str = "untrusted comment: argus-tchap package signing key";

/// The transparency log and the disclosure packages. `Debug` never shows a key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OversightConfig {
    /// The log's name: the signed-note key's name and the first part of every checkpoint's
    /// origin (`<log_name>/<org>`).
    pub log_name: String,
    /// A file holding the log's signed-note secret (`PRIVATE+KEY+<log_name>+<hexid>+<base64>`).
    pub log_signing_key_file: Option<PathBuf>,
    /// The log's signed-note secret itself (for the environment:
    /// `ARGUS_OVERSIGHT_LOG_SIGNING_KEY`).
    pub log_signing_key: Option<Secret>,
    /// A file holding the packages' minisign secret key (unencrypted, minisign's file form).
    pub package_signing_key_file: Option<PathBuf>,
    /// The packages' minisign secret key itself, in its file form or its base64 line alone (for
    /// the environment: `ARGUS_OVERSIGHT_PACKAGE_SIGNING_KEY`).
    pub package_signing_key: Option<Secret>,
}

impl Default for OversightConfig {
    fn default() -> Self {
        Self {
            log_name: "argus-tchap".into(),
            log_signing_key_file: None,
            log_signing_key: None,
            package_signing_key_file: None,
            package_signing_key: None,
        }
    }
}

impl OversightConfig {
    /// Checks the log's name: a signed-note key name (no `+`, no white space, not empty).
    pub(super) fn validate(&self) -> Result<()> {
        let name = &self.log_name;
        if name.is_empty() || name.chars().any(|c| c == '+' || c.is_whitespace() || c.is_control()) {
            return Err(Error::Config(
                "oversight.log_name must be a non-empty name without '+' or white space".into(),
            ));
        }
        Ok(())
    }

    /// The configured keys, or the ones generated in `data_dir` on first use.
    pub(super) fn keys(&self, data_dir: &Path) -> Result<Keys> {
        Ok(Keys {
            log_name: self.log_name.clone(),
            log: self.log_signer(data_dir)?,
            package: self.package_signer(data_dir)?,
        })
    }

    fn log_signer(&self, data_dir: &Path) -> Result<LogSigner> {
        let bad = || Error::Config("oversight.log_signing_key is not a signed-note secret key".into());
        let text = match configured(
            self.log_signing_key.as_ref(),
            self.log_signing_key_file.as_deref(),
            "oversight.log_signing_key_file",
        )? {
            Some(text) => text,
            None => load_or_generate(data_dir, LOG_SIGNING_KEY_FILE, "oversight log signing key", || {
                LogSigner::generate(&self.log_name).map(|(_, secret)| secret).map_err(|_| bad())
            })?,
        };
        let signer = LogSigner::from_secret(text.expose_secret()).map_err(|_| bad())?;
        if signer.name() != self.log_name {
            return Err(Error::Config(
                "oversight.log_signing_key is named other than oversight.log_name".into(),
            ));
        }
        Ok(signer)
    }

    fn package_signer(&self, data_dir: &Path) -> Result<PackageSigner> {
        let bad = || {
            Error::Config("oversight.package_signing_key is not an unencrypted minisign secret key".into())
        };
        let text = match configured(
            self.package_signing_key.as_ref(),
            self.package_signing_key_file.as_deref(),
            "oversight.package_signing_key_file",
        )? {
            Some(text) => text,
            None => {
                load_or_generate(data_dir, PACKAGE_SIGNING_KEY_FILE, "oversight package signing key", || {
                    PackageSigner::generate().map(|(_, secret)| secret).map_err(|_| bad())
                })?
            }
        };
        let text = text.expose_secret().trim();
        let signer = if text.contains('\n') {
            PackageSigner::from_secret(text)
        } else {
            PackageSigner::from_secret(&format!("{MINISIGN_COMMENT}\n{text}\n"))
        };
        signer.map_err(|_| bad())
    }
}

/// The key's text: the value, else the file's content; `None` when neither is configured.
fn configured(value: Option<&Secret>, file: Option<&Path>, file_key: &str) -> Result<Option<Secret>> {
    match (value, file) {
        (Some(value), _) => Ok(Some(value.clone())),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|text| Some(Secret::new(text.trim())))
            .map_err(|_| Error::Config(format!("cannot read {file_key}"))),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_once_owner_only_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = OversightConfig::default();
        let first = config.keys(&data).unwrap();
        let again = config.keys(&data).unwrap();
        assert_eq!(first.log.verifier_key(), again.log.verifier_key());
        assert_eq!(first.package.public_key(), again.package.public_key());
        assert!(first.log.verifier_key().starts_with("argus-tchap+"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&data), 0o700);
            assert_eq!(mode(&data.join(LOG_SIGNING_KEY_FILE)), 0o600);
            assert_eq!(mode(&data.join(PACKAGE_SIGNING_KEY_FILE)), 0o600);
        }
        let debug = format!("{first:?} {config:?}");
        let secret = std::fs::read_to_string(data.join(LOG_SIGNING_KEY_FILE)).unwrap();
        assert!(secret.starts_with("PRIVATE+KEY+argus-tchap+"));
        assert!(!debug.contains(secret.trim()), "Debug shows no secret");
    }

    #[test]
    fn configured_keys_win_and_a_bare_minisign_line_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (log, log_secret) = LogSigner::generate("court-log").unwrap();
        let (package, package_secret) = PackageSigner::generate().unwrap();
        let file = dir.path().join("log.key");
        std::fs::write(&file, log_secret.expose_secret()).unwrap();
        let bare = package_secret.expose_secret().lines().nth(1).unwrap().to_owned();
        let config = OversightConfig {
            log_name: "court-log".into(),
            log_signing_key_file: Some(file),
            package_signing_key: Some(Secret::new(bare)),
            ..OversightConfig::default()
        };
        let keys = config.keys(dir.path()).unwrap();
        assert_eq!(keys.log.verifier_key(), log.verifier_key());
        assert_eq!(keys.package.public_key(), package.public_key());
        assert!(!dir.path().join(LOG_SIGNING_KEY_FILE).exists(), "nothing generated");

        let renamed = OversightConfig { log_name: "other".into(), ..config.clone() };
        let error = renamed.keys(dir.path()).unwrap_err().to_string();
        assert_eq!(error, "oversight.log_signing_key is named other than oversight.log_name");
        let garbage = OversightConfig { package_signing_key: Some(Secret::new("nope")), ..config };
        let error = garbage.keys(dir.path()).unwrap_err().to_string();
        assert!(!error.contains("nope") && error.contains("oversight.package_signing_key"), "{error}");
    }
}
