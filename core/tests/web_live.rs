//! Issue #16, "live where": pushes heard on the bus, then deploys through dk-web
//! to three in-process agents; the trusted rollout records put `live` steps on
//! the changes the deployed commit contains (through the push chain), the pages
//! say where each change is live now, a rollback takes it off (the steps stay),
//! forged records add nothing, and the site page shows each server's newest
//! fetched commit beside its live one. Synchronisation is on SSE updates, never on sleeps.

mod common;

use common::fleet::git;
use common::web::*;
use deploykit::deploy::controller::{NodeResult, NodeState, RolloutReport};
use deploykit::deploy::keys::{SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use deploykit::deploy::record::RolloutRecord;
use deploykit::message::{Commit, CommitInfo, DeployAction, FetchResult, Publisher};
use deploykit::stomp::SendOptions;
use serde_json::Value;

/// The commit tag `tag` of the rig's repo names.
fn tag_commit(rig: &Rig, tag: &str) -> String {
    git(&rig.tmp.0.join("www"), &["rev-parse", &format!("{tag}^{{commit}}")])
}

/// A push of `new` on top of `old` to www, listing `new`, under correlation id `id`.
fn push(old: &str, new: &str, id: &str) -> Commit {
    Commit {
        repo: "www".into(),
        oldrev: old.into(),
        newrev: new.into(),
        refname: "refs/heads/master".into(),
        commits: vec![CommitInfo { id: new.into(), author: "Ann".into(), timestamp: "2026-12-04T03:00:00Z".into(), message: format!("release {id}") }],
        correlation_id: Some(id.into()),
        ..Commit::default()
    }
}

/// Reads a stream's updates until `n` of them are `live` steps that `pick` accepts; returns those.
async fn live_steps(lines: &mut Lines, n: usize, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let u = updates(lines, 1).await.remove(0);
        if u["step"]["stage"] == "live" && pick(&u) {
            out.push(u);
        }
    }
    out
}

/// The `<tr>` of `page` that carries `attr` (up to its end).
fn row<'a>(page: &'a str, attr: &str) -> &'a str {
    let start = page.find(attr).unwrap_or_else(|| panic!("{attr} in {page}"));
    let rest = &page[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

/// A record claiming `commit` live on node-a, as a forger would send it.
fn forged_record(commit: &str) -> RolloutRecord {
    let now = deploykit::deploy::agent::releases::now() as i64;
    let node = NodeResult { commit: Some(commit.into()), ..NodeResult::without_reply("node-a", NodeState::Ok, None, 1, 0) };
    RolloutRecord {
        id: RolloutRecord::new_id(),
        controller: "dk-deploy".into(),
        user: "mallory".into(),
        reason: None,
        action: DeployAction::Deploy,
        site: "www".into(),
        tag: Some("v3".into()),
        selection: "all".into(),
        started_at: now,
        finished_at: now,
        result: "ok".into(),
        detail: None,
        report: Some(RolloutReport {
            action: DeployAction::Deploy,
            site: "www".into(),
            tag: Some("v3".into()),
            nodes: vec![node],
            stopped: None,
            request_ids: vec![],
            duration_ms: 1,
            missing: vec![],
            missing_unnamed: 0,
        }),
        approved_by: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployed_push_is_live_where_the_records_say_until_a_rollback_and_the_site_page_shows_fetched_vs_live() {
    let rig = Rig::start().await;
    let a = rig.addr();
    let client = rig.target.client().await;
    let (c1, c2, c3) = (tag_commit(&rig, "v1"), tag_commit(&rig, "v2"), tag_commit(&rig, "v3"));
    let mut list = sse_stream(a, "/changes/events").await;

    // Three pushes, each on top of the one before: the chain v1 ← v2 ← v3.
    let hook = Publisher::new(client.clone(), "git-hook");
    for (old, new, id) in [("0".repeat(40), &c1, "push-1"), (c1.clone(), &c2, "push-2"), (c2.clone(), &c3, "push-3")] {
        hook.commit(&push(&old, new, id)).await.unwrap();
    }
    let pushed = updates(&mut list, 3).await;
    assert!(pushed.iter().all(|u| u["step"]["stage"] == "pushed"), "{pushed:?}");

    // v1 everywhere: push-1 is live on the three servers.
    let ann = token(a, ANN).await;
    let first = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v1&scope=all&csrf={ann}")).await);
    assert!(states(&final_view(&follow(a, &first, |_| {}).await)).iter().all(|(_, s)| s == "ok"));
    let v1 = live_steps(&mut list, 3, |_| true).await;
    assert!(v1.iter().all(|u| u["change"]["id"] == "push-1"), "{v1:?}");

    // Forged records (an untrusted key, no signature at all) claiming v3 on node-a add nothing.
    let mut journey = sse_stream(a, "/changes/push-3/events").await;
    let evil = SecretKey::generate().unwrap();
    let rollouts = rig.config.rollouts_destination.clone();
    forged_record(&c3).publish(&client, &rollouts, &evil).await.unwrap();
    let (mut headers, body) = forged_record(&c3).encode(&evil).unwrap();
    headers.remove(SIGNATURE_HEADER);
    headers.remove(SIGNER_HEADER);
    client.send_with(&rollouts, body, SendOptions { headers, receipt: true, ..SendOptions::default() }).await.unwrap();

    // v3 everywhere: the journey of push-3 gets a live step per server, live.
    let second = deploy_id(&post(a, "/sites/www/deploy", ANN, &format!("tag=v3&scope=all&csrf={ann}")).await);
    assert!(states(&final_view(&follow(a, &second, |_| {}).await)).iter().all(|(_, s)| s == "ok"));
    let steps = live_steps(&mut journey, 3, |_| true).await;
    let mut lines: Vec<&str> = steps.iter().map(|u| u["line"].as_str().unwrap()).collect();
    lines.sort();
    let want: Vec<String> = NODES.iter().map(|n| format!("live on {n} (site www, v3; deploy #{second} by ann via dk-web)")).collect();
    assert_eq!(lines, want);
    let last = &steps[2]["summary"];
    assert_eq!(last["live"].as_array().map(Vec::len), Some(3), "{last}");
    assert!(steps[2]["summary_line"].as_str().unwrap().contains("live on 3 servers"), "{last}");

    let page = get(a, "/changes/push-3", BOB).await.body;
    assert!(page.contains("Live on <b id=\"live-count\">3</b> servers<span id=\"live-where\">: www (node-a, node-b, node-c)</span>"), "{page}");
    assert_eq!(page.matches("data-stage=\"live\"").count(), 3, "the forged records added none: {page}");
    assert!(!page.contains("mallory"), "{page}");
    // push-2 is contained by v3 through the chain.
    let page2 = get(a, "/changes/push-2", BOB).await.body;
    assert!(page2.contains("id=\"live-count\">3</b>"), "{page2}");
    assert_eq!(page2.matches("data-stage=\"live\"").count(), 3, "{page2}");
    let listing = get(a, "/changes", BOB).await.body;
    for id in ["push-1", "push-2", "push-3"] {
        let r = row(&listing, &format!("data-change=\"{id}\""));
        assert!(r.contains("data-live=\"3\"") && r.contains("live on 3"), "{id}: {r}");
    }

    // A rollback to v1: push-3 and push-2 are no longer live anywhere; their steps stay.
    let back = deploy_id(&post(a, "/sites/www/rollback", ANN, &format!("scope=all&csrf={ann}")).await);
    assert!(states(&final_view(&follow(a, &back, |_| {}).await)).iter().all(|(_, s)| s == "ok"));
    // Each server leaves push-3 and push-2 (an `off` step each); push-1 never stopped being live there.
    let mut off = Vec::new();
    while off.len() < 6 {
        let u = updates(&mut list, 1).await.remove(0);
        assert!(!(u["step"]["stage"] == "live" && u["step"]["data"]["action"] == "rollback"), "the rollback brings nothing new: {u}");
        if u["step"]["stage"] == "off" {
            off.push(u);
        }
    }
    assert!(
        off.iter().all(|u| ["push-2", "push-3"].contains(&u["change"]["id"].as_str().unwrap())
            && u["line"].as_str().unwrap().starts_with("no longer live on node-")
            && u["line"].as_str().unwrap().contains("(site www, v1; rollback #")),
        "{off:?}"
    );
    let site = get(a, "/sites/www", BOB).await.body;
    assert!(site.contains("3 servers"), "{site}");
    let page = get(a, "/changes/push-3", BOB).await.body;
    assert!(page.contains("id=\"live-count\">0</b>"), "{page}");
    assert_eq!(page.matches("data-stage=\"live\"").count(), 3, "the history stays: {page}");
    assert!(get(a, "/changes/push-2", BOB).await.body.contains("id=\"live-count\">0</b>"));
    assert!(get(a, "/changes/push-1", BOB).await.body.contains("id=\"live-count\">3</b>"));
    let listing = get(a, "/changes", BOB).await.body;
    assert!(row(&listing, "data-change=\"push-3\"").contains("data-live=\"0\""), "{listing}");

    // The site page: node-a fetched v3 (ahead of its live v1), node-b fetched v1, node-c nothing.
    for (node, head, id) in [("node-a", &c3, "push-3"), ("node-b", &c1, "push-1")] {
        let r = FetchResult {
            repo: "www".into(),
            node: node.into(),
            mode: "normal".into(),
            refname: Some("refs/heads/master".into()),
            old_head: None,
            new_head: Some(head.clone()),
            duration_ms: 20,
            ok: true,
            error: None,
            trigger: "commit".into(),
            correlation_id: Some(id.into()),
        };
        hook.send("/topic/deploykit.fetch", &r).await.unwrap();
    }
    let mut fetched = 0;
    while fetched < 2 {
        fetched += updates(&mut list, 1).await.iter().filter(|u| u["step"]["stage"] == "fetch").count();
    }
    let site = get(a, "/sites/www", BOB).await.body;
    let (ra, rb, rc) = (row(&site, "data-server=\"node-a\""), row(&site, "data-server=\"node-b\""), row(&site, "data-server=\"node-c\""));
    for r in [ra, rb, rc] {
        assert!(r.contains(&format!("<code title=\"{c1}\">{}</code>", &c1[..10])), "the live commit: {r}");
    }
    assert!(ra.contains(&format!("data-fetched=\"{c3}\"")) && ra.contains("data-ahead") && ra.contains("fetched ahead of live"), "{ra}");
    assert!(rb.contains(&format!("data-fetched=\"{c1}\"")) && !rb.contains("data-ahead"), "{rb}");
    assert!(!rc.contains("data-fetched") && !rc.contains("fetched ahead"), "{rc}");
}
