//! dk-stomp (in progress)
fn main() {}
