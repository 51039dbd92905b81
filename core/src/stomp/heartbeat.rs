//! heartbeat (in progress)
