//! dk-demo (in progress)
fn main() {}
