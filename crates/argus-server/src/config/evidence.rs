//! `[evidence]`: what the archive keeps of a message redacted after it captured it.

use serde::Deserialize;

/// What the archive keeps of content that a redaction reaching it after the capture purges.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Legal hold (on by default): the content captured is kept, sealed; everyone reads the
    /// message as redacted, a caller with `tchap:redacted` also reads what it held. Off, the
    /// redaction purges it as the homeserver did (content held earlier stays held).
    pub keep_redacted: bool,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self { keep_redacted: true }
    }
}

impl EvidenceConfig {
    /// Says at start what a redaction after capture does: informs when the hold is on, warns
    /// when it is off (a member can then erase what the archive captured of their messages).
    pub fn log_at_start(&self) {
        if self.keep_redacted {
            tracing::info!(
                keep_redacted = true,
                "legal hold on: content redacted after its capture is kept, readable with tchap:redacted"
            );
        } else {
            tracing::warn!(
                keep_redacted = false,
                "legal hold off (evidence.keep_redacted = false): a redaction after capture purges the archived content"
            );
        }
    }
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment's Jail closures return figment::Error")]
mod tests {
    use std::{
        io,
        path::Path,
        sync::{Arc, Mutex},
    };

    use figment::Jail;

    use super::EvidenceConfig;
    use crate::Config;

    #[test]
    fn the_hold_is_on_by_default_and_turned_off_by_file_or_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert!(c.evidence.keep_redacted);
            assert!(c.store_options().map_err(|e| e.to_string())?.keep_redacted);
            jail.create_file("argus-tchap.toml", "[evidence]\nkeep_redacted = false\n")?;
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert!(!c.store_options().map_err(|e| e.to_string())?.keep_redacted);
            jail.create_file("argus-tchap.toml", "")?;
            jail.set_env("ARGUS_EVIDENCE_KEEP_REDACTED", "false");
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert!(!c.evidence.keep_redacted);
            jail.set_env("ARGUS_EVIDENCE_KEEP_REDACTD", "true");
            assert!(Config::load(Path::new("argus-tchap.toml")).is_err(), "a misspelt key is refused");
            Ok(())
        });
    }

    /// Log lines written to a shared buffer.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn logged(config: &EvidenceConfig) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || config.log_at_start());
        let bytes = lines.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn the_hold_is_logged_at_start_and_off_is_a_warning() {
        let on = logged(&EvidenceConfig::default());
        assert!(on.contains("INFO") && on.contains("keep_redacted=true"), "{on}");
        let off = logged(&EvidenceConfig { keep_redacted: false });
        assert!(off.contains("WARN") && off.contains("keep_redacted=false"), "{off}");
    }
}
