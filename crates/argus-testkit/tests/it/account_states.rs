//! What the real Synapse answers an account an admin expired, locked or suspended, and that each
//! state is undone: the answers the connector maps to its errors.

use argus_testkit::synapse::{self, Answer, TestUser};
use reqwest::Method;
use serde_json::json;

async fn whoami(user: &TestUser) -> Answer {
    user.probe(Method::GET, &["account", "whoami"], None).await.unwrap_or_else(|e| panic!("{e:#}"))
}

async fn send(user: &TestUser, room: &str, txn: &str) -> Answer {
    let body = json!({ "msgtype": "m.text", "body": "probe" });
    user.probe(Method::PUT, &["rooms", room, "send", "m.room.message", txn], Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn read(user: &TestUser, room: &str) -> Answer {
    user.probe(Method::GET, &["rooms", room, "messages"], None).await.unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn an_expired_account_is_refused_until_renewed() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let admin = server.register_admin("validity_admin").await.unwrap();
    let user = server.register("expiring").await.unwrap();
    let room = user.create_room(None, None, false).await.unwrap();
    assert_eq!(whoami(&user).await.status, 200);

    admin.expire_account(&user.user_id).await.unwrap();
    let refused = read(&user, &room).await;
    assert_eq!((refused.status, refused.errcode()), (403, Some("ORG_MATRIX_EXPIRED_ACCOUNT")), "{refused:?}");
    // Every endpoint, not only reads: whoami too.
    let refused = whoami(&user).await;
    assert_eq!((refused.status, refused.errcode()), (403, Some("ORG_MATRIX_EXPIRED_ACCOUNT")), "{refused:?}");

    admin.renew_account(&user.user_id).await.unwrap();
    assert_eq!(read(&user, &room).await.status, 200);
}

#[tokio::test]
async fn a_locked_account_is_refused_as_a_soft_logout_until_unlocked() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let admin = server.register_admin("lock_admin").await.unwrap();
    let user = server.register("locked").await.unwrap();
    let room = user.create_room(None, None, false).await.unwrap();

    admin.set_account_locked(&user.user_id, true).await.unwrap();
    let refused = read(&user, &room).await;
    assert_eq!(
        (refused.status, refused.errcode(), refused.soft_logout()),
        (401, Some("M_USER_LOCKED"), true)
    );

    admin.set_account_locked(&user.user_id, false).await.unwrap();
    assert_eq!(read(&user, &room).await.status, 200);
}

#[tokio::test]
async fn a_suspended_account_reads_but_may_not_send_until_reinstated() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let admin = server.register_admin("suspend_admin").await.unwrap();
    let user = server.register("suspended").await.unwrap();
    let room = user.create_room(None, None, false).await.unwrap();

    admin.set_account_suspended(&user.user_id, true).await.unwrap();
    assert_eq!(read(&user, &room).await.status, 200);
    assert_eq!(whoami(&user).await.status, 200);
    let refused = send(&user, &room, "t1").await;
    assert_eq!((refused.status, refused.errcode()), (403, Some("M_USER_SUSPENDED")), "{refused:?}");

    admin.set_account_suspended(&user.user_id, false).await.unwrap();
    assert_eq!(send(&user, &room, "t2").await.status, 200);
}
