//! Argus Tchap connector: the application services shared by the GraphQL API, the operator
//! CLI and the server's scheduler.
//!
//! - [`ingest::ingest_room`]: one run, streamed: the connector's batches of pages are committed
//!   as they arrive with the room's pagination positions, so memory is bounded whatever the
//!   room's size and a run stopped anywhere resumes where it stopped. One audit record per run.
//! - [`Services`]: the store, the connector, admission, caps and counters, built once.
//!
//! No HTTP or GraphQL here: the API layers map [`Error`] to their own errors.

mod admission;
mod error;
pub mod ingest;
mod services;
pub mod token_keys;

pub use admission::{Admission, AdmissionLimits, Admitted};
pub use error::{Error, Result};
pub use services::{Limits, Metrics, Services};
pub use token_keys::{TokenKey, TokenKeys};
