//! A ClamAV daemon (`clamd`) over TCP: `zVERSION` for the engine, `zINSTREAM` for the verdict
//! (through the `clamav-client` crate). Fails closed: clamd down, a timeout, its stream size
//! limit or any reply but `OK` / `FOUND` is an error, never clean.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{ScanReport, Scanner, Verdict};
use crate::{ByteStream, Error, Result};

/// Size of one `INSTREAM` chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// The most reply bytes read from clamd (a verdict is one short line).
const MAX_REPLY_BYTES: usize = 4096;

/// The most characters kept of an engine or signature name.
const MAX_NAME_CHARS: usize = 200;

/// A ClamAV daemon at a TCP address, with a deadline for each scan.
#[derive(Debug, Clone)]
pub struct Clamd {
    addr: String,
    timeout: Duration,
}

impl Clamd {
    /// A scanner at `addr` (`tcp://host:port`); each scan (version and verdict) must end
    /// within `timeout`. No connection is made yet.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert!(argus_media::Clamd::new("tcp://127.0.0.1:3310", Duration::from_secs(60)).is_ok());
    /// assert!(argus_media::Clamd::new("127.0.0.1:3310", Duration::from_secs(60)).is_err());
    /// ```
    pub fn new(addr: &str, timeout: Duration) -> Result<Self> {
        let config = || Error::Config("clamd: expected tcp://host:port".to_owned());
        let rest = addr.strip_prefix("tcp://").ok_or_else(config)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(config)?;
        if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
            return Err(config());
        }
        Ok(Self { addr: rest.to_owned(), timeout })
    }

    async fn scan_now(&self, body: ByteStream) -> Result<ScanReport> {
        let transport = Transport { addr: &self.addr };
        let version = clamav_client::tokio::get_version(&transport).await.map_err(unavailable)?;
        let engine = reply_text(&version).ok_or_else(|| Error::ScannerReply("no version".to_owned()))?;
        let body_error = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&body_error);
        let input = body.map(move |chunk| {
            chunk.map_err(|error| {
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(error);
                }
                io::Error::other("the body failed")
            })
        });
        let reply = clamav_client::tokio::scan_stream(input, &transport, Some(CHUNK_BYTES)).await;
        if let Some(error) = body_error.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(error);
        }
        let verdict = verdict_of(&reply.map_err(unavailable)?)?;
        Ok(ScanReport { verdict, engine })
    }
}

impl Scanner for Clamd {
    fn scan<'a>(&'a self, body: ByteStream) -> BoxFuture<'a, Result<ScanReport>> {
        async move {
            tokio::time::timeout(self.timeout, self.scan_now(body))
                .await
                .map_err(|_| Error::ScannerUnavailable("clamd did not answer in time".to_owned()))?
        }
        .boxed()
    }
}

fn unavailable(error: io::Error) -> Error {
    Error::ScannerUnavailable(format!("clamd: {}", error.kind()))
}

/// A NUL-terminated reply as text (printable characters only, bounded), `None` when it is
/// not terminated: a cut reply is no verdict.
fn reply_text(reply: &[u8]) -> Option<String> {
    let text = reply.strip_suffix(b"\0")?;
    let text = String::from_utf8_lossy(text);
    Some(text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_NAME_CHARS).collect())
}

/// Reads an `INSTREAM` reply: `stream: OK`, `stream: <name> FOUND`; anything else fails.
fn verdict_of(reply: &[u8]) -> Result<Verdict> {
    let text = reply_text(reply).ok_or_else(|| Error::ScannerReply("a cut or empty reply".to_owned()))?;
    if text.contains("size limit exceeded") {
        return Err(Error::ScanLimit("clamd's stream size limit was exceeded".to_owned()));
    }
    let Some(result) = text.strip_prefix("stream: ") else {
        return Err(Error::ScannerReply(first_words(&text)));
    };
    if result == "OK" {
        return Ok(Verdict::Clean);
    }
    match result.strip_suffix(" FOUND") {
        Some(threat) if !threat.is_empty() && !threat.ends_with(" ERROR") => {
            Ok(Verdict::Infected { threat: threat.to_owned() })
        }
        _ if result.ends_with("ERROR") && result.contains("limit") => {
            Err(Error::ScanLimit(first_words(result)))
        }
        _ => Err(Error::ScannerReply(first_words(result))),
    }
}

/// The start of an unexpected reply, for the reason (bounded).
fn first_words(text: &str) -> String {
    text.chars().take(80).collect()
}

/// clamd over TCP, through a [`Connection`].
struct Transport<'a> {
    addr: &'a str,
}

impl clamav_client::tokio::TransportProtocol for &Transport<'_> {
    type Stream = Connection;

    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> {
        let addr = self.addr.to_owned();
        async move {
            let stream = TcpStream::connect(addr).await?;
            Ok(Connection { stream, peer_stopped_reading: false, reply_left: MAX_REPLY_BYTES })
        }
    }
}

/// A connection to clamd that keeps its reply readable when clamd stops reading early (it
/// answers `INSTREAM size limit exceeded` and closes): further writes are dropped instead of
/// failing, so the reply, not a broken pipe, says why. Reads stop after
/// [`MAX_REPLY_BYTES`].
struct Connection {
    stream: TcpStream,
    peer_stopped_reading: bool,
    reply_left: usize,
}

fn peer_gone(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.peer_stopped_reading {
            return Poll::Ready(Ok(buf.len()));
        }
        match ready!(Pin::new(&mut self.stream).poll_write(cx, buf)) {
            Err(error) if peer_gone(&error) => {
                self.peer_stopped_reading = true;
                Poll::Ready(Ok(buf.len()))
            }
            other => Poll::Ready(other),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.peer_stopped_reading {
            return Poll::Ready(Ok(()));
        }
        match ready!(Pin::new(&mut self.stream).poll_flush(cx)) {
            Err(error) if peer_gone(&error) => {
                self.peer_stopped_reading = true;
                Poll::Ready(Ok(()))
            }
            other => Poll::Ready(other),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let want = self.reply_left.min(buf.remaining()).min(1024);
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut local = [0_u8; 1024];
        let mut limited = ReadBuf::new(&mut local[..want]);
        match ready!(Pin::new(&mut self.stream).poll_read(cx, &mut limited)) {
            Ok(()) => {
                let filled = limited.filled();
                self.reply_left -= filled.len();
                buf.put_slice(filled);
                Poll::Ready(Ok(()))
            }
            // A reset after the reply ends it: the reply is judged by its terminator.
            Err(error) if peer_gone(&error) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Clamd, Error, Verdict, verdict_of};

    #[test]
    fn only_ok_and_found_are_verdicts() {
        assert_eq!(verdict_of(b"stream: OK\0").unwrap(), Verdict::Clean);
        assert_eq!(
            verdict_of(b"stream: Win.Test.EICAR_HDB-1 FOUND\0").unwrap(),
            Verdict::Infected { threat: "Win.Test.EICAR_HDB-1".to_owned() }
        );
        assert!(matches!(verdict_of(b"INSTREAM size limit exceeded. ERROR\0"), Err(Error::ScanLimit(_))));
        for reply in [&b"stream: OK"[..], b"", b"\0", b"stream: \0", b"stream: FOUND\0", b"UNKNOWN COMMAND\0"]
        {
            assert!(verdict_of(reply).is_err(), "{:?}", String::from_utf8_lossy(reply));
        }
        assert!(matches!(verdict_of(b"stream: lstat() failed ERROR\0"), Err(Error::ScannerReply(_))));
    }

    #[test]
    fn addresses_are_tcp_host_port() {
        assert!(Clamd::new("tcp://clamav.internal:3310", std::time::Duration::from_secs(1)).is_ok());
        for bad in ["tcp://:3310", "tcp://host", "tcp://host:port", "unix:///run/clamd.ctl", "tcp://a/b:1"] {
            assert_eq!(
                Clamd::new(bad, std::time::Duration::from_secs(1)).unwrap_err().code(),
                "CONFIG",
                "{bad}"
            );
        }
    }
}
