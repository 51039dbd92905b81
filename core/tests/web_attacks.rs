//! Attacks on dk-web through the real server (in-process, on a real TCP listener,
//! embedded broker, one real agent): DNS rebinding (a hostile `Host` reading the
//! CSRF token and posting a deploy), a local process naming itself through the
//! proxy header, a user-name oracle by login timing and password guessing, and a
//! flood of agent announcements. Each fails against the code before the fixes.
//! Synchronisation is on awaited events (SSE, bus messages), never on sleeps.

mod common;

use common::fleet::{agent_toml, fleet_key, tagged_repo, Tmp};
use common::targets::Target;
use common::web::{exchange, Reply};
use deploykit::deploy::agent::{Agent, AgentConfig, AgentHandle};
use deploykit::deploy::keys::SecretKey;
use deploykit::message::{decode, AgentAnnounce, DeployAction, Filters, Message};
use deploykit::stomp::SubscribeOptions;
use deploykit::web::{self, WebConfig, WebHandle};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(60);
/// bcrypt cost of ann's hash: enough work to dominate an HTTP round trip in a debug build.
const COST: u32 = 8;

/// Broker, a repo with tags v1..v2, one agent (node-a) trusting dk-web's key, and dk-web with `auth`
/// (`{tmp}/htpasswd` holds ann / ann-pw).
struct Rig {
    tmp: Tmp,
    target: Target,
    deploy: String,
    _agent: AgentHandle,
    web: WebHandle,
}

impl Rig {
    async fn start(auth: &str) -> Rig {
        let tmp = Tmp::new("web-attacks");
        let target = Target::embedded().await;
        let repo = tagged_repo(&tmp.0.join("www"), 2);
        let key = SecretKey::generate().unwrap();
        let deploy = target.dest("topic");
        let toml = agent_toml("node-a", &tmp.0.join("node-a"), &repo, &deploy, &[("web", key.public().to_string())], "deploy = [\"web\"]");
        let agent = Agent::start(AgentConfig::parse(&toml).unwrap(), target.client().await).await.unwrap();
        std::fs::write(tmp.0.join("htpasswd"), format!("ann:{}\n", bcrypt::hash("ann-pw", COST).unwrap())).unwrap();
        let auth = auth.replace("{tmp}", &tmp.0.display().to_string());
        let config = WebConfig::parse(&format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{db}\"\ndiscovery_window = \"5s\"\nevents = [\"{deploy}.events\"]\nevent_destination = \"{deploy}.events\"\n\
             [destinations]\ndeploy = \"{deploy}\"\nagents = \"{deploy}.agents\"\n{replies}\
             [trust]\nfleet_keys = [\"{fleet}\"]\n\
             {auth}\n\
             [sites.www]\nclass = [\"web\"]\ndeployers = [\"*\"]\nbatch = \"1\"\n",
            db = tmp.0.join("web.sqlite").display(),
            replies = target.reply_to().map(|r| format!("replies = \"{r}\"\n")).unwrap_or_default(),
            fleet = fleet_key().public(),
        ))
        .unwrap();
        let web = web::start(config, target.client().await, key).await.unwrap();
        Rig { tmp, target, deploy, _agent: agent, web }
    }

    fn addr(&self) -> SocketAddr {
        self.web.addr()
    }
}

/// One HTTP/1.1 request from `from` (any 127.0.0.0/8 address reaches a loopback listener) with exactly `headers`.
async fn raw(from: IpAddr, addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let s = sock.connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    exchange(s, &req).await
}

fn local() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn has_token(page: &str) -> bool {
    page.contains("name=\"csrf\"")
}

fn csrf_of(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    page[i..].split('"').next().unwrap().to_owned()
}

/// Follows `/deploys/ID/events` until the deploy is finished.
async fn wait_finished(addr: SocketAddr, id: &str) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /deploys/{id}/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut lines = BufReader::new(s).lines();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(data) = line.strip_prefix("data:") {
                let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                if v["kind"] == "finished" || (v["kind"] == "snapshot" && v["view"]["finished"] == true) {
                    return;
                }
            }
        }
        panic!("event stream ended before the deploy finished");
    };
    tokio::time::timeout(WAIT, read).await.expect("deploy finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_rebinding_page_can_neither_read_the_token_nor_deploy() {
    // auth = "none": the mode where the Host header was never checked.
    let rig = Rig::start("[auth]\nmode = \"none\"\nuser = \"demo\"").await;
    let a = rig.addr();
    let me = a.to_string();
    let evil = format!("evil.example:{}", a.port());
    let evil_origin = format!("http://{evil}");
    let spy_client = rig.target.client().await;
    let mut spy = spy_client.subscribe(&rig.deploy, SubscribeOptions::default()).await.unwrap();

    // The rebinding page reads dk-web's pages under its own name: refused before any handler.
    for path in ["/", "/sites/www", "/history", "/nope"] {
        let r = raw(local(), a, "GET", path, &[("Host", &evil)], "").await;
        assert_eq!(r.status, 421, "{path}: {}", r.body);
        assert!(!has_token(&r.body), "{path}: no CSRF token for a foreign Host: {}", r.body);
        assert!(r.body.contains("host name"), "{}", r.body);
    }
    assert_eq!(raw(local(), a, "GET", "/", &[], "").await.status, 400, "no Host at all (HTTP/1.1 requires one)");

    // The legitimate page has the token (the attacker would have read it through the rebinding).
    let page = raw(local(), a, "GET", "/sites/www", &[("Host", &me)], "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let token = csrf_of(&page.body);
    let attack = format!("tag=v1&scope=all&canary=1&batch=1&max_failures=0&csrf={token}");
    let mine = format!("http://{me}");
    for (what, headers, want) in [
        ("rebound Host and Origin", vec![("Host", evil.as_str()), ("Origin", evil_origin.as_str())], 421),
        ("foreign Origin", vec![("Host", me.as_str()), ("Origin", evil_origin.as_str())], 403),
        ("foreign Referer, no Origin", vec![("Host", me.as_str()), ("Referer", "http://evil.example/x")], 403),
        ("null Origin", vec![("Host", me.as_str()), ("Origin", "null")], 403),
        ("no Origin nor Referer", vec![("Host", me.as_str())], 403),
        ("other scheme", vec![("Host", me.as_str()), ("Origin", &mine.replace("http:", "https:"))], 403),
    ] {
        let r = raw(local(), a, "POST", "/sites/www/deploy", &headers, &attack).await;
        assert_eq!(r.status, want, "{what}: {}", r.body);
        assert!(r.header("location").is_none(), "{what}: no deploy started");
    }
    let r = raw(local(), a, "GET", "/history", &[("Host", &me)], "").await;
    assert!(!r.body.contains("/deploys/1"), "no deploy was recorded: {}", r.body);

    // A legitimate deploy of v2 bounds the wait: every deploy request before it must be v2's.
    let ok = format!("tag=v2&scope=all&canary=1&batch=1&max_failures=0&csrf={token}");
    let r = raw(local(), a, "POST", "/sites/www/deploy", &[("Host", &me), ("Origin", &mine)], &ok).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id = r.header("location").unwrap().strip_prefix("/deploys/").unwrap().to_owned();
    assert_eq!(id, "1", "the legitimate deploy is the first one recorded");
    let seen = async {
        loop {
            let m = spy.recv().await.expect("spy subscription open");
            if let Ok(Message::DeployRequest(req)) = decode(m.destination(), &m.headers, &m.body) {
                if req.action == DeployAction::Deploy && !req.dry_run {
                    return req;
                }
            }
        }
    };
    let req = tokio::time::timeout(WAIT, seen).await.expect("the legitimate deploy request is sent");
    assert_eq!(req.tag.as_deref(), Some("v2"), "the first deploy request on the bus is the legitimate one");
    wait_finished(a, &id).await;
    let r = raw(local(), a, "GET", "/history", &[("Host", &me)], "").await;
    assert!(r.body.contains("/deploys/1") && !r.body.contains("/deploys/2"), "exactly one deploy: {}", r.body);
    let _ = std::fs::metadata(&rig.tmp.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_header_counts_only_from_configured_proxies() {
    // No default list: "proxy" without proxies is a configuration error, with advice.
    let e = WebConfig::parse("[auth]\nmode = \"proxy\"\nheader = \"X-Remote-User\"").expect_err("proxy mode needs proxies").to_string();
    assert!(e.contains("auth.proxies") && e.contains("127.0.0.1"), "{e}");
    // ... also when built in code and handed to start().
    let rig = Rig::start("[auth]\nmode = \"proxy\"\nproxies = [\"10.0.0.1\"]").await;
    let mut c = WebConfig::parse("listen = \"127.0.0.1:0\"\n[auth]\nmode = \"proxy\"\nproxies = [\"10.0.0.1\"]").unwrap();
    c.database = rig.tmp.0.join("other.sqlite");
    c.auth = web::config::AuthConfig::Proxy { header: "X-Remote-User".into(), proxies: vec![] };
    let e = web::start(c, rig.target.client().await, SecretKey::generate().unwrap()).await.expect_err("refused").to_string();
    assert!(e.contains("auth.proxies"), "{e}");

    // A local process is not the configured proxy: its header is ignored.
    let a = rig.addr();
    let me = a.to_string();
    let r = raw(local(), a, "GET", "/sites/www", &[("Host", &me), ("X-Remote-User", "admin")], "").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not a trusted proxy") && !has_token(&r.body) && !r.body.contains("admin"), "{}", r.body);
    let r = raw(local(), a, "POST", "/sites/www/deploy", &[("Host", &me), ("Origin", &format!("http://{me}")), ("X-Remote-User", "admin")], "tag=v1").await;
    assert_eq!(r.status, 403, "{}", r.body);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_timing_tells_no_user_names_and_guessing_is_throttled() {
    let rig = Rig::start("[auth]\nmode = \"basic\"\nhtpasswd = \"{tmp}/htpasswd\"").await;
    let a = rig.addr();
    let me = a.to_string();
    let login = |from: IpAddr, user: &'static str, pw: &'static str| {
        let me = me.clone();
        async move {
            let auth = basic(user, pw);
            let t = Instant::now();
            let r = raw(from, a, "GET", "/history", &[("Host", &me), ("Authorization", &auth)], "").await;
            (r, t.elapsed())
        }
    };
    // Timing: an unknown user costs a hash run like a known user's wrong password.
    // Each try from its own address, so the throttle below does not interfere.
    let (mut unknown, mut known) = (Vec::new(), Vec::new());
    for i in 0..5u8 {
        let (r, t) = login(IpAddr::from([127, 0, 1, i]), "nobody", "guess").await;
        assert_eq!(r.status, 401, "{}", r.body);
        unknown.push(t);
        let (r, t) = login(IpAddr::from([127, 0, 2, i]), "ann", "guess").await;
        assert_eq!(r.status, 401, "{}", r.body);
        known.push(t);
    }
    let (u, k) = (median(unknown.clone()), median(known.clone()));
    let ratio = u.as_secs_f64() / k.as_secs_f64();
    eprintln!("login timing: unknown user median {u:?} {unknown:?}, known user wrong password median {k:?} {known:?}, ratio {ratio:.2}");
    assert!((0.5..=2.0).contains(&ratio), "unknown {u:?} vs known {k:?}: ratio {ratio:.2} tells user names apart");

    // The runtime stays responsive while hashes run: with more logins in flight than
    // async workers, /healthz answers long before the logins do.
    let guesses: Vec<_> = (0..4u8).map(|i| tokio::spawn(login(IpAddr::from([127, 0, 3, i]), "ann", "guess"))).collect();
    let t = Instant::now();
    let h = raw(local(), a, "GET", "/healthz", &[("Host", &me)], "").await;
    let health = t.elapsed();
    assert_eq!(h.status, 200);
    let mut slowest = Duration::ZERO;
    for g in guesses {
        let (r, t) = g.await.unwrap();
        assert_eq!(r.status, 401);
        slowest = slowest.max(t);
    }
    eprintln!("healthz during 4 password checks: {health:?} (slowest login {slowest:?})");
    // On the async workers, healthz waited for the checks (measured: 756 ms of 760 ms).
    assert!(health < slowest / 2, "healthz ({health:?}) waited for the password checks ({slowest:?})");

    // Guessing: 5 failures from one address, then 429 with Retry-After, even with the right password.
    let guesser = IpAddr::from([127, 0, 4, 1]);
    for n in 1..=5 {
        let (r, _) = login(guesser, "ann", "guess").await;
        assert_eq!(r.status, 401, "failure {n}: {}", r.body);
    }
    let (r, t) = login(guesser, "ann", "ann-pw").await;
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(t < k, "a throttled login costs no hash run ({t:?} vs {k:?})");
    // Another address is not affected.
    let (r, _) = login(IpAddr::from([127, 0, 4, 2]), "ann", "ann-pw").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn announce(id: String) -> AgentAnnounce {
    AgentAnnounce { identity: id, classes: vec!["web".into()], facts: Default::default(), sites: vec![], version: "1".into(), expires_at: 0 }
}

#[test]
fn an_announcement_flood_stays_bounded() {
    let fleet = web::fleet::Fleet::default();
    for i in 0..50_000 {
        fleet.record(announce(format!("flood-{i}")));
    }
    let known = fleet.expected(&Filters::default());
    assert!(known <= 10_000, "{known} servers remembered");
    assert!(known > 0);
}

#[test]
fn servers_not_heard_from_expire() {
    let fleet = web::fleet::Fleet::with_limits(web::fleet::MAX_SERVERS, Duration::from_secs(3600));
    let t0 = 1_800_000_000;
    for i in 0..50_000i64 {
        fleet.record_at(announce(format!("flood-{i}")), t0 + i / 100);
    }
    let known = fleet.known_at(t0 + 500);
    assert_eq!(known.len(), web::fleet::MAX_SERVERS);
    assert!(known.iter().any(|s| s.announce.identity == "flood-49999") && !known.iter().any(|s| s.announce.identity == "flood-0"), "the least recently seen go first");
    fleet.record_at(announce("fresh".into()), t0 + 3000);
    let later = fleet.known_at(t0 + 499 + 3600);
    assert!(later.len() < known.len() && later.iter().all(|s| s.last_seen > t0 + 499), "entries older than the expiry are gone");
    let much_later = fleet.known_at(t0 + 3000 + 3600);
    assert!(much_later.is_empty(), "{} left", much_later.len());
}
