//! Argus Tchap connector: the application services shared by the GraphQL API, the operator
//! CLI and the server's scheduler.
//!
//! - [`ingest::ingest_room`]: one run, streamed: the connector's batches of pages are committed
//!   as they arrive with the room's pagination positions, so memory is bounded whatever the
//!   room's size and a run stopped anywhere resumes where it stopped. One audit record per run.
//! - [`watch`]: watched rooms, their tokens sealed at rest ([`TokenKeys`]); [`scheduler`]
//!   keeps them current, sharing the due ones among server replicas through leases.
//! - [`post::post_note`]: a note posted into an archived room behind the write-down guard,
//!   sent or refused, audited in the chain like a run ([`Services::post_policy`]).
//! - [`media`]: the files of stored messages fetched after each run, checked, held in the
//!   blob store and scanned; a worker retries and scans what is left ([`Media`]).
//! - [`Services`]: the store, the connector, admission, caps and counters, built once; its
//!   [`NewMessages`] signal is raised after every commit that stored messages.
//!
//! Wherever a homeserver URL is asked for, an account (a Matrix user id or an e-mail address)
//! may be given instead: it is resolved to its homeserver by server discovery and the token
//! confirmed to be the account's before anything is read or stored; the homeserver found is
//! what the call records.
//!
//! No HTTP or GraphQL here: the API layers wrap [`Error`] and pass on its stable code and
//! public message.

mod account;
mod admission;
mod audit;
mod error;
pub mod ingest;
pub mod live;
pub mod media;
mod new_messages;
pub mod post;
pub mod scheduler;
mod services;
pub mod token_keys;
pub mod watch;

pub use admission::{Admission, AdmissionLimits, Admitted};
pub use error::{Error, Result};
pub use media::{Media, MediaReport, MediaSettings};
pub use new_messages::{NewMessages, NewMessagesWaiter};
pub use services::{Limits, Metrics, Services, WatchLimits};
pub use token_keys::{Credentials, TokenKey, TokenKeys};
