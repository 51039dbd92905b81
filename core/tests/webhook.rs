//! dk-webhook end to end: real HTTP requests (raw HTTP/1.1 over TCP) to the
//! receiver, published through the embedded broker, read back by a subscriber.
//! Fixtures in `tests/fixtures/webhook/` follow each forge's documented push
//! payloads (see `generate.py` there).

mod common;

use deploykit::broker::{Broker, BrokerConfig, BrokerHandle};
use deploykit::forge::signature::{hmac_sha256, HookSecret};
use deploykit::message::commit::ZERO_REV;
use deploykit::message::{decode, Commit, Destinations, Message, Source, Wire};
use deploykit::stomp::{Client, ClientConfig, SubscribeOptions, Subscription};
use deploykit::webhook::{self, WebhookConfig, WebhookHandle};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);
const PUSHES: [&str; 5] = ["branch_push", "tag_push", "branch_delete", "twenty_commits", "unicode"];

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhook").join(format!("{name}.json"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dk-webhook-test-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A response: status and body text.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

/// One HTTP/1.1 request with `Connection: close`; the raw response is parsed by hand.
async fn request(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // A server may answer (413) before reading the whole body and close: ignore write errors then.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("response in time").ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Reply { status, body }
}

async fn post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    request(addr, "POST", path, &h, body).await
}

/// The headers a forge sends with a push.
fn push_headers(forge: &str, delivery: &str) -> Vec<(&'static str, String)> {
    match forge {
        "github" => vec![("X-GitHub-Event", "push".into()), ("X-GitHub-Delivery", delivery.into())],
        "gitlab" => vec![("X-Gitlab-Event", "Push Hook".into()), ("X-Gitlab-Event-UUID", delivery.into())],
        _ => vec![("X-Gitea-Event", "push".into()), ("X-Gitea-Delivery", delivery.into())],
    }
}

fn as_refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

struct Setup {
    _broker: Option<BrokerHandle>,
    hook: WebhookHandle,
    sub: Subscription,
    _spool: PathBuf,
    config: WebhookConfig,
}

fn client_config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url).unwrap();
    c.url.options.initial_reconnect_delay = Duration::from_millis(50);
    c.url.options.max_reconnect_delay = Duration::from_millis(300);
    c
}

/// A broker, a receiver configured by `edit`, and a subscriber on `watch` (commits by default).
async fn setup(edit: impl FnOnce(&mut WebhookConfig), watch_events: bool) -> Setup {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let spool = temp_dir("spool");
    let mut config = WebhookConfig { listen: "127.0.0.1:0".parse().unwrap(), spool: spool.clone(), ..WebhookConfig::default() };
    config.destinations.commits = format!("/topic/dk.test.commits.{}", fastrand::u64(..));
    config.destinations.events = format!("/topic/dk.test.events.{}.{{source}}", fastrand::u64(..));
    config.publish_wait = Duration::from_secs(10);
    edit(&mut config);
    let sub_client = Client::connect(client_config(&broker.url())).await.unwrap();
    let dest = if watch_events { config.destinations.events_for(&config.event_source) } else { config.destinations.commits.clone() };
    let sub = sub_client.subscribe(&dest, SubscribeOptions::default()).await.unwrap();
    let client = Client::connect(client_config(&broker.url())).await.unwrap();
    let hook = webhook::start(config.clone(), client).await.unwrap();
    Setup { _broker: Some(broker), hook, sub, _spool: spool, config }
}

async fn next_message(sub: &mut Subscription) -> Message {
    let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("a message in time").expect("subscription open");
    decode(m.destination(), &m.headers, &m.body).unwrap()
}

async fn next_commit(sub: &mut Subscription) -> Commit {
    match next_message(sub).await {
        Message::Commit(c) => c,
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[tokio::test]
async fn the_same_push_gives_the_same_commit_whichever_forge_sent_it() {
    let mut s = setup(|_| {}, false).await;
    for push in PUSHES {
        let mut seen: Vec<Commit> = Vec::new();
        for forge in ["github", "gitlab", "gitea"] {
            let headers = push_headers(forge, &format!("{push}-{forge}"));
            let r = post(s.hook.addr(), &format!("/{forge}"), &as_refs(&headers), &fixture(&format!("{forge}_{push}"))).await;
            assert_eq!(r.status, 200, "{forge} {push}: {}", r.body);
            assert!(r.body.contains("\"published\""), "{}", r.body);
            let mut c = next_commit(&mut s.sub).await;
            let expected = match forge {
                "github" => Source::Github,
                "gitlab" => Source::Gitlab,
                _ => Source::Gitea,
            };
            assert_eq!(c.source, expected);
            c.source = Source::Git;
            seen.push(c);
        }
        assert_eq!(seen[0], seen[1], "{push}: GitHub and GitLab differ");
        assert_eq!(seen[0], seen[2], "{push}: GitHub and Gitea differ");
        let c = &seen[0];
        assert_eq!(c.repo, "site", "{push}: GitLab's project is called \"Site\"; the legacy URL rule gives \"site\"");
        match push {
            "branch_push" => {
                assert_eq!((c.refname.as_str(), c.commits.len()), ("refs/heads/main", 3));
                assert_eq!(c.commits[0].id, c.newrev, "newest first");
                assert_eq!(c.commits[1].message, "Fix the thing");
                assert_eq!(c.commits[0].author, "Dev One <dev1@example.com>");
                assert_eq!(c.commits[0].timestamp, "2026-11-25T10:03:00+00:00");
            }
            "tag_push" => {
                assert_eq!((c.refname.as_str(), c.oldrev.as_str()), ("refs/tags/v1.2.0", ZERO_REV));
                assert!(c.commits.is_empty());
            }
            "branch_delete" => {
                assert!(c.is_deletion());
                assert_eq!(c.refname, "refs/heads/feature/old");
            }
            "twenty_commits" => {
                assert_eq!(c.commits.len(), 20);
                assert!(c.commits[0].message.starts_with("Change number 20\n"), "{}", c.commits[0].message);
                assert!(c.commits[19].message.starts_with("Change number 1\n"));
            }
            _ => {
                assert_eq!(c.commits[0].message, "Fix ünïcödé — 日本語 ✓\n\nBody with emoji 🚀 and \"quotes\"\ttab");
                assert_eq!(c.commits[0].author, "Zoë Ångström <zoe@example.com>");
            }
        }
        assert_eq!(c.correlation_id.as_deref(), Some(c.newrev.as_str()));
    }
    s.hook.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn legacy_wire_bodies_are_byte_identical_across_forges() {
    let mut s = setup(
        |c| {
            c.wire = Wire::Legacy;
        },
        false,
    )
    .await;
    let mut bodies = Vec::new();
    for forge in ["github", "gitlab", "gitea"] {
        let headers = push_headers(forge, &format!("legacy-{forge}"));
        let r = post(s.hook.addr(), &format!("/{forge}"), &as_refs(&headers), &fixture(&format!("{forge}_unicode"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let m = tokio::time::timeout(WAIT, s.sub.recv()).await.unwrap().unwrap();
        assert!(m.headers.get("dk-type").is_none(), "legacy wire has no dk-type");
        bodies.push((m.headers.get("subject").unwrap().to_owned(), m.body.clone()));
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0], bodies[2]);
    let text = std::str::from_utf8(&bodies[0].1).unwrap();
    assert!(text.starts_with("repo: site\noldrev: 3333333333333333333333333333333333333333\n"), "{text}");
    assert!(text.contains("\tFix ünïcödé — 日本語 ✓\n"), "{text}");
}

#[tokio::test]
async fn github_signatures_form_delivery_ping_and_redelivery() {
    let secret = "It's a Secret to Everybody";
    let mut s = setup(
        |c| {
            c.forges.retain(|f| f.forge == webhook::Forge::Github);
            c.forges[0].secret = Some(HookSecret::new(secret));
        },
        false,
    )
    .await;
    let addr = s.hook.addr();
    let body = fixture("github_branch_push");
    let sign = |b: &[u8]| format!("sha256={}", hex(&hmac_sha256(&HookSecret::new(secret), b)));
    let good = sign(&body);
    // Missing and wrong signatures: 401, nothing published.
    let r = post(addr, "/github", &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1")], &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("X-Hub-Signature-256"), "{}", r.body);
    let wrong = sign(b"another body");
    let r = post(addr, "/github", &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1"), ("X-Hub-Signature-256", &wrong)], &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // The 401s did not burn the delivery id: the signed delivery is published.
    let r = post(addr, "/github", &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1"), ("X-Hub-Signature-256", &good)], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = next_commit(&mut s.sub).await;
    assert_eq!(c.refname, "refs/heads/main");
    // A redelivery (same X-GitHub-Delivery) is answered but not published again.
    let r = post(addr, "/github", &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1"), ("X-Hub-Signature-256", &good)], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("duplicate"), "{}", r.body);
    // Form-encoded delivery: the signature covers the raw form body.
    let tag = fixture("github_tag_push");
    let form: String = form_encode(&tag);
    let r = request(
        addr,
        "POST",
        "/github",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-2"), ("X-Hub-Signature-256", &sign(form.as_bytes()))],
        form.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The next message is the tag push: the duplicate and the 401s published nothing.
    let c = next_commit(&mut s.sub).await;
    assert_eq!(c.refname, "refs/tags/v1.2.0");
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let r = post(addr, "/github", &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sign(ping))], ping).await;
    assert_eq!((r.status, r.body.contains("pong")), (200, true), "{}", r.body);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `payload=<percent-encoded JSON>`, as GitHub's form content type sends it.
fn form_encode(json: &[u8]) -> String {
    let mut out = String::from("payload=");
    for &b in json {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[tokio::test]
async fn gitlab_token_tag_push_and_merge_request_event() {
    let mut s = setup(
        |c| {
            c.forges.retain(|f| f.forge == webhook::Forge::Gitlab);
            c.forges[0].secret = Some(HookSecret::new("gl-t0ken"));
        },
        true,
    )
    .await;
    let addr = s.hook.addr();
    let tag = fixture("gitlab_tag_push");
    let r = post(addr, "/gitlab", &[("X-Gitlab-Event", "Tag Push Hook"), ("X-Gitlab-Token", "wrong")], &tag).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post(addr, "/gitlab", &[("X-Gitlab-Event", "Tag Push Hook")], &tag).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post(addr, "/gitlab", &[("X-Gitlab-Event", "Tag Push Hook"), ("X-Gitlab-Token", "gl-t0ken")], &tag).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Watching the events topic: the commit's event line, then the merge request's.
    match next_message(&mut s.sub).await {
        Message::Event(e) => assert_eq!(e.text, format!("commit [site] refs/tags/v1.2.0 {}", "7".repeat(40))),
        other => panic!("{other:?}"),
    }
    let mr = fixture("gitlab_merge_request");
    let r = post(addr, "/gitlab", &[("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", "gl-t0ken")], &mr).await;
    assert_eq!(r.status, 200, "{}", r.body);
    match next_message(&mut s.sub).await {
        Message::Event(e) => {
            assert_eq!(e.source, "webhook");
            assert_eq!(e.text, "merge request !7 open in acme/site: Faster front page (feature/fast → main) by dev1 https://gitlab.example.com/acme/site/-/merge_requests/7");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn gitea_signature_is_checked() {
    let mut s = setup(
        |c| {
            c.forges.retain(|f| f.forge == webhook::Forge::Gitea);
            c.forges[0].secret = Some(HookSecret::new("gt"));
        },
        false,
    )
    .await;
    let body = fixture("gitea_branch_delete");
    let good = hex(&hmac_sha256(&HookSecret::new("gt"), &body));
    let r = post(s.hook.addr(), "/gitea", &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &"0".repeat(64))], &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post(s.hook.addr(), "/gitea", &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &good)], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(next_commit(&mut s.sub).await.is_deletion());
}

#[tokio::test]
async fn limits_and_malformed_requests() {
    let mut s = setup(|c| c.body_limit = 64 * 1024, false).await;
    let addr = s.hook.addr();
    let gh = [("X-GitHub-Event", "push")];
    // Over the limit: 413, whether announced by Content-Length or not.
    let big = vec![b' '; 64 * 1024 + 1];
    let r = post(addr, "/github", &gh, &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    // Malformed JSON, a missing field, a wrongly typed one, a bad ref: 400 naming it.
    let r = post(addr, "/github", &gh, b"{\"ref\": ").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("malformed JSON"), "{}", r.body);
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("github_branch_push")).unwrap();
    v["repository"].as_object_mut().unwrap().remove("name");
    let r = post(addr, "/github", &gh, v.to_string().as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("repository.name"), "{}", r.body);
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("github_twenty_commits")).unwrap();
    v["commits"][3]["id"] = serde_json::json!(42);
    let r = post(addr, "/github", &gh, v.to_string().as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("commits[3].id"), "{}", r.body);
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("github_branch_push")).unwrap();
    v["ref"] = serde_json::json!("refs/heads/x\ny");
    let r = post(addr, "/github", &gh, v.to_string().as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("`ref`"), "{}", r.body);
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("github_branch_push")).unwrap();
    v["repository"]["name"] = serde_json::json!("../../etc");
    let r = post(addr, "/github", &gh, v.to_string().as_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // No event header: 400 naming it; an unknown event: 202 ignored.
    let r = post(addr, "/github", &[], &fixture("github_branch_push")).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("X-GitHub-Event"), "{}", r.body);
    let r = post(addr, "/github", &[("X-GitHub-Event", "issues")], br#"{"action":"opened"}"#).await;
    assert_eq!(r.status, 202);
    assert!(r.body.contains("ignored"), "{}", r.body);
    let r = request(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200);
    let health: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((health["broker"].as_str(), health["spooled"].as_u64()), (Some("ready"), Some(0)), "{health}");
    assert_eq!(request(addr, "POST", "/nowhere", &[], b"{}").await.status, 404);
    // After all that, a good push is the first thing published.
    let r = post(addr, "/github", &gh, &fixture("github_tag_push")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_commit(&mut s.sub).await.refname, "refs/tags/v1.2.0");
}

#[tokio::test]
async fn broker_down_spools_with_202_and_drains_when_it_is_back() {
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let addr = broker.local_addr();
    let spool = temp_dir("down");
    let queue = format!("/queue/dk.test.commits.{}", fastrand::u64(..));
    let config = WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        spool: spool.clone(),
        publish_wait: Duration::from_millis(300),
        destinations: Destinations { commits: queue.clone(), events: format!("/queue/dk.test.events.{}", fastrand::u64(..)), ..Destinations::default() },
        ..WebhookConfig::default()
    };
    let client = Client::connect(client_config(&broker.url())).await.unwrap();
    let mut events = client.events();
    let hook = webhook::start(config, client.clone()).await.unwrap();
    broker.shutdown().await;
    // Wait for the client to notice (an event, not a sleep).
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(deploykit::stomp::ClientEvent::Disconnected { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("client notices the broker is gone");
    let mut subjects = Vec::new();
    for (i, push) in ["branch_push", "tag_push", "unicode"].into_iter().enumerate() {
        let r = post(hook.addr(), "/github", &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", &format!("down-{i}"))], &fixture(&format!("github_{push}"))).await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert!(r.body.contains("spooled"), "{}", r.body);
        subjects.push(r.body);
    }
    assert_eq!(hook.pending(), 6, "three commits and three event lines on disk");
    // The broker comes back on the same address; the receiver reconnects and drains, in order.
    let broker = Broker::start(BrokerConfig { listen: addr, ..BrokerConfig::default() }).await.unwrap();
    let reader = Client::connect(client_config(&broker.url())).await.unwrap();
    let mut sub = reader.subscribe(&queue, SubscribeOptions::default()).await.unwrap();
    let refs: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(next_commit(&mut sub).await.newrev);
        }
        v
    };
    let expected: Vec<String> = ["branch_push", "tag_push", "unicode"]
        .iter()
        .map(|p| serde_json::from_slice::<serde_json::Value>(&fixture(&format!("github_{p}"))).unwrap()["after"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refs, expected, "delivered in the order accepted");
    tokio::time::timeout(WAIT, async {
        while hook.pending() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("spool empties");
    // With the broker back, a new push is published at once (200).
    let r = post(hook.addr(), "/github", &[("X-GitHub-Event", "push")], &fixture("github_branch_delete")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(next_commit(&mut sub).await.is_deletion());
    assert_eq!(hook.shutdown(Duration::from_secs(2)).await, 0);
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn reload_rotates_secrets_and_refuses_what_needs_a_restart() {
    let mut s = setup(
        |c| {
            c.forges.retain(|f| f.forge == webhook::Forge::Github);
            c.forges[0].secret = Some(HookSecret::new("old"));
        },
        false,
    )
    .await;
    let body = fixture("github_branch_push");
    let sig = |k: &str| format!("sha256={}", hex(&hmac_sha256(&HookSecret::new(k), &body)));
    let mut rotated = s.config.clone();
    rotated.forges[0].secret = Some(HookSecret::new("new"));
    s.hook.reload(&rotated).unwrap();
    let r = post(s.hook.addr(), "/github", &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig("old"))], &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post(s.hook.addr(), "/github", &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig("new"))], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_commit(&mut s.sub).await.refname, "refs/heads/main");
    let mut moved = rotated.clone();
    moved.forges[0].path = "/elsewhere".into();
    assert!(s.hook.reload(&moved).unwrap_err().contains("restart"));
    let mut bigger = rotated;
    bigger.body_limit *= 2;
    assert!(s.hook.reload(&bigger).is_err());
}

#[tokio::test]
async fn publishes_through_rabbitmq() {
    let Some(target) = common::targets::Target::real(common::targets::Kind::RabbitMq) else { return };
    let spool = temp_dir("rabbit");
    let queue = target.dest("queue");
    let config = WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        spool: spool.clone(),
        destinations: Destinations { commits: queue.clone(), events: target.dest("topic"), ..Destinations::default() },
        ..WebhookConfig::default()
    };
    let hook = webhook::start(config, target.client().await).await.unwrap();
    let reader = target.client().await;
    let mut sub = reader.subscribe(&queue, SubscribeOptions::default()).await.unwrap();
    for forge in ["github", "gitlab", "gitea"] {
        let headers = push_headers(forge, &format!("rabbit-{forge}"));
        let r = post(hook.addr(), &format!("/{forge}"), &as_refs(&headers), &fixture(&format!("{forge}_twenty_commits"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let c = next_commit(&mut sub).await;
        assert_eq!((c.repo.as_str(), c.commits.len()), ("site", 20));
    }
    assert_eq!(hook.shutdown(Duration::from_secs(2)).await, 0);
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn a_multibyte_timestamp_is_kept_as_sent_not_a_panic() {
    // Before the fix `normalize_timestamp` sliced at byte 19 and the request died in a panic.
    let mut s = setup(|_| {}, false).await;
    let gh = [("X-GitHub-Event", "push")];
    for (i, ts) in ["2026-11-25T10:00:0é+00:00", "2026-11-25T10:00:00+1é1", "€€€€€€€€€€€€"].into_iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_slice(&fixture("github_branch_push")).unwrap();
        v["commits"][0]["timestamp"] = serde_json::json!(ts);
        let delivery = format!("multibyte-{i}");
        let r = post(s.hook.addr(), "/github", &[gh[0], ("X-GitHub-Delivery", &delivery)], v.to_string().as_bytes()).await;
        assert_eq!(r.status, 200, "{ts}: {}", r.body);
        let c = next_commit(&mut s.sub).await;
        assert!(c.commits.iter().any(|x| x.timestamp == ts), "{ts} not kept in {:?}", c.commits);
    }
    // The server is still alive and normalises good timestamps.
    let r = post(s.hook.addr(), "/github", &gh, &fixture("github_branch_push")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_commit(&mut s.sub).await.commits[0].timestamp, "2026-11-25T10:03:00+00:00");
}
