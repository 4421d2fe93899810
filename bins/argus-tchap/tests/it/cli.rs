//! The binary end to end: `token`, `serve` with no configuration file, a GraphQL query over
//! HTTP, `ingest` from a mock homeserver (its files too), `media rescan`, `audit head`/`verify`,
//! `rooms rehome`, `schema`, graceful stop.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use argus_testkit::homeserver::{MATRIX_TOKEN, MockHomeserver};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_argus-tchap");

/// The binary with a clean `ARGUS_*` environment, working in `dir`.
pub(crate) fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ARGUS_") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(dir)
        .env("ARGUS_BIND", "127.0.0.1:0")
        .env("ARGUS_MATRIX_ALLOW_PRIVATE_ADDRESSES", "127.0.0.1")
        .env("RUST_LOG", "warn");
    command
}

/// `ingest` of `room` from `homeserver` at RESTRICTED for the organisation `dgsi` (the token
/// comes from the environment the caller adds).
pub(crate) fn ingest_command(dir: &Path, homeserver: &str, room: &str) -> Command {
    let mut ingest = command(dir);
    ingest.args(["ingest", "--homeserver", homeserver, "--room", room, "--classification", "RESTRICTED"]);
    ingest.args(["--org", "dgsi"]);
    ingest
}

pub(crate) fn run(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn token_serve_query_ingest_audit_without_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();

    // `token` creates the development secret next to the default database.
    let token =
        run(path, &["token", "--sub", "alice", "--org", "dgsi", "--clearance", "DIFFUSION RESTREINTE"]);
    assert!(token.status.success(), "{token:?}");
    let token = stdout(&token);
    assert_eq!(token.split('.').count(), 3);
    assert!(path.join("argus-tchap.jwt-secret").exists());

    let mut child = command(path).arg("serve").stdout(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let serve = Serve(child);
    let mut lines = BufReader::new(out).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let banner: Vec<String> = lines.by_ref().take(7).map(Result::unwrap).collect();
    assert!(banner.iter().any(|l| l.contains("/graphiql")), "{banner:?}");
    assert!(banner.iter().any(|l| l.contains("argus-tchap token")), "{banner:?}");
    assert!(path.join("argus-tchap.db").exists());

    let client = reqwest::Client::new();
    let query = |q: &str| {
        client.post(format!("{base}/graphql")).bearer_auth(&token).json(&json!({ "query": q })).send()
    };
    let body: Value =
        query("{ tchapStats { totalRooms totalMessages } }").await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({ "data": { "tchapStats": { "totalRooms": 0, "totalMessages": 0 } } }));

    // `ingest` from the terminal, into the same database.
    let hs = MockHomeserver::start_any_room().await;
    hs.room("!cli:tchap.test", 4);
    let url = hs.uri();
    let dir_path = path.to_path_buf();
    let hs_url = url.clone();
    let ingest = tokio::task::spawn_blocking(move || {
        let args = [
            "ingest",
            "--homeserver",
            &hs_url,
            "--room",
            "!cli:tchap.test",
            "--classification",
            "RESTRICTED",
            "--org",
            "dgsi",
            "--actor",
            "ops",
        ];
        command(&dir_path).args(args).env("MATRIX_ACCESS_TOKEN", MATRIX_TOKEN).output().unwrap()
    })
    .await
    .unwrap();
    assert!(ingest.status.success(), "{ingest:?}");
    let summary = stdout(&ingest);
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("messages stored (new)") && l.split_whitespace().last() == Some("4")),
        "{summary}"
    );
    assert!(
        !summary.contains(MATRIX_TOKEN) && !String::from_utf8_lossy(&ingest.stderr).contains(MATRIX_TOKEN)
    );

    let body: Value =
        query("{ tchapRooms { totalCount edges { node { roomId messageCount classification } } } }")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        body["data"]["tchapRooms"]["edges"][0]["node"],
        json!({ "roomId": "!cli:tchap.test", "messageCount": 4, "classification": "RESTRICTED" })
    );

    // A failed ingestion exits non-zero with the stable code, and is audited.
    let dir_path = path.to_path_buf();
    let failed = tokio::task::spawn_blocking(move || {
        let args = [
            "ingest",
            "--homeserver",
            &url,
            "--room",
            "!forbidden:tchap.test",
            "--classification",
            "SECRET",
            "--org",
            "dgsi",
        ];
        command(&dir_path).args(args).env("MATRIX_ACCESS_TOKEN", MATRIX_TOKEN).output().unwrap()
    })
    .await
    .unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("ROOM_FORBIDDEN"), "{failed:?}");

    // The audit trail: two records, verified against its head; a wrong head is caught.
    let head = stdout(&run(path, &["audit", "head"]));
    assert!(head.starts_with("dgsi:2:"), "{head}");
    let verify = run(path, &["audit", "verify", "--expect-head", &head]);
    assert!(verify.status.success(), "{verify:?}");
    assert_eq!(stdout(&verify), "dgsi: ok, 2 records");
    let wrong = head.replacen("dgsi:2:", "dgsi:3:", 1);
    assert!(!run(path, &["audit", "verify", "--expect-head", &wrong]).status.success());

    // With an audit key (held outside the database), the two records appended before it was
    // set verify only when the operator gives that boundary; a short key is refused.
    let key = "YXVkaXQta2V5LWhlbGQtb3V0c2lkZS10aGUtZGF0YWJhc2U";
    let keyed =
        |args: &[&str], key: &str| command(path).args(args).env("ARGUS_AUDIT_KEY", key).output().unwrap();
    assert!(!keyed(&["audit", "verify"], key).status.success());
    let bounded = keyed(&["audit", "verify", "--unkeyed-until", "dgsi:2"], key);
    assert!(bounded.status.success(), "{bounded:?}");
    let short = keyed(&["audit", "verify"], "c2hvcnQ");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("32 bytes"), "{short:?}");

    let status = run(path, &["fusion", "status"]);
    assert!(status.status.success(), "{status:?}");

    // SIGTERM: graceful stop.
    let pid = serve.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut serve = serve;
    let mut stopped = None;
    for _ in 0..100 {
        if let Some(status) = serve.0.try_wait().unwrap() {
            stopped = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
}

/// The README's quick start, in its order: `serve` with no configuration in an empty working
/// directory, then (while it runs) `token` with the README's arguments, then the README's query
/// over HTTP; and the same with the commands the server's banner prints.
#[tokio::test]
async fn readme_flow_serve_then_token_then_query() {
    const README: &str = include_str!("../../../../README.md");
    let quick_start = README.split("## Quick start").nth(1).expect("a Quick start section in the README");
    let readme_mint = quick_start
        .lines()
        .find_map(|l| l.split("TOKEN=$(cargo run -q -p argus-tchap -- ").nth(1))
        .expect("the README mints a token");
    let readme_query =
        quick_start.lines().find_map(|l| l.trim().strip_prefix("-d '")).expect("the README's query");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    assert_eq!(std::fs::read_dir(path).unwrap().count(), 0);

    let mut child = command(path).arg("serve").stdout(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let _serve = Serve(child);
    let mut lines = BufReader::new(out).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let mut banner = vec![first];
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("curl");
        banner.push(line);
        if done {
            break;
        }
    }
    assert!(path.join("argus-tchap.db").exists(), "no embedded SQLite database");
    assert!(path.join("argus-tchap.jwt-secret").exists(), "no development secret");
    let banner_mint =
        banner.iter().find_map(|l| l.split("$(argus-tchap ").nth(1)).unwrap_or_else(|| panic!("{banner:?}"));
    let curl = banner.iter().find(|l| l.contains("curl")).unwrap();
    let banner_query = curl.split("-d '").nth(1).unwrap_or_else(|| panic!("{curl}"));

    let client = reqwest::Client::new();
    for (mint, query) in [(readme_mint, readme_query), (banner_mint, banner_query)] {
        // `TOKEN=$(… token …)`, then `curl … -d '{…}'`, as written.
        let args: Vec<&str> = mint.trim_end().trim_end_matches(')').split_whitespace().collect();
        assert_eq!(args.first(), Some(&"token"), "{mint}");
        let token = run(path, &args);
        assert!(token.status.success(), "{token:?}");
        let token = stdout(&token);
        assert_eq!(token.split('.').count(), 3, "{token}");
        let body = query.trim_end().trim_end_matches('\\').trim_end().trim_end_matches('\'');
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        let response =
            client.post(format!("{base}/graphql")).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer.get("errors").is_none(), "{body}: {answer}");
        let stats = answer["data"]["tchapStats"].as_object().unwrap_or_else(|| panic!("{body}: {answer}"));
        assert!(!stats.is_empty() && stats.values().all(|v| v == 0), "{body}: {answer}");
    }
}

/// `ingest` refuses another homeserver for an archived room (`HOMESERVER_MISMATCH`, audited);
/// `rooms rehome` moves the room explicitly, audited with both homeservers, after which the new
/// server is read and the old one refused.
#[tokio::test]
async fn rooms_rehome_moves_a_room_to_another_homeserver_audited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (old, new) = (MockHomeserver::start_any_room().await, MockHomeserver::start_any_room().await);
    let room = "!moved:tchap.test";
    old.room(room, 3);
    new.room(room, 5);
    let ingest = |homeserver: String| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            ingest_command(&path, &homeserver, room)
                .env("MATRIX_ACCESS_TOKEN", MATRIX_TOKEN)
                .output()
                .unwrap()
        })
    };
    assert!(ingest(old.uri()).await.unwrap().status.success());
    let refused = ingest(new.uri()).await.unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("HOMESERVER_MISMATCH") && !stderr.contains(MATRIX_TOKEN), "{refused:?}");

    let rehome = |room: &str, homeserver: &str| {
        run(&path, &["rooms", "rehome", "--org", "dgsi", "--room", room, "--homeserver", homeserver])
    };
    let moved = rehome(room, &new.uri());
    assert!(moved.status.success(), "{moved:?}");
    let said = stdout(&moved);
    assert!(
        said.starts_with(&format!(
            "{room} of dgsi moved from {} to {}; audit record dgsi:3",
            old.uri(),
            new.uri()
        )),
        "{said}"
    );
    // Not again to the same server, nor a room the organisation does not hold.
    let again = rehome(room, &format!("{}/", new.uri()));
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("INVALID_INPUT"),
        "{again:?}"
    );
    let absent = rehome("!absent:tchap.test", &new.uri());
    assert!(
        !absent.status.success() && String::from_utf8_lossy(&absent.stderr).contains("no room"),
        "{absent:?}"
    );

    // The new server is read (its two messages the old one lacked), the old one refused.
    let read = ingest(new.uri()).await.unwrap();
    assert!(read.status.success(), "{read:?}");
    assert!(
        stdout(&read).lines().any(|l| l.starts_with("messages in room") && l.ends_with(" 5")),
        "{read:?}"
    );
    assert!(!ingest(old.uri()).await.unwrap().status.success());
    let verify = run(&path, &["audit", "verify"]);
    assert_eq!(stdout(&verify), "dgsi: ok, 5 records");
}

#[test]
fn schema_prints_the_committed_sdl() {
    let dir = tempfile::tempdir().unwrap();
    let schema = run(dir.path(), &["schema"]);
    assert!(schema.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.graphql")).unwrap();
    assert_eq!(stdout(&schema), committed.trim_end());
}

#[test]
fn token_is_refused_when_a_real_key_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .env("ARGUS_JWT_JWKS_URL", "https://idp.example/jwks")
        .args(["token", "--org", "dgsi", "--clearance", "SECRET"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stdout(&output).is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("real signing key"), "{output:?}");
}

/// With a real key configured, `token --client-credentials` asks the identity provider instead
/// and prints its token only; the client secret never reaches the output.
#[tokio::test]
async fn token_from_the_identity_provider_with_client_credentials() {
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{body_string_contains, method, path},
    };
    let idp = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("scope=tchap%3Aaudit"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "eyJ.from-the-idp.sig", "token_type": "Bearer", "expires_in": 300
        })))
        .expect(1)
        .mount(&idp)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = command(dir.path());
    command
        .env("ARGUS_JWT_JWKS_URL", format!("{}/jwks", idp.uri()))
        .env("ARGUS_OAUTH_TOKEN_URL", format!("{}/token", idp.uri()))
        .env("ARGUS_OAUTH_CLIENT_ID", "argus-operators")
        .env("ARGUS_OAUTH_CLIENT_SECRET", "operators-client-secret")
        .args(["token", "--client-credentials", "--scope", "tchap:audit"]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "eyJ.from-the-idp.sig");
    let all = format!("{}{}", stdout(&output), String::from_utf8_lossy(&output.stderr));
    assert!(!all.contains("operators-client-secret"), "{all}");

    // Claims are the provider's business: naming an organisation with the grant is refused.
    let refused = run(dir.path(), &["token", "--client-credentials", "--org", "dgsi"]);
    assert!(!refused.status.success());
    assert!(stdout(&refused).is_empty());
}

#[test]
fn help_is_available_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["ingest", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["audit", "head", "--help"],
        vec!["token", "--help"],
        vec!["schema", "--help"],
        vec!["fusion", "relay", "--help"],
        vec!["fusion", "status", "--help"],
        vec!["rooms", "rehome", "--help"],
        vec!["keys", "public", "--help"],
        vec!["audit", "checkpoint", "--help"],
        vec!["audit", "consistency", "--help"],
    ] {
        let output = run(dir.path(), &args);
        assert!(output.status.success(), "{args:?}");
        assert!(stdout(&output).contains("Usage"), "{args:?}");
    }
    let migrate = run(dir.path(), &["migrate"]);
    assert!(migrate.status.success(), "{migrate:?}");
    let bad = run(dir.path(), &["token", "--org", "dgsi", "--clearance", "COSMIC"]);
    assert!(!bad.status.success());
}

/// `ingest` waits for the run's files before it exits (fetched and held; with scanning off,
/// recorded as not scanned), and `media rescan` scans every held file again with the clamd it
/// is given (refused without one).
#[tokio::test]
async fn ingest_fetches_the_files_and_media_rescan_scans_them_again() {
    use argus_testkit::homeserver::{BASE_TS, TOKEN, ev};
    use wiremock::{
        Mock, ResponseTemplate,
        matchers::{method, path},
    };
    let Some(clamd) = argus_testkit::clamd::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().to_path_buf();
    let hs = MockHomeserver::start().await;
    let room = argus_testkit::homeserver::ROOM;
    let file = ev::event(
        "m.room.message",
        "$rapport",
        ev::ALICE,
        BASE_TS,
        json!({ "msgtype": "m.file", "body": "rapport.pdf", "url": "mxc://tchap.test/rapport" }),
    );
    hs.state(room).mount().await;
    hs.messages(room).page(vec![file]).mount().await;
    let answers = [
        (
            "/_matrix/client/versions",
            ResponseTemplate::new(200).set_body_json(json!({ "versions": ["v1.11"] })),
        ),
        ("/_matrix/client/v1/media/config", ResponseTemplate::new(200).set_body_json(json!({}))),
        (
            "/_matrix/client/v1/media/download/tchap.test/rapport",
            ResponseTemplate::new(200).set_body_bytes(b"%PDF-1.4 rapport".to_vec()),
        ),
    ];
    for (at, answer) in answers {
        Mock::given(method("GET")).and(path(at)).respond_with(answer).mount(hs.server()).await;
    }
    let homeserver = hs.uri();
    let ingested = tokio::task::spawn_blocking(move || {
        ingest_command(&workdir, &homeserver, room)
            .env("MATRIX_ACCESS_TOKEN", TOKEN)
            .env("ARGUS_MEDIA_SCAN", "off")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(ingested.status.success(), "{ingested:?}");
    let table = stdout(&ingested);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_owned())
    };
    assert_eq!(row("files fetched").as_deref(), Some("1"), "{table}");
    assert_eq!(row("files scanned").as_deref(), Some("1"), "{table}");

    let refused = run(dir.path(), &["media", "rescan"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no scanner"), "{refused:?}");
    let rescanned = command(dir.path())
        .args(["media", "rescan"])
        .env("ARGUS_MEDIA_CLAMD", clamd.addr())
        .output()
        .unwrap();
    assert!(rescanned.status.success(), "{rescanned:?}");
    assert!(stdout(&rescanned).starts_with("1 files scanned again; 0 could not"), "{rescanned:?}");
}
