//! Deploys end to end: real git repositories, real hook scripts (written by
//! the tests), in-process agents and a controller on the embedded broker
//! (RabbitMQ too when `DK_TEST_RABBITMQ` is set). Synchronisation is on
//! replies and agent events, never on sleeps.

mod common;

use common::fleet::{agent_toml, fleet_trust, git, script, tagged_repo, Tmp};
use common::targets::{Kind, Target};
use deploykit::deploy::agent::{Agent, AgentConfig, AgentEvent, AgentHandle};
use deploykit::deploy::controller::plan::BatchSize;
use deploykit::deploy::controller::{Controller, ControllerConfig, NodeState, RolloutEvent, RolloutReport, RolloutSpec, Window};
use deploykit::deploy::keys::{SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use deploykit::message::{decode, encode, DeployAction, DeployReply, DeployRequest, Filters, Message, StepState, Wire};
use deploykit::stomp::{SendOptions, SubscribeOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A repo with tags v1..vN (each writes `version`), three agents, a controller.
struct Rig {
    tmp: Tmp,
    repo: PathBuf,
    ops: SecretKey,
    staging: SecretKey,
    agents: Vec<AgentHandle>,
    controller: Controller,
    target: Target,
    deploy_topic: String,
}

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

impl Rig {
    async fn start(target: Target) -> Rig {
        Rig::start_with(target, "").await
    }

    async fn start_with(target: Target, extra_site_toml: &str) -> Rig {
        let tmp = Tmp::new("deploy");
        let repo = tagged_repo(&tmp.0.join("www"), 3);
        let ops = SecretKey::generate().unwrap();
        let staging = SecretKey::generate().unwrap();
        let deploy_topic = target.dest("topic");
        let keys = [("ops", ops.public().to_string()), ("staging", staging.public().to_string())];
        let mut agents = Vec::new();
        for node in NODES {
            let toml = agent_toml(node, &tmp.0.join(node), &repo, &deploy_topic, &keys, &format!("deploy = [\"ops\"]\nkeep_releases = 2\n{extra_site_toml}"));
            agents.push(Agent::start(AgentConfig::parse(&toml).unwrap(), target.client().await).await.unwrap());
        }
        let mut cc = ControllerConfig::new("ann", Some(ops.clone()));
        cc.destinations.deploy = deploy_topic.clone();
        cc.trust = fleet_trust();
        cc.reply_to = target.reply_to();
        let controller = Controller::new(target.client().await, cc).await.unwrap();
        Rig { tmp, repo, ops, staging, agents, controller, target, deploy_topic }
    }

    fn home(&self, node: &str) -> PathBuf {
        self.tmp.0.join(node)
    }

    fn live(&self, node: &str) -> Option<String> {
        std::fs::read_to_string(self.home(node).join("www/current/version")).ok().map(|s| s.trim().to_owned())
    }

    fn hook(&self, node: &str, name: &str, body: &str) {
        script(&self.home(node).join("hooks").join(name), body);
    }

    fn releases(&self, node: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.home(node).join("releases")) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with(".deploykit")).collect();
        v.sort();
        v
    }

    fn spec(&self, action: DeployAction, tag: Option<&str>) -> RolloutSpec {
        RolloutSpec {
            action,
            site: "www".into(),
            tag: tag.map(str::to_owned),
            filters: Filters::default(),
            canary: 1,
            batch: BatchSize::Count(2),
            max_failures: 0,
            timeout: Duration::from_secs(60),
            discovery: Window { timeout: Duration::from_secs(20), expect: Some(3) },
            expected: Vec::new(),
            allow_missing: false,
            allow_downgrade: false,
        }
    }

    async fn run(&self, spec: &RolloutSpec) -> (RolloutReport, Vec<RolloutEvent>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop) = watch::channel(false);
        let report = self.controller.rollout(spec, tx, stop).await.unwrap();
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (report, events)
    }

    async fn deploy(&self, tag: &str) -> RolloutReport {
        self.run(&self.spec(DeployAction::Deploy, Some(tag))).await.0
    }

    /// Sends a hand-made request (signed by `key` unless None) and returns the
    /// final replies within `wait` (the refusal tests).
    async fn raw(&self, req: &mut DeployRequest, key: Option<&SecretKey>, tamper: bool, wait: Duration) -> Vec<DeployReply> {
        let client = self.target.client().await;
        let reply_to = self.target.dest("queue");
        let mut sub = client.subscribe(&reply_to, SubscribeOptions::default()).await.unwrap();
        req.reply_to = Some(reply_to);
        let out = encode(&*req, Wire::Json).unwrap();
        let mut headers = out.headers;
        let mut body = out.body.to_vec();
        if let Some(k) = key {
            headers.push(SIGNER_HEADER, k.public().to_string());
            headers.push(SIGNATURE_HEADER, k.sign(&body));
        }
        if tamper {
            let text = String::from_utf8(body).unwrap().replace("\"ann\"", "\"eve\"");
            body = text.into_bytes();
        }
        client.send_with(&self.deploy_topic, body, SendOptions { headers, receipt: true, ..Default::default() }).await.unwrap();
        let mut finals = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        // The refusal tests select one server: one final reply is all there is.
        while finals.is_empty() {
            match tokio::time::timeout_at(deadline, sub.recv()).await {
                Ok(Some(m)) => {
                    if let Ok(Message::DeployReply(r)) = decode(m.destination(), &m.headers, &m.body) {
                        if r.is_final {
                            finals.push(r);
                        }
                    }
                }
                _ => break,
            }
        }
        finals
    }

    /// Sends a hand-made request that node-a must drop unanswered; awaits its
    /// `Unverified` event, then a signed status to the same reply destination,
    /// and asserts nothing but the status' replies arrived there. Returns why it was dropped.
    async fn silent(&self, req: &mut DeployRequest, key: Option<&SecretKey>, tamper: bool, events: &mut tokio::sync::broadcast::Receiver<AgentEvent>) -> String {
        let client = self.target.client().await;
        let reply_to = self.target.dest("queue");
        let mut sub = client.subscribe(&reply_to, SubscribeOptions::default()).await.unwrap();
        req.reply_to = Some(reply_to.clone());
        let out = encode(&*req, Wire::Json).unwrap();
        let mut headers = out.headers;
        let mut body = out.body.to_vec();
        if let Some(k) = key {
            headers.push(SIGNER_HEADER, k.public().to_string());
            headers.push(SIGNATURE_HEADER, k.sign(&body));
        }
        if tamper {
            body = String::from_utf8(body).unwrap().replace("\"ann\"", "\"eve\"").into_bytes();
        }
        client.send_with(&self.deploy_topic, body, SendOptions { headers, receipt: true, ..Default::default() }).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match events.recv().await.unwrap() {
                    AgentEvent::Unverified { request_id, reason, .. } if request_id == req.request_id => return reason,
                    AgentEvent::Refused { request_id, reason, .. } if request_id == req.request_id => panic!("answered with a refusal: {reason}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("node-a dropped the request");
        let mut probe = self.controller.request(DeployAction::Status, Some("www"), None, Filters { identity: vec!["node-a".into()], ..Default::default() });
        probe.reply_to = Some(reply_to);
        let out = encode(&probe, Wire::Json).unwrap();
        let mut headers = out.headers;
        headers.push(SIGNER_HEADER, self.ops.public().to_string());
        headers.push(SIGNATURE_HEADER, self.ops.sign(&out.body));
        client.send_with(&self.deploy_topic, out.body, SendOptions { headers, receipt: true, ..Default::default() }).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await.expect("the probe's reply").unwrap();
            let Ok(Message::DeployReply(r)) = decode(m.destination(), &m.headers, &m.body) else { continue };
            assert_eq!(r.request_id, probe.request_id, "only the signed probe is answered: {r:?}");
            if r.is_final {
                return reason;
            }
        }
    }
}

async fn full_deploy_on_three_agents(t: Target) {
    let rig = Rig::start(t).await;
    for n in NODES {
        rig.hook(n, "pre-deploy", "echo \"pre $1 $2 $DK_SITE $DK_TAG $DK_REQUEST_ID\" >> ../hook.log");
        rig.hook(n, "post-deploy", "echo \"post $DK_RELEASE prev=$DK_PREVIOUS\" >> ../hook.log; cat \"$DK_RELEASE/version\"");
    }
    let (report, events) = rig.run(&rig.spec(DeployAction::Deploy, Some("v1"))).await;
    assert!(report.ok(), "{report:#?}");
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"));
        let log = std::fs::read_to_string(rig.home(n).join("hook.log")).unwrap();
        assert!(log.starts_with("pre -t v1 www v1 "), "{log}");
        assert!(log.contains(&format!("post {}/releases/www_v1 prev=", rig.home(n).display())), "{log}");
    }
    // Canary first: node-a finished before the second batch started.
    let canary_done = events.iter().position(|e| matches!(e, RolloutEvent::NodeDone { result } if result.node == "node-a")).unwrap();
    let second = events.iter().position(|e| matches!(e, RolloutEvent::BatchStarted { index: 1, .. })).unwrap();
    assert!(canary_done < second, "canary must finish before batch 1: {events:#?}");
    assert!(matches!(&events[0], RolloutEvent::Planned { batches } if batches.len() == 2 && batches[0] == vec!["node-a".to_owned()]));
    // Step replies arrived for every step, with post-deploy's output.
    let steps: Vec<(String, String, StepState)> = events
        .iter()
        .filter_map(|e| match e {
            RolloutEvent::Step { reply } => Some((reply.node.clone(), reply.step.clone().unwrap_or_default(), reply.state)),
            _ => None,
        })
        .collect();
    for step in ["pre-deploy", "checkout", "pre-link", "link", "post-deploy"] {
        assert!(steps.contains(&("node-b".into(), step.into(), StepState::Started)), "{step} started missing: {steps:?}");
    }
    assert!(steps.contains(&("node-b".into(), "pre-link".into(), StepState::Skipped)));
    let post = &report.nodes[0].steps.iter().find(|s| s.step == "post-deploy").unwrap();
    assert_eq!(post.stdout.trim(), "v1");
    assert_eq!(post.exit_code, Some(0));

    // v2, then roll back to v1.
    assert!(rig.deploy("v2").await.ok());
    assert_eq!(rig.live("node-c").as_deref(), Some("v2"));
    let (rb, _) = rig.run(&rig.spec(DeployAction::Rollback, None)).await;
    assert!(rb.ok(), "{rb:#?}");
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"));
    }
    // Status: live release and no lock.
    let st = rig.controller.status("www", Filters::default(), Window { timeout: Duration::from_secs(20), expect: Some(3) }).await.unwrap();
    assert_eq!(st.len(), 3);
    assert_eq!(st[0].data["current"], "www_v1");
    assert!(st[0].data["lock"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_deploy_on_three_agents_embedded() {
    full_deploy_on_three_agents(Target::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_deploy_on_three_agents_rabbitmq() {
    if let Some(t) = Target::real(Kind::RabbitMq) {
        full_deploy_on_three_agents(t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_pre_deploy_on_the_canary_stops_the_rollout_and_changes_nothing() {
    let rig = Rig::start(Target::embedded().await).await;
    assert!(rig.deploy("v1").await.ok());
    rig.hook("node-a", "pre-deploy", "echo 'db migration refused' >&2; exit 7");
    let report = rig.deploy("v2").await;
    assert!(!report.ok());
    assert_eq!(report.stopped.as_deref(), Some("the canary failed"));
    let a = &report.nodes[0];
    assert_eq!((a.node.as_str(), a.state), ("node-a", NodeState::Failed));
    assert!(a.error.as_deref().unwrap().contains("pre-deploy exited 7"), "{a:?}");
    assert_eq!(a.steps[0].stderr.trim(), "db migration refused");
    assert_eq!(report.nodes[1].state, NodeState::NotStarted);
    assert_eq!(report.nodes[2].state, NodeState::NotStarted);
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"), "{n} must stay on v1");
        assert_eq!(rig.releases(n), vec!["www_v1"], "no half-made release on {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_failures_stops_scheduling_after_the_threshold() {
    let rig = Rig::start(Target::embedded().await).await;
    rig.hook("node-b", "pre-deploy", "exit 1");
    let mut spec = rig.spec(DeployAction::Deploy, Some("v1"));
    spec.batch = BatchSize::Count(1);
    let (report, _) = rig.run(&spec).await;
    let states: Vec<NodeState> = report.nodes.iter().map(|n| n.state).collect();
    assert_eq!(states, vec![NodeState::Ok, NodeState::Failed, NodeState::NotStarted]);
    assert!(report.stopped.unwrap().contains("exceed --max-failures 0"));
    spec.max_failures = 1;
    let (report, _) = rig.run(&spec).await;
    let states: Vec<NodeState> = report.nodes.iter().map(|n| n.state).collect();
    assert_eq!(states, vec![NodeState::Ok, NodeState::Failed, NodeState::Ok], "one failure tolerated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_checkout_cleans_up() {
    let rig = Rig::start(Target::embedded().await).await;
    assert!(rig.deploy("v1").await.ok());
    // A tag whose blob is missing from the clone: resolvable, but not checkout-able.
    std::fs::write(rig.repo.join("big"), "unique content for the broken tag\n").unwrap();
    git(&rig.repo, &["add", "big"]);
    git(&rig.repo, &["commit", "-q", "-m", "broken"]);
    git(&rig.repo, &["tag", "broken"]);
    let blob = git(&rig.repo, &["rev-parse", "HEAD:big"]);
    std::fs::remove_file(rig.repo.join(".git/objects").join(&blob[..2]).join(&blob[2..])).unwrap();
    let report = rig.deploy("broken").await;
    let a = &report.nodes[0];
    assert_eq!(a.state, NodeState::Failed);
    assert!(a.error.as_deref().unwrap().starts_with("checkout:"), "{a:?}");
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"));
    assert_eq!(rig.releases("node-a"), vec!["www_v1"], "half-made release and temp dir removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_deploy_failure_is_reported_and_kept_unless_configured() {
    let rig = Rig::start(Target::embedded().await).await;
    assert!(rig.deploy("v1").await.ok());
    for n in NODES {
        rig.hook(n, "post-deploy", "echo cache warm failed >&2; exit 2");
    }
    let mut spec = rig.spec(DeployAction::Deploy, Some("v2"));
    spec.max_failures = 3;
    let (report, _) = rig.run(&spec).await;
    // The canary failed (post-deploy), so nothing else started; but it stays on v2.
    assert_eq!(report.nodes[0].state, NodeState::Failed);
    assert!(report.nodes[0].error.as_deref().unwrap().contains("post-deploy exited 2"));
    assert_eq!(rig.live("node-a").as_deref(), Some("v2"), "post-deploy failure does not un-swap");
    assert_eq!(rig.live("node-b").as_deref(), Some("v1"));
    // Rollback counts only good releases: back to v1.
    rig.hook("node-a", "post-deploy", "exit 0");
    let mut rb = rig.spec(DeployAction::Rollback, None);
    rb.filters.identity = vec!["node-a".into()];
    rb.discovery.expect = None; // a literal -I: discovery stops once node-a answered
    let (r, _) = rig.run(&rb).await;
    assert!(r.ok(), "{r:#?}");
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeploying_a_live_unverified_release_runs_post_deploy_again_and_makes_it_good() {
    // A release linked but not verified (post-deploy failed, or the agent died
    // after the link swap): deploying the same tag again finishes it, in place.
    let rig = Rig::start(Target::embedded().await).await;
    assert!(rig.deploy("v1").await.ok());
    rig.hook("node-a", "post-deploy", "echo cache warm failed >&2; exit 2");
    let report = rig.deploy("v2").await;
    assert_eq!(report.nodes[0].state, NodeState::Failed);
    assert_eq!(rig.live("node-a").as_deref(), Some("v2"));
    rig.hook("node-a", "post-deploy", "echo \"post $DK_RELEASE prev=$DK_PREVIOUS\" >> ../hook.log");
    let report = rig.deploy("v2").await;
    assert!(report.ok(), "{report:#?}");
    let steps: Vec<&str> = report.nodes[0].steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["post-deploy"], "only post-deploy runs again on the unverified release: {report:#?}");
    assert_eq!(rig.live("node-a").as_deref(), Some("v2"));
    assert_eq!(rig.live("node-b").as_deref(), Some("v2"));
    let log = std::fs::read_to_string(rig.home("node-a").join("hook.log")).unwrap();
    let home = rig.home("node-a");
    let want = format!("post {0}/releases/www_v2 prev={0}/releases/www_v1\n", home.display());
    assert!(log.ends_with(&want), "post-deploy again, told the previous good release: {log}");
    // Now good: a third deploy is a no-op, and v2 counts as a rollback target.
    let report = rig.deploy("v2").await;
    assert!(report.ok(), "{report:#?}");
    assert!(report.nodes[0].steps.is_empty(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_on_post_failure_puts_the_old_release_back() {
    let rig = Rig::start_with(Target::embedded().await, "rollback_on_post_failure = true").await;
    assert!(rig.deploy("v1").await.ok());
    rig.hook("node-a", "post-deploy", "exit 2");
    let report = rig.deploy("v2").await;
    assert_eq!(report.nodes[0].state, NodeState::Failed);
    assert!(report.nodes[0].error.as_deref().unwrap().contains("put back"));
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"));
    assert_eq!(rig.releases("node-a"), vec!["www_v1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_releases_never_removes_live_or_previous_good() {
    let rig = Rig::start(Target::embedded().await).await;
    for v in ["v1", "v2", "v3"] {
        assert!(rig.deploy(v).await.ok());
    }
    // keep_releases = 2: v3 (live) and v2 (previous good) stay.
    assert_eq!(rig.releases("node-a"), vec!["www_v2", "www_v3"]);
    assert!(rig.run(&rig.spec(DeployAction::Rollback, None)).await.0.ok());
    assert_eq!(rig.live("node-a").as_deref(), Some("v2"));
    // No good release left before v2: a second rollback is refused, nothing changes.
    let (r, _) = rig.run(&rig.spec(DeployAction::Rollback, None)).await;
    assert_eq!(r.nodes[0].state, NodeState::Refused);
    assert!(r.nodes[0].error.as_deref().unwrap().contains("no previous good release"));
    assert_eq!(rig.live("node-a").as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deploys_to_one_site_the_second_is_refused_with_the_holder() {
    let rig = Rig::start(Target::embedded().await).await;
    let fifo = rig.tmp.0.join("go");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    rig.hook("node-a", "pre-deploy", &format!("read line < {}", fifo.display()));
    let mut first = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v1"), Filters { identity: vec!["node-a".into()], ..Default::default() });
    first.user = "ann".into();
    let mut pending = rig.controller.send(&first).await.unwrap();
    // Wait until the first deploy is inside pre-deploy (holding the lock).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = pending.next(deadline).await.expect("pre-deploy started");
        if r.step.as_deref() == Some("pre-deploy") && r.state == StepState::Started {
            break;
        }
    }
    let second = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v2"), Filters { identity: vec!["node-a".into()], ..Default::default() });
    let replies = rig.controller.gather(&second, Window { timeout: Duration::from_secs(20), expect: Some(1) }).await.unwrap();
    assert_eq!(replies[0].state, StepState::Refused);
    let why = replies[0].error.clone().unwrap();
    assert!(why.contains(&format!("locked by request {} (deploy by ann)", first.request_id)), "{why}");
    // Status shows the holder.
    let st = rig
        .controller
        .status("www", Filters { identity: vec!["node-a".into()], ..Default::default() }, Window { timeout: Duration::from_secs(20), expect: Some(1) })
        .await
        .unwrap();
    assert_eq!(st[0].data["lock"]["request_id"], first.request_id.as_str());
    std::fs::write(&fifo, "go\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = pending.next(deadline).await.expect("first deploy finishes");
        if r.is_final {
            assert_eq!(r.state, StepState::Ok, "{r:?}");
            break;
        }
    }
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsigned_untrusted_tampered_expired_and_replayed_requests_are_dropped_unanswered_and_nothing_runs() {
    let rig = Rig::start(Target::embedded().await).await;
    for n in NODES {
        rig.hook(n, "pre-deploy", "touch ../RAN");
    }
    let mut events: Vec<_> = rig.agents.iter().map(|a| a.subscribe()).collect();
    let mut drops = rig.agents[0].subscribe();
    let wait = Duration::from_secs(20);
    let one = || Filters { identity: vec!["node-a".into()], ..Default::default() };
    let refused = |finals: Vec<DeployReply>, needle: &str| {
        assert_eq!(finals.len(), 1, "{finals:?}");
        assert_eq!(finals[0].state, StepState::Refused, "{finals:?}");
        let e = finals[0].error.clone().unwrap();
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
    };

    // Requests that do not verify get no reply (and no event line): only a log line and an agent event.
    let contains = |reason: String, needle: &str| assert!(reason.contains(needle), "expected {needle:?} in {reason:?}");
    let mut req = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v1"), one());
    contains(rig.silent(&mut req, None, false, &mut drops).await, "unsigned request");

    let stranger = SecretKey::generate().unwrap();
    let mut req = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v1"), one());
    contains(rig.silent(&mut req, Some(&stranger), false, &mut drops).await, "untrusted key");

    let mut req = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v1"), one());
    contains(rig.silent(&mut req, Some(&rig.ops), true, &mut drops).await, "bad signature by key ops");

    let mut req = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v1"), one());
    req.issued_at -= 7200;
    req.expires_at = req.issued_at + 60;
    contains(rig.silent(&mut req, Some(&rig.ops), false, &mut drops).await, "expired");

    // A replay: the same signed bytes twice. The first runs (a status), the second is dropped.
    let mut req = rig.controller.request(DeployAction::Status, Some("www"), None, one());
    let first = rig.raw(&mut req, Some(&rig.ops), false, wait).await;
    assert_eq!(first[0].state, StepState::Ok);
    contains(rig.silent(&mut req, Some(&rig.ops), false, &mut drops).await, "already used");
    assert_eq!(rig.agents[0].stats().unverified, 5);

    // Hostile tags reach the agent (bypassing the controller's own check) and are refused.
    for tag in ["--upload-pack=touch /tmp/pwned", "../../etc"] {
        let mut req = rig.controller.request(DeployAction::Deploy, Some("www"), Some(tag), one());
        refused(rig.raw(&mut req, Some(&rig.ops), false, wait).await, "not a valid tag or branch name");
    }
    // ... and the controller refuses them before sending anything.
    let e =
        rig.controller.rollout(&rig.spec(DeployAction::Deploy, Some("--upload-pack=touch /tmp/pwned")), mpsc::unbounded_channel().0, watch::channel(false).1).await.unwrap_err();
    assert!(e.to_string().contains("not a valid tag"), "{e}");
    // An unknown site and an unknown tag.
    let mut req = rig.controller.request(DeployAction::Deploy, Some("nosuch"), Some("v1"), one());
    refused(rig.raw(&mut req, Some(&rig.ops), false, wait).await, "not configured");
    let mut req = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v9"), one());
    refused(rig.raw(&mut req, Some(&rig.ops), false, wait).await, "no tag or branch");

    assert!(!rig.home("node-a").join("RAN").exists(), "no hook ran");
    assert!(!Path::new("/tmp/pwned").exists());
    assert!(rig.releases("node-a").is_empty());
    // Every refusal of a verified request is also an agent event.
    let mut refusals = 0;
    while let Ok(e) = events[0].try_recv() {
        if matches!(e, AgentEvent::Refused { .. }) {
            refusals += 1;
        }
    }
    assert_eq!(refusals, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_trusted_for_staging_cannot_deploy_live() {
    let rig = Rig::start(Target::embedded().await).await;
    let mut cc = ControllerConfig::new("sam", Some(rig.staging.clone()));
    cc.destinations.deploy = rig.deploy_topic.clone();
    cc.trust = fleet_trust();
    let staging = Controller::new(rig.target.client().await, cc).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut spec = rig.spec(DeployAction::Deploy, Some("v1"));
    spec.canary = 0;
    spec.batch = BatchSize::Percent(100);
    let report = staging.rollout(&spec, tx, watch::channel(false).1).await.unwrap();
    for n in &report.nodes {
        assert_eq!(n.state, NodeState::Refused, "{n:?}");
        assert!(n.error.as_deref().unwrap().contains("key staging may not deploy site www"), "{n:?}");
    }
    assert!(rig.releases("node-a").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_newest_first_and_dry_run_shows_the_log() {
    let rig = Rig::start(Target::embedded().await).await;
    let w = Window { timeout: Duration::from_secs(20), expect: Some(3) };
    let tags = rig.controller.tags("www", Filters::default(), 2, w).await.unwrap();
    assert_eq!(tags.len(), 3);
    let list: deploykit::message::deploy::TagList = serde_json::from_value(tags[0].data.clone()).unwrap();
    assert_eq!(list.tag_count, 3);
    assert_eq!(list.tags.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["v3", "v2"]);
    assert_eq!(list.branches[0].name, "master");
    assert!(rig.deploy("v1").await.ok());
    let plan = rig.controller.dry_run("www", "v3", Filters::default(), w).await.unwrap();
    assert_eq!(plan.len(), 3);
    assert_eq!(plan[0].data["current"], "www_v1");
    let subjects: Vec<&str> = plan[0].data["log"].as_array().unwrap().iter().map(|e| e["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, vec!["release 3", "release 2"]);
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"), "a dry run changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_hook_user_fails_the_step_instead_of_running_hooks_as_the_agent() {
    let rig = Rig::start_with(Target::embedded().await, "user = \"dk-no-such-user\"").await;
    rig.hook("node-a", "pre-deploy", "touch ../RAN");
    let report = rig.deploy("v1").await;
    let a = &report.nodes[0];
    assert_eq!(a.state, NodeState::Failed);
    assert!(a.error.as_deref().unwrap().contains("\"dk-no-such-user\""), "{a:?}");
    assert!(!rig.home("node-a").join("RAN").exists(), "the hook did not run");
    assert_eq!(rig.live("node-a"), None);
}

/// Issue #16: a server already on the tag is reported as such (not as a deploy with no steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_already_on_the_tag_is_reported_unchanged() {
    let rig = Rig::start(Target::embedded().await).await;
    let mut one = rig.spec(DeployAction::Deploy, Some("v2"));
    one.filters.identity = vec!["node-a".into()];
    one.discovery.expect = None;
    assert!(rig.run(&one).await.0.ok());
    let report = rig.deploy("v2").await;
    assert!(report.ok(), "{report:#?}");
    let unchanged: Vec<(&str, bool)> = report.nodes.iter().map(|n| (n.node.as_str(), n.unchanged)).collect();
    assert_eq!(unchanged, [("node-a", true), ("node-b", false), ("node-c", false)], "{report:#?}");
    assert!(report.nodes[0].steps.is_empty());
    // Reports written before the field existed still read (and say nothing of it).
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["nodes"][0]["unchanged"], true);
    assert!(json["nodes"][1].get("unchanged").is_none(), "skipped when false: {json:#}");
}

/// Issue #16: deploying an older tag removes commits now live: the dry run lists them,
/// agents refuse it unless the (signed) request allows a downgrade; a rollback needs no such thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_downgrade_is_listed_by_the_dry_run_and_refused_unless_allowed() {
    let rig = Rig::start(Target::embedded().await).await;
    assert!(rig.deploy("v3").await.ok());
    let w = Window { timeout: Duration::from_secs(20), expect: Some(3) };
    let plan = rig.controller.dry_run("www", "v1", Filters::default(), w).await.unwrap();
    assert_eq!(plan.len(), 3);
    let subjects = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|e| e["subject"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(subjects(&plan[0].data["removed"]), ["release 3", "release 2"], "{:#}", plan[0].data);
    assert_eq!(plan[0].data["downgrade"], true);
    assert!(subjects(&plan[0].data["log"]).is_empty());
    // An upgrade removes nothing.
    let up = rig.controller.dry_run("www", "v3", Filters::default(), w).await.unwrap();
    assert_eq!((up[0].data["downgrade"].as_bool(), up[0].data["already_live"].as_bool()), (Some(false), Some(true)), "{:#}", up[0].data);

    for n in NODES {
        rig.hook(n, "pre-deploy", "touch ../RAN");
    }
    let report = rig.deploy("v1").await;
    assert!(!report.ok());
    let a = &report.nodes[0];
    assert_eq!(a.state, NodeState::Refused, "{report:#?}");
    let why = a.error.as_deref().unwrap();
    assert!(why.contains("v1 is older than the live release www_v3: deploying it would remove 2 commits now live"), "{why}");
    assert!(why.contains("release 3") && why.contains("allow the downgrade") && why.contains("--allow-downgrade"), "{why}");
    assert_eq!(report.stopped.as_deref(), Some("the canary failed"));
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v3"), "{n}: a refused downgrade changes nothing");
        assert!(!rig.home(n).join("RAN").exists(), "{n}: no hook ran");
    }

    let mut allowed = rig.spec(DeployAction::Deploy, Some("v1"));
    allowed.allow_downgrade = true;
    let (report, _) = rig.run(&allowed).await;
    assert!(report.ok(), "{report:#?}");
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"));
    }
    // Back up to v3, then a rollback to v1: not a downgrade for this rule.
    assert!(rig.deploy("v3").await.ok());
    let (rb, _) = rig.run(&rig.spec(DeployAction::Rollback, None)).await;
    assert!(rb.ok(), "{rb:#?}");
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"));
    }
}

/// Issue #16: `allow_downgrade` is part of the signed body: setting it on a signed
/// request that did not carry it breaks the signature, and the agent drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_downgrade_cannot_be_added_to_a_signed_request() {
    let rig = Rig::start(Target::embedded().await).await;
    assert!(rig.deploy("v3").await.ok());
    let mut drops = rig.agents[0].subscribe();
    let client = rig.target.client().await;
    let mut req = rig.controller.request(DeployAction::Deploy, Some("www"), Some("v1"), Filters { identity: vec!["node-a".into()], ..Default::default() });
    req.reply_to = Some(rig.target.dest("queue"));
    let out = encode(&req, Wire::Json).unwrap();
    let mut headers = out.headers;
    headers.push(SIGNER_HEADER, rig.ops.public().to_string());
    headers.push(SIGNATURE_HEADER, rig.ops.sign(&out.body));
    let text = String::from_utf8(out.body.to_vec()).unwrap();
    let forged = format!("{},\"allow_downgrade\":true}}", text.trim_end().strip_suffix('}').unwrap());
    assert!(serde_json::from_str::<DeployRequest>(&forged).unwrap().allow_downgrade);
    client.send_with(&rig.deploy_topic, forged.into_bytes(), SendOptions { headers, receipt: true, ..Default::default() }).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match drops.recv().await.unwrap() {
                AgentEvent::Unverified { request_id, reason, .. } if request_id == req.request_id => return reason,
                AgentEvent::Done { request_id, .. } | AgentEvent::Refused { request_id, .. } if request_id == req.request_id => panic!("a forged request was handled"),
                _ => {}
            }
        }
    })
    .await
    .expect("node-a dropped the forged request");
    assert!(reason.contains("bad signature"), "{reason}");
    assert_eq!(rig.live("node-a").as_deref(), Some("v3"));
}
