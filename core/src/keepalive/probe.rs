//! How long does an idle connection survive on this path?
//!
//! Each trial opens its own connection with heart-beats off, stays silent for
//! its idle time and then checks the connection with a BEGIN/ABORT pair, whose
//! RECEIPT proves the path still carries traffic both ways. A connection the
//! path closes (RST or FIN, as most firewalls and proxies do) is noticed at
//! once by a read error, which gives the idle limit exactly; a silently
//! dropped one only fails its check, which bounds the limit. The first round
//! runs trials at doubling idle times (`min`, 2·`min`, … up to `max`) all at
//! once; later rounds bisect between the longest survivor and the shortest
//! failure until they are within `precision`.

use crate::stomp::{self, Client, ClientConfig, ClientEvent, HeartbeatConfig};
use std::time::{Duration, Instant};

/// Bounds and precision of a probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The shortest idle time tried.
    pub min: Duration,
    /// The longest idle time tried (the bound).
    pub max: Duration,
    /// How long a check (BEGIN/ABORT receipt) may take before the connection counts as dead.
    pub check_timeout: Duration,
    /// Bisect until (upper − lower) ≤ precision × upper.
    pub precision: f64,
    /// Most bisection rounds after the first.
    pub max_rounds: u32,
}

impl Default for ProbeOptions {
    fn default() -> ProbeOptions {
        ProbeOptions { min: Duration::from_secs(1), max: Duration::from_secs(600), check_timeout: Duration::from_secs(10), precision: 0.1, max_rounds: 5 }
    }
}

/// What one idle trial saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Trial {
    /// Still working after this much idle time.
    Alive(Duration),
    /// Closed by the path after this much idle time (read error or EOF).
    Closed(Duration),
    /// The check after this much idle time went unanswered (silent drop).
    Silent(Duration),
}

/// The probe's findings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The longest idle time a connection was seen to survive.
    pub survived: Option<Duration>,
    /// The estimated idle limit of the path (`None`: survived the bound).
    pub dropped_after: Option<Duration>,
    /// Whether the limit was observed directly (connections closed) rather than bisected.
    pub exact: bool,
    /// Every trial, in the order they finished.
    pub trials: Vec<Trial>,
    /// The bound used.
    pub max: Duration,
}

impl ProbeReport {
    /// The keepalive/heart-beat interval to configure: half the limit (the bound's half if none was found).
    pub fn recommended_interval(&self) -> Duration {
        self.dropped_after.unwrap_or(self.max) / 2
    }
}

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The options make no sense.
    #[error("invalid probe options: {0}")]
    Options(String),
    /// Not even a first connection could be made.
    #[error("cannot connect: {0}")]
    Connect(#[from] stomp::Error),
}

/// One idle trial on its own connection.
async fn trial(config: ClientConfig, idle: Duration, check_timeout: Duration) -> Result<Trial, stomp::Error> {
    let client = Client::start(config);
    let mut events = client.events();
    client.wait_ready().await?;
    // The CONNECTED frame was the last traffic on this connection.
    let since = Instant::now();
    let closed = async {
        loop {
            match events.recv().await {
                Ok(ClientEvent::Disconnected { .. } | ClientEvent::Closed { .. }) | Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            }
        }
    };
    let outcome = tokio::select! {
        () = closed => Trial::Closed(since.elapsed()),
        () = tokio::time::sleep(idle) => {
            let check = async {
                let tx = client.begin().await?;
                tx.abort().await
            };
            match tokio::time::timeout(check_timeout, check).await {
                Ok(Ok(())) => Trial::Alive(idle),
                _ => Trial::Silent(idle),
            }
        }
    };
    drop(client);
    Ok(outcome)
}

/// Runs trials at `points` at once; stops waiting shortly after connections start being closed.
async fn round(config: &ClientConfig, points: &[Duration], opts: &ProbeOptions) -> Result<Vec<Trial>, stomp::Error> {
    let mut set = tokio::task::JoinSet::new();
    for &p in points {
        set.spawn(trial(config.clone(), p, opts.check_timeout));
    }
    let started = Instant::now();
    let mut out = Vec::new();
    let mut first_error = None;
    let mut deadline: Option<Instant> = None;
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), set.join_next()).await.ok().flatten(),
                None => set.join_next().await,
            }
        };
        match next.await {
            None => break,
            Some(Ok(Ok(t))) => {
                if let (Trial::Closed(d), None) = (&t, deadline) {
                    // Longer trials on this path will be closed at about the same idle time.
                    deadline = Some(started + *d * 2 + Duration::from_secs(1));
                }
                out.push(t);
            }
            Some(Ok(Err(e))) => first_error = first_error.or(Some(e)),
            Some(Err(_)) => {}
        }
    }
    set.abort_all();
    if out.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(out)
}

/// The median of the directly observed close times.
fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// Finds how long an idle connection survives on the path to the broker of `config`.
pub async fn probe(config: ClientConfig, opts: ProbeOptions) -> Result<ProbeReport, ProbeError> {
    if opts.min.is_zero() || opts.max < opts.min {
        return Err(ProbeError::Options(format!("need 0 < min ({:?}) ≤ max ({:?})", opts.min, opts.max)));
    }
    let mut config = config.heartbeat(HeartbeatConfig::off());
    config.url.options.startup_max_reconnect_attempts = Some(1);
    config.url.options.max_reconnect_attempts = Some(1);
    config.receipt_timeout = opts.check_timeout;
    let mut points = Vec::new();
    let mut p = opts.min;
    while p < opts.max {
        points.push(p);
        p *= 2;
    }
    points.push(opts.max);
    let mut trials = round(&config, &points, &opts).await?;
    let mut rounds = 0;
    loop {
        let closed: Vec<Duration> = trials.iter().filter_map(|t| if let Trial::Closed(d) = t { Some(*d) } else { None }).collect();
        let survived = trials.iter().filter_map(|t| if let Trial::Alive(d) = t { Some(*d) } else { None }).max();
        if let Some(limit) = median(closed) {
            return Ok(ProbeReport { survived, dropped_after: Some(limit), exact: true, trials, max: opts.max });
        }
        let failed = trials.iter().filter_map(|t| if let Trial::Silent(d) = t { Some(*d) } else { None }).min();
        let Some(hi) = failed else {
            return Ok(ProbeReport { survived, dropped_after: None, exact: false, trials, max: opts.max });
        };
        let lo = survived.filter(|s| *s < hi).unwrap_or(Duration::ZERO);
        if (hi - lo).as_secs_f64() <= opts.precision * hi.as_secs_f64() || rounds >= opts.max_rounds {
            return Ok(ProbeReport { survived, dropped_after: Some((lo + hi) / 2), exact: false, trials, max: opts.max });
        }
        rounds += 1;
        let step = (hi - lo) / 4;
        let next: Vec<Duration> = (1..4).map(|i| lo + step * i).filter(|d| !d.is_zero()).collect();
        trials.extend(round(&config, &next, &opts).await?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommendation_is_half_the_limit() {
        let r = ProbeReport { survived: None, dropped_after: Some(Duration::from_secs(60)), exact: true, trials: vec![], max: Duration::from_secs(600) };
        assert_eq!(r.recommended_interval(), Duration::from_secs(30));
        let r = ProbeReport { dropped_after: None, ..r };
        assert_eq!(r.recommended_interval(), Duration::from_secs(300));
        assert_eq!(median(vec![Duration::from_secs(3), Duration::from_secs(1), Duration::from_secs(2)]), Some(Duration::from_secs(2)));
    }
}
