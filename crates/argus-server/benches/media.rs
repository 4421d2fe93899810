//! The download route `GET /media/{id}` against a static file handler serving the same file,
//! for a 1 MB and a 100 MB file, each loaded with `wrk` in the same run.
//!
//! - The route runs as the product runs it: the server built from a `Config` (SQLite store
//!   and file blob store under a temporary data directory, `clamd` configured), a message
//!   with a file recorded, its bytes staged, put in the server's blob store and scanned
//!   clean, and a bearer JWT of a cleared reader; every request authenticates, looks the file
//!   up in the store and streams the blob.
//! - The baselines are `actix-files`' `NamedFile` in a minimal actix-web app with the same
//!   number of workers, serving the blob's own file: as configured by default (each 64 KiB
//!   read on the blocking pool) and with its reads on the worker (`read_mode_threshold`). It
//!   runs in a child process (this binary again), so each server's memory is its own.
//! - wrk reads every body to its end (keep-alive parses each response whole); every server is
//!   warmed up for 2 s first. Memory: each server's peak RSS during a load (`VmHWM`, reset
//!   through `/proc/{pid}/clear_refs` before it) above its RSS when idle before any load.
//!
//! `cargo bench -p argus-server --bench media`. `ARGUS_BENCH_SECONDS` the duration of each
//! load run (default 10), `ARGUS_BENCH_CONNECTIONS` the concurrent connections for the 1 MB
//! file (default 8), `ARGUS_BENCH_BIG_CONNECTIONS` for the 100 MB file (default 2). Needs `wrk`.

/// The allocator of the `argus-tchap` binary, so the server is measured as it is deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpServer, web};
use anyhow::{Context as _, Result, bail};
use argus_domain::{
    Classification, MediaRef, Scope, Sha256Digest, Viewer,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder},
};
use argus_server::{
    Config,
    auth::{TokenRequest, mint_dev_token},
    config::{ClamdAddress, KeySource},
};
use argus_store::{BlobVerdict, FetchOutcome, IngestionRun, NewBlob, ScanRecord, Store};
use bytes::Bytes;

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const ROOM: &str = "!media-bench:tchap.test";
const MB: u64 = 1_000_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `size` bytes of a fixed pseudo-random pattern, as a stream of 256 KiB chunks.
fn pattern(size: u64) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send {
    const CHUNK: u64 = 256 * 1024;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    futures::stream::iter((0..size.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(size - i * CHUNK);
        let mut chunk = Vec::with_capacity(usize::try_from(len).unwrap_or_default());
        while (chunk.len() as u64) < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        chunk.truncate(usize::try_from(len).unwrap_or_default());
        Ok(Bytes::from(chunk))
    }))
}

/// A file of the bench: its reference id, digest and size.
struct BenchFile {
    id: i64,
    sha256: Sha256Digest,
    size: u64,
}

/// Records one message per size with a file, stages each file's bytes, puts them in the
/// server's blob store, records them fetched and scanned clean; returns them in order.
async fn seed(
    store: &Store,
    blobs: &std::sync::Arc<dyn argus_media::BlobStore>,
    staging: &argus_media::Staging,
    viewer: &Viewer,
    sizes: &[u64],
) -> Result<Vec<BenchFile>> {
    let now = time::OffsetDateTime::now_utc();
    let messages = sizes.iter().enumerate().map(|(n, size)| {
        MessageRecordBuilder::new(&format!("$file{n}:tchap.test"))
            .msgtype("m.file")
            .sent_at(now - time::Duration::minutes(10) + time::Duration::seconds(n as i64))
            .media(MediaRef {
                uri: Some(format!("mxc://tchap.test/bench{size}")),
                mimetype: Some("application/pdf".to_owned()),
                size: Some(*size),
                filename: Some(format!("rapport-{size}.pdf")),
                file: None,
            })
            .build()
    });
    let snapshot = RoomSnapshotBuilder::new(ROOM).messages(messages).build();
    let run =
        IngestionRun { viewer: viewer.clone(), classification: Classification::Restricted, started_at: now };
    store.record_ingestion(&run, &snapshot)?;
    let jobs =
        store.claim_room_media(&viewer.org, &ROOM.parse()?, "bench", now, Duration::from_secs(600), 10)?;
    let mut files = Vec::new();
    for size in sizes {
        let uri = format!("mxc://tchap.test/bench{size}");
        let job = jobs.iter().find(|j| j.mxc_uri == uri).context("no media job for a file")?;
        let staged = staging.stage(pattern(*size), u64::MAX).await?;
        blobs.put(&staged).await?;
        let blob = NewBlob {
            sha256: staged.sha256,
            size: staged.size,
            sniffed_mimetype: "application/pdf".to_owned(),
        };
        if !store.record_media(job.id, "bench", &FetchOutcome::Fetched(blob), now)? {
            bail!("the fetched file was not recorded");
        }
        let scan = ScanRecord { verdict: BlobVerdict::Clean, engine: "bench".to_owned(), at: now };
        store.record_scan(&staged.sha256, &scan)?;
        files.push(BenchFile { id: job.id, sha256: staged.sha256, size: staged.size });
    }
    Ok(files)
}

/// The file named by `sha256`'s hex digest under `root`: the blob as the store wrote it.
fn find_blob(root: &Path, name: &str) -> Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(found) = find_blob(&path, name)? {
                return Ok(Some(found));
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The baselines: `NamedFile` serving `files[n]` at `/static/{n}` as configured by default
/// (every 64 KiB read on the blocking pool) and at `/sync/{n}` with `read_mode_threshold` past
/// the file's size (reads on the worker), with `workers` workers.
fn static_server(files: Vec<PathBuf>, workers: usize) -> Result<actix_web::dev::Server> {
    let files = std::sync::Arc::new(files);
    let server = HttpServer::new(move || {
        let named = |sync: bool, files: std::sync::Arc<Vec<PathBuf>>| {
            web::get().to(move |req: HttpRequest| {
                let files = std::sync::Arc::clone(&files);
                async move {
                    let n: usize =
                        req.match_info().get("n").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
                    let path = files.get(n).ok_or_else(|| actix_web::error::ErrorNotFound("no such file"))?;
                    let file = actix_files::NamedFile::open_async(path).await?;
                    let file = if sync { file.read_mode_threshold(u64::MAX) } else { file };
                    Ok::<_, actix_web::Error>(file.into_response(&req))
                }
            })
        };
        App::new()
            .route("/static/{n}", named(false, std::sync::Arc::clone(&files)))
            .route("/sync/{n}", named(true, std::sync::Arc::clone(&files)))
    })
    .workers(workers)
    .bind("127.0.0.1:0")?;
    let addr = server.addrs().first().copied().context("no address")?;
    #[expect(clippy::print_stdout, reason = "the address, for the parent process")]
    {
        println!("{addr}");
    }
    Ok(server.run())
}

/// Starts the bench binary again as the baseline server (so its memory is its own), serving
/// `files`; returns the child and its address.
async fn spawn_static(files: &[PathBuf]) -> Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt as _;
    let list = std::env::join_paths(files)?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .env(STATIC_FILES_ENV, list)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
    let addr = line.trim().to_owned();
    if addr.is_empty() {
        bail!("the baseline server did not start");
    }
    Ok((child, addr))
}

/// Set in the baseline server's process: the files it serves, as a path list.
const STATIC_FILES_ENV: &str = "ARGUS_BENCH_STATIC_FILES";

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get).clamp(1, 8)
}

/// One wrk run.
struct Load {
    rps: f64,
    /// Bytes read per second, partial answers included.
    bytes_per_s: f64,
    p99_ms: f64,
}

/// A wrk figure with a unit: `12.5ms`, `1.2s`, `980us`; `1.5GB` (binary units).
fn with_unit(value: &str, units: &[(&str, f64)]) -> Result<f64> {
    for (suffix, factor) in units {
        if let Some(Ok(n)) = value.strip_suffix(suffix).map(str::parse::<f64>) {
            return Ok(n * factor);
        }
    }
    bail!("unknown unit in {value}")
}

fn wrk(url: &str, token: Option<&str>, seconds: u64, connections: u64) -> Result<Load> {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--timeout",
        "60s",
        "--latency",
    ]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.arg(url).output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("failed requests: {text}");
    }
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim).map(str::to_owned))
    };
    let rps = field("Requests/sec:").context("no Requests/sec")?.parse::<f64>()?;
    let transfer = field("Transfer/sec:").context("no Transfer/sec")?;
    let bytes_per_s = with_unit(
        &transfer,
        &[("GB", 1024.0 * 1024.0 * 1024.0), ("MB", 1024.0 * 1024.0), ("KB", 1024.0), ("B", 1.0)],
    )?;
    let p99 = field("99%").context("no 99% latency")?;
    let p99_ms = with_unit(&p99, &[("us", 0.001), ("ms", 1.0), ("m", 60_000.0), ("s", 1000.0)])?;
    Ok(Load { rps, bytes_per_s, p99_ms })
}

/// A field of `/proc/{pid}/status`, in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// A server process: its id and its resident memory when idle, before any load.
struct Process {
    pid: u32,
    idle_kb: Option<u64>,
}

impl Process {
    fn new(pid: u32) -> Self {
        Self { pid, idle_kb: status_kb(pid, "VmRSS:") }
    }
}

/// Loads `url` with wrk; returns the load and the server's peak RSS during it above its idle
/// RSS, in MB.
async fn measured(
    server: &Process,
    url: String,
    token: Option<String>,
    seconds: u64,
    connections: u64,
) -> Result<(Load, Option<f64>)> {
    // Writing 5 resets VmHWM to the current RSS (Linux ≥ 4.0).
    let reset = std::fs::write(format!("/proc/{}/clear_refs", server.pid), "5").is_ok();
    let load =
        tokio::task::spawn_blocking(move || wrk(&url, token.as_deref(), seconds, connections)).await??;
    let peak = status_kb(server.pid, "VmHWM:");
    let growth = match (reset, server.idle_kb, peak) {
        (true, Some(idle), Some(peak)) => Some(peak.saturating_sub(idle) as f64 / 1000.0),
        _ => None,
    };
    Ok((load, growth))
}

/// Reads `url` whole (staged to disk, hashed as it comes) and checks its length and SHA-256.
async fn check(
    client: &reqwest::Client,
    staging: &argus_media::Staging,
    url: &str,
    token: Option<&str>,
    file: &BenchFile,
) -> Result<()> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        bail!("{url}: {}", response.status());
    }
    let body = staging.stage(response.bytes_stream(), u64::MAX).await?;
    if body.size != file.size || body.sha256 != file.sha256 {
        bail!("{url}: the body is not the file ({} bytes)", body.size);
    }
    Ok(())
}

fn token(config: &Config, viewer: &Viewer) -> Result<String> {
    let source = KeySource::Hs256 { secret: argus_domain::Secret::new(SECRET), generated: false };
    let request = TokenRequest {
        sub: viewer.actor.clone(),
        org: viewer.org.clone(),
        clearance: viewer.clearance,
        scopes: vec![Scope::Read],
        ttl: Duration::from_secs(3600),
    };
    Ok(mint_dev_token(&config.jwt, &source, &request)?)
}

fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[tokio::main]
#[expect(clippy::print_stdout, reason = "bench output")]
async fn main() -> Result<()> {
    if let Some(list) = std::env::var_os(STATIC_FILES_ENV) {
        let files = std::env::split_paths(&list).collect();
        return Ok(static_server(files, workers())?.await?);
    }
    let seconds = env_u64("ARGUS_BENCH_SECONDS", 10);
    let small_connections = env_u64("ARGUS_BENCH_CONNECTIONS", 8);
    let big_connections = env_u64("ARGUS_BENCH_BIG_CONNECTIONS", 2);
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        database_url: argus_store::DatabaseUrl::sqlite_file(dir.path().join("argus.db")),
        data_dir: Some(dir.path().to_path_buf()),
        ..Config::default()
    };
    config.jwt.hs256_secret = Some(argus_domain::Secret::new(SECRET));
    config.fusion.enabled = false;
    // Files are served once scanned clean; the daemon is never called (the files are scanned).
    config.media.clamd = Some(ClamdAddress { host: "127.0.0.1".to_owned(), port: 9 });

    let built = argus_server::app::build(&config).await?;
    let store = built.state.services().app.store.clone();
    let blobs = std::sync::Arc::clone(built.state.services().app.media.as_ref().context("no media")?.blobs());
    let staging = argus_media::Staging::new(dir.path().join("bench-staging"))?;
    let viewer = ViewerBuilder::new("bench").actor("bench").build();
    let files = seed(&store, &blobs, &staging, &viewer, &[MB, 100 * MB]).await?;
    let media_dir = config.data_dir().join(argus_server::config::MEDIA_DIR);
    let paths = files
        .iter()
        .map(|f| find_blob(&media_dir, &f.sha256.to_hex())?.context("the blob's file is missing"))
        .collect::<Result<Vec<_>>>()?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let server = argus_server::spawn_built(listener, built)?;
    let (child, static_addr) = spawn_static(&paths).await?;
    let token = token(&config, &viewer)?;
    let client = reqwest::Client::new();
    for (n, file) in files.iter().enumerate() {
        let route = format!("http://{}/media/{}", server.addr(), file.id);
        check(&client, &staging, &route, Some(&token), file).await?;
        for variant in ["static", "sync"] {
            check(&client, &staging, &format!("http://{static_addr}/{variant}/{n}"), None, file).await?;
        }
    }
    let ours_process = Process::new(std::process::id());
    let static_process = Process::new(child.id().context("the baseline server exited")?);

    println!(
        "GET /media/{{id}} against actix-files NamedFile ({} workers each), wrk -t2 -d{seconds}s",
        workers()
    );
    println!("  load average before: {}", loadavg());
    for (n, (file, connections)) in files.iter().zip([small_connections, big_connections]).enumerate() {
        let mb = file.size as f64 / MB as f64;
        println!("{mb:.0} MB file, {connections} connections:");
        let targets = [
            (
                "GET /media/{id}",
                format!("http://{}/media/{}", server.addr(), file.id),
                Some(&token),
                &ours_process,
            ),
            (
                "NamedFile (default, reads on the blocking pool)",
                format!("http://{static_addr}/static/{n}"),
                None,
                &static_process,
            ),
            (
                "NamedFile (reads on the worker)",
                format!("http://{static_addr}/sync/{n}"),
                None,
                &static_process,
            ),
        ];
        let mut loads = Vec::new();
        for (what, url, token, process) in targets {
            // Warm-up (threads, pools, caches), within the memory figure.
            measured(process, url.clone(), token.cloned(), 2, connections).await?;
            let (load, growth) = measured(process, url, token.cloned(), seconds, connections).await?;
            println!(
                "  {what}: {:.1} requests/s, {:.0} MB/s read, p99 {:.1} ms, peak RSS above idle {}",
                load.rps,
                load.bytes_per_s / MB as f64,
                load.p99_ms,
                growth.map_or_else(|| "unknown".to_owned(), |g| format!("{g:.1} MB")),
            );
            loads.push(load);
        }
        if let [ours, default, sync] = loads.as_slice() {
            println!(
                "  route / NamedFile default: {:.2} (requests/s), {:.2} (bytes/s); route / NamedFile on the worker: {:.2}, {:.2}",
                ours.rps / default.rps,
                ours.bytes_per_s / default.bytes_per_s,
                ours.rps / sync.rps,
                ours.bytes_per_s / sync.bytes_per_s,
            );
        }
    }
    println!("  load average after: {}", loadavg());
    drop(child);
    server.stop().await?;
    Ok(())
}
