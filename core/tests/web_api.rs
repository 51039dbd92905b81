//! dk-web's JSON API over real HTTP against real dk-web, the embedded broker and
//! three agents: every endpoint with its 200s/202s, 400, 401 (no token, a wrong
//! one, a password), 403 (a site outside the token's sites; a viewer's deploy),
//! 404, 409, 413 and 429; a deploy, a rollback and a stop started by the API and
//! followed to their end on the agents; tokens hashed on disk and re-read on
//! reload; a cross-site browser POST without a token gets 401, never a deploy.
//!
//! Every answer is checked against the OpenAPI document dk-web serves: its
//! status must be documented for the operation and its body must validate
//! against the operation's schema (a small validator of the subset the document
//! uses); every operation of the document is exercised.

mod common;

use common::web::*;
use deploykit::message::{Commit, CommitInfo, Publisher};
use deploykit::web::api::tokens::{self, Sites};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The document and the operations seen (method, path template, status).
struct Api {
    addr: SocketAddr,
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Api {
    /// Calls `method path` (`template` names the document's path) with `token`; checks the answer against the document.
    async fn call(&mut self, method: &str, template: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value, Reply) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let r = http(self.addr, method, &format!("/api/v1{path}"), None, &headers, body).await;
        assert_eq!(r.header("content-type"), Some("application/json"), "{method} {path}: {}", r.head);
        let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", r.body));
        self.check(method, template, r.status, &v);
        self.seen.insert((method.to_owned(), template.to_owned(), r.status));
        (r.status, v, r)
    }

    /// The answer's status is documented for the operation and its body validates.
    fn check(&self, method: &str, template: &str, status: u16, body: &Value) {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let mut resp = &op["responses"][status.to_string()];
        assert!(resp.is_object(), "{method} {template}: status {status} is not documented: {body}");
        if let Some(r) = resp["$ref"].as_str() {
            resp = self.resolve(r);
        }
        let schema = &resp["content"]["application/json"]["schema"];
        if let Err(e) = self.validate(schema, body, "$") {
            panic!("{method} {template} {status}: {e}\n{body:#}");
        }
    }

    fn resolve(&self, r: &str) -> &Value {
        let mut v = &self.doc;
        for part in r.trim_start_matches("#/").split('/') {
            v = &v[part];
        }
        v
    }

    /// The subset of JSON Schema the document uses: $ref, type, nullable, enum, properties,
    /// required, additionalProperties, items, oneOf, minimum, maximum.
    fn validate(&self, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        if let Some(r) = schema["$ref"].as_str() {
            return self.validate(self.resolve(r), v, at);
        }
        if v.is_null() && schema["nullable"] == true {
            return Ok(());
        }
        if let Some(alts) = schema["oneOf"].as_array() {
            let n = alts.iter().filter(|s| self.validate(s, v, at).is_ok()).count();
            return if n == 1 { Ok(()) } else { Err(format!("{at}: {n} of oneOf match")) };
        }
        if let Some(e) = schema["enum"].as_array() {
            if !e.contains(v) {
                return Err(format!("{at}: {v} not in {e:?}"));
            }
        }
        let ok = match schema["type"].as_str() {
            None => true,
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("boolean") => v.is_boolean(),
            Some(t) => return Err(format!("{at}: type {t} unknown to the test")),
        };
        if !ok {
            return Err(format!("{at}: {v} is not a {}", schema["type"]));
        }
        if let (Some(min), Some(n)) = (schema["minimum"].as_i64(), v.as_i64()) {
            if n < min {
                return Err(format!("{at}: {n} < {min}"));
            }
        }
        if let Some(o) = v.as_object() {
            let props = schema["properties"].as_object();
            for req in schema["required"].as_array().into_iter().flatten() {
                if !o.contains_key(req.as_str().unwrap()) {
                    return Err(format!("{at}: {req} missing"));
                }
            }
            for (k, x) in o {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => self.validate(s, x, &format!("{at}.{k}"))?,
                    None if schema["additionalProperties"] == false => return Err(format!("{at}: {k} is not in the schema")),
                    None => {
                        if schema["additionalProperties"].is_object() {
                            self.validate(&schema["additionalProperties"], x, &format!("{at}.{k}"))?;
                        }
                    }
                }
            }
        }
        if let Some(a) = v.as_array() {
            for (i, x) in a.iter().enumerate() {
                self.validate(&schema["items"], x, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    /// Every operation of the document was called with a 2xx answer.
    fn every_operation_succeeded_once(&self) {
        for (path, ops) in self.doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                let m = method.to_uppercase();
                if path == "/openapi.json" {
                    continue;
                }
                assert!(self.seen.iter().any(|(sm, sp, st)| *sm == m && sp == path && (200..300).contains(st)), "{m} {path} never answered 2xx");
            }
        }
    }
}

/// Waits until deploy `id` is over (via the API); returns its status body.
async fn finished(api: &mut Api, id: i64, token: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (s, v, _) = api.call("GET", "/deploys/{id}", &format!("/deploys/{id}"), Some(token), "").await;
        assert_eq!(s, 200, "{v}");
        if v["view"]["finished"] == true {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "deploy {id} not over in time: {v:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn ok_everywhere(v: &Value) {
    assert_eq!(v["view"]["result"], "ok", "{v:#}");
    let nodes: Vec<(String, String)> = states(&v["view"]);
    assert_eq!(nodes.len(), 3, "{v:#}");
    assert!(nodes.iter().all(|(_, s)| s == "ok"), "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_its_refusals_and_real_deploys() {
    let mut rig = Rig::start().await;
    let file = rig.tmp.0.join("web-tokens");
    let ann = tokens::add(&file, "ann-ci", "ann", &Sites::All).unwrap();
    let ann_www = tokens::add(&file, "ann-www", "ann", &Sites::parse("www").unwrap()).unwrap();
    let ann_empty = tokens::add(&file, "ann-empty", "ann", &Sites::parse("empty").unwrap()).unwrap();
    let bob = tokens::add(&file, "bob", "bob", &Sites::All).unwrap();
    let on_disk = std::fs::read_to_string(&file).unwrap();
    for t in [&ann, &ann_www, &ann_empty, &bob] {
        assert!(!on_disk.contains(&t[4..]), "a plain token on disk: {on_disk}");
    }
    assert_eq!(on_disk.matches("sha256:").count(), 4, "{on_disk}");
    rig.config.api_tokens = Some(file.clone());
    rig.restart_web().await;
    let a = rig.addr();

    // The document needs no token; it is what every answer below is checked against.
    let doc = get(a, "/api/v1/openapi.json", None).await;
    assert_eq!((doc.status, doc.header("content-type")), (200, Some("application/json")));
    let mut api = Api { addr: a, doc: serde_json::from_str(&doc.body).unwrap(), seen: BTreeSet::new() };

    // 401: no token, a wrong one, a password, another scheme.
    let (s, v, r) = api.call("GET", "/sites", "/sites", None, "").await;
    assert_eq!(s, 401, "{v}");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"), "{}", r.head);
    assert_eq!(api.call("GET", "/history", "/history", Some("dkt_not-a-token"), "").await.0, 401);
    let basic = get(a, "/api/v1/sites", ANN).await;
    assert_eq!(basic.status, 401, "passwords do not open the API: {}", basic.body);
    assert!(basic.body.contains("only Authorization: Bearer"), "{}", basic.body);
    // Unknown API paths and methods: JSON too.
    let r = http(a, "GET", "/api/v1/nope", None, &[("Authorization", &format!("Bearer {ann}"))], "").await;
    assert_eq!(r.status, 404);
    assert!(r.body.starts_with("{\"error\":"), "{}", r.body);
    let r = http(a, "DELETE", "/api/v1/sites", None, &[("Authorization", &format!("Bearer {ann}"))], "").await;
    assert_eq!(r.status, 405);
    assert!(r.body.starts_with("{\"error\":"), "{}", r.body);

    // Sites: those of the token only.
    let (s, v, _) = api.call("GET", "/sites", "/sites", Some(&ann), "").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["sites"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["empty", "www"], "{v:#}");
    let www = v["sites"].as_array().unwrap().iter().find(|x| x["name"] == "www").unwrap();
    assert_eq!((www["servers"].as_u64(), www["may_deploy"].as_bool()), (Some(3), Some(true)), "{v:#}");
    let (_, v, _) = api.call("GET", "/sites", "/sites", Some(&ann_www), "").await;
    assert_eq!(v["sites"].as_array().unwrap().len(), 1, "{v:#}");
    let (_, v, _) = api.call("GET", "/sites", "/sites", Some(&bob), "").await;
    assert!(v["sites"].as_array().unwrap().iter().all(|x| x["may_deploy"] == false), "{v:#}");

    // One site: servers, tags newest first with build status, locks; 404 and 403.
    let (s, v, _) = api.call("GET", "/sites/{site}", "/sites/www", Some(&ann_www), "").await;
    assert_eq!(s, 200, "{v}");
    let tags: Vec<&str> = v["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tags, ["v3", "v2", "v1"], "{v:#}");
    assert_eq!(v["tags"][0]["servers"], 3);
    assert_eq!(v["tags"][0]["build"]["status"], "unknown");
    assert_eq!(v["servers"].as_array().unwrap().len(), 3);
    assert_eq!(v["defaults"]["batch"], "2");
    assert_eq!(api.call("GET", "/sites/{site}", "/sites/nope", Some(&ann), "").await.0, 404);
    let (s, v, _) = api.call("GET", "/sites/{site}", "/sites/www", Some(&ann_empty), "").await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("ann-empty"), "{v}");
    let (s, v, _) = api.call("GET", "/sites/{site}/servers", "/sites/www/servers", Some(&bob), "").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["servers"].as_array().unwrap().iter().map(|x| x["identity"].as_str().unwrap()).collect();
    assert_eq!(ids, NODES, "{v:#}");
    assert_eq!(api.call("GET", "/sites/{site}/servers", "/sites/www/servers", Some(&ann_empty), "").await.0, 403);
    assert_eq!(api.call("GET", "/sites/{site}/servers", "/sites/nope/servers", Some(&ann), "").await.0, 404);
    let (s, v, _) = api.call("GET", "/sites/{site}/tags", "/sites/www/tags", Some(&ann), "").await;
    assert_eq!((s, v["tags"].as_array().unwrap().len()), (200, 3), "{v:#}");
    assert_eq!(api.call("GET", "/sites/{site}/tags", "/sites/www/tags", Some(&ann_empty), "").await.0, 403);
    assert_eq!(api.call("GET", "/sites/{site}/tags", "/sites/nope/tags", Some(&ann), "").await.0, 404);

    // Changes: a push as the git hook sends it, then its journey; and the refusals.
    let (s, v, _) = api.call("GET", "/changes", "/changes?limit=5", Some(&ann), "").await;
    assert_eq!((s, v["changes"].as_array().unwrap().len()), (200, 0), "{v}");
    let rev = "ab".repeat(20);
    let commit = Commit {
        repo: "www".into(),
        oldrev: "0".repeat(40),
        newrev: rev.clone(),
        refname: "refs/heads/master".into(),
        commits: vec![CommitInfo { id: rev.clone(), author: "Ann".into(), timestamp: "2026-12-04T04:00:00Z".into(), message: "faster basket".into() }],
        correlation_id: Some("api-change-1".into()),
        ..Commit::default()
    };
    Publisher::new(rig.target.client().await, "git-hook").commit(&commit).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, v, _) = api.call("GET", "/changes", "/changes?repo=www", Some(&ann), "").await;
        if v["changes"].as_array().unwrap().len() == 1 {
            assert_eq!(v["changes"][0]["change"]["id"], "api-change-1", "{v:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the push never arrived: {v:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, v, _) = api.call("GET", "/changes/{id}", &format!("/changes/{}", &rev[..8]), Some(&ann_empty), "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["change"]["newrev"].as_str(), v["steps"][0]["stage"].as_str()), (Some(rev.as_str()), Some("pushed")), "{v:#}");
    assert_eq!(api.call("GET", "/changes", "/changes?limit=0", Some(&ann), "").await.0, 400);
    assert_eq!(api.call("GET", "/changes/{id}", "/changes/deadbeef", Some(&ann), "").await.0, 404);

    // Deploys refused: bad bodies (the form's own checks), scope, a viewer, an unknown site.
    let deploys = "/sites/{site}/deploys";
    for (body, want) in [
        ("{", "body:"),
        ("[]", "body:"),
        ("{\"tag\":\"v1\",\"colour\":\"red\"}", "unknown field"),
        ("{}", "tag:"),
        ("{\"tag\":\"../etc\"}", "tag:"),
        ("{\"tag\":\"v1\",\"canary\":-1}", "body:"),
        ("{\"tag\":\"v1\",\"canary\":5000}", "canary"),
        ("{\"tag\":\"v1\",\"batch\":0}", "batch"),
        ("{\"tag\":\"v1\",\"servers\":[\"node-a\"],\"filter\":\"node-b\"}", "not both"),
        ("{\"tag\":\"v1\",\"servers\":[]}", "servers:"),
        ("{\"tag\":\"v1\",\"servers\":[\"node-z\"]}", "node-z"),
        ("{\"tag\":\"v1\",\"filter\":\"/(/\"}", "filter:"),
    ] {
        let (s, v, _) = api.call("POST", deploys, "/sites/www/deploys", Some(&ann), body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let big = format!("{{\"tag\":\"v1\",\"reason\":\"{}\"}}", "x".repeat(70 * 1024));
    assert_eq!(api.call("POST", deploys, "/sites/www/deploys", Some(&ann), &big).await.0, 413);
    let (s, v, _) = api.call("POST", deploys, "/sites/www/deploys", Some(&bob), "{\"tag\":\"v1\"}").await;
    assert_eq!(s, 403, "a viewer's token: {v}");
    assert!(v["error"].as_str().unwrap().contains("bob may not deploy"), "{v}");
    assert_eq!(api.call("POST", deploys, "/sites/www/deploys", Some(&ann_empty), "{\"tag\":\"v1\"}").await.0, 403);
    assert_eq!(api.call("POST", deploys, "/sites/nope/deploys", Some(&ann), "{\"tag\":\"v1\"}").await.0, 404);
    assert_eq!(api.call("POST", deploys, "/sites/www/deploys", None, "{\"tag\":\"v1\"}").await.0, 401);
    // A cross-site form post from a browser page (its Origin, no token): 401, nothing starts.
    let r = http(a, "POST", "/api/v1/sites/www/deploys", ANN, &[("Origin", "http://evil.example")], "{\"tag\":\"v1\"}").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let (_, v, _) = api.call("GET", "/history", "/history", Some(&ann), "").await;
    assert_eq!(v["deploys"].as_array().unwrap().len(), 0, "nothing started: {v:#}");

    // A real deploy through the API, to all three agents.
    let (s, v, r) = api.call("POST", deploys, "/sites/www/deploys", Some(&ann), "{\"tag\":\"v1\",\"canary\":1,\"batch\":2,\"reason\":\"API test\"}").await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_i64().unwrap();
    assert_eq!((v["status"].as_str(), v["url"].as_str()), (Some("running"), Some(format!("/api/v1/deploys/{id}").as_str())));
    assert_eq!(r.header("location"), Some(format!("/api/v1/deploys/{id}").as_str()));
    let done = finished(&mut api, id, &ann_www).await;
    ok_everywhere(&done);
    assert_eq!((done["deploy"]["user"].as_str(), done["deploy"]["reason"].as_str(), done["live"].as_bool()), (Some("ann"), Some("API test"), Some(false)));
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"), "{n}");
    }
    // Picked servers, a batch given as text; then a rollback of them.
    let (s, v, _) =
        api.call("POST", deploys, "/sites/www/deploys", Some(&ann), "{\"tag\":\"v2\",\"servers\":[\"node-a\",\"node-b\",\"node-c\"],\"batch\":\"50%\",\"canary\":0}").await;
    assert_eq!(s, 202, "{v}");
    ok_everywhere(&finished(&mut api, v["id"].as_i64().unwrap(), &ann).await);
    assert_eq!(rig.live("node-b").as_deref(), Some("v2"));
    let (s, v, _) = api.call("POST", "/sites/{site}/rollbacks", "/sites/www/rollbacks", Some(&ann), "").await;
    assert_eq!(s, 202, "{v}");
    let rb = finished(&mut api, v["id"].as_i64().unwrap(), &ann).await;
    ok_everywhere(&rb);
    assert_eq!(rb["deploy"]["action"], "rollback");
    for n in NODES {
        assert_eq!(rig.live(n).as_deref(), Some("v1"), "{n} rolled back");
    }
    assert_eq!(api.call("POST", "/sites/{site}/rollbacks", "/sites/www/rollbacks", Some(&bob), "{}").await.0, 403);
    assert_eq!(api.call("POST", "/sites/{site}/rollbacks", "/sites/www/rollbacks", Some(&ann), "{\"colour\":1}").await.0, 400);

    // Deploy status refusals; stopping one that is over: 409.
    assert_eq!(api.call("GET", "/deploys/{id}", "/deploys/999", Some(&ann), "").await.0, 404);
    assert_eq!(api.call("GET", "/deploys/{id}", "/deploys/x", Some(&ann), "").await.0, 404);
    assert_eq!(api.call("GET", "/deploys/{id}", &format!("/deploys/{id}"), Some(&ann_empty), "").await.0, 403);
    let (s, v, _) = api.call("POST", "/deploys/{id}/stop", &format!("/deploys/{id}/stop"), Some(&ann), "").await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(api.call("POST", "/deploys/{id}/stop", "/deploys/999/stop", Some(&ann), "").await.0, 404);
    assert_eq!(api.call("POST", "/deploys/{id}/stop", &format!("/deploys/{id}/stop"), Some(&bob), "").await.0, 403);
    assert_eq!(api.call("POST", "/deploys/{id}/stop", &format!("/deploys/{id}/stop"), Some(&ann_empty), "").await.0, 403);

    // Stopping a running deploy: the canary's hook waits for the test's go.
    rig.hook("node-a", "pre-deploy", "i=0; while [ ! -e ../go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done");
    let (s, v, _) = api.call("POST", deploys, "/sites/www/deploys", Some(&ann), "{\"tag\":\"v3\",\"servers\":[\"node-a\",\"node-b\",\"node-c\"],\"canary\":1,\"batch\":1}").await;
    assert_eq!(s, 202, "{v}");
    let sid = v["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, v, _) = api.call("GET", "/deploys/{id}", &format!("/deploys/{sid}"), Some(&ann), "").await;
        if v["view"]["nodes"].as_array().is_some_and(|n| n.iter().any(|x| x["node"] == "node-a" && x["state"] == "running")) {
            assert_eq!(v["live"], true, "{v:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "canary never ran: {v:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, v, _) = api.call("POST", "/deploys/{id}/stop", &format!("/deploys/{sid}/stop"), Some(&ann), "").await;
    assert_eq!((s, v["status"].as_str()), (202, Some("stopping")), "{v}");
    std::fs::write(rig.home("node-a").join("go"), "").unwrap();
    let stopped = finished(&mut api, sid, &ann).await;
    assert_eq!(stopped["view"]["result"], "stopped", "{stopped:#}");
    assert_eq!(rig.live("node-b").as_deref(), Some("v1"), "no further batch");

    // History: newest first, only the token's sites; the same rows as the History page.
    let (s, v, _) = api.call("GET", "/history", "/history", Some(&ann), "").await;
    assert_eq!(s, 200);
    let rows = v["deploys"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{v:#}");
    assert_eq!((rows[0]["id"].as_i64(), rows[0]["result"].as_str()), (Some(sid), Some("stopped")));
    assert_eq!((rows[3]["reason"].as_str(), rows[3]["controller"].as_str()), (Some("API test"), Some("dk-web")));
    let page = get(a, "/history", BOB).await;
    for r in rows {
        assert!(page.body.contains(&format!("data-deploy=\"{}\" data-result=\"{}\"", r["id"], r["result"].as_str().unwrap())), "{r}");
    }
    let (_, v, _) = api.call("GET", "/history", "/history?site=www&limit=2", Some(&ann_www), "").await;
    assert_eq!(v["deploys"].as_array().unwrap().len(), 2);
    let (_, v, _) = api.call("GET", "/history", "/history", Some(&ann_empty), "").await;
    assert_eq!(v["deploys"].as_array().unwrap().len(), 0, "www's rows are not the empty-only token's: {v:#}");
    assert_eq!(api.call("GET", "/history", "/history?site=www", Some(&ann_empty), "").await.0, 403);
    assert_eq!(api.call("GET", "/history", "/history?limit=abc", Some(&ann), "").await.0, 400);

    // Revoked on disk and re-read on reload (what SIGHUP does): the old token is refused, a new one works.
    tokens::revoke(&file, "bob").unwrap();
    let carl = tokens::add(&file, "carl", "carl", &Sites::All).unwrap();
    rig.web.as_ref().unwrap().reload(rig.config.clone()).unwrap();
    assert_eq!(api.call("GET", "/history", "/history", Some(&bob), "").await.0, 401);
    assert_eq!(api.call("GET", "/history", "/history", Some(&carl), "").await.0, 200);

    api.every_operation_succeeded_once();

    // Wrong tokens count as failed logins: the address then gets 429 (last: it locks this address out).
    for _ in 0..5 {
        api.call("GET", "/sites", "/sites", Some("dkt_guess"), "").await;
    }
    let (s, _, r) = api.call("GET", "/sites", "/sites", Some(&ann), "").await;
    assert_eq!(s, 429);
    assert!(r.header("retry-after").is_some(), "{}", r.head);
}
