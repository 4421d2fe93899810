//! `ingest --account`: exactly one of `--homeserver` and `--account`, and an ingestion by
//! account (a user id; an e-mail address through `[matrix] identity_server`) from the real
//! Synapse, whose server name is its own listener.

use std::path::PathBuf;

use argus_testkit::{identity::IdentityServer, synapse::synapse};

use crate::cli::{command, stdout};

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
    let alice = server.register("cli_account").await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = alice.create_room(Some("Terminal"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    for text in ["un", "deux"] {
        alice.send_text(&room, text).await.unwrap_or_else(|e| panic!("{e:#}"));
    }
    let identity = IdentityServer::start([("ops@interieur.gouv.fr", server.server_name())])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let env = vec![("ARGUS_MATRIX_IDENTITY_SERVER".to_owned(), identity.url().to_owned())];

    for (account, stored) in [(alice.user_id.as_str(), "2"), ("ops@interieur.gouv.fr", "0")] {
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
    let out = ingest(dir.path().to_path_buf(), args, bob.access_token.clone(), env).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ACCOUNT_MISMATCH") && !err.contains(&bob.access_token), "{err}");
}
