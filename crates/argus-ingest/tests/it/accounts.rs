//! An account instead of a homeserver URL, against the real Synapse (its server name is its
//! own listener, so discovery reads its own `.well-known` file) and a real identity server on
//! loopback, on both backends: ingest, watch and post resolve the account, confirm the token,
//! and record the homeserver found; another account's token stores nothing.

use std::sync::{Arc, atomic::Ordering};

use argus_domain::{
    AccessToken, Classification, HomeserverUrl, RoomId, Scope, Viewer, testing::ViewerBuilder,
};
use argus_ingest::{
    Services,
    ingest::{IngestRequest, JoinedRequest, Reach, Trigger, ingest_joined, ingest_room},
    post::{PostRequest, post_note},
    watch::{WatchRequest, watch_room},
};
use argus_matrix::{Connector, ConnectorConfig};
use argus_testkit::{
    identity::IdentityServer,
    synapse::{Synapse, TestUser, synapse},
};

use crate::support::{Env, backend_suite};

backend_suite!(
    an_ingestion_by_user_id_records_the_discovered_homeserver,
    an_ingestion_by_email_goes_through_the_identity_server,
    another_accounts_token_is_refused_and_nothing_is_stored,
    a_joined_rooms_call_by_account_reads_the_discovered_homeserver,
    a_watch_by_account_is_bound_to_the_discovered_homeserver,
    a_post_by_account_goes_to_the_discovered_homeserver,
);

/// The address the identity server knows, on the test homeserver.
const ADDRESS: &str = "alice.martin@interieur.gouv.fr";

/// Services over `env`'s store whose connector reaches loopback and asks `identity`.
fn services(env: &Env, identity: &IdentityServer) -> Arc<Services> {
    env.replica(|services| {
        services.connector = Connector::new(ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            identity_server: Some(identity.url().to_owned()),
            ..ConnectorConfig::default()
        })
        .unwrap_or_else(|e| panic!("connector: {e}"));
    })
}

fn analyst(scopes: &[Scope]) -> Viewer {
    ViewerBuilder::new("dgsi")
        .actor("analyste@dgsi")
        .clearance(Classification::Secret)
        .scopes(scopes.iter().copied())
        .build()
}

fn by_account(account: &str, token: &str, room: &str) -> IngestRequest {
    IngestRequest {
        homeserver_url: String::new(),
        account: Some(account.to_owned()),
        access_token: AccessToken::new(token),
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        max_messages: None,
        recovery_key: None,
        reach: Reach::Current,
        trigger: Trigger::Manual,
        follow_upgrades: false,
    }
}

/// Synapse, a user with a room of three messages, and an identity server that knows the user
/// by [`ADDRESS`].
async fn world(prefix: &str) -> Option<(&'static Synapse, TestUser, String, IdentityServer)> {
    let server = synapse()?;
    let alice = server.register(prefix).await.unwrap_or_else(|e| panic!("register: {e:#}"));
    let room =
        alice.create_room(Some("Cellule"), None, false).await.unwrap_or_else(|e| panic!("room: {e:#}"));
    for text in ["un", "deux", "trois"] {
        alice.send_text(&room, text).await.unwrap_or_else(|e| panic!("send: {e:#}"));
    }
    let identity = IdentityServer::start([(ADDRESS, server.server_name())])
        .await
        .unwrap_or_else(|e| panic!("identity server: {e:#}"));
    Some((server, alice, room, identity))
}

/// The error of a call that must fail.
fn failed<T: std::fmt::Debug>(result: argus_ingest::Result<T>) -> argus_ingest::Error {
    match result {
        Ok(done) => panic!("the call succeeded: {done:?}"),
        Err(error) => error,
    }
}

fn base(server: &Synapse) -> HomeserverUrl {
    server.base_url().parse().unwrap_or_else(|e| panic!("{e}"))
}

async fn an_ingestion_by_user_id_records_the_discovered_homeserver(env: Env) {
    let Some((server, alice, room, identity)) = world("acct_user").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read, Scope::Audit]);
    let request = by_account(&alice.user_id, &alice.access_token, &room);
    let done = ingest_room(&services, &viewer, request, &mut |_| {}).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.messages_stored, 3);
    assert_eq!(done.room.homeserver_url, base(server));
    assert_eq!(done.ingestion.entry.homeserver_url, base(server).as_str());
    let trail = env.trail(&viewer).await;
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].entry.homeserver_url, base(server).as_str());
    // The room is locked to the homeserver found: the same URL given directly goes on.
    let again = IngestRequest {
        homeserver_url: server.base_url().to_owned(),
        account: None,
        ..by_account(&alice.user_id, &alice.access_token, &room)
    };
    let again = ingest_room(&services, &viewer, again, &mut |_| {}).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.messages_stored, 0);
}

async fn an_ingestion_by_email_goes_through_the_identity_server(env: Env) {
    let Some((server, alice, room, identity)) = world("acct_mail").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read]);
    let done = ingest_room(&services, &viewer, by_account(ADDRESS, &alice.access_token, &room), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((done.messages_stored, done.room.homeserver_url), (3, base(server)));

    // An address the identity server does not know: refused, nothing stored, not audited.
    let unknown = by_account("personne@interieur.gouv.fr", &alice.access_token, &room);
    let err = failed(ingest_room(&services, &viewer, unknown, &mut |_| {}).await);
    assert_eq!(err.code(), "DISCOVERY_FAILED");
    assert_eq!(env.trail(&analyst(&[Scope::Audit])).await.len(), 1);
}

async fn another_accounts_token_is_refused_and_nothing_is_stored(env: Env) {
    let Some((server, alice, room, identity)) = world("acct_victim").await else { return };
    let mallory = server.register("acct_other").await.unwrap_or_else(|e| panic!("{e:#}"));
    mallory.join(&room).await.ok();
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read, Scope::Audit]);
    let refused_before = services.metrics.ingestions_refused.load(Ordering::Relaxed);
    // Alice's account, another user's token (one that could even read the room).
    let err = failed(
        ingest_room(
            &services,
            &viewer,
            by_account(&alice.user_id, &mallory.access_token, &room),
            &mut |_| {},
        )
        .await,
    );
    assert_eq!(err.code(), "ACCOUNT_MISMATCH");
    assert!(!err.public_message().contains(&mallory.access_token));
    let room_id: RoomId = room.parse().unwrap_or_else(|e| panic!("{e}"));
    let v = viewer.clone();
    assert!(env.with_store(move |s| s.room(&v, &room_id)).await.is_none());
    assert!(env.trail(&viewer).await.is_empty());
    assert_eq!(services.metrics.ingestions_refused.load(Ordering::Relaxed), refused_before + 1);

    // The same for a watch and a joined-rooms call.
    let watch = WatchRequest {
        homeserver_url: String::new(),
        account: Some(alice.user_id.clone()),
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        access_token: AccessToken::new(mallory.access_token.clone()),
        room_id: room.clone(),
        classification: Classification::Restricted,
        interval_secs: 60,
        recovery_key: None,
    };
    assert_eq!(failed(watch_room(&services, &viewer, watch).await).code(), "ACCOUNT_MISMATCH");
    let v = viewer.clone();
    assert!(env.with_store(move |s| s.watches(&v, 10, None)).await.is_empty());
    let joined = JoinedRequest {
        homeserver_url: String::new(),
        account: Some(ADDRESS.into()),
        access_token: AccessToken::new(mallory.access_token.clone()),
        classification: Classification::Restricted,
        max_messages: None,
        recovery_key: None,
    };
    // An e-mail address: any account of the server it names passes; mallory's is one.
    assert!(ingest_joined(&services, &viewer, joined, &mut |_, _| {}).await.is_ok());
    let elsewhere = JoinedRequest {
        homeserver_url: String::new(),
        account: Some(format!("@acct_victim:{}", server.server_name())),
        access_token: AccessToken::new(mallory.access_token.clone()),
        classification: Classification::Restricted,
        max_messages: None,
        recovery_key: None,
    };
    let err = failed(ingest_joined(&services, &viewer, elsewhere, &mut |_, _| {}).await);
    assert_eq!(err.code(), "ACCOUNT_MISMATCH");
}

async fn a_joined_rooms_call_by_account_reads_the_discovered_homeserver(env: Env) {
    let Some((server, alice, room, identity)) = world("acct_joined").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read]);
    let request = JoinedRequest {
        homeserver_url: String::new(),
        account: Some(alice.user_id.clone()),
        access_token: AccessToken::new(alice.access_token.clone()),
        classification: Classification::Restricted,
        max_messages: None,
        recovery_key: None,
    };
    let outcomes =
        ingest_joined(&services, &viewer, request, &mut |_, _| {}).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].room_id, room);
    let done = outcomes[0].result.as_ref().unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((done.messages_stored, &done.room.homeserver_url), (3, &base(server)));
}

async fn a_watch_by_account_is_bound_to_the_discovered_homeserver(env: Env) {
    let Some((server, alice, room, identity)) = world("acct_watch").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read]);
    let request = WatchRequest {
        homeserver_url: String::new(),
        account: Some(ADDRESS.into()),
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        access_token: AccessToken::new(alice.access_token.clone()),
        room_id: room.clone(),
        classification: Classification::Restricted,
        interval_secs: 60,
        recovery_key: None,
    };
    let watch = watch_room(&services, &viewer, request).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(watch.homeserver_url, base(server));
    assert_eq!(watch.room_id.as_str(), room);
}

async fn a_post_by_account_goes_to_the_discovered_homeserver(env: Env) {
    let Some((server, alice, room, identity)) = world("acct_post").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read, Scope::Post, Scope::Audit]);
    ingest_room(&services, &viewer, by_account(&alice.user_id, &alice.access_token, &room), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let request = PostRequest {
        homeserver_url: String::new(),
        account: Some(alice.user_id.clone()),
        access_token: AccessToken::new(alice.access_token.clone()),
        room_id: room.clone(),
        body: "Point de situation à 18 h".into(),
        classification: Classification::Restricted,
        reply_to: None,
        transaction_id: None,
    };
    let posted = post_note(&services, &viewer, request).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(posted.record.entry.homeserver_url, base(server).as_str());
    let seen = alice.event(&room, posted.event_id.as_str()).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        seen["content"]["body"].as_str().is_some_and(|b| b.ends_with("Point de situation à 18 h")),
        "{seen}"
    );
}
