//! Attachments: fetching, decrypting and holding files, measured in one run against a plain
//! streamed download of the same bytes from the same server.
//!
//! - download (the baseline): `reqwest` `bytes_stream` into a `tokio` file behind a 256 KiB
//!   `BufWriter`, nothing else;
//! - plain: `Media::fetch_room` as the product runs it, over a fresh SQLite store holding one
//!   message with the file (its reference `PENDING`), a `FileBlobStore` and a staging folder:
//!   claim, the homeserver's media support, the streamed download hashed into a staged file
//!   under the cap, the blob stored (written under a temporary name, fsynced, renamed), the
//!   outcome recorded. No scanner is configured (scanning is not part of the target);
//! - sealed: the same for an encrypted file (`EncryptedFile`, AES-256-CTR, `v2`): the
//!   ciphertext staged while hashed, its SHA-256 checked against the declared one, decrypted
//!   into a second staged file while hashed, the plaintext stored.
//!
//! The mock homeserver is a small HTTP/1.1 server of its own (not wiremock, which holds whole
//! bodies in memory) in a child process (this binary again), so that neither its memory nor its
//! allocations are counted: it answers `/_matrix/client/versions`, the media configuration and
//! the authenticated download route, whose body it reads from a file written before the runs
//! (a pseudo-random 64 KiB block repeated; for the sealed files, its ciphertext under the file's
//! key) and sends in 64 KiB chunks, from the page cache: the server does the same work for every
//! arm, plain or sealed. Every run of every arm is a child process of its own too: its peak resident memory
//! (`VmHWM`, reset when the process is set up, just before the measured part) less its resident
//! memory at that point is the arm's growth. Each run checks what it got: the downloaded file's
//! length, the blob held under the expected SHA-256 of the plaintext, with the expected size.
//!
//! `cargo bench -p argus-ingest --features bench --bench media`. `ARGUS_BENCH_MEDIA_MIB` sets
//! the file sizes in MiB (default `1024,100`), `ARGUS_BENCH_RUNS` the runs of each arm and size
//! (default 3; the median is reported), `ARGUS_BENCH_MEDIA_DIR` where files are written (default
//! the system's temporary folder). Prints what `docs/benchmarks.md` records.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

/// The allocator of the `argus-tchap` binary, so the pipeline is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::{BufRead as _, Write as _},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::Instant,
};

use argus_crypto::attachment::{AttachmentKey, encrypt_attachment};
use argus_domain::{
    AccessToken, Classification, EncryptedFile, HomeserverUrl, MediaRef, MxcUri, OrgId, RoomId, Scope,
    Sha256Digest, Viewer,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder},
};
use argus_ingest::{Media, MediaSettings};
use argus_matrix::{Connector, ConnectorConfig, MediaLimits, Session};
use argus_media::{BlobStore as _, FileBlobStore, Staging};
use argus_store::{IngestionRun, Store};
use base64::Engine as _;
use futures::StreamExt as _;
use sha2::Digest as _;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Set in the child that serves files: the folder that holds them.
const SERVE_ENV: &str = "ARGUS_BENCH_MEDIA_SERVE";
/// Set in the child that runs one arm once: `download`, `plain` or `sealed`.
const ARM_ENV: &str = "ARGUS_BENCH_MEDIA_ARM";
/// The arm's homeserver URL.
const URL_ENV: &str = "ARGUS_BENCH_MEDIA_URL";
/// The arm's file size in bytes.
const SIZE_ENV: &str = "ARGUS_BENCH_MEDIA_SIZE";
/// The arm's expected SHA-256 of the plaintext (hex).
const SHA_ENV: &str = "ARGUS_BENCH_MEDIA_SHA256";
/// The sealed arm's `EncryptedFile` (JSON).
const FILE_ENV: &str = "ARGUS_BENCH_MEDIA_FILE";

/// The server name of the benchmark's `mxc://` URIs.
const SERVER_NAME: &str = "bench.test";
const ROOM: &str = "!media:bench.test";
const TOKEN: &str = "syt_bench_token";
/// The chunk the server writes, and the period of the plaintext.
const CHUNK: usize = 64 * 1024;
/// The baseline's write buffer (the staging file's too).
const WRITE_BUFFER: usize = 256 * 1024;
const MIB: u64 = 1024 * 1024;

/// The plaintext's 64 KiB block: pseudo-random (xorshift), so nothing along the way can
/// shortcut it, repeated to the file's size.
fn block() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..CHUNK / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// The lengths of the chunks of a body of `size` bytes.
fn chunks(size: u64) -> impl Iterator<Item = usize> {
    let full = size / CHUNK as u64;
    let rest = (size % CHUNK as u64) as usize;
    (0..full).map(|_| CHUNK).chain((rest > 0).then_some(rest))
}

/// The name of a served file in the files folder: `plain-{size}` or `sealed-{size}`.
fn served_name(sealed: bool, size: u64) -> String {
    format!("{}-{size}", if sealed { "sealed" } else { "plain" })
}

/// Writes the plain file of `size` bytes and its ciphertext under `key` into `dir` (served from
/// there, so that every arm's server does the same work: read the file from the page cache
/// and send it); the SHA-256 of each.
fn write_files(dir: &std::path::Path, size: u64, key: &AttachmentKey) -> BenchResult<([u8; 32], [u8; 32])> {
    let plain = block();
    let mut work = vec![0_u8; CHUNK];
    let mut cipher = key.cipher();
    let (mut p, mut c) = (sha2::Sha256::new(), sha2::Sha256::new());
    let mut plain_out = std::io::BufWriter::new(std::fs::File::create(dir.join(served_name(false, size)))?);
    let mut sealed_out = std::io::BufWriter::new(std::fs::File::create(dir.join(served_name(true, size)))?);
    for n in chunks(size) {
        p.update(&plain[..n]);
        plain_out.write_all(&plain[..n])?;
        work[..n].copy_from_slice(&plain[..n]);
        cipher.apply(&mut work[..n]);
        c.update(&work[..n]);
        sealed_out.write_all(&work[..n])?;
    }
    plain_out.flush()?;
    sealed_out.flush()?;
    Ok((p.finalize().into(), c.finalize().into()))
}

fn env(name: &str) -> BenchResult<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

/// A field of `/proc/self/status`, in kB.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the process's peak resident set (`VmHWM`) to its current size.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The busy and total jiffies of every CPU so far (`/proc/stat`).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Waits (at most a minute) until the machine was less than 15% busy over half a second, so
/// that other work on it (a build) does not take a run's cores; how busy it was at the start.
fn wait_for_quiet() -> f64 {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (b0, t0) = cpu_jiffies();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (b1, t1) = cpu_jiffies();
        let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        if busy < 0.15 || Instant::now() > deadline {
            return busy;
        }
    }
}

fn work_dir() -> PathBuf {
    std::env::var_os("ARGUS_BENCH_MEDIA_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

// ---------------------------------------------------------------------------------------------
// The mock homeserver.

/// What a request asks for.
enum Route {
    Json(&'static str),
    File { name: String },
    NotFound,
}

fn route(path: &str) -> Route {
    let path = path.split('?').next().unwrap_or_default();
    match path {
        "/_matrix/client/versions" => Route::Json(r#"{"versions":["v1.11"]}"#),
        "/_matrix/client/v1/media/config" => Route::Json(r#"{"m.upload.size":4294967296}"#),
        _ => {
            let Some(id) = path
                .strip_prefix("/_matrix/client/v1/media/download/")
                .and_then(|rest| rest.strip_prefix(SERVER_NAME))
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                return Route::NotFound;
            };
            let (kind, size) = id.split_once('-').unwrap_or_default();
            match (kind, size.parse::<u64>()) {
                ("plain" | "sealed", Ok(_)) => Route::File { name: id.to_owned() },
                _ => Route::NotFound,
            }
        }
    }
}

/// Answers the requests of one connection (HTTP/1.1, kept alive) until the client closes it.
async fn serve_connection(mut socket: tokio::net::TcpStream, files: Arc<PathBuf>) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let mut work = vec![0_u8; CHUNK];
    loop {
        let end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if pending.len() > 64 * 1024 {
                return Ok(());
            }
            if socket.read_buf(&mut pending).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        match route(path) {
            Route::Json(body) => {
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await?;
            }
            Route::NotFound => {
                let body = r#"{"errcode":"M_NOT_FOUND","error":"not found"}"#;
                let answer = format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await?;
            }
            Route::File { name } => {
                // Read with plain reads from the page cache (the files were written just
                // before): a few microseconds per chunk, not worth a hop to a blocking thread.
                let Ok(mut file) = std::fs::File::open(files.join(&name)) else {
                    return Ok(());
                };
                let size = file.metadata()?.len();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {size}\r\n\r\n"
                );
                socket.write_all(answer.as_bytes()).await?;
                loop {
                    let n = std::io::Read::read(&mut file, &mut work)?;
                    if n == 0 {
                        break;
                    }
                    socket.write_all(&work[..n]).await?;
                }
            }
        }
        socket.flush().await?;
    }
}

/// The child that serves the files of the folder `files`: prints its address, stops when its
/// standard input closes.
fn serve(files: &str) -> BenchResult {
    let files = Arc::new(PathBuf::from(files));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let accept = async {
            loop {
                if let Ok((socket, _)) = listener.accept().await {
                    let files = Arc::clone(&files);
                    tokio::spawn(async move {
                        let _ = serve_connection(socket, files).await;
                    });
                }
            }
        };
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        });
        tokio::select! {
            () = accept => {}
            _ = stdin => {}
        }
        BenchResult::Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// One run of one arm, in a child process.

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    seconds: f64,
    /// Peak resident memory during the measured part less the resident memory before it, kB.
    growth_kb: u64,
}

/// The child that runs `arm` once: prints `seconds growth_kb`.
fn run_arm(arm: &str) -> BenchResult {
    let url = env(URL_ENV)?;
    let size: u64 = env(SIZE_ENV)?.parse()?;
    let sha256: Sha256Digest = env(SHA_ENV)?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir_in(work_dir())?;
    let run = match arm {
        "download" => rt.block_on(download(&url, size, dir.path().join("download.bin"), false))?,
        "durable" => rt.block_on(download(&url, size, dir.path().join("download.bin"), true))?,
        "primitives" => {
            let [sha, aes] = primitives(size);
            println!("{sha} {aes}");
            return Ok(());
        }
        "plain" => rt.block_on(pipeline(&url, size, None, &sha256, &dir))?,
        "sealed" => {
            let file: EncryptedFile = serde_json::from_str(&env(FILE_ENV)?)?;
            rt.block_on(pipeline(&url, size, Some(file), &sha256, &dir))?
        }
        "steps" => {
            let file = std::env::var(FILE_ENV).ok().map(|f| serde_json::from_str(&f)).transpose()?;
            let [stage, decrypt, put] = rt.block_on(steps(&url, size, file, &sha256, &dir))?;
            println!("{stage} {decrypt} {put}");
            return Ok(());
        }
        other => return Err(format!("no arm {other}").into()),
    };
    println!("{} {}", run.seconds, run.growth_kb);
    Ok(())
}

/// One core's time for SHA-256 and for AES-256-CTR over `size` bytes (1 MiB at a time, from
/// memory): what hashing and decrypting cost whatever the pipeline.
fn primitives(size: u64) -> [f64; 2] {
    let mut chunk = vec![0x5a_u8; MIB as usize];
    let chunks = size / MIB;
    let started = Instant::now();
    let mut hasher = sha2::Sha256::new();
    for _ in 0..chunks {
        hasher.update(&chunk);
    }
    std::hint::black_box(hasher.finalize());
    let sha = started.elapsed().as_secs_f64();
    let (_, file) = encrypt_attachment(b"key");
    let key = AttachmentKey::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
    let mut cipher = key.cipher();
    let started = Instant::now();
    for _ in 0..chunks {
        cipher.apply(&mut chunk);
    }
    std::hint::black_box(&chunk);
    [sha, started.elapsed().as_secs_f64()]
}

/// The baseline: the same bytes streamed to a file, nothing else (`durable`: then synced to
/// the disk, as a store of evidence must).
async fn download(url: &str, size: u64, path: PathBuf, durable: bool) -> BenchResult<Run> {
    let client = reqwest::Client::builder().build()?;
    let rss = status_kb("VmRSS:");
    reset_peak();
    let started = Instant::now();
    let response = client
        .get(format!("{url}/_matrix/client/v1/media/download/{SERVER_NAME}/plain-{size}"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .error_for_status()?;
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::create(&path).await?);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    if durable {
        out.get_ref().sync_all().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let growth_kb = status_kb("VmHWM:").saturating_sub(rss);
    let written = tokio::fs::metadata(&path).await?.len();
    if written != size {
        return Err(format!("downloaded {written} bytes of {size}").into());
    }
    Ok(Run { seconds, growth_kb })
}

/// The product's pipeline: `Media::fetch_room` over a store holding one message with the file.
async fn pipeline(
    url: &str,
    size: u64,
    sealed: Option<EncryptedFile>,
    sha256: &Sha256Digest,
    dir: &tempfile::TempDir,
) -> BenchResult<Run> {
    let homeserver: HomeserverUrl = url.parse()?;
    let org: OrgId = "bench-org".parse()?;
    let room: RoomId = ROOM.parse()?;
    let viewer = Viewer::new("bench".parse()?, org.clone(), Classification::Secret, [Scope::Ingest]);
    let store = Store::open(&format!("sqlite://{}", dir.path().join("bench.db").display()))?;
    let media_ref = MediaRef {
        uri: sealed.is_none().then(|| format!("mxc://{SERVER_NAME}/plain-{size}")),
        mimetype: Some("application/octet-stream".into()),
        size: Some(size),
        filename: Some("evidence.bin".into()),
        file: sealed,
    };
    let message = MessageRecordBuilder::new("$evidence")
        .msgtype("m.file")
        .body("evidence.bin")
        .media(media_ref)
        .build();
    let snapshot = RoomSnapshotBuilder::new(ROOM).homeserver(homeserver.as_str()).messages([message]).build();
    let run = IngestionRun {
        viewer,
        classification: Classification::Restricted,
        started_at: OffsetDateTime::now_utc(),
    };
    store.record_ingestion(&run, &snapshot)?;
    let blobs = Arc::new(FileBlobStore::open(dir.path().join("blobs"))?);
    let staging = Staging::new(dir.path().join("staging"))?;
    let settings = MediaSettings {
        max_file_bytes: 4 * 1024 * MIB,
        max_run_bytes: u64::MAX,
        replica: "bench".into(),
        ..MediaSettings::default()
    };
    let media = Media::new(blobs.clone(), None, staging, settings);
    // The media clients have no overall timeout; a body is held to its idle timeout and
    // minimum rate (30 s, 16 KiB/s), which a local transfer never comes near.
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?;
    let session = Session::with_token(homeserver, AccessToken::new(TOKEN));

    let rss = status_kb("VmRSS:");
    reset_peak();
    let started = Instant::now();
    let report = media.fetch_room(&store, &connector, &session, &org, &room).await;
    let seconds = started.elapsed().as_secs_f64();
    let growth_kb = status_kb("VmHWM:").saturating_sub(rss);
    if report.fetched != 1 {
        return Err(format!("the file was not fetched: {report:?}").into());
    }
    let held = blobs.size(sha256).await?;
    if held != Some(size) {
        return Err(format!("the blob {sha256} holds {held:?} bytes, not {size}").into());
    }
    Ok(Run { seconds, growth_kb })
}

/// The steps of `Media::fetch_one` one by one, each timed: the download staged while hashed,
/// the decryption (sealed files), the blob stored.
async fn steps(
    url: &str,
    size: u64,
    sealed: Option<EncryptedFile>,
    sha256: &Sha256Digest,
    dir: &tempfile::TempDir,
) -> BenchResult<[f64; 3]> {
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })?;
    let session = Session::with_token(url.parse()?, AccessToken::new(TOKEN));
    let blobs = FileBlobStore::open(dir.path().join("blobs"))?;
    let staging = Staging::new(dir.path().join("staging"))?;
    let kind = if sealed.is_some() { "sealed" } else { "plain" };
    let uri: MxcUri = format!("mxc://{SERVER_NAME}/{kind}-{size}").parse()?;
    let limits = MediaLimits { max_file_bytes: 4 * 1024 * MIB };

    let started = Instant::now();
    let caps = connector.media_capabilities(&session).await?;
    let download = connector.download_media(&session, &caps, &uri, sealed.as_ref(), &limits).await?;
    let staged = staging.stage(download.body, limits.max_file_bytes).await?;
    let stage = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let staged = match &sealed {
        Some(file) => staging.decrypt(&staged, file).await?,
        None => staged,
    };
    let decrypt = started.elapsed().as_secs_f64();
    let started = Instant::now();
    blobs.put(&staged).await?;
    let put = started.elapsed().as_secs_f64();
    if staged.sha256 != *sha256 || staged.size != size {
        return Err(format!("staged {} of {} bytes, not {sha256}", staged.sha256, staged.size).into());
    }
    Ok([stage, decrypt, put])
}

// ---------------------------------------------------------------------------------------------
// The parent: the server, the runs, the report.

/// Runs `arm` once in a child process: the words it printed.
fn spawn_arm(
    arm: &str,
    url: &str,
    size: u64,
    sha256: &[u8; 32],
    file: Option<&str>,
) -> BenchResult<Vec<String>> {
    // Each run starts with no earlier run's dirty pages left to write back, on a quiet machine.
    Command::new("sync").status()?;
    let busy = wait_for_quiet();
    if busy >= 0.15 {
        eprintln!("the machine stayed {:.0}% busy: this {arm} run shares it", busy * 100.0);
    }
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env(ARM_ENV, arm)
        .env(URL_ENV, url)
        .env(SIZE_ENV, size.to_string())
        .env(SHA_ENV, Sha256Digest(*sha256).to_hex())
        .stdin(Stdio::null());
    if let Some(file) = file {
        command.env(FILE_ENV, file);
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(
            format!("the {arm} run failed: {}", String::from_utf8_lossy(&output.stderr).trim()).into()
        );
    }
    Ok(String::from_utf8(output.stdout)?.split_whitespace().map(str::to_owned).collect())
}

/// Runs `arm` once in a child process: its time and memory.
fn spawn_run(arm: &str, url: &str, size: u64, sha256: &[u8; 32], file: Option<&str>) -> BenchResult<Run> {
    let fields = spawn_arm(arm, url, size, sha256, file)?;
    let seconds = fields.first().ok_or("no time")?.parse()?;
    let growth_kb = fields.get(1).ok_or("no memory")?.parse()?;
    Ok(Run { seconds, growth_kb })
}

fn median(runs: &[Run]) -> f64 {
    let mut times: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

fn max_growth_mib(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.growth_kb).max().unwrap_or(0) as f64 / 1024.0
}

fn main() -> BenchResult {
    if let Ok(file) = std::env::var(SERVE_ENV) {
        return serve(&file);
    }
    if let Ok(arm) = std::env::var(ARM_ENV) {
        return run_arm(&arm);
    }
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let sizes: Vec<u64> = std::env::var("ARGUS_BENCH_MEDIA_MIB")
        .unwrap_or_else(|_| "1024,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .map(|mib| mib * MIB)
        .collect();
    let runs: usize = std::env::var("ARGUS_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);

    // One key for every sealed file; every file, plain and sealed, written before the runs.
    let (_, base) = encrypt_attachment(b"");
    let key = AttachmentKey::from_file(&base)?;
    let files = tempfile::tempdir_in(work_dir())?;
    let mut digests = Vec::new();
    for &size in &sizes {
        digests.push(write_files(files.path(), size, &key)?);
    }
    let mut server = Command::new(std::env::current_exe()?)
        .env(SERVE_ENV, files.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut url = String::new();
    std::io::BufReader::new(server.stdout.take().ok_or("no stdout")?).read_line(&mut url)?;
    let url = url.trim().to_owned();

    let started = Instant::now();
    let mut lines = Vec::new();
    let mut steps_lines = Vec::new();
    for (&size, &(plain_sha, cipher_sha)) in sizes.iter().zip(&digests) {
        let mut file = base.clone();
        file.url = format!("mxc://{SERVER_NAME}/sealed-{size}");
        file.hashes
            .insert("sha256".into(), base64::engine::general_purpose::STANDARD_NO_PAD.encode(cipher_sha));
        let file = serde_json::to_string(&file)?;
        let (mut download, mut durable, mut plain, mut sealed) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..runs {
            download.push(spawn_run("download", &url, size, &plain_sha, None)?);
            durable.push(spawn_run("durable", &url, size, &plain_sha, None)?);
            plain.push(spawn_run("plain", &url, size, &plain_sha, None)?);
            sealed.push(spawn_run("sealed", &url, size, &plain_sha, Some(&file))?);
            eprintln!(
                "{} MiB, round {}: download {:.2} s, plain {:.2} s, sealed {:.2} s",
                size / MIB,
                round + 1,
                download[round].seconds,
                plain[round].seconds,
                sealed[round].seconds
            );
        }
        let plain_steps = spawn_arm("steps", &url, size, &plain_sha, None)?;
        let sealed_steps = spawn_arm("steps", &url, size, &plain_sha, Some(&file))?;
        eprintln!(
            "{} MiB, the steps one by one (stage, decrypt, put, s): plain {}, sealed {}",
            size / MIB,
            plain_steps.join(" "),
            sealed_steps.join(" ")
        );
        let costs = spawn_arm("primitives", &url, size, &plain_sha, None)?;
        eprintln!("{} MiB, one core: SHA-256 {} s, AES-256-CTR {} s", size / MIB, costs[0], costs[1]);
        steps_lines.push((size, plain_steps, sealed_steps, costs));
        lines.push((size, download, durable, plain, sealed));
    }
    drop(server.stdin.take());
    let _ = server.wait();
    let total = started.elapsed();

    let rate = |size: u64, seconds: f64| size as f64 / MIB as f64 / seconds;
    println!("attachments, median of {runs} runs (each a process of its own):");
    println!(
        "| size | arm | median s | MiB/s | ratio to download | ratio to plain | runs (s) | peak RSS growth (max of runs) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (size, download, durable, plain, sealed) in &lines {
        let base = median(download);
        let plain_median = median(plain);
        for (name, arm) in
            [("download", download), ("download + fsync", durable), ("plain", plain), ("sealed", sealed)]
        {
            let m = median(arm);
            let all: Vec<String> = arm.iter().map(|r| format!("{:.2}", r.seconds)).collect();
            println!(
                "| {} MiB | {name} | {m:.2} | {:.0} | {:.2}× | {:.2}× | {} | {:.1} MiB |",
                size / MIB,
                rate(*size, m),
                base / m,
                plain_median / m,
                all.join(" / "),
                max_growth_mib(arm),
            );
        }
    }
    println!("the steps of one run one by one (download staged while hashed | decrypted | stored), s:");
    for (size, plain, sealed, costs) in &steps_lines {
        println!("  {} MiB: plain {} | sealed {}", size / MIB, plain.join(" | "), sealed.join(" | "));
        println!(
            "  {} MiB, one core from memory: SHA-256 {} s, AES-256-CTR {} s",
            size / MIB,
            costs[0],
            costs[1]
        );
    }
    println!("total {:.0} s", total.as_secs_f64());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average after the runs: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}
