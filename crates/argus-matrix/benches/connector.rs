//! Connector throughput against a raw page loop.

fn main() {}
