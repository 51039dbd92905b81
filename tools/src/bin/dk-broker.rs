//! dk-broker (in progress)
fn main() {}
