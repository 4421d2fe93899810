//! The transcript renders in headless Chromium with every message's text, and fetches nothing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::support::{self, TRICKY};

/// Renders `page` headless; returns the DOM and the URLs the page itself requested (from the
/// browser's network log: requests with a page initiator, not the browser's own).
fn render(chromium: &Path, page: &Path, work: &Path) -> (String, Vec<String>) {
    let net_log = work.join("net-log.json");
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        // The browser's own background traffic off, and no name resolves: whatever the page
        // asked for would show in the network log, and reach nothing.
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pings",
        ])
        .arg("--host-resolver-rules=MAP * ~NOTFOUND")
        .arg(format!("--user-data-dir={}", work.join("profile").display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let log: Value = serde_json::from_str(&fs::read_to_string(&net_log).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().unwrap();
    let requested = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .filter(|e| e["params"]["initiator"].as_str().is_some_and(|i| i != "not an origin"))
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_owned))
        .collect();
    (String::from_utf8(out.stdout).unwrap(), requested)
}

fn work_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_transcript_renders_offline_with_every_message() {
    let built = support::build().await;
    let page = built.bag.join("data/transcript.html");
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.contains("default-src 'none'; style-src 'unsafe-inline'"), "no Content-Security-Policy");
    for forbidden in ["http://", "https://", "src=", "<script", "@import", "url("] {
        assert!(!html.contains(forbidden), "the page holds {forbidden:?}");
    }
    assert!(html.contains("@media print"), "no print stylesheet");
    let Some(chromium) = argus_testkit::verifiers::chromium() else { return };

    // The network log does show a page's requests: a page that loads an image is caught.
    let control = built.dir.path().join("control.html");
    fs::write(&control, "<!DOCTYPE html><p>x</p><img src=\"http://disclosure-test.invalid/x.png\">").unwrap();
    let (_, requested) = render(&chromium, &control, &work_dir(built.dir.path(), "control"));
    assert_eq!(requested, ["http://disclosure-test.invalid/x.png"]);

    let (dom, requested) = render(&chromium, &page, &work_dir(built.dir.path(), "transcript"));
    assert!(requested.is_empty(), "the transcript made requests: {requested:?}");
    let text = dom.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
    let lines: Vec<Value> = fs::read_to_string(built.bag.join("data/messages.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dom.matches("<article class=\"msg\"").count(), lines.len());
    for line in &lines {
        for key in ["eventId", "sender", "sentAt"] {
            let value = line[key].as_str().unwrap();
            assert!(text.contains(value), "the rendered page lacks {key} {value}");
        }
        if let Some(body) = line["body"].as_str() {
            assert!(text.contains(body), "the rendered page lacks the body {body:?}");
        }
    }
    assert!(text.contains(TRICKY), "the body with markup was not shown as text");
    assert!(!dom.contains("<script>alert"), "a body became markup");
    for label in ["Supprimé par / Redacted by", "Modification / Edit", "hors sujet / off topic", "note.pdf"]
    {
        assert!(text.contains(label), "the rendered page lacks {label:?}");
    }
}
