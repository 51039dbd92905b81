//! The embedded single-node STOMP broker (stub until the broker module lands).
