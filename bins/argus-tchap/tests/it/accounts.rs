//! `ingest --account`: exactly one of `--homeserver` and `--account`, and an ingestion by
//! account (a user id; an e-mail address through `[matrix] identity_server`) from the real
//! Synapse, whose server name is its own listener; `ingest --since`; `rooms rehome --account`.

use std::path::PathBuf;

use argus_testkit::{
    homeserver::{MATRIX_TOKEN, MockHomeserver},
    identity::IdentityServer,
    synapse::synapse,
};

use crate::cli::{command, ingest_command, run, stdout};

/// `ingest` at RESTRICTED for `dgsi` with `args` and `token`, run off the test's runtime (the
/// identity server answers on it meanwhile).
async fn ingest(
    dir: PathBuf,
    args: Vec<String>,
    token: String,
    env: Vec<(String, String)>,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut ingest = command(&dir);
        ingest.args(["ingest", "--classification", "RESTRICTED", "--org", "dgsi"]).args(&args);
        ingest.env("MATRIX_ACCESS_TOKEN", token).envs(env).output().unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn ingest_takes_exactly_one_of_homeserver_and_account() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let room = ["--room", "!r:tchap.test"].map(String::from).to_vec();
    let both = [
        room.clone(),
        ["--homeserver", "https://matrix.agent.tchap.gouv.fr", "--account", "@a:agent.tchap.gouv.fr"]
            .map(String::from)
            .to_vec(),
    ]
    .concat();
    for args in [room, both] {
        let out = ingest(dir.path().to_path_buf(), args.clone(), "syt_x".into(), Vec::new()).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--homeserver") && err.contains("--account"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn ingest_by_account_reads_the_discovered_homeserver() {
    let Some(server) = synapse() else { return };
    // Registered under the localpart Tchap derives from the address.
    let (alice, address) =
        server.register_for_email("cli_ops", "interieur.gouv.fr").await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = alice.create_room(Some("Terminal"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    for text in ["un", "deux"] {
        alice.send_text(&room, text).await.unwrap_or_else(|e| panic!("{e:#}"));
    }
    let identity = IdentityServer::start([(address.as_str(), server.server_name())])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let env = vec![("ARGUS_MATRIX_IDENTITY_SERVER".to_owned(), identity.url().to_owned())];

    for (account, stored) in [(alice.user_id.as_str(), "2"), (address.as_str(), "0")] {
        let args = ["--room", &room, "--account", account].map(String::from).to_vec();
        let out = ingest(dir.path().to_path_buf(), args, alice.access_token.clone(), env.clone()).await;
        assert!(out.status.success(), "{account}: {out:?}");
        let summary = stdout(&out);
        assert!(
            summary.lines().any(
                |l| l.starts_with("messages stored (new)") && l.split_whitespace().last() == Some(stored)
            ),
            "{account}: {summary}"
        );
        assert!(summary.contains(server.base_url()), "{summary}");
    }

    // Another account's token: refused with its code, nothing stored.
    let bob = server.register("cli_other").await.unwrap_or_else(|e| panic!("{e:#}"));
    let args = ["--room", &room, "--account", &alice.user_id].map(String::from).to_vec();
    let out = ingest(dir.path().to_path_buf(), args, bob.access_token.clone(), env.clone()).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ACCOUNT_MISMATCH") && !err.contains(&bob.access_token), "{err}");
    // The address with bob's token: bob is not the account Tchap derives from it.
    let args = ["--room", &room, "--account", &address].map(String::from).to_vec();
    let out = ingest(dir.path().to_path_buf(), args, bob.access_token.clone(), env).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ACCOUNT_MISMATCH"), "{err}");
}

/// The value of `row` in an ingestion's summary table.
fn row<'a>(summary: &'a str, row: &str) -> Option<&'a str> {
    summary.lines().find(|l| l.starts_with(row)).and_then(|l| l.split_whitespace().last())
}

#[tokio::test]
async fn ingest_since_captures_only_what_was_sent_from_then() {
    let Some(server) = synapse() else { return };
    let alice = server.register("cli_since").await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = alice.create_room(Some("Depuis"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    for text in ["avant un", "avant deux"] {
        alice.send_text(&room, text).await.unwrap_or_else(|e| panic!("{e:#}"));
    }
    // Apart from the messages' timestamps (milliseconds), whatever the clock's resolution.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    alice.send_text(&room, "après").await.unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let args = |since: &str| {
        ["--room", &room, "--account", &alice.user_id, "--since", since].map(String::from).to_vec()
    };

    for bad in ["hier", "2026-13-01T00:00:00Z"] {
        let out = ingest(dir.path().to_path_buf(), args(bad), alice.access_token.clone(), Vec::new()).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
    let out = ingest(
        dir.path().to_path_buf(),
        args("2999-01-01T00:00:00Z"),
        alice.access_token.clone(),
        Vec::new(),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("INVALID_INPUT") && err.contains("since"), "{err}");

    let out = ingest(dir.path().to_path_buf(), args(&since), alice.access_token.clone(), Vec::new()).await;
    assert!(out.status.success(), "{out:?}");
    let summary = stdout(&out);
    assert_eq!(row(&summary, "messages stored (new)"), Some("1"), "{summary}");
    assert_eq!(row(&summary, "history complete"), Some("true"), "{summary}");
}

#[tokio::test]
async fn rooms_rehome_takes_an_account_instead_of_the_homeserver() {
    let Some(server) = synapse() else { return };
    let alice = server.register("cli_rehome").await.unwrap_or_else(|e| panic!("{e:#}"));
    let old = MockHomeserver::start_any_room().await;
    let room = "!rehomed:tchap.test";
    old.room(room, 2);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().to_path_buf();
    let stored = {
        let (path, old) = (path.clone(), old.uri());
        tokio::task::spawn_blocking(move || {
            ingest_command(&path, &old, room).env("MATRIX_ACCESS_TOKEN", MATRIX_TOKEN).output()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(stored.status.success(), "{stored:?}");
    let rehome = |target: &[&str]| {
        let mut args = vec!["rooms", "rehome", "--org", "dgsi", "--room", room];
        args.extend_from_slice(target);
        run(&path, &args)
    };
    // Exactly one of the two.
    let neither = rehome(&[]);
    assert_eq!(neither.status.code(), Some(2), "{neither:?}");
    let both = rehome(&["--homeserver", "https://matrix.agent.tchap.gouv.fr", "--account", &alice.user_id]);
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    // An account whose server cannot be discovered: nothing moved.
    let unknown = rehome(&["--account", "@personne:127.0.0.1:9"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && err.contains("DISCOVERY_FAILED"), "{unknown:?}");
    // The account's homeserver, by server discovery.
    let moved = rehome(&["--account", &alice.user_id]);
    assert!(moved.status.success(), "{moved:?}");
    let said = stdout(&moved);
    assert!(
        said.starts_with(&format!("{room} of dgsi moved from {} to {}", old.uri(), server.base_url())),
        "{said}"
    );
}
