//! Spool-backed publishing, the one path for messages that must not be lost
//! (dk-webhook's commits, dk-reprepro's packages): every message is written to
//! the spool (fsynced) first, and one drainer task sends the spool to the
//! broker whenever there is something new, after every (re)connect, and on a
//! retry timer after a failure. A broker that is down therefore costs nothing
//! but delay.

use crate::message::Outgoing;
use crate::spool::Spool;
use crate::stomp::{Client, State};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// How long the drainer waits after a failed drain before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// The spool and its drainer.
#[derive(Debug, Clone)]
pub struct Outbox {
    spool: Spool,
    wake: Arc<Notify>,
    rounds: watch::Receiver<u64>,
}

impl Outbox {
    /// Starts the drainer over `spool` (draining what an earlier run left there first).
    pub fn start(spool: Spool, client: Client) -> (Outbox, JoinHandle<()>) {
        let wake = Arc::new(Notify::new());
        let (rounds_tx, rounds) = watch::channel(0u64);
        let task = tokio::spawn(drainer(spool.clone(), client, wake.clone(), rounds_tx));
        (Outbox { spool, wake, rounds }, task)
    }

    /// Spools messages (in order) and wakes the drainer; returns their files.
    pub fn push(&self, messages: &[(String, Outgoing)]) -> std::io::Result<Vec<PathBuf>> {
        let mut paths = Vec::with_capacity(messages.len());
        for (dest, out) in messages {
            paths.push(self.spool.push(dest, &out.headers, &out.body)?);
        }
        self.wake.notify_one();
        Ok(paths)
    }

    /// Waits until every file is delivered (gone from the spool), at most `wait`; true if delivered.
    pub async fn delivered(&self, paths: &[PathBuf], wait: Duration) -> bool {
        let mut rounds = self.rounds.clone();
        let gone = || paths.iter().all(|p| !p.exists());
        tokio::time::timeout(wait, async {
            loop {
                rounds.borrow_and_update();
                if gone() {
                    return true;
                }
                if rounds.changed().await.is_err() {
                    return gone();
                }
            }
        })
        .await
        .unwrap_or_else(|_| gone())
    }

    /// Messages waiting in the spool.
    pub fn pending(&self) -> usize {
        self.spool.pending().map(|p| p.len()).unwrap_or(0)
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}

/// Drains whenever woken, after each (re)connect, and after `RETRY` when a drain failed.
async fn drainer(spool: Spool, client: Client, wake: Arc<Notify>, rounds: watch::Sender<u64>) {
    let mut state = client.watch_state();
    loop {
        // Wait until connected (and subscribed): sends on a connecting client would only time out.
        loop {
            match *state.borrow_and_update() {
                State::Ready(_) => break,
                State::Closed => {
                    tracing::error!("broker connection closed for good; spooled messages stay in {}", spool.dir().display());
                    return;
                }
                State::Connecting => {}
            }
            if state.changed().await.is_err() {
                return;
            }
        }
        let failed = match spool.drain(&client).await {
            Ok(0) => false,
            Ok(n) => {
                tracing::info!(sent = n, "spooled messages delivered");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivering spooled messages failed; retrying");
                true
            }
        };
        rounds.send_modify(|r| *r += 1);
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = state.changed() => {}
            _ = retry => {}
        }
    }
}
