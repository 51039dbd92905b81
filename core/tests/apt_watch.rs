//! dk-apt-watch's core on the embedded broker (and RabbitMQ when DK_TEST_RABBITMQ
//! names it): the action is a real program (a script written here, run by
//! argument vector) that appends a line to a file, so runs can be counted.

mod common;

use common::targets::{recv, Kind, Target};
use deploykit::aptwatch::{self, AptWatchConfig, AptWatchHandle, RunReport, WatchEvent};
use deploykit::message::{decode, Message, Package, PackageAction, Publisher};
use deploykit::stomp::SubscribeOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    dir: PathBuf,
    ptopic: String,
    etopic: String,
}

impl Fixture {
    /// A temp dir with `action.sh` (appends its first argument to `runs.log`, prints a line, exits with $DK_TEST_EXIT or 0).
    fn new(target: &Target, tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("dk-apt-watch-{tag}-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("action.sh");
        std::fs::write(&script, "#!/bin/sh\necho \"$1\" >> \"$(dirname \"$0\")/runs.log\"\necho \"Reading package lists... Done\"\nif [ \"$1\" = fail ]; then echo 'E: could not get lock' >&2; exit 100; fi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fixture { dir, ptopic: target.dest("topic"), etopic: target.dest("topic") }
    }

    fn config(&self, extra: &str) -> AptWatchConfig {
        let text =
            format!("node = \"web01\"\npackages_topic = {:?}\nevents_topic = {:?}\naction = [{:?}, \"update\"]\n{extra}\n", self.ptopic, self.etopic, self.dir.join("action.sh"));
        AptWatchConfig::parse(&text).unwrap()
    }

    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("runs.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn package(name: &str, version: &str, distro: &str) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        arch: "all".into(),
        distro: distro.into(),
        action: PackageAction::Added,
        file: format!("{name}_{version}_all.deb"),
        detail: None,
    }
}

async fn ran(events: &mut broadcast::Receiver<WatchEvent>) -> RunReport {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await.expect("a run within 30 s").expect("daemon alive") {
            WatchEvent::Ran(r) => return r,
            _ => continue,
        }
    }
}

async fn matched_or_ignored(events: &mut broadcast::Receiver<WatchEvent>) -> WatchEvent {
    match tokio::time::timeout(WAIT, events.recv()).await.expect("an event within 30 s").expect("daemon alive") {
        WatchEvent::Ran(r) => panic!("unexpected run: {r:?}"),
        ev => ev,
    }
}

async fn start(target: &Target, config: AptWatchConfig) -> AptWatchHandle {
    aptwatch::start(config, target.client().await).await.expect("daemon starts")
}

async fn burst_of_20_is_one_run(target: Target) {
    let fx = Fixture::new(&target, "burst");
    let listener = target.client().await;
    let mut lines = listener.subscribe(&fx.etopic, SubscribeOptions::default()).await.unwrap();
    let daemon = start(&target, fx.config("packages = [\"site-*\"]\nquiet = \"1s\"\nmin_interval = \"60s\"\nmax_wait = \"20s\"")).await;
    let mut obs = daemon.subscribe();
    let publisher = Publisher::new(target.client().await, "test")
        .destinations(deploykit::message::Destinations { packages: fx.ptopic.clone(), events: target.dest("topic"), ..Default::default() })
        .receipts(false);
    for i in 0..20 {
        publisher.package(&package(&format!("site-part{i}"), "1.0", "bookworm")).await.unwrap();
    }
    let report = ran(&mut obs).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.triggers.len(), 20, "every message of the burst is covered by the one run: {:?}", report.triggers);
    assert_eq!(fx.runs(), ["update"], "the action ran exactly once");
    assert_eq!(daemon.stats().runs, 1);
    let m = recv(&mut lines).await;
    let Ok(Message::Event(e)) = decode(m.destination(), &m.headers, &m.body) else { panic!("{:?}", m.text()) };
    assert_eq!(e.host.as_deref(), Some("web01"));
    assert!(e.text.contains("update ok in") && e.text.contains("(site-part0 1.0, +19 more)"), "{}", e.text);
    let stats = daemon.shutdown().await;
    assert_eq!((stats.messages, stats.matched, stats.runs), (20, 20, 1));
}

#[tokio::test]
async fn a_burst_of_20_packages_runs_the_action_once() {
    burst_of_20_is_one_run(Target::embedded().await).await;
}

#[tokio::test]
async fn a_burst_of_20_packages_runs_the_action_once_through_rabbitmq() {
    if let Some(target) = Target::real(Kind::RabbitMq) {
        burst_of_20_is_one_run(target).await;
    }
}

#[tokio::test]
async fn unwatched_names_distros_and_actions_are_ignored_and_legacy_bodies_read() {
    let target = Target::embedded().await;
    let fx = Fixture::new(&target, "filter");
    let daemon = start(&target, fx.config("packages = [\"nginx\", \"lib{foo,bar}1\"]\ndistros = [\"bookworm\"]\non = [\"added\"]\nquiet = \"50ms\"\nmin_interval = \"0s\"")).await;
    let mut obs = daemon.subscribe();
    let sender = target.client().await;
    let publisher =
        Publisher::new(sender.clone(), "test").destinations(deploykit::message::Destinations { packages: fx.ptopic.clone(), events: target.dest("topic"), ..Default::default() });

    publisher.package(&package("nginx-common", "1.0", "bookworm")).await.unwrap();
    publisher.package(&package("nginx", "1.0", "trixie")).await.unwrap();
    let mut refused = package("nginx", "1.0", "bookworm");
    refused.action = PackageAction::Failed;
    publisher.package(&refused).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(matched_or_ignored(&mut obs).await, WatchEvent::Ignored(_)));
    }
    // The original auto-reprepro's text body (no dk-type header, no distribution).
    sender.send(&fx.ptopic, "package: libbar1_2.0-1_amd64.deb\nExporting indices...\n").await.unwrap();
    match matched_or_ignored(&mut obs).await {
        WatchEvent::Matched(p) => assert_eq!((p.name.as_str(), p.version.as_str()), ("libbar1", "2.0-1")),
        other => panic!("{other:?}"),
    }
    let report = ran(&mut obs).await;
    assert_eq!(report.triggers, ["libbar1 2.0-1"]);
    assert_eq!(fx.runs().len(), 1);
    daemon.shutdown().await;
}

#[tokio::test]
async fn runs_are_at_least_min_interval_apart_and_failures_are_reported() {
    let target = Target::embedded().await;
    let fx = Fixture::new(&target, "interval");
    let mut config = fx.config("quiet = \"50ms\"\nmin_interval = \"1500ms\"");
    config.action = vec![fx.dir.join("action.sh").display().to_string(), "fail".into()];
    let listener = target.client().await;
    let mut lines = listener.subscribe(&fx.etopic, SubscribeOptions::default()).await.unwrap();
    let daemon = start(&target, config).await;
    let mut obs = daemon.subscribe();
    let publisher = Publisher::new(target.client().await, "test").destinations(deploykit::message::Destinations {
        packages: fx.ptopic.clone(),
        events: target.dest("topic"),
        ..Default::default()
    });

    publisher.package(&package("one", "1", "bookworm")).await.unwrap();
    let first = ran(&mut obs).await;
    assert!(!first.ok);
    assert_eq!(first.status, "exit 100");
    let m = recv(&mut lines).await;
    let Ok(Message::Event(e)) = decode(m.destination(), &m.headers, &m.body) else { panic!("{:?}", m.text()) };
    assert!(e.text.starts_with("problem: ") && e.text.contains("failed (exit 100)") && e.text.ends_with(": E: could not get lock"), "{}", e.text);

    publisher.package(&package("two", "1", "bookworm")).await.unwrap();
    let second = ran(&mut obs).await;
    let apart = second.started.duration_since(first.started);
    assert!(apart >= Duration::from_millis(1500), "second run started only {apart:?} after the first");
    assert_eq!(second.triggers, ["two 1"]);
    assert_eq!(fx.runs(), ["fail", "fail"]);
    let stats = daemon.shutdown().await;
    assert_eq!((stats.runs, stats.failures), (2, 2));
}
