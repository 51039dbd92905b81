//! dk-web over HTTP: every route's status codes, logins (Basic with bcrypt,
//! trusted proxy header), CSRF refusals, bad forms (400 with the message),
//! unknown sites and deploys (404), a lock shown with its holder, and real
//! deploys to three in-process agents on the embedded broker followed through
//! the server-sent events (canary failure stops the rest; the stop button).
//! Synchronisation is on SSE updates, never on sleeps.

mod common;

use common::fleet::git;
use common::phantom::{phantom, Forgery};
use common::targets::{Kind, Target};
use common::web::*;
use deploykit::deploy::agent::AgentEvent;
use deploykit::deploy::keys::SecretKey;
use deploykit::message::{encode, DeployAction, Event, Wire};
use deploykit::stomp::{SendOptions, SubscribeOptions};
use deploykit::web;
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_logins_csrf_forms_and_a_deploy() {
    let mut rig = Rig::start().await;
    let a = rig.addr();

    // No login needed for health and assets; everything else asks.
    let h = get(a, "/healthz", None).await;
    assert_eq!(h.status, 200);
    assert!(h.body.contains("\"broker\":\"ready\""), "{}", h.body);
    let css = get(a, "/assets/style.css", None).await;
    assert_eq!((css.status, css.header("content-type")), (200, Some("text/css; charset=utf-8")));
    assert_eq!(get(a, "/assets/app.js", None).await.status, 200);
    for path in ["/", "/sites/www", "/history", "/activity", "/deploys/1", "/activity/events"] {
        let r = get(a, path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic realm=\"deploykit\""), "{}", r.head);
    }
    assert_eq!(get(a, "/", Some(("ann", "wrong"))).await.status, 401);
    assert_eq!(get(a, "/", Some(("eve", "ann-pw"))).await.status, 401);

    // Sites: servers answering and their releases.
    let sites = get(a, "/", BOB).await;
    assert_eq!(sites.status, 200);
    assert!(sites.body.contains("signed in as <b id=\"user\">bob</b>"), "{}", sites.body);
    assert!(sites.body.contains("3 on nothing"), "{}", sites.body);
    assert!(sites.body.contains("data-site=\"empty\""));

    // A site: tags newest first with how many servers hold them, servers, the form.
    let page = get(a, "/sites/www", BOB).await;
    assert_eq!(page.status, 200);
    let (v3, v1) = (page.body.find("value=\"v3\"").unwrap(), page.body.find("value=\"v1\"").unwrap());
    assert!(v3 < v1, "newest first");
    assert!(page.body.contains("3/3"));
    for n in NODES {
        assert!(page.body.contains(&format!("data-server=\"{n}\"")), "{n}");
    }
    assert!(!page.body.contains("id=\"deploy\""), "bob may not deploy: no button");
    assert!(get(a, "/sites/www", ANN).await.body.contains("id=\"deploy\""));
    assert_eq!(get(a, "/sites/nope", BOB).await.status, 404);
    assert!(get(a, "/sites/empty", BOB).await.body.contains("No server of site empty answered"));
    assert_eq!(get(a, "/no/such/page", BOB).await.status, 404);
    assert_eq!(get(a, "/deploys/999", BOB).await.status, 404);
    assert_eq!(get(a, "/deploys/x", BOB).await.status, 404);
    assert_eq!(get(a, "/deploys/999/events", BOB).await.status, 404);
    assert_eq!(get(a, "/sites/www/deploy", ANN).await.status, 405);

    // CSRF: missing, someone else's, from another origin.
    let ann = token(a, ANN).await;
    let bob = token(a, BOB).await;
    assert_ne!(ann, bob);
    let r = post(a, "/sites/www/deploy", ANN, "tag=v1").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("no CSRF token"), "{}", r.body);
    assert_eq!(post(a, "/sites/www/deploy", ANN, &format!("tag=v1&csrf={bob}")).await.status, 403);
    let r = http(a, "POST", "/sites/www/deploy", ANN, &[("Origin", "http://evil.example")], &format!("tag=v1&csrf={ann}")).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("another site"), "{}", r.body);
    assert_eq!(post(a, "/sites/www/preview", ANN, "tag=v1").await.status, 403);
    assert_eq!(post(a, "/deploys/1/stop", ANN, "").await.status, 403);
    // Not a deployer.
    let r = post(a, "/sites/www/deploy", BOB, &format!("tag=v1&csrf={bob}")).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("bob may not deploy"), "{}", r.body);
    // Bad forms: 400 with the message.
    for (form, want) in [
        ("scope=all", "pick a tag"),
        ("tag=..%2Fetc", "tag:"),
        ("tag=v1&scope=pick&node=zzz", "not a server of site www"),
        ("tag=v1&scope=pick", "tick at least one"),
        ("tag=v1&scope=filter&filter=web9", "no server of site www matches"),
        ("tag=v1&batch=0", "batch:"),
        ("tag=v1&canary=many", "canary"),
    ] {
        let r = post(a, "/sites/www/deploy", ANN, &format!("{form}&csrf={ann}")).await;
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        assert!(r.body.contains(want), "{form}: {}", r.body);
    }
    assert_eq!(post(a, "/sites/nope/deploy", ANN, &format!("tag=v1&csrf={ann}")).await.status, 404);
    assert!(rig.live("node-a").is_none(), "nothing was deployed by refused requests");

    // The dry run: plan and commit log; nothing changes.
    let p = post(a, "/sites/www/preview", ANN, &format!("tag=v2&canary=1&batch=2&csrf={ann}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("release 2") && p.body.contains("release 1"), "{}", p.body);
    let v2 = git(&rig.tmp.0.join("www"), &["rev-parse", "v2^{commit}"]);
    assert!(p.body.contains(&format!("<code>{}</code> release 2", &v2[..10])), "commit ids shown: {}", p.body);
    assert!(p.body.contains("first: node-a"), "{}", p.body);
    assert!(rig.live("node-a").is_none());

    // A deploy, followed live: every row turns ok, canary first; the agents see who asked.
    for n in NODES {
        rig.hook(n, "pre-deploy", "echo \"$DK_USER\" > ../deployed-by");
    }
    let activity = tokio::spawn(activity_line(activity_stream(a).await, "checked out tag v2".to_owned()));
    let own_line = tokio::spawn(activity_line(activity_stream(a).await, "dk-web: ann's deploy www v2: ok, 3/3 servers ok".to_owned()));
    let r = post(a, "/sites/www/deploy", ANN, &format!("tag=v2&scope=all&canary=1&batch=2&max_failures=0&csrf={ann}")).await;
    let id = deploy_id(&r);
    let mut order = Vec::new();
    let updates = follow(a, &id, |u| {
        if u["kind"] == "node" && u["node"]["state"] == "ok" {
            order.push(u["node"]["node"].as_str().unwrap().to_owned());
        }
    })
    .await;
    let view = final_view(&updates);
    assert_eq!(view["result"], "ok", "{view:#}");
    assert_eq!(states(&view), NODES.iter().map(|n| (n.to_string(), "ok".to_string())).collect::<Vec<_>>());
    assert_eq!(order.first().map(String::as_str), Some("node-a"), "canary first: {order:?}");
    let steps: Vec<&str> = view["nodes"][1]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["pre-deploy", "checkout", "pre-link", "link", "post-deploy"]);
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v2"));
        assert_eq!(std::fs::read_to_string(rig.home(n).join("deployed-by")).unwrap().trim(), "ann", "the signed request names the web user");
    }
    let page = get(a, &format!("/deploys/{id}"), BOB).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body.matches("data-state=\"ok\"").count(), 3, "{}", page.body);
    assert!(!page.body.contains("id=\"stop\""), "bob may not stop");
    let hist = get(a, "/history", BOB).await;
    assert!(hist.body.contains(&format!("data-deploy=\"{id}\" data-result=\"ok\"")), "{}", hist.body);
    assert!(get(a, "/", BOB).await.body.contains("3 on v2"));
    assert!(get(a, "/history?site=other", BOB).await.body.contains("No deploys yet"));
    let r = post(a, &format!("/deploys/{id}/stop"), ANN, &format!("csrf={ann}")).await;
    assert_eq!(r.status, 409, "{}", r.body);
    // The activity feed saw the agents' event lines.
    tokio::time::timeout(WAIT, activity).await.expect("activity line in time").unwrap();
    tokio::time::timeout(WAIT, own_line).await.expect("dk-web's own event line in time").unwrap();
    assert!(get(a, "/activity", BOB).await.body.contains("checked out tag v2"));

    // v3 to the ticked server only, then roll it back as the deploy page's form does.
    let one = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v3&scope=pick&node=node-b&csrf={ann}")).await);
    let view = final_view(&follow(a, &one, |_| {}).await);
    assert_eq!(states(&view), vec![("node-b".to_string(), "ok".to_string())]);
    assert_eq!((rig.live("node-b").as_deref(), rig.live("node-a").as_deref()), (Some("v3"), Some("v2")));
    let page = get(a, &format!("/deploys/{one}"), ANN).await;
    assert!(page.body.contains("id=\"rollback-form\"") && page.body.contains("name=\"node\" value=\"node-b\""), "{}", page.body);
    let r = post(a, "/sites/www/rollback", ANN, &format!("node=node-b&scope=pick&csrf={ann}")).await;
    let rb = deploy_id(&r);
    let view = final_view(&follow(a, &rb, |_| {}).await);
    assert_eq!(view["result"], "ok", "{view:#}");
    assert_eq!(rig.live("node-b").as_deref(), Some("v2"), "back to its previous release");

    // The history survives a restart (and the CSRF secret does not).
    rig.restart_web().await;
    let a = rig.addr();
    let hist = get(a, "/history", BOB).await;
    assert!(hist.body.contains(&format!("data-deploy=\"{id}\" data-result=\"ok\"")) && hist.body.contains(&format!("data-deploy=\"{rb}\"")), "{}", hist.body);
    let page = get(a, &format!("/deploys/{id}"), ANN).await;
    assert_eq!(page.body.matches("data-state=\"ok\"").count(), 3, "{}", page.body);
    assert!(page.body.contains("id=\"rollback\""));
    let snapshot = follow(a, &id, |_| {}).await;
    assert_eq!(final_view(&snapshot)["result"], "ok");
    assert_eq!(post(a, "/sites/www/deploy", ANN, &format!("tag=v1&csrf={ann}")).await.status, 403, "old token after restart");
}

/// Opens the activity stream; returns once it is subscribed (its first message arrived).
async fn activity_stream(addr: SocketAddr) -> Lines {
    sse_stream(addr, "/activity/events").await
}

/// Waits on an activity stream for a line containing `needle`.
async fn activity_line(mut lines: Lines, needle: String) {
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("data:") && line.contains(&needle) {
            return;
        }
    }
    panic!("activity stream ended");
}

/// Issue #13: in a fleet set to `wire = "legacy"`, dk-agent's and dk-web's event
/// lines are the original's text bodies (subject `Talking to eventbot`, no JSON),
/// the agent's success line exactly the original git-agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_legacy_fleet_gets_the_originals_event_lines_from_agent_and_web() {
    let rig = Rig::start_with(Target::embedded().await, "wire = \"legacy\"\n").await;
    let a = rig.addr();
    let listener = rig.target.client().await;
    let mut lines = listener.subscribe(&rig.config.event_destination, SubscribeOptions::default()).await.unwrap();
    let mut agent = rig.agents[0].subscribe();

    let ann = token(a, ANN).await;
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&scope=pick&node=node-a&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(states(&view), vec![("node-a".to_string(), "ok".to_string())], "{view:#}");
    let request_id = loop {
        match tokio::time::timeout(WAIT, agent.recv()).await.expect("the agent's outcome").unwrap() {
            AgentEvent::Done { request_id, action: DeployAction::Deploy, ok } => {
                assert!(ok, "deploy {request_id} failed");
                break request_id;
            }
            _ => continue,
        }
    };

    let mut got = Vec::new();
    for _ in 0..3 {
        let m = common::targets::recv(&mut lines).await;
        assert_eq!(m.headers.get("subject"), Some("Talking to eventbot"), "{:?}", m.text());
        assert_eq!(m.headers.get("dk-type"), None, "a legacy text body, not JSON: {:?}", m.text());
        got.push(m.text().unwrap().to_owned());
    }
    got.sort();
    let mut want = vec![
        format!("dk-web: ann started deploy www v1 (servers: node-a; deploy #{id})"),
        format!("dk-web: ann's deploy www v1: ok, 1/1 servers ok (deploy #{id})"),
        format!("git-agent on node-a checked out tag v1 from repo www to target {}/www/current request id {request_id}", rig.home("node-a").display()),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_failure_shows_red_and_the_rest_never_start() {
    let rig = Rig::start().await;
    let a = rig.addr();
    rig.hook("node-a", "pre-deploy", "echo 'database migration refused' >&2; exit 3");
    for n in ["node-b", "node-c"] {
        rig.hook(n, "pre-deploy", "touch ../pre-deploy-ran");
    }
    let ann = token(a, ANN).await;
    let observer = rig.target.client().await;
    let mut records = observer.subscribe("/topic/deploykit.rollouts", SubscribeOptions::default()).await.unwrap();
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v3&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(view["result"], "failed");
    // dk-web published the deploy's rollout record, signed with its key; it is stored once.
    let m = common::targets::recv(&mut records).await;
    let trusted = std::collections::BTreeMap::from([("web".to_string(), rig.key.public())]);
    let r = deploykit::deploy::record::verify(&m.headers, &m.body, &trusted).unwrap().record;
    assert_eq!((r.controller.as_str(), r.user.as_str(), r.result.as_str(), r.detail.as_deref()), ("dk-web", "ann", "failed", Some("the canary failed")));
    let report = r.report.unwrap();
    assert_eq!(report.nodes.iter().map(|n| (n.node.as_str(), n.batch)).collect::<Vec<_>>(), [("node-a", 0), ("node-b", 1), ("node-c", 1)]);
    assert_eq!(states(&view), vec![("node-a".into(), "failed".into()), ("node-b".into(), "not-started".into()), ("node-c".into(), "not-started".into())]);
    assert_eq!(view["stopped"], "the canary failed");
    let pre = &view["nodes"][0]["steps"][0];
    assert_eq!((pre["step"].as_str(), pre["state"].as_str(), pre["exit_code"].as_i64()), (Some("pre-deploy"), Some("failed"), Some(3)));
    assert!(pre["stderr"].as_str().unwrap().contains("database migration refused"));
    for n in ["node-b", "node-c"] {
        assert!(!rig.home(n).join("pre-deploy-ran").exists(), "{n} must not start");
        assert!(rig.live(n).is_none());
    }
    let page = get(a, &format!("/deploys/{id}"), ANN).await;
    assert!(page.body.contains("data-node=\"node-a\" data-state=\"failed\""), "{}", page.body);
    assert!(page.body.contains("database migration refused"));
    // A finished deploy's page carries its result without JavaScript (the browser suite
    // loads it after a fast canary failure, when no live update will come).
    assert!(page.body.contains(&format!("id=\"deploy-page\" data-deploy=\"{id}\" data-result=\"failed\"")), "{}", page.body);
    // dk-web handles the records on its subscription in order: once a marker record sent after its
    // own is stored (it has no other event to await), its own came back and was seen.
    let marker = deploykit::deploy::record::RolloutRecord {
        id: "marker-1".into(),
        controller: "dk-deploy".into(),
        user: "marker".into(),
        reason: None,
        action: DeployAction::Rollback,
        site: "empty".into(),
        tag: None,
        selection: "all".into(),
        started_at: 1,
        finished_at: 1,
        result: "ok".into(),
        detail: None,
        report: None,
        approved_by: None,
    };
    marker.publish(&observer, "/topic/deploykit.rollouts", &rig.key).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let history = loop {
        let body = get(a, "/history", ANN).await.body;
        if body.contains("data-controller=\"dk-deploy\"") {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "the marker record was not stored: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(history.contains(&format!("data-deploy=\"{id}\" data-result=\"failed\" data-controller=\"dk-web\"")), "{history}");
    assert_eq!(history.matches("data-deploy=").count(), 2, "its own record coming back is not a second row (the other row is the marker): {history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_button_halts_further_batches() {
    let rig = Rig::start().await;
    let a = rig.addr();
    // The canary's pre-deploy waits for the test's go (a hook polling a file: the test's own signal).
    rig.hook("node-a", "pre-deploy", "i=0; while [ ! -e ../go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done");
    let ann = token(a, ANN).await;
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&canary=1&batch=1&csrf={ann}")).await);
    let go = rig.home("node-a").join("go");
    let mut stopped = false;
    let stop_path = format!("/deploys/{id}/stop");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let follower = tokio::spawn(async move {
        follow(a, &id, move |u| {
            if u["kind"] == "node" && u["node"]["node"] == "node-a" && u["node"]["steps"][0]["state"] == "running" {
                let _ = tx.send(());
            }
        })
        .await
    });
    tokio::time::timeout(WAIT, rx.recv()).await.expect("canary started").unwrap();
    let page = get(a, &stop_path.replace("/stop", ""), ANN).await;
    assert!(page.body.contains("id=\"stop\"") && page.body.contains("data-live"), "{}", page.body);
    let r = post(a, &stop_path, ANN, &format!("csrf={ann}")).await;
    assert_eq!(r.status, 303, "{}", r.body);
    std::fs::write(&go, "").unwrap();
    stopped |= true;
    let view = final_view(&follower.await.unwrap());
    assert!(stopped);
    assert_eq!(view["result"], "stopped", "{view:#}");
    assert_eq!(view["stopped"], "stopped by the operator");
    assert_eq!(states(&view), vec![("node-a".into(), "ok".into()), ("node-b".into(), "not-started".into()), ("node-c".into(), "not-started".into())]);
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"));
    assert!(rig.live("node-b").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locked_site_shows_its_holder() {
    let rig = Rig::start().await;
    let a = rig.addr();
    let state = rig.home("node-b").join("releases/.deploykit");
    std::fs::create_dir_all(&state).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let lock = serde_json::json!({"request_id": "5d0c1a4e-0000-4000-8000-000000000001", "user": "mallory", "action": "deploy", "pid": 1, "acquired_at": now, "expires_at": now + 3600, "release": "www_v9", "phase": "preparing"});
    std::fs::write(state.join("lock.json"), lock.to_string()).unwrap();
    let page = get(a, "/sites/www", BOB).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-lock-holder=\"mallory\""), "{}", page.body);
    assert!(page.body.contains("Locked on <b>node-b</b> by <b>mallory</b>"), "{}", page.body);
    // An expired lease is not shown.
    let lock = serde_json::json!({"request_id": "5d0c1a4e-0000-4000-8000-000000000001", "user": "mallory", "action": "deploy", "pid": 1, "acquired_at": now - 7200, "expires_at": now - 3600, "phase": "preparing"});
    std::fs::write(state.join("lock.json"), lock.to_string()).unwrap();
    assert!(!get(a, "/sites/www", BOB).await.body.contains("data-lock-holder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_login_trusts_only_configured_proxies_and_html_is_escaped() {
    let mut rig = Rig::start().await;
    let mut c = rig.config.clone();
    c.auth = web::config::AuthConfig::Proxy { header: "X-Remote-User".into(), proxies: vec![web::config::Network::parse("127.0.0.0/8").unwrap()] };
    c.database = rig.tmp.0.join("proxy.sqlite");
    rig.config = c.clone();
    rig.restart_web().await;
    let a = rig.addr();
    let r = http(a, "GET", "/", None, &[("X-Remote-User", "<script>carol</script>")], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("&lt;script&gt;carol&lt;/script&gt;") && !r.body.contains("<script>carol"), "escaped: {}", r.body);
    let r = get(a, "/", None).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("X-Remote-User"), "{}", r.body);
    c.auth = web::config::AuthConfig::Proxy { header: "X-Remote-User".into(), proxies: vec![web::config::Network::parse("10.0.0.1").unwrap()] };
    rig.config = c;
    rig.restart_web().await;
    let r = http(rig.addr(), "GET", "/", None, &[("X-Remote-User", "carol")], "").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("not a trusted proxy"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activity_feed_shows_event_lines_from_the_bus() {
    let mut rig = Rig::start().await;
    // A second, legacy-named destination: the original daemons' plain-text lines.
    let legacy = format!("{}.future.events.fetch", rig.config.events[0]);
    rig.config.events.push(legacy.clone());
    rig.restart_web().await;
    let a = rig.addr();
    let client = rig.target.client().await;
    let dest = rig.config.events[0].clone();
    let stream = activity_stream(a).await;
    // dk-web subscribed before start() returned and the stream is open: one receipted send arrives.
    let ev = Event { source: "fetch".into(), host: Some("web01".into()), text: "fetched change: [www] <b>bold</b>".into(), correlation_id: None };
    let out = encode(&ev, Wire::Json).unwrap();
    client.send_with(&dest, out.body, SendOptions { headers: out.headers, receipt: true, ..Default::default() }).await.unwrap();
    tokio::time::timeout(WAIT, activity_line(stream, "fetched change: [www] <b>bold</b>".to_owned())).await.expect("the line arrives live");
    let page = get(a, "/activity", BOB).await;
    assert!(page.body.contains("fetched change: [www] &lt;b&gt;bold&lt;/b&gt;"), "{}", page.body);
    assert!(page.body.contains("web01"));
    let stream = activity_stream(a).await;
    client.send_with(&legacy, "web02  fetched change: [shop] old daemon\n", SendOptions { receipt: true, ..Default::default() }).await.unwrap();
    tokio::time::timeout(WAIT, activity_line(stream, "web02  fetched change: [shop] old daemon".to_owned())).await.expect("the legacy line arrives");
    let page = get(a, "/activity", BOB).await;
    assert!(page.body.contains("<span class=\"source\">fetch</span> <span class=\"text\">web02  fetched change: [shop] old daemon</span>"), "{}", page.body);
    let _ = &rig.agents;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_and_failing_canary_through_rabbitmq() {
    let Some(t) = Target::real(Kind::RabbitMq) else {
        return;
    };
    let rig = Rig::start_on(t).await;
    let a = rig.addr();
    let ann = token(a, ANN).await;
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(view["result"], "ok", "{view:#}");
    assert_eq!(states(&view), NODES.iter().map(|n| (n.to_string(), "ok".to_string())).collect::<Vec<_>>());
    rig.hook("node-a", "pre-deploy", "exit 7");
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v2&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(states(&view), vec![("node-a".into(), "failed".into()), ("node-b".into(), "not-started".into()), ("node-c".into(), "not-started".into())]);
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"), "{n} keeps v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_the_running_batch_starts_no_other_and_records_it() {
    let mut rig = Rig::start().await;
    let a = rig.addr();
    rig.hook("node-a", "pre-deploy", "i=0; while [ ! -e ../go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done");
    let ann = token(a, ANN).await;
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&canary=1&batch=1&csrf={ann}")).await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watch_id = id.clone();
    let watcher = tokio::spawn(async move {
        follow(a, &watch_id, move |u| {
            if u["kind"] == "node" && u["node"]["node"] == "node-a" && u["node"]["steps"][0]["state"] == "running" {
                let _ = tx.send(());
            }
        })
        .await
    });
    tokio::time::timeout(WAIT, rx.recv()).await.expect("canary started").unwrap();
    let web = rig.web.take().unwrap();
    let shutdown = tokio::spawn(web.shutdown(WAIT));
    std::fs::write(rig.home("node-a").join("go"), "").unwrap();
    tokio::time::timeout(WAIT, shutdown).await.expect("shutdown in time").unwrap();
    let _ = watcher.await;
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"), "the running batch finished");
    assert!(rig.live("node-b").is_none(), "no further batch");
    rig.restart_web().await;
    let hist = get(rig.addr(), "/history", ANN).await;
    assert!(hist.body.contains(&format!("data-deploy=\"{id}\" data-result=\"stopped\"")), "{}", hist.body);
}

/// Issue #12 item 2 (f): a phantom server (self-signed, its own "fleet"
/// certificate) announces itself and answers every request claiming site www.
/// The site page shows it greyed as untrusted with the reason and without a
/// checkbox; picking it is refused; a deploy plans and counts only the real three.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn phantom_server_is_shown_untrusted_and_never_deployed_to() {
    let rig = Rig::start().await;
    let how = Forgery::SelfSigned(SecretKey::generate().unwrap());
    let (_task, mut asked) = phantom(rig.target.client().await, &rig.config.deploy_destination, &rig.config.agents_destination, "phantom", how).await;
    let a = rig.addr();
    let mut page = get(a, "/sites/www", BOB).await;
    for _ in 0..20 {
        if page.body.contains("data-untrusted=\"phantom\"") {
            break;
        }
        page = get(a, "/sites/www", BOB).await;
    }
    assert!(page.body.contains("data-untrusted=\"phantom\""), "{}", page.body);
    assert!(page.body.contains("untrusted: enrollment certificate signed by ed25519:"), "{}", page.body);
    assert!(!page.body.contains("value=\"phantom\""), "no checkbox for the phantom: {}", page.body);
    assert!(page.body.contains("3 servers"), "{}", page.body);
    let ann = token(a, ANN).await;
    let picked = post(a, "/sites/www/deploy", ANN, &format!("tag=v1&scope=pick&node=phantom&canary=0&batch=2&csrf={ann}")).await;
    assert_eq!(picked.status, 400, "{}", picked.body);
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(view["result"], "ok", "{view:#}");
    assert_eq!(states(&view), NODES.iter().map(|n| (n.to_string(), "ok".to_string())).collect::<Vec<_>>());
    while let Ok(req) = asked.try_recv() {
        assert!(!req.filters.identity.contains(&"phantom".to_string()), "a request named the phantom: {req:?}");
    }
    let history = get(a, &format!("/deploys/{id}"), BOB).await;
    assert!(!history.body.contains(">phantom<"), "{}", history.body);
}

/// dk-web's reload (what SIGHUP does) applies a revocation at once: node-c's
/// key revoked, the site page shows it untrusted and a deploy leaves it out;
/// no restart of dk-web.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_revokes_an_agent_key_without_a_restart() {
    let rig = Rig::start().await;
    let a = rig.addr();
    let node_c = deploykit::deploy::identity::load_or_create(&rig.home("node-c").join("state")).unwrap().public();
    let mut c = rig.config.clone();
    c.trust.revoked.insert(node_c);
    rig.web.as_ref().unwrap().reload(c).unwrap();
    let page = get(a, "/sites/www", BOB).await;
    assert!(page.body.contains("data-untrusted=\"node-c\""), "{}", page.body);
    assert!(page.body.contains(&format!("untrusted: key {node_c} is revoked")), "{}", page.body);
    let ann = token(a, ANN).await;
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(states(&view), vec![("node-a".into(), "ok".into()), ("node-b".into(), "ok".into())], "{view:#}");
}

/// Issue #16: a server already on the tag shows "already live" (live, and reloaded from
/// history with each server's canary and batch), counted apart from the deployed ones; a
/// downgrade is previewed with the commits it removes, refused by the agent without the
/// preview's tick and deployed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn already_live_servers_and_downgrades_through_the_pages() {
    let mut rig = Rig::start().await;
    let a = rig.addr();
    let ann = token(a, ANN).await;
    let first = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v2&scope=pick&node=node-a&csrf={ann}")).await);
    assert_eq!(final_view(&follow(a, &first, |_| {}).await)["result"], "ok");

    // v2 everywhere: node-a (the canary) was already on it.
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v2&scope=all&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(view["result"], "ok", "{view:#}");
    assert_eq!(states(&view), NODES.iter().map(|n| (n.to_string(), "ok".to_string())).collect::<Vec<_>>());
    let unchanged: Vec<bool> = view["nodes"].as_array().unwrap().iter().map(|n| n["unchanged"] == true).collect();
    assert_eq!(unchanged, [true, false, false], "{view:#}");
    let check = |body: &str| {
        assert!(body.contains("class=\"node already-live\" data-node=\"node-a\" data-state=\"ok\" data-unchanged"), "{body}");
        assert!(body.contains("<span class=\"badge already-live\">already live</span>"), "{body}");
        assert_eq!(body.matches("<td class=\"step already-live\"").count(), deploykit::web::live::STEPS.len(), "every step cell of node-a says so: {body}");
        assert!(body.contains(">2 deployed, 1 already live</span>"), "{body}");
        assert!(!body.contains("name=\"node\" value=\"node-a\""), "node-a has nothing of this deploy to roll back: {body}");
        assert!(body.contains("name=\"node\" value=\"node-b\""), "{body}");
        // The canary and the batches, as planned.
        let batch = |node: &str| {
            body.split(&format!("data-node=\"{node}\"")).nth(1).and_then(|r| r.split("<td class=\"num\">").nth(1)).and_then(|r| r.split('<').next()).unwrap().to_owned()
        };
        assert_eq!((batch("node-a"), batch("node-b"), batch("node-c")), ("canary".to_owned(), "1".to_owned(), "1".to_owned()), "{body}");
    };
    check(&get(a, &format!("/deploys/{id}"), ANN).await.body);
    // Reloaded from history (a restart: nothing of it is in memory any more).
    rig.restart_web().await;
    let a = rig.addr();
    check(&get(a, &format!("/deploys/{id}"), ANN).await.body);
    let snapshot = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(snapshot["nodes"][0]["unchanged"], true, "{snapshot:#}");
    assert_eq!(snapshot["nodes"].as_array().unwrap().iter().map(|n| n["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 1]);

    // v1 now removes "release 2" on every server: the preview says so and asks for a tick.
    let ann = token(a, ANN).await;
    let p = post(a, "/sites/www/preview", ANN, &format!("tag=v1&scope=pick&node=node-a&canary=0&csrf={ann}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("Deploying v1 removes 1 commit now live on node-a:"), "{}", p.body);
    let v2 = git(&rig.tmp.0.join("www"), &["rev-parse", "v2^{commit}"]);
    assert!(p.body.contains(&format!("<code>{}</code> release 2", &v2[..10])), "{}", p.body);
    assert!(p.body.contains("id=\"downgrade-warning\""), "{}", p.body);
    assert!(!p.body.contains("no new commits"), "{}", p.body);
    assert!(p.body.contains("name=\"allow_downgrade\" value=\"1\" required"), "{}", p.body);
    // Without the tick the agent refuses, and the rollout shows why.
    let refused = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&scope=pick&node=node-a&canary=0&csrf={ann}")).await);
    let view = final_view(&follow(a, &refused, |_| {}).await);
    assert_eq!(states(&view), vec![("node-a".to_string(), "refused".to_string())], "{view:#}");
    let why = view["nodes"][0]["error"].as_str().unwrap();
    assert!(why.contains("would remove 1 commit now live") && why.contains("allow the downgrade"), "{why}");
    assert_eq!(rig.live("node-a").as_deref(), Some("v2"));
    let page = get(a, &format!("/deploys/{refused}"), ANN).await;
    assert!(page.body.contains("data-node=\"node-a\" data-state=\"refused\"") && page.body.contains("would remove 1 commit"), "{}", page.body);
    // With it, v1 is deployed.
    let ok = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&scope=pick&node=node-a&canary=0&allow_downgrade=1&csrf={ann}")).await);
    let view = final_view(&follow(a, &ok, |_| {}).await);
    assert_eq!(view["result"], "ok", "{view:#}");
    assert_eq!(rig.live("node-a").as_deref(), Some("v1"));
}

/// Issue #16: a push heard on the bus becomes a change; its builds, the fetch on
/// each server and event lines naming it arrive on its journey page live, in
/// order, and the list and the page sum it up (fetched on N of M, failures).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_and_its_journey_arrive_live_on_the_changes_pages() {
    use deploykit::message::{Build, BuildStatus, Commit, CommitInfo, Destinations, FetchResult, Publisher};
    let rig = Rig::start().await;
    let a = rig.addr();
    let client = rig.target.client().await;
    let events = rig.config.events[0].clone();
    let publisher = Publisher::new(client.clone(), "git-hook").destinations(Destinations { events: events.clone(), ..Destinations::default() });
    let rev = "3f1c2a9d8e7b6a5c4d3e2f1a0b9c8d7e6f5a4b3c".to_string();
    let commit = Commit {
        repo: "www".into(),
        oldrev: "0".repeat(40),
        newrev: rev.clone(),
        refname: "refs/heads/master".into(),
        commits: vec![CommitInfo { id: rev.clone(), author: "Ann".into(), timestamp: "2026-12-04T03:00:00Z".into(), message: "Faster <login> page".into() }],
        correlation_id: Some("push-42".into()),
        ..Commit::default()
    };
    let mut list = sse_stream(a, "/changes/events").await;
    assert!(get(a, "/changes", BOB).await.body.contains("No push heard yet"));
    // Its own event line goes to a topic this dk-web does not follow, so the journey below is exact.
    Publisher::new(client.clone(), "git-hook").commit(&commit).await.unwrap();
    let first = updates(&mut list, 1).await;
    assert_eq!((first[0]["change"]["id"].as_str(), first[0]["step"]["stage"].as_str()), (Some("push-42"), Some("pushed")));

    let mut journey = sse_stream(a, &format!("/changes/{}/events", &rev[..12])).await;
    let build = |status, ms| Build {
        job: "www-tests".into(),
        number: 12,
        status,
        url: None,
        repo: Some("www".into()),
        branch: None,
        commit: Some(rev.clone()),
        duration_ms: ms,
        correlation_id: None,
    };
    // Builds, fetch results and event lines travel on different topics, which dk-web follows
    // independently: each group is awaited before the next is sent, so the order is the test's.
    publisher.build(&build(BuildStatus::Started, None)).await.unwrap();
    publisher.build(&build(BuildStatus::Success, Some(64_000))).await.unwrap();
    let mut steps = updates(&mut journey, 2).await;
    for (node, ok, ms) in [("web01", true, 310), ("web02", false, 40), ("web03", true, 1_250)] {
        let r = FetchResult {
            repo: "www".into(),
            node: node.into(),
            mode: "trusting".into(),
            refname: Some("refs/heads/master".into()),
            old_head: None,
            new_head: ok.then(|| rev.clone()),
            duration_ms: ms,
            ok,
            error: (!ok).then(|| "ssh: connect to host git port 22: Connection refused".into()),
            trigger: "commit".into(),
            correlation_id: Some("push-42".into()),
        };
        publisher.send("/topic/deploykit.fetch", &r).await.unwrap();
    }
    steps.extend(updates(&mut journey, 3).await);
    Publisher::new(client.clone(), "jenkins")
        .destinations(Destinations { events: events.clone(), ..Destinations::default() })
        .event("triggered www-tests: queue http://jenkins/queue/item/77/", Some("push-42".into()))
        .await
        .unwrap();
    steps.extend(updates(&mut journey, 1).await);
    let lines: Vec<&str> = steps.iter().map(|u| u["line"].as_str().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "build www-tests #12 started",
            "build www-tests #12 success in 64.0 s",
            "fetched on web01 in 310 ms (commit)",
            "fetch failed on web02: ssh: connect to host git port 22: Connection refused",
            "fetched on web03 in 1250 ms (commit)",
            "jenkins: triggered www-tests: queue http://jenkins/queue/item/77/",
        ]
    );
    let last = &steps[5]["summary"];
    assert_eq!((last["fetched"].as_u64(), last["servers"].as_u64()), (Some(2), Some(3)));

    let page = get(a, "/changes/push-42", BOB).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Faster &lt;login&gt; page"), "subjects are escaped: {}", page.body);
    assert!(page.body.contains("id=\"fetched-count\">2</b> of <b id=\"server-count\">3</b>"), "{}", page.body);
    assert!(page.body.contains("web02: ssh: connect to host git port 22: Connection refused"));
    assert!(page.body.contains("www-tests #12 success"));
    assert_eq!(page.body.matches("class=\"step\"").count(), 7, "pushed + 6: {}", page.body);
    let listing = get(a, "/changes", BOB).await.body;
    assert!(listing.contains("data-change=\"push-42\"") && listing.contains("2 of 3") && listing.contains("1 failed"), "{listing}");
    assert_eq!(get(a, "/changes/0000000", BOB).await.status, 404);
    assert_eq!(get(a, "/changes/push-42", None).await.status, 401);

    // The original's text body (a legacy git hook) is a change too.
    let legacy_rev = "9".repeat(40);
    let legacy = encode(&Commit { newrev: legacy_rev.clone(), correlation_id: None, ..commit.clone() }, Wire::Legacy).unwrap();
    client.send_with("/topic/deploykit.git.commits", legacy.body, SendOptions { headers: legacy.headers, ..Default::default() }).await.unwrap();
    // (The list's stream carried every step above first.)
    let found = async {
        loop {
            let u = updates(&mut list, 1).await.remove(0);
            if u["change"]["newrev"].as_str() == Some(legacy_rev.as_str()) {
                return u;
            }
        }
    };
    let u = tokio::time::timeout(WAIT, found).await.expect("the legacy push arrives");
    assert_eq!((u["step"]["stage"].as_str(), u["change"]["source"].as_str()), (Some("pushed"), Some("git")));
    assert_eq!(get(a, &format!("/changes/{}", &legacy_rev[..7]), BOB).await.status, 200);
}

/// Issue #16: a site with `require_reason` refuses a deploy that does not say why;
/// the reason given is kept in History and in the rollout record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_that_requires_a_reason_gets_one_and_history_keeps_it() {
    let rig = Rig::start().await;
    let a = rig.addr();
    let mut config = rig.config.clone();
    config.sites.iter_mut().find(|s| s.name == "www").unwrap().require_reason = true;
    rig.web.as_ref().unwrap().reload(config).unwrap();
    let site = get(a, "/sites/www", ANN).await.body;
    assert!(site.contains("name=\"reason\" maxlength=\"1000\"") && site.contains("required"), "{site}");
    let ann = token(a, ANN).await;
    let refused = post(a, "/sites/www/deploy", ANN, &format!("tag=v1&csrf={ann}&reason=+++")).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("asks why"), "{}", refused.body);
    assert!(rig.live("node-a").is_none(), "nothing deployed");
    let observer = rig.target.client().await;
    let mut records = observer.subscribe("/topic/deploykit.rollouts", SubscribeOptions::default()).await.unwrap();
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&csrf={ann}&reason=CHG-1234%3A+security+fix")).await);
    assert_eq!(final_view(&follow(a, &id, |_| {}).await)["result"], "ok");
    let m = common::targets::recv(&mut records).await;
    let trusted = std::collections::BTreeMap::from([("web".to_string(), rig.key.public())]);
    assert_eq!(deploykit::deploy::record::verify(&m.headers, &m.body, &trusted).unwrap().record.reason.as_deref(), Some("CHG-1234: security fix"));
    assert!(get(a, &format!("/deploys/{id}"), ANN).await.body.contains("Reason: CHG-1234: security fix"));
    assert!(get(a, "/history", ANN).await.body.contains("CHG-1234: security fix"));
}

/// Issue #16: `require_build = "success"`: a tag whose commit's build is red (or
/// unknown, or still running) is refused with the reason shown, before any server
/// changes; once its build passes, the same deploy goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_red_build_refuses_the_deploy_and_a_green_one_lets_it_through() {
    use deploykit::message::{Build, BuildStatus, Commit, Publisher};
    let rig = Rig::start().await;
    let a = rig.addr();
    let mut config = rig.config.clone();
    config.sites.iter_mut().find(|s| s.name == "www").unwrap().require_build = true;
    rig.web.as_ref().unwrap().reload(config).unwrap();
    let commit = git(&rig.tmp.0.join("www"), &["rev-parse", "v3^{commit}"]);
    let ann = token(a, ANN).await;
    let form = format!("tag=v3&csrf={ann}");
    let deploy = || post(a, "/sites/www/deploy", ANN, &form);

    let unknown = deploy().await;
    assert_eq!(unknown.status, 409, "{}", unknown.body);
    assert!(unknown.body.contains("has no build heard on the bus"), "{}", unknown.body);

    // The push, then its builds: each lands on the journey's stream, so the gate sees it after.
    let client = rig.target.client().await;
    let publisher = Publisher::new(client.clone(), "jenkins");
    let mut stream = sse_stream(a, "/changes/events").await;
    publisher.commit(&Commit { repo: "www".into(), oldrev: "0".repeat(40), newrev: commit.clone(), refname: "refs/heads/master".into(), ..Commit::default() }).await.unwrap();
    updates(&mut stream, 1).await;
    let build = |number, status| Build {
        job: "www-tests".into(),
        number,
        status,
        url: None,
        repo: None,
        branch: None,
        commit: Some(commit.clone()),
        duration_ms: None,
        correlation_id: None,
    };
    publisher.build(&build(4, BuildStatus::Failure)).await.unwrap();
    updates(&mut stream, 1).await;
    let red = deploy().await;
    assert_eq!(red.status, 409, "{}", red.body);
    assert!(red.body.contains(&format!("v3 (commit {}) is not green: www-tests #4 failure", &commit[..10])), "{}", red.body);
    assert!(rig.live("node-a").is_none(), "nothing deployed");
    // The site's tag list shows each tag's build beside it.
    let page = get(a, "/sites/www", ANN).await.body;
    let row = |tag: &str| page.split(&format!("value=\"{tag}\"")).nth(1).and_then(|r| r.split("</tr>").next()).unwrap_or("").to_owned();
    assert!(row("v3").contains("data-build=\"red\"") && row("v3").contains("www-tests #4 failure"), "{page}");
    assert!(row("v2").contains("data-build=\"no build\""), "{page}");

    publisher.build(&build(5, BuildStatus::Started)).await.unwrap();
    updates(&mut stream, 1).await;
    assert!(deploy().await.body.contains("is still building: www-tests #5 started"));
    // An older build heard late does not count over the newer one.
    publisher.build(&build(5, BuildStatus::Success)).await.unwrap();
    publisher.build(&build(3, BuildStatus::Failure)).await.unwrap();
    updates(&mut stream, 2).await;
    let id = deploy_id(&deploy().await);
    assert_eq!(final_view(&follow(a, &id, |_| {}).await)["result"], "ok");
    assert_eq!(rig.live("node-a").as_deref(), Some("v3"));
    let page = get(a, "/sites/www", ANN).await.body;
    assert!(page.contains("data-build=\"green\""), "{page}");
    assert!(page.contains("<b>v3</b> on 3 (node-a, node-b, node-c)") && !page.contains("data-drift"), "one release everywhere, no drift: {page}");
}

/// Issue #16: the health gate. A canary whose health check fails (after its
/// retries) counts as failed, so the rollout stops there; the check's output is
/// on the deploy page in the `health` step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_health_check_on_the_canary_stops_the_rollout_with_its_output() {
    let check = "[sites.www.health]\ncommand = [\"/bin/sh\", \"-c\", \"if [ -e \\\"$DK_RELEASE/../../unhealthy\\\" ]; then echo 'GET /healthz: 503 database down'; exit 1; fi; echo healthy\"]\nretries = 1\ninterval = \"100ms\"\ntimeout = \"10s\"\n";
    let rig = Rig::start_full(Target::embedded().await, "", check).await;
    let a = rig.addr();
    std::fs::write(rig.home("node-a").join("unhealthy"), "").unwrap();
    let ann = token(a, ANN).await;
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v2&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(view["result"], "failed");
    assert_eq!(states(&view), vec![("node-a".into(), "failed".into()), ("node-b".into(), "not-started".into()), ("node-c".into(), "not-started".into())]);
    assert_eq!(view["stopped"], "the canary failed");
    let health = view["nodes"][0]["steps"].as_array().unwrap().iter().find(|s| s["step"] == "health").cloned().expect("a health step");
    assert_eq!((health["state"].as_str(), health["exit_code"].as_i64()), (Some("failed"), Some(1)));
    assert!(health["stdout"].as_str().unwrap().contains("503 database down"), "{health}");
    assert!(health["error"].as_str().unwrap().contains("health check failed after 2 tries"), "{health}");
    for n in ["node-b", "node-c"] {
        assert!(rig.live(n).is_none(), "{n} must not start");
    }
    let page = get(a, &format!("/deploys/{id}"), ANN).await.body;
    assert!(page.contains("data-step=\"health\"") && page.contains("503 database down"), "{page}");
    // node-a is on v2 (linked, unhealthy), the others on nothing: the site page shows the drift.
    let site = get(a, "/sites/www", ANN).await.body;
    assert!(site.contains("data-drift") && site.contains("<b>nothing live</b> on 2 (node-b, node-c); <b>v2</b> on 1 (node-a)"), "{site}");

    // Healthy again: the same deploy passes the gate everywhere.
    std::fs::remove_file(rig.home("node-a").join("unhealthy")).unwrap();
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v2&canary=1&batch=2&csrf={ann}")).await);
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(view["result"], "ok", "{view}");
    let health = view["nodes"][1]["steps"].as_array().unwrap().iter().find(|s| s["step"] == "health").cloned().expect("a health step");
    assert_eq!((health["state"].as_str(), health["stdout"].as_str().map(str::trim)), (Some("ok"), Some("healthy")));
}
