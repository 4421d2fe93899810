//! Peak memory of a read of 100k events.

fn main() {}
