//! The access journal across a crash, on every backend: a child process journals reads from
//! four threads and answers each one (prints its index) only once `record_access` returned; it
//! is killed with SIGKILL mid-way. Every entry it answered is in the log afterwards, with the
//! exact bytes it journaled: an entry is durable before the read it records is answered, so a
//! crash between the commit and the response loses none.

use std::io::{BufRead as _, BufReader, Write as _};

use argus_domain::{
    Classification,
    oversight::{AccessAction, AccessEntry, ENCODING_VERSION, LogEntry},
};
use argus_store::Store;

use crate::support::{TestDb, backend_suite};

backend_suite!(an_answered_read_is_journaled_whatever_happens_after);

/// Tells the child which database to journal into.
const CHILD_ENV: &str = "ARGUS_STORE_JOURNAL_CHILD_URL";

fn entry(thread: usize, n: usize) -> AccessEntry {
    AccessEntry {
        action: AccessAction::ReadMessages,
        actor: format!("analyst-{thread}@dgsi"),
        at: 1_700_000_000_000 + n as i64,
        classification: Classification::Restricted,
        disclosure: None,
        item_count: n as u64,
        org: "dgsi".to_owned(),
        query: None,
        room_ids: vec![format!("!room-{thread}:agent.tchap.gouv.fr")],
        r#type: AccessEntry::TYPE.to_owned(),
        v: ENCODING_VERSION,
    }
}

/// Run in a child process by the crash test (`--ignored`), never on its own: journals reads
/// from four threads, printing `thread n index` for each one answered, until it is killed.
#[test]
#[ignore = "the crash test runs it in a child process, and kills it"]
fn journaling_child() {
    let url = std::env::var(CHILD_ENV).expect("run by the crash test, which names the database");
    let store = Store::open(&url).expect("store");
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for thread in 0..4 {
            let (store, out) = (&store, &out);
            s.spawn(move || {
                for n in 0.. {
                    let index = store.record_access(&entry(thread, n)).expect("journaled");
                    let mut out = out.lock().expect("stdout");
                    writeln!(out, "{thread} {n} {index}").expect("answered");
                    out.flush().expect("answered");
                }
            });
        }
    });
}

fn an_answered_read_is_journaled_whatever_happens_after(db: &TestDb) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "journal_crash::journaling_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("the child's answers");
    let mut answered = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("an answer");
        let fields: Vec<u64> = line.split(' ').filter_map(|f| f.parse().ok()).collect();
        if let [thread, n, index] = fields[..] {
            answered.push((thread as usize, n as usize, index));
        }
        if answered.len() == 200 {
            // Killed right after an answer, with other threads' entries in flight.
            child.kill().expect("SIGKILL");
            break;
        }
    }
    child.wait().expect("reaped");
    assert_eq!(answered.len(), 200, "the child answered too few reads before it died");

    answered.sort_by_key(|a| a.2);
    let store = Store::open(&db.url).expect("reopened");
    let org = "dgsi".parse().expect("org");
    let indexes: Vec<u64> = answered.iter().map(|a| a.2).collect();
    let found = store.log_entries(&org, &indexes).expect("the log");
    assert_eq!(found.len(), answered.len(), "answered reads missing from the journal");
    for ((thread, n, index), record) in answered.iter().zip(&found) {
        assert_eq!(record.index, *index);
        let expected = LogEntry::Access(entry(*thread, *n));
        assert_eq!(record.bytes, expected.canonical(), "entry {index}");
    }
    // The log is whole: every index below its size is there, and its tree proves the last one.
    let head = store.log_head(&org).expect("head");
    assert!(head.size >= answered.len() as u64);
    let last = head.size - 1;
    let proof = store.log_inclusion(&org, last, head.size).expect("proof");
    let bytes = &store.log_entries(&org, &[last]).expect("last")[0].bytes;
    argus_crypto::tlog::verify_inclusion(
        last,
        head.size,
        argus_crypto::tlog::leaf_hash(bytes),
        &proof,
        head.root,
    )
    .expect("the tree holds what was journaled before the crash");
}
