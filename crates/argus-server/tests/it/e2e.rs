//! End to end against the real Synapse of the connector tests, on SQLite and on PostgreSQL: two
//! organisations and three clearance levels ingest over HTTP and read back through every query;
//! nobody sees across organisations or above clearance; stats and counts match; the Matrix
//! token is in no response and no database column; the audit trail verifies.

use anyhow::{Context as _, Result, ensure};
use argus_domain::{
    Classification::{self, Restricted, Secret, TopSecret, Unclassified},
    Scope,
};
use argus_store::Store;
use serde_json::{Value, json};

use crate::harness::{TestServer, config};

const ALL: [Scope; 3] = [Scope::Read, Scope::Ingest, Scope::Audit];

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) { messagesFetched messagesStored room { roomId classification messageCount } ingestion { outcome } }
}";

const ROOMS: &str =
    r"{ tchapRooms { totalCount edges { node { roomId name classification messageCount } } } }";

fn room_names(body: &Value) -> Vec<String> {
    let mut names: Vec<String> = body["data"]["tchapRooms"]["edges"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["node"]["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    names.sort();
    names
}

async fn ingest(
    server: &TestServer,
    jwt: &str,
    hs: &str,
    token: &str,
    room: &str,
    level: Classification,
) -> Result<Value> {
    let input = json!({ "homeserverUrl": hs, "accessToken": token, "roomId": room, "classification": level.as_str() });
    let (status, body) = server.graphql(jwt, INGEST, json!({ "input": input })).await;
    ensure!(status == 200 && body.get("errors").is_none(), "ingest {room}: {body}");
    ensure!(!body.to_string().contains(token), "the Matrix token is in a response");
    Ok(body["data"]["ingestTchapRoom"].clone())
}

/// Runs the scenario on `database_url`; returns every Matrix token used, for the caller's
/// database scan.
async fn scenario(server: &TestServer, database_url: &str) -> Result<Vec<String>> {
    let Some(synapse) = argus_testkit::synapse::synapse() else { return Ok(Vec::new()) };
    let hs = synapse.base_url().to_owned();
    let alice = synapse.register("e2e_alice").await?;
    let bob = synapse.register("e2e_bob").await?;
    let crisis = alice.create_room(Some("Crise"), Some("Cellule de crise"), false).await?;
    let logistics = alice.create_room(Some("Logistique"), None, false).await?;
    let public = alice.create_room(Some("Public"), None, false).await?;
    for i in 0..5 {
        alice.send_text(&crisis, &format!("crise {i}")).await?;
    }
    for i in 0..3 {
        alice.send_text(&logistics, &format!("logistique {i}")).await?;
    }
    alice.send_text(&public, "bonjour").await?;
    alice.invite(&public, &bob.user_id).await?;
    bob.join(&public).await?;
    bob.send_text(&public, "salut").await?;

    // dgsi ingests three rooms at three levels; anssi ingests the public room with bob's token.
    let dgsi = server.token("dgsi", TopSecret, &ALL);
    let anssi = server.token("anssi", Secret, &ALL);
    let p = ingest(server, &dgsi, &hs, &alice.access_token, &crisis, Secret).await?;
    ensure!(p["messagesStored"] == 5, "{p}");
    ingest(server, &dgsi, &hs, &alice.access_token, &logistics, Restricted).await?;
    ingest(server, &dgsi, &hs, &alice.access_token, &public, Unclassified).await?;
    let again = ingest(server, &dgsi, &hs, &alice.access_token, &crisis, Restricted).await?;
    ensure!(again["messagesStored"] == 0 && again["room"]["classification"] == "SECRET", "{again}");
    ingest(server, &anssi, &hs, &bob.access_token, &public, Unclassified).await?;
    // bob is not in the crisis room: refused by the homeserver, audited in anssi's chain.
    let input = json!({ "homeserverUrl": hs, "accessToken": bob.access_token, "roomId": crisis, "classification": "SECRET" });
    let (_, body) = server.graphql(&anssi, INGEST, json!({ "input": input })).await;
    ensure!(body["errors"][0]["extensions"]["code"] == "ROOM_FORBIDDEN", "{body}");
    ensure!(!body.to_string().contains(&bob.access_token), "token in an error");

    // Reads at three clearances, and across organisations.
    for (clearance, expected) in [
        (Unclassified, vec!["Public"]),
        (Restricted, vec!["Logistique", "Public"]),
        (Secret, vec!["Crise", "Logistique", "Public"]),
    ] {
        let jwt = server.token("dgsi", clearance, &[Scope::Read]);
        let (_, body) = server.graphql(&jwt, ROOMS, json!({})).await;
        ensure!(room_names(&body) == expected, "dgsi {clearance}: {body}");
        ensure!(body["data"]["tchapRooms"]["totalCount"] == expected.len(), "{body}");
        let (_, room) = server
            .graphql(&jwt, "query($r: String!) { tchapRoom(roomId: $r) { name } }", json!({ "r": crisis }))
            .await;
        ensure!(
            room["data"]["tchapRoom"].is_null() == (clearance < Secret),
            "tchapRoom at {clearance}: {room}"
        );
        let (_, msgs) = server.graphql(&jwt, "query($r: String!) { tchapMessages(roomId: $r) { totalCount edges { node { body sender } } } }", json!({ "r": crisis })).await;
        let expected_count = if clearance >= Secret { 5 } else { 0 };
        ensure!(
            msgs["data"]["tchapMessages"]["totalCount"] == expected_count,
            "messages at {clearance}: {msgs}"
        );
    }
    let secret = server.token("dgsi", Secret, &[Scope::Read]);
    let (_, stats) = server
        .graphql(&secret, "{ tchapStats { totalRooms totalMessages activeRoomsLast24h } }", json!({}))
        .await;
    ensure!(
        stats["data"]["tchapStats"]
            == json!({ "totalRooms": 3, "totalMessages": 10, "activeRoomsLast24h": 3 }),
        "{stats}"
    );
    let low = server.token("dgsi", Restricted, &[Scope::Read]);
    let (_, stats) = server.graphql(&low, "{ tchapStats { totalRooms totalMessages } }", json!({})).await;
    ensure!(stats["data"]["tchapStats"] == json!({ "totalRooms": 2, "totalMessages": 5 }), "{stats}");
    let anssi_reader = server.token("anssi", TopSecret, &[Scope::Read]);
    let (_, rooms) = server.graphql(&anssi_reader, ROOMS, json!({})).await;
    ensure!(room_names(&rooms) == vec!["Public"], "anssi: {rooms}");
    let (_, msgs) = server
        .graphql(
            &anssi_reader,
            "query($r: String!) { tchapMessages(roomId: $r) { edges { node { body } } } }",
            json!({ "r": public }),
        )
        .await;
    let bodies: Vec<&str> = msgs["data"]["tchapMessages"]["edges"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["node"]["body"].as_str()).collect())
        .unwrap_or_default();
    ensure!(bodies == vec!["bonjour", "salut"], "{msgs}");

    // The audit trails: 4 records for dgsi, 2 for anssi (one FAILED); both chains verify.
    for (org, n) in [("dgsi", 4), ("anssi", 2)] {
        let jwt = server.token(org, TopSecret, &[Scope::Audit]);
        let (_, trail) = server
            .graphql(&jwt, "{ tchapIngestions { totalCount edges { node { outcome error } } } }", json!({}))
            .await;
        ensure!(trail["data"]["tchapIngestions"]["totalCount"] == n, "{org}: {trail}");
        ensure!(
            !trail.to_string().contains(&alice.access_token)
                && !trail.to_string().contains(&bob.access_token)
        );
    }
    let url = database_url.to_owned();
    let verification = tokio::task::spawn_blocking(move || Store::open(&url)?.audit_verify(&[])).await??;
    ensure!(
        verification.len() == 2 && verification.iter().all(argus_store::ChainVerification::is_ok),
        "{verification:?}"
    );
    Ok(vec![alice.access_token.clone(), bob.access_token.clone()])
}

#[tokio::test]
async fn end_to_end_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.fusion.enabled = false;
    let url = c.database_url.clone();
    let db_dir = dir.path().to_path_buf();
    let server = TestServer::start_with(dir, c).await;
    let tokens = scenario(&server, &url).await.unwrap();
    // No column of the database (nor its WAL) holds a Matrix token.
    for entry in std::fs::read_dir(&db_dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for token in &tokens {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "token in {}",
                path.display()
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn end_to_end_on_postgres() {
    let Some(db) = argus_testkit::postgres::fresh_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.fusion.enabled = false;
    c.database_url = db.url().to_owned();
    let server = TestServer::start_with(dir, c).await;
    let tokens = scenario(&server, db.url()).await.unwrap();
    server.stop().await;
    assert!(!tokens.is_empty() || argus_testkit::synapse::synapse().is_none());
    let tables = db
        .cluster()
        .query(
            db.url(),
            "SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .context("listing tables")
        .unwrap();
    for table in tables.split(',').filter(|t| !t.is_empty()) {
        for token in &tokens {
            let sql = format!("SELECT count(*) FROM \"{table}\" t WHERE t::text LIKE '%{token}%'");
            assert_eq!(db.cluster().query(db.url(), &sql).unwrap(), "0", "token in table {table}");
        }
    }
}
