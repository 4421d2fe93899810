//! Tokens that expire: a watch renews its token with its refresh token across expiries on the
//! real Synapse (refreshable tokens live 4 s there), each new pair sealed and stored under the
//! watch's lease; replicas renewing at once use each refresh token once (counted on the mock
//! auth server's token endpoint) and none pauses; a one-off ingestion renews an expired token
//! in memory; a refresh token that no longer renews pauses the watch (`TOKEN_REFRESH_FAILED`);
//! no token ever shows in an error, a watch's status or a log line.

use std::{sync::Arc, time::Duration};

use argus_domain::{AccessToken, Classification, HomeserverUrl, Secret, Viewer, WatchStatus};
use argus_ingest::{
    ingest::ingest_room,
    scheduler::{CycleReport, Scheduler, SchedulerOptions, watch_tokens},
    token_keys::AccountBinding,
    watch::{WatchRequest, watch_room, watches},
};
use argus_matrix::{RefreshingTokens, Session, TokenPair, TokenSource};
use argus_store::WatchRun;
use argus_testkit::{
    homeserver::MATRIX_TOKEN,
    oauth::OAuthMock,
    synapse::{TestUser, synapse},
};
use time::OffsetDateTime;

use crate::support::{Env, analyst, backend_suite, connector, request_from};

backend_suite!(
    a_watch_keeps_capturing_across_ten_expiries_on_three_replicas,
    a_one_off_ingestion_whose_token_expired_renews_it_with_its_refresh_token,
    three_replicas_renew_a_watchs_oauth_token_once_and_none_pauses,
);

pub(crate) const CLIENT_ID: &str = "01JARGUSWATCHCLIENT";

/// A little more than the test homeserver's refreshable token lifetime.
pub(crate) const PAST_EXPIRY: Duration = Duration::from_millis(4200);

pub(crate) fn watch_request(homeserver: &str, access: &str, refresh: &str, room: &str) -> WatchRequest {
    WatchRequest {
        homeserver_url: homeserver.to_owned(),
        account: None,
        access_token: AccessToken::new(access),
        refresh_token: Some(Secret::new(refresh)),
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        interval_secs: 1,
        recovery_key: None,
    }
}

pub(crate) fn scheduler(services: Arc<argus_ingest::Services>, replica: &str) -> Scheduler {
    Scheduler::new(
        services,
        SchedulerOptions { replica: replica.to_owned(), jitter: 0.0, ..SchedulerOptions::default() },
    )
}

pub(crate) async fn room_count(env: &Env, viewer: &Viewer, room: &str) -> i64 {
    let (v, r) = (viewer.clone(), room.parse().unwrap_or_else(|e| panic!("{e}")));
    env.with_store(move |s| s.room(&v, &r)).await.map_or(0, |r| r.message_count)
}

/// The error of a call expected to fail.
fn failure<T>(result: argus_ingest::Result<T>) -> argus_ingest::Error {
    match result {
        Ok(_) => panic!("the call succeeded"),
        Err(error) => error,
    }
}

/// A user of the test homeserver with a room holding `messages` texts.
pub(crate) async fn user_with_room(
    name: &str,
    messages: usize,
) -> Option<(&'static argus_testkit::synapse::Synapse, TestUser, String)> {
    let server = synapse()?;
    let user = server.register(name).await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = user.create_room(Some(name), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    if messages > 0 {
        user.send_texts(&room, "before", messages, 1).await.unwrap_or_else(|e| panic!("{e:#}"));
    }
    Some((server, user, room))
}

/// The pair of the account `watch` reads with, as stored now (shared by its account's
/// watches).
pub(crate) async fn stored_credentials(env: &Env, watch: &argus_domain::Watch) -> argus_ingest::Credentials {
    stored_with(env, &env.services, watch).await
}

/// [`stored_credentials`], opened with `services`' keys.
pub(crate) async fn stored_with(
    env: &Env,
    services: &argus_ingest::Services,
    watch: &argus_domain::Watch,
) -> argus_ingest::Credentials {
    let id = watch.id;
    let shared =
        env.with_store(move |s| s.watch_credential(id)).await.unwrap_or_else(|| panic!("no credential"));
    let keys = services.token_keys.as_ref().unwrap_or_else(|| panic!("keys"));
    let binding = AccountBinding {
        org: &shared.org,
        owner: &shared.owner,
        homeserver_url: &shared.homeserver_url,
        user_id: &shared.user_id,
    };
    keys.open_account(&shared.token, binding).unwrap_or_else(|e| panic!("{e}"))
}

/// Mounts `whoami` on the mock homeserver: its token is `user`'s.
pub(crate) async fn mount_whoami(env: &Env, user: &str) {
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/_matrix/client/v3/account/whoami"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({"user_id": user})),
        )
        .with_priority(1)
        .mount(env.hs.server())
        .await;
}

async fn a_watch_keeps_capturing_across_ten_expiries_on_three_replicas(env: Env) {
    let Some((server, user, room)) = user_with_room("renewing_watch", 2).await else { return };
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    let alice = analyst("dgsi");
    // Watched with a token that expired already: the check that it reads the room renews it,
    // and the renewed pair is what is sealed (the refresh token given is used up).
    tokio::time::sleep(PAST_EXPIRY).await;
    let request = watch_request(server.base_url(), &login.access_token, &login.refresh_token, &room);
    let watch = watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    let sealed = stored_credentials(&env, &watch).await;
    assert_ne!(sealed.access_token.expose_secret(), login.access_token);
    assert!(sealed.expires_at.is_some() && sealed.oauth_client_id.is_none());
    let first = sealed.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()).unwrap_or_default();
    // Three replicas over one store cycle at once: whichever claims the watch renews its
    // token (it expired since the last run) and stores the new pair for the next one. A
    // refresh token used twice would be refused by Synapse and pause the watch.
    let replicas: Vec<Scheduler> =
        ["replica-a", "replica-b", "replica-c"].map(|name| scheduler(env.replica(|_| {}), name)).into();
    let mut refresh_tokens = vec![login.refresh_token.clone(), first];
    for round in 0..10_i64 {
        user.send_text(&room, &format!("round {round}")).await.unwrap_or_else(|e| panic!("{e:#}"));
        tokio::time::sleep(PAST_EXPIRY).await;
        let (a, b, c) = tokio::join!(replicas[0].cycle(), replicas[1].cycle(), replicas[2].cycle());
        let reports: Vec<CycleReport> =
            [a, b, c].into_iter().map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect();
        let total = |field: fn(&CycleReport) -> usize| reports.iter().map(field).sum::<usize>();
        assert_eq!(
            (total(|r| r.claimed), total(|r| r.succeeded), total(|r| r.paused)),
            (1, 1, 0),
            "round {round}: {reports:?}"
        );
        assert_eq!(room_count(&env, &alice, &room).await, 3 + round, "round {round}");
        let stored = stored_credentials(&env, &watch).await;
        let refresh = stored.refresh_token.as_ref().map(|t| t.expose_secret().to_owned());
        let refresh = refresh.unwrap_or_else(|| panic!("round {round}: the refresh token was dropped"));
        assert!(!refresh_tokens.contains(&refresh), "round {round}: the token was not renewed");
        assert!(stored.expires_at.is_some() && stored.lifetime.is_some());
        refresh_tokens.push(refresh);
    }
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].status, listed[0].last_error.as_deref()), (WatchStatus::Active, None));
}

async fn a_one_off_ingestion_whose_token_expired_renews_it_with_its_refresh_token(env: Env) {
    let Some((server, user, room)) = user_with_room("renewing_ingest", 4).await else { return };
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    tokio::time::sleep(PAST_EXPIRY).await;
    let alice = analyst("dgsi");
    // Without its refresh token, the expired token is refused.
    let request = request_from(server.base_url(), &login.access_token, &room, false);
    let refused = failure(ingest_room(&env.services, &alice, request, &mut |_| {}).await);
    assert_eq!(refused.code(), "HOMESERVER_UNAUTHORIZED");
    // With it, the run renews the token and reads the room.
    let mut request = request_from(server.base_url(), &login.access_token, &room, false);
    request.refresh_token = Some(Secret::new(login.refresh_token.clone()));
    let summary =
        ingest_room(&env.services, &alice, request, &mut |_| {}).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.messages_stored, 4);
    // The refresh token was used once: used again, Synapse refuses it.
    let mut request = request_from(server.base_url(), &login.access_token, &room, false);
    request.refresh_token = Some(Secret::new(login.refresh_token.clone()));
    let error = failure(ingest_room(&env.services, &alice, request, &mut |_| {}).await);
    assert_eq!(error.code(), "TOKEN_REFRESH_FAILED");
    for shown in
        [format!("{refused} {refused:?} {error} {error:?}"), format!("{:?}", env.trail(&alice).await)]
    {
        assert!(!shown.contains(&login.access_token) && !shown.contains(&login.refresh_token), "{shown}");
    }
}

async fn three_replicas_renew_a_watchs_oauth_token_once_and_none_pauses(env: Env) {
    let auth = OAuthMock::mount(env.hs.server(), CLIENT_ID, 300).await;
    mount_whoami(&env, "@alice:tchap.test").await;
    let room = "!oauth:tchap.test";
    env.hs.room(room, 3);
    let alice = analyst("dgsi");
    // The homeserver accepted the token when the watch was made.
    let request = WatchRequest {
        oauth_client_id: Some(CLIENT_ID.into()),
        ..watch_request(&env.hs.uri(), MATRIX_TOKEN, OAuthMock::FIRST_REFRESH_TOKEN, room)
    };
    let watch = watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    let names = ["replica-a", "replica-b", "replica-c"];
    let replicas: Vec<_> = names.iter().map(|_| env.replica(|_| {})).collect();
    let lease = Duration::from_secs(60);
    let mut refresh_token = OAuthMock::FIRST_REFRESH_TOKEN.to_owned();
    // Three rounds, each with another replica holding the watch's lease; in each, the three
    // replicas' sources are refused at once and renew.
    for (round, holder) in [0_usize, 1, 2].into_iter().enumerate() {
        let (now, name) = (OffsetDateTime::now_utc(), names[holder]);
        let claimed = env.with_store(move |s| s.claim_due_watches(now, name, lease, 10)).await;
        assert_eq!(claimed.len(), 1, "round {round}");
        let mut sources: Vec<RefreshingTokens> = Vec::new();
        for (services, name) in replicas.iter().zip(names) {
            let source = watch_tokens(services, name, &claimed[0]).await.unwrap_or_else(|e| panic!("{e}"));
            sources.push(source.unwrap_or_else(|| panic!("the watch holds a refresh token")));
        }
        let refused = sources[0].pair().access_token;
        let renewals = futures::future::join_all(sources.iter().map(|s| s.renew(&refused))).await;
        assert!(renewals.iter().all(|r| matches!(r, Ok(true))), "round {round}: {renewals:?}");
        assert_eq!((auth.uses(&refresh_token), auth.issued()), (1, u32::try_from(round + 1).unwrap_or(0)));
        for source in &sources {
            assert_eq!(source.pair().access_token.expose_secret(), auth.access_token(), "round {round}");
        }
        let stored = stored_credentials(&env, &watch).await;
        assert_eq!(stored.access_token.expose_secret(), auth.access_token());
        refresh_token = auth.refresh_token();
        assert_eq!(stored.refresh_token.as_ref().map(Secret::expose_secret), Some(refresh_token.as_str()));
        assert_eq!((stored.oauth_client_id.as_deref(), stored.lifetime), (Some(CLIENT_ID), Some(lease * 5)));
        let run = WatchRun { ran_at: now, next_run_at: now, error: None, pause: None };
        let id = watch.id;
        assert!(env.with_store(move |s| s.record_watch_run(id, name, &run)).await);
    }
    // Outside a run (files fetched after it): the renewal borrows the free lease, stores the
    // new pair and gives the lease back.
    let (now, id) = (OffsetDateTime::now_utc(), watch.id);
    let claimed = env.with_store(move |s| s.claim_due_watches(now, "replica-a", lease, 10)).await;
    let run = WatchRun { ran_at: now, next_run_at: now, error: None, pause: None };
    assert!(env.with_store(move |s| s.record_watch_run(id, "replica-a", &run)).await);
    let after_run = watch_tokens(&replicas[0], "replica-a", &claimed[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the watch holds a refresh token"));
    let refused = after_run.pair().access_token;
    assert_eq!(after_run.renew(&refused).await.ok(), Some(true));
    assert_eq!((auth.uses(&refresh_token), auth.issued()), (1, 4));
    let stored = stored_credentials(&env, &watch).await;
    assert_eq!(stored.access_token.expose_secret(), auth.access_token());
    let now = OffsetDateTime::now_utc();
    assert_eq!(env.with_store(move |s| s.claim_due_watches(now, "replica-b", lease, 10)).await.len(), 1);
    let uses = auth.all_uses();
    assert!(uses.len() == 4 && uses.values().all(|&n| n == 1), "{uses:?}");
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed[0].status, WatchStatus::Active);
}

#[tokio::test]
async fn a_refresh_token_that_no_longer_renews_pauses_the_watch_and_no_token_is_ever_shown() {
    let sink = argus_testkit::logs::capture();

    let env = Env::sqlite().await;
    let Some((server, user, room)) = user_with_room("refused_refresh", 1).await else { return };
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    let alice = analyst("dgsi");
    let request = watch_request(server.base_url(), &login.access_token, &login.refresh_token, &room);
    let watch = watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    // Another client renews with the same refresh token and uses what it got: Synapse refuses
    // the refresh token from now on.
    let homeserver: HomeserverUrl = server.base_url().parse().unwrap_or_else(|e| panic!("{e}"));
    let elsewhere = TokenPair {
        expires_at: Some(OffsetDateTime::now_utc()),
        ..TokenPair::given(
            AccessToken::new(login.access_token.clone()),
            Some(Secret::new(login.refresh_token.clone())),
        )
    };
    let elsewhere = RefreshingTokens::new(connector(), homeserver.clone(), elsewhere, None, None);
    let session = Session::new(homeserver, elsewhere);
    connector().joined_rooms(&session).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(PAST_EXPIRY).await;

    let report =
        scheduler(Arc::clone(&env.services), "replica-a").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.paused), (1, 1), "{report:?}");
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    let reason = listed[0].status_reason.clone().unwrap_or_default();
    assert_eq!(listed[0].status, WatchStatus::Paused);
    assert!(reason.starts_with("TOKEN_REFRESH_FAILED:"), "{reason}");
    let stored = stored_credentials(&env, &watch).await;
    let shown = [
        reason,
        listed[0].last_error.clone().unwrap_or_default(),
        format!("{listed:?} {stored:?} {:?}", stored.pair()),
        format!("{:?}", env.trail(&alice).await),
        sink.text(),
    ];
    for text in shown {
        assert!(!text.contains(&login.access_token) && !text.contains(&login.refresh_token), "{text}");
    }
}
