//! Every daemon's `/metrics`, scraped after real work from real processes on a
//! real (embedded) broker, parses with Python's `prometheus_client` text parser
//! and carries its labelled series (#13). Without `prometheus_client` the checks
//! are skipped, unless DK_REQUIRE_BROKERS=1 (then they fail).

mod common;

use common::{broker, fixture, git, http, metrics_addr, sample, scrape_until, temp_dir, Proc, Sample};
use std::process::Command;
use std::time::Duration;

fn dk(name: &str) -> Command {
    let path = match name {
        "dk-keepalive" => env!("CARGO_BIN_EXE_dk-keepalive"),
        "dk-webhook" => env!("CARGO_BIN_EXE_dk-webhook"),
        "dk-web" => env!("CARGO_BIN_EXE_dk-web"),
        "dk-fetch" => env!("CARGO_BIN_EXE_dk-fetch"),
        "dk-jenkins" => env!("CARGO_BIN_EXE_dk-jenkins"),
        _ => unreachable!("{name}"),
    };
    let mut c = Command::new(path);
    c.env_remove("DK_BROKER_URL").env_remove("DK_METRICS_LISTEN");
    c
}

/// What every daemon's /metrics carries.
fn assert_common(s: &[Sample], daemon: &str) {
    let d = [("daemon", daemon)];
    assert_eq!(sample(s, "deploykit_build_info", &[("daemon", daemon), ("version", env!("CARGO_PKG_VERSION"))]), Some(1.0), "{s:?}");
    for name in ["deploykit_up", "deploykit_connected", "deploykit_messages_total", "deploykit_errors_total", "deploykit_broker_reconnects_total", "deploykit_uptime_seconds"] {
        assert!(sample(s, name, &d).is_some(), "{name} missing: {s:?}");
    }
    assert!(sample(s, "process_start_time_seconds", &d).is_some_and(|v| v > 1.7e9), "{s:?}");
    assert!(sample(s, "process_resident_memory_bytes", &d).is_some_and(|v| v > 1e6), "{s:?}");
    assert!(sample(s, "process_open_fds", &d).is_some_and(|v| v >= 3.0), "{s:?}");
}

/// /healthz in the shared shape.
fn assert_healthz(addr: &str, daemon: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((h["daemon"].as_str(), h["status"].as_str(), h["connected"].as_bool()), (Some(daemon), Some("ok"), Some(true)), "{h}");
    assert!(h["uptime_seconds"].is_u64() && h["messages"].is_u64() && h.get("last_error").is_some(), "{h}");
    h
}

#[test]
fn keepalive_counts_sends_by_target() {
    let (_broker, url) = broker();
    let mut c = dk("dk-keepalive");
    c.args(["-v", "--broker", &url, "--destination", "/topic/dk.test.metrics.ka", "--interval", "200ms", "--metrics-listen", "127.0.0.1:0"]);
    let mut p = Proc::spawn(c);
    let addr = metrics_addr(&mut p);
    let ok = [("target", "/topic/dk.test.metrics.ka"), ("result", "ok")];
    let Some(s) = scrape_until(&addr, Duration::from_secs(20), |s| sample(s, "deploykit_keepalives_total", &ok).is_some_and(|v| v >= 2.0)) else { return };
    assert_common(&s, "dk-keepalive");
    assert!(sample(&s, "deploykit_keepalive_duration_seconds_count", &[("target", "/topic/dk.test.metrics.ka")]).is_some_and(|v| v >= 2.0), "{s:?}");
    assert!(sample(&s, "deploykit_messages_total", &[]).is_some_and(|v| v >= 2.0), "{s:?}");
    assert_eq!(sample(&s, "deploykit_keepalive_connected", &[("target", "/topic/dk.test.metrics.ka")]), Some(1.0), "{s:?}");
    let h = assert_healthz(&addr, "dk-keepalive");
    assert_eq!(h["broker"].as_str(), Some("none"), "{h}");
}

#[test]
fn webhook_counts_deliveries_by_forge_and_result() {
    let (_broker, url) = broker();
    let dir = temp_dir("metrics-webhook");
    let config = dir.join("webhook.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\nspool = {:?}\n[github]\n[gitlab]\n", dir.join("spool").display().to_string())).unwrap();
    let mut c = dk("dk-webhook");
    c.arg("-v").arg("--config").arg(&config).args(["--broker", &url, "--metrics-listen", "127.0.0.1:0"]);
    let mut p = Proc::spawn(c);
    let maddr = metrics_addr(&mut p);
    let line = p.line(Duration::from_secs(20), |l| l.contains("dk-webhook: listening on http://"));
    let addr = line.rsplit("http://").next().unwrap().trim().to_owned();
    let push = [("Content-Type", "application/json"), ("X-GitHub-Event", "push")];
    assert_eq!(http(&addr, "POST", "/github", &push, &fixture("github_branch_push")).0, 200);
    assert_eq!(http(&addr, "POST", "/github", &push, b"{not json").0, 400);
    assert_eq!(http(&addr, "POST", "/github", &[("X-GitHub-Event", "issues")], br#"{"action":"opened"}"#).0, 202);
    // The public listener's /healthz has the shared shape and the spool depth; /metrics is not there.
    let h = assert_healthz(&addr, "dk-webhook");
    assert_eq!((h["broker"].as_str(), h["spooled"].as_u64()), (Some("ready"), Some(0)), "{h}");
    assert_eq!(http(&addr, "GET", "/metrics", &[], b"").0, 404);
    let Some(s) = scrape_until(&maddr, Duration::from_secs(10), |s| sample(s, "deploykit_webhook_deliveries_total", &[("forge", "github"), ("result", "published")]) == Some(1.0))
    else {
        return;
    };
    assert_common(&s, "dk-webhook");
    assert_eq!(sample(&s, "deploykit_webhook_deliveries_total", &[("forge", "github"), ("result", "malformed")]), Some(1.0), "{s:?}");
    assert_eq!(sample(&s, "deploykit_webhook_deliveries_total", &[("forge", "github"), ("result", "ignored")]), Some(1.0), "{s:?}");
    assert_eq!(sample(&s, "deploykit_spool_depth", &[("daemon", "dk-webhook")]), Some(0.0), "{s:?}");
    assert_eq!(sample(&s, "deploykit_connected", &[]), Some(1.0), "{s:?}");
    assert_healthz(&maddr, "dk-webhook");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn web_counts_deploys_by_action_and_result() {
    let (_broker, url) = broker();
    let dir = temp_dir("metrics-web");
    let key = dir.join("web.key");
    deploykit::deploy::keys::SecretKey::generate().unwrap().save(&key).unwrap();
    let p = dir.join("web.toml");
    std::fs::write(
        &p,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = {:?}\nkey_file = {:?}\ndiscovery_window = \"200ms\"\nserver_timeout = \"1s\"\n[auth]\nmode = \"none\"\n[sites.www]\ndeployers = [\"anonymous\"]\n",
            dir.join("web.sqlite").display().to_string(),
            key.display().to_string(),
        ),
    )
    .unwrap();
    let mut c = dk("dk-web");
    c.arg("-v").arg("--config").arg(&p).args(["--broker", &url, "--metrics-listen", "127.0.0.1:0"]);
    let mut web = Proc::spawn(c);
    let maddr = metrics_addr(&mut web);
    let line = web.line(Duration::from_secs(30), |l| l.contains("dk-web: listening on http://"));
    let addr = line.rsplit("http://").next().unwrap().trim().to_owned();
    let h = assert_healthz(&addr, "dk-web");
    assert_eq!((h["broker"].as_str(), h["deploys_running"].as_u64()), (Some("ready"), Some(0)), "{h}");
    assert_eq!(http(&addr, "GET", "/metrics", &[], b"").0 / 100, 4, "dk-web's public listener must not serve /metrics");
    // A deploy with no agent answering: it ends failed (or error), and is counted.
    let (status, page) = http(&addr, "GET", "/sites/www", &[], b"");
    assert_eq!(status, 200, "{page}");
    let token = page.split("name=\"csrf\" value=\"").nth(1).and_then(|t| t.split('"').next()).unwrap_or_else(|| panic!("no csrf field: {page}"));
    let origin = format!("http://{addr}");
    let form = format!("tag=v1&scope=all&csrf={token}");
    let (status, body) = http(&addr, "POST", "/sites/www/deploy", &[("Origin", &origin), ("Content-Type", "application/x-www-form-urlencoded")], form.as_bytes());
    assert_eq!(status, 303, "{body}");
    let counted = |s: &[Sample]| s.iter().any(|x| x.name == "deploykit_web_deploys_total" && x.labels.get("action").map(String::as_str) == Some("deploy") && x.value == 1.0);
    let Some(s) = scrape_until(&maddr, Duration::from_secs(20), counted) else { return };
    assert_common(&s, "dk-web");
    let result = s.iter().find(|x| x.name == "deploykit_web_deploys_total").map(|x| x.labels["result"].clone()).unwrap();
    assert!(result == "failed" || result == "error", "{s:?}");
    assert_eq!(sample(&s, "deploykit_web_deploys_running", &[]), Some(0.0), "{s:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fetch_counts_fetches_by_repo_with_durations() {
    let (_broker, url) = broker();
    let root = temp_dir("metrics-fetch");
    let central = root.join("one.git");
    git(&root, &["init", "-q", "--bare", central.to_str().unwrap()]);
    let work = root.join("work");
    git(&root, &["clone", "-q", central.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::write(work.join("f.txt"), "x").unwrap();
    git(&work, &["add", "f.txt"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/master"]);
    let clone = root.join("server-one");
    git(&root, &["clone", "-q", central.to_str().unwrap(), clone.to_str().unwrap()]);
    let topics = format!("dkmetrics{}", std::process::id());
    let file = root.join("fetch.toml");
    std::fs::write(
        &file,
        format!(
            "node = \"web01\"\ncommits_topic = \"/topic/{topics}.commits\"\nevents_topic = \"/topic/{topics}.events\"\nresults_topic = \"/topic/{topics}.results\"\nreconcile_interval = \"off\"\n[broker]\nurl = \"{url}\"\n[repos.one]\npath = {:?}\nmode = \"normal\"\n",
            clone.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut c = dk("dk-fetch");
    c.arg("-v").arg("--config").arg(&file).args(["--metrics-listen", "127.0.0.1:0"]);
    let mut p = Proc::spawn(c);
    let addr = metrics_addr(&mut p);
    // The start-up reconcile fetches every repo once.
    let ok = [("repo", "one"), ("result", "ok")];
    let Some(s) = scrape_until(&addr, Duration::from_secs(30), |s| sample(s, "deploykit_fetches_total", &ok) == Some(1.0)) else { return };
    assert_common(&s, "dk-fetch");
    assert_eq!(sample(&s, "deploykit_fetch_duration_seconds_count", &[("repo", "one")]), Some(1.0), "{s:?}");
    assert_eq!(sample(&s, "deploykit_fetch_duration_seconds_bucket", &[("repo", "one"), ("le", "+Inf")]), Some(1.0), "{s:?}");
    assert_healthz(&addr, "dk-fetch");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jenkins_counts_triggers_by_job() {
    use deploykit::message::{Commit, Destinations, Publisher};
    use deploykit::stomp::{Client, ClientConfig};
    let (_broker, url) = broker();
    let (base, _requests) = common::jenkins_stub();
    let dir = temp_dir("metrics-jenkins");
    let file = dir.join("jenkins.toml");
    std::fs::write(&file, format!("quiet_period = \"100ms\"\n[broker]\nurl = \"{url}\"\n[jenkins]\nurl = \"{base}\"\n[[repos.site.jobs]]\njob = \"site\"\n")).unwrap();
    let mut c = dk("dk-jenkins");
    c.arg("-v").arg("--config").arg(&file).args(["--metrics-listen", "127.0.0.1:0"]);
    let mut p = Proc::spawn(c);
    let addr = tokio::task::block_in_place(|| {
        let addr = metrics_addr(&mut p);
        p.line(Duration::from_secs(20), |l| l.contains("dk-jenkins started"));
        addr
    });
    let client = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
    let publisher = Publisher::new(client.clone(), "git-hook").destinations(Destinations::default());
    publisher.commit(&Commit { repo: "site".into(), oldrev: "1".repeat(40), newrev: "2".repeat(40), refname: "refs/heads/master".into(), ..Commit::default() }).await.unwrap();
    let ok = [("job", "site"), ("result", "ok")];
    let s = tokio::task::block_in_place(|| scrape_until(&addr, Duration::from_secs(20), |s| sample(s, "deploykit_jenkins_triggers_total", &ok) == Some(1.0)));
    let Some(s) = s else { return };
    assert_common(&s, "dk-jenkins");
    tokio::task::block_in_place(|| assert_healthz(&addr, "dk-jenkins"));
    let _ = std::fs::remove_dir_all(&dir);
}
