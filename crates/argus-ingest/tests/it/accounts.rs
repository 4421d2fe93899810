//! An account instead of a homeserver URL, against the real Synapse (its server name is its
//! own listener, so discovery reads its own `.well-known` file) and a real identity server on
//! loopback, on both backends: ingest, watch and post resolve the account, confirm the token,
//! and record the homeserver found; another account's token stores nothing.

use std::sync::{Arc, atomic::Ordering};

use argus_domain::{
    AccessToken, Classification, HomeserverUrl, IngestionOutcome, RoomId, Scope, Viewer,
    testing::ViewerBuilder,
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
    an_account_the_outbound_policy_refuses_is_audited_like_a_refused_homeserver_url,
    a_post_by_account_whose_token_is_another_accounts_is_refused_and_audited,
    a_joined_rooms_call_shares_one_renewing_token_and_its_start_date,
);

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
/// by an address from which Tchap derives the user's id.
struct World {
    server: &'static Synapse,
    alice: TestUser,
    room: String,
    identity: IdentityServer,
    /// Alice's e-mail address (`{name}@interieur.gouv.fr`, her localpart derived from it).
    address: String,
}

async fn world(prefix: &str) -> Option<World> {
    let server = synapse()?;
    let (alice, address) = server
        .register_for_email(prefix, "interieur.gouv.fr")
        .await
        .unwrap_or_else(|e| panic!("register: {e:#}"));
    let room =
        alice.create_room(Some("Cellule"), None, false).await.unwrap_or_else(|e| panic!("room: {e:#}"));
    for text in ["un", "deux", "trois"] {
        alice.send_text(&room, text).await.unwrap_or_else(|e| panic!("send: {e:#}"));
    }
    let identity = IdentityServer::start([(address.as_str(), server.server_name())])
        .await
        .unwrap_or_else(|e| panic!("identity server: {e:#}"));
    Some(World { server, alice, room, identity, address })
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
    let Some(World { server, alice, room, identity, .. }) = world("acct_user").await else { return };
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
    let Some(World { server, alice, room, identity, address }) = world("acct_mail").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read]);
    let done = ingest_room(&services, &viewer, by_account(&address, &alice.access_token, &room), &mut |_| {})
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
    let Some(World { server, alice, room, identity, address }) = world("acct_victim").await else { return };
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
    // An e-mail address stands for the account Tchap derives from it: mallory's account is on
    // the same server, but is not alice's address's.
    let joined = JoinedRequest { account: Some(address.clone()), ..joined_request(&mallory.access_token) };
    let err = failed(ingest_joined(&services, &viewer, joined, &mut |_, _| {}).await);
    assert_eq!(err.code(), "ACCOUNT_MISMATCH");
    let by_mail = by_account(&address, &mallory.access_token, &room);
    assert_eq!(
        failed(ingest_room(&services, &viewer, by_mail, &mut |_| {}).await).code(),
        "ACCOUNT_MISMATCH"
    );
    let elsewhere = JoinedRequest {
        account: Some(format!("@acct_victim:{}", server.server_name())),
        ..joined_request(&mallory.access_token)
    };
    let err = failed(ingest_joined(&services, &viewer, elsewhere, &mut |_, _| {}).await);
    assert_eq!(err.code(), "ACCOUNT_MISMATCH");
    // Refusals all: nothing audited, nothing stored.
    assert!(env.trail(&viewer).await.is_empty());
}

/// A joined-rooms call by account with `token`, at RESTRICTED.
fn joined_request(token: &str) -> JoinedRequest {
    JoinedRequest {
        homeserver_url: String::new(),
        account: None,
        access_token: AccessToken::new(token),
        classification: Classification::Restricted,
        max_messages: None,
        recovery_key: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
    }
}

async fn a_joined_rooms_call_by_account_reads_the_discovered_homeserver(env: Env) {
    let Some(World { server, alice, room, identity, .. }) = world("acct_joined").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read]);
    let request =
        JoinedRequest { account: Some(alice.user_id.clone()), ..joined_request(&alice.access_token) };
    let outcomes =
        ingest_joined(&services, &viewer, request, &mut |_, _| {}).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].room_id, room);
    let done = outcomes[0].result.as_ref().unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((done.messages_stored, &done.room.homeserver_url), (3, &base(server)));
}

async fn a_watch_by_account_is_bound_to_the_discovered_homeserver(env: Env) {
    let Some(World { server, alice, room, identity, address }) = world("acct_watch").await else { return };
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read]);
    let request = WatchRequest {
        homeserver_url: String::new(),
        account: Some(address.clone()),
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
    let Some(World { server, alice, room, identity, .. }) = world("acct_post").await else { return };
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

async fn an_account_the_outbound_policy_refuses_is_audited_like_a_refused_homeserver_url(env: Env) {
    let Some(World { server, alice, room, identity, .. }) = world("acct_ssrf").await else { return };
    // The operator's policy as shipped: loopback is not an exempt address.
    let services = env.replica(|services| {
        services.connector = Connector::new(ConnectorConfig {
            identity_server: Some(identity.url().to_owned()),
            ..ConnectorConfig::default()
        })
        .unwrap_or_else(|e| panic!("connector: {e}"));
    });
    let viewer = analyst(&[Scope::Ingest, Scope::Read, Scope::Post, Scope::Audit]);
    let origin = format!("https://{}", server.server_name());
    // The same loopback homeserver given as a URL: refused by the policy, audited FAILED.
    let by_url = IngestRequest {
        homeserver_url: server.base_url().to_owned(),
        account: None,
        ..by_account(&alice.user_id, &alice.access_token, &room)
    };
    let err = failed(ingest_room(&services, &viewer, by_url, &mut |_| {}).await);
    assert_eq!(err.code(), "OUTBOUND_POLICY");
    assert_eq!(env.trail(&viewer).await.len(), 1);

    // Through an account (its server name a loopback address): audited the same way, under
    // `https://{server name}`, by ingest, joined rooms and post.
    let request = by_account(&alice.user_id, &alice.access_token, &room);
    assert_eq!(failed(ingest_room(&services, &viewer, request, &mut |_| {}).await).code(), "OUTBOUND_POLICY");
    let joined =
        JoinedRequest { account: Some(alice.user_id.clone()), ..joined_request(&alice.access_token) };
    let err = failed(ingest_joined(&services, &viewer, joined, &mut |_, _| {}).await);
    assert_eq!(err.code(), "OUTBOUND_POLICY");
    let post = PostRequest {
        homeserver_url: String::new(),
        account: Some(alice.user_id.clone()),
        access_token: AccessToken::new(alice.access_token.clone()),
        room_id: room.clone(),
        body: "Note".into(),
        classification: Classification::Restricted,
        reply_to: None,
        transaction_id: None,
    };
    assert_eq!(failed(post_note(&services, &viewer, post).await).code(), "OUTBOUND_POLICY");

    let trail = env.trail(&viewer).await;
    assert_eq!(trail.len(), 4, "{trail:?}");
    for record in &trail[1..] {
        assert_eq!(record.entry.outcome, IngestionOutcome::Failed, "{record:?}");
        assert_eq!(record.entry.homeserver_url, origin, "{record:?}");
        assert!(!format!("{record:?}").contains(&alice.access_token));
    }
    assert_eq!(trail[1].entry.room_id, room);
    assert_eq!(trail[2].entry.room_id, "*");
    assert!(trail[3].entry.post.is_some(), "the post's record: {:?}", trail[3]);
    let room_id: RoomId = room.parse().unwrap_or_else(|e| panic!("{e}"));
    let v = viewer.clone();
    assert!(env.with_store(move |s| s.room(&v, &room_id)).await.is_none());
}

async fn a_post_by_account_whose_token_is_another_accounts_is_refused_and_audited(env: Env) {
    let Some(World { server, alice, room, identity, address }) = world("acct_post_other").await else {
        return;
    };
    let mallory = server.register("acct_post_mallory").await.unwrap_or_else(|e| panic!("{e:#}"));
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read, Scope::Post, Scope::Audit]);
    ingest_room(&services, &viewer, by_account(&alice.user_id, &alice.access_token, &room), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for account in [alice.user_id.clone(), address.clone()] {
        let request = PostRequest {
            homeserver_url: String::new(),
            account: Some(account),
            access_token: AccessToken::new(mallory.access_token.clone()),
            room_id: room.clone(),
            body: "Note".into(),
            classification: Classification::Restricted,
            reply_to: None,
            transaction_id: None,
        };
        assert_eq!(failed(post_note(&services, &viewer, request).await).code(), "ACCOUNT_MISMATCH");
    }
    let trail = env.trail(&viewer).await;
    assert_eq!(trail.len(), 3, "{trail:?}");
    for record in &trail[1..] {
        assert_eq!(record.entry.outcome, IngestionOutcome::Failed);
        assert_eq!(record.entry.homeserver_url, base(server).as_str());
        let post = record.entry.post.as_ref().unwrap_or_else(|| panic!("not a post's record: {record:?}"));
        assert!(post.event_id.is_none());
        assert!(!format!("{record:?}").contains(&mallory.access_token));
    }
    // Nothing was sent.
    let texts = alice.all_messages(&room).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!texts.iter().any(|m| m["content"]["body"].as_str().is_some_and(|b| b.ends_with("Note"))));

    // Her own token, her account locked: whoami fails, the post is refused and audited too.
    let admin = server.register_admin("acct_post_admin").await.unwrap_or_else(|e| panic!("{e:#}"));
    admin.set_account_locked(&alice.user_id, true).await.unwrap_or_else(|e| panic!("{e:#}"));
    let request = PostRequest {
        homeserver_url: String::new(),
        account: Some(alice.user_id.clone()),
        access_token: AccessToken::new(alice.access_token.clone()),
        room_id: room.clone(),
        body: "Note".into(),
        classification: Classification::Restricted,
        reply_to: None,
        transaction_id: None,
    };
    let locked = failed(post_note(&services, &viewer, request).await);
    admin.set_account_locked(&alice.user_id, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(locked.code(), "ACCOUNT_LOCKED");
    let trail = env.trail(&viewer).await;
    assert_eq!(trail.len(), 4, "{trail:?}");
    assert_eq!(trail[3].entry.outcome, IngestionOutcome::Failed);
    assert!(trail[3].entry.post.is_some(), "{:?}", trail[3]);
}

async fn a_joined_rooms_call_shares_one_renewing_token_and_its_start_date(env: Env) {
    let Some(World { server, alice, room, identity, .. }) = world("acct_joined_refresh").await else {
        return;
    };
    let second =
        alice.create_room(Some("Second"), None, false).await.unwrap_or_else(|e| panic!("room: {e:#}"));
    alice.send_text(&second, "quatre").await.unwrap_or_else(|e| panic!("send: {e:#}"));
    let services = services(&env, &identity);
    let viewer = analyst(&[Scope::Ingest, Scope::Read]);
    let since = time::macros::datetime!(2020-01-01 00:00 UTC);

    // A start date in the future is refused before anything is read.
    let future = JoinedRequest {
        account: Some(alice.user_id.clone()),
        since: Some(time::OffsetDateTime::now_utc() + time::Duration::days(1)),
        ..joined_request(&alice.access_token)
    };
    assert_eq!(
        failed(ingest_joined(&services, &viewer, future, &mut |_, _| {}).await).code(),
        "INVALID_INPUT"
    );

    // An expired access token and its refresh token: the account's confirmation renews it, and
    // the listing and both rooms' runs go on with the renewed token (a refresh token is spent
    // once: a source per room would be refused at the second).
    let login = alice.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    tokio::time::sleep(PAST_EXPIRY).await;
    let request = JoinedRequest {
        account: Some(alice.user_id.clone()),
        refresh_token: Some(argus_domain::Secret::new(login.refresh_token.clone())),
        since: Some(since),
        ..joined_request(&login.access_token)
    };
    let outcomes =
        ingest_joined(&services, &viewer, request, &mut |_, _| {}).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcomes.len(), 2);
    for outcome in &outcomes {
        let done = outcome.result.as_ref().unwrap_or_else(|e| panic!("{}: {e:?}", outcome.room_id));
        assert_eq!(done.room.homeserver_url, base(server));
        assert_eq!(done.room.history_since, Some(since), "{}", outcome.room_id);
        let expected = if outcome.room_id == room { 3 } else { 1 };
        assert_eq!(done.messages_stored, expected, "{}", outcome.room_id);
    }
    // Without the refresh token the expired token is refused at the confirmation.
    let expired =
        JoinedRequest { account: Some(alice.user_id.clone()), ..joined_request(&login.access_token) };
    let err = failed(ingest_joined(&services, &viewer, expired, &mut |_, _| {}).await);
    assert_eq!(err.code(), "HOMESERVER_UNAUTHORIZED");
}

/// Past the test homeserver's lifetime of refreshable access tokens (4 s).
const PAST_EXPIRY: std::time::Duration = std::time::Duration::from_millis(4200);
