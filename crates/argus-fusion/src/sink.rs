//! Where entities go: the [`Sink`] trait and its two implementations.

mod jsonl;
mod webhook;

use std::{future::Future, pin::Pin};

pub use jsonl::{JsonLinesSink, ORG_PLACEHOLDER};
pub use webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookOptions, WebhookSecret, WebhookSink};

use crate::{NetworkNode, Result};

/// A boxed future returned by [`Sink`] methods, so sinks can be used as `Arc<dyn Sink>`.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A destination of network-node entities.
///
/// A sink may buffer: an entity counts as delivered only once a later [`Sink::flush`] has
/// returned `Ok`. The relay delivers a batch of entities in outbox order, flushes every sink,
/// and only then marks the rows delivered. Delivery is at least once, so a sink may see the
/// same `(id, version)` more than once (after a crash or a partial failure).
pub trait Sink: Send + Sync {
    /// A short name for logs and metrics (`jsonl`, `webhook`).
    fn name(&self) -> &'static str;

    /// Delivers (or buffers) one entity.
    fn deliver<'a>(&'a self, entity: &'a NetworkNode) -> SinkFuture<'a>;

    /// Makes every entity delivered so far durable. The default does nothing.
    fn flush(&self) -> SinkFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}
