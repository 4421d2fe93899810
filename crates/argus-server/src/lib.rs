//! Argus Tchap connector: actix-web server, configuration and bearer-token authentication.
