//! What an agent does with requests it cannot verify (issue #12, item 3),
//! attacked through a real in-process agent on the embedded broker:
//! unsigned requests carrying pathological regex filters cost it (almost) no
//! CPU, a flood of them is answered with nothing (no reply to the attacker's
//! destination, no event line) while the agent handles a bounded number at
//! once, and a forged `dk-correlation-id` header does not reach replies or
//! event lines. Windows end on awaited events (a signed probe's answer), never sleeps.

mod common;

use common::fleet::{agent_toml, tagged_repo, Tmp};
use common::targets::Target;
use deploykit::deploy::agent::{Agent, AgentConfig, AgentEvent, AgentHandle};
use deploykit::deploy::keys::{SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use deploykit::message::{decode, encode, DeployAction, DeployRequest, Filters, Message, StepState, Wire, CORRELATION_HEADER};
use deploykit::stomp::{Client, SendOptions, SubscribeOptions, Subscription};
use std::time::Duration;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(30);

/// One test at a time: the CPU measurement is of the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One agent (`node-a`, trusting `ops`) and a client to attack it with.
struct Rig {
    _tmp: Tmp,
    target: Target,
    ops: SecretKey,
    agent: AgentHandle,
    client: Client,
    topic: String,
}

impl Rig {
    async fn start(extra_toml: &str) -> Rig {
        let tmp = Tmp::new("intake");
        let repo = tagged_repo(&tmp.0.join("www"), 1);
        let ops = SecretKey::generate().unwrap();
        let target = Target::embedded().await;
        let topic = target.dest("topic");
        let toml = format!("{extra_toml}\n{}", agent_toml("node-a", &tmp.0.join("node-a"), &repo, &topic, &[("ops", ops.public().to_string())], "deploy = [\"ops\"]"));
        let agent = Agent::start(AgentConfig::parse(&toml).unwrap(), target.client().await).await.unwrap();
        let client = target.client().await;
        Rig { _tmp: tmp, target, ops, agent, client, topic }
    }

    fn request(&self, action: DeployAction, site: Option<&str>, filters: Filters, reply_to: &str) -> DeployRequest {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        DeployRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            action,
            site: site.map(str::to_owned),
            tag: None,
            user: "mallory".into(),
            filters,
            issued_at: now,
            expires_at: now + 600,
            reply_to: Some(reply_to.to_owned()),
            correlation_id: None,
            dry_run: false,
            limit: None,
            allow_downgrade: false,
        }
    }

    /// Sends `req`, signed by `key` if given, with `extra` headers.
    async fn send(&self, req: &DeployRequest, key: Option<&SecretKey>, extra: &[(&str, &str)]) {
        let out = encode(req, Wire::Json).unwrap();
        let mut headers = out.headers;
        if let Some(k) = key {
            headers.push(SIGNER_HEADER, k.public().to_string());
            headers.push(SIGNATURE_HEADER, k.sign(&out.body));
        }
        for (k, v) in extra {
            headers.set(*k, *v);
        }
        self.client.send_with(&self.topic, out.body, SendOptions { headers, receipt: true, ..Default::default() }).await.unwrap();
    }

    async fn subscribe(&self, dest: &str) -> Subscription {
        self.client.subscribe(dest, SubscribeOptions::default()).await.unwrap()
    }
}

/// The agent's event about each of `ids`, in `ids`' order, whatever order the
/// agent handled them in (it handles requests concurrently).
async fn events_for(events: &mut broadcast::Receiver<AgentEvent>, ids: &[&str]) -> Vec<AgentEvent> {
    let mut found: std::collections::HashMap<String, AgentEvent> = std::collections::HashMap::new();
    let mut seen = 0usize;
    let waited = tokio::time::timeout(WAIT, async {
        while found.len() < ids.len() {
            let e = events.recv().await.expect("no agent event lost (the broadcast holds 256)");
            seen += 1;
            let about = match &e {
                AgentEvent::Ignored { request_id } => request_id.clone(),
                AgentEvent::Unverified { request_id, .. } | AgentEvent::Refused { request_id, .. } | AgentEvent::Done { request_id, .. } => Some(request_id.clone()),
                AgentEvent::Steps { .. } => None,
            };
            if let Some(id) = about.filter(|id| ids.contains(&id.as_str())) {
                found.entry(id).or_insert(e);
            }
        }
    })
    .await;
    if waited.is_err() {
        let missing: Vec<&&str> = ids.iter().filter(|id| !found.contains_key(**id)).collect();
        panic!("the agent did not handle {} of {} requests within {WAIT:?} ({seen} events meanwhile); first missing: {:?}", missing.len(), ids.len(), missing.first());
    }
    ids.iter().map(|id| found.remove(*id).expect("found above")).collect()
}

/// The next message on `sub`, decoded.
async fn next(sub: &mut Subscription) -> Message {
    let m = tokio::time::timeout(WAIT, sub.recv()).await.expect("a message").expect("subscription open");
    decode(m.destination(), &m.headers, &m.body).unwrap()
}

/// CPU time this process has used (every thread), from getrusage(2).
fn process_cpu() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// A 13 KiB identity regex that is expensive to compile (1300 alternatives of classes).
fn pathological_regex() -> String {
    let alts: Vec<String> = (0..1300).map(|i| format!("x{i}\\w{{3}}")).collect();
    format!("/{}/", alts.join("|"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsigned_requests_with_pathological_regexes_cost_no_cpu_and_get_no_answer() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("").await;
    let mut events = rig.agent.subscribe();
    let attacker = rig.target.dest("queue");
    let mut replies = rig.subscribe(&attacker).await;
    let filters = Filters { identity: vec![pathological_regex()], ..Filters::default() };
    let reqs: Vec<DeployRequest> = (0..2).map(|_| rig.request(DeployAction::Discover, None, filters.clone(), &attacker)).collect();
    let cpu0 = process_cpu();
    let t0 = std::time::Instant::now();
    for r in &reqs {
        rig.send(r, None, &[]).await;
    }
    let ids: Vec<&str> = reqs.iter().map(|r| r.request_id.as_str()).collect();
    events_for(&mut events, &ids).await;
    let (cpu, wall) = (process_cpu() - cpu0, t0.elapsed());
    eprintln!("two unsigned 13 KiB regex requests: {cpu:?} CPU (whole process), {wall:?} wall");
    assert!(cpu < Duration::from_millis(50), "two unsigned requests cost {cpu:?} of CPU");
    // Nothing was answered: the first message on the attacker's destination is a later signed probe's reply.
    let probe = rig.request(DeployAction::Discover, None, Filters::default(), &attacker);
    rig.send(&probe, Some(&rig.ops), &[]).await;
    match next(&mut replies).await {
        Message::DeployReply(r) => assert_eq!(r.request_id, probe.request_id, "an unverified request was answered: {r:?}"),
        m => panic!("unexpected {m:?}"),
    }
    assert_eq!(rig.agent.stats().unverified, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unsigned_requests_is_handled_a_bounded_number_at_once_and_answered_with_nothing() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("max_concurrent_requests = 2").await;
    let mut events = rig.agent.subscribe();
    let attacker = rig.target.dest("queue");
    let mut replies = rig.subscribe(&attacker).await;
    let mut lines = rig.subscribe(&format!("{}.events", rig.topic)).await;
    const N: usize = 200;
    let mut ids = Vec::new();
    for i in 0..N {
        // Unsigned, with a bad signature, or by an untrusted key.
        let r = rig.request(DeployAction::Deploy, Some("www"), Filters::default(), &attacker);
        match i % 3 {
            0 => rig.send(&r, None, &[]).await,
            1 => rig.send(&r, Some(&rig.ops), &[(SIGNATURE_HEADER, "AAAA")]).await,
            _ => rig.send(&r, Some(&SecretKey::generate().unwrap()), &[]).await,
        }
        ids.push(r.request_id);
    }
    // Every one of them, in whatever order the bounded workers finished.
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert!(events_for(&mut events, &ids).await.iter().all(|e| matches!(e, AgentEvent::Unverified { .. })));
    let stats = rig.agent.stats();
    assert_eq!(stats.unverified, N as u64, "{stats:?}");
    assert!((1..=2).contains(&stats.peak_in_flight), "at most max_concurrent_requests at once: {stats:?}");
    // A signed request the agent refuses (unknown site): its reply and event line are the first on each destination.
    let probe = rig.request(DeployAction::Deploy, Some("nosuch"), Filters::default(), &attacker);
    rig.send(&probe, Some(&rig.ops), &[]).await;
    match next(&mut replies).await {
        Message::DeployReply(r) => {
            assert_eq!(r.request_id, probe.request_id, "an unverified request was answered: {r:?}");
            assert_eq!(r.state, StepState::Refused);
        }
        m => panic!("unexpected {m:?}"),
    }
    match next(&mut lines).await {
        Message::Event(e) => assert!(e.text.contains(&probe.request_id), "an event line for an unverified request: {}", e.text),
        m => panic!("unexpected {m:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_correlation_header_does_not_reach_replies_or_event_lines() {
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("").await;
    let dest = rig.target.dest("queue");
    let mut replies = rig.subscribe(&dest).await;
    let mut lines = rig.subscribe(&format!("{}.events", rig.topic)).await;
    // With the id in the signed body, and without one: the header is never used.
    for body_id in [Some("change-42"), None] {
        let mut req = rig.request(DeployAction::Deploy, Some("nosuch"), Filters::default(), &dest);
        req.correlation_id = body_id.map(str::to_owned);
        rig.send(&req, Some(&rig.ops), &[(CORRELATION_HEADER, "forged-by-mallory")]).await;
        match next(&mut replies).await {
            Message::DeployReply(r) => {
                assert_eq!(r.request_id, req.request_id);
                assert_eq!(r.correlation_id.as_deref(), body_id, "reply carries the signed body's id");
            }
            m => panic!("unexpected {m:?}"),
        }
        match next(&mut lines).await {
            Message::Event(e) => {
                assert!(e.text.contains(&req.request_id), "{}", e.text);
                assert_eq!(e.correlation_id.as_deref(), body_id, "event line carries the signed body's id");
            }
            m => panic!("unexpected {m:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_naming_only_other_servers_is_dropped_before_any_signature_check() {
    // A rollout's batches name servers literally; every agent hears every batch. An
    // agent not named does nothing either way, so it spends no signature check on it
    // (else a rollout of N servers in batches of 1 costs the fleet N² checks).
    let _serial = SERIAL.lock().await;
    let rig = Rig::start("").await;
    let mut events = rig.agent.subscribe();
    let to = rig.target.dest("queue");
    let others = Filters { identity: vec!["node-b".into(), "node-c".into()], ..Filters::default() };
    let unsigned = rig.request(DeployAction::Discover, None, others.clone(), &to);
    rig.send(&unsigned, None, &[]).await;
    let e = events_for(&mut events, &[unsigned.request_id.as_str()]).await;
    assert!(matches!(&e[0], AgentEvent::Ignored { .. }), "{e:?}");
    assert_eq!(rig.agent.stats().unverified, 0, "no signature check for a request naming others");
    // Named (or selected by a regex), the same unsigned request is checked and dropped as unverified.
    for identity in [vec!["node-b".into(), "node-a".into()], vec!["/^node-/".into()]] {
        let unsigned = rig.request(DeployAction::Discover, None, Filters { identity, ..Filters::default() }, &to);
        rig.send(&unsigned, None, &[]).await;
        let e = events_for(&mut events, &[unsigned.request_id.as_str()]).await;
        assert!(matches!(&e[0], AgentEvent::Unverified { .. }), "{e:?}");
    }
    assert_eq!(rig.agent.stats().unverified, 2);
}
