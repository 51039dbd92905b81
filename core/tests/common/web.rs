//! dk-web test rig: a broker, three agents, dk-web (Basic logins ann/bob), and
//! a raw HTTP/1.1 client with the SSE readers the web suites share.

use super::fleet::{agent_toml, fleet_key, script, tagged_repo, Tmp};
use super::targets::Target;
use deploykit::deploy::agent::{Agent, AgentConfig, AgentHandle};
use deploykit::deploy::keys::SecretKey;
use deploykit::web::{self, WebConfig, WebHandle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How long any wait in the web suites may take.
pub const WAIT: Duration = Duration::from_secs(60);
/// The three agents' identities.
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Broker, a repo with tags v1..v3, three agents trusting the web's key, and dk-web
/// (Basic auth: ann deploys www, bob only views).
pub struct Rig {
    pub tmp: Tmp,
    pub target: Target,
    pub key: SecretKey,
    pub agents: Vec<AgentHandle>,
    pub web: Option<WebHandle>,
    pub config: WebConfig,
}

impl Rig {
    /// The rig on the embedded broker.
    pub async fn start() -> Rig {
        Rig::start_on(Target::embedded().await).await
    }

    /// The rig on `target`.
    pub async fn start_on(target: Target) -> Rig {
        Rig::start_with(target, "").await
    }

    /// The rig with `top` (top-level settings such as `wire = "legacy"`) at the head of every agent's and dk-web's config.
    pub async fn start_with(target: Target, top: &str) -> Rig {
        Rig::start_full(target, top, "").await
    }

    /// [`Rig::start_with`], with `site` appended to every agent's `[sites.www]` (e.g. a `[sites.www.health]` table).
    pub async fn start_full(target: Target, top: &str, site: &str) -> Rig {
        let tmp = Tmp::new("web");
        let repo = tagged_repo(&tmp.0.join("www"), 3);
        let key = SecretKey::generate().unwrap();
        let deploy = target.dest("topic");
        let mut agents = Vec::new();
        for node in NODES {
            let toml = agent_toml(node, &tmp.0.join(node), &repo, &deploy, &[("web", key.public().to_string())], &format!("deploy = [\"web\"]\nrollback = [\"web\"]\n{site}"));
            agents.push(Agent::start(AgentConfig::parse(&format!("{top}{toml}")).unwrap(), target.client().await).await.unwrap());
        }
        let htpasswd = tmp.0.join("htpasswd");
        std::fs::write(&htpasswd, format!("ann:{}\nbob:{}\n", bcrypt::hash("ann-pw", 4).unwrap(), bcrypt::hash("bob-pw", 4).unwrap())).unwrap();
        let config = WebConfig::parse(&format!(
            "{top}listen = \"127.0.0.1:0\"\ndatabase = \"{db}\"\ndiscovery_window = \"5s\"\nevents = [\"{deploy}.events\"]\nevent_destination = \"{deploy}.events\"\n\
             [destinations]\ndeploy = \"{deploy}\"\nagents = \"{deploy}.agents\"\n{replies}\
             [trust]\nfleet_keys = [\"{fleet}\"]\n\
             [auth]\nmode = \"basic\"\nhtpasswd = \"{htpasswd}\"\n\
             [sites.www]\nclass = [\"web\"]\ndeployers = [\"ann\"]\nbatch = \"2\"\n\
             [sites.empty]\nclass = [\"nothing-has-this\"]\n",
            db = tmp.0.join("web.sqlite").display(),
            htpasswd = htpasswd.display(),
            replies = target.reply_to().map(|r| format!("replies = \"{r}\"\n")).unwrap_or_default(),
            fleet = fleet_key().public(),
        ))
        .unwrap();
        let mut rig = Rig { tmp, target, key, agents, web: None, config };
        rig.restart_web().await;
        rig
    }

    /// Starts (or restarts) dk-web with `config`.
    pub async fn restart_web(&mut self) {
        if let Some(w) = self.web.take() {
            w.shutdown(Duration::from_secs(5)).await;
        }
        self.web = Some(web::start(self.config.clone(), self.target.client().await, self.key.clone()).await.unwrap());
    }

    /// dk-web's address.
    pub fn addr(&self) -> SocketAddr {
        self.web.as_ref().unwrap().addr()
    }

    /// A node's directory.
    pub fn home(&self, node: &str) -> PathBuf {
        self.tmp.0.join(node)
    }

    /// Writes a hook script for a node.
    pub fn hook(&self, node: &str, name: &str, body: &str) {
        script(&self.home(node).join("hooks").join(name), body);
    }

    /// The version file of a node's live www release.
    pub fn live(&self, node: &str) -> Option<String> {
        std::fs::read_to_string(self.home(node).join("www/current/version")).ok().map(|s| s.trim().to_owned())
    }
}

/// One HTTP response: status, head and body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// A response header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    }
}

/// An `Authorization: Basic` value.
pub fn basic(user: &str, pw: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

/// A raw HTTP/1.1 request (`Connection: close`; a POST names dk-web's origin unless `headers` give one).
pub fn request_text(addr: SocketAddr, method: &str, path: &str, user: Option<(&str, &str)>, headers: &[(&str, &str)], body: &str) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    if let Some((u, p)) = user {
        req.push_str(&format!("Authorization: {}\r\n", basic(u, p)));
    }
    // A browser's form post names its page's origin; dk-web refuses posts without one.
    if method == "POST" && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("origin")) {
        req.push_str(&format!("Origin: http://{addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

/// Sends one request and reads the whole response.
pub async fn http(addr: SocketAddr, method: &str, path: &str, user: Option<(&str, &str)>, headers: &[(&str, &str)], body: &str) -> Reply {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(s, &request_text(addr, method, path, user, headers, body)).await
}

/// Writes `request` on `s` and reads the whole response (the request says `Connection: close`).
pub async fn exchange(mut s: tokio::net::TcpStream, request: &str) -> Reply {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("response in time").unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").map(|(h, b)| (h.to_owned(), b.to_owned())).unwrap_or((text.clone(), String::new()));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line in {text:?}"));
    Reply { status, head, body }
}

/// ann: deploys www.
pub const ANN: Option<(&str, &str)> = Some(("ann", "ann-pw"));
/// bob: only views.
pub const BOB: Option<(&str, &str)> = Some(("bob", "bob-pw"));

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str, user: Option<(&str, &str)>) -> Reply {
    http(addr, "GET", path, user, &[], "").await
}

/// `POST path` with a form body.
pub async fn post(addr: SocketAddr, path: &str, user: Option<(&str, &str)>, body: &str) -> Reply {
    http(addr, "POST", path, user, &[], body).await
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    page[i..].split('"').next().unwrap().to_owned()
}

/// The CSRF token of `user` (from the www site page).
pub async fn token(addr: SocketAddr, user: Option<(&str, &str)>) -> String {
    let page = get(addr, "/sites/www", user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    csrf_of(&page.body)
}

/// Follows `/deploys/ID/events` until the `finished` update (or a finished snapshot); returns every update.
pub async fn follow(addr: SocketAddr, id: &str, mut on: impl FnMut(&serde_json::Value)) -> Vec<serde_json::Value> {
    let mut lines = open_stream(addr, &format!("/deploys/{id}/events"), ANN).await;
    let mut out = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(data) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                on(&v);
                let done = v["kind"] == "finished" || (v["kind"] == "snapshot" && v["view"]["finished"] == true);
                out.push(v);
                if done {
                    return;
                }
            }
        }
        panic!("event stream ended before the deploy finished");
    };
    tokio::time::timeout(WAIT, read).await.expect("deploy finished in time");
    out
}

/// The deploy id a 303 to `/deploys/ID` names.
pub fn deploy_id(r: &Reply) -> String {
    assert_eq!(r.status, 303, "{}", r.body);
    r.header("location").unwrap().strip_prefix("/deploys/").unwrap().to_owned()
}

/// The view of the last update.
pub fn final_view(updates: &[serde_json::Value]) -> serde_json::Value {
    updates.last().unwrap()["view"].clone()
}

/// Each server's state in a view.
pub fn states(view: &serde_json::Value) -> Vec<(String, String)> {
    view["nodes"].as_array().unwrap().iter().map(|n| (n["node"].as_str().unwrap().to_owned(), n["state"].as_str().unwrap().to_owned())).collect()
}

/// An SSE stream's lines.
pub type Lines = tokio::io::Lines<BufReader<tokio::net::TcpStream>>;

/// GETs `path` as `user` and returns the answer's lines, unread (an event stream's).
pub async fn open_stream(addr: SocketAddr, path: &str, user: Option<(&str, &str)>) -> Lines {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request_text(addr, "GET", path, user, &[], "").as_bytes()).await.unwrap();
    BufReader::new(s).lines()
}

/// Opens an SSE stream at `path` and waits for its `hello`.
pub async fn sse_stream(addr: SocketAddr, path: &str) -> Lines {
    let mut lines = open_stream(addr, path, BOB).await;
    let hello = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("data:") && line.contains("hello") {
                return;
            }
        }
        panic!("{path}: stream ended");
    };
    tokio::time::timeout(WAIT, hello).await.expect("stream opens");
    lines
}

/// The next `n` updates of an SSE stream, parsed.
pub async fn updates(lines: &mut Lines, n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let read = async {
        while out.len() < n {
            let line = lines.next_line().await.unwrap().expect("stream open");
            if let Some(data) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                out.push(serde_json::from_str(data).unwrap());
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("updates in time");
    out
}
