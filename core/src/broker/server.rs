//! The accept loop, graceful shutdown, and the state every session shares.

use super::config::BrokerConfig;
use super::router::Router;
use super::session;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long a graceful shutdown lets sessions flush before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the accept loop, the sessions and the handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Destinations and subscriptions.
    pub router: Router,
    /// The settings the broker was started with.
    pub config: BrokerConfig,
    /// Cancelled once, when the broker shuts down gracefully.
    pub shutdown: CancellationToken,
    /// Cancelled (and replaced) by `kick_all`; every session holds a child of the current one.
    kick: Mutex<CancellationToken>,
    next_session: AtomicU64,
    /// Open connections, for the connection caps.
    counts: Mutex<Counts>,
    /// Connections closed at once because a cap was reached.
    refused: AtomicU64,
}

/// Open connections: in total, not yet logged in, and per source address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    pending: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
    pending: bool,
}

impl Slot {
    /// The connection has logged in: it no longer counts as pending.
    pub fn logged_in(&mut self) {
        if std::mem::take(&mut self.pending) {
            let mut c = self.shared.counts();
            c.pending = c.pending.saturating_sub(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.shared.counts();
        c.total = c.total.saturating_sub(1);
        if self.pending {
            c.pending = c.pending.saturating_sub(1);
        }
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    /// Fresh shared state for `config`.
    pub fn new(config: BrokerConfig) -> Arc<Shared> {
        Arc::new(Shared {
            router: Router::new(&config),
            config,
            shutdown: CancellationToken::new(),
            kick: Mutex::new(CancellationToken::new()),
            next_session: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
            refused: AtomicU64::new(0),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection slot for a peer at `ip`, or says which cap is reached.
    pub fn admit(self: &Arc<Shared>, ip: IpAddr) -> Result<Slot, &'static str> {
        let ip = ip.to_canonical();
        let mut c = self.counts();
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        let full = if c.total >= self.config.max_connections {
            Some("too many connections")
        } else if c.pending >= self.config.max_pending_connections {
            Some("too many connections waiting to log in")
        } else if from_ip >= self.config.max_connections_per_ip && (self.config.per_ip_cap_on_loopback || !ip.is_loopback()) {
            Some("too many connections from this address")
        } else {
            None
        };
        if let Some(why) = full {
            drop(c);
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                warn!(%ip, refused_total = n, why, "connection refused: a connection cap is reached");
            }
            return Err(why);
        }
        c.total += 1;
        c.pending += 1;
        *c.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Slot { shared: self.clone(), ip, pending: true })
    }

    /// Connections open, of which not logged in yet, and refused so far.
    pub fn connection_counts(&self) -> (usize, usize, u64) {
        let c = self.counts();
        (c.total, c.pending, self.refused.load(Ordering::Relaxed))
    }

    /// The token new sessions derive their kill switch from.
    pub fn kick_token(&self) -> CancellationToken {
        self.kick.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops every current connection at once, without ERROR frames; new ones are accepted.
    pub fn kick_all(&self) {
        let old = std::mem::take(&mut *self.kick.lock().unwrap_or_else(|e| e.into_inner()));
        old.cancel();
    }
}

/// Closes a socket refused by a connection cap, after one non-blocking try to tell the peer why.
fn refuse(socket: tokio::net::TcpStream, why: &str) {
    let frame = format!("ERROR\nmessage:{why}\ncontent-length:0\n\n\0");
    let _ = socket.try_write(frame.as_bytes());
    drop(socket);
}

/// Binds a listener with `SO_REUSEADDR`, so a broker can be restarted on the port it just left.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Runs a broker on `listener` until `shutdown` completes, then closes every session gracefully.
///
/// This is the entry point for binaries (mini-redis style); tests and demos
/// usually prefer [`Broker::start`](super::Broker::start). `config.listen` is
/// not used: the listener is already bound (see [`bind`]).
pub async fn serve(listener: TcpListener, config: BrokerConfig, shutdown: impl Future) -> io::Result<()> {
    run(listener, Shared::new(config), shutdown).await
}

/// The accept loop behind [`serve`] and [`Broker::start`](super::Broker::start).
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future) -> io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "broker listening");
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => match shared.admit(peer.ip()) {
                    Ok(slot) => {
                        let id = shared.next_session.fetch_add(1, Ordering::Relaxed) + 1;
                        debug!(session = id, %peer, "accepted");
                        sessions.spawn(session::run(socket, peer, id, shared.clone(), slot));
                    }
                    Err(why) => refuse(socket, why),
                },
                Err(e) => {
                    // Per-connection failures (reset before accept) and resource
                    // exhaustion (EMFILE) alike: log, breathe, go on.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        error!(error = %e, "session task panicked");
                    }
                }
            }
        }
    }
    drop(listener);
    info!(%addr, sessions = sessions.len(), "broker shutting down");
    shared.shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while sessions.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(left = sessions.len(), "sessions did not close in time; aborting them");
        sessions.shutdown().await;
    }
    info!(%addr, "broker stopped");
    Ok(())
}

/// Runs [`serve`] on the shared daemon lifecycle ([`crate::daemon`]). The broker
/// has no reloadable configuration: a reload is refused with what to do instead.
pub fn spawn(listener: TcpListener, config: BrokerConfig) -> crate::daemon::Daemon<(), ()> {
    crate::daemon::Daemon::spawn("dk-broker", move |mut ctx| async move {
        let cancel = ctx.cancel.clone();
        let serving = serve(listener, config, cancel.clone().cancelled_owned());
        tokio::pin!(serving);
        loop {
            tokio::select! {
                done = &mut serving => {
                    return match done {
                        Ok(()) if cancel.is_cancelled() => crate::daemon::Ended::Shutdown,
                        Ok(()) => crate::daemon::Ended::Failed("the listener closed".into()),
                        Err(e) => crate::daemon::Ended::Failed(format!("accepting connections: {e}")),
                    };
                }
                r = ctx.next_reload() => r.answer(Err(crate::daemon::ReloadError::Refused("dk-broker reads its settings at start only; restart it to apply changes".into()))),
            }
        }
    })
}
