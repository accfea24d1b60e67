//! xenstored for Linux (placeholder: being written).
fn main() {}
