//! Attacks on the deploy replies and announcements (issue #12, item 2), each
//! performed through the real components: three enrolled agents in-process on
//! the embedded broker, the real `Controller`, and an attacker that is just
//! another STOMP client on the bus (`common::phantom`).
//!
//! (a) a phantom server answers discovery: shown untrusted, never planned;
//! (b) forged "ok" replies for the failing canary: not counted;
//! (c) a real agent's validly signed reply speaking for another: refused;
//! (d) an eavesdropper who reads the requests cannot read the replies;
//! (e) a revoked key is refused; a re-enrolled key is accepted by the same controller.
//! (dk-web's part, (f), is in `web.rs` next to its HTTP helpers.)

mod common;

use common::fleet::{agent_toml, enroll, fleet_key, fleet_trust, script, tagged_repo, Tmp};
use common::phantom::{forge_reply, phantom, Forgery};
use common::targets::Target;
use deploykit::deploy::agent::{Agent, AgentConfig, AgentHandle};
use deploykit::deploy::controller::plan::BatchSize;
use deploykit::deploy::controller::{Controller, ControllerConfig, NodeState, RolloutEvent, RolloutSpec, Window};
use deploykit::deploy::identity;
use deploykit::deploy::keys::SecretKey;
use deploykit::deploy::trust::TrustConfig;
use deploykit::message::{decode, DeployAction, Filters, Message, StepState};
use deploykit::stomp::SubscribeOptions;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const WAIT: Duration = Duration::from_secs(60);
/// A discovery window waited in full (untrusted answers never end one early); agents answer in milliseconds.
const FULL_WINDOW: Duration = Duration::from_secs(10);

struct Rig {
    tmp: Tmp,
    repo: PathBuf,
    ops: SecretKey,
    agents: Vec<Option<AgentHandle>>,
    controller: Controller,
    target: Target,
    topic: String,
}

impl Rig {
    async fn start() -> Rig {
        let target = Target::embedded().await;
        let tmp = Tmp::new("trust");
        let repo = tagged_repo(&tmp.0.join("www"), 2);
        let ops = SecretKey::generate().unwrap();
        let topic = target.dest("topic");
        let mut rig = Rig { controller: controller(&target, &ops, &topic).await, tmp, repo, ops, agents: Vec::new(), target, topic };
        for node in NODES {
            let a = rig.start_agent(node).await;
            rig.agents.push(Some(a));
        }
        rig
    }

    fn home(&self, node: &str) -> PathBuf {
        self.tmp.0.join(node)
    }

    async fn start_agent(&self, node: &str) -> AgentHandle {
        let toml = agent_toml(node, &self.home(node), &self.repo, &self.topic, &[("ops", self.ops.public().to_string())], "deploy = [\"ops\"]");
        Agent::start(AgentConfig::parse(&toml).unwrap(), self.target.client().await).await.unwrap()
    }

    fn spec(&self) -> RolloutSpec {
        RolloutSpec {
            action: DeployAction::Deploy,
            site: "www".into(),
            tag: Some("v1".into()),
            filters: Filters::default(),
            canary: 1,
            batch: BatchSize::Count(2),
            max_failures: 0,
            timeout: WAIT,
            discovery: Window { timeout: Duration::from_secs(20), expect: Some(3) },
            expected: Vec::new(),
            allow_missing: false,
            allow_downgrade: false,
        }
    }

    /// The key and certificate node `node` signs with (what a compromised agent holds).
    fn stolen(&self, node: &str) -> Forgery {
        let key = identity::load_or_create(&self.home(node).join("state")).unwrap();
        let cert = std::fs::read_to_string(self.home(node).join("agent.cert")).unwrap();
        Forgery::Stolen { key, cert }
    }
}

async fn controller(target: &Target, key: &SecretKey, topic: &str) -> Controller {
    let mut cc = ControllerConfig::new("ann", Some(key.clone()));
    cc.destinations.deploy = topic.to_owned();
    cc.trust = fleet_trust();
    Controller::new(target.client().await, cc).await.unwrap()
}

/// (a) A phantom server answers discovery (unsigned, self-signed, or as a real
/// agent's peer): listed untrusted with the reason, never planned, never asked to deploy.
async fn phantom_is_untrusted_and_never_planned(how: Forgery, reason: &str) {
    let rig = Rig::start().await;
    let (_task, mut asked) = phantom(rig.target.client().await, &rig.topic, &format!("{}.agents", rig.topic), "phantom", how).await;
    let found = rig.controller.discover(Filters::default(), Window { timeout: WAIT, expect: Some(3) }).await.unwrap();
    // The phantom answers at once; the window ends when the three real ones did, so wait for its answer too.
    let found = if found.iter().any(|d| d.reply.node == "phantom") {
        found
    } else {
        rig.controller
            .discover(
                Filters { identity: vec!["node-a".into(), "node-b".into(), "node-c".into(), "phantom".into()], ..Default::default() },
                Window { timeout: FULL_WINDOW, expect: None },
            )
            .await
            .unwrap()
    };
    let p = found.iter().find(|d| d.reply.node == "phantom").expect("the phantom's answer is listed");
    let why = p.untrusted.as_deref().expect("the phantom is marked untrusted");
    assert!(why.contains(reason), "{why}");
    for n in NODES {
        assert!(found.iter().any(|d| d.reply.node == n && d.untrusted.is_none()), "{n} trusted: {found:?}");
    }
    assert!(!rig.controller.select("www", &Filters::default(), Window { timeout: WAIT, expect: Some(3) }).await.unwrap().contains(&"phantom".to_string()));
    while asked.try_recv().is_ok() {}
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop, stop) = watch::channel(false);
    let report = rig.controller.rollout(&rig.spec(), tx, stop).await.unwrap();
    let Some(RolloutEvent::Planned { batches }) = rx.recv().await else { panic!("no plan") };
    assert_eq!(batches, vec![vec!["node-a".to_string()], vec!["node-b".to_string(), "node-c".to_string()]]);
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), NODES);
    // The phantom saw the deploy requests (they are broadcast) but none named it.
    while let Ok(req) = asked.try_recv() {
        if req.action == DeployAction::Deploy {
            assert!(!req.filters.identity.contains(&"phantom".to_string()), "{req:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unsigned_phantom_is_untrusted_and_never_planned() {
    phantom_is_untrusted_and_never_planned(Forgery::Unsigned, "unsigned").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_self_signed_phantom_is_untrusted_and_never_planned() {
    phantom_is_untrusted_and_never_planned(Forgery::SelfSigned(SecretKey::generate().unwrap()), "not a configured fleet key").await;
}

/// (b), (c) While the canary node-a is failing (its pre-deploy hook waits for
/// the forgery to be sent, then exits 3), the attacker sends node-a's final
/// "ok" first. The rollout must still see node-a fail and stop.
async fn forged_ok_for_the_failing_canary_is_not_counted(how: impl Fn(&Rig) -> Forgery) {
    let rig = Rig::start().await;
    let flag = rig.tmp.0.join("forgery-sent");
    script(&rig.home("node-a").join("hooks/pre-deploy"), &format!("while [ ! -e '{}' ]; do sleep 0.05; done\nexit 3", flag.display()));
    let how = how(&rig);
    let attacker = rig.target.client().await;
    let mut requests = attacker.subscribe(&rig.topic, SubscribeOptions::default()).await.unwrap();
    let forger = tokio::spawn(async move {
        loop {
            let m = requests.recv().await.expect("requests");
            let Ok(Message::DeployRequest(req)) = decode(m.destination(), &m.headers, &m.body) else { continue };
            if req.action == DeployAction::Deploy && req.filters.identity == ["node-a"] {
                let data = serde_json::json!({"ok": true, "tag": "v1", "steps": [], "live": "www_v1"});
                forge_reply(&attacker, &req, &m.headers, "node-a", StepState::Ok, data, &how).await;
                std::fs::write(&flag, b"").unwrap();
                return;
            }
        }
    });
    let (tx, _rx) = mpsc::unbounded_channel();
    let (_stop, stop) = watch::channel(false);
    let report = rig.controller.rollout(&rig.spec(), tx, stop).await.unwrap();
    tokio::time::timeout(WAIT, forger).await.expect("the forgery was sent").unwrap();
    let states: Vec<(&str, NodeState)> = report.nodes.iter().map(|n| (n.node.as_str(), n.state)).collect();
    assert_eq!(states, vec![("node-a", NodeState::Failed), ("node-b", NodeState::NotStarted), ("node-c", NodeState::NotStarted)], "{report:#?}");
    assert_eq!(report.stopped.as_deref(), Some("the canary failed"));
    assert!(!rig.home("node-b").join("www/current").exists(), "nothing was deployed past the canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b_unsigned_forged_ok_for_the_canary_is_not_counted() {
    forged_ok_for_the_failing_canary_is_not_counted(|_| Forgery::Unsigned).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b_self_signed_forged_ok_for_the_canary_is_not_counted() {
    forged_ok_for_the_failing_canary_is_not_counted(|_| Forgery::SelfSigned(SecretKey::generate().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c_a_real_agent_cannot_answer_for_another() {
    forged_ok_for_the_failing_canary_is_not_counted(|rig| rig.stolen("node-b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c_a_real_agents_discovery_answer_for_another_is_listed_untrusted() {
    let rig = Rig::start().await;
    let (_task, _asked) = phantom(rig.target.client().await, &rig.topic, &format!("{}.agents", rig.topic), "node-x", rig.stolen("node-b")).await;
    let f = Filters { identity: vec!["node-b".into(), "node-x".into()], ..Default::default() };
    let found = rig.controller.discover(f, Window { timeout: FULL_WINDOW, expect: None }).await.unwrap();
    let x = found.iter().find(|d| d.reply.node == "node-x").expect("node-x's forged answer is listed");
    assert!(x.untrusted.as_deref().unwrap().contains("certificate is for \"node-b\""), "{x:?}");
    assert!(found.iter().any(|d| d.reply.node == "node-b" && d.untrusted.is_none()));
}

/// (d) An eavesdropper reads every request (they are broadcast) and tries the
/// reply destination both by the name in the body and by the broker's name in
/// the `reply-to` header, before node-a's hook lets the deploy go on: it reads
/// no reply, while the controller gets node-a's steps and result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn d_an_eavesdropper_cannot_read_replies() {
    let rig = Rig::start().await;
    let flag = rig.tmp.0.join("eve-listens");
    script(&rig.home("node-a").join("hooks/pre-deploy"), &format!("while [ ! -e '{}' ]; do sleep 0.05; done", flag.display()));
    let eve = rig.target.client().await;
    let mut requests = eve.subscribe(&rig.topic, SubscribeOptions::default()).await.unwrap();
    let mut spec = rig.spec();
    spec.filters = Filters { identity: vec!["node-a".into()], ..Default::default() };
    spec.canary = 0;
    spec.discovery.expect = Some(1);
    let c = controller(&rig.target, &rig.ops, &rig.topic).await;
    let rollout = tokio::spawn(async move {
        let (tx, _rx) = mpsc::unbounded_channel();
        let (_stop, stop) = watch::channel(false);
        c.rollout(&spec, tx, stop).await.unwrap()
    });
    let (req, headers) = loop {
        let m = common::targets::recv(&mut requests).await;
        if let Ok(Message::DeployRequest(req)) = decode(m.destination(), &m.headers, &m.body) {
            if req.action == DeployAction::Deploy {
                break (req, m.headers);
            }
        }
    };
    let named = req.reply_to.clone().expect("reply_to in the body");
    let mut subs = Vec::new();
    let tries =
        [Some(named.clone()), headers.get("reply-to").map(str::to_owned), Some(named.replacen("/temp-queue/", "/topic/", 1)), Some(named.replacen("/temp-queue/", "/queue/", 1))];
    for dest in tries.into_iter().flatten() {
        // The broker may refuse the subscription outright (another session's queue): that is a pass too.
        if let Ok(s) = eve.subscribe(&dest, SubscribeOptions::default()).await {
            subs.push(s);
        }
    }
    std::fs::write(&flag, b"").unwrap();
    let report = tokio::time::timeout(WAIT, rollout).await.expect("the rollout ends").unwrap();
    assert!(report.ok(), "{report:#?}");
    assert!(report.nodes[0].steps.len() >= 3, "the controller got node-a's steps: {report:#?}");
    for s in &mut subs {
        common::targets::recv_none(s, Duration::from_millis(500)).await;
    }
}

/// (e) Revoking node-a's key takes effect on the running controller; node-a
/// re-enrolled with a new key is trusted again by the same controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e_revoked_key_refused_and_reenrolled_key_accepted_without_restart() {
    let mut rig = Rig::start().await;
    let w = Window { timeout: WAIT, expect: Some(3) };
    let old = identity::load_or_create(&rig.home("node-a").join("state")).unwrap().public();
    let trust = rig.controller.trust().clone();
    trust.replace(TrustConfig { fleet_keys: vec![fleet_key().public()], revoked: [old].into(), ..Default::default() });
    // Untrusted answers never end a window early: ask node-a alone and wait the whole (generous) window.
    let only_a = Filters { identity: vec!["node-a".into()], ..Default::default() };
    let found = rig.controller.discover(only_a, Window { timeout: FULL_WINDOW, expect: None }).await.unwrap();
    let a = found.iter().find(|d| d.reply.node == "node-a").expect("node-a answered");
    assert!(a.untrusted.as_deref().unwrap().contains("revoked"), "{a:?}");
    assert_eq!(rig.controller.select("www", &Filters::default(), Window { timeout: Duration::from_secs(5), expect: Some(2) }).await.unwrap(), ["node-b", "node-c"]);
    // Re-enrollment: a new identity key and certificate, the agent restarted; the controller is not.
    rig.agents[0].take().unwrap().shutdown().await;
    std::fs::remove_file(identity::key_path(&rig.home("node-a").join("state"))).unwrap();
    enroll(fleet_key(), "node-a", &rig.home("node-a"));
    assert_ne!(identity::load_or_create(&rig.home("node-a").join("state")).unwrap().public(), old);
    rig.agents[0] = Some(rig.start_agent("node-a").await);
    assert_eq!(rig.controller.select("www", &Filters::default(), w).await.unwrap(), NODES);
}
