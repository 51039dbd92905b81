//! dk-webhook: an HTTP receiver turning forge pushes into commit messages.
//!
//! - [`config`]: `webhook.toml` (forges, paths, secrets from files or env, limits).
//! - [`server`]: the axum routes and the status codes they answer.
//!
//! Payload parsing and signatures live in [`crate::forge`].

pub mod config;
pub mod server;

pub use config::{ConfigError, Forge, WebhookConfig};

use crate::health::Health;
use crate::outbox::Outbox;
use crate::spool::Spool;
use crate::stomp::{Client, State};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spool directory cannot be created or written.
    #[error("spool {dir}: {source}")]
    Spool {
        /// The directory.
        dir: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running receiver.
#[derive(Debug)]
pub struct WebhookHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    drainer: JoinHandle<()>,
    outbox: Outbox,
    client: Client,
    app: Arc<server::App>,
}

impl std::fmt::Debug for server::App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("listen", &self.config.listen).finish_non_exhaustive()
    }
}

/// Binds `config.listen`, opens the spool and starts serving and draining.
/// The client may still be connecting: requests are spooled meanwhile.
pub async fn start(config: WebhookConfig, client: Client) -> Result<WebhookHandle, WebhookError> {
    let health = Health::degrading("dk-webhook", Some(client.clone()));
    start_with_health(config, client, health).await
}

/// [`start`], reporting on `health` (which the caller may also serve on `--metrics-listen`).
pub async fn start_with_health(config: WebhookConfig, client: Client, health: Health) -> Result<WebhookHandle, WebhookError> {
    let spool = Spool::open(&config.spool).map_err(|source| WebhookError::Spool { dir: config.spool.display().to_string(), source })?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|source| WebhookError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| WebhookError::Bind { addr: config.listen, source })?;
    for f in &config.forges {
        if f.secret.is_none() {
            tracing::warn!(forge = f.forge.as_str(), path = %f.path, "no secret configured: unsigned requests are accepted");
        }
    }
    let (outbox, drainer) = Outbox::start(spool, client.clone());
    let deliveries = Mutex::new(crate::message::Dedup::new(config.dedup_capacity));
    let forges = std::sync::RwLock::new(Arc::new(config.forges.clone()));
    let o = outbox.clone();
    health.extra("spooled", move || o.pending().into());
    let o = outbox.clone();
    health.metrics().gauge_fn("deploykit_spool_depth", "Messages waiting in the spool for the broker.", move || o.pending() as i64);
    let delivered = health.metrics().counter(
        "deploykit_webhook_deliveries",
        "Forge deliveries by forge and result (published, spooled, duplicate, pong, ignored, malformed, unauthorized, too_large, spool_error).",
        &["forge", "result"],
    );
    let app = Arc::new(server::App { config, forges, outbox: outbox.clone(), deliveries, health, delivered });
    let (stop, stopped) = oneshot::channel::<()>();
    let router = server::router(app.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "dk-webhook listening");
    Ok(WebhookHandle { addr, stop: Some(stop), server, drainer, outbox, client, app })
}

impl WebhookHandle {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages waiting in the spool.
    pub fn pending(&self) -> usize {
        self.outbox.pending()
    }

    /// Takes the forges' secrets and repo naming from a re-read configuration
    /// (SIGHUP: rotating a secret needs no restart). Other changes (listen address,
    /// paths, spool, destinations) are refused with what needs a restart.
    pub fn reload(&self, new: &WebhookConfig) -> Result<(), String> {
        let old = &self.app.config;
        let paths = |c: &WebhookConfig| c.forges.iter().map(|f| (f.forge, f.path.clone())).collect::<Vec<_>>();
        if paths(old) != paths(new) {
            return Err("forge sections or paths changed: restart dk-webhook to apply".into());
        }
        if old.listen != new.listen
            || old.spool != new.spool
            || old.destinations != new.destinations
            || old.wire != new.wire
            || old.event_source != new.event_source
            || old.body_limit != new.body_limit
            || old.publish_wait != new.publish_wait
            || old.dedup_capacity != new.dedup_capacity
            || old.broker != new.broker
        {
            return Err("only secrets and repo naming reload; restart dk-webhook to apply the other changes".into());
        }
        *self.app.forges.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new.forges.clone());
        Ok(())
    }

    /// Stops accepting, lets running requests finish, then gives the spool up to
    /// `drain_within` to empty; returns how many messages stay spooled for the next start.
    pub async fn shutdown(mut self, drain_within: Duration) -> usize {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.server).await {
            Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
            Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
        self.drainer.abort();
        if matches!(self.client.state(), State::Ready(_)) && self.outbox.pending() > 0 {
            if let Ok(Err(e)) = tokio::time::timeout(drain_within, self.outbox.spool().drain(&self.client)).await {
                tracing::warn!(error = %e, "last drain before exit failed");
            }
        }
        self.outbox.pending()
    }
}

/// How long a stopping dk-webhook gives its spool to drain to the broker.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

impl crate::daemon::Supervised for WebhookHandle {
    type Config = WebhookConfig;
    async fn reload(&mut self, config: WebhookConfig) -> Result<(), crate::daemon::ReloadError> {
        WebhookHandle::reload(self, &config).map_err(crate::daemon::ReloadError::Refused)
    }
    fn is_finished(&self) -> bool {
        self.server.is_finished()
    }
    async fn stop(self) {
        let left = self.shutdown(SHUTDOWN_DRAIN).await;
        if left > 0 {
            tracing::warn!(spooled = left, "messages stay spooled for the next start");
        }
    }
}

/// Starts dk-webhook on the shared daemon lifecycle ([`crate::daemon`]); returns once it listens, with its address.
/// Requests are spooled while the broker is away, so the broker is never "lost for good" here.
pub async fn spawn(config: WebhookConfig, client: Client) -> Result<(crate::daemon::Daemon<WebhookConfig, ()>, SocketAddr), WebhookError> {
    let health = Health::degrading("dk-webhook", Some(client.clone()));
    spawn_with_health(config, client, health).await
}

/// [`spawn`], reporting on `health` (which the caller may also serve on `--metrics-listen`).
pub async fn spawn_with_health(config: WebhookConfig, client: Client, health: Health) -> Result<(crate::daemon::Daemon<WebhookConfig, ()>, SocketAddr), WebhookError> {
    let handle = start_with_health(config, client, health).await?;
    let addr = handle.addr();
    Ok((crate::daemon::Daemon::spawn("dk-webhook", move |ctx| crate::daemon::supervise(handle, None, ctx)), addr))
}
