//! Issue #16's approvals, through real dk-web, broker and agents: a site with
//! `approvers` records a deploy as waiting and sends nothing; the requester
//! cannot approve it; a listed second user approves it, and only then is the
//! request signed and sent (the rollout runs, History and the rollout record
//! name the approver). A second approval finds nothing to start; rejects,
//! cancels and lapses end a waiting deploy without sending anything; a
//! waiting deploy survives a dk-web restart. A waiting deploy's open page hears
//! the decision on its event stream (`decided`), a lapse too, with no page view.

mod common;

use common::web::*;
use deploykit::stomp::SubscribeOptions;
use std::net::SocketAddr;
use std::time::Duration;

/// Deploy `id`'s event stream as ann's waiting page opens it, past its first snapshot.
async fn watch_waiting(a: SocketAddr, id: &str) -> Lines {
    let mut lines = open_stream(a, &format!("/deploys/{id}/events"), ANN).await;
    let first = updates(&mut lines, 1).await;
    assert_eq!((first[0]["kind"].as_str(), first[0]["view"]["result"].as_str()), (Some("snapshot"), Some("awaiting approval")), "{first:?}");
    // A client that waits for `finished` (as API scripts do) must not take a waiting deploy for a done one.
    assert_eq!(first[0]["view"]["finished"], false, "{first:?}");
    lines
}

/// The next update on a waiting page's stream is `decided`.
async fn decided(lines: &mut Lines) {
    let next = updates(lines, 1).await;
    assert_eq!(next[0]["kind"], "decided", "{next:?}");
}

/// The rig with bob (who only views www) as its approver.
async fn rig(expiry: Duration) -> Rig {
    let mut rig = Rig::start().await;
    let www = rig.config.sites.iter_mut().find(|s| s.name == "www").unwrap();
    www.approvers = vec!["bob".into()];
    www.approval_expiry = expiry;
    rig.restart_web().await;
    rig
}

/// A deploy ann asks for; its id.
async fn ask(rig: &Rig, tag: &str) -> String {
    let a = rig.addr();
    let ann = token(a, ANN).await;
    let r = post(a, "/sites/www/deploy", ANN, &format!("tag={tag}&canary=1&batch=2&reason=OPS-7&csrf={ann}")).await;
    let id = deploy_id(&r);
    let page = get(a, &format!("/deploys/{id}"), ANN).await;
    assert!(page.body.contains("awaiting approval") && page.body.contains("id=\"approval\""), "{}", page.body);
    id
}

/// Publishes a marker on the deploy topic and reads up to it: no deploy or rollback
/// request came before it (discovery, which the pages use, may).
async fn nothing_sent(rig: &Rig, deploys: &mut deploykit::stomp::Subscription) {
    let c = rig.target.client().await;
    c.send(&rig.config.deploy_destination, "marker").await.unwrap();
    loop {
        let m = common::targets::recv(deploys).await;
        if m.text() == Some("marker") {
            return;
        }
        let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or_default();
        assert!(!matches!(v["action"].as_str(), Some("deploy" | "rollback")), "dk-web sent a deploy request before any approval: {v:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_by_a_second_user_starts_the_deploy_and_only_then_is_it_sent() {
    let rig = rig(Duration::from_secs(3600)).await;
    let a = rig.addr();
    let observer = rig.target.client().await;
    let mut deploys = observer.subscribe(&rig.config.deploy_destination, SubscribeOptions::default()).await.unwrap();
    let mut records = observer.subscribe("/topic/deploykit.rollouts", SubscribeOptions::default()).await.unwrap();

    let site = get(a, "/sites/www", ANN).await;
    assert!(site.body.contains("Ask to deploy") && site.body.contains("id=\"needs-approval\""), "{}", site.body);
    let id = ask(&rig, "v2").await;
    nothing_sent(&rig, &mut deploys).await;
    assert_eq!(rig.live("node-a"), None);

    // The requester sees no approve button and may not approve.
    let page = get(a, &format!("/deploys/{id}"), ANN).await;
    assert!(!page.body.contains("id=\"approve\"") && page.body.contains("Cancel this request"), "{}", page.body);
    let ann = token(a, ANN).await;
    let own = post(a, &format!("/deploys/{id}/approve"), ANN, &format!("csrf={ann}")).await;
    assert_eq!(own.status, 403, "{}", own.body);
    assert!(own.body.contains("a second person must approve it"), "{}", own.body);
    // bob's approval needs his CSRF token, and his form posts one.
    let forged = post(a, &format!("/deploys/{id}/approve"), BOB, &format!("csrf={ann}")).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let page = get(a, &format!("/deploys/{id}"), BOB).await;
    assert!(page.body.contains("id=\"approve\""), "{}", page.body);
    let bob = csrf_of(&page.body);
    let mut watching = watch_waiting(a, &id).await;
    assert!(page.body.contains("data-waiting"), "the waiting page follows its stream: {}", page.body);

    let ok = post(a, &format!("/deploys/{id}/approve"), BOB, &format!("csrf={bob}")).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    decided(&mut watching).await;
    let view = final_view(&follow(a, &id, |_| {}).await);
    assert_eq!(view["result"], "ok", "{view:#}");
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v2"), "{n}");
    }
    let page = get(a, &format!("/deploys/{id}"), ANN).await;
    assert!(page.body.contains("id=\"approved-by\"") && page.body.contains("<b>bob</b>"), "{}", page.body);
    let record = common::targets::recv(&mut records).await;
    let body: serde_json::Value = serde_json::from_slice(&record.body).unwrap();
    assert_eq!((body["user"].as_str(), body["approved_by"].as_str(), body["reason"].as_str()), (Some("ann"), Some("bob"), Some("OPS-7")), "{body:#}");

    // Approving again starts nothing.
    let again = post(a, &format!("/deploys/{id}/approve"), BOB, &format!("csrf={bob}")).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("not waiting for an approval"), "{}", again.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_cancelled_and_lapsed_requests_send_nothing_and_a_wait_survives_a_restart() {
    let mut rig = rig(Duration::from_secs(3600)).await;
    let a = rig.addr();
    let observer = rig.target.client().await;
    let mut deploys = observer.subscribe(&rig.config.deploy_destination, SubscribeOptions::default()).await.unwrap();

    // bob rejects one; ann cancels another; ann may not reject bob's... (ann is the requester: cancel).
    let rejected = ask(&rig, "v2").await;
    let page = get(a, &format!("/deploys/{rejected}"), BOB).await;
    let bob = csrf_of(&page.body);
    let mut watching = watch_waiting(a, &rejected).await;
    let r = post(a, &format!("/deploys/{rejected}/reject"), BOB, &format!("csrf={bob}")).await;
    assert_eq!(r.status, 303, "{}", r.body);
    decided(&mut watching).await;
    let page = get(a, &format!("/deploys/{rejected}"), ANN).await;
    assert!(page.body.contains("rejected by bob") && !page.body.contains("id=\"approval\""), "{}", page.body);
    let late = post(a, &format!("/deploys/{rejected}/approve"), BOB, &format!("csrf={bob}")).await;
    assert_eq!(late.status, 409, "{}", late.body);

    let cancelled = ask(&rig, "v3").await;
    let ann = token(a, ANN).await;
    let r = post(a, &format!("/deploys/{cancelled}/reject"), ANN, &format!("csrf={ann}")).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(get(a, &format!("/deploys/{cancelled}"), ANN).await.body.contains("cancelled by ann"));
    nothing_sent(&rig, &mut deploys).await;

    // A waiting deploy is kept in the history file: after a restart bob approves it.
    let kept = ask(&rig, "v1").await;
    rig.restart_web().await;
    let a = rig.addr();
    let page = get(a, &format!("/deploys/{kept}"), BOB).await;
    assert!(page.body.contains("id=\"approve\""), "{}", page.body);
    let bob = csrf_of(&page.body);
    assert_eq!(post(a, &format!("/deploys/{kept}/approve"), BOB, &format!("csrf={bob}")).await.status, 303);
    assert_eq!(final_view(&follow(a, &kept, |_| {}).await)["result"], "ok");
    assert_eq!(rig.live("node-c").as_deref(), Some("v1"));

    // A request lapses while its page is open: the stream applies the lapse and says so.
    let www = rig.config.sites.iter_mut().find(|s| s.name == "www").unwrap();
    www.approval_expiry = Duration::from_secs(6);
    rig.restart_web().await;
    let a = rig.addr();
    let lapsing = ask(&rig, "v3").await;
    let mut watching = watch_waiting(a, &lapsing).await;
    decided(&mut watching).await;
    let page = get(a, &format!("/deploys/{lapsing}"), ANN).await;
    assert!(page.body.contains("no approval within 6s") && !page.body.contains("data-waiting"), "{}", page.body);

    // With no time to wait, a request lapses: it is shown expired and cannot be approved.
    let www = rig.config.sites.iter_mut().find(|s| s.name == "www").unwrap();
    www.approval_expiry = Duration::ZERO;
    let tokens_file = rig.tmp.0.join("web-tokens");
    let api_token = deploykit::web::api::tokens::add(&tokens_file, "ann-ci", "ann", &deploykit::web::api::tokens::Sites::All).unwrap();
    rig.config.api_tokens = Some(tokens_file);
    rig.restart_web().await;
    let a = rig.addr();
    // The API sees a lapse without any page being looked at first.
    let unseen = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v2&reason=OPS-9&csrf={}", token(a, ANN).await)).await);
    let auth = format!("Bearer {api_token}");
    let r = http(a, "GET", &format!("/api/v1/deploys/{unseen}"), None, &[("Authorization", auth.as_str())], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["deploy"]["result"], "expired", "{v:#}");
    let lapsed = ask_expired(&rig).await;
    let bob = token(a, BOB).await;
    let r = post(a, &format!("/deploys/{lapsed}/approve"), BOB, &format!("csrf={bob}")).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let history = get(a, "/history", ANN).await;
    assert!(history.body.contains("expired") && history.body.contains("rejected") && history.body.contains("cancelled"), "{}", history.body);
}

/// A request on a site whose approvals lapse at once: its page shows it expired.
async fn ask_expired(rig: &Rig) -> String {
    let a = rig.addr();
    let ann = token(a, ANN).await;
    let id = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v2&reason=OPS-8&csrf={ann}")).await);
    let page = get(a, &format!("/deploys/{id}"), ANN).await;
    assert!(page.body.contains("no approval within") && !page.body.contains("id=\"approval\""), "{}", page.body);
    id
}
