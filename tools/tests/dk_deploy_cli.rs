//! dk-deploy and dk-agent as real processes: keygen, a deploy with the audit
//! log, usage errors, and an agent killed mid-deploy (SIGKILL) that recovers
//! on restart. Synchronisation is on log lines and replies, never on sleeps.

mod common;

use common::{broker, git, http, Proc, TmpDir};
use deploykit::deploy::controller::{Controller, ControllerConfig, Window};
use deploykit::deploy::keys::SecretKey;
use deploykit::deploy::record::RolloutRecord;
use deploykit::deploy::trust::{TrustConfig, TrustStore};
use deploykit::message::{DeployAction, Filters, StepState};
use deploykit::stomp::{Client, ClientConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn dk(bin: &str) -> Command {
    let path = match bin {
        "dk-deploy" => env!("CARGO_BIN_EXE_dk-deploy"),
        "dk-agent" => env!("CARGO_BIN_EXE_dk-agent"),
        _ => unreachable!(),
    };
    let mut c = Command::new(path);
    c.env_remove("DK_BROKER_URL").env_remove("DK_DEPLOY_KEY").env("HOME", std::env::temp_dir());
    c
}

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A repo with tags v1 and v2; an agent config for `web01` trusting `key`, enrolled
/// the documented way (`dk-agent --print-key`, `dk-deploy keygen` + `enroll`), and
/// `trust.toml` naming the fleet key.
fn setup(dir: &Path, key: &SecretKey, url: &str) -> PathBuf {
    let repo = dir.join("www");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for v in 1..=2 {
        std::fs::write(repo.join("version"), format!("v{v}\n")).unwrap();
        git(&repo, &["add", "version"]);
        git(&repo, &["commit", "-q", "-m", &format!("release {v}")]);
        git(&repo, &["tag", &format!("v{v}")]);
    }
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "identity = \"web01\"\nstate_dir = \"{d}/state\"\nenrollment = \"{d}/agent.cert\"\n[broker]\nurl = \"{url}\"\n[trusted_keys]\nops = \"{}\"\n\
             [sites.www]\nrepo = \"{}\"\nreleases = \"{d}/releases\"\ncurrent = \"{d}/current\"\nhooks = \"{d}/hooks\"\ndeploy = [\"ops\"]\n",
            key.public(),
            repo.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let out = dk("dk-agent").arg("--print-key").arg("--config").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(agent_key.starts_with("ed25519:"), "{agent_key}");
    let fleet = dir.join("fleet.key");
    let out = dk("dk-deploy").args(["keygen", "--out"]).arg(&fleet).output().unwrap();
    assert!(out.status.success());
    let fleet_public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = dk("dk-deploy").args(["enroll", "--fleet-key"]).arg(&fleet).args(["--identity", "web01", "--agent-key", &agent_key, "--valid", "1d"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("agent.cert"), &out.stdout).unwrap();
    std::fs::write(dir.join("trust.toml"), format!("fleet_keys = [\"{fleet_public}\"]\n")).unwrap();
    config
}

/// A controller config for `key` trusting the fleet of `setup(dir, …)`.
fn controller_config(dir: &Path, key: SecretKey) -> ControllerConfig {
    let mut cc = ControllerConfig::new("ann", Some(key));
    cc.trust = std::sync::Arc::new(TrustStore::new(TrustConfig::load(&dir.join("trust.toml")).unwrap()));
    cc
}

fn agent(config: &Path) -> Proc {
    let mut c = dk("dk-agent");
    c.arg("--config").arg(config).arg("-v");
    let mut p = Proc::spawn(c);
    p.line(Duration::from_secs(20), |l| l.contains("dk-agent started"));
    p
}

fn live(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("current/version")).ok().map(|s| s.trim().to_owned())
}

#[test]
fn keygen_writes_a_0600_key_prints_the_public_half_and_never_overwrites() {
    let dir = TmpDir::new("keygen");
    let key = dir.0.join("k.pem");
    let out = dk("dk-deploy").args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success());
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");
    assert_eq!(SecretKey::load(&key).unwrap().public().to_string(), public);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = dk("dk-deploy").args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn usage_errors_exit_2_before_touching_the_bus() {
    let dir = TmpDir::new("usage");
    let key = dir.0.join("k.pem");
    SecretKey::generate().unwrap().save(&key).unwrap();
    let run = |args: &[&str]| {
        let out = dk("dk-deploy").args(args).arg("--key").arg(&key).args(["--broker", "stomp://127.0.0.1:1"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["deploy", "--site", "www", "--tag=--upload-pack=touch /tmp/pwned", "--yes"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a valid tag"), "{err}");
    let (code, err) = run(&["deploy", "--site", "www", "--tag", "v1", "-I", "/(/", "--yes"]);
    assert_eq!((code, err.contains("bad regex")), (Some(2), true), "{err}");
    let (code, err) = run(&["deploy", "--site", "www", "--tag", "v1", "--batch", "0"]);
    assert_eq!(code, Some(2), "{err}");
    let out = dk("dk-deploy").args(["status", "--site", "www", "--key"]).arg(dir.0.join("missing.pem")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dk-deploy keygen"));
    let help = dk("dk-deploy").arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Examples") && text.contains("Exit codes") && text.contains("--canary 1 --batch 25%"), "{text}");
    assert!(text.contains("--tag v1.4.1 --allow-downgrade --yes"), "the downgrade example: {text}");
    let help = dk("dk-deploy").args(["deploy", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--allow-downgrade"), "{}", String::from_utf8_lossy(&help.stdout));
}

#[test]
fn deploy_from_the_command_line_with_json_report_and_audit_log() {
    let dir = TmpDir::new("deploy");
    let (_broker, url) = broker();
    let key = SecretKey::generate().unwrap();
    let key_path = dir.0.join("ops.pem");
    key.save(&key_path).unwrap();
    let config = setup(&dir.0, &key, &url);
    let check = dk("dk-agent").arg("--check").arg("--config").arg(&config).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("site www"));
    assert!(String::from_utf8_lossy(&check.stdout).contains("enrolled: key ed25519:"), "{}", String::from_utf8_lossy(&check.stdout));
    let _agent = agent(&config);
    let discover = |trust: &Path| {
        dk("dk-deploy")
            .args(["discover", "--expect", "1", "--discovery-timeout", "20s", "--key"])
            .arg(&key_path)
            .arg("--trust")
            .arg(trust)
            .args(["--broker", &url])
            .output()
            .unwrap()
    };
    let nobody = dir.0.join("nobody.toml");
    std::fs::write(&nobody, "").unwrap();
    let out = discover(&nobody);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("web01") && text.contains("untrusted: enrollment certificate signed by ed25519:") && text.contains("not a configured fleet key"), "{text}");
    let out = discover(&dir.0.join("trust.toml"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("web01") && text.contains("sites [www=-]") && !text.contains("untrusted"), "{text}");
    let audit = dir.0.join("audit.log");
    let deploy = |tag: &str, extra: &[&str]| {
        dk("dk-deploy")
            .args(["deploy", "--site", "www", "--tag", tag, "--expect", "1", "--discovery-timeout", "20s", "--json", "--user", "ann"])
            .args(extra)
            .arg("--key")
            .arg(&key_path)
            .arg("--audit-log")
            .arg(&audit)
            .arg("--trust")
            .arg(dir.0.join("trust.toml"))
            .args(["--broker", &url])
            .output()
            .unwrap()
    };
    // Without --yes and without a terminal: refused, nothing deployed.
    let out = deploy("v1", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(live(&dir.0), None);

    let out = deploy("v1", &["--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["nodes"][0]["node"], "web01");
    assert_eq!(report["nodes"][0]["state"], "ok");
    assert_eq!(live(&dir.0).as_deref(), Some("v1"));
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&audit).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!((line["user"].as_str(), line["action"].as_str(), line["tag"].as_str(), line["result"].as_str()), (Some("ann"), Some("deploy"), Some("v1"), Some("ok")));
    assert_eq!(line["key"].as_str(), Some(key.public().to_string().as_str()));

    // A failing pre-deploy: exit 1, still on v1, audit says failed.
    script(&dir.0.join("hooks/pre-deploy"), "exit 4");
    let out = deploy("v2", &["--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(live(&dir.0).as_deref(), Some("v1"));
    let last = std::fs::read_to_string(&audit).unwrap().lines().last().unwrap().to_owned();
    assert!(last.contains("\"failed\":[\"web01\"]"), "{last}");

    // Dry run prints the log and changes nothing.
    std::fs::remove_file(dir.0.join("hooks/pre-deploy")).unwrap();
    let out = dk("dk-deploy")
        .args(["deploy", "--site", "www", "--tag", "v2", "--dry-run", "--expect", "1", "--discovery-timeout", "20s", "--key"])
        .arg(&key_path)
        .arg("--trust")
        .arg(dir.0.join("trust.toml"))
        .args(["--broker", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("web01: www_v1 -> v2") && text.contains("release 2"), "{text}");
    assert!(!text.contains("WARNING"), "an upgrade removes nothing: {text}");
    assert_eq!(live(&dir.0).as_deref(), Some("v1"));

    // Issue #16: v2 deployed, then again: the second time web01 is already live.
    assert_eq!(deploy("v2", &["--yes"]).status.code(), Some(0));
    let out = deploy("v2", &["--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["nodes"][0]["state"].as_str(), report["nodes"][0]["unchanged"].as_bool()), (Some("ok"), Some(true)), "{report:#}");

    // A downgrade to v1: the dry run warns with the commit it removes, the deploy is refused
    // with how to allow it, and --allow-downgrade deploys it.
    let out = dk("dk-deploy")
        .args(["deploy", "--site", "www", "--tag", "v1", "--dry-run", "--expect", "1", "--discovery-timeout", "20s", "--key"])
        .arg(&key_path)
        .arg("--trust")
        .arg(dir.0.join("trust.toml"))
        .args(["--broker", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("WARNING: deploying v1 removes 1 commit now live on web01 (--allow-downgrade"), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("- ") && l.contains("release 2")), "{text}");
    let out = deploy("v1", &["--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["nodes"][0]["state"], "refused", "{report:#}");
    let why = report["nodes"][0]["error"].as_str().unwrap();
    assert!(why.contains("would remove 1 commit now live") && why.contains("--allow-downgrade"), "{why}");
    assert_eq!(live(&dir.0).as_deref(), Some("v2"), "a refused downgrade changes nothing");
    let out = deploy("v1", &["--yes", "--allow-downgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(live(&dir.0).as_deref(), Some("v1"));
}

/// deploy.toml (the user's, under XDG_CONFIG_HOME) carries the broker, wire and the
/// fleet's own deploy topic; flags and --config override it.
#[test]
fn deploy_toml_with_legacy_topics_is_honoured_and_flags_override_it() {
    let dir = TmpDir::new("deploy-toml");
    let (_broker, url) = broker();
    let key = SecretKey::generate().unwrap();
    let key_path = dir.0.join("ops.pem");
    key.save(&key_path).unwrap();
    let config = setup(&dir.0, &key, &url);
    // The agent of a fleet that kept its own topic names.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("wire = \"legacy\"\n{text}[destinations]\ndeploy = \"/topic/future.deploy\"\n")).unwrap();
    let _agent = agent(&config);
    let xdg = dir.0.join("xdg");
    std::fs::create_dir_all(xdg.join("deploykit")).unwrap();
    std::fs::write(xdg.join("deploykit/deploy.toml"), format!("wire = \"legacy\"\n[broker]\nurl = \"{url}\"\n[destinations]\ndeploy = \"/topic/future.deploy\"\n")).unwrap();
    let trust = dir.0.join("trust.toml");
    let status = |extra: &[&str]| {
        let mut c = dk("dk-deploy");
        c.env("XDG_CONFIG_HOME", &xdg).args(["status", "--site", "www", "--expect", "1", "--key"]).arg(&key_path).arg("--trust").arg(&trust).args(extra);
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // No --broker, no --deploy-topic: deploy.toml's broker and topic reach the agent.
    let (code, out, err) = status(&["--discovery-timeout", "20s"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("web01"), "{out}{err}");
    // --deploy-topic overrides the file: the agent does not listen there.
    let (code, out, err) = status(&["--discovery-timeout", "1s", "--deploy-topic", "/topic/deploykit.deploy"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(!out.contains("web01") && err.contains("no server answered"), "{out}{err}");
    // --broker overrides the file's broker (nothing listens there: exit 3).
    let (code, out, err) = status(&["--discovery-timeout", "1s", "--broker", "stomp://127.0.0.1:1", "--connect-attempts", "1"]);
    assert_eq!(code, Some(3), "{out}{err}");
    // --config FILE is read alone: the user's file is not.
    let other = dir.0.join("other.toml");
    std::fs::write(&other, format!("[broker]\nurl = \"{url}\"\n")).unwrap();
    let (code, out, err) = status(&["--discovery-timeout", "1s", "--config", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "default topic, no answer: {out}{err}");
    // --check reports what the files mean; a broken file names itself and the key.
    let check = |extra: &[&str]| {
        let out = dk("dk-deploy").env("XDG_CONFIG_HOME", &xdg).arg("--check").arg("--key").arg(&key_path).arg("--trust").arg(&trust).args(extra).output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (code, text) = check(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("wire legacy") && text.contains("requests to /topic/future.deploy"), "{text}");
    std::fs::write(&other, "[destinations]\ndeploy = \"future.deploy\"\n").unwrap();
    let (code, text) = check(&["--config", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(other.to_str().unwrap()) && text.contains("destinations.deploy"), "{text}");
    std::fs::write(&other, "[broker]\npasscode_file = \"/nonexistent/dk-passcode\"\n").unwrap();
    let (code, text) = check(&["--config", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("broker.passcode_file"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_deploy_recovers_on_restart() {
    let dir = TmpDir::new("kill");
    let (_broker, url) = broker();
    let key = SecretKey::generate().unwrap();
    let config = setup(&dir.0, &key, &url);
    let mut first = agent(&config);
    let client = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
    let controller = Controller::new(client, controller_config(&dir.0, key)).await.unwrap();
    let one = Window { timeout: Duration::from_secs(20), expect: Some(1) };
    // v1 live.
    let req = controller.request(DeployAction::Deploy, Some("www"), Some("v1"), Filters::default());
    let r = controller.gather(&req, one).await.unwrap();
    assert_eq!(r[0].state, StepState::Ok, "{r:?}");
    // v2 stops inside pre-link (after the checkout), holding the lock.
    let fifo = dir.0.join("go");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    script(&dir.0.join("hooks/pre-link"), &format!("read line < {}", fifo.display()));
    let req = controller.request(DeployAction::Deploy, Some("www"), Some("v2"), Filters::default());
    let mut pending = controller.send(&req).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = pending.next(deadline).await.expect("pre-link starts");
        if r.step.as_deref() == Some("pre-link") && r.state == StepState::Started {
            break;
        }
    }
    assert!(dir.0.join("releases/www_v2").is_dir(), "checked out before pre-link");
    assert!(dir.0.join("releases/.deploykit/lock.json").exists());
    first.signal("KILL");
    let _ = first.child.wait();
    // Unblock the orphaned hook so it exits.
    std::fs::write(&fifo, "go\n").unwrap();
    std::fs::remove_file(dir.0.join("hooks/pre-link")).unwrap();

    let _second = agent(&config);
    let st = controller.status("www", Filters::default(), one).await.unwrap();
    assert_eq!(st[0].data["current"], "www_v1", "{st:?}");
    assert!(st[0].data["lock"].is_null(), "lock freed: {st:?}");
    assert_eq!(live(&dir.0).as_deref(), Some("v1"));
    assert!(!dir.0.join("releases/www_v2").exists(), "half-made release removed");
    // And the site deploys again.
    let req = controller.request(DeployAction::Deploy, Some("www"), Some("v2"), Filters::default());
    let r = controller.gather(&req, one).await.unwrap();
    assert_eq!(r[0].state, StepState::Ok, "{r:?}");
    assert_eq!(live(&dir.0).as_deref(), Some("v2"));
}

#[test]
fn the_example_agent_config_checks_out_once_its_key_is_real() {
    let dir = TmpDir::new("example");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/agent.toml")).unwrap();
    let key = SecretKey::generate().unwrap().public().to_string();
    let text = text
        .replace("ed25519:REPLACE-WITH-THE-OUTPUT-OF-dk-deploy-keygen=", &key)
        .replace("deploy = [\"ops\", \"web\"]", "deploy = [\"ops\"]")
        .replace("rollback = [\"ops\", \"web\"]", "rollback = [\"ops\"]");
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let out = dk("dk-agent").arg("--check").arg("--config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Unedited, it is refused with a message naming the key.
    let out = dk("dk-agent").arg("--check").arg("--config").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/agent.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trusted_keys.ops"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_health_and_metrics() {
    let dir = TmpDir::new("health");
    let (mut broker, url) = broker();
    let key = SecretKey::generate().unwrap();
    let config = setup(&dir.0, &key, &url);
    let mut c = dk("dk-agent");
    c.arg("--config").arg(&config).args(["-v", "--metrics-listen", "127.0.0.1:0"]);
    let mut agent = Proc::spawn(c);
    let line = agent.line(Duration::from_secs(20), |l| l.contains("serving /healthz and /metrics"));
    let addr = line.split("http://").nth(1).unwrap().trim().to_owned();
    let client = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
    let controller = Controller::new(client, controller_config(&dir.0, key)).await.unwrap();
    let one = Window { timeout: Duration::from_secs(20), expect: Some(1) };
    assert_eq!(controller.status("www", Filters::default(), one).await.unwrap()[0].state, StepState::Ok);
    let req = controller.request(DeployAction::Deploy, Some("www"), Some("v9"), Filters::default());
    assert_eq!(controller.gather(&req, one).await.unwrap()[0].state, StepState::Refused);
    let a = addr.clone();
    let (code, body) = tokio::task::spawn_blocking(move || http(&a, "GET", "/healthz", &[], b"")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((h["daemon"].as_str(), h["connected"].as_bool(), h["messages"].as_u64(), h["errors"].as_u64()), (Some("dk-agent"), Some(true), Some(2), Some(1)), "{h}");
    assert!(h["last_error"].as_str().unwrap().contains("no tag or branch \"v9\""), "{h}");
    let a = addr.clone();
    let (code, metrics) = tokio::task::spawn_blocking(move || http(&a, "GET", "/metrics", &[], b"")).await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("deploykit_messages_total{daemon=\"dk-agent\"} 2\n") && metrics.contains("deploykit_connected{daemon=\"dk-agent\"} 1\n"), "{metrics}");
    // A real deploy: its steps are counted by site, step and result, with durations (#13).
    let req = controller.request(DeployAction::Deploy, Some("www"), Some("v1"), Filters::default());
    let replies = controller.gather(&req, one).await.unwrap();
    assert_eq!(replies[0].state, StepState::Ok, "{replies:?}");
    let a = addr.clone();
    let deployed = [("action", "deploy"), ("result", "ok")];
    let scraped =
        tokio::task::spawn_blocking(move || common::scrape_until(&a, Duration::from_secs(20), |s| common::sample(s, "deploykit_agent_requests_total", &deployed) == Some(1.0)))
            .await
            .unwrap();
    if let Some(s) = scraped {
        use common::sample;
        assert_eq!(sample(&s, "deploykit_agent_requests_total", &[("action", "status"), ("result", "ok")]), Some(1.0), "{s:?}");
        assert_eq!(sample(&s, "deploykit_agent_requests_total", &[("action", "deploy"), ("result", "refused")]), Some(1.0), "{s:?}");
        assert_eq!(sample(&s, "deploykit_deploy_steps_total", &[("site", "www"), ("step", "checkout"), ("result", "ok")]), Some(1.0), "{s:?}");
        assert_eq!(sample(&s, "deploykit_deploy_step_duration_seconds_count", &[("site", "www"), ("step", "checkout")]), Some(1.0), "{s:?}");
        assert_eq!(sample(&s, "deploykit_build_info", &[("daemon", "dk-agent")]), Some(1.0), "{s:?}");
    }
    // The broker goes away: /healthz turns 503 once the agent notices (it logs the loss).
    broker.signal("KILL");
    let _ = broker.child.wait();
    agent.line(Duration::from_secs(30), |l| l.contains("connection lost") || l.contains("reconnect"));
    let (code, body) = tokio::task::spawn_blocking(move || http(&addr, "GET", "/healthz", &[], b"")).await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"status\":\"disconnected\""), "{body}");
}

/// Three agents (web01..web03) sharing one repo with tags v1 and v2, each in `dir/NAME`.
fn setup_three(dir: &Path, key: &SecretKey, url: &str) -> Vec<PathBuf> {
    let first = setup(&dir.join("web01"), key, url);
    let repo = dir.join("web01/www");
    let mut configs = vec![first];
    for n in ["web02", "web03"] {
        let home = dir.join(n);
        std::fs::create_dir_all(&home).unwrap();
        let text = std::fs::read_to_string(&configs[0]).unwrap().replace(&dir.join("web01").display().to_string(), &home.display().to_string());
        let text = text.replace("identity = \"web01\"", &format!("identity = \"{n}\"")).replace(&home.join("www").display().to_string(), &repo.display().to_string());
        let path = home.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        // Enrolled with web01's fleet key, as an operator would.
        let out = dk("dk-agent").arg("--print-key").arg("--config").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let agent_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let out =
            dk("dk-deploy").args(["enroll", "--fleet-key"]).arg(dir.join("web01/fleet.key")).args(["--identity", n, "--agent-key", &agent_key, "--valid", "1d"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(home.join("agent.cert"), &out.stdout).unwrap();
        configs.push(path);
    }
    configs
}

#[test]
fn untrusted_keys_missing_servers_and_not_started_ones_are_said_as_they_are() {
    let dir = TmpDir::new("missing");
    let (_broker, url) = broker();
    let key = SecretKey::generate().unwrap();
    let key_path = dir.0.join("ops.pem");
    key.save(&key_path).unwrap();
    let configs = setup_three(&dir.0, &key, &url);
    let mut agents: Vec<Proc> = configs.iter().map(|c| agent(c)).collect();
    let audit = dir.0.join("audit.log");
    let run = |key: &Path, args: &[&str]| {
        let mut c = dk("dk-deploy");
        c.args(args).args(["--user", "ann", "--key"]).arg(key).args(["--broker", &url]).arg("--trust").arg(dir.0.join("web01/trust.toml"));
        if args[0] == "deploy" {
            c.arg("--audit-log").arg(&audit);
        }
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let last_audit = || -> serde_json::Value { serde_json::from_str(std::fs::read_to_string(&audit).unwrap().lines().last().unwrap()).unwrap() };
    let lives = || ["web01", "web02", "web03"].map(|n| live(&dir.0.join(n)));

    // (d) A key the agents do not trust: every command says the real reason, naming the key.
    let stranger = SecretKey::generate().unwrap();
    let stranger_path = dir.0.join("stranger.pem");
    stranger.save(&stranger_path).unwrap();
    for args in [&["deploy", "--site", "www", "--tag", "v1", "--discovery-timeout", "2s", "--yes"][..], &["discover", "--discovery-timeout", "2s"][..]] {
        let (code, _, err) = run(&stranger_path, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("agents do not answer requests they cannot verify") && err.contains(&stranger.public().to_string()), "{args:?}: {err}");
    }
    assert_eq!(lives(), [None, None, None]);

    // v1 everywhere.
    let all3 = ["deploy", "--site", "www", "--expect", "3", "--yes", "--batch", "2"];
    let (code, out, err) = run(&key_path, &[&all3[..], &["--tag", "v1", "--discovery-timeout", "20s"]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(lives(), [Some("v1".into()), Some("v1".into()), Some("v1".into())]);

    // (f) The canary fails: failed = the canary only; the others were never started.
    script(&dir.0.join("web01/hooks/pre-deploy"), "exit 3");
    let (code, out, err) = run(&key_path, &[&all3[..], &["--tag", "v2", "--discovery-timeout", "20s"]].concat());
    assert_eq!(code, Some(1), "{out}{err}");
    let line = last_audit();
    assert_eq!(line["failed"], serde_json::json!(["web01"]), "{line}");
    assert_eq!(line["not_started"], serde_json::json!(["web02", "web03"]), "{line}");
    std::fs::remove_file(dir.0.join("web01/hooks/pre-deploy")).unwrap();

    // (e) web03 stops. A rollout expecting 3 servers fails before any server changes...
    let mut web03 = agents.pop().unwrap();
    web03.signal("TERM");
    let (status, _) = web03.wait_exit(Duration::from_secs(30));
    assert_eq!(status, Some(0));
    let (code, out, err) = run(&key_path, &[&all3[..], &["--tag", "v2", "--discovery-timeout", "3s"]].concat());
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("1 more expected server") && out.contains("0/3 ok"), "{out}{err}");
    assert_eq!(lives(), [Some("v1".into()), Some("v1".into()), Some("v1".into())], "nothing deployed");
    // ... and names the missing one when it is expected by name.
    let named = ["deploy", "--site", "www", "--tag", "v2", "-I", "web01", "-I", "web02", "-I", "web03", "--discovery-timeout", "3s", "--yes", "--batch", "2"];
    let (code, out, err) = run(&key_path, &named);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("missing: web03 did not answer discovery"), "{err}");
    assert!(out.contains("web03") && out.contains("MISSING") && out.contains("0/3 ok"), "{out}");
    let line = last_audit();
    assert_eq!(
        (line["missing"].clone(), line["failed"].clone(), line["not_started"].clone()),
        (serde_json::json!(["web03"]), serde_json::json!([]), serde_json::json!(["web01", "web02"])),
        "{line}"
    );
    assert_eq!(lives(), [Some("v1".into()), Some("v1".into()), Some("v1".into())], "nothing deployed");
    // --allow-missing deploys to the two that answered.
    let (code, out, err) = run(&key_path, &[&named[..], &["--allow-missing"]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2/3 ok") && out.contains("missing: web03"), "{out}");
    assert_eq!(lives(), [Some("v2".into()), Some("v2".into()), Some("v1".into())]);
}

/// The one audit trail: a rollout run with dk-deploy is published as a signed
/// record and appears in dk-web's History (a real dk-web process) with its
/// reason and each server's batch (the canary kept); a record signed by a key
/// dk-web does not list in `[controllers]` is rejected.
#[test]
fn a_dk_deploy_rollout_appears_in_dk_webs_history_with_its_batches() {
    let dir = TmpDir::new("trail");
    let (_broker, url) = broker();
    let key = SecretKey::generate().unwrap();
    let key_path = dir.0.join("ops.pem");
    key.save(&key_path).unwrap();
    let configs = setup_three(&dir.0, &key, &url);
    let _agents: Vec<Proc> = configs.iter().map(|c| agent(c)).collect();
    let web_key = dir.0.join("web.key");
    SecretKey::generate().unwrap().save(&web_key).unwrap();
    let web_toml = dir.0.join("web.toml");
    std::fs::write(
        &web_toml,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = {:?}\nkey_file = {:?}\n[auth]\nmode = \"none\"\nuser = \"viewer\"\n[controllers]\nops = \"{}\"\n[sites.www]\n",
            dir.0.join("web.sqlite").display().to_string(),
            web_key.display().to_string(),
            key.public()
        ),
    )
    .unwrap();
    let mut web = Command::new(env!("CARGO_BIN_EXE_dk-web"));
    web.env_remove("DK_BROKER_URL").arg("-v").arg("--config").arg(&web_toml).args(["--broker", &url]);
    let mut web = Proc::spawn(web);
    let line = web.line(Duration::from_secs(30), |l| l.contains("dk-web: listening on http://"));
    let addr = line.rsplit("http://").next().unwrap().trim().to_owned();

    let deploy = |key: &Path, tag: &str, reason: &str| {
        let out = dk("dk-deploy")
            .args(["deploy", "--site", "www", "--tag", tag, "--expect", "3", "--discovery-timeout", "20s", "--yes", "--canary", "1", "--batch", "1", "--user", "ann"])
            .args(["--reason", reason, "--key"])
            .arg(key)
            .arg("--audit-log")
            .arg(dir.0.join("audit.log"))
            .arg("--trust")
            .arg(dir.0.join("web01/trust.toml"))
            .args(["--broker", &url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    };
    deploy(&key_path, "v1", "OPS-7 first release");
    web.line(Duration::from_secs(30), |l| l.contains("rollout recorded") && l.contains("dk-deploy"));
    let (status, page) = http(&addr, "GET", "/history", &[], b"");
    assert_eq!(status, 200);
    assert!(page.contains("data-controller=\"dk-deploy\"") && page.contains("OPS-7 first release") && page.contains(">ann<"), "{page}");
    let id = page.split("href=\"/deploys/").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
    let (status, page) = http(&addr, "GET", &format!("/deploys/{id}"), &[], b"");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("via <b class=\"via\">dk-deploy</b>") && page.contains("Reason: OPS-7 first release"), "{page}");
    // Canary web0x first, then one server per batch: "canary", 1, 2.
    let batches: Vec<&str> = page.split("<td class=\"num\">").skip(1).map(|s| s.split('<').next().unwrap()).collect();
    assert_eq!(batches, ["canary", "1", "2"], "{page}");
    assert_eq!(page.matches("data-state=\"ok\"").count(), 3, "{page}");

    // A record signed by a key dk-web does not list (a forger on the bus): refused, not stored.
    let forged = RolloutRecord {
        id: RolloutRecord::new_id(),
        controller: "dk-deploy".into(),
        user: "mallory".into(),
        reason: Some("cover-up".into()),
        action: DeployAction::Deploy,
        site: "www".into(),
        tag: Some("v2".into()),
        selection: "all".into(),
        started_at: 1_800_000_000,
        finished_at: 1_800_000_001,
        result: "ok".into(),
        detail: None,
        report: None,
        approved_by: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
        forged.publish(&client, "/topic/deploykit.rollouts", &SecretKey::generate().unwrap()).await.unwrap();
    });
    let rejected = web.line(Duration::from_secs(30), |l| l.contains("rollout record rejected"));
    assert!(rejected.contains("not a trusted controller key"), "{rejected}");
    let (_, page) = http(&addr, "GET", "/history", &[], b"");
    assert!(!page.contains("mallory") && page.matches("data-deploy=").count() == 1, "{page}");
    web.signal("TERM");
    assert_eq!(web.wait_exit(Duration::from_secs(30)).0, Some(0));
}
