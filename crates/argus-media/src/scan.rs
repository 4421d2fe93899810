//! The antivirus verdict on a file: the [`Scanner`] trait and [`Clamd`], a real ClamAV
//! daemon over its `INSTREAM` protocol.

mod clamd;

use futures::future::BoxFuture;

pub use clamd::Clamd;

use crate::{ByteStream, Result};

/// What the scanner said of a file, with the engine that said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The verdict.
    pub verdict: Verdict,
    /// The engine and its signature version, as the scanner reports them
    /// (`ClamAV 1.4.3/27500/Tue Jan  7 09:36:59 2025`).
    pub engine: String,
}

/// A scanner's verdict. There is no "unknown": a scan that could not conclude is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No signature matched.
    Clean,
    /// A signature matched.
    Infected {
        /// The signature's name (`Win.Test.EICAR_HDB-1`).
        threat: String,
    },
}

/// Scans a file's bytes. Fails closed: anything but a clear verdict is an error.
pub trait Scanner: Send + Sync + std::fmt::Debug {
    /// Scans `body`, read to its end.
    fn scan<'a>(&'a self, body: ByteStream) -> BoxFuture<'a, Result<ScanReport>>;

    /// Whether this scanner looks at the bytes ([`ScanningOff`] does not): files another
    /// recorded as [`NOT_SCANNED`] are then scanned again.
    fn scans(&self) -> bool {
        true
    }
}

/// The "scanner" of a deployment that turned scanning off (`[media] scan = "off"`, logged
/// loudly at start): every file is recorded clean, with an engine that says it was not
/// scanned, so that the record never claims a scan that did not happen.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanningOff;

/// The engine recorded for a file [`ScanningOff`] let through.
pub const NOT_SCANNED: &str = "none (scanning turned off)";

impl Scanner for ScanningOff {
    fn scan<'a>(&'a self, body: ByteStream) -> BoxFuture<'a, Result<ScanReport>> {
        Box::pin(async move {
            drop(body);
            Ok(ScanReport { verdict: Verdict::Clean, engine: NOT_SCANNED.to_owned() })
        })
    }

    fn scans(&self) -> bool {
        false
    }
}
