//! The fetch daemon end to end: real git repositories (git CLI for pushes,
//! the daemon's own git for fetches), the embedded broker (RabbitMQ too when
//! `DK_TEST_RABBITMQ` is set), in-process daemons observed through their event
//! broadcast — no sleeps as synchronisation.

mod common;

use common::targets::{Kind, Target};
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::fetch::config::FetchConfig;
use deploykit::fetch::daemon::{DaemonEvent, DaemonHandle, DaemonOptions, FetchDaemon, Runner};
use deploykit::message::{decode, encode, Commit, Destinations, Event, FetchResult, Message, Publisher, Source, Wire};
use deploykit::stomp::{Client, SendOptions, State, SubscribeOptions, Subscription};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Tmp {
        let p = std::env::temp_dir().join(format!("dk-fetch-test-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs git with an argument vector; panics with its stderr on failure; returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=master", "-c", "advice.detachedHead=false"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A central bare repo, a developer's work clone, and servers' clones.
struct Repos {
    tmp: Tmp,
}

impl Repos {
    /// Creates repo `name`: central bare + work clone with one commit pushed.
    fn new() -> Repos {
        Repos { tmp: Tmp::new() }
    }

    fn central(&self, name: &str) -> PathBuf {
        self.tmp.0.join(format!("{name}.git"))
    }

    fn work(&self, name: &str) -> PathBuf {
        self.tmp.0.join(format!("work-{name}"))
    }

    fn create(&self, name: &str) {
        let central = self.central(name);
        git(&self.tmp.0, &["init", "-q", "--bare", central.to_str().unwrap()]);
        git(&self.tmp.0, &["clone", "-q", central.to_str().unwrap(), self.work(name).to_str().unwrap()]);
        self.commit(name, "first");
        git(&self.work(name), &["push", "-q", "origin", "HEAD:refs/heads/master"]);
    }

    fn commit(&self, name: &str, text: &str) -> String {
        let work = self.work(name);
        std::fs::write(work.join("file.txt"), text).unwrap();
        git(&work, &["add", "file.txt"]);
        git(&work, &["commit", "-q", "-m", text]);
        git(&work, &["rev-parse", "HEAD"])
    }

    /// A server's clone of `name`.
    fn clone_for(&self, server: &str, name: &str) -> PathBuf {
        let dir = self.tmp.0.join(server).join(name);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        git(&self.tmp.0, &["clone", "-q", self.central(name).to_str().unwrap(), dir.to_str().unwrap()]);
        dir
    }

    /// Pushes the work clone's HEAD to master; returns (oldrev, newrev).
    fn push(&self, name: &str) -> (String, String) {
        let old = git(&self.central(name), &["rev-parse", "refs/heads/master"]);
        git(&self.work(name), &["push", "-q", "origin", "HEAD:refs/heads/master"]);
        let new = git(&self.central(name), &["rev-parse", "refs/heads/master"]);
        (old, new)
    }
}

fn commit_msg(repo: &str, old: &str, new: &str, refname: &str) -> Commit {
    Commit {
        repo: repo.into(),
        oldrev: old.into(),
        newrev: new.into(),
        refname: refname.into(),
        source: Source::Git,
        svn: None,
        commits: Vec::new(),
        correlation_id: Some(format!("cid-{new}")),
    }
}

/// The topics of one test (unique, so parallel tests on a shared broker do not mix).
struct Topics {
    commits: String,
    events: String,
    results: String,
}

impl Topics {
    fn new(t: &Target) -> Topics {
        Topics { commits: t.dest("topic"), events: t.dest("topic"), results: t.dest("topic") }
    }
}

fn config(topics: &Topics, node: &str, repos: &[(&str, &Path)], extra: &str) -> FetchConfig {
    let mut text = format!(
        "node = {node:?}\ncommits_topic = {:?}\nevents_topic = {:?}\nresults_topic = {:?}\nreconcile_interval = \"off\"\n{extra}\n[broker]\nurl = \"stomp://127.0.0.1:1\"\n",
        topics.commits, topics.events, topics.results
    );
    for (name, path) in repos {
        text.push_str(&format!("[repos.{name}]\npath = {:?}\nmode = \"normal\"\n", path.to_str().unwrap()));
    }
    FetchConfig::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

/// Awaits the next `Fetched` result matching `pred` (10 s bound).
async fn fetched(rx: &mut broadcast::Receiver<DaemonEvent>, pred: impl Fn(&FetchResult) -> bool) -> FetchResult {
    next(rx, |e| match e {
        DaemonEvent::Fetched(r) if pred(r) => Some(r.clone()),
        _ => None,
    })
    .await
}

async fn next<T>(rx: &mut broadcast::Receiver<DaemonEvent>, f: impl Fn(&DaemonEvent) -> Option<T>) -> T {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = f(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("daemon observer closed: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the awaited daemon event within 10 s")
}

/// Starts a daemon and waits for its startup reconcile to finish for every repo.
async fn start(config: FetchConfig, client: Client, options: DaemonOptions) -> (DaemonHandle, broadcast::Receiver<DaemonEvent>) {
    let n = config.repos.len();
    let (tx, mut rx) = broadcast::channel(4096);
    let handle = FetchDaemon::start_with(config, client, DaemonOptions { observer: Some(tx), ..options }).await.expect("daemon starts");
    for _ in 0..n {
        let r = fetched(&mut rx, |r| r.trigger == "startup").await;
        assert!(r.ok, "startup fetch: {r:?}");
    }
    (handle, rx)
}

/// The common set-up: an embedded broker, a central repo `site`, web01's clone
/// of it, and a daemon serving that clone (startup reconcile done).
struct Rig {
    t: Target,
    repos: Repos,
    clone: PathBuf,
    topics: Topics,
    #[allow(dead_code)] // the daemon's connection, kept for tests that need it
    server: Client,
    handle: DaemonHandle,
    rx: broadcast::Receiver<DaemonEvent>,
}

impl Rig {
    async fn start() -> Rig {
        let t = Target::embedded().await;
        let repos = Repos::new();
        repos.create("site");
        let clone = repos.clone_for("web01", "site");
        let topics = Topics::new(&t);
        let server = t.client().await;
        let (handle, rx) = start(config(&topics, "web01", &[("site", &clone)], ""), server.clone(), DaemonOptions::default()).await;
        Rig { t, repos, clone, topics, server, handle, rx }
    }
}

async fn event_lines(client: &Client, topic: &str) -> Subscription {
    client.subscribe(topic, SubscribeOptions::default()).await.unwrap()
}

/// The next event line on `sub` whose text contains `needle`.
async fn event_containing(sub: &mut Subscription, needle: &str) -> Event {
    loop {
        let m = common::targets::recv(sub).await;
        if let Ok(Message::Event(e)) = decode(m.destination(), &m.headers, &m.body) {
            if e.text.contains(needle) {
                return e;
            }
        }
    }
}

fn has_commit(clone: &Path, rev: &str) -> bool {
    Command::new("git").arg("-C").arg(clone).args(["cat-file", "-e", &format!("{rev}^{{commit}}")]).stderr(std::process::Stdio::null()).status().unwrap().success()
}

async fn push_is_fetched(t: Target) {
    let repos = Repos::new();
    repos.create("site");
    let clone = repos.clone_for("web01", "site");
    let topics = Topics::new(&t);
    let server = t.client().await;
    let (handle, mut rx) = start(config(&topics, "web01", &[("site", &clone)], ""), server.clone(), DaemonOptions::default()).await;
    let hook = t.client().await;
    let mut events = event_lines(&hook, &topics.events).await;
    let mut results = event_lines(&hook, &topics.results).await;

    repos.commit("site", "second");
    let (old, new) = repos.push("site");
    assert!(!has_commit(&clone, &new));
    let commit = commit_msg("site", &old, &new, "refs/heads/master");
    let publisher = Publisher::new(hook.clone(), "git-hook").destinations(Destinations { commits: topics.commits.clone(), events: t.dest("topic"), ..Destinations::default() });
    publisher.commit(&commit).await.unwrap();

    let r = fetched(&mut rx, |r| r.trigger == "commit").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.new_head.as_deref(), Some(new.as_str()));
    assert_eq!(r.correlation_id.as_deref(), Some(format!("cid-{new}").as_str()));
    assert!(has_commit(&clone, &new), "{:?}: the server's clone has the pushed commit", t.kind);

    let line = event_containing(&mut events, "fetched change").await;
    assert_eq!(line.text, format!("fetched change: [site] refs/heads/master {new}"));
    assert_eq!(line.host.as_deref(), Some("web01"));
    assert_eq!(line.correlation_id.as_deref(), Some(format!("cid-{new}").as_str()));
    loop {
        let m = common::targets::recv(&mut results).await;
        if let Ok(Message::Fetch(f)) = decode(m.destination(), &m.headers, &m.body) {
            if f.trigger == "commit" {
                assert_eq!(f, r);
                break;
            }
        }
    }
    handle.shutdown().await;
    server.disconnect().await.unwrap();
}

#[tokio::test]
async fn push_is_fetched_embedded() {
    push_is_fetched(Target::embedded().await).await;
}

#[tokio::test]
async fn push_is_fetched_rabbitmq() {
    if let Some(t) = Target::real(Kind::RabbitMq) {
        push_is_fetched(t).await;
    }
}

#[tokio::test]
async fn legacy_and_json_commits_both_trigger_keepalives_and_unknown_repos_do_not() {
    let Rig { t, repos, clone, topics, server: _, handle, mut rx } = Rig::start().await;
    let hook = t.client().await;
    let before = handle.stats();

    // Keepalive and an unknown repo: nothing runs.
    hook.send(&topics.commits, "\n").await.unwrap();
    let other = encode(&commit_msg("elsewhere", &"1".repeat(40), &"2".repeat(40), "refs/heads/master"), Wire::Json).unwrap();
    hook.send_with(&topics.commits, other.body, SendOptions { headers: other.headers, ..SendOptions::default() }).await.unwrap();
    next(&mut rx, |e| matches!(e, DaemonEvent::Ignored { repo } if repo == "elsewhere").then_some(())).await;

    for wire in [Wire::Legacy, Wire::Json] {
        repos.commit("site", &format!("{wire:?}"));
        let (old, new) = repos.push("site");
        let out = encode(&commit_msg("site", &old, &new, "refs/heads/master"), wire).unwrap();
        hook.send_with(&topics.commits, out.body, SendOptions { headers: out.headers, ..SendOptions::default() }).await.unwrap();
        let r = fetched(&mut rx, |r| r.trigger == "commit").await;
        assert_eq!(r.new_head.as_deref(), Some(new.as_str()), "{wire:?}");
        assert!(has_commit(&clone, &new));
    }
    let after = handle.shutdown().await;
    assert_eq!(after.ignored, before.ignored + 1);
    assert_eq!(after.fetches["site"], before.fetches["site"] + 2, "only the two commits fetched: {after:?}");
    assert_eq!(after.messages, before.messages + 3, "the keepalive is not counted");
}

#[tokio::test]
async fn a_burst_of_50_commits_in_1s_leads_to_at_most_2_fetches() {
    let Rig { t, repos, clone, topics, server: _, handle, mut rx } = Rig::start().await;
    let before = handle.stats().fetches["site"];
    let hook = t.client().await;
    repos.commit("site", "burst");
    let (old, new) = repos.push("site");
    let out = encode(&commit_msg("site", &old, &new, "refs/heads/master"), Wire::Json).unwrap();
    let started = std::time::Instant::now();
    // A pause longer than the quiet window (50 ms) ends a burst, by design: on a
    // loaded machine a 19 ms sleep can overrun, and each such pause may add a fetch.
    let (mut last, mut pauses) = (started, 0u64);
    for _ in 0..50 {
        hook.send_with(&topics.commits, out.body.clone(), SendOptions { headers: out.headers.clone(), ..SendOptions::default() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(19)).await;
        pauses += u64::from(last.elapsed() >= Duration::from_millis(50));
        last = std::time::Instant::now();
    }
    assert!(started.elapsed() < Duration::from_millis(1500) || pauses > 0);
    // The first fetch, then at most one more once the burst is over.
    let first = fetched(&mut rx, |r| r.trigger == "commit").await;
    assert!(first.ok);
    // Quiescence: max_delay (2 s) bounds when the trailing fetch starts; give it that plus slack.
    let mut seen = 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if matches!(ev, DaemonEvent::Fetched(ref r) if r.trigger == "commit") {
            seen += 1;
        }
    }
    let stats = handle.shutdown().await;
    let fetches = stats.fetches["site"] - before;
    assert!(fetches <= 2 + pauses && seen <= 2 + pauses, "50 messages ({pauses} pauses over the quiet window) led to {fetches} fetches ({seen} results): {stats:?}");
    assert!(stats.coalesced >= 48u64.saturating_sub(2 * pauses), "{stats:?}");
    assert!(has_commit(&clone, &new));
}

#[tokio::test]
async fn different_repos_fetch_in_parallel_up_to_max_parallel() {
    for (max_parallel, expect) in [(2, 2), (1, 1)] {
        let t = Target::embedded().await;
        let repos = Repos::new();
        repos.create("a");
        repos.create("b");
        let (ca, cb) = (repos.clone_for("s", "a"), repos.clone_for("s", "b"));
        let topics = Topics::new(&t);
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (n2, p2) = (now.clone(), peak.clone());
        let inner = deploykit::fetch::daemon::default_runner();
        // The real fetch, held for 300 ms so overlaps are visible.
        let runner: Runner = Arc::new(move |name, repo, refname, stale| {
            let c = n2.fetch_add(1, Ordering::SeqCst) + 1;
            p2.fetch_max(c, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            let r = inner(name, repo, refname, stale);
            n2.fetch_sub(1, Ordering::SeqCst);
            r
        });
        let server = t.client().await;
        let cfg = config(&topics, "s", &[("a", &ca), ("b", &cb)], &format!("max_parallel = {max_parallel}"));
        let handle = FetchDaemon::start_with(cfg, server, DaemonOptions { runner, ..DaemonOptions::default() }).await.unwrap();
        let mut rx = handle.subscribe();
        fetched(&mut rx, |r| r.repo == "a" || r.repo == "b").await;
        fetched(&mut rx, |r| r.repo == "a" || r.repo == "b").await;
        handle.shutdown().await;
        assert_eq!(peak.load(Ordering::SeqCst), expect, "max_parallel = {max_parallel}");
    }
}

#[tokio::test]
async fn hostile_repo_names_and_refnames_are_rejected_without_git() {
    let Rig { t, repos, clone, topics, server: _, handle, mut rx } = Rig::start().await;
    let before = handle.stats();
    let refs_before = git(&clone, &["for-each-ref"]);
    let hook = t.client().await;
    let mut events = event_lines(&hook, &topics.events).await;
    repos.commit("site", "not to be fetched");
    let (old, new) = repos.push("site");
    let hostile = [
        ("site", "--upload-pack=touch /tmp/pwned"),
        ("site", "-x"),
        ("site", "refs/heads/../../etc"),
        ("site", "refs/heads/a\nb"),
        ("site", "refs/heads/a\0b"),
        ("-site", "refs/heads/master"),
        ("../site", "refs/heads/master"),
        ("site\n", "refs/heads/master"),
        ("si\0te", "refs/heads/master"),
    ];
    for (repo, refname) in hostile {
        let c = commit_msg(repo, &old, &new, refname);
        let body = serde_json::to_vec(&c).unwrap();
        let mut opts = SendOptions::default();
        opts.headers.push("dk-type", "commit");
        opts.headers.push("dk-version", "1");
        hook.send_with(&topics.commits, body, opts).await.unwrap();
        let (r, f) = next(&mut rx, |e| match e {
            DaemonEvent::Rejected { repo, refname, .. } => Some((repo.clone(), refname.clone())),
            DaemonEvent::Started { repo, .. } => {
                panic!("a fetch of {repo} started for a hostile message")
            }
            _ => None,
        })
        .await;
        assert_eq!((r.as_str(), f.as_str()), (repo, refname));
        let line = event_containing(&mut events, "problem: rejected").await;
        assert_eq!(line.host.as_deref(), Some("web01"));
        assert!(!line.text.contains('\n') && !line.text.contains('\0'), "{:?}", line.text);
    }
    let after = handle.shutdown().await;
    assert_eq!(after.rejected, before.rejected + hostile.len() as u64);
    assert_eq!(after.fetches, before.fetches, "no git operation for hostile input");
    assert_eq!(git(&clone, &["for-each-ref"]), refs_before, "the clone is untouched");
    assert!(!has_commit(&clone, &new));
}

#[tokio::test]
async fn undecodable_messages_give_a_problem_line_and_the_daemon_lives_on() {
    let Rig { t, repos, clone: _, topics, server: _, handle, mut rx } = Rig::start().await;
    let hook = t.client().await;
    let mut events = event_lines(&hook, &topics.events).await;
    let mut opts = SendOptions::default();
    opts.headers.push("dk-type", "commit");
    opts.headers.push("dk-version", "1");
    hook.send_with(&topics.commits, "{not json", opts).await.unwrap();
    let line = event_containing(&mut events, "problem:").await;
    assert!(line.text.contains("bad commit JSON"), "{:?}", line.text);
    // Still working.
    repos.commit("site", "after garbage");
    let (old, new) = repos.push("site");
    Publisher::new(hook.clone(), "git-hook")
        .destinations(Destinations { commits: topics.commits.clone(), events: t.dest("topic"), ..Destinations::default() })
        .commit(&commit_msg("site", &old, &new, "refs/heads/master"))
        .await
        .unwrap();
    let r = fetched(&mut rx, |r| r.trigger == "commit").await;
    assert_eq!(r.new_head.as_deref(), Some(new.as_str()));
    assert_eq!(handle.shutdown().await.undecodable, 1);
}

#[tokio::test]
async fn reload_adds_a_repo_without_reconnecting() {
    let t = Target::embedded().await;
    let repos = Repos::new();
    repos.create("site");
    repos.create("blog");
    let site = repos.clone_for("web01", "site");
    let blog = repos.clone_for("web01", "blog");
    let topics = Topics::new(&t);
    let server = t.client().await;
    let (handle, mut rx) = start(config(&topics, "web01", &[("site", &site)], ""), server.clone(), DaemonOptions::default()).await;
    let State::Ready(generation) = server.state() else { panic!("not ready") };

    handle.reload(config(&topics, "web01", &[("site", &site), ("blog", &blog)], "")).await.unwrap();
    let r = fetched(&mut rx, |r| r.repo == "blog").await;
    assert_eq!(r.trigger, "reload");
    let hook = t.client().await;
    repos.commit("blog", "new post");
    let (old, new) = repos.push("blog");
    let out = encode(&commit_msg("blog", &old, &new, "refs/heads/master"), Wire::Json).unwrap();
    hook.send_with(&topics.commits, out.body, SendOptions { headers: out.headers, ..SendOptions::default() }).await.unwrap();
    let r = fetched(&mut rx, |r| r.repo == "blog" && r.trigger == "commit").await;
    assert_eq!(r.new_head.as_deref(), Some(new.as_str()));
    assert!(has_commit(&blog, &new));
    assert_eq!(server.state(), State::Ready(generation), "the connection was kept");

    // A changed commit topic is re-subscribed (still the same connection).
    let moved = Topics { commits: t.dest("topic"), events: topics.events.clone(), results: topics.results.clone() };
    handle.reload(config(&moved, "web01", &[("site", &site), ("blog", &blog)], "")).await.unwrap();
    repos.commit("site", "on the new topic");
    let (old, new) = repos.push("site");
    let out = encode(&commit_msg("site", &old, &new, "refs/heads/master"), Wire::Json).unwrap();
    hook.send_with(&moved.commits, out.body, SendOptions { headers: out.headers, ..SendOptions::default() }).await.unwrap();
    let r = fetched(&mut rx, |r| r.repo == "site" && r.trigger == "commit").await;
    assert_eq!(r.new_head.as_deref(), Some(new.as_str()));
    assert_eq!(server.state(), State::Ready(generation));
    handle.shutdown().await;
}

#[tokio::test]
async fn a_push_while_the_broker_is_down_is_fetched_by_the_reconnect_reconcile() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let addr = broker.local_addr();
    let t = Target { kind: Kind::Embedded, url: broker.url(), broker: None };
    let repos = Repos::new();
    repos.create("site");
    let clone = repos.clone_for("web01", "site");
    let topics = Topics::new(&t);
    let mut cfg = t.config();
    cfg.url.options.max_reconnect_delay = Duration::from_millis(200);
    let server = Client::connect(cfg).await.unwrap();
    let (handle, mut rx) = start(config(&topics, "web01", &[("site", &clone)], ""), server.clone(), DaemonOptions::default()).await;

    broker.shutdown().await;
    repos.commit("site", "pushed while the bus is down");
    let (_, new) = repos.push("site");
    // The hook's message is lost with the broker; the reconnect reconcile must catch up.
    let broker = Broker::start(BrokerConfig { listen: addr, ..BrokerConfig::default() }).await.expect("broker restarts on the same port");
    let r = fetched(&mut rx, |r| r.trigger == "reconnect").await;
    assert!(r.ok, "{r:?}");
    assert!(has_commit(&clone, &new), "the server ends with the pushed commit");
    handle.shutdown().await;
    let _ = server.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_the_running_fetch() {
    let t = Target::embedded().await;
    let repos = Repos::new();
    repos.create("site");
    let clone = repos.clone_for("web01", "site");
    let topics = Topics::new(&t);
    let inner = deploykit::fetch::daemon::default_runner();
    let runner: Runner = Arc::new(move |n, r, rf, s| {
        std::thread::sleep(Duration::from_millis(300));
        inner(n, r, rf, s)
    });
    let server = t.client().await;
    let handle = FetchDaemon::start_with(config(&topics, "web01", &[("site", &clone)], ""), server, DaemonOptions { runner, ..DaemonOptions::default() }).await.unwrap();
    // The startup fetch is running (300 ms); shutdown waits for it.
    let stats = handle.shutdown().await;
    assert_eq!(stats.fetches["site"], 1);
    assert_eq!(stats.finished, 1, "{stats:?}");
}

#[tokio::test]
async fn the_interval_reconcile_catches_a_push_whose_message_never_came() {
    let t = Target::embedded().await;
    let repos = Repos::new();
    repos.create("site");
    let clone = repos.clone_for("web01", "site");
    let topics = Topics::new(&t);
    let server = t.client().await;
    let mut cfg = config(&topics, "web01", &[("site", &clone)], "");
    cfg.reconcile_interval = Some(Duration::from_millis(300));
    let (handle, mut rx) = start(cfg, server.clone(), DaemonOptions::default()).await;
    repos.commit("site", "pushed, but no commit message is ever published");
    let (_, new) = repos.push("site");
    // Interval reconciles keep coming; one after the push brings the commit in.
    loop {
        let r = fetched(&mut rx, |r| r.trigger == "interval").await;
        assert!(r.ok, "{r:?}");
        if has_commit(&clone, &new) {
            break;
        }
    }
    handle.shutdown().await;
    let _ = server.disconnect().await;
}

#[tokio::test]
async fn a_failed_fetch_is_retried_with_backoff_and_its_commit_still_goes_out() {
    // The rig's daemon has no interval reconcile: only the retry can bring the commit in.
    let Rig { t, repos, clone, topics, server, handle, mut rx } = Rig::start().await;
    let hook = t.client().await;
    let mut events = event_lines(&hook, &topics.events).await;
    repos.commit("site", "second");
    let (old, new) = repos.push("site");
    // The git server goes away just before the commit message arrives.
    let away = repos.central("site").with_extension("away");
    std::fs::rename(repos.central("site"), &away).unwrap();
    let publisher = Publisher::new(hook.clone(), "git-hook").destinations(Destinations { commits: topics.commits.clone(), events: t.dest("topic"), ..Destinations::default() });
    publisher.commit(&commit_msg("site", &old, &new, "refs/heads/master")).await.unwrap();
    let failed = fetched(&mut rx, |r| r.trigger == "commit").await;
    assert!(!failed.ok, "{failed:?}");
    assert!(!has_commit(&clone, &new));
    // The first retry (after 1 s) may still fail; once the server is back, one succeeds.
    std::fs::rename(&away, repos.central("site")).unwrap();
    let r = fetched(&mut rx, |r| r.trigger == "retry" && r.ok).await;
    assert_eq!(r.new_head.as_deref(), Some(new.as_str()));
    assert_eq!(r.correlation_id.as_deref(), Some(format!("cid-{new}").as_str()), "the retry keeps the commit's correlation id");
    assert!(has_commit(&clone, &new));
    let line = event_containing(&mut events, "fetched change").await;
    assert_eq!(line.text, format!("fetched change: [site] refs/heads/master {new}"));
    assert!(handle.stats().retries >= 1);
    // A success ends the retries: no further `retry` result within 3 s (the next would come after 2 s).
    let more = tokio::time::timeout(Duration::from_secs(3), fetched(&mut rx, |r| r.trigger == "retry")).await;
    assert!(more.is_err(), "retried after a success: {more:?}");
    handle.shutdown().await;
    let _ = server.disconnect().await;
}
