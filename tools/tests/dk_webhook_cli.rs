//! dk-webhook as a real process: config errors, --check, a signed push
//! published to the broker, SIGHUP secret rotation, SIGTERM exit.

mod common;

use common::{fixture, http, temp_dir, Proc};
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::forge::signature::{hmac_sha256, HookSecret};
use deploykit::message::{decode, Message};
use deploykit::stomp::{Client, ClientConfig, SubscribeOptions};
use std::process::Command;
use std::time::Duration;

fn dk_webhook() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-webhook"));
    c.env_remove("DK_BROKER_URL");
    c
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = dk_webhook().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("Examples") && text.contains("Exit codes") && text.contains("/healthz"), "{text}");
}

#[test]
fn config_errors_name_the_key_and_exit_2_or_1_with_check() {
    let dir = temp_dir("webhook-cfg");
    let p = dir.join("webhook.toml");
    std::fs::write(&p, "[github]\nsecret_file = \"/nonexistent/dk-secret\"\n").unwrap();
    let out = dk_webhook().arg("--config").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("github.secret_file"), "{err}");
    let out = dk_webhook().arg("--check").arg("--config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&p, "listen = \"127.0.0.1:0\"\n[gitlab]\n").unwrap();
    let out = dk_webhook().arg("--check").arg("--config").arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("gitlab /gitlab (UNSIGNED)"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_push_is_published_secrets_rotate_on_sighup_and_sigterm_exits_0() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let dir = temp_dir("webhook-run");
    let secret = dir.join("github.secret");
    std::fs::write(&secret, "first\n").unwrap();
    let topic = format!("/topic/dk.test.webhook.{}", std::process::id());
    let config = dir.join("webhook.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nspool = {:?}\n[destinations]\ncommits = {topic:?}\n[github]\nsecret_file = {:?}\n",
            dir.join("spool").display().to_string(),
            secret.display().to_string()
        ),
    )
    .unwrap();
    let reader = Client::connect(ClientConfig::new(&broker.url()).unwrap()).await.unwrap();
    let mut sub = reader.subscribe(&topic, SubscribeOptions::default()).await.unwrap();
    let mut cmd = dk_webhook();
    cmd.arg("-v").arg("--config").arg(&config).args(["--broker", &broker.url()]);
    let mut proc = Proc::spawn(cmd);
    let line = tokio::task::block_in_place(|| proc.line(Duration::from_secs(20), |l| l.contains("listening on http://")));
    let addr = line.rsplit("http://").next().unwrap().trim().to_owned();

    let body = fixture("github_branch_push");
    let sig = |k: &str| format!("sha256={}", hmac_sha256(&HookSecret::new(k), &body).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let post = |s: String| {
        let (addr, body) = (addr.clone(), body.clone());
        tokio::task::spawn_blocking(move || http(&addr, "POST", "/github", &[("Content-Type", "application/json"), ("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &s)], &body))
    };
    let (status, text) = post(sig("first")).await.unwrap();
    assert_eq!(status, 200, "{text}");
    let m = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await.unwrap().unwrap();
    let Message::Commit(c) = decode(m.destination(), &m.headers, &m.body).unwrap() else { panic!("not a commit") };
    assert_eq!((c.repo.as_str(), c.refname.as_str()), ("site", "refs/heads/main"));

    // Rotate the secret; SIGHUP applies it.
    std::fs::write(&secret, "second\n").unwrap();
    proc.signal("HUP");
    tokio::task::block_in_place(|| proc.line(Duration::from_secs(20), |l| l.contains("configuration reloaded")));
    let (status, _) = post(sig("first")).await.unwrap();
    assert_eq!(status, 401);
    let (status, text) = post(sig("second")).await.unwrap();
    assert_eq!(status, 200, "{text}");

    proc.signal("TERM");
    let (code, _) = tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(20)));
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_config_checks_out_once_its_secret_files_exist() {
    let dir = temp_dir("webhook-example");
    let mut text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/webhook.toml")).unwrap();
    for name in ["github-webhook.secret", "gitlab-webhook.token", "gitea-webhook.secret"] {
        let p = dir.join(name);
        std::fs::write(&p, "s3cret\n").unwrap();
        text = text.replace(&format!("/etc/deploykit/{name}"), &p.display().to_string());
    }
    let p = dir.join("webhook.toml");
    std::fs::write(&p, text).unwrap();
    let out = dk_webhook().arg("--check").arg("--config").arg(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("github /github (signed), gitlab /gitlab (signed), gitea /gitea (signed)"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
