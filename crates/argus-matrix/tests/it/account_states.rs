//! Account states on the real Synapse: an account an admin expired, locked or suspended is told
//! apart from a refused token, each with its own error and code, never with the token in it.
//! A locked account (answered 401 with `soft_logout`) is not taken for a token to renew.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use argus_domain::{AccessToken, HomeserverUrl, RoomId};
use argus_matrix::{Connector, ConnectorConfig, Error, FetchOptions, OutgoingNote, Session, TokenSource};
use argus_testkit::synapse::{Synapse, TestUser, synapse};
use futures::future::BoxFuture;

/// A token source that would renew (to the same token) every time it is asked, counting how
/// often it was: a refusal the transport takes for a refused token asks it.
struct CountingRenewals {
    token: AccessToken,
    asked: AtomicUsize,
}

impl TokenSource for CountingRenewals {
    fn access_token(&self) -> AccessToken {
        self.token.clone()
    }

    fn renew<'a>(&'a self, _refused: &'a AccessToken) -> BoxFuture<'a, argus_matrix::Result<bool>> {
        Box::pin(async move {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        })
    }
}

struct Harness {
    server: &'static Synapse,
    connector: Connector,
    homeserver: HomeserverUrl,
    admin: TestUser,
}

async fn harness() -> Option<Harness> {
    let server = synapse()?;
    let config =
        ConnectorConfig { allow_private_addresses: vec!["127.0.0.1".into()], ..ConnectorConfig::default() };
    let connector = Connector::new(config).unwrap_or_else(|e| panic!("connector: {e}"));
    let homeserver = server.base_url().parse().unwrap_or_else(|e| panic!("homeserver URL: {e}"));
    let admin = server.register_admin("states_admin").await.unwrap_or_else(|e| panic!("{e:#}"));
    Some(Harness { server, connector, homeserver, admin })
}

impl Harness {
    /// A new account with a room holding one message.
    async fn account(&self, name: &str) -> (TestUser, RoomId) {
        let user = self.server.register(name).await.unwrap_or_else(|e| panic!("{e:#}"));
        let room = user.create_room(Some("states"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
        user.send_text(&room, "before").await.unwrap_or_else(|e| panic!("{e:#}"));
        (user, room.parse().unwrap_or_else(|e| panic!("{e}")))
    }

    fn session(&self, user: &TestUser) -> Session {
        Session::with_token(self.homeserver.clone(), AccessToken::new(user.access_token.clone()))
    }

    async fn fetch(&self, session: &Session, room: &RoomId) -> argus_matrix::Result<usize> {
        let options = FetchOptions { max_messages: 100, since: None, ..FetchOptions::default() };
        self.connector.fetch_room(session, room, &options).await.map(|snapshot| snapshot.messages.len())
    }

    async fn post(&self, session: &Session, room: &RoomId, txn: &str) -> argus_matrix::Result<()> {
        let note = OutgoingNote { body: "a note".into(), html: None, reply_to: None, thread_root: None };
        self.connector.post_note(session, room, txn, &note).await.map(drop)
    }
}

/// The error's code, and that neither its message nor its `Debug` holds the token.
fn code_of(error: &Error, user: &TestUser) -> &'static str {
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(&user.access_token), "the token leaked: {shown}");
    }
    assert!(!error.is_retryable(), "{error}");
    error.code()
}

#[tokio::test]
async fn an_expired_account_is_account_expired_until_its_validity_is_renewed() {
    let Some(h) = harness().await else { return };
    let (user, room) = h.account("expired").await;
    let session = h.session(&user);
    assert_eq!(h.fetch(&session, &room).await.unwrap_or_else(|e| panic!("{e}")), 1);

    h.admin.expire_account(&user.user_id).await.unwrap_or_else(|e| panic!("{e:#}"));
    let error = h.fetch(&session, &room).await.expect_err("an expired account reads");
    assert!(matches!(error, Error::AccountExpired), "{error:?}");
    assert_eq!(code_of(&error, &user), "ACCOUNT_EXPIRED");
    assert!(error.to_string().contains("ORG_MATRIX_EXPIRED_ACCOUNT"), "{error}");
    let error = h.connector.joined_rooms(&session).await.expect_err("an expired account lists its rooms");
    assert_eq!(code_of(&error, &user), "ACCOUNT_EXPIRED");
    let error = h.post(&session, &room, "expired-1").await.expect_err("an expired account posts");
    assert_eq!(code_of(&error, &user), "ACCOUNT_EXPIRED");

    h.admin.renew_account(&user.user_id).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(h.fetch(&session, &room).await.unwrap_or_else(|e| panic!("{e}")), 1);
}

#[tokio::test]
async fn a_locked_account_is_account_locked_and_no_token_renewal_is_tried() {
    let Some(h) = harness().await else { return };
    let (user, room) = h.account("locked").await;
    let source = Arc::new(CountingRenewals {
        token: AccessToken::new(user.access_token.clone()),
        asked: AtomicUsize::new(0),
    });
    let session = Session::new(h.homeserver.clone(), Arc::clone(&source));

    h.admin.set_account_locked(&user.user_id, true).await.unwrap_or_else(|e| panic!("{e:#}"));
    let error = h.fetch(&session, &room).await.expect_err("a locked account reads");
    assert!(matches!(error, Error::AccountLocked), "{error:?}");
    assert_eq!(code_of(&error, &user), "ACCOUNT_LOCKED");
    assert!(error.to_string().contains("M_USER_LOCKED"), "{error}");
    let error = h.post(&session, &room, "locked-1").await.expect_err("a locked account posts");
    assert_eq!(code_of(&error, &user), "ACCOUNT_LOCKED");
    // Synapse said `soft_logout: true`, yet the lock is no refused token: no renewal was asked.
    assert_eq!(source.asked.load(Ordering::SeqCst), 0);

    h.admin.set_account_locked(&user.user_id, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(h.fetch(&session, &room).await.unwrap_or_else(|e| panic!("{e}")), 1);
}

#[tokio::test]
async fn a_suspended_account_reads_and_its_post_is_account_suspended() {
    let Some(h) = harness().await else { return };
    let (user, room) = h.account("suspended").await;
    let session = h.session(&user);

    h.admin.set_account_suspended(&user.user_id, true).await.unwrap_or_else(|e| panic!("{e:#}"));
    // Reads go on: the message sent before the suspension is read.
    assert_eq!(h.fetch(&session, &room).await.unwrap_or_else(|e| panic!("{e}")), 1);
    let error = h.post(&session, &room, "suspended-1").await.expect_err("a suspended account posts");
    assert!(matches!(error, Error::AccountSuspended), "{error:?}");
    assert_eq!(code_of(&error, &user), "ACCOUNT_SUSPENDED");
    assert!(error.to_string().contains("M_USER_SUSPENDED"), "{error}");

    h.admin.set_account_suspended(&user.user_id, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    h.post(&session, &room, "suspended-2").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.fetch(&session, &room).await.unwrap_or_else(|e| panic!("{e}")), 2);
}
