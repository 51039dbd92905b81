//! Publish and receive one message on an embedded broker (in progress).
fn main() {}
