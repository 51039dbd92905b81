//! dk-web: the browser front end over dk-deploy's library (sites, tags,
//! one-click canary-first deploys with live progress, history, activity).
//!
//! - [`config`] — `web.toml`.
//! - [`legacy_import`] — grubby's `sites.yaml` → `web.toml` (`--import-legacy`).
//! - [`auth`] — HTTP Basic (htpasswd: bcrypt, argon2), trusted proxy header, or none (loopback).
//! - [`hosts`] — the `Host` allowlist and the origin check (DNS rebinding, cross-site posts).
//! - [`throttle`] — failed logins per client address.
//! - [`csrf`] — per-user form tokens.
//! - [`fleet`] — the agents seen (bounded, expiring), and per site the servers, tags and locks.
//! - [`form`] — the deploy form's fields and their checks.
//! - [`history`] — every deploy in SQLite (versioned schema).
//! - [`trail`] — signed rollout records: every controller's deploys into the history, this dk-web's out.
//! - [`approvals`] — deploys that wait for a second person (approve, reject, lapse).
//! - [`rollout`] — starting a deploy or rollback (checks, gates, the task that runs it), for the form and the API.
//! - [`live`] — deploys in progress, their views and update streams.
//! - [`activity`] — the bus's event lines.
//! - [`changes`] — every push and its journey (builds, fetches, event lines, where it went live), bounded, live.
//! - [`api`] — the JSON API (`/api/v1/…`): bearer tokens scoped to sites, the OpenAPI document, the history client.
//! - [`journey`] — the Changes pages' HTML; [`pages`] — the rest of the HTML (maud); [`routes`] — the axum handlers.

pub mod activity;
pub mod api;
pub mod approvals;
pub mod auth;
pub mod changes;
pub mod config;
pub mod csrf;
pub mod fleet;
pub mod form;
pub mod history;
pub mod hosts;
pub mod journey;
pub mod legacy_import;
pub mod live;
pub mod pages;
pub mod rollout;
pub mod routes;
pub mod throttle;
pub mod trail;

pub use config::{ConfigError, WebConfig};

use crate::deploy::controller::{Controller, ControllerConfig};
use crate::deploy::keys::SecretKey;
use crate::health::metrics::CounterVec;
use crate::health::Health;
use crate::stomp::Client;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why dk-web could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The configuration's keys contradict each other (see [`WebConfig::validate`]).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The htpasswd file is unusable.
    #[error("{0}")]
    Htpasswd(#[from] auth::HtpasswdError),
    /// The history database is unusable.
    #[error("{0}")]
    History(#[from] history::HistoryError),
    /// The changes tables are unusable.
    #[error("{0}")]
    Changes(#[from] changes::ChangesError),
    /// The signing key could not be read.
    #[error("signing key {path}: {source}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        source: crate::deploy::keys::KeyError,
    },
    /// The bus refused a subscription.
    #[error("bus: {0}")]
    Bus(#[from] crate::deploy::controller::ControlError),
    /// The API's tokens file is unusable.
    #[error("{0}")]
    Tokens(#[from] api::tokens::TokenError),
    /// No randomness for the CSRF secret.
    #[error("random: {0}")]
    Random(String),
}

/// What can change on reload: who may log in and the sites.
#[derive(Debug)]
pub(crate) struct Settings {
    pub auth: auth::Auth,
    pub hosts: hosts::Hosts,
    /// The API's tokens (`[api] tokens`, re-read with the rest on reload).
    pub tokens: api::tokens::Tokens,
    pub config: WebConfig,
}

impl Settings {
    fn new(config: WebConfig, bound: SocketAddr) -> Result<Settings, WebError> {
        config.validate()?;
        let auth = auth::Auth::from_config(&config.auth)?;
        let hosts = hosts::Hosts::new(bound, config.public_url.as_ref(), &config.allowed_hosts);
        let tokens = load_tokens(&config)?;
        Ok(Settings { auth, hosts, tokens, config })
    }
}

/// The tokens `[api] tokens` names (none when unset or missing).
fn load_tokens(config: &WebConfig) -> Result<api::tokens::Tokens, api::tokens::TokenError> {
    match &config.api_tokens {
        Some(p) => api::tokens::Tokens::load(p),
        None => Ok(api::tokens::Tokens::default()),
    }
}

/// What every handler shares.
pub(crate) struct App {
    pub settings: RwLock<Arc<Settings>>,
    pub csrf: csrf::Csrf,
    pub throttle: throttle::Throttle,
    pub history: history::History,
    pub live: live::Registry,
    pub fleet: Arc<fleet::Fleet>,
    pub activity: Arc<activity::Activity>,
    pub changes: Arc<changes::Changes>,
    pub client: Client,
    pub query: Controller,
    pub key: Option<SecretKey>,
    /// `/healthz` and the metrics (served on `--metrics-listen`).
    pub health: Health,
    /// `deploykit_web_deploys_total{action,result}`.
    pub rollouts: CounterVec,
    /// `deploykit_web_rollout_records_total{result}`.
    pub records: CounterVec,
    /// Ids of waiting deploys that stopped waiting (approved, rejected, cancelled, lapsed).
    pub decided: tokio::sync::broadcast::Sender<i64>,
}

impl App {
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Deploy `id`: its history row and view, live (with its handle) or as recorded.
    pub(crate) fn deploy_state(&self, id: i64) -> Option<(history::DeployRow, live::DeployView, Option<Arc<live::LiveDeploy>>)> {
        let row = self.history.get(id).ok().flatten()?;
        if let Some(l) = self.live.get(id) {
            let v = l.view();
            return Some((row, v, Some(l)));
        }
        let view = match row.report() {
            Some(r) => live::DeployView::from_report(&r, &row.result),
            // No report yet: over, unless it still waits for an approval (then nothing has run).
            None => live::DeployView { finished: row.result != history::AWAITING, result: row.result.clone(), error: row.detail.clone(), ..live::DeployView::default() },
        };
        Some((row, view, None))
    }
}

/// A running dk-web.
pub struct WebHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    followers: Vec<JoinHandle<()>>,
    app: Arc<App>,
}

impl std::fmt::Debug for WebHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebHandle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Loads the signing key `config.key_file` names; `None` means a fresh one.
pub fn load_key(config: &WebConfig) -> Result<SecretKey, WebError> {
    match &config.key_file {
        Some(p) => SecretKey::load(p).map_err(|source| WebError::Key { path: p.display().to_string(), source }),
        None => SecretKey::generate().map_err(|source| WebError::Key { path: "(generated)".into(), source }),
    }
}

/// Checks this machine against the configuration, listing every problem: the
/// login setup (`[auth]`, the htpasswd file), the signing key, the history
/// database (created if missing, as at start). `Ok` is a one-line summary naming the signing key.
pub fn check(config: &WebConfig) -> Result<String, Vec<crate::config::Problem>> {
    use crate::config::Problem;
    let mut out = Vec::new();
    if let Err(e) = auth::Auth::from_config(&config.auth) {
        out.push(Problem::new("auth", e.to_string()));
    }
    let key = load_key(config).map_err(|e| out.push(Problem::new("key_file", e.to_string()))).ok();
    if let Err(e) = history::History::open(&config.database) {
        out.push(Problem::new("database", e.to_string()));
    }
    if let Err(e) = load_tokens(config) {
        out.push(Problem::new("api.tokens", e.to_string()));
    }
    match key {
        Some(key) if out.is_empty() => Ok(format!("listen {}, {} sites, database {}, signing key {}", config.listen, config.sites.len(), config.database.display(), key.public())),
        _ => Err(out),
    }
}

/// Binds, opens the history, subscribes to announcements and events, and serves.
/// Requests are signed with `key` (see [`load_key`]).
pub async fn start(config: WebConfig, client: Client, key: SecretKey) -> Result<WebHandle, WebError> {
    let health = Health::degrading("dk-web", Some(client.clone()));
    start_with_health(config, client, key, health).await
}

/// [`start`], reporting on `health` (which the caller may also serve on `--metrics-listen`).
pub async fn start_with_health(config: WebConfig, client: Client, key: SecretKey, health: Health) -> Result<WebHandle, WebError> {
    config.validate()?;
    let auth = auth::Auth::from_config(&config.auth)?;
    let tokens = load_tokens(&config)?;
    let history = history::History::open(&config.database)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|source| WebError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| WebError::Bind { addr: config.listen, source })?;
    let trust = Arc::new(crate::deploy::trust::TrustStore::new(config.trust.clone()));
    let mut cc = ControllerConfig::new("dk-web", Some(key.clone()));
    cc.destinations.deploy = config.deploy_destination.clone();
    cc.reply_to = config.reply_destination.clone();
    cc.trust = trust.clone();
    let query = Controller::new(client.clone(), cc).await?;
    let fleet = Arc::new(fleet::Fleet::with_limits(fleet::MAX_SERVERS, config.server_expiry));
    let activity = activity::Activity::new(config.activity_lines);
    let (db_path, db) = history.shared();
    let changes = Arc::new(changes::Changes::open(db_path, db, config.changes.clone())?);
    let mut followers = vec![fleet.follow(&client, &config.agents_destination, trust).await.map_err(crate::deploy::controller::ControlError::from)?];
    followers.extend(activity.follow(&client, &config.events, Some(changes.clone())).await.map_err(crate::deploy::controller::ControlError::from)?);
    followers.extend(changes.follow(&client, &config.change_destinations).await.map_err(crate::deploy::controller::ControlError::from)?);
    let csrf = csrf::Csrf::new().map_err(|e| WebError::Random(e.to_string()))?;
    let hosts = hosts::Hosts::new(addr, config.public_url.as_ref(), &config.allowed_hosts);
    let settings = RwLock::new(Arc::new(Settings { auth, hosts, tokens, config }));
    let rollouts =
        health.metrics().counter("deploykit_web_deploys", "Deploys and rollbacks started from the web, by action and result (ok, failed, stopped, error).", &["action", "result"]);
    let records = health.metrics().counter("deploykit_web_rollout_records", "Rollout records heard on the bus, by result (stored, duplicate, rejected, error).", &["result"]);
    let live = live::Registry::default();
    let app = Arc::new(App {
        settings,
        csrf,
        throttle: throttle::Throttle::default(),
        history,
        live,
        fleet,
        activity,
        changes,
        client,
        query,
        key: Some(key),
        health,
        rollouts,
        records,
        decided: tokio::sync::broadcast::channel(64).0,
    });
    // What the fleet says is live, for the changes' "live on N servers" (sites mapped to repos by web.toml).
    let weak = Arc::downgrade(&app);
    app.changes.set_fleet(Box::new(move || {
        let Some(app) = weak.upgrade() else { return Vec::new() };
        let settings = app.settings();
        app.fleet.deployed(|site| settings.config.site(site).map(|s| s.repo.clone()))
    }));
    followers.push(trail::follow(&app).await.map_err(crate::deploy::controller::ControlError::from)?);
    let weak = Arc::downgrade(&app);
    app.health.extra("deploys_running", move || weak.upgrade().map_or(0, |a| a.live.len()).into());
    let weak = Arc::downgrade(&app);
    app.health.metrics().gauge_fn("deploykit_web_deploys_running", "Deploys and rollbacks running now.", move || weak.upgrade().map_or(0, |a| a.live.len() as i64));
    // Learn the fleet once now, so the first page load knows whom to wait for.
    let warm = app.clone();
    followers.push(tokio::spawn(async move {
        let window = warm.settings().config.discovery_window;
        let _ = warm.fleet.discover(&warm.query, &Default::default(), window).await;
    }));
    let (stop, stopped) = oneshot::channel::<()>();
    let router = routes::router(app.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "dk-web listening");
    Ok(WebHandle { addr, stop: Some(stop), server, followers, app })
}

impl WebHandle {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Deploys in progress.
    pub fn running(&self) -> usize {
        self.app.live.len()
    }

    /// Applies a re-read configuration: users (htpasswd re-read), API tokens (re-read), sites,
    /// deployers, windows, trusted agents and controllers, public_url and allowed_hosts. Listen address,
    /// database, key, destinations and server_expiry need a restart.
    pub fn reload(&self, new: WebConfig) -> Result<(), String> {
        let old = self.app.settings();
        let o = &old.config;
        if o.listen != new.listen
            || o.database != new.database
            || o.key_file != new.key_file
            || o.events != new.events
            || o.deploy_destination != new.deploy_destination
            || o.agents_destination != new.agents_destination
            || o.reply_destination != new.reply_destination
            || o.rollouts_destination != new.rollouts_destination
            || o.broker != new.broker
            || o.server_expiry != new.server_expiry
            || o.changes != new.changes
            || o.change_destinations != new.change_destinations
        {
            return Err("listen, database, key_file, events, destinations, server_expiry, [changes] and broker need a restart of dk-web".into());
        }
        let trust = new.trust.clone();
        let settings = Settings::new(new, self.addr).map_err(|e| e.to_string())?;
        self.app.query.trust().replace(trust);
        *self.app.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
        Ok(())
    }

    /// Stops serving. Running deploys are told to stop (no further batch) and
    /// given up to `wait` to finish their running batch and be recorded.
    pub async fn shutdown(mut self, wait: std::time::Duration) {
        routes::stop_all(&self.app);
        if tokio::time::timeout(wait, self.app.live.drained()).await.is_err() {
            tracing::warn!(deploys = self.app.live.len(), "deploys still running at exit: their history rows will read `interrupted`");
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // SSE streams of watchers would keep graceful shutdown waiting: give it a moment, then end.
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.server).await.is_err() {
            self.server.abort();
        }
        for f in &self.followers {
            f.abort();
        }
    }
}

/// How long a stopping dk-web gives running deploys to finish their batch.
pub const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl crate::daemon::Supervised for WebHandle {
    type Config = WebConfig;
    async fn reload(&mut self, config: WebConfig) -> Result<(), crate::daemon::ReloadError> {
        WebHandle::reload(self, config).map_err(crate::daemon::ReloadError::Refused)
    }
    fn is_finished(&self) -> bool {
        self.server.is_finished()
    }
    async fn stop(self) {
        if self.running() > 0 {
            tracing::warn!(deploys = self.running(), "stopping: no further batches; waiting for the running ones");
        }
        self.shutdown(SHUTDOWN_WAIT).await;
    }
}

/// Starts dk-web on the shared daemon lifecycle ([`crate::daemon`]); returns once it listens, with its address.
pub async fn spawn(config: WebConfig, client: Client, key: SecretKey) -> Result<(crate::daemon::Daemon<WebConfig, ()>, SocketAddr), WebError> {
    let health = Health::degrading("dk-web", Some(client.clone()));
    spawn_with_health(config, client, key, health).await
}

/// [`spawn`], reporting on `health` (which the caller may also serve on `--metrics-listen`).
pub async fn spawn_with_health(config: WebConfig, client: Client, key: SecretKey, health: Health) -> Result<(crate::daemon::Daemon<WebConfig, ()>, SocketAddr), WebError> {
    let handle = start_with_health(config, client.clone(), key, health).await?;
    let addr = handle.addr();
    Ok((crate::daemon::Daemon::spawn("dk-web", move |ctx| crate::daemon::supervise(handle, Some(client), ctx)), addr))
}
