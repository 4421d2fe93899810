//! Scanning with a real clamd (the test kit's, with its marker signature), and failing
//! closed when it is down, silent, over its limit or answering nonsense.

use std::time::Duration;

use argus_media::{ByteStream, Clamd, Error, Scanner as _, Verdict};
use argus_testkit::clamd::{MARKER, SIGNATURE, STREAM_MAX_LENGTH};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::unique_bytes;

const TIMEOUT: Duration = Duration::from_secs(120);

fn body(bytes: Vec<u8>, chunk: usize) -> ByteStream {
    let chunks: Vec<_> = bytes.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(chunks).boxed()
}

#[tokio::test]
async fn a_clean_file_is_clean_with_the_engine_version() {
    let Some(clamd) = argus_testkit::clamd::shared() else { return };
    let scanner = Clamd::new(&clamd.addr(), TIMEOUT).unwrap();
    let report = scanner.scan(body(unique_bytes(300_000), 10_000)).await.unwrap();
    assert_eq!(report.verdict, Verdict::Clean);
    assert!(report.engine.starts_with("ClamAV "), "{}", report.engine);
}

#[tokio::test]
async fn the_marker_is_infected_with_its_signature_name() {
    let Some(clamd) = argus_testkit::clamd::shared() else { return };
    let scanner = Clamd::new(&clamd.addr(), TIMEOUT).unwrap();
    let mut bytes = unique_bytes(200_000);
    bytes.splice(150_000..150_000, MARKER.iter().copied());
    // Chunks that cut the marker in two.
    let report = scanner.scan(body(bytes, 150_010)).await.unwrap();
    let Verdict::Infected { threat } = report.verdict else { panic!("not infected: {report:?}") };
    assert!(threat.starts_with(SIGNATURE), "{threat}");
    assert!(report.engine.starts_with("ClamAV "));
}

#[tokio::test]
async fn a_body_over_the_stream_limit_is_a_limit_not_clean() {
    let Some(clamd) = argus_testkit::clamd::shared() else { return };
    let scanner = Clamd::new(&clamd.addr(), TIMEOUT).unwrap();
    let size = STREAM_MAX_LENGTH as usize + 2 * 1024 * 1024;
    let error = scanner.scan(body(vec![b'a'; size], 256 * 1024)).await.unwrap_err();
    assert!(matches!(error, Error::ScanLimit(_)), "{error}");
    assert!(error.is_retryable(), "the file stays pending");
}

/// A compression bomb: a small gzip that expands past the scanner's limits. Its limits
/// reached are never clean: the daemon (configured `AlertExceedsMax yes`, as a deployment must
/// be) reports it, and the file is quarantined.
#[tokio::test]
async fn a_compression_bomb_past_the_scanners_limits_is_not_clean() {
    use std::io::Write as _;
    let Some(clamd) = argus_testkit::clamd::shared() else { return };
    let scanner = Clamd::new(&clamd.addr(), TIMEOUT).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..(STREAM_MAX_LENGTH / (1024 * 1024)) * 4 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024, "the bomb is small: {}", bomb.len());
    let report = scanner.scan(body(bomb, 64 * 1024)).await.unwrap();
    let Verdict::Infected { threat } = report.verdict else { panic!("a bomb judged clean: {report:?}") };
    assert!(threat.contains("Limits"), "{threat}");
}

#[tokio::test]
async fn a_stopped_clamd_is_unavailable_not_clean() {
    let Some(clamd) = argus_testkit::clamd::start() else { return };
    let scanner = Clamd::new(&clamd.addr(), TIMEOUT).unwrap();
    assert_eq!(scanner.scan(body(b"before".to_vec(), 3)).await.unwrap().verdict, Verdict::Clean);
    drop(clamd);
    let error = scanner.scan(body(b"after".to_vec(), 3)).await.unwrap_err();
    assert!(matches!(error, Error::ScannerUnavailable(_)), "{error}");
}

/// A loopback listener answering each connection with `reply` (or never, when `None`).
async fn fake_clamd(reply: Option<&'static [u8]>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0_u8; 64 * 1024];
                let Some(reply) = reply else {
                    // Reads forever, answers nothing.
                    while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                    return;
                };
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if buf[..n].starts_with(b"zVERSION") {
                    let _ = socket.write_all(b"ClamAV 1.4.6/27000/Thu Jan  1 00:00:00 2026\0").await;
                } else {
                    // Drain the INSTREAM body up to its terminator, then answer.
                    let mut seen = buf[..n].to_vec();
                    while !seen.ends_with(&[0, 0, 0, 0]) {
                        let Ok(m) = socket.read(&mut buf).await else { return };
                        if m == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..m]);
                    }
                    let _ = socket.write_all(reply).await;
                }
            });
        }
    });
    format!("tcp://{addr}")
}

#[tokio::test]
async fn any_reply_but_ok_or_found_is_an_error() {
    for (reply, code) in [
        (&b"stream: lstat() failed: Permission denied. ERROR\0"[..], "SCANNER_REPLY"),
        (b"UNKNOWN COMMAND\0", "SCANNER_REPLY"),
        (b"stream: OK", "SCANNER_REPLY"),
        (b"INSTREAM size limit exceeded. ERROR\0", "SCAN_LIMIT"),
    ] {
        let scanner = Clamd::new(&fake_clamd(Some(reply)).await, TIMEOUT).unwrap();
        let error = scanner.scan(body(b"data".to_vec(), 2)).await.unwrap_err();
        assert_eq!(error.code(), code, "{error}");
    }
    let scanner = Clamd::new(&fake_clamd(Some(b"stream: OK\0")).await, TIMEOUT).unwrap();
    let report = scanner.scan(body(b"data".to_vec(), 2)).await.unwrap();
    assert_eq!(report.verdict, Verdict::Clean);
    assert_eq!(report.engine, "ClamAV 1.4.6/27000/Thu Jan  1 00:00:00 2026");
}

#[tokio::test]
async fn a_silent_clamd_times_out_as_unavailable() {
    let scanner = Clamd::new(&fake_clamd(None).await, Duration::from_millis(500)).unwrap();
    let error = scanner.scan(body(b"data".to_vec(), 2)).await.unwrap_err();
    assert!(matches!(error, Error::ScannerUnavailable(_)), "{error}");
}

#[tokio::test]
async fn a_failing_body_is_not_scanned_clean() {
    let scanner = Clamd::new(&fake_clamd(Some(b"stream: OK\0")).await, TIMEOUT).unwrap();
    let failing =
        futures::stream::iter([Ok(Bytes::from_static(b"part")), Err(Error::Body("reset".to_owned()))])
            .boxed();
    let error = scanner.scan(failing).await.unwrap_err();
    assert!(matches!(error, Error::Body(_)), "{error}");
}
