//! Every daemon on the one lifecycle, as a real process (issue #13):
//! - the broker gone for good → the process exits 3 within a bounded time
//!   (so systemd's `Restart=` acts) instead of lingering with /healthz at 503;
//! - SIGHUP with a broken config → a log line, the old config kept, still serving;
//! - SIGTERM → exit 0;
//! - stderr to a pipe carries no ANSI escape; `--log-format json` lines are JSON.

mod common;

use common::{broker, Proc, TmpDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long a daemon may take to notice the broker is gone for good and exit.
const DEATH_WITHIN: Duration = Duration::from_secs(45);
const WAIT: Duration = Duration::from_secs(30);

fn bin(name: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-broker").replace("dk-broker", name));
    c.env_remove("DK_BROKER_URL").env_remove("RUST_LOG").env_remove("NOTIFY_SOCKET").env_remove("JOURNAL_STREAM");
    c
}

/// A daemon under test: how to start it, the stderr line that says it is up, and its config file.
struct Case {
    name: &'static str,
    config: Option<PathBuf>,
    args: Vec<String>,
    ready: &'static str,
}

/// A URL on which the client gives up after two failed reconnects.
fn fragile(url: &str) -> String {
    let hostport = url.trim_start_matches("stomp://");
    format!("failover:(stomp://{hostport})?maxReconnectAttempts=2&initialReconnectDelay=50ms&maxReconnectDelay=200ms&startupMaxReconnectAttempts=3")
}

fn write(dir: &Path, name: &str, text: String) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The case for daemon `name` on broker `url`, its files under `dir`.
fn case(name: &'static str, dir: &Path, url: &str) -> Case {
    let d = dir.display();
    let c = |config: PathBuf, ready: &'static str| Case { name, config: Some(config), args: vec![], ready };
    match name {
        "dk-fetch" => {
            let repo = dir.join("site");
            std::fs::create_dir_all(&repo).unwrap();
            assert!(Command::new("git").args(["init", "-q", "--bare"]).arg(&repo).status().unwrap().success());
            c(write(dir, "fetch.toml", format!("[broker]\nurl = {url:?}\n[repos.site]\npath = {:?}\n", repo.display().to_string())), "dk-fetch started")
        }
        "dk-jenkins" => {
            c(write(dir, "jenkins.toml", format!("[broker]\nurl = {url:?}\n[jenkins]\nurl = \"http://127.0.0.1:9\"\n[[repos.site.jobs]]\njob = \"site\"\n")), "dk-jenkins started")
        }
        "dk-agent" => c(write(dir, "agent.toml", format!("identity = \"web01\"\nstate_dir = \"{d}/state\"\n[broker]\nurl = {url:?}\n")), "dk-agent started"),
        "dk-apt-watch" => {
            c(write(dir, "apt-watch.toml", format!("node = \"web01\"\npackages = [\"app-*\"]\naction = [\"/bin/true\"]\n[broker]\nurl = {url:?}\n")), "dk-apt-watch started")
        }
        "dk-reprepro" => {
            std::fs::create_dir_all(dir.join("base/conf")).unwrap();
            std::fs::create_dir_all(dir.join("incoming")).unwrap();
            std::fs::write(dir.join("base/conf/distributions"), "Codename: bookworm\nArchitectures: amd64\nComponents: main\n").unwrap();
            c(
                write(
                    dir,
                    "reprepro.toml",
                    format!("base = \"{d}/base\"\nspool_dir = \"{d}/spool\"\nwatch = \"poll\"\n[broker]\nurl = {url:?}\n[dists.bookworm]\nincoming = \"{d}/incoming\"\n"),
                ),
                "dk-reprepro started",
            )
        }
        "dk-web" => {
            let key = dir.join("web.key");
            deploykit::deploy::keys::SecretKey::generate().unwrap().save(&key).unwrap();
            c(
                write(
                    dir,
                    "web.toml",
                    format!("listen = \"127.0.0.1:0\"\ndatabase = \"{d}/web.sqlite\"\nkey_file = \"{d}/web.key\"\n[auth]\nmode = \"none\"\n[broker]\nurl = {url:?}\n"),
                ),
                "listening on http://",
            )
        }
        "dk-webhook" => c(write(dir, "webhook.toml", format!("listen = \"127.0.0.1:0\"\nspool = \"{d}/spool\"\n[broker]\nurl = {url:?}\n[gitlab]\n")), "listening on http://"),
        "dk-keepalive" => {
            let config = write(dir, "keepalive.toml", format!("interval = \"1s\"\n[broker]\nurl = {url:?}\n[[target]]\ndestination = \"/topic/dk.test.keepalive\"\n"));
            Case { name, config: Some(config), args: vec!["--daemon".into()], ready: "keeping 1 target(s) alive" }
        }
        "dk-broker" => Case { name, config: None, args: vec!["--listen".into(), "127.0.0.1:0".into()], ready: "dk-broker listening on" },
        other => panic!("no case for {other}"),
    }
}

fn start(case: &Case) -> Proc {
    let mut c = bin(case.name);
    c.arg("-v").args(&case.args);
    if let Some(config) = &case.config {
        c.arg("--config").arg(config);
    }
    let mut p = Proc::spawn(c);
    p.line(WAIT, |l| l.contains(case.ready));
    p
}

const ALL: [&str; 9] = ["dk-agent", "dk-apt-watch", "dk-broker", "dk-fetch", "dk-jenkins", "dk-keepalive", "dk-reprepro", "dk-web", "dk-webhook"];

/// The daemons that need the broker (dk-webhook spools and dk-keepalive reconnects for ever, by design).
const ON_THE_BUS: [&str; 6] = ["dk-agent", "dk-apt-watch", "dk-fetch", "dk-jenkins", "dk-reprepro", "dk-web"];

#[test]
fn broker_gone_for_good_ends_every_bus_daemon_with_exit_3() {
    if !common::have("reprepro") {
        eprintln!("reprepro missing: dk-reprepro not covered here");
    }
    let (mut broker, url) = broker();
    let url = fragile(&url);
    let dirs: Vec<TmpDir> = ON_THE_BUS.iter().map(|n| TmpDir::new(n)).collect();
    let mut procs: Vec<(&str, Proc)> =
        ON_THE_BUS.iter().zip(&dirs).filter(|(n, _)| **n != "dk-reprepro" || common::have("reprepro")).map(|(n, d)| (*n, start(&case(n, &d.0, &url)))).collect();
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    for (name, p) in &mut procs {
        let (code, _) = p.wait_exit(DEATH_WITHIN);
        let said = p.seen().join("\n");
        assert_eq!(code, Some(3), "{name}: exit code once the broker is gone for good; stderr:\n{said}");
        assert!(said.contains("the broker connection closed for good"), "{name}: {said}");
    }
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_sigterm_exits_0() {
    let (_broker, url) = broker();
    for name in ALL {
        if name == "dk-reprepro" && !common::have("reprepro") {
            continue;
        }
        let dir = TmpDir::new(name);
        let case = case(name, &dir.0, &url);
        let mut p = start(&case);
        if let Some(config) = &case.config {
            std::fs::write(config, "this is [not toml\n").unwrap();
        }
        p.signal("HUP");
        p.line(WAIT, |l| l.contains("the old one stays") || l.contains("the old configuration stays"));
        // Still running on the old configuration: a second SIGHUP is answered the same way.
        p.signal("HUP");
        p.line(WAIT, |l| l.contains("the old one stays") || l.contains("the old configuration stays"));
        p.signal("TERM");
        let (code, _) = p.wait_exit(WAIT);
        assert_eq!(code, Some(0), "{name}: exit code after SIGTERM");
    }
}

#[test]
fn logs_to_a_pipe_carry_no_ansi_and_json_lines_parse() {
    let (_broker, url) = broker();
    let dir = TmpDir::new("logs");
    let case = case("dk-fetch", &dir.0, &url);
    // Text: stderr is a pipe here, so no escape sequences even with colourful levels.
    let mut p = start(&case);
    p.signal("TERM");
    let (code, _) = p.wait_exit(WAIT);
    assert_eq!(code, Some(0));
    let text = p.seen().join("\n");
    assert!(text.contains("dk-fetch started"), "{text}");
    assert!(!text.contains('\u{1b}'), "ESC in piped logs: {text:?}");

    let mut c = bin("dk-fetch");
    c.args(["-v", "--log-format", "json", "--config"]).arg(case.config.as_ref().unwrap());
    let mut p = Proc::spawn(c);
    let line = p.line(WAIT, |l| l.contains("dk-fetch started"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["message"], "dk-fetch started", "{v}");
    p.signal("TERM");
    assert_eq!(p.wait_exit(WAIT).0, Some(0));
    for l in p.seen() {
        if l.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        }
    }
}

#[test]
fn under_the_journal_lines_carry_syslog_priorities() {
    use std::io::BufRead;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    // systemd sets JOURNAL_STREAM to stderr's device:inode; a pipe stands in for the journal's stream.
    let (reader, writer) = std::io::pipe().unwrap();
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", writer.as_raw_fd())).unwrap();
    let mut c = bin("dk-broker");
    c.args(["--listen", "127.0.0.1:0"]).env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())).stderr(writer);
    let mut child = c.spawn().unwrap();
    drop(c);
    // A bound on the whole test: a silent broker would otherwise block the reads below for ever.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        let _ = Command::new("kill").arg("-KILL").arg(pid).status();
    });
    let mut lines = std::io::BufReader::new(reader).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    let mut until = |needle: &str| loop {
        let l = lines.next().unwrap_or_else(|| panic!("stderr ended before {needle:?}: {seen:?}"));
        seen.push(l.clone());
        if l.contains(needle) {
            return l;
        }
    };
    until("listening on");
    // SIGHUP is refused by dk-broker (nothing reloads): an error line, priority 3.
    assert!(Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap().success());
    let refused = until("reload refused");
    assert!(refused.starts_with("<3>"), "{refused}");
    assert!(!refused.contains('\u{1b}'), "{refused:?}");
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
