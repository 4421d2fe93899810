# Mirrors CI; the README commands work without just.

# Format, lint and test, as CI does.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace

# Run the server on embedded SQLite.
serve:
    cargo run -p argus-tchap -- serve

# Run every benchmark.
bench:
    cargo bench --workspace
