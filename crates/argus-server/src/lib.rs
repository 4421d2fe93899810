//! Argus Tchap connector: actix-web server, configuration and bearer-token authentication.
//!
//! - [`config`]: typed configuration (defaults < `argus-tchap.toml` < `ARGUS_*` environment);
//! - [`auth`]: bearer-JWT validation into an [`argus_domain::Viewer`], development tokens.

pub mod auth;
pub mod config;
mod error;

pub use config::Config;
pub use error::{Error, Result};
