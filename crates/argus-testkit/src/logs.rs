//! What the code under test logs, captured for the test to read: how a test shows that no
//! token, refresh token or key reaches a log line.
//!
//! ```
//! let logs = argus_testkit::logs::capture();
//! tracing::warn!(code = "HOMESERVER_UNAUTHORIZED", "token refused");
//! assert!(logs.text().contains("HOMESERVER_UNAUTHORIZED"));
//! ```

use std::{
    io::Write,
    sync::{Arc, Mutex, PoisonError},
};

/// Every line logged on this thread while it lives, at every level, without colours.
pub struct CapturedLogs {
    sink: Sink,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.sink.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

/// Starts capturing what this thread logs (a `#[tokio::test]` runs on one thread), until the
/// result is dropped.
pub fn capture() -> CapturedLogs {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    // Callsites first seen by another test's subscriber may have cached a "never" interest.
    tracing::callsite::rebuild_interest_cache();
    CapturedLogs { sink, _guard: guard }
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
