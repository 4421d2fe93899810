//! The `argus-tchap` command line as a library: [`cli`] says what the commands and options
//! are, [`commands`] runs them on the services assembled from the configuration
//! ([`argus_server::services`]); `main.rs` only parses and dispatches.

pub mod cli;
pub mod commands;
