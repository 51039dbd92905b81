//! An in-test TCP proxy with fault controls, for the fault-injection tests.
//!
//! `Proxy::start(upstream)` listens on `127.0.0.1:0` and forwards every accepted
//! connection to `upstream`. Controls:
//!
//! - [`Proxy::blackhole`]: stop forwarding in both directions while keeping both
//!   sockets open. Bytes still read from either side are discarded, and an EOF
//!   from one side is *not* passed on: each peer sees silence, as over a dead
//!   network path. `blackhole(false)` resumes forwarding on surviving connections.
//! - [`Proxy::kill_all`]: drop every proxied connection (both sockets).
//! - [`Proxy::with_idle_timeout`]: a connection over which no byte was
//!   *forwarded* in either direction for `T` is closed, as a stateful firewall
//!   does (discarded, blackholed bytes do not count as traffic).
//! - Counters: connections accepted, connections killed (idle or `kill_all`),
//!   connections open, and the time of the last kill.
//!
//! Pure tokio, bounded (at most [`MAX_CONNECTIONS`] open connections, fixed
//! buffers), and every task stops when the `Proxy` is dropped.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, Instant};

/// Most connections open at once; further ones are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;

/// Bytes read per direction per read call.
const BUF: usize = 16 * 1024;

/// State shared between the handle, the accept loop and the connection tasks.
struct Inner {
    upstream: SocketAddr,
    idle_timeout: Option<Duration>,
    blackhole: AtomicBool,
    /// Bumped by `kill_all`; every connection task watches it.
    kill: watch::Sender<u64>,
    accepted: AtomicU64,
    idle_kills: AtomicU64,
    kills: AtomicU64,
    open: AtomicUsize,
    last_kill: Mutex<Option<Instant>>,
}

impl Inner {
    fn record_kill(&self, idle: bool) {
        if idle {
            self.idle_kills.fetch_add(1, Ordering::SeqCst);
        }
        self.kills.fetch_add(1, Ordering::SeqCst);
        *self.last_kill.lock().unwrap() = Some(Instant::now());
    }
}

/// A running proxy; dropping it stops the listener and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

/// Builder for a [`Proxy`].
pub struct ProxyBuilder {
    upstream: SocketAddr,
    idle_timeout: Option<Duration>,
}

impl ProxyBuilder {
    /// Closes connections over which nothing was forwarded, either way, for `t`.
    pub fn with_idle_timeout(mut self, t: Duration) -> ProxyBuilder {
        self.idle_timeout = Some(t);
        self
    }

    /// Binds `127.0.0.1:0` and starts accepting.
    pub async fn start(self) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (kill, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            upstream: self.upstream,
            idle_timeout: self.idle_timeout,
            blackhole: AtomicBool::new(false),
            kill,
            accepted: AtomicU64::new(0),
            idle_kills: AtomicU64::new(0),
            kills: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            last_kill: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(Proxy { addr, inner, task })
    }
}

impl Proxy {
    /// A builder forwarding to `upstream`.
    pub fn builder(upstream: SocketAddr) -> ProxyBuilder {
        ProxyBuilder { upstream, idle_timeout: None }
    }

    /// Starts a plain proxy (no idle killer) forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        Proxy::builder(upstream).start().await
    }

    /// Starts a proxy that closes connections idle for `t`.
    pub async fn with_idle_timeout(upstream: SocketAddr, t: Duration) -> std::io::Result<Proxy> {
        Proxy::builder(upstream).with_idle_timeout(t).start().await
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `stomp://127.0.0.1:PORT` for this proxy.
    pub fn stomp_url(&self) -> String {
        format!("stomp://{}", self.addr)
    }

    /// Stops (true) or resumes (false) forwarding, keeping connections open.
    pub fn blackhole(&self, on: bool) {
        self.inner.blackhole.store(on, Ordering::SeqCst);
    }

    /// Whether the proxy is blackholing.
    pub fn is_blackholed(&self) -> bool {
        self.inner.blackhole.load(Ordering::SeqCst)
    }

    /// Drops every proxied connection now.
    pub fn kill_all(&self) {
        self.inner.kill.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed by the idle killer.
    pub fn idle_kills(&self) -> u64 {
        self.inner.idle_kills.load(Ordering::SeqCst)
    }

    /// Connections closed by the idle killer or `kill_all`.
    pub fn kills(&self) -> u64 {
        self.inner.kills.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// When the proxy last killed a connection (idle or `kill_all`).
    pub fn last_kill(&self) -> Option<Instant> {
        *self.inner.last_kill.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // E.g. out of file descriptors: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if inner.open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    drop(client);
                    continue;
                }
                inner.accepted.fetch_add(1, Ordering::SeqCst);
                inner.open.fetch_add(1, Ordering::SeqCst);
                let inner = inner.clone();
                conns.spawn(async move {
                    let guard = OpenGuard(inner.clone());
                    serve(client, inner).await;
                    drop(guard);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Decrements the open-connection count however the task ends (including abort).
struct OpenGuard(Arc<Inner>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Pumps one connection until either side closes, a kill, or the idle timeout.
async fn serve(client: TcpStream, inner: Arc<Inner>) {
    let mut kill = inner.kill.subscribe();
    kill.borrow_and_update();
    let upstream = tokio::select! {
        r = TcpStream::connect(inner.upstream) => match r {
            Ok(s) => s,
            Err(_) => return, // upstream refused: the client sees its socket close
        },
        _ = kill.changed() => return,
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let mut last_activity = Instant::now();
    let mut c_open = true; // client → upstream still readable
    let mut u_open = true; // upstream → client still readable
    let mut cbuf = vec![0u8; BUF];
    let mut ubuf = vec![0u8; BUF];
    while c_open || u_open {
        let idle_deadline = inner.idle_timeout.map(|t| last_activity + t);
        tokio::select! {
            r = cr.read(&mut cbuf), if c_open => match r {
                Ok(n) if n > 0 => {
                    if !inner.blackhole.load(Ordering::SeqCst) {
                        if uw.write_all(&cbuf[..n]).await.is_err() { return; }
                        last_activity = Instant::now();
                    }
                }
                // EOF or error: a dead path does not carry the FIN, so while
                // blackholed the other side is left open and silent.
                _ if inner.blackhole.load(Ordering::SeqCst) => c_open = false,
                _ => return,
            },
            r = ur.read(&mut ubuf), if u_open => match r {
                Ok(n) if n > 0 => {
                    if !inner.blackhole.load(Ordering::SeqCst) {
                        if cw.write_all(&ubuf[..n]).await.is_err() { return; }
                        last_activity = Instant::now();
                    }
                }
                _ if inner.blackhole.load(Ordering::SeqCst) => u_open = false,
                _ => return,
            },
            _ = kill.changed() => {
                inner.record_kill(false);
                return;
            }
            () = sleep_opt(idle_deadline) => {
                // The deadline is recomputed from the latest activity each turn, so
                // reaching it means nothing was forwarded either way for the timeout.
                inner.record_kill(true);
                return;
            }
        }
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
