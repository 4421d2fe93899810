//! Argus Tchap connector: Diesel storage (SQLite, PostgreSQL) and hash-chained audit trail.
