//! A file's body as a stream of chunks, never held whole: held to the byte cap as it comes,
//! and to an idle timeout and a minimum rate so that a dribbling server cannot hold a download
//! open for ever.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, stream::BoxStream};
use tokio::time::Instant;

use crate::{Error, Result, transport::map_reqwest};

/// What a body is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Most bytes.
    pub(crate) cap: u64,
    /// Longest wait for the next chunk.
    pub(crate) idle: Duration,
    /// Slowest average, in bytes per second, after `grace` (0: none).
    pub(crate) min_rate: u64,
    /// Time before the minimum rate applies.
    pub(crate) grace: Duration,
}

struct State {
    response: reqwest::Response,
    limits: BodyLimits,
    started: Instant,
    received: u64,
    done: bool,
}

impl State {
    /// When the next chunk must have come: within the idle timeout, and before the bytes
    /// received so far fall below the minimum rate.
    fn next_deadline(&self) -> Instant {
        let idle = Instant::now() + self.limits.idle;
        if self.limits.min_rate == 0 {
            return idle;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
        idle.min(self.started + self.limits.grace + earned)
    }
}

/// The body of `response` (its head already accepted) as a stream: a declared length over the
/// cap fails before anything is read; a body passing the cap fails as soon as it does; one that
/// stalls or comes too slowly fails with [`Error::MediaStalled`]. The stream ends after its
/// first error.
pub(crate) fn stream(
    response: reqwest::Response,
    limits: BodyLimits,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    if response.content_length().is_some_and(|len| len > limits.cap) {
        return Err(Error::MediaTooLarge { cap: limits.cap });
    }
    let state = State { response, limits, started: Instant::now(), received: 0, done: false };
    Ok(futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = match tokio::time::timeout_at(state.next_deadline(), state.response.chunk()).await {
            Err(_) => Err(Error::MediaStalled),
            Ok(Err(e)) => Err(map_reqwest(e)),
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(chunk))) => {
                state.received += chunk.len() as u64;
                if state.received > state.limits.cap {
                    Err(Error::MediaTooLarge { cap: state.limits.cap })
                } else {
                    Ok(chunk)
                }
            }
        };
        state.done = item.is_err();
        Some((item, state))
    })
    .boxed())
}
