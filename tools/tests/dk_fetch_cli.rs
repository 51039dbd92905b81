//! dk-fetch's command line: --check, --once, --help, run as the built binary.

use std::process::Command;

fn dk_fetch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-fetch"));
    c.env_remove("DK_BROKER_URL");
    c
}

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dk-fetch-cli-{}-{}", std::process::id(), name));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("fetch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_on_a_broken_config_exits_1_naming_the_line() {
    let p = tmp("syntax", "node = \"web01\"\n\n[repos.site]\npath = /srv/git/site\n");
    let out = dk_fetch().arg("--check").arg("--config").arg(&p).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("{}:4:", p.display())), "names the file and line 4: {text}");
}

#[test]
fn check_on_a_missing_repo_path_exits_1_naming_the_key() {
    let p = tmp("path", "node = \"web01\"\n[repos.site]\npath = \"/nonexistent/dk-fetch-test\"\nmode = \"normal\"\n");
    let out = dk_fetch().arg("--check").arg("--config").arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("repos.site"), "{text}");
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = dk_fetch().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("--once") && text.contains("Exit codes"), "{text}");
}

#[test]
fn once_without_a_broker_fetches_and_reports_failure() {
    let p = tmp("once", "node = \"web01\"\n[broker]\nurl = \"stomp://127.0.0.1:1\"\n[repos.site]\npath = \"/nonexistent/dk-fetch-test\"\nmode = \"normal\"\n");
    let out = dk_fetch().args(["--once", "--connect-attempts", "1", "--config"]).arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("site: FAILED"), "{text}");
}

// ---------------------------------------------------------------------------
// --import-legacy, and the daemon as a real process: SIGHUP reload, SIGTERM exit.
// Synchronisation is on the daemon's log lines (stderr, `-v`) and on the bus
// (FetchResult messages), each with a bounded wait; never on sleeps.
// ---------------------------------------------------------------------------

mod common;

use common::{broker, git, Proc, TmpDir};
use deploykit::message::{decode, Commit, Destinations, FetchResult, Message, Publisher, Source};
use deploykit::stomp::{Client, ClientConfig, SubscribeOptions, Subscription};

use std::path::{Path, PathBuf};
use std::process::Stdio;

use std::time::{Duration, Instant};

/// Central bare repo NAME.git with one commit, a work clone, and a server clone; returns the server clone.
fn make_repo(root: &Path, name: &str) -> PathBuf {
    let central = root.join(format!("{name}.git"));
    let work = root.join(format!("work-{name}"));
    let clone = root.join("server").join(name);
    std::fs::create_dir_all(root.join("server")).unwrap();
    git(root, &["init", "-q", "--bare", central.to_str().unwrap()]);
    git(root, &["clone", "-q", central.to_str().unwrap(), work.to_str().unwrap()]);
    commit_and_push(root, name, "first");
    git(root, &["clone", "-q", central.to_str().unwrap(), clone.to_str().unwrap()]);
    clone
}

/// Commits in the work clone and pushes to master; returns (oldrev, newrev).
fn commit_and_push(root: &Path, name: &str, text: &str) -> (String, String) {
    let work = root.join(format!("work-{name}"));
    let head = Command::new("git").arg("-C").arg(&work).args(["rev-parse", "--verify", "-q", "HEAD"]).output().unwrap();
    let old = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    std::fs::write(work.join("file.txt"), text).unwrap();
    git(&work, &["add", "file.txt"]);
    git(&work, &["commit", "-q", "-m", text]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/master"]);
    (old, git(&work, &["rev-parse", "HEAD"]))
}

fn has_commit(clone: &Path, rev: &str) -> bool {
    Command::new("git").arg("-C").arg(clone).args(["cat-file", "-e", &format!("{rev}^{{commit}}")]).stderr(Stdio::null()).status().unwrap().success()
}

/// The next FetchResult on `sub` matching `pred` (10 s bound).
async fn result(sub: &mut Subscription, pred: impl Fn(&FetchResult) -> bool) -> FetchResult {
    let wait = async {
        loop {
            let m = sub.recv().await.expect("results subscription open");
            if let Ok(Message::Fetch(f)) = decode(m.destination(), &m.headers, &m.body) {
                if pred(&f) {
                    return f;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the awaited FetchResult within 10 s")
}

const LEGACY_YAML: &str = "\
stomp-server: localhost
stomp-port: 61613
repo-list:
  site:
    user: www-data
    repo: /srv/git/site
    mode: normal
  docs:
    user: www-data
    repo: /srv/git/docs
    target: /srv/www/docs
    mode: trusting
  puppet:
    user: puppet
    repo: /srv/git/puppet
    target: /etc/puppet/environments
    mode: puppetmaster
";

#[test]
fn import_legacy_prints_toml_that_check_parses() {
    let dir = TmpDir::new("import");
    let yaml = dir.0.join("stomp-git.yaml");
    std::fs::write(&yaml, LEGACY_YAML).unwrap();
    let out = dk_fetch().arg("--import-legacy").arg(&yaml).output().unwrap();
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{toml} {}", String::from_utf8_lossy(&out.stderr));
    for (name, mode) in [("site", "normal"), ("docs", "trusting"), ("puppet", "puppetmaster")] {
        assert!(toml.contains(&format!("[repos.{name}]")) || toml.contains(&format!("[repos.\"{name}\"]")), "names {name}: {toml}");
        assert!(toml.contains(&format!("mode = \"{mode}\"")), "mode {mode}: {toml}");
    }
    assert!(toml.contains("/etc/puppet/environments") && toml.contains("user = \"puppet\""), "{toml}");

    let file = dir.0.join("fetch.toml");
    std::fs::write(&file, &toml).unwrap();
    let out = dk_fetch().arg("--check").arg("--config").arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The paths do not exist here: problems about them are expected, a syntax error is not.
    let prefix = format!("{}:", file.display());
    for line in text.lines() {
        assert!(line.starts_with(&prefix), "every line names the file: {line:?}\n{text}");
        let rest = &line[prefix.len()..];
        assert!(!rest.starts_with(|c: char| c.is_ascii_digit()), "no syntax error (file:LINE:): {line}\n{text}");
    }
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "{text}");
    assert!(!text.contains("unknown field") && !text.contains("invalid"), "{text}");
}

/// The original's stomp-git.yaml carries the broker password in `rserver`.
const LEGACY_YAML_WITH_PASSWORD: &str = "\
rserver: failover://(stomp://gituser:Pa55-w0rd-XYZ@broker01:61613,stomp://gituser:Pa55-w0rd-XYZ@broker02:61613)
stomp-options: initialReconnectDelay=0.01&randomize=false&useExponentialBackOff=true&MaxReconnectDelay=30&BackOffMultiplier=2&MaxReconnectAttempts=0&Backup=false&Timeout=-1
listen-topic: future.git.commits
report-topic: future.events.stomp-git
repo-list:
  site:
    user: www-data
    repo: /srv/git/site
    mode: normal
";

#[test]
fn import_legacy_never_copies_the_broker_password() {
    let dir = TmpDir::new("import-secret");
    let yaml = dir.0.join("stomp-git.yaml");
    std::fs::write(&yaml, LEGACY_YAML_WITH_PASSWORD).unwrap();
    let out = dk_fetch().arg("--import-legacy").arg(&yaml).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(!stdout.contains("Pa55-w0rd-XYZ") && !stderr.contains("Pa55-w0rd-XYZ"), "the password leaked:\n{stdout}\n{stderr}");
    // The broker is imported, its password replaced by a file reference and a note.
    assert!(stdout.contains("failover:(stomp://broker01:61613,stomp://broker02:61613)") && stdout.contains("login = \"gituser\""), "{stdout}");
    assert!(stdout.contains("passcode_file = \"/etc/deploykit/passcode\""), "{stdout}");
    assert!(stderr.contains("/etc/deploykit/passcode"), "a note says where the passcode goes: {stderr}");
    assert!(stdout.contains("commits_topic = \"/topic/future.git.commits\""), "{stdout}");

    // With --secrets-dir the passcode is written there (0600) and the config names it.
    let secrets = dir.0.join("secrets");
    let out = dk_fetch().arg("--import-legacy").arg(&yaml).arg("--secrets-dir").arg(&secrets).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(!stdout.contains("Pa55-w0rd-XYZ") && !stderr.contains("Pa55-w0rd-XYZ"), "{stdout}\n{stderr}");
    let file = secrets.join("passcode");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "Pa55-w0rd-XYZ\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(stdout.contains(&format!("passcode_file = {:?}", file.display().to_string())), "{stdout}");
    let config = dir.0.join("fetch.toml");
    std::fs::write(&config, &stdout).unwrap();
    let c = deploykit::fetch::FetchConfig::load(&config).unwrap();
    assert_eq!((c.broker.login.as_deref(), c.broker.passcode_file.as_deref()), (Some("gituser"), Some(file.as_path())));
}

fn daemon_config(url: &str, topics: &str, repos: &[(&str, &Path)]) -> String {
    let mut text = format!(
        "node = \"web01\"\ncommits_topic = \"/topic/{topics}.commits\"\nevents_topic = \"/topic/{topics}.events\"\nresults_topic = \"/topic/{topics}.results\"\nreconcile_interval = \"off\"\n[broker]\nurl = \"{url}\"\n"
    );
    for (name, path) in repos {
        text.push_str(&format!("[repos.{name}]\npath = {:?}\nmode = \"normal\"\n", path.to_str().unwrap()));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_real_process_keeps_the_old_config_when_broken_and_sigterm_exits_0() {
    let dir = TmpDir::new("signals");
    let root = dir.0.clone();
    let (_broker, url) = broker();
    let one = make_repo(&root, "one");
    let two = make_repo(&root, "two");
    let topics = format!("dkcli{}", std::process::id());
    let file = root.join("fetch.toml");
    std::fs::write(&file, daemon_config(&url, &topics, &[("one", &one)])).unwrap();

    let observer = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
    let mut results = observer.subscribe(&format!("/topic/{topics}.results"), SubscribeOptions::default()).await.unwrap();

    let mut cmd = dk_fetch();
    cmd.arg("-v").arg("--config").arg(&file);
    let mut daemon = Proc::spawn(cmd);
    // Ready: subscribed to the commit topic, then the start-up reconcile (which follows the
    // subscription) published. Its log line may come before or after "dk-fetch started", so the
    // reconcile is awaited on the bus, not in the log.
    daemon.line(Duration::from_secs(15), |l| l.contains("dk-fetch started"));
    let r = result(&mut results, |r| r.repo == "one" && r.trigger == "startup").await;
    assert!(r.ok, "{r:?}");

    // A commit lands in "two" before the daemon knows "two": the reload must fetch it.
    let (_, new_two) = commit_and_push(&root, "two", "second");
    assert!(!has_commit(&two, &new_two));
    std::fs::write(&file, daemon_config(&url, &topics, &[("one", &one), ("two", &two)])).unwrap();
    daemon.signal("HUP");
    daemon.line(Duration::from_secs(10), |l| l.contains("configuration reloaded"));
    let r = result(&mut results, |r| r.repo == "two").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.trigger, "reload");
    assert_eq!(r.new_head.as_deref(), Some(new_two.as_str()));
    assert!(has_commit(&two, &new_two), "the added repo's clone has the pushed commit");

    // A broken config on SIGHUP: refused, the old one (with "two") stays in force.
    std::fs::write(&file, "node = \"web01\"\n[repos.two]\npath = /not/quoted\n").unwrap();
    daemon.signal("HUP");
    daemon.line(Duration::from_secs(10), |l| l.contains("new configuration refused; the old one stays"));
    let (old, new) = commit_and_push(&root, "two", "third");
    let commit = Commit {
        repo: "two".into(),
        oldrev: old,
        newrev: new.clone(),
        refname: "refs/heads/master".into(),
        source: Source::Git,
        svn: None,
        commits: Vec::new(),
        correlation_id: Some(format!("cid-{new}")),
    };
    let publisher = Publisher::new(observer.clone(), "git-hook").destinations(Destinations {
        commits: format!("/topic/{topics}.commits"),
        events: format!("/topic/{topics}.hook"),
        ..Destinations::default()
    });
    publisher.commit(&commit).await.unwrap();
    let r = result(&mut results, |r| r.repo == "two" && r.trigger == "commit").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.new_head.as_deref(), Some(new.as_str()));
    assert!(has_commit(&two, &new));

    // SIGTERM: graceful exit with status 0, bounded.
    daemon.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = daemon.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "dk-fetch still running 10 s after SIGTERM");
        // Draining stderr lines is the wait; it also bounds the loop's pace.
        let _ = daemon.lines.recv_timeout(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    observer.disconnect().await.unwrap();
}

// ---------------------------------------------------------------------------
// --check on a fresh host (issue #13): the shipped unit runs `--check` as
// ExecStartPre, so a target the daemon would create must not be a problem.
// ---------------------------------------------------------------------------

#[test]
fn check_accepts_targets_the_daemon_creates_and_once_creates_them() {
    let dir = TmpDir::new("fresh-target");
    let clone = make_repo(&dir.0, "site");
    // Neither the targets nor their parents exist yet.
    let www = dir.0.join("fresh/srv/www");
    let envs = dir.0.join("fresh/etc/puppet/environments");
    let file = dir.0.join("fetch.toml");
    std::fs::write(
        &file,
        format!(
            "node = \"web01\"\n[broker]\nurl = \"stomp://127.0.0.1:1\"\n\
             [repos.site]\npath = {clone:?}\nmode = \"trusting\"\ntarget = {site:?}\n\
             [repos.puppet]\npath = {clone:?}\nmode = \"puppetmaster\"\ntarget = {envs:?}\n",
            clone = clone.to_str().unwrap(),
            site = www.join("site").to_str().unwrap(),
            envs = envs.to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = dk_fetch().arg("--check").arg("--config").arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text, format!("{}: ok (2 repos)\n", file.display()));

    // And the daemon does create them (what --check promised).
    let out = dk_fetch().args(["--once", "--connect-attempts", "1", "--config"]).arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(www.join("site/file.txt").is_file(), "trusting checked out into the created target: {text}");
    assert!(envs.join("master/file.txt").is_file(), "puppetmaster created its environment: {text}");
}

#[test]
fn check_names_a_target_that_cannot_be_created() {
    let dir = TmpDir::new("file-parent");
    let clone = make_repo(&dir.0, "site");
    let afile = dir.0.join("afile");
    std::fs::write(&afile, "not a directory\n").unwrap();
    let file = dir.0.join("fetch.toml");
    std::fs::write(
        &file,
        format!(
            "node = \"web01\"\n[repos.site]\npath = {clone:?}\nmode = \"trusting\"\ntarget = {t:?}\n\
             [repos.deep]\npath = {clone:?}\nmode = \"tags\"\ntarget = {deep:?}\n",
            clone = clone.to_str().unwrap(),
            t = afile.join("www").to_str().unwrap(),
            deep = afile.join("tags/site").to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = dk_fetch().arg("--check").arg("--config").arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    let f = file.display();
    let a = afile.display();
    assert_eq!(
        text,
        format!(
            "{f}: repos.deep.target: cannot create {a}/tags/site (where checkouts go): {a} is not a directory\n\
             {f}: repos.site.target: {a} (where checkouts go) is not a directory\n"
        )
    );
}

// ---------------------------------------------------------------------------
// trigger = "build" (issue #16): the real dk-notify, in a Jenkins job step's
// environment, tells the real dk-fetch that a build is green; the checkout
// moves to exactly the built commit. Synchronised on the bus (FetchResult).
// ---------------------------------------------------------------------------

/// dk-notify as a Jenkins step runs it: the job's environment, nothing else inherited.
fn dk_notify(url: &str, args: &[&str], job: &str, number: &str, commit: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-notify"));
    c.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("DK_BROKER_URL", url);
    c.args(["--connect-attempts", "3"]).args(args);
    c.env("BUILD_NUMBER", number).env("JOB_NAME", job).env("BUILD_URL", format!("http://ci.example.com/job/{job}/{number}/"));
    c.env("GIT_BRANCH", "origin/master").env("GIT_COMMIT", commit);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dk_notify_success_moves_a_build_triggered_checkout_to_the_built_commit() {
    let dir = TmpDir::new("build-trigger");
    let root = dir.0.clone();
    let (_broker, url) = broker();
    let clone = make_repo(&root, "site");
    let target = root.join("www/site");
    let state = root.join("state");
    for wire in ["json", "legacy"] {
        // Default topics on both sides (the broker is this test's own): dk-notify's
        // builds topic is dk-fetch's, in either wire.
        let file = root.join(format!("fetch-{wire}.toml"));
        std::fs::write(
            &file,
            format!(
                "node = \"web01\"\nwire = {wire:?}\nresults_topic = \"/topic/dkcli.results\"\nreconcile_interval = \"off\"\nstate_dir = {:?}\n\
                 [broker]\nurl = \"{url}\"\n[repos.site]\npath = {:?}\nmode = \"trusting\"\ntarget = {:?}\ntrigger = \"build\"\njobs = [\"site-tests\"]\n",
                state.to_str().unwrap(),
                clone.to_str().unwrap(),
                target.to_str().unwrap()
            ),
        )
        .unwrap();
        let observer = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
        let mut results = observer.subscribe("/topic/dkcli.results", SubscribeOptions::default()).await.unwrap();
        let mut cmd = dk_fetch();
        cmd.arg("-v").arg("--config").arg(&file);
        let mut daemon = Proc::spawn(cmd);
        daemon.line(Duration::from_secs(15), |l| l.contains("dk-fetch started"));
        let r = result(&mut results, |r| r.trigger == "startup").await;
        assert!(r.ok, "{wire}: {r:?}");

        let (_, built) = commit_and_push(&root, "site", &format!("{wire}: built"));
        let (_, tip) = commit_and_push(&root, "site", &format!("{wire}: newer, not built"));
        // A failure of the tip never moves it (had it, the older success below could not
        // move it back); the success does, to exactly the built commit.
        let out = tokio::task::spawn_blocking({
            let url = url.clone();
            let (wire, tip) = (wire.to_owned(), tip.clone());
            move || dk_notify(&url, &["--wire", &wire, "failure"], "site-tests", "43", &tip).output().unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = tokio::task::spawn_blocking({
            let url = url.clone();
            let (wire, built) = (wire.to_owned(), built.clone());
            move || dk_notify(&url, &["--wire", &wire, "success"], "site-tests", "42", &built).output().unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r = result(&mut results, |r| r.trigger == "build").await;
        assert!(r.ok, "{wire}: {r:?}");
        assert_eq!(r.new_head.as_deref(), Some(built.as_str()), "{wire}");
        if wire == "json" {
            assert_eq!(r.correlation_id.as_deref(), Some(built.as_str()), "dk-notify's correlation id (GIT_COMMIT) is kept");
        }
        assert_eq!(deploykit::git::checkout::current_commit(&target).as_deref(), Some(built.as_str()), "{wire}: the built commit, not the tip {tip}");
        assert_eq!(std::fs::read_to_string(target.join("file.txt")).unwrap(), format!("{wire}: built"));

        daemon.signal("TERM");
        let (code, _) = daemon.wait_exit(Duration::from_secs(15));
        assert_eq!(code, Some(0), "{wire}");
        observer.disconnect().await.unwrap();
    }
    assert_eq!(std::fs::read_to_string(state.join("site.built")).unwrap().trim().len(), 40, "the newest built commit is recorded");
}

#[test]
fn check_names_file_key_line_and_column_of_a_bad_trigger() {
    let base = "node = \"web01\"\n[repos.site]\npath = \"/srv/git/site\"\nmode = \"trusting\"\ntarget = \"/srv/www/site\"\n";
    for (extra, expect) in [
        ("trigger = \"on-green\"\n", "repos.site.trigger: unknown trigger \"on-green\" (expected commit, build) (line 6, column 11)"),
        ("trigger = \"build\"\n", "repos.site: trigger = \"build\" needs jobs = [\"JOB\", …] (the CI jobs whose success triggers a fetch) (line 6, column 11)"),
        ("trigger = \"build\"\njobs = []\n", "repos.site.jobs: must name at least one job with trigger = \"build\" (line 7, column 8)"),
    ] {
        let p = tmp("trigger", &format!("{base}{extra}"));
        let out = dk_fetch().arg("--check").arg("--config").arg(&p).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(&format!("{}: {expect}", p.display())), "{text}");
    }
}
