# Mirrors CI; the README commands work without just.

# Format, lint, document and test, as CI does: the PostgreSQL, Synapse, clamd and S3 tiers must run (a
# missing one fails instead of skipping, so a green run here hides nothing).
check:
    cargo fmt --all -- --check
    ARGUS_REQUIRE_POSTGRES=1 ARGUS_REQUIRE_SYNAPSE=1 ARGUS_REQUIRE_CLAMD=1 ARGUS_REQUIRE_S3=1 cargo test --workspace
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --workspace --all-targets --all-features -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

# Run the server on embedded SQLite.
serve:
    cargo run -p argus-tchap -- serve

# Run every benchmark (the bench entry points of argus-matrix are behind its `bench` feature).
bench:
    cargo bench --workspace --all-features
