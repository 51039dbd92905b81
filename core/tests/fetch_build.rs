//! dk-fetch with `trigger = "build"` (issue #16): a repo fetches and checks out
//! exactly the built commit when a listed job's success arrives, and nothing
//! else moves it. Real git repositories, the embedded broker, in-process
//! daemons observed through their event broadcast — no sleeps as synchronisation.

mod common;

use common::fleet::{git, Tmp};
use common::targets::Target;
use deploykit::fetch::config::FetchConfig;
use deploykit::fetch::daemon::{recorded_build, DaemonEvent, DaemonHandle, DaemonOptions, FetchDaemon};
use deploykit::git::checkout::current_commit;
use deploykit::message::{decode, encode, Build, BuildStatus, Commit, Event, FetchResult, Message, Source, Wire};
use deploykit::stomp::{Client, SendOptions, SubscribeOptions, Subscription};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::broadcast;

const JOB: &str = "site-tests";

/// A central repo `site.git`, a developer's work clone, web01's clone and its
/// target, a state directory, and the topics of one test.
struct Rig {
    t: Target,
    tmp: Tmp,
    topics: [String; 4],
    hook: Client,
}

impl Rig {
    async fn new() -> Rig {
        let t = Target::embedded().await;
        let tmp = Tmp::new("fetch-build");
        let central = tmp.0.join("site.git");
        git(&tmp.0, &["init", "-q", "--bare", central.to_str().unwrap()]);
        git(&tmp.0, &["clone", "-q", central.to_str().unwrap(), tmp.0.join("work").to_str().unwrap()]);
        let topics = [t.dest("topic"), t.dest("topic"), t.dest("topic"), t.dest("topic")];
        let hook = t.client().await;
        let rig = Rig { t, tmp, topics, hook };
        rig.commit_push("first");
        git(&rig.tmp.0, &["clone", "-q", central.to_str().unwrap(), rig.clone_dir().to_str().unwrap()]);
        rig
    }

    fn work(&self) -> PathBuf {
        self.tmp.0.join("work")
    }
    fn clone_dir(&self) -> PathBuf {
        self.tmp.0.join("web01-site")
    }
    fn target(&self) -> PathBuf {
        self.tmp.0.join("www/site")
    }
    fn state(&self) -> PathBuf {
        self.tmp.0.join("state")
    }
    fn commits(&self) -> &str {
        &self.topics[0]
    }
    fn events(&self) -> &str {
        &self.topics[1]
    }
    fn builds(&self) -> &str {
        &self.topics[3]
    }

    /// Commits `text` in the work clone and pushes it to master; returns the commit.
    fn commit_push(&self, text: &str) -> String {
        std::fs::write(self.work().join("file.txt"), text).unwrap();
        git(&self.work(), &["add", "file.txt"]);
        git(&self.work(), &["commit", "-q", "-m", text]);
        git(&self.work(), &["push", "-q", "origin", "HEAD:refs/heads/master"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    fn config(&self, mode: &str) -> FetchConfig {
        let [commits, events, results, builds] = &self.topics;
        let text = format!(
            "node = \"web01\"\ncommits_topic = {commits:?}\nevents_topic = {events:?}\nresults_topic = {results:?}\nbuilds_topic = {builds:?}\n\
             reconcile_interval = \"off\"\nstate_dir = {:?}\n[broker]\nurl = \"stomp://127.0.0.1:1\"\n\
             [repos.site]\npath = {:?}\nmode = {mode:?}\n{}trigger = \"build\"\njobs = [\"other-job\", {JOB:?}]\n",
            self.state().to_str().unwrap(),
            self.clone_dir().to_str().unwrap(),
            if mode == "dangerous" { String::new() } else { format!("target = {:?}\n", self.target().to_str().unwrap()) },
        );
        FetchConfig::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
    }

    /// Starts a daemon and waits for its startup reconcile.
    async fn start(&self, mode: &str) -> (DaemonHandle, broadcast::Receiver<DaemonEvent>) {
        let (tx, mut rx) = broadcast::channel(4096);
        let server = self.t.client().await;
        let handle = FetchDaemon::start_with(self.config(mode), server, DaemonOptions { observer: Some(tx), ..DaemonOptions::default() }).await.expect("daemon starts");
        let r = fetched(&mut rx, |r| r.trigger == "startup").await;
        assert!(r.ok, "startup fetch: {r:?}");
        (handle, rx)
    }

    async fn send_build(&self, build: &Build, wire: Wire) {
        let out = encode(build, wire).unwrap();
        self.hook.send_with(self.builds(), out.body, SendOptions { headers: out.headers, receipt: true, ..SendOptions::default() }).await.unwrap();
    }

    async fn event_lines(&self) -> Subscription {
        self.hook.subscribe(self.events(), SubscribeOptions::default()).await.unwrap()
    }

    /// What the target shows (trusting mode).
    fn checked_out(&self) -> Option<String> {
        current_commit(&self.target())
    }
}

fn build(job: &str, number: u64, status: BuildStatus, commit: Option<&str>) -> Build {
    Build {
        job: job.into(),
        number,
        status,
        url: Some(format!("http://ci.example.com/job/{job}/{number}/")),
        repo: Some("site".into()),
        branch: Some("origin/master".into()),
        commit: commit.map(str::to_owned),
        duration_ms: None,
        correlation_id: Some(format!("cid-build-{number}")),
    }
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
    tokio::time::timeout(Duration::from_secs(15), wait).await.expect("the awaited daemon event within 15 s")
}

async fn fetched(rx: &mut broadcast::Receiver<DaemonEvent>, pred: impl Fn(&FetchResult) -> bool) -> FetchResult {
    next(rx, |e| match e {
        DaemonEvent::Fetched(r) if pred(r) => Some(r.clone()),
        _ => None,
    })
    .await
}

/// Awaits a `Skipped` for site, panicking if a fetch starts first.
async fn skipped_without_fetch(rx: &mut broadcast::Receiver<DaemonEvent>) -> String {
    next(rx, |e| match e {
        DaemonEvent::Skipped { repo, why } if repo == "site" => Some(why.clone()),
        DaemonEvent::Started { trigger, .. } => panic!("a fetch started ({trigger}) where none should"),
        _ => None,
    })
    .await
}

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

#[tokio::test]
async fn only_a_listed_jobs_success_fetches_and_it_checks_out_exactly_the_built_commit() {
    let rig = Rig::new().await;
    let (handle, mut rx) = rig.start("trusting").await;
    assert_eq!(rig.checked_out(), None, "without a recorded build the startup reconcile only fetches");
    let mut events = rig.event_lines().await;
    let built = rig.commit_push("second");

    // A commit message for the build-triggered repo: nothing fetched.
    let c = Commit {
        repo: "site".into(),
        oldrev: "0".repeat(40),
        newrev: built.clone(),
        refname: "refs/heads/master".into(),
        source: Source::Git,
        svn: None,
        commits: Vec::new(),
        correlation_id: None,
    };
    let out = encode(&c, Wire::Json).unwrap();
    rig.hook.send_with(rig.commits(), out.body, SendOptions { headers: out.headers, ..SendOptions::default() }).await.unwrap();
    let why = skipped_without_fetch(&mut rx).await;
    assert!(why.contains("trigger = build"), "{why}");

    // Started, failure, unstable, aborted of the listed job: nothing fetched.
    for (n, status) in [(1, BuildStatus::Started), (2, BuildStatus::Failure), (3, BuildStatus::Unstable), (4, BuildStatus::Aborted)] {
        rig.send_build(&build(JOB, n, status, Some(&built)), Wire::Json).await;
        let why = skipped_without_fetch(&mut rx).await;
        assert!(why.contains(status.as_str()), "{why}");
    }
    // A success of a job no repo lists: nothing fetched.
    rig.send_build(&build("unrelated", 5, BuildStatus::Success, Some(&built)), Wire::Json).await;
    next(&mut rx, |e| match e {
        DaemonEvent::IgnoredBuild { job } if job == "unrelated" => Some(()),
        DaemonEvent::Started { .. } => panic!("an unlisted job's success started a fetch"),
        _ => None,
    })
    .await;
    assert!(!has_commit(&rig.clone_dir(), &built), "nothing was fetched so far");

    // A newer tip is pushed after the build: the success still checks out exactly the built commit.
    let tip = rig.commit_push("third, not built yet");
    rig.send_build(&build(JOB, 6, BuildStatus::Success, Some(&built)), Wire::Json).await;
    let r = fetched(&mut rx, |r| r.trigger == "build").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.new_head.as_deref(), Some(built.as_str()));
    assert_eq!(r.correlation_id.as_deref(), Some("cid-build-6"), "the result keeps the build's correlation id");
    assert_eq!(rig.checked_out().as_deref(), Some(built.as_str()), "the built commit, not the tip {tip}");
    assert_eq!(std::fs::read_to_string(rig.target().join("file.txt")).unwrap(), "second");
    assert!(has_commit(&rig.clone_dir(), &tip), "the fetch brought the tip in too");
    assert_eq!(recorded_build(&rig.state(), "site").as_deref(), Some(built.as_str()), "recorded durably");
    let line = event_containing(&mut events, "fetched change").await;
    assert_eq!(line.text, format!("fetched change: [site] build {JOB} #6 {built}"));
    assert_eq!(line.correlation_id.as_deref(), Some("cid-build-6"));
    let stats = handle.shutdown().await;
    assert_eq!(stats.fetches["site"], 2, "startup and the one success: {stats:?}");
    assert_eq!(stats.builds, 6);
}

fn has_commit(clone: &Path, rev: &str) -> bool {
    Command::new("git").arg("-C").arg(clone).args(["cat-file", "-e", &format!("{rev}^{{commit}}")]).stderr(std::process::Stdio::null()).status().unwrap().success()
}

#[tokio::test]
async fn the_originals_text_success_works_with_and_without_a_commit() {
    let rig = Rig::new().await;
    let (handle, mut rx) = rig.start("trusting").await;
    let built = rig.commit_push("second");
    let tip = rig.commit_push("third");
    let b = build(JOB, 7, BuildStatus::Success, Some(&built));
    let out = encode(&b, Wire::Legacy).unwrap();
    assert!(out.headers.get("dk-type").is_none(), "the legacy text form");
    rig.send_build(&b, Wire::Legacy).await;
    let r = fetched(&mut rx, |r| r.trigger == "build").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(rig.checked_out().as_deref(), Some(built.as_str()));
    // No commit in the subject: documented fallback to the branch tip.
    rig.send_build(&build(JOB, 8, BuildStatus::Success, None), Wire::Legacy).await;
    let r = fetched(&mut rx, |r| r.trigger == "build").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(rig.checked_out().as_deref(), Some(tip.as_str()), "a success without a commit checks out the branch tip");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_forged_build_naming_another_branch_or_no_commit_id_is_rejected() {
    let rig = Rig::new().await;
    let (handle, mut rx) = rig.start("trusting").await;
    let mut events = rig.event_lines().await;
    let good = rig.commit_push("second");
    rig.send_build(&build(JOB, 1, BuildStatus::Success, Some(&good)), Wire::Json).await;
    fetched(&mut rx, |r| r.trigger == "build" && r.ok).await;
    assert_eq!(rig.checked_out().as_deref(), Some(good.as_str()));

    // Hostile commit strings: rejected before anything runs.
    for bad in ["HEAD", "master", "--upload-pack=touch /tmp/pwned", "abc", "abcdefg\n", &"a".repeat(65), "0123456789abcdeg"] {
        rig.send_build(&build(JOB, 2, BuildStatus::Success, Some(bad)), Wire::Json).await;
        let (commit, why) = next(&mut rx, |e| match e {
            DaemonEvent::RejectedBuild { commit, why, .. } => Some((commit.clone(), why.clone())),
            DaemonEvent::Started { .. } => panic!("a fetch started for the hostile commit {bad:?}"),
            _ => None,
        })
        .await;
        assert_eq!(commit, bad);
        assert!(why.contains("hexadecimal"), "{why}");
        let line = event_containing(&mut events, "problem: rejected build").await;
        assert!(!line.text.contains('\n'), "{:?}", line.text);
    }

    // A real commit, on another branch: fetched, then refused; the checkout stays.
    git(&rig.work(), &["checkout", "-q", "-b", "evil"]);
    let evil = rig.commit_push_branch("evil", "evil");
    rig.send_build(&build(JOB, 3, BuildStatus::Success, Some(&evil)), Wire::Json).await;
    let (commit, why) = next(&mut rx, |e| match e {
        DaemonEvent::RejectedBuild { commit, why, .. } => Some((commit.clone(), why.clone())),
        _ => None,
    })
    .await;
    assert_eq!(commit, evil);
    assert!(why.contains("not reachable from origin/master"), "{why}");
    let r = fetched(&mut rx, |r| r.trigger == "build").await;
    assert!(!r.ok && r.error.as_deref().unwrap_or("").contains("rejected"), "{r:?}");
    assert!(has_commit(&rig.clone_dir(), &evil), "it was fetched, and verified after the fetch");
    assert_eq!(rig.checked_out().as_deref(), Some(good.as_str()), "the forged build moved nothing");
    assert_eq!(recorded_build(&rig.state(), "site").as_deref(), Some(good.as_str()), "nor the record");
    let line = event_containing(&mut events, "problem: rejected build").await;
    assert!(line.text.contains(&evil) && line.text.contains("not reachable"), "{:?}", line.text);
    assert_eq!(line.correlation_id.as_deref(), Some("cid-build-3"));
    let stats = handle.shutdown().await;
    assert_eq!(stats.retries, 0, "a refusal is not retried");
}

impl Rig {
    fn commit_push_branch(&self, branch: &str, text: &str) -> String {
        std::fs::write(self.work().join("file.txt"), text).unwrap();
        git(&self.work(), &["add", "file.txt"]);
        git(&self.work(), &["commit", "-q", "-m", text]);
        git(&self.work(), &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}

#[tokio::test]
async fn an_older_build_after_a_newer_one_does_not_move_backwards() {
    for mode in ["trusting", "dangerous"] {
        let rig = Rig::new().await;
        let (handle, mut rx) = rig.start(mode).await;
        let older = rig.commit_push("second");
        let newer = rig.commit_push("third");
        let shown = |rig: &Rig| if mode == "dangerous" { Some(git(&rig.clone_dir(), &["rev-parse", "HEAD"])) } else { rig.checked_out() };
        rig.send_build(&build(JOB, 2, BuildStatus::Success, Some(&newer)), Wire::Json).await;
        fetched(&mut rx, |r| r.trigger == "build" && r.ok).await;
        assert_eq!(shown(&rig).as_deref(), Some(newer.as_str()), "{mode}");
        // Build #1 finishes late (or is replayed).
        rig.send_build(&build(JOB, 1, BuildStatus::Success, Some(&older[..12])), Wire::Json).await;
        let why = next(&mut rx, |e| match e {
            DaemonEvent::Skipped { repo, why } if repo == "site" => Some(why.clone()),
            _ => None,
        })
        .await;
        assert!(why.contains(&older) && why.contains(&newer) && why.contains("ancestor"), "{why}");
        let r = fetched(&mut rx, |r| r.trigger == "build").await;
        assert!(r.ok, "{r:?}");
        assert_eq!(shown(&rig).as_deref(), Some(newer.as_str()), "{mode}: never backwards");
        assert_eq!(recorded_build(&rig.state(), "site").as_deref(), Some(newer.as_str()), "{mode}");
        handle.shutdown().await;
    }
}

#[tokio::test]
async fn a_reconcile_after_a_restart_checks_out_the_recorded_build_not_the_tip() {
    let rig = Rig::new().await;
    let (handle, mut rx) = rig.start("trusting").await;
    let built = rig.commit_push("second");
    rig.send_build(&build(JOB, 1, BuildStatus::Success, Some(&built)), Wire::Json).await;
    fetched(&mut rx, |r| r.trigger == "build" && r.ok).await;
    handle.shutdown().await;

    // While dk-fetch is down: a red commit lands on the tip, and the checkout is lost.
    let red = rig.commit_push("red");
    deploykit::git::checkout::remove(&rig.target()).unwrap();
    assert_eq!(rig.checked_out(), None);
    let (handle, mut rx) = rig.start("trusting").await;
    assert_eq!(rig.checked_out().as_deref(), Some(built.as_str()), "the recorded build, not the tip {red}");
    assert!(has_commit(&rig.clone_dir(), &red), "the reconcile fetched");

    // A manual reconcile changes nothing; a green build of the tip then moves it.
    handle.reconcile().await.unwrap();
    let r = fetched(&mut rx, |r| r.trigger == "manual").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(rig.checked_out().as_deref(), Some(built.as_str()));
    rig.send_build(&build(JOB, 2, BuildStatus::Success, Some(&red)), Wire::Json).await;
    fetched(&mut rx, |r| r.trigger == "build" && r.ok).await;
    assert_eq!(rig.checked_out().as_deref(), Some(red.as_str()));
    handle.shutdown().await;
}

#[tokio::test]
async fn coalesced_builds_check_out_the_newest_whatever_their_order() {
    let rig = Rig::new().await;
    // A slow runner keeps the first fetch running while the others arrive and merge.
    let inner = deploykit::fetch::daemon::default_runner();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate_rx);
    let runner: deploykit::fetch::daemon::Runner = std::sync::Arc::new(move |n, r, req, s| {
        if matches!(req.checkout, deploykit::fetch::ops::Checkout::Built(_)) {
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(20));
        }
        inner(n, r, req, s)
    });
    let (tx, mut rx) = broadcast::channel(4096);
    let server = rig.t.client().await;
    let handle = FetchDaemon::start_with(rig.config("trusting"), server, DaemonOptions { observer: Some(tx), runner, ..DaemonOptions::default() }).await.unwrap();
    fetched(&mut rx, |r| r.trigger == "startup").await;
    let a = rig.commit_push("a");
    let b = rig.commit_push("b");
    let c = rig.commit_push("c");
    rig.send_build(&build(JOB, 1, BuildStatus::Success, Some(&a)), Wire::Json).await;
    next(&mut rx, |e| matches!(e, DaemonEvent::Started { trigger, .. } if trigger == "build").then_some(())).await;
    // While #1 runs: #3 (newest) then #2, merged into one pending request.
    rig.send_build(&build(JOB, 3, BuildStatus::Success, Some(&c)), Wire::Json).await;
    rig.send_build(&build(JOB, 2, BuildStatus::Success, Some(&b)), Wire::Json).await;
    // Both are in once a later message on the same subscription was handled: a build of a job no repo lists.
    rig.send_build(&build("no-such-job", 1, BuildStatus::Success, Some(&c)), Wire::Json).await;
    next(&mut rx, |e| matches!(e, DaemonEvent::IgnoredBuild { job } if job == "no-such-job").then_some(())).await;
    assert_eq!(handle.stats().builds, 4, "#1, #3, #2 and the marker");
    gate_tx.send(()).unwrap();
    gate_tx.send(()).unwrap();
    fetched(&mut rx, |r| r.trigger == "build").await;
    let r = fetched(&mut rx, |r| r.trigger == "build").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(rig.checked_out().as_deref(), Some(c.as_str()), "the newest of the merged builds");
    let stats = handle.shutdown().await;
    assert_eq!(stats.fetches["site"], 3, "startup, #1, and #2 + #3 merged: {stats:?}");
}

#[tokio::test]
async fn a_reload_to_trigger_build_subscribes_the_builds_topic_without_reconnecting() {
    let rig = Rig::new().await;
    let mut commit_cfg = rig.config("trusting");
    let site = commit_cfg.repos.get_mut("site").unwrap();
    site.trigger = deploykit::fetch::Trigger::Commit;
    site.jobs.clear();
    assert!(!commit_cfg.wants_builds());
    let (tx, mut rx) = broadcast::channel(4096);
    let server = rig.t.client().await;
    let handle = FetchDaemon::start_with(commit_cfg, server.clone(), DaemonOptions { observer: Some(tx), ..DaemonOptions::default() }).await.unwrap();
    let r = fetched(&mut rx, |r| r.trigger == "startup").await;
    let first = r.new_head.clone().unwrap();
    assert_eq!(rig.checked_out().as_deref(), Some(first.as_str()), "trigger = commit checks out the tip");
    let generation = server.state();

    // Commit-triggered: a build message is not for it.
    let built = rig.commit_push("second");
    rig.send_build(&build(JOB, 1, BuildStatus::Success, Some(&built)), Wire::Json).await;
    // (No builds subscription: nothing to await; the reload below is what is tested.)
    handle.reload(rig.config("trusting")).await.unwrap();
    let resubscribed = next(&mut rx, |e| match e {
        DaemonEvent::Reloaded { resubscribed } => Some(*resubscribed),
        _ => None,
    })
    .await;
    assert!(!resubscribed, "the commit topic is unchanged");
    // The changed repo is synced once (no record yet: fetch only, the checkout stays).
    let r = fetched(&mut rx, |r| r.trigger == "reload").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(rig.checked_out().as_deref(), Some(first.as_str()));
    rig.send_build(&build(JOB, 2, BuildStatus::Success, Some(&built)), Wire::Json).await;
    let r = fetched(&mut rx, |r| r.trigger == "build").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(rig.checked_out().as_deref(), Some(built.as_str()));
    assert_eq!(server.state(), generation, "the connection was kept");
    let stats = handle.shutdown().await;
    assert_eq!(stats.builds, 1, "only the build sent after the reload was received: {stats:?}");
}

/// A successful build its publisher resent with the same `dk-id` (the JVM notifier, after a
/// receipt lost in a broker restart) fetches and checks out once; the repeat is counted.
#[tokio::test]
async fn a_resent_build_with_the_same_dk_id_is_acted_on_once() {
    let rig = Rig::new().await;
    let (handle, mut rx) = rig.start("trusting").await;
    let built = rig.commit_push("second");
    let b = build(JOB, 7, BuildStatus::Success, Some(&built));
    for _ in 0..2 {
        let out = encode(&b, Wire::Json).unwrap().with_id(Some("jvm-notifier-1"));
        rig.hook.send_with(rig.builds(), out.body, SendOptions { headers: out.headers, receipt: true, ..SendOptions::default() }).await.unwrap();
    }
    // The marker: a started build (no id) is skipped; messages are taken in order, so both copies are in before it.
    rig.send_build(&build(JOB, 8, BuildStatus::Started, Some(&built)), Wire::Json).await;
    let fetches = std::cell::Cell::new(0);
    next(&mut rx, |e| match e {
        DaemonEvent::Started { trigger, .. } if trigger == "build" => {
            fetches.set(fetches.get() + 1);
            None
        }
        DaemonEvent::Skipped { repo, .. } if repo == "site" => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(fetches.get(), 1, "one fetch for the build and its resend");
    let stats = handle.shutdown().await;
    assert_eq!((stats.builds, stats.duplicates), (2, 1), "{stats:?}");
}
