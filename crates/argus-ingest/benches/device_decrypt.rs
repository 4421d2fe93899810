//! The connector's own end-to-end-encryption device against the key backup, on the same live
//! messages of a real Synapse, in one run. A sender (the test kit's `E2eeClient`, an
//! `OlmMachine` as Element drives it, its identity cross-signed) sends `ARGUS_BENCH_MESSAGES`
//! (default 1,000) encrypted messages into a room the service account has joined, sharing each
//! megolm session (100 messages each) with every device. Then:
//!
//! 1. **Keys from `/sync`.** The service account's device (`argus_crypto::device::Device`
//!    over `argus_matrix::DeviceTransport`, its state in an in-memory `DeviceStateStore` of
//!    this bench that counts writes) takes the room keys as the account loop does:
//!    `Connector::sync` (the archive's filter, from the position taken before the messages
//!    were sent) then `Device::receive_sync`, until an answer brings no to-device event.
//! 2. **Device decryption.** The room's events read with `/messages` (as the service account),
//!    oldest first, decrypted in one page through `DeviceDecryptor::decrypt_all`: a first pass,
//!    then the median of `ARGUS_BENCH_RUNS` (default 5). The sender's key query (`track`, which
//!    the decryptor makes at its first page) is timed apart.
//! 3. **Backup decryption.** The device saves its room keys into a key backup of the account
//!    (`Device::back_up`); the backup's sessions are loaded with the recovery key
//!    (`Connector::load_room_keys`, timed apart) and decrypt the same events
//!    (`SessionKeys`, fresh each run), first pass and median as above.
//! 4. For context: the sender's own `OlmMachine` (in-memory store) decrypting the same events,
//!    and a whole room read (`Connector::fetch_room_decrypting`) with each decryptor.
//!
//! `cargo bench -p argus-ingest --bench device_decrypt`. Without Python/pip the bench is
//! skipped loudly, unless `ARGUS_REQUIRE_SYNAPSE=1`. Prints the numbers that go into
//! `docs/benchmarks.md`.

#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use argus_crypto::{
    Decryptor, RecoveryKey,
    device::{Device, DeviceDecryptor, DeviceItem, DeviceStateStore},
    megolm::{Decrypted, EncryptedContent, EncryptedEvent},
};
use argus_domain::{AccessToken, HomeserverUrl, RoomId};
use argus_matrix::{Connector, ConnectorConfig, DeviceTransport, FetchOptions, Session, SyncRequest};
use argus_testkit::{
    e2ee::KeyBackup,
    e2ee_client::{Decryption, E2eeClient, Share},
    synapse::synapse,
};
use serde_json::Value;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The device's state in memory, counting the writes the device makes.
#[derive(Debug, Default)]
struct MemoryState {
    items: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    writes: AtomicU64,
    items_written: AtomicU64,
}

impl MemoryState {
    fn counts(&self) -> (u64, u64) {
        (self.writes.load(Ordering::Relaxed), self.items_written.load(Ordering::Relaxed))
    }
}

fn poisoned() -> argus_crypto::Error {
    argus_crypto::Error::DeviceState("the bench's state lock is poisoned".into())
}

#[async_trait::async_trait]
impl DeviceStateStore for MemoryState {
    async fn load(&self) -> argus_crypto::Result<Vec<DeviceItem>> {
        let items = self.items.lock().map_err(|_| poisoned())?;
        Ok(items
            .iter()
            .map(|((kind, key), value)| DeviceItem {
                kind: kind.clone(),
                key: key.clone(),
                value: zeroize::Zeroizing::new(value.clone()),
            })
            .collect())
    }

    async fn write(&self, puts: Vec<DeviceItem>, deletes: Vec<(String, String)>) -> argus_crypto::Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.items_written.fetch_add(puts.len() as u64, Ordering::Relaxed);
        let mut items = self.items.lock().map_err(|_| poisoned())?;
        for item in puts {
            items.insert((item.kind, item.key), item.value.to_vec());
        }
        for key in deletes {
            items.remove(&key);
        }
        Ok(())
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Checks that every outcome decrypted to the message sent at its place; the trust codes seen.
fn check(path: &str, results: &[Decrypted], bodies: &[String]) -> BenchResult<BTreeMap<&'static str, usize>> {
    if results.len() != bodies.len() {
        return Err(format!("{path}: {} outcomes for {} events", results.len(), bodies.len()).into());
    }
    let mut trust = BTreeMap::new();
    for (result, body) in results.iter().zip(bodies) {
        match result {
            Ok(event) if event.content["body"].as_str() == Some(body) => {
                *trust.entry(event.sender_trust.code()).or_insert(0) += 1;
            }
            Ok(event) => return Err(format!("{path}: decrypted another body: {}", event.content).into()),
            Err(reason) => return Err(format!("{path}: not decrypted: {}", reason.code()).into()),
        }
    }
    Ok(trust)
}

/// One decryption path's times: its first pass and the median of the runs after it.
struct Timed {
    first: Duration,
    median: Duration,
}

impl Timed {
    fn row(&self, name: &str, n: usize) {
        let per = self.median.as_secs_f64() / n as f64;
        println!(
            "  {name:<34} {:>9.1} ms {:>9.1} ms {:>9.1} µs {:>10.0}",
            ms(self.first),
            ms(self.median),
            per * 1e6,
            1.0 / per
        );
    }
}

fn main() -> BenchResult {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let messages = env_or("ARGUS_BENCH_MESSAGES", 1_000).max(1);
    let runs = env_or("ARGUS_BENCH_RUNS", 5).max(1);
    let Some(server) = synapse() else {
        println!("device_decrypt: skipped (no Synapse; set ARGUS_REQUIRE_SYNAPSE=1 to make this a failure)");
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        // The service account (its registration device is the connector's device) and the sender.
        let service = server.register("devsvc").await?;
        let alice = server.register("devsender").await?;
        let room = alice.create_room(Some("Salle chiffrée"), None, false).await?;
        alice.invite(&room, &service.user_id).await?;
        service.join(&room).await?;
        let room_id: RoomId = room.parse()?;

        let connector = Connector::new(ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            ..ConnectorConfig::default()
        })?;
        let homeserver: HomeserverUrl = server.base_url().parse()?;
        let session = Session::with_token(homeserver, AccessToken::new(service.access_token.clone()));
        let state = Arc::new(MemoryState::default());
        let transport = Arc::new(DeviceTransport::new(&connector, session.clone()));
        let device =
            Arc::new(Device::open(&service.user_id, &service.device_id, state.clone(), transport).await?);
        device.flush().await?;
        let filter = connector.create_sync_filter(&session, &service.user_id).await?;
        let sync = |since: Option<String>| SyncRequest {
            since,
            filter_id: Some(filter.clone()),
            timeout: Duration::ZERO,
        };
        let first = connector.sync(&session, &sync(None)).await?;
        device.receive_sync(&first.device).await?;
        let mut since = first.next_batch;

        // The sender: a device of its own, cross-signed, sharing with every device.
        let mut sender = E2eeClient::new(server, &alice).await?;
        sender.sync_once().await?;
        sender.bootstrap_cross_signing().await?;
        sender.enable_encryption(&room).await?;
        let bodies: Vec<String> =
            (0..messages).map(|i| format!("Message chiffré {i} : point de situation, rien à signaler")).collect();
        let t = Instant::now();
        for body in &bodies {
            sender.send_text(&room, body, Share::AllDevices).await?;
        }
        let sending = t.elapsed();

        // 1. The room keys taken from /sync, as the account loop takes them.
        let (mut syncs, mut to_device, mut room_keys) = (0usize, 0usize, 0usize);
        let (mut sync_time, mut device_time) = (Duration::ZERO, Duration::ZERO);
        let writes_before = state.counts();
        loop {
            let t = Instant::now();
            let update = connector.sync(&session, &sync(Some(since.clone()))).await?;
            sync_time += t.elapsed();
            let t = Instant::now();
            let received = device.receive_sync(&update.device).await?;
            device_time += t.elapsed();
            syncs += 1;
            since = update.next_batch;
            to_device += received.to_device;
            room_keys += received.room_keys.len();
            if received.to_device == 0 || syncs >= 50 {
                break;
            }
        }
        let writes_sync = state.counts();

        // The room's events as the room reader gets them (/messages), oldest first.
        let t = Instant::now();
        let mut events = service.all_messages(&room).await?;
        let reading = t.elapsed();
        events.reverse();
        let events: Vec<Value> = events.into_iter().filter(|e| e["type"] == "m.room.encrypted").collect();
        let texts: Vec<String> = events.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
        let encrypted: Vec<EncryptedEvent<'_>> = texts
            .iter()
            .zip(&events)
            .map(|(json, event)| {
                Ok(EncryptedEvent { json, content: serde_json::from_value::<EncryptedContent>(event["content"].clone())? })
            })
            .collect::<BenchResult<_>>()?;
        let sessions: std::collections::BTreeSet<&str> =
            encrypted.iter().filter_map(|e| e.content.session_id.as_deref()).collect();
        if encrypted.len() != messages {
            return Err(format!("{} encrypted events read, {messages} sent", encrypted.len()).into());
        }

        // 2. The device: the sender's keys queried, then the page decrypted.
        let t = Instant::now();
        device.track(std::slice::from_ref(&alice.user_id)).await?;
        let track = t.elapsed();
        let writes_track = state.counts();
        let mut device_times = Vec::new();
        let mut device_trust = BTreeMap::new();
        let mut writes_first = (0, 0);
        for r in 0..=runs {
            let before = state.counts();
            let mut decryptor = DeviceDecryptor::new(Arc::clone(&device), None);
            let t = Instant::now();
            let results = decryptor.decrypt_all(&room, &encrypted).await;
            device_times.push(t.elapsed());
            device_trust = check("device", &results, &bodies)?;
            let after = state.counts();
            if r == 0 {
                writes_first = (after.0 - before.0, after.1 - before.1);
            }
        }
        let writes_later = {
            let now = state.counts();
            let at_first = (writes_track.0 + writes_first.0, writes_track.1 + writes_first.1);
            (now.0 - at_first.0, now.1 - at_first.1)
        };
        let device_timed = Timed { first: device_times[0], median: median(device_times[1..].to_vec()) };

        // The same device opened again from its kept state, as another replica opens it.
        let t = Instant::now();
        let transport = Arc::new(DeviceTransport::new(&connector, session.clone()));
        let reopened =
            Arc::new(Device::open(&service.user_id, &service.device_id, state.clone(), transport).await?);
        let reopening = t.elapsed();
        let t = Instant::now();
        let results = DeviceDecryptor::new(reopened, None).decrypt_all(&room, &encrypted).await;
        let reopened_pass = t.elapsed();
        check("reopened device", &results, &bodies)?;

        // 3. The key backup: the device's keys saved into it, loaded back with the recovery key.
        let backup = KeyBackup::create(&service, [0x42; 32], [0x43; 32]).await?;
        device.enable_backup(&backup.version, &backup.public_key().to_base64()).await?;
        let backed_up = device.back_up().await?;
        let recovery: RecoveryKey = backup.legacy_recovery_key().parse()?;
        let mut load_times = Vec::new();
        let mut backup_times = Vec::new();
        let mut backup_trust = BTreeMap::new();
        let mut backup_sessions = 0;
        for _ in 0..=runs {
            let t = Instant::now();
            let mut keys = connector.load_room_keys(&session, &room_id, &recovery).await?.keys;
            load_times.push(t.elapsed());
            backup_sessions = keys.len();
            let t = Instant::now();
            let results = Decryptor::decrypt_all(&mut keys, &room, &encrypted).await;
            backup_times.push(t.elapsed());
            backup_trust = check("backup", &results, &bodies)?;
        }
        let backup_timed = Timed { first: backup_times[0], median: median(backup_times[1..].to_vec()) };

        // 4. For context: the sender's own machine, and whole room reads.
        let mut machine_times = Vec::new();
        for _ in 0..=runs {
            let t = Instant::now();
            for (event, body) in events.iter().zip(&bodies) {
                match sender.decrypt(&room, event).await? {
                    Decryption::Decrypted { event, .. } if event["content"]["body"].as_str() == Some(body) => {}
                    other => return Err(format!("the sender's machine: {other:?}").into()),
                }
            }
            machine_times.push(t.elapsed());
        }
        let machine_timed = Timed { first: machine_times[0], median: median(machine_times[1..].to_vec()) };
        let options = FetchOptions { max_messages: 10_000, ..FetchOptions::default() };
        let t = Instant::now();
        let read = connector.fetch_room(&session, &room_id, &options).await?;
        let read_plain = (t.elapsed(), read.report.encrypted);
        let t = Instant::now();
        let decryptor: Box<dyn Decryptor> = Box::new(DeviceDecryptor::new(Arc::clone(&device), None));
        let read = connector.fetch_room_decrypting(&session, &room_id, &options, Some(decryptor), &mut |_| {}).await?;
        let read_device = (t.elapsed(), read.report.decrypted);
        let t = Instant::now();
        let keys = connector.load_room_keys(&session, &room_id, &recovery).await?.keys;
        let read = connector.fetch_room_decrypting(&session, &room_id, &options, Some(Box::new(keys)), &mut |_| {}).await?;
        let read_backup = (t.elapsed(), read.report.decrypted);

        let n = messages;
        println!(
            "device_decrypt: {n} encrypted messages on Synapse ({} megolm sessions), sent in {:.1} s; read with /messages in {:.0} ms",
            sessions.len(),
            sending.as_secs_f64(),
            ms(reading)
        );
        println!(
            "keys from /sync: {syncs} syncs, {to_device} to-device events, {room_keys} room keys in {:.1} ms \
             (sync {:.1} ms, receive_sync {:.1} ms); {} store writes ({} items)",
            ms(sync_time + device_time),
            ms(sync_time),
            ms(device_time),
            writes_sync.0 - writes_before.0,
            writes_sync.1 - writes_before.1
        );
        println!(
            "the sender's key query (track): {:.1} ms, {} store writes ({} items)",
            ms(track),
            writes_track.0 - writes_sync.0,
            writes_track.1 - writes_sync.1
        );
        println!("decryption of the {n} events in one page; first pass, then median of {runs} runs:");
        println!("  {:<34} {:>12} {:>12} {:>12} {:>10}", "path", "first pass", "median", "per message", "msg/s");
        device_timed.row("device (DeviceDecryptor)", n);
        backup_timed.row("backup (SessionKeys)", n);
        machine_timed.row("sender's OlmMachine (in memory)", n);
        println!(
            "  ratio device / backup per message: {:.1}×",
            device_timed.median.as_secs_f64() / backup_timed.median.as_secs_f64()
        );
        println!(
            "  device store writes: first pass {} ({} items), the {runs} runs after {} ({} items)",
            writes_first.0, writes_first.1, writes_later.0, writes_later.1
        );
        println!("  sender trust: device {device_trust:?}, backup {backup_trust:?}");
        println!(
            "  the device reopened from its kept state ({} items): opened in {:.1} ms, first pass {:.1} ms",
            state.items.lock().map_err(|_| poisoned())?.len(),
            ms(reopening),
            ms(reopened_pass)
        );
        println!(
            "backup: {backed_up} room keys saved by the device, {backup_sessions} loaded; load_room_keys median {:.1} ms",
            ms(median(load_times))
        );
        println!(
            "whole room read (fetch_room_decrypting, max 10,000): no keys {:.0} ms ({} left encrypted), \
             device {:.0} ms ({} decrypted), backup (load included) {:.0} ms ({} decrypted)",
            ms(read_plain.0),
            read_plain.1,
            ms(read_device.0),
            read_device.1,
            ms(read_backup.0),
            read_backup.1
        );
        Ok(())
    })
}
