//! dk-jenkins as the built binary: --help, --check, and the daemon on the
//! embedded broker firing a pending trigger on SIGTERM (a tiny std HTTP
//! responder stands in for Jenkins; the full contract is in core/tests/jenkins.rs).

mod common;

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::message::{Commit, Destinations, Publisher};
use deploykit::stomp::{Client, ClientConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn dk_jenkins() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-jenkins"));
    c.env_remove("DK_BROKER_URL");
    c
}

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dk-jenkins-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("jenkins.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = dk_jenkins().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("Examples") && text.contains("Exit codes") && text.contains("--check"), "{text}");
}

#[test]
fn check_names_unreadable_secrets_and_bad_keys() {
    let p = tmp("check", "[jenkins]\nurl = \"http://ci/\"\n[[repos.site.jobs]]\njob = \"site\"\ntoken_env = \"DK_TEST_SURELY_UNSET_TOKEN\"\n");
    let out = dk_jenkins().arg("--check").arg("--config").arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("repos.site.jobs (site): token: environment variable DK_TEST_SURELY_UNSET_TOKEN is not set"), "{text}");
    let out = dk_jenkins().arg("--check").arg("--config").arg(&p).env("DK_TEST_SURELY_UNSET_TOKEN", "x").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let p = tmp("bad", "[jenkins]\nurl = \"ftp://ci/\"\n");
    let out = dk_jenkins().arg("--config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jenkins.url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fires_the_trigger_still_in_its_quiet_period() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let (base, requests) = common::jenkins_stub();
    let p = tmp(
        "sigterm",
        &format!(
            "quiet_period = \"1h\"\n[broker]\nurl = \"{}\"\n[jenkins]\nurl = \"{base}\"\n[[repos.site.jobs]]\njob = \"site\"\ntoken_env = \"DK_TEST_JOB_TOKEN\"\n",
            broker.url()
        ),
    );
    let mut child = dk_jenkins().arg("-v").arg("--config").arg(&p).env("DK_TEST_JOB_TOKEN", "tok").stderr(Stdio::piped()).spawn().unwrap();
    let (line_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = line_tx.send(l);
        }
    });
    let wait_line = |needle: &'static str| {
        let lines = &lines;
        move || loop {
            let l = lines.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no `{needle}` log line within 20 s"));
            if l.contains(needle) {
                return;
            }
        }
    };
    wait_line("dk-jenkins started")();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let publisher = Publisher::new(client.clone(), "git-hook").destinations(Destinations::default());
    publisher.commit(&Commit { repo: "site".into(), oldrev: "1".repeat(40), newrev: "2".repeat(40), refname: "refs/heads/master".into(), ..Commit::default() }).await.unwrap();
    wait_line("trigger queued")();
    assert!(requests.try_recv().is_err(), "a 1 h quiet period: nothing triggered yet");
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let req = requests.recv_timeout(Duration::from_secs(20)).expect("the pending trigger is fired on SIGTERM");
    assert!(req.starts_with("POST /job/site/build HTTP/1.1 token=tok"), "{req}");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}
