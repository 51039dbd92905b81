//! dk-keepalive as a real process: one-shot exit codes, the daemon keeping an
//! idle subscriber alive through an idle-killing proxy, and `probe` finding the
//! proxy's idle limit.

mod common;
#[path = "../../core/tests/common/proxy.rs"]
mod proxy;

use common::Proc;
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::stomp::{Client, ClientConfig, ClientEvent, HeartbeatConfig, SubscribeOptions};
use proxy::Proxy;
use std::process::Command;
use std::time::Duration;

/// The firewall's idle limit.
const T: Duration = Duration::from_millis(1500);

fn dk_keepalive() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-keepalive"));
    c.env_remove("DK_BROKER_URL");
    c
}

/// Runs to completion off the async threads.
async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = dk_keepalive().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("probe") && text.contains("Exit codes") && text.contains("--interval"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_sends_a_newline_and_exits_1_when_a_target_fails() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let dest = format!("/topic/dk.test.ka.{}", std::process::id());
    let reader = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = reader.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let mut cmd = dk_keepalive();
    cmd.args(["--broker", &broker.url(), "--destination", &dest]);
    let out = output(cmd).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with(&format!("{dest}: ok")), "{text}");
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap().unwrap();
    assert_eq!(&m.body[..], b"\n");
    // A config with a good and an unreachable target: both tried, exit 1.
    let dir = common::temp_dir("ka-cfg");
    let cfg = dir.join("keepalive.toml");
    std::fs::write(&cfg, format!("[[target]]\nname = \"good\"\nurl = {:?}\ndestination = {dest:?}\n[[target]]\nname = \"down\"\nurl = \"stomp://127.0.0.1:1\"\n", broker.url()))
        .unwrap();
    let mut cmd = dk_keepalive();
    cmd.args(["--connect-attempts", "1", "--config"]).arg(&cfg);
    let out = output(cmd).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("good: ok") && text.contains("down: FAILED"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_keeps_an_idle_subscriber_alive_past_3t_and_exits_0_on_sigterm() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let proxy = Proxy::with_idle_timeout(broker.local_addr(), T).await.unwrap();
    let dest = format!("/topic/dk.test.ka.daemon.{}", std::process::id());
    let mut config = ClientConfig::new(&proxy.stomp_url()).unwrap().heartbeat(HeartbeatConfig::off());
    config.url.options.max_reconnect_attempts = Some(1);
    let idle = Client::connect(config).await.unwrap();
    let mut events = idle.events();
    let _sub = idle.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let mut cmd = dk_keepalive();
    cmd.args(["--broker", &proxy.stomp_url(), "--destination", &dest, "--interval", "500ms"]);
    let mut proc = Proc::spawn(cmd);
    let dropped = tokio::time::timeout(T * 3 + T / 2, async {
        loop {
            if let Ok(ClientEvent::Disconnected { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(dropped.is_err(), "the idle subscriber was dropped despite dk-keepalive");
    assert_eq!(proxy.idle_kills(), 0);
    proc.signal("TERM");
    let (code, _) = tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(20)));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_the_idle_limit_within_20_percent() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let proxy = Proxy::with_idle_timeout(broker.local_addr(), T).await.unwrap();
    let mut cmd = dk_keepalive();
    cmd.args(["probe", "--broker", &proxy.stomp_url(), "--min", "250ms", "--max", "8s"]);
    let out = output(cmd).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let result = text.lines().find_map(|l| l.strip_prefix("result: ")).unwrap_or_else(|| panic!("{text}"));
    let field = |k: &str| -> u64 { result.split(' ').find_map(|kv| kv.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{k} in {result}")) };
    let found = field("dropped_after_ms=") as f64;
    let t = T.as_millis() as f64;
    assert!((found - t).abs() <= 0.2 * t, "probe found {found} ms for {t} ms:\n{text}");
    assert!(field("recommended_ms=") as f64 <= 0.6 * t, "{text}");
    assert!(text.contains("configure: --heartbeat"), "{text}");
    // An unreachable broker: exit 3.
    let mut cmd = dk_keepalive();
    cmd.args(["probe", "--broker", "stomp://127.0.0.1:1", "--connect-attempts", "1", "--min", "1s", "--max", "1s"]);
    assert_eq!(output(cmd).await.status.code(), Some(3));
}

#[test]
fn the_example_config_parses() {
    let c = deploykit::keepalive::KeepaliveConfig::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/keepalive.toml"))).unwrap();
    assert_eq!(c.interval, Duration::from_secs(60));
    assert_eq!(c.targets.len(), 1);
    assert_eq!(c.targets[0].destination, "/topic/deploykit.git.commits");
}
