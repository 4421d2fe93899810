//! Argus Tchap connector: actix-web server, configuration and bearer-token authentication.
//!
//! - [`config`]: typed configuration (defaults < `argus-tchap.toml` < `ARGUS_*` environment);
//! - [`auth`]: bearer-JWT validation into an [`argus_domain::Viewer`], development tokens;
//! - [`app`]: the actix-web application (`/graphql`, `/graphiql`, `/healthz`, `/readyz`,
//!   `/metrics`, `/media/{id}`, `/packages/{id}`), [`run`] for the binary and [`spawn`] for tests, the fusion relay task;
//! - [`subscriptions`]: GraphQL over WebSocket (`graphql-transport-ws`) on `GET /graphql`
//!   upgraded: the subscriptions, the token in `connection_init`, the connection ended at the
//!   token's expiry;
//! - [`services`]: the services assembled from a configuration, for the server and every
//!   operator command.

pub mod app;
pub mod auth;
pub mod config;
mod error;
mod graphiql;
pub mod media;
pub mod metrics;
pub mod packages;
pub mod services;
pub mod subscriptions;

pub use app::{RunningServer, run, spawn, spawn_built};
pub use config::Config;
pub use error::{Error, Result};
pub use media::BlobSource;
