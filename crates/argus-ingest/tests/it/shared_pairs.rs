//! One account's refresh-token pair shared by its watches: kept once per account session (a
//! credential row the watches refer to), renewed once per expiry by whichever renewer takes the
//! account's renewal lease, on the real Synapse (refreshable tokens live 4 s there) and on the
//! mock auth server (each refresh token's uses counted); a renewal racing `keys rotate` swaps
//! again over the re-sealed pair instead of pausing; a watch by account whose access token
//! expired is confirmed through the renewing source.

use std::{sync::Arc, time::Duration};

use argus_domain::{AccessToken, HomeserverUrl, Secret, WatchStatus};
use argus_ingest::{
    scheduler::{CycleReport, Scheduler, watch_tokens},
    token_keys::AccountBinding,
    watch::{WatchRequest, rotate_token_keys, watch_room, watches},
};
use argus_matrix::{RefreshingTokens, Session, TokenSource as _};
use argus_testkit::{homeserver::MATRIX_TOKEN, oauth::OAuthMock};
use time::OffsetDateTime;

use crate::{
    refresh::{
        CLIENT_ID, PAST_EXPIRY, mount_whoami, room_count, scheduler, stored_credentials, stored_with,
        user_with_room, watch_request,
    },
    support::{Env, analyst, backend_suite, connector, token_keys},
};

backend_suite!(
    two_watches_given_one_pair_keep_capturing_across_expiries_on_three_replicas,
    sources_renewing_at_once_on_synapse_use_each_refresh_token_once_and_the_kept_pair_works,
    a_renewal_racing_a_key_rotation_swaps_again_and_does_not_pause,
    a_watch_by_account_whose_token_expired_is_created_with_its_refresh_token,
    an_account_pair_under_a_key_this_replica_lacks_fails_the_run_without_pausing,
);

/// Who the stored pair's access token belongs to, asked with it as it is.
async fn whoami(homeserver: &HomeserverUrl, token: &AccessToken) -> String {
    let session = Session::with_token(homeserver.clone(), token.clone());
    connector().whoami(&session).await.unwrap_or_else(|e| panic!("{e}")).to_string()
}

async fn two_watches_given_one_pair_keep_capturing_across_expiries_on_three_replicas(env: Env) {
    let Some((server, user, first)) = user_with_room("shared_pair", 1).await else { return };
    let second = user.create_room(Some("second"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    user.send_text(&second, "before").await.unwrap_or_else(|e| panic!("{e:#}"));
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    let alice = analyst("dgsi");
    let rooms = [first, second];
    let mut watched = Vec::new();
    for room in &rooms {
        let request = watch_request(server.base_url(), &login.access_token, &login.refresh_token, room);
        watched.push(watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}")));
    }
    // One pair for the account, both watches referring to it.
    let mut shared = Vec::new();
    for watch in &watched {
        let id = watch.id;
        let credential = env.with_store(move |s| s.watch_credential(id)).await;
        shared.push(credential.unwrap_or_else(|| panic!("no credential")).id);
    }
    assert_eq!(shared[0], shared[1]);
    assert_eq!(env.with_store(|s| s.sealed_credentials()).await.len(), 1);
    let replicas: Vec<Scheduler> =
        ["replica-a", "replica-b", "replica-c"].map(|name| scheduler(env.replica(|_| {}), name)).into();
    let mut seen = vec![login.refresh_token.clone()];
    for round in 0..4_i64 {
        for room in &rooms {
            user.send_text(room, &format!("round {round}")).await.unwrap_or_else(|e| panic!("{e:#}"));
        }
        // Expired: both watches' runs need a renewal, once for the account.
        tokio::time::sleep(PAST_EXPIRY).await;
        let (a, b, c) = tokio::join!(replicas[0].cycle(), replicas[1].cycle(), replicas[2].cycle());
        let reports: Vec<CycleReport> =
            [a, b, c].into_iter().map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect();
        let total = |field: fn(&CycleReport) -> usize| reports.iter().map(field).sum::<usize>();
        assert_eq!(
            (total(|r| r.claimed), total(|r| r.succeeded), total(|r| r.paused)),
            (2, 2, 0),
            "round {round}: {reports:?}"
        );
        for room in &rooms {
            assert_eq!(room_count(&env, &alice, room).await, 2 + round, "round {round}");
        }
        let stored = stored_credentials(&env, &watched[0]).await;
        let refresh = stored.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()).unwrap_or_default();
        assert!(!seen.contains(&refresh), "round {round}: the pair was not renewed");
        seen.push(refresh);
    }
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 2);
    for watch in &listed {
        assert_eq!((watch.status, watch.last_error.as_deref()), (WatchStatus::Active, None), "{listed:?}");
    }
}

async fn sources_renewing_at_once_on_synapse_use_each_refresh_token_once_and_the_kept_pair_works(env: Env) {
    let Some((server, user, room)) = user_with_room("shared_renewals", 1).await else { return };
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    let alice = analyst("dgsi");
    let request = watch_request(server.base_url(), &login.access_token, &login.refresh_token, &room);
    watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    let homeserver: HomeserverUrl = server.base_url().parse().unwrap_or_else(|e| panic!("{e}"));
    let now = OffsetDateTime::now_utc();
    let lease = Duration::from_secs(60);
    let claimed = env.with_store(move |s| s.claim_due_watches(now, "replica-a", lease, 10)).await;
    // Four renewers (two of one replica, two of others), all refused at once, twice.
    let names = ["replica-a", "replica-a", "replica-b", "replica-c"];
    let mut sources = Vec::new();
    for name in names {
        let source =
            watch_tokens(&env.replica(|_| {}), name, &claimed[0]).await.unwrap_or_else(|e| panic!("{e}"));
        sources.push(source.unwrap_or_else(|| panic!("the watch holds a refresh token")));
    }
    let mut previous = login.access_token.clone();
    for round in 0..2 {
        tokio::time::sleep(PAST_EXPIRY).await;
        let refused = sources[0].pair().access_token;
        let renewals = futures::future::join_all(sources.iter().map(|s| s.renew(&refused))).await;
        assert!(renewals.iter().all(|r| matches!(r, Ok(true))), "round {round}: {renewals:?}");
        let pair = sources[0].pair();
        assert_ne!(pair.access_token.expose_secret(), previous, "round {round}");
        let tokens = |p: argus_matrix::TokenPair| (p.access_token, p.refresh_token);
        for source in &sources {
            assert_eq!(
                tokens(source.pair()),
                tokens(pair.clone()),
                "round {round}: one pair for every renewer"
            );
        }
        let stored = stored_credentials(&env, &claimed[0].watch).await;
        assert_eq!(tokens(stored.pair()), tokens(pair.clone()), "round {round}");
        // Kept and valid: a refresh token used twice would have left a dead pair behind.
        assert_eq!(whoami(&homeserver, &pair.access_token).await, user.user_id, "round {round}");
        previous = pair.access_token.expose_secret().to_owned();
    }
    // The stored refresh token was never used: it renews.
    tokio::time::sleep(PAST_EXPIRY).await;
    let stored = stored_credentials(&env, &claimed[0].watch).await;
    let fresh = RefreshingTokens::new(connector(), homeserver.clone(), stored.pair(), None, None);
    fresh.ensure_fresh().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(whoami(&homeserver, &fresh.pair().access_token).await, user.user_id);
}

async fn a_renewal_racing_a_key_rotation_swaps_again_and_does_not_pause(env: Env) {
    let auth = OAuthMock::mount(env.hs.server(), CLIENT_ID, 300).await;
    mount_whoami(&env, "@alice:tchap.test").await;
    let room = "!rotating:tchap.test";
    env.hs.room(room, 2);
    let alice = analyst("dgsi");
    let request = WatchRequest {
        oauth_client_id: Some(CLIENT_ID.into()),
        ..watch_request(&env.hs.uri(), MATRIX_TOKEN, OAuthMock::FIRST_REFRESH_TOKEN, room)
    };
    let watch = watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    let rotated = env.replica(|s| s.token_keys = Some(Arc::new(token_keys(&[43; 32], &[&[42; 32]]))));
    let (now, lease) = (OffsetDateTime::now_utc(), Duration::from_secs(60));
    let claimed = env.with_store(move |s| s.claim_due_watches(now, "replica-a", lease, 10)).await;
    // The renewer read the pair sealed under the first key; its renewal is held at the auth
    // server while the keys rotate.
    let source = watch_tokens(&rotated, "replica-a", &claimed[0]).await.unwrap_or_else(|e| panic!("{e}"));
    let source = source.unwrap_or_else(|| panic!("the watch holds a refresh token"));
    let refused = source.pair().access_token;
    auth.hold();
    let renewal = tokio::spawn(async move { (source.renew(&refused).await, source) });
    for _ in 0..500 {
        if auth.issued() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(auth.issued(), 1, "the renewal reached the auth server");
    let rotation = rotate_token_keys(&rotated).await.unwrap_or_else(|e| panic!("{e}"));
    auth.release();
    assert_eq!((rotation.resealed, rotation.accounts, rotation.unopened), (1, 1, 0), "{rotation:?}");
    let (renewed, source) = renewal.await.unwrap_or_else(|e| panic!("{e}"));
    // Not TOKEN_REFRESH_FAILED (which pauses the watch): the renewed pair is stored over the
    // re-sealed one.
    assert_eq!(renewed.ok(), Some(true));
    assert_eq!(source.pair().access_token.expose_secret(), auth.access_token());
    let stored = stored_with(&env, &rotated, &watch).await;
    assert_eq!(stored.access_token.expose_secret(), auth.access_token());
    assert_eq!(stored.refresh_token.map(|t| t.expose_secret().to_owned()), Some(auth.refresh_token()));
    let id = watch.id;
    let shared = env.with_store(move |s| s.watch_credential(id)).await.unwrap_or_else(|| panic!("none"));
    let keys = rotated.token_keys.as_ref().unwrap_or_else(|| panic!("keys"));
    assert_eq!(shared.token.key_id, keys.current_id(), "sealed under the new key");
    assert_eq!((auth.uses(OAuthMock::FIRST_REFRESH_TOKEN), auth.issued()), (1, 1));
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed[0].status, WatchStatus::Active);
}

async fn a_watch_by_account_whose_token_expired_is_created_with_its_refresh_token(env: Env) {
    let Some((server, user, room)) = user_with_room("acct_refresh", 2).await else { return };
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    tokio::time::sleep(PAST_EXPIRY).await;
    let alice = analyst("dgsi");
    let request = WatchRequest {
        homeserver_url: String::new(),
        account: Some(user.user_id.clone()),
        ..watch_request("", &login.access_token, &login.refresh_token, &room)
    };
    // The account is confirmed through the renewing source: the expired token is renewed first.
    let watch = watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    let homeserver: HomeserverUrl = server.base_url().parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(watch.homeserver_url, homeserver);
    let stored = stored_credentials(&env, &watch).await;
    assert_ne!(stored.access_token.expose_secret(), login.access_token);
    assert_ne!(stored.refresh_token.as_ref().map(Secret::expose_secret), Some(login.refresh_token.as_str()));
    let report =
        scheduler(Arc::clone(&env.services), "replica-a").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.succeeded, report.paused), (1, 0), "{report:?}");
    assert_eq!(room_count(&env, &alice, &room).await, 2);
}

async fn an_account_pair_under_a_key_this_replica_lacks_fails_the_run_without_pausing(env: Env) {
    let _auth = OAuthMock::mount(env.hs.server(), CLIENT_ID, 300).await;
    mount_whoami(&env, "@alice:tchap.test").await;
    let room = "!lacking:tchap.test";
    env.hs.room(room, 2);
    let alice = analyst("dgsi");
    let request = WatchRequest {
        oauth_client_id: Some(CLIENT_ID.into()),
        ..watch_request(&env.hs.uri(), MATRIX_TOKEN, OAuthMock::FIRST_REFRESH_TOKEN, room)
    };
    let watch = watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    // A replica that rotated first re-sealed the account's pair under a key this one lacks yet.
    let rotated = env.replica(|s| s.token_keys = Some(Arc::new(token_keys(&[43; 32], &[&[42; 32]]))));
    let id = watch.id;
    let shared = env.with_store(move |s| s.watch_credential(id)).await.unwrap_or_else(|| panic!("none"));
    let keys = rotated.token_keys.as_ref().unwrap_or_else(|| panic!("keys"));
    let binding = AccountBinding {
        org: &shared.org,
        owner: &shared.owner,
        homeserver_url: &shared.homeserver_url,
        user_id: &shared.user_id,
    };
    let resealed = keys.reseal_account(&shared.token, binding).unwrap_or_else(|e| panic!("{e}"));
    let resealed = resealed.unwrap_or_else(|| panic!("under the old key"));
    let (credential, old) = (shared.id, shared.token.clone());
    assert!(env.with_store(move |s| s.reseal_credential(credential, &old, &resealed)).await);
    let report =
        scheduler(Arc::clone(&env.services), "replica-old").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.failed, report.paused), (1, 1, 0), "{report:?}");
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed[0].status, WatchStatus::Active);
    assert!(listed[0].last_error.as_deref().is_some_and(|e| e.contains("tried again")), "{listed:?}");
    // A replica holding the key runs it when it is due again (its interval is a second).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = scheduler(rotated, "replica-new").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.succeeded, report.paused), (1, 1, 0), "{report:?}");
}
