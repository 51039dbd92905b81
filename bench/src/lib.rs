//! Nothing here: see benches/.
