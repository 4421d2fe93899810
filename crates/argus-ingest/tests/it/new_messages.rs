//! The signal readers of new messages wait on: raised by every batch that stored messages, not
//! by a run that stored nothing.

use std::time::Duration;

use argus_ingest::ingest::Reach;

use crate::support::{Env, analyst, backend_suite};

backend_suite!(a_commit_that_stored_messages_wakes_the_readers);

async fn a_commit_that_stored_messages_wakes_the_readers(env: Env) {
    let room = "!signal:tchap.test";
    env.hs.room(room, 25);
    let alice = analyst("dgsi");
    let mut waiter = env.services.new_messages.waiter();
    let quickly = Duration::from_millis(100);
    assert!(tokio::time::timeout(quickly, waiter.committed()).await.is_err());

    let first = env.ingest(&alice, room, 100, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.messages_stored, 25);
    tokio::time::timeout(quickly, waiter.committed()).await.unwrap_or_else(|_| panic!("not woken"));

    // Nothing new: the readers are left alone.
    let again = env.ingest(&alice, room, 100, Reach::Current).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.messages_stored, 0);
    assert!(tokio::time::timeout(quickly, waiter.committed()).await.is_err(), "woken by an empty run");
}
