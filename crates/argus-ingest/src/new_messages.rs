//! The signal that new messages were committed: readers of new messages (the GraphQL
//! subscriptions) wait on it instead of polling the store in a tight loop.
//!
//! It is local to a process: commits made by another replica do not raise it, so a reader also
//! looks at the store on a short interval of its own.

use tokio::sync::watch;

/// Raised after every commit that stored messages ([`crate::ingest`]'s batches, whatever runs
/// them: a call, the scheduler, an account's loop). Every waiter wakes, however many there are;
/// a waiter that was busy when it was raised finds it raised when it next waits.
#[derive(Debug)]
pub struct NewMessages {
    sender: watch::Sender<u64>,
}

impl Default for NewMessages {
    fn default() -> Self {
        Self { sender: watch::Sender::new(0) }
    }
}

impl NewMessages {
    /// Tells every waiter that messages were committed.
    pub fn notify(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A waiter, woken by the notifications raised after this call.
    pub fn waiter(&self) -> NewMessagesWaiter {
        NewMessagesWaiter { receiver: self.sender.subscribe() }
    }
}

/// One reader's view of [`NewMessages`].
#[derive(Debug)]
pub struct NewMessagesWaiter {
    receiver: watch::Receiver<u64>,
}

impl NewMessagesWaiter {
    /// Returns once messages were committed since this waiter was made or last returned (at
    /// once when they were meanwhile).
    pub async fn committed(&mut self) {
        if self.receiver.changed().await.is_err() {
            // The services are gone: nothing will be committed through them any more.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::NewMessages;

    #[tokio::test]
    async fn every_waiter_wakes_once_per_notification_given_while_it_was_busy_or_waiting() {
        let signal = NewMessages::default();
        let (mut a, mut b) = (signal.waiter(), signal.waiter());
        let quickly = Duration::from_millis(50);
        assert!(tokio::time::timeout(quickly, a.committed()).await.is_err(), "nothing committed yet");
        signal.notify();
        signal.notify();
        tokio::time::timeout(quickly, a.committed()).await.unwrap_or_else(|_| panic!("a was not woken"));
        tokio::time::timeout(quickly, b.committed()).await.unwrap_or_else(|_| panic!("b was not woken"));
        assert!(tokio::time::timeout(quickly, a.committed()).await.is_err(), "woken twice for one burst");
    }
}
