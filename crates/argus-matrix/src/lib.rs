//! Argus Tchap connector: Ruma-based Matrix Client-Server API reader.
