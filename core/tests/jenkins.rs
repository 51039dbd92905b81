//! dk-jenkins against a stand-in for Jenkins's remote-trigger API (an axum
//! server in this file: crumb issuer, build tokens, basic auth, `build` /
//! `buildWithParameters`, 201 with `Location`, 403 without a crumb, 5xx on
//! demand) and a real broker (embedded; RabbitMQ when DK_TEST_RABBITMQ is set).
//! Synchronisation is on the daemon's events, the stand-in's request channel
//! and event lines on the bus, each with a bounded wait; never on sleeps.

mod common;

use axum::body::Bytes as Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use common::targets::{Kind, Target};
use deploykit::jenkins::config::JenkinsConfig;
use deploykit::jenkins::daemon::{self, DaemonHandle, JenkinsEvent};
use deploykit::jenkins::route::Skip;
use deploykit::message::{decode, Commit, Destinations, Message, Publisher, Source, SvnInfo, Wire};
use deploykit::stomp::{Client, SubscribeOptions, Subscription};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const WAIT: Duration = Duration::from_secs(20);
const CRUMB: &str = "crumb-7f3a";
const SESSION: &str = "JSESSIONID.dk=s1";

// ------------------------------------------------------------------ the stand-in

/// One POST the stand-in accepted or refused.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    form: HashMap<String, String>,
    status: u16,
}

/// How the stand-in behaves.
#[derive(Default)]
struct Jenkins {
    /// job name → build token
    tokens: HashMap<String, String>,
    /// user → API token
    users: HashMap<String, String>,
    /// Basic-auth requests must carry the crumb (and its session cookie).
    crumb_required: bool,
    /// Answer 503 to this many triggers first.
    fail_first: AtomicU32,
    queue: AtomicU32,
    seen: Mutex<Vec<Seen>>,
    crumbs_issued: AtomicU32,
    tx: Option<mpsc::UnboundedSender<Seen>>,
    base: Mutex<String>,
}

fn basic_user(j: &Jenkins, headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let raw = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).ok()?).ok()?;
    let (user, token) = raw.split_once(':')?;
    (j.users.get(user).map(String::as_str) == Some(token)).then(|| user.to_owned())
}

async fn crumb_issuer(State(j): State<Arc<Jenkins>>, headers: HeaderMap) -> Response {
    if basic_user(&j, &headers).is_none() {
        return (StatusCode::FORBIDDEN, "Authentication required").into_response();
    }
    j.crumbs_issued.fetch_add(1, Ordering::SeqCst);
    let body = format!(r#"{{"_class":"hudson.security.csrf.DefaultCrumbIssuer","crumb":"{CRUMB}","crumbRequestField":"Jenkins-Crumb"}}"#);
    ([(header::SET_COOKIE, format!("{SESSION}; Path=/; HttpOnly")), (header::CONTENT_TYPE, "application/json".into())], body).into_response()
}

/// `/job/a/job/b%20c/build` → (`a/b c`, `build`).
fn job_of(path: &str) -> Option<(String, String)> {
    let path = path.strip_prefix("/ci/")?;
    let mut parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let action = parts.pop()?.to_owned();
    if !parts.len().is_multiple_of(2) || parts.is_empty() {
        return None;
    }
    let names: Option<Vec<String>> = parts.chunks(2).map(|c| (c[0] == "job").then(|| percent_encoding::percent_decode_str(c[1]).decode_utf8_lossy().into_owned())).collect();
    Some((names?.join("/"), action))
}

async fn trigger(State(j): State<Arc<Jenkins>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let path = uri.path().to_owned();
    let mut form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    form.extend(url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned());
    let answer = (|| {
        let Some((job, action)) = job_of(&path) else { return (StatusCode::NOT_FOUND, "Not found".to_owned()) };
        if method != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, "POST required".into());
        }
        if action != "build" && action != "buildWithParameters" {
            return (StatusCode::NOT_FOUND, "Not found".into());
        }
        let by_token = form.get("token").is_some_and(|t| j.tokens.get(&job) == Some(t));
        let by_user = basic_user(&j, &headers).is_some();
        if !by_token && !by_user {
            return (StatusCode::FORBIDDEN, "Authentication required: bad token".into());
        }
        if by_user && !by_token && j.crumb_required {
            let crumb_ok = headers.get("Jenkins-Crumb").and_then(|v| v.to_str().ok()) == Some(CRUMB);
            let cookie_ok = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) == Some(SESSION);
            if !(crumb_ok && cookie_ok) {
                return (StatusCode::FORBIDDEN, "HTTP ERROR 403 No valid crumb was included in the request".into());
            }
        }
        if j.fail_first.load(Ordering::SeqCst) > 0 {
            j.fail_first.fetch_sub(1, Ordering::SeqCst);
            return (StatusCode::SERVICE_UNAVAILABLE, "Jenkins is restarting".into());
        }
        (StatusCode::CREATED, String::new())
    })();
    let (status, text) = answer;
    let seen = Seen { path, form, status: status.as_u16() };
    j.seen.lock().unwrap().push(seen.clone());
    if let Some(tx) = &j.tx {
        let _ = tx.send(seen);
    }
    if status == StatusCode::CREATED {
        let n = j.queue.fetch_add(1, Ordering::SeqCst) + 1;
        let location = format!("{}queue/item/{n}/", j.base.lock().unwrap());
        return (status, [(header::LOCATION, location)], text).into_response();
    }
    (status, text).into_response()
}

/// Starts the stand-in; returns its base URL, state and the channel of POSTs.
async fn stand_in(mut j: Jenkins) -> (String, Arc<Jenkins>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    j.tx = Some(tx);
    let j = Arc::new(j);
    let app = Router::new().route("/ci/crumbIssuer/api/json", get(crumb_issuer)).fallback(trigger).with_state(j.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/ci/", listener.local_addr().unwrap());
    *j.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, j, rx)
}

fn strip_ci(seen: &Seen) -> &str {
    seen.path.strip_prefix("/ci").unwrap_or(&seen.path)
}

// ------------------------------------------------------------------ helpers

struct Rig {
    client: Client,
    topics: (String, String),
    handle: Option<DaemonHandle>,
    events: broadcast::Receiver<JenkinsEvent>,
    lines: Subscription,
    _target: Target,
}

fn config_text(base: &str, commits: &str, events: &str, extra: &str, repos: &str) -> String {
    format!("commits_topic = \"{commits}\"\nevents_topic = \"{events}\"\n{extra}\n[jenkins]\nurl = \"{base}\"\nretry_delay = \"20ms\"\n{repos}")
}

/// Splits `extra` lines that belong to `[jenkins]` (after the table header) from top-level ones.
async fn rig(target: Target, base: &str, top: &str, jenkins: &str, repos: &str) -> Rig {
    let client = target.client().await;
    let commits = target.dest("topic");
    let events = target.dest("topic");
    let text = config_text(base, &commits, &events, top, &format!("{jenkins}\n{repos}"));
    let config = JenkinsConfig::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let lines = client.subscribe(&events, SubscribeOptions::default()).await.unwrap();
    let handle = daemon::start(config, client.clone()).await.expect("daemon starts");
    let events_rx = handle.subscribe();
    Rig { client, topics: (commits, events), handle: Some(handle), events: events_rx, lines, _target: target }
}

impl Rig {
    async fn push(&self, c: &Commit) {
        let p = Publisher::new(self.client.clone(), "git-hook").destinations(Destinations {
            commits: self.topics.0.clone(),
            events: self.topics.1.clone() + ".hooks",
            ..Destinations::default()
        });
        p.commit(c).await.expect("commit published");
    }

    async fn next_event(&mut self, pred: impl Fn(&JenkinsEvent) -> bool) -> JenkinsEvent {
        let fut = async {
            loop {
                match self.events.recv().await {
                    Ok(ev) if pred(&ev) => return ev,
                    Ok(_) => {}
                    Err(e) => panic!("daemon events: {e}"),
                }
            }
        };
        tokio::time::timeout(WAIT, fut).await.expect("the awaited daemon event within 20 s")
    }

    /// The next event line (text) on the events topic.
    async fn line(&mut self) -> String {
        let m = tokio::time::timeout(WAIT, self.lines.recv()).await.expect("an event line within 20 s").expect("subscription open");
        match decode(m.destination(), &m.headers, &m.body).expect("decodable event line") {
            Message::Event(e) => {
                assert_eq!(e.source, "jenkins");
                e.text
            }
            other => panic!("not an event line: {other:?}"),
        }
    }

    async fn shutdown(&mut self) {
        tokio::time::timeout(WAIT, self.handle.take().unwrap().shutdown()).await.expect("shutdown within 20 s");
    }
}

fn push(repo: &str, refname: &str, n: u8) -> Commit {
    Commit { repo: repo.into(), oldrev: "1".repeat(40), newrev: format!("{n:02x}").repeat(20), refname: refname.into(), ..Commit::default() }
}

async fn recv_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a request to the stand-in within 20 s").expect("stand-in alive")
}

// ------------------------------------------------------------------ tests

async fn token_trigger_with_parameters(target: Target) {
    let dir = std::env::temp_dir().join(format!("dk-jenkins-test-{}-{}", std::process::id(), fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("site.token");
    std::fs::write(&token_file, "s3cret tok&en\n").unwrap();
    let (base, j, mut seen) = stand_in(Jenkins { tokens: [("web/site build".to_owned(), "s3cret tok&en".to_owned())].into(), ..Jenkins::default() }).await;
    let repos = format!("[[repos.site.jobs]]\njob = \"web/site%20build\"\ntoken_file = \"{}\"\nparameters = true\n", token_file.display());
    let mut r = rig(target, &base, "quiet_period = \"100ms\"", "", &repos).await;
    let c = push("site", "refs/heads/master", 0xab);
    r.push(&c).await;
    let s = recv_seen(&mut seen).await;
    assert_eq!(strip_ci(&s), "/job/web/job/site%20build/buildWithParameters");
    assert_eq!(s.status, 201);
    assert_eq!(s.form.get("token").map(String::as_str), Some("s3cret tok&en"));
    assert_eq!(s.form.get("REPO").map(String::as_str), Some("site"));
    assert_eq!(s.form.get("REFNAME").map(String::as_str), Some("refs/heads/master"));
    assert_eq!(s.form.get("NEWREV"), Some(&c.newrev));
    let line = r.line().await;
    assert_eq!(line, format!("triggered web/site build for [site] refs/heads/master {}: {base}queue/item/1/", c.newrev));
    assert!(!line.contains("s3cret"));
    r.shutdown().await;
    assert_eq!(j.seen.lock().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn token_trigger_with_parameters_embedded() {
    token_trigger_with_parameters(Target::embedded().await).await;
}

#[tokio::test]
async fn token_trigger_with_parameters_rabbitmq() {
    if let Some(t) = Target::real(Kind::RabbitMq) {
        token_trigger_with_parameters(t).await;
    }
}

#[tokio::test]
async fn basic_auth_fetches_the_crumb_when_jenkins_asks() {
    std::env::set_var("DK_TEST_JENKINS_API_TOKEN_CRUMB", "api-tok");
    let (base, j, mut seen) = stand_in(Jenkins { users: [("dk".to_owned(), "api-tok".to_owned())].into(), crumb_required: true, ..Jenkins::default() }).await;
    let jenkins = "user = \"dk\"\napi_token_env = \"DK_TEST_JENKINS_API_TOKEN_CRUMB\"";
    let mut r = rig(Target::embedded().await, &base, "quiet_period = \"50ms\"", jenkins, "[[repos.site.jobs]]\njob = \"a/b/c\"\n").await;
    r.push(&push("site", "refs/heads/master", 1)).await;
    let first = recv_seen(&mut seen).await;
    assert_eq!((strip_ci(&first), first.status), ("/job/a/job/b/job/c/build", 403), "without a crumb Jenkins refuses");
    let second = recv_seen(&mut seen).await;
    assert_eq!(second.status, 201, "with the crumb and its session cookie it accepts");
    match r.next_event(|e| matches!(e, JenkinsEvent::Triggered { .. } | JenkinsEvent::Failed { .. })).await {
        JenkinsEvent::Triggered { job, attempts, location, .. } => {
            assert_eq!((job.as_str(), attempts), ("a/b/c", 1));
            assert_eq!(location, Some(format!("{base}queue/item/1/")));
        }
        other => panic!("{other:?}"),
    }
    // The crumb is kept: the next trigger needs no new one.
    r.push(&push("site", "refs/heads/master", 2)).await;
    assert_eq!(recv_seen(&mut seen).await.status, 201);
    assert_eq!(j.crumbs_issued.load(Ordering::SeqCst), 1);
    r.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_fails_without_retry_and_says_so_on_the_bus() {
    let (base, j, _seen) = stand_in(Jenkins { tokens: [("site".to_owned(), "right".to_owned())].into(), ..Jenkins::default() }).await;
    std::env::set_var("DK_TEST_JENKINS_WRONG_TOKEN", "wrong");
    let mut r =
        rig(Target::embedded().await, &base, "quiet_period = \"50ms\"", "retries = 5", "[[repos.site.jobs]]\njob = \"site\"\ntoken_env = \"DK_TEST_JENKINS_WRONG_TOKEN\"\n").await;
    r.push(&push("site", "refs/heads/master", 3)).await;
    let line = r.line().await;
    assert!(line.starts_with("problem: triggering site for [site] refs/heads/master") && line.contains("403"), "{line}");
    assert!(!line.contains("wrong"), "the token never appears: {line}");
    r.shutdown().await;
    assert_eq!(j.seen.lock().unwrap().len(), 1, "a 403 is not retried");
}

#[tokio::test]
async fn a_burst_for_one_job_triggers_it_once() {
    let (base, j, _seen) = stand_in(Jenkins { tokens: [("site".to_owned(), "t".to_owned()), ("docs".to_owned(), "t".to_owned())].into(), ..Jenkins::default() }).await;
    std::env::set_var("DK_TEST_JENKINS_BURST_TOKEN", "t");
    let repos = "[[repos.site.jobs]]\njob = \"site\"\ntoken_env = \"DK_TEST_JENKINS_BURST_TOKEN\"\nparameters = true\n[[repos.docs.jobs]]\njob = \"docs\"\ntoken_env = \"DK_TEST_JENKINS_BURST_TOKEN\"\n";
    // A long quiet period: the burst certainly falls inside it, even on a loaded machine.
    let mut r = rig(Target::embedded().await, &base, "quiet_period = \"5s\"", "", repos).await;
    for n in 1..=6 {
        r.push(&push("site", "refs/heads/master", n)).await;
    }
    r.push(&push("docs", "refs/heads/master", 9)).await;
    let mut triggered = HashMap::new();
    while triggered.len() < 2 {
        if let JenkinsEvent::Triggered { job, commits, .. } = r.next_event(|e| matches!(e, JenkinsEvent::Triggered { .. })).await {
            triggered.insert(job, commits);
        }
    }
    assert_eq!(triggered, [("site".to_owned(), 6), ("docs".to_owned(), 1)].into());
    let lines = [r.line().await, r.line().await];
    assert!(lines.iter().any(|l| l.contains("triggered site for [site]") && l.contains("(6 commits)")), "{lines:?}");
    // Shutdown fires anything still pending: a second site trigger would show here.
    r.shutdown().await;
    let seen = j.seen.lock().unwrap();
    let site: Vec<&Seen> = seen.iter().filter(|s| strip_ci(s).starts_with("/job/site/")).collect();
    assert_eq!(site.len(), 1, "one trigger for the burst: {seen:?}");
    assert_eq!(site[0].form.get("NEWREV"), Some(&push("site", "", 6).newrev), "the newest commit is the one built");
}

#[tokio::test]
async fn ignore_refs_branches_deletions_and_svn_projects() {
    let (base, j, mut seen) =
        stand_in(Jenkins { tokens: [("site".to_owned(), "t".to_owned()), ("rel".to_owned(), "t".to_owned()), ("webapp".to_owned(), "t".to_owned())].into(), ..Jenkins::default() })
            .await;
    std::env::set_var("DK_TEST_JENKINS_ROUTE_TOKEN", "t");
    let repos = r#"
[[repos.site.jobs]]
job = "site"
token_env = "DK_TEST_JENKINS_ROUTE_TOKEN"
ignore_refs = "refs/tags/jenkins-.*"
[[repos.site.jobs]]
job = "rel"
token_env = "DK_TEST_JENKINS_ROUTE_TOKEN"
branches = ["release"]
[[repos.svnrepo.projects.webapp.jobs]]
job = "webapp"
token_env = "DK_TEST_JENKINS_ROUTE_TOKEN"
parameters = true
"#;
    let mut r = rig(Target::embedded().await, &base, "quiet_period = \"50ms\"", "", repos).await;
    r.push(&push("site", "refs/tags/jenkins-41", 1)).await;
    assert_eq!(r.next_event(|_| true).await, JenkinsEvent::Skipped { repo: "site".into(), why: Skip::Filtered });
    let mut del = push("site", "refs/heads/old", 2);
    del.newrev = "0".repeat(40);
    r.push(&del).await;
    assert_eq!(r.next_event(|_| true).await, JenkinsEvent::Skipped { repo: "site".into(), why: Skip::Deletion });
    r.push(&push("unknown", "refs/heads/master", 3)).await;
    assert_eq!(r.next_event(|_| true).await, JenkinsEvent::Skipped { repo: "unknown".into(), why: Skip::UnknownRepo });
    // master: `site` only; release: both.
    r.push(&push("site", "refs/heads/master", 4)).await;
    assert_eq!(r.next_event(|_| true).await, JenkinsEvent::Queued { repo: "site".into(), jobs: vec!["site".into()] });
    assert_eq!(strip_ci(&recv_seen(&mut seen).await), "/job/site/build");
    r.push(&push("site", "refs/heads/release", 5)).await;
    assert_eq!(r.next_event(|e| matches!(e, JenkinsEvent::Queued { .. })).await, JenkinsEvent::Queued { repo: "site".into(), jobs: vec!["site".into(), "rel".into()] });
    // SVN: the project inside the repo picks the job; the revision is NEWREV.
    let svn = Commit {
        repo: "svnrepo".into(),
        newrev: "42".into(),
        source: Source::Svn,
        svn: Some(SvnInfo { revision: 42, project: Some("webapp".into()), dirs: vec!["webapp/trunk/".into()] }),
        ..Commit::default()
    };
    r.push(&svn).await;
    let mut other = svn.clone();
    other.svn = Some(SvnInfo { revision: 43, project: Some("intranet".into()), dirs: vec![] });
    r.push(&other).await;
    assert_eq!(
        r.next_event(|e| matches!(e, JenkinsEvent::Queued { repo, .. } if repo == "svnrepo")).await,
        JenkinsEvent::Queued { repo: "svnrepo".into(), jobs: vec!["webapp".into()] }
    );
    assert_eq!(r.next_event(|e| matches!(e, JenkinsEvent::Skipped { .. })).await, JenkinsEvent::Skipped { repo: "svnrepo".into(), why: Skip::Filtered });
    r.shutdown().await;
    let seen = j.seen.lock().unwrap();
    let mut paths: Vec<&str> = seen.iter().map(strip_ci).collect();
    paths.sort();
    assert_eq!(paths, vec!["/job/rel/build", "/job/site/build", "/job/site/build", "/job/webapp/buildWithParameters"]);
    let web = seen.iter().find(|s| s.path.contains("webapp")).unwrap();
    assert_eq!((web.form["REPO"].as_str(), web.form["NEWREV"].as_str()), ("svnrepo", "42"));
}

#[tokio::test]
async fn five_hundreds_are_retried_with_backoff_then_given_up() {
    let (base, j, _seen) = stand_in(Jenkins { tokens: [("site".to_owned(), "t".to_owned())].into(), fail_first: AtomicU32::new(2), ..Jenkins::default() }).await;
    std::env::set_var("DK_TEST_JENKINS_RETRY_TOKEN", "t");
    let mut r =
        rig(Target::embedded().await, &base, "quiet_period = \"50ms\"", "retries = 2", "[[repos.site.jobs]]\njob = \"site\"\ntoken_env = \"DK_TEST_JENKINS_RETRY_TOKEN\"\n").await;
    r.push(&push("site", "refs/heads/master", 1)).await;
    match r.next_event(|e| matches!(e, JenkinsEvent::Triggered { .. } | JenkinsEvent::Failed { .. })).await {
        JenkinsEvent::Triggered { attempts, .. } => assert_eq!(attempts, 3, "two 503s, then 201"),
        other => panic!("{other:?}"),
    }
    // Now more failures than retries: given up after 3 attempts, with a problem line.
    j.fail_first.store(5, Ordering::SeqCst);
    r.push(&push("site", "refs/heads/master", 2)).await;
    match r.next_event(|e| matches!(e, JenkinsEvent::Triggered { .. } | JenkinsEvent::Failed { .. })).await {
        JenkinsEvent::Failed { error, .. } => assert!(error.contains("503") && error.contains("3 attempt"), "{error}"),
        other => panic!("{other:?}"),
    }
    let lines = [r.line().await, r.line().await];
    assert!(lines[1].starts_with("problem: triggering site") && lines[1].contains("Jenkins is restarting"), "{lines:?}");
    r.shutdown().await;
    assert_eq!(j.seen.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    // A port nobody listens on: every attempt is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    let mut r = rig(Target::embedded().await, &base, "quiet_period = \"10ms\"", "retries = 1", "[[repos.site.jobs]]\njob = \"site\"\n").await;
    r.push(&push("site", "refs/heads/master", 1)).await;
    match r.next_event(|e| matches!(e, JenkinsEvent::Triggered { .. } | JenkinsEvent::Failed { .. })).await {
        JenkinsEvent::Failed { error, .. } => assert!(error.contains("cannot reach Jenkins") && error.contains("2 attempt"), "{error}"),
        other => panic!("{other:?}"),
    }
    r.shutdown().await;
}

#[tokio::test]
async fn legacy_wire_reads_old_commit_bodies_and_writes_old_event_lines() {
    let (base, _j, mut seen) = stand_in(Jenkins { tokens: [("site".to_owned(), "t".to_owned())].into(), ..Jenkins::default() }).await;
    std::env::set_var("DK_TEST_JENKINS_LEGACY_TOKEN", "t");
    let target = Target::embedded().await;
    let client = target.client().await;
    let commits = target.dest("topic");
    let events = format!("{}.{{source}}", target.dest("topic"));
    let text =
        config_text(&base, &commits, &events, "wire = \"legacy\"\nquiet_period = \"10ms\"", "[[repos.site.jobs]]\njob = \"site\"\ntoken_env = \"DK_TEST_JENKINS_LEGACY_TOKEN\"\n");
    let config = JenkinsConfig::parse(&text).unwrap();
    let events_dest = events.replace("{source}", "jenkins");
    let mut lines = client.subscribe(&events_dest, SubscribeOptions::default()).await.unwrap();
    let handle = daemon::start(config, client.clone()).await.unwrap();
    // The original git hook's body, no dk-type header.
    let body = format!("repo: site\noldrev: {}\nnewrev: {}\nrefname: refs/heads/master\n", "1".repeat(40), "2".repeat(40));
    client.send(&commits, body).await.unwrap();
    assert_eq!(strip_ci(&recv_seen(&mut seen).await), "/job/site/build");
    let m = tokio::time::timeout(WAIT, lines.recv()).await.unwrap().unwrap();
    assert_eq!(m.headers.get("subject"), Some("Talking to eventbot"));
    assert!(m.headers.get("dk-type").is_none(), "legacy wire: plain text");
    assert!(m.text().unwrap_or_default().starts_with("triggered site for [site] refs/heads/master 2222"), "{:?}", m.text());
    handle.shutdown().await;
    let _ = Wire::Legacy;
}

/// Attack: REFNAME and NEWREV come from a commit message anyone on the bus can
/// send. Values that are no ref name or no object id never reach Jenkins as
/// build parameters; a valid push after them is still triggered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_refname_or_newrev_never_reach_jenkins_as_parameters() {
    let (base, j, mut seen) = stand_in(Jenkins { tokens: [("site".to_owned(), "t".to_owned())].into(), ..Jenkins::default() }).await;
    std::env::set_var("DK_TEST_JENKINS_FORGED_TOKEN", "t");
    let repos = "[[repos.site.jobs]]\njob = \"site\"\ntoken_env = \"DK_TEST_JENKINS_FORGED_TOKEN\"\nparameters = true\n";
    let mut r = rig(Target::embedded().await, &base, "quiet_period = \"50ms\"", "", repos).await;
    let forged: [(&str, String); 4] = [
        ("refs/heads/x\nGIT_DIR=/etc", "a".repeat(40)),
        ("--upload-pack=touch /tmp/pwned", "a".repeat(40)),
        ("refs/heads/master", "$(id)".into()),
        ("refs/heads/master", "HEAD~1; rm -rf /".into()),
    ];
    for (refname, newrev) in forged {
        let mut c = push("site", refname, 1);
        c.newrev = newrev;
        r.push(&c).await;
        let ev = r.next_event(|_| true).await;
        assert!(matches!(&ev, JenkinsEvent::Skipped { why: Skip::Invalid(_), .. }), "{refname:?}: {ev:?}");
    }
    let ok = push("site", "refs/heads/master", 7);
    r.push(&ok).await;
    assert_eq!(r.next_event(|_| true).await, JenkinsEvent::Queued { repo: "site".into(), jobs: vec!["site".into()] });
    let s = recv_seen(&mut seen).await;
    assert_eq!(s.form.get("NEWREV"), Some(&ok.newrev));
    r.shutdown().await;
    assert_eq!(j.seen.lock().unwrap().len(), 1, "only the valid push reached Jenkins");
}
