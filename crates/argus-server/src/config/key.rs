//! Key material: one resolver for every key of the configuration. A key is given as a value (in
//! the file or the environment), or in a file of its own, or, for the keys that may be, generated
//! once in the data directory (32 random bytes, base64url, readable by the owner only) and read
//! back from there afterwards. Its text is base64 (the HS256 secret is used as it is) and its
//! length is checked. Errors name the configuration key, never the key or a path.

use std::path::Path;

use base64::Engine as _;

use argus_domain::Secret;

use crate::{Error, Result};

/// How a key's text becomes its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// The text itself (the HS256 secret).
    Text,
    /// Standard or URL-safe base64, surrounding whitespace ignored.
    Base64,
}

/// One key of the configuration: what names it, how it is encoded, how long it is and where it
/// is generated when none is configured.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyMaterial {
    /// The configuration key of the value (`audit.key`), named in errors.
    pub(super) name: &'static str,
    /// The configuration key of the file holding it (`audit.key_file`), named in errors; the
    /// value's key when there is no such option.
    pub(super) file_key: &'static str,
    /// How its text becomes its bytes.
    pub(super) encoding: Encoding,
    /// The fewest bytes it may hold.
    pub(super) min_len: usize,
    /// The most bytes it may hold.
    pub(super) max_len: usize,
    /// The file, in the data directory, generated when no key is configured; `None`: the key is
    /// optional and nothing is generated.
    pub(super) generated: Option<&'static str>,
}

impl KeyMaterial {
    /// The key's bytes from its text, checked.
    pub(super) fn decode(&self, text: &str) -> Result<Vec<u8>> {
        let bytes = match self.encoding {
            Encoding::Text => text.as_bytes().to_vec(),
            Encoding::Base64 => {
                let text = text.trim();
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
                    .map_err(|_| Error::Config(format!("{} must be base64", self.name)))?
            }
        };
        if bytes.len() < self.min_len || bytes.len() > self.max_len {
            let bound = if self.min_len == self.max_len { "" } else { "at least " };
            return Err(Error::Config(format!("{} must hold {bound}{} bytes", self.name, self.min_len)));
        }
        Ok(bytes)
    }

    /// The configured key's text: `value`, else the content of `file`; `None` when neither is
    /// configured.
    pub(super) fn configured(&self, value: Option<&Secret>, file: Option<&Path>) -> Result<Option<Secret>> {
        match (value, file) {
            (Some(value), _) => Ok(Some(value.clone())),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|text| Some(Secret::new(text.trim())))
                .map_err(|_| Error::Config(format!("cannot read {}", self.file_key))),
            (None, None) => Ok(None),
        }
    }

    /// The configured key's bytes, checked; `None` when none is configured.
    pub(super) fn configured_bytes(
        &self,
        value: Option<&Secret>,
        file: Option<&Path>,
    ) -> Result<Option<Vec<u8>>> {
        self.configured(value, file)?.map(|text| self.decode(text.expose_secret())).transpose()
    }

    /// The configured key's text, or the one generated in `data_dir` (on first use), checked;
    /// with whether it was generated.
    pub(super) fn resolve(
        &self,
        value: Option<&Secret>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<(Secret, bool)> {
        let (text, generated) = match (self.configured(value, file)?, self.generated) {
            (Some(text), _) => (text, false),
            (None, Some(name)) => (load_or_create(data_dir, name, self.name)?, true),
            (None, None) => return Err(Error::Config(format!("{} is not configured", self.name))),
        };
        self.decode(text.expose_secret())?;
        Ok((text, generated))
    }

    /// The configured or generated key's bytes, checked.
    pub(super) fn resolve_bytes(
        &self,
        value: Option<&Secret>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<Vec<u8>> {
        let (text, _) = self.resolve(value, file, data_dir)?;
        self.decode(text.expose_secret())
    }
}

/// Creates a directory, readable by the owner only, when it does not exist (an existing one,
/// which may be the working directory, is left as it is).
pub(super) fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|_| Error::Config("cannot create the data directory".into()))
}

/// Reads the key kept in `dir/file`, generating 32 random bytes (base64url, readable by the
/// owner only) on first use; `name` names it in errors and the log.
fn load_or_create(dir: &Path, file: &str, name: &str) -> Result<Secret> {
    load_or_generate(dir, file, name, || {
        let mut bytes = [0_u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        Ok(Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    })
}

/// Reads the secret kept in `dir/file`, writing the text `generate` makes (readable by the
/// owner only, in a directory created owner-only) on first use; `name` names it in errors and
/// the log, never the secret or the path.
pub(super) fn load_or_generate(
    dir: &Path,
    file: &str,
    name: &str,
    generate: impl FnOnce() -> Result<Secret>,
) -> Result<Secret> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(Secret::new(text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return Err(Error::Config(format!("cannot read the generated {name} file"))),
    }
    let secret = generate()?;
    create_private_dir(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut out) => {
            use std::io::Write as _;
            out.write_all(secret.expose_secret().as_bytes())
                .and_then(|()| out.sync_all())
                .map_err(|_| Error::Config(format!("cannot write the generated {name} file")))?;
            tracing::info!(what = name, "generated a secret in the data directory");
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|text| Secret::new(text.trim()))
            .map_err(|_| Error::Config(format!("cannot read the generated {name} file"))),
        Err(_) => Err(Error::Config(format!("cannot create the generated {name} file"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: KeyMaterial = KeyMaterial {
        name: "section.key",
        file_key: "section.key_file",
        encoding: Encoding::Base64,
        min_len: 32,
        max_len: 32,
        generated: Some("generated-key"),
    };

    /// 32 bytes, in standard base64 (padded) and in URL-safe base64 without padding.
    const STANDARD: &str = "+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8=";
    const URL_SAFE: &str = "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8";

    #[test]
    fn a_value_then_a_file_then_the_generated_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.b64");
        std::fs::write(&file, format!("{URL_SAFE}\n")).unwrap();
        let value = Secret::new(STANDARD);
        let (text, generated) = KEY.resolve(Some(&value), Some(&file), dir.path()).unwrap();
        assert_eq!((text.expose_secret(), generated), (STANDARD, false));
        let from_file = KEY.resolve_bytes(None, Some(&file), dir.path()).unwrap();
        assert_eq!(from_file, KEY.decode(STANDARD).unwrap(), "both alphabets, whitespace trimmed");
        assert!(!dir.path().join("generated-key").exists());

        let (first, generated) = KEY.resolve(None, None, dir.path()).unwrap();
        assert!(generated);
        assert_eq!(KEY.resolve(None, None, dir.path()).unwrap().0, first, "generated once, then read");
        assert_eq!(KEY.configured_bytes(None, None).unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("generated-key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn errors_name_the_key_never_its_value_or_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-secret-file");
        let error = |result: Result<Option<Vec<u8>>>| result.err().map(|e| e.to_string()).unwrap_or_default();
        let short = Secret::new("c2hvcnQtc2VjcmV0");
        assert_eq!(error(KEY.configured_bytes(Some(&short), None)), "section.key must hold 32 bytes");
        let garbage = Secret::new("not base64 at all!");
        assert_eq!(error(KEY.configured_bytes(Some(&garbage), None)), "section.key must be base64");
        assert_eq!(error(KEY.configured_bytes(None, Some(&missing))), "cannot read section.key_file");
        let text = KeyMaterial { encoding: Encoding::Text, max_len: usize::MAX, ..KEY };
        assert_eq!(
            error(text.configured_bytes(Some(&short), None)),
            "section.key must hold at least 32 bytes"
        );
    }
}
