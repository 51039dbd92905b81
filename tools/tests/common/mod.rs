//! Helpers shared by the tools' CLI tests: temp dirs, child processes observed
//! through their stderr lines, a `dk-broker` process, git, raw HTTP/1.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
pub struct TmpDir(pub PathBuf);

impl TmpDir {
    pub fn new(name: &str) -> TmpDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let p = std::env::temp_dir().join(format!("dk-cli-{}-{name}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop, with its stderr lines on a channel.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    /// Spawns `cmd` with stderr captured line by line.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawns");
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

    /// The next stderr line satisfying `pred` within `within`; panics with what was seen otherwise.
    pub fn line(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(e) => panic!("no matching stderr line within {within:?} ({e}); seen:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Sends a signal with kill(1) (argument vector).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("kill runs");
        assert!(st.success(), "kill -{sig}");
    }

    /// Waits for the exit (draining stderr meanwhile), at most `within`; returns the exit code and stdout.
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "still running after {within:?}; stderr:\n{}", self.seen.join("\n"));
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(l);
            }
        };
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        (status.code(), out)
    }

    /// Every stderr line so far; after the exit, all of them (the reader is drained to its end).
    pub fn seen(&mut self) -> &[String] {
        let exited = self.child.try_wait().ok().flatten().is_some();
        loop {
            let next = if exited { self.lines.recv_timeout(Duration::from_secs(5)).ok() } else { self.lines.try_recv().ok() };
            match next {
                Some(l) => self.seen.push(l),
                None => break,
            }
        }
        &self.seen
    }
}

/// Whether `program` runs here (`program --version`); with DK_REQUIRE_BROKERS=1 a missing one is an error.
pub fn have(program: &str) -> bool {
    if Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var("DK_REQUIRE_BROKERS").as_deref() != Ok("1"), "{program} is not installed but DK_REQUIRE_BROKERS=1: scripts/lib/deps.sh installs it");
    false
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// A fixture of core's webhook tests.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/webhook").join(format!("{name}.json"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let p = std::env::temp_dir().join(format!("dk-tools-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Starts `dk-broker` on an ephemeral loopback port; returns it and its URL.
pub fn broker() -> (Proc, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-broker"));
    c.args(["--listen", "127.0.0.1:0"]);
    let mut p = Proc::spawn(c);
    let line = p.line(Duration::from_secs(10), |l| l.contains("dk-broker listening on"));
    let addr = line.rsplit(' ').next().unwrap().trim().to_owned();
    (p, format!("stomp://{addr}"))
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=master"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One sample of a parsed `/metrics`: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Prints every sample of the exposition on stdin as JSON, one line each, after
/// `prometheus_client.parser.text_string_to_metric_families` parsed it.
const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
"#;

/// Parses a `/metrics` text with Python's `prometheus_client` (its text parser);
/// `None` (test skipped) when it is not installed, unless DK_REQUIRE_BROKERS=1.
pub fn parse_metrics(text: &str) -> Option<Vec<Sample>> {
    let have = Command::new("python3").args(["-c", "import prometheus_client"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var("DK_REQUIRE_BROKERS").as_deref() != Ok("1"),
            "python3's prometheus_client is not installed but DK_REQUIRE_BROKERS=1: scripts/lib/deps.sh installs it"
        );
        eprintln!("skipped: python3 -c 'import prometheus_client' fails (pip install prometheus_client)");
        return None;
    }
    let mut child = Command::new("python3").args(["-c", PARSE_METRICS]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("python3 runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused the exposition: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let samples = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (name, labels, value): (String, std::collections::BTreeMap<String, String>, f64) = serde_json::from_str(l).unwrap();
            Sample { name, labels, value }
        })
        .collect();
    Some(samples)
}

/// The value of the sample `name` whose labels include every `(key, value)` of `labels`.
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.iter().find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).map(|s| s.value)
}

/// Scrapes `http://addr/metrics` until `ready` holds on its parsed samples (or `within` passes; then panics with the text).
pub fn scrape_until(addr: &str, within: Duration, ready: impl Fn(&[Sample]) -> bool) -> Option<Vec<Sample>> {
    let deadline = Instant::now() + within;
    loop {
        let (status, text) = http(addr, "GET", "/metrics", &[], b"");
        assert_eq!(status, 200, "{text}");
        let samples = parse_metrics(&text)?;
        if ready(&samples) {
            return Some(samples);
        }
        assert!(Instant::now() < deadline, "the metrics never got there:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The address a daemon started with `--metrics-listen 127.0.0.1:0 -v` logged.
pub fn metrics_addr(p: &mut Proc) -> String {
    let line = p.line(Duration::from_secs(30), |l| l.contains("serving /healthz and /metrics on http://"));
    line.rsplit("http://").next().unwrap().trim().trim_end_matches(|c: char| !c.is_ascii_digit()).to_owned()
}

/// A Jenkins stand-in on a loopback port: answers every request 201 with a queue `Location`
/// and sends `REQUEST-LINE BODY` to the channel (dropping the receiver is fine).
pub fn jenkins_stub() -> (String, mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = tx.send(format!("{} {}", first.trim(), String::from_utf8_lossy(&body)));
            let _ = stream.write_all(b"HTTP/1.1 201 Created\r\nLocation: http://ci/queue/item/1/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (base, rx)
}
