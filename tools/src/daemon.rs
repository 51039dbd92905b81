//! The daemons' runtime edge: one loop owns SIGTERM/SIGINT, SIGHUP, systemd
//! readiness and watchdog, and the daemon's death, and turns how it ended into
//! the exit code ([`crate::exit`]). Mains parse arguments, start their daemon
//! from core, and hand it to [`run`].

use crate::exit::Exit;
use deploykit::daemon::{Daemon, Ended};
use deploykit::stomp::Client;
use sd_notify::NotifyState;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The daemons' signal handlers, installed before the daemon starts so an early
/// SIGHUP or SIGTERM is not lost to the default action.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT and SIGHUP (inside a tokio runtime).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())?, hup: signal(SignalKind::hangup())? })
    }
}

/// Which of the signals arrived.
enum Got {
    Stop,
    Reload,
}

impl Signals {
    async fn next(&mut self) -> Got {
        tokio::select! {
            _ = self.term.recv() => Got::Stop,
            _ = self.int.recv() => Got::Stop,
            _ = self.hup.recv() => Got::Reload,
        }
    }
}

/// How [`run`] drives a daemon.
pub struct RunOptions<C> {
    /// Re-reads the configuration on SIGHUP (`Err` keeps the old one; the text is logged).
    pub reload: Box<dyn FnMut() -> Result<C, String> + Send>,
    /// How long a stopping daemon may take before it is aborted.
    pub grace: Duration,
    /// Disconnected (bounded) once the daemon has stopped.
    pub client: Option<Client>,
}

/// What an ended daemon means for the process's exit code.
pub fn exit_code(ended: &Ended) -> Exit {
    match ended {
        Ended::Shutdown => Exit::Ok,
        Ended::BrokerLost(_) => Exit::Broker,
        Ended::Failed(_) => Exit::Failed,
    }
}

/// Drives a started daemon until SIGTERM/SIGINT (exit 0 once its work is done)
/// or until it stops on its own (exit non-zero, so systemd's `Restart=` acts);
/// SIGHUP re-reads the configuration and reloads it (a broken one is logged and
/// the old one kept). Tells systemd READY now and pings its watchdog.
pub async fn run<C: Send + 'static, E: Clone + Send + 'static>(daemon: Daemon<C, E>, mut signals: Signals, mut runner: RunOptions<C>) -> ExitCode {
    let name = daemon.name();
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec).then(|| Duration::from_micros(watchdog_usec) / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let ended = loop {
        tokio::select! {
            why = daemon.finished() => break Some(why),
            got = signals.next() => match got {
                Got::Stop => break None,
                Got::Reload => {
                    let _ = sd_notify::notify(false, &[NotifyState::Reloading]);
                    match (runner.reload)() {
                        Ok(config) => match daemon.reload(config).await {
                            Ok(()) => tracing::info!("configuration reloaded"),
                            Err(e) => tracing::error!("reload refused; the old configuration stays: {e}"),
                        },
                        Err(e) => tracing::error!("new configuration refused; the old one stays: {e}"),
                    }
                    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
                }
            },
            _ = ping.tick(), if watchdog.is_some() => {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
        }
    };
    let ended = match ended {
        Some(why) => {
            // Stopped on its own: say why, then exit non-zero so the service manager restarts it.
            eprintln!("{name}: {why}; exiting");
            tracing::error!(%why, "the daemon stopped on its own");
            why
        }
        None => {
            let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
            tracing::info!("shutting down: letting running work finish");
            daemon.shutdown(runner.grace).await
        }
    };
    if let Some(client) = runner.client.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
    }
    exit_code(&ended).into()
}
