//! dk-reprepro and dk-apt-watch as built binaries: --help, --check, --once
//! exit codes, and the whole Debian package flow between two real processes
//! (a .deb dropped into incoming → reprepro → package message → dk-apt-watch's
//! action → its event line), SIGHUP and SIGTERM. Synchronisation is on log
//! lines and bus messages with bounded waits, never on sleeps.
//!
//! The reprepro parts say so and pass when reprepro is missing, unless
//! DK_REQUIRE_BROKERS=1 (./scripts/test, whose deps.sh installs it).

mod common;

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::message::{decode, Message};
use deploykit::stomp::{Client, ClientConfig, SubscribeOptions, Subscription};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn bin(name: &str) -> Command {
    let path = match name {
        "dk-reprepro" => env!("CARGO_BIN_EXE_dk-reprepro"),
        _ => env!("CARGO_BIN_EXE_dk-apt-watch"),
    };
    let mut c = Command::new(path);
    c.env_remove("DK_BROKER_URL").env_remove("RUST_LOG");
    c
}

fn have_reprepro() -> bool {
    if Command::new("reprepro").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("DK_REQUIRE_BROKERS").as_deref() == Ok("1") {
        panic!("reprepro is not installed but DK_REQUIRE_BROKERS=1: scripts/lib/deps.sh installs it");
    }
    eprintln!("note: reprepro not installed; test skipped (./scripts/test installs it)");
    false
}

/// A temporary directory removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(name: &str) -> TmpDir {
        let p = std::env::temp_dir().join(format!("dk-debs-cli-{}-{name}-{}", std::process::id(), fastrand_u32()));
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// A repository under `root`: reprepro base (bookworm/amd64/main) and incoming; returns the config text.
fn repo(root: &Path, broker: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(root.join("base/conf")).unwrap();
    std::fs::create_dir_all(root.join("incoming")).unwrap();
    std::fs::write(root.join("base/conf/distributions"), "Codename: bookworm\nArchitectures: amd64\nComponents: main\n").unwrap();
    let text = format!(
        "base = {:?}\nspool_dir = {:?}\nsettle = \"200ms\"\npoll_interval = \"500ms\"\n{extra}\n[broker]\nurl = {broker:?}\n[dists.bookworm]\nincoming = {:?}\n",
        root.join("base"),
        root.join("spool"),
        root.join("incoming")
    );
    let file = root.join("reprepro.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The `--metrics-listen 127.0.0.1:0` address a daemon logged.
fn metrics_addr(p: &mut Proc) -> String {
    let line = p.line("serving /healthz and /metrics on http://");
    line.rsplit("http://").next().unwrap().trim().trim_end_matches(|c: char| !c.is_ascii_digit()).to_owned()
}

/// Builds NAME_VERSION_amd64.deb in `root/work`.
fn deb(root: &Path, name: &str, version: &str) -> PathBuf {
    let tree = root.join("work").join(name);
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\nSection: misc\nPriority: optional\nMaintainer: T <t@example.invalid>\nDescription: test\n"),
    )
    .unwrap();
    let out = root.join("work").join(format!("{name}_{version}_amd64.deb"));
    let st = Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&tree).arg(&out).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    out
}

/// A child process killed (and reaped) on drop, with its stderr lines on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawns");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines, seen: Vec::new() }
    }

    /// The next stderr line containing `needle` within WAIT; panics with what was seen otherwise.
    fn line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(e) => panic!("no stderr line with {needle:?} within {WAIT:?} ({e}); seen:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("kill runs");
        assert!(st.success(), "kill -{sig}");
    }

    /// Waits (bounded) for the exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "did not exit within {WAIT:?}; stderr:\n{}", self.seen.join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn help_has_examples_and_exit_codes() {
    for tool in ["dk-reprepro", "dk-apt-watch"] {
        let (code, text) = output(bin(tool).arg("--help"));
        assert_eq!(code, Some(0), "{tool}: {text}");
        assert!(text.contains("Examples:") && text.contains("Exit codes") && text.contains("--config"), "{tool}: {text}");
    }
}

#[test]
fn check_names_the_line_or_key_and_exits_1() {
    let dir = TmpDir::new("check");
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "base = \"/srv/repo\"\n\n[dists.bookworm]\nincoming = /srv/in\n").unwrap();
    let (code, text) = output(bin("dk-reprepro").arg("--check").arg("--config").arg(&bad));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&format!("{}:4:", bad.display())), "{text}");

    let missing = dir.0.join("missing.toml");
    std::fs::write(&missing, "base = \"/nonexistent/dk-repo\"\n[dists.bookworm]\nincoming = \"/nonexistent/dk-in\"\n").unwrap();
    let (code, text) = output(bin("dk-reprepro").arg("--check").arg("--config").arg(&missing));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("dists.bookworm.incoming") && text.contains("conf/distributions"), "{text}");

    let (code, text) = output(bin("dk-reprepro").arg("--config").arg(&bad));
    assert_eq!(code, Some(2), "a daemon with a broken config exits 2: {text}");

    let aw = dir.0.join("aw.toml");
    std::fs::write(&aw, "packages = [\"[oops\"]\n").unwrap();
    let (code, text) = output(bin("dk-apt-watch").arg("--check").arg("--config").arg(&aw));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("packages"), "{text}");
    std::fs::write(&aw, "action = [\"/nonexistent/dk-action\"]\n").unwrap();
    let (code, text) = output(bin("dk-apt-watch").arg("--check").arg("--config").arg(&aw));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("/nonexistent/dk-action not found"), "{text}");
}

#[test]
fn once_without_a_broker_includes_and_exit_code_tells_refusals() {
    if !have_reprepro() {
        return;
    }
    let dir = TmpDir::new("once");
    let config = repo(&dir.0, "stomp://127.0.0.1:1", "");
    std::fs::copy(deb(&dir.0, "oncepkg", "1.0"), dir.0.join("incoming/oncepkg_1.0_amd64.deb")).unwrap();
    let (code, text) = output(bin("dk-reprepro").args(["--once", "--connect-attempts", "1", "--config"]).arg(&config));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("oncepkg_1.0_amd64.deb: added to bookworm (oncepkg 1.0 amd64)"), "{text}");
    assert!(dir.0.join("incoming/archive/oncepkg_1.0_amd64.deb").exists());

    std::fs::write(dir.0.join("incoming/broken.deb"), b"not a deb").unwrap();
    let (code, text) = output(bin("dk-reprepro").args(["--once", "--connect-attempts", "1", "--config"]).arg(&config));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("broken.deb: REFUSED"), "{text}");
    assert!(dir.0.join("incoming/failed/broken.deb.error").exists());
}

/// A package already complete in incoming when dk-reprepro starts is included at
/// start-up and counted by `/metrics` (the metrics follow the daemon from before it starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_waiting_at_start_up_is_counted() {
    if !have_reprepro() {
        return;
    }
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let dir = TmpDir::new("startup");
    let config = repo(&dir.0, &broker.url(), "");
    std::fs::copy(deb(&dir.0, "earlypkg", "1.0"), dir.0.join("incoming/earlypkg_1.0_amd64.deb")).unwrap();
    let mut rp = Proc::spawn({
        let mut c = bin("dk-reprepro");
        c.arg("-v").arg("--config").arg(&config).args(["--metrics-listen", "127.0.0.1:0"]);
        c
    });
    let addr = tokio::task::block_in_place(|| metrics_addr(&mut rp));
    tokio::task::block_in_place(|| {
        use common::{sample, scrape_until};
        let added = [("daemon", "dk-reprepro"), ("result", "added")];
        if let Some(s) = scrape_until(&addr, WAIT, |s| sample(s, "deploykit_packages_total", &added) == Some(1.0)) {
            assert_eq!(sample(&s, "deploykit_packages_total", &[("daemon", "dk-reprepro"), ("result", "failed")]), None, "{s:?}");
        }
    });
    assert!(dir.0.join("incoming/archive/earlypkg_1.0_amd64.deb").exists());
}

async fn next_event(sub: &mut Subscription, needle: &str) -> String {
    let wait = async {
        loop {
            let m = sub.recv().await.expect("subscription open");
            if let Ok(Message::Event(e)) = decode(m.destination(), &m.headers, &m.body) {
                if e.text.contains(needle) {
                    return e.text;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("no event line with {needle:?} within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_deb_reaches_apt_watch_through_both_daemons() {
    if !have_reprepro() {
        return;
    }
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let url = broker.url();
    let dir = TmpDir::new("flow");
    let topics = format!("dk.debs.{}", fastrand_u32());
    let (ptopic, etopic) = (format!("/topic/{topics}.packages"), format!("/topic/{topics}.events"));
    let listener = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
    let mut events = listener.subscribe(&etopic, SubscribeOptions::default()).await.unwrap();

    // dk-apt-watch with a real program as its action.
    let script = dir.0.join("action.sh");
    std::fs::write(&script, "#!/bin/sh\necho run >> \"$(dirname \"$0\")/runs.log\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let aw_config = dir.0.join("apt-watch.toml");
    let aw_text = |patterns: &str| {
        format!("node = \"web01\"\npackages = [{patterns}]\naction = [{script:?}]\nquiet = \"300ms\"\nmin_interval = \"0s\"\npackages_topic = {ptopic:?}\nevents_topic = {etopic:?}\n[broker]\nurl = {url:?}\n")
    };
    std::fs::write(&aw_config, aw_text("\"flow-*\"")).unwrap();
    let mut aw = Proc::spawn({
        let mut c = bin("dk-apt-watch");
        c.arg("-vv").arg("--config").arg(&aw_config).args(["--metrics-listen", "127.0.0.1:0"]);
        c
    });
    aw.line("dk-apt-watch subscribed");
    let aw_metrics = metrics_addr(&mut aw);

    // dk-reprepro (inotify) publishing to the same topics.
    let rp_config = repo(&dir.0.join("repo"), &url, &format!("packages_topic = {ptopic:?}\nevents_topic = {etopic:?}"));
    let mut rp = Proc::spawn({
        let mut c = bin("dk-reprepro");
        c.arg("-v").arg("--config").arg(&rp_config).args(["--metrics-listen", "127.0.0.1:0"]);
        c
    });
    rp.line("dk-reprepro started");
    let rp_metrics = metrics_addr(&mut rp);

    let built = deb(&dir.0, "flow-app", "2.1");
    let tmp = dir.0.join("repo/incoming/.flow-app.deb.tmp");
    std::fs::copy(&built, &tmp).unwrap();
    std::fs::rename(&tmp, dir.0.join("repo/incoming/flow-app_2.1_amd64.deb")).unwrap();

    let added = next_event(&mut events, "added to repository").await;
    assert_eq!(added, "Package flow-app_2.1_amd64.deb / bookworm added to repository.");
    let ran = next_event(&mut events, "ok in").await;
    assert!(ran.contains("(flow-app 2.1)"), "{ran}");
    assert_eq!(std::fs::read_to_string(dir.0.join("runs.log")).unwrap(), "run\n");
    // Both daemons' /metrics parse and count the work (#13).
    tokio::task::block_in_place(|| {
        use common::{sample, scrape_until};
        let ok = [("daemon", "dk-apt-watch"), ("result", "ok")];
        if let Some(s) = scrape_until(&aw_metrics, WAIT, |s| sample(s, "deploykit_apt_actions_total", &ok) == Some(1.0)) {
            assert_eq!(sample(&s, "deploykit_apt_action_duration_seconds_count", &[("daemon", "dk-apt-watch")]), Some(1.0), "{s:?}");
            assert_eq!(sample(&s, "deploykit_connected", &[("daemon", "dk-apt-watch")]), Some(1.0), "{s:?}");
        }
        let added = [("daemon", "dk-reprepro"), ("result", "added")];
        if let Some(s) = scrape_until(&rp_metrics, WAIT, |s| sample(s, "deploykit_packages_total", &added) == Some(1.0)) {
            assert_eq!(sample(&s, "deploykit_spool_depth", &[("daemon", "dk-reprepro")]), Some(0.0), "{s:?}");
            assert!(sample(&s, "process_open_fds", &[("daemon", "dk-reprepro")]).is_some(), "{s:?}");
        }
    });

    // SIGHUP to both: apt-watch's new patterns apply (a package they no longer match
    // runs nothing); dk-reprepro's restarted watcher still takes the next file.
    std::fs::write(&aw_config, aw_text("\"other-*\"")).unwrap();
    aw.signal("HUP");
    aw.line("configuration reloaded");
    rp.signal("HUP");
    rp.line("configuration reloaded");
    std::fs::copy(deb(&dir.0, "flow-lib", "1.0"), dir.0.join("repo/incoming/flow-lib_1.0_amd64.deb")).unwrap();
    next_event(&mut events, "flow-lib_1.0_amd64.deb / bookworm added").await;
    aw.line("package not watched here");

    for (p, name) in [(&mut aw, "dk-apt-watch"), (&mut rp, "dk-reprepro")] {
        p.signal("TERM");
        assert_eq!(p.exit_code(), Some(0), "{name} exits 0 on SIGTERM");
    }
    assert_eq!(std::fs::read_to_string(dir.0.join("runs.log")).unwrap(), "run\n", "one run in all");
}
