//! dk-notify as the built binary, with a Jenkins-like environment, against the
//! embedded broker: both wires, the original's flags, missing variables.

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::message::{decode, BuildStatus, Message};
use deploykit::stomp::{Client, ClientConfig, SubscribeOptions, Subscription};
use std::process::{Command, Output};
use std::time::Duration;

/// A Jenkins job step's environment (and nothing inherited that could interfere).
fn dk_notify(broker: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-notify"));
    c.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("DK_BROKER_URL", broker);
    c.args(["--connect-attempts", "1"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

const JENKINS_ENV: [(&str, &str); 6] = [
    ("BUILD_NUMBER", "17"),
    ("JOB_NAME", "web/site"),
    ("BUILD_URL", "http://ci.example.com/job/web/job/site/17/"),
    ("GIT_BRANCH", "origin/master"),
    ("GIT_COMMIT", "3f2a9c0000000000000000000000000000000001"),
    ("GIT_URL", "git@git.example.com:web/site.git"),
];

async fn run(c: Command) -> Output {
    let mut c = c;
    tokio::task::spawn_blocking(move || c.output().expect("dk-notify runs")).await.unwrap()
}

async fn next(sub: &mut Subscription) -> deploykit::stomp::Message {
    tokio::time::timeout(Duration::from_secs(20), sub.recv()).await.expect("a message within 20 s").expect("open")
}

async fn setup(dests: &[&str]) -> (deploykit::broker::BrokerHandle, Client, Vec<Subscription>) {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let client = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut subs = Vec::new();
    for d in dests {
        subs.push(client.subscribe(d, SubscribeOptions::default()).await.unwrap());
    }
    (broker, client, subs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_wire_publishes_the_build_and_its_event_line() {
    let (broker, _client, mut subs) = setup(&["/topic/deploykit.builds", "/topic/deploykit.events"]).await;
    let out = run(dk_notify(&broker.url(), &["success"], &JENKINS_ENV)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = next(&mut subs[0]).await;
    assert_eq!(m.headers.get("dk-type"), Some("build"));
    assert_eq!(m.headers.get("dk-correlation-id"), Some(JENKINS_ENV[4].1));
    let Ok(Message::Build(b)) = decode(m.destination(), &m.headers, &m.body) else { panic!("not a build: {:?}", m.text()) };
    assert_eq!((b.job.as_str(), b.number, b.status), ("web/site", 17, BuildStatus::Success));
    assert_eq!((b.repo.as_deref(), b.branch.as_deref(), b.url.as_deref()), (Some("site"), Some("origin/master"), Some(JENKINS_ENV[2].1)));
    let e = next(&mut subs[1]).await;
    let Ok(Message::Event(ev)) = decode(e.destination(), &e.headers, &e.body) else { panic!() };
    assert_eq!(ev.source, "jenkins");
    assert_eq!(ev.text, format!("Complete job 17 - [web/site] origin/master {}", JENKINS_ENV[4].1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_wire_writes_the_originals_topics_and_bodies() {
    let (broker, _client, mut subs) = setup(&["/topic/future.jenkins.cake", "/topic/future.events.jenkins", "/topic/future.jenkins.success"]).await;
    let out = run(dk_notify(&broker.url(), &["--wire", "legacy", "--cake"], &JENKINS_ENV)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = next(&mut subs[0]).await;
    assert!(m.headers.get("dk-type").is_none());
    assert_eq!(m.headers.get("subject"), Some(format!("Fail job 17 - [web/site] origin/master {}", JENKINS_ENV[4].1).as_str()));
    assert_eq!(m.text(), Some("Repo: origin\nURL: http://ci.example.com/job/web/job/site/17/\nStatus: Cake\n"));
    let e = next(&mut subs[1]).await;
    assert_eq!(e.headers.get("subject"), Some("Talking to eventbot"));
    assert!(e.text().unwrap().starts_with("Fail job 17 - [web/site]"), "{:?}", e.text());
    // --begin goes to the success topic with `Start job`.
    let out = run(dk_notify(&broker.url(), &["--wire", "legacy", "--begin"], &JENKINS_ENV)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = next(&mut subs[2]).await;
    assert!(m.text().unwrap().ends_with("Status: Start job\n"), "{:?}", m.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_wire_and_destination() {
    let (broker, _client, mut subs) = setup(&["/topic/ci.builds"]).await;
    let dir = std::env::temp_dir().join(format!("dk-notify-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("notify.toml");
    std::fs::write(&cfg, "wire = \"json\"\n[destinations]\nbuilds = \"/topic/ci.builds\"\n").unwrap();
    let out = run(dk_notify(&broker.url(), &["--config", cfg.to_str().unwrap(), "unstable"], &JENKINS_ENV)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = next(&mut subs[0]).await;
    assert!(matches!(decode(m.destination(), &m.headers, &m.body), Ok(Message::Build(b)) if b.status == BuildStatus::Unstable));
    std::fs::write(&cfg, "wire = \"carrier-pigeon\"\n").unwrap();
    let out = run(dk_notify(&broker.url(), &["--config", cfg.to_str().unwrap(), "success"], &JENKINS_ENV)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notify.toml"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_variables_are_named_and_nothing_is_sent() {
    let (broker, _client, mut subs) = setup(&["/topic/deploykit.builds"]).await;
    let out = run(dk_notify(&broker.url(), &["started"], &[("JOB_NAME", "site")])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("BUILD_NUMBER") && err.contains("BUILD_URL") && !err.contains("JOB_NAME,"), "{err}");
    assert!(tokio::time::timeout(Duration::from_millis(300), subs[0].recv()).await.is_err(), "nothing published");
    let out = run(dk_notify(&broker.url(), &["exploded"], &JENKINS_ENV)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_exits_3() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("stomp://{}", dead.local_addr().unwrap());
    drop(dead);
    let out = run(dk_notify(&url, &["success"], &JENKINS_ENV)).await;
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
