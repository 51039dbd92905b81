//! dk-web benchmark: the site page with 100 servers and 200 tags (time to first
//! byte and to the last byte, over loopback, no login), and the live-update latency
//! from a server's step to the deploy page's server-sent-events stream.
//!
//! Latency: every server's pre-deploy hook writes the wall clock (ns) as its last
//! act; the SSE client notes when the row update saying "pre-deploy ok" arrives.
//! The difference covers the hook's exit, the agent's step reply over the broker,
//! dk-web's view update and the SSE write: an upper bound of "agent's reply → browser".
//!
//!   cargo run --release --bin web -- [--agents 100] [--tags 200] [--rounds 30] [--readme ../bench/README.md]

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::deploy::agent::{Agent, AgentConfig};
use deploykit::deploy::controller::{Controller, ControllerConfig, Window};
use deploykit::deploy::keys::SecretKey;
use deploykit::message::Filters;
use deploykit::stomp::{Client, ClientConfig};
use deploykit::web::{self, WebConfig};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "init.defaultBranch=master"])
        .args(args)
        .status()
        .expect("git runs");
    assert!(st.success(), "git {args:?}");
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// GET `path`: (time to first byte, time to the end, body).
async fn get(addr: SocketAddr, path: &str) -> (Duration, Duration, String) {
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.unwrap();
    let ttfb = t0.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let full = t0.elapsed();
    let text = String::from_utf8_lossy(&rest).into_owned();
    assert!(text.starts_with("TTP/1.1 200"), "{}", text.lines().next().unwrap_or(""));
    (ttfb, full, text)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let n: usize = opt("--agents").map_or(100, |s| s.parse().expect("--agents N"));
    let tags: usize = opt("--tags").map_or(200, |s| s.parse().expect("--tags N"));
    let rounds: usize = opt("--rounds").map_or(30, |s| s.parse().expect("--rounds N"));
    let readme = opt("--readme").map(PathBuf::from);
    let broker = Broker::start(BrokerConfig::default()).await.expect("broker");
    let url = broker.url();
    let root = std::env::temp_dir().join(format!("dk-web-bench-{}", std::process::id()));
    let repo = root.join("site");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    // 20 commits, tags spread over them (one `git update-ref --stdin` for all).
    let mut commits = Vec::new();
    for c in 0..20 {
        std::fs::write(repo.join("index.html"), format!("<p>commit {c}</p>\n")).unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", &format!("change {c}")]);
        let out = Command::new("git").arg("-C").arg(&repo).args(["rev-parse", "HEAD"]).output().unwrap();
        commits.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let mut p = Command::new("git").arg("-C").arg(&repo).args(["update-ref", "--stdin"]).stdin(Stdio::piped()).spawn().unwrap();
    {
        let mut w = p.stdin.take().unwrap();
        for t in 1..=tags {
            writeln!(w, "create refs/tags/v{t} {}", commits[(t - 1) * commits.len() / tags]).unwrap();
        }
    }
    assert!(p.wait().unwrap().success());

    let key = SecretKey::generate().unwrap();
    let mut agents = Vec::new();
    for i in 0..n {
        let home = root.join(format!("srv{i:03}"));
        let hooks = home.join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        // The hook's last act: the wall clock in ns (date(1) from coreutils).
        std::fs::write(hooks.join("pre-deploy"), "#!/bin/sh\ndate +%s%N > ../pre-deploy-done\n").unwrap();
        std::fs::set_permissions(hooks.join("pre-deploy"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let toml = format!(
            "identity = \"srv{i:03}\"\nclasses = [\"web\"]\nstate_dir = \"{h}/state\"\n[trusted_keys]\nweb = \"{}\"\n[sites.site]\nrepo = \"{}\"\nreleases = \"{h}/releases\"\ncurrent = \"{h}/current\"\nhooks = \"{h}/hooks\"\ndeploy = [\"web\"]\n",
            key.public(),
            repo.display(),
            h = home.display()
        );
        let client = Client::connect(ClientConfig::new(&url).unwrap()).await.expect("agent connects");
        agents.push(Agent::start(AgentConfig::parse(&toml).unwrap(), client).await.unwrap());
    }
    let config = WebConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\ndiscovery_window = \"10s\"\n[auth]\nmode = \"none\"\nuser = \"bench\"\n[sites.site]\nclass = [\"web\"]\ntags = {tags}\ndeployers = [\"bench\"]\n",
        root.join("web.sqlite").display().to_string()
    ))
    .unwrap();
    let handle = web::start(config, Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap(), key.clone()).await.unwrap();
    let addr = handle.addr();

    // Warm-up: dk-web learns the fleet (whom to wait for), caches warm.
    let (_, _, page) = get(addr, "/sites/site").await;
    assert_eq!(page.matches("data-server=").count(), n, "every server on the page");
    assert_eq!(page.matches("class=\"tag\"").count(), tags, "every tag on the page");
    let mut ttfb = Vec::new();
    let mut full = Vec::new();
    let mut size = 0;
    for _ in 0..rounds {
        let (a, b, body) = get(addr, "/sites/site").await;
        ttfb.push(a.as_secs_f64() * 1000.0);
        full.push(b.as_secs_f64() * 1000.0);
        size = body.len();
    }
    let mut sites_ms: Vec<f64> = Vec::new();
    for _ in 0..rounds {
        sites_ms.push(get(addr, "/").await.1.as_secs_f64() * 1000.0);
    }
    // Where a site page's time goes: the same bus calls, straight from dk-deploy's library.
    let c = Controller::new(Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap(), ControllerConfig::new("bench", Some(key.clone()))).await.unwrap();
    let w = Window { timeout: Duration::from_secs(10), expect: Some(n) };
    let (mut d_ms, mut t_ms, mut s_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(c.discover(Filters::default(), w).await.unwrap().len(), n);
        d_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        assert_eq!(c.tags("site", Filters::default(), tags, w).await.unwrap().len(), n);
        t_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        assert_eq!(c.status("site", Filters::default(), w).await.unwrap().len(), n);
        s_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // A deploy to every server, followed over SSE.
    let token = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let body = format!("tag=v{tags}&scope=all&canary=1&batch=25&max_failures=0&csrf={token}");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /sites/site/deploy HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let id = resp.lines().find_map(|l| l.strip_prefix("location: /deploys/")).expect("303 to the deploy").trim().to_owned();
    let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
    sse.write_all(format!("GET /deploys/{id}/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut lines = BufReader::new(sse).lines();
    let mut seen: std::collections::HashMap<String, u128> = std::collections::HashMap::new();
    let t0 = Instant::now();
    let mut result = String::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await.expect("updates in time").unwrap() {
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let at = now_ns();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        if v["kind"] == "node" {
            let node = &v["node"];
            let pre_ok = node["steps"].as_array().is_some_and(|s| s.iter().any(|s| s["step"] == "pre-deploy" && s["state"] == "ok"));
            if pre_ok {
                seen.entry(node["node"].as_str().unwrap().to_owned()).or_insert(at);
            }
        }
        if v["kind"] == "finished" {
            result = v["view"]["result"].as_str().unwrap().to_owned();
            break;
        }
    }
    let wall = t0.elapsed();
    let mut lat: Vec<f64> = Vec::new();
    for (node, at) in &seen {
        let i: usize = node.trim_start_matches("srv").parse().unwrap();
        let done: u128 = std::fs::read_to_string(root.join(format!("srv{i:03}/pre-deploy-done"))).unwrap().trim().parse().unwrap();
        lat.push((*at as f64 - done as f64) / 1e6);
    }
    assert_eq!(result, "ok", "the deploy succeeded");

    let mut md = String::new();
    md.push_str("<!-- web:start -->\n## Web UI (dk-web)\n\n");
    md.push_str(&format!(
        "`bench/web.sh`: dk-web over {n} in-process agents on the embedded broker, one repo with {tags} tags, \
         loopback HTTP/1.1 without a login, release build. A page load asks the servers live (discovery, then \
         tags and status in parallel; each stops as soon as every known server answered), so the figures are \
         mostly bus round trips to {n} agents, not rendering. {rounds} loads each, after one warm-up.\n\n"
    ));
    md.push_str("| page | time to first byte p50 / p90 / max | full page p50 / p90 / max | size |\n|---|---|---|---|\n");
    let (mut t1, mut f1) = (ttfb.clone(), full.clone());
    md.push_str(&format!(
        "| site page ({n} servers, {tags} tags) | {:.1} / {:.1} / {:.1} ms | {:.1} / {:.1} / {:.1} ms | {} KiB |\n",
        pct(&mut t1, 0.5),
        pct(&mut t1, 0.9),
        pct(&mut t1, 1.0),
        pct(&mut f1, 0.5),
        pct(&mut f1, 0.9),
        pct(&mut f1, 1.0),
        size / 1024
    ));
    md.push_str(&format!("| sites page (discovery only) | | {:.1} / {:.1} / {:.1} ms | |\n", pct(&mut sites_ms, 0.5), pct(&mut sites_ms, 0.9), pct(&mut sites_ms, 1.0)));
    md.push_str(&format!(
        "\nThe same bus calls straight from dk-deploy's library (p50): discover {:.1} ms, tags ({tags} per server) {:.1} ms, \
         status {:.1} ms. The site page runs discover, then tags and status together, so its time is about \
         discover + tags: the {n} agents listing {tags} tags each with libgit2 on the same 2 cores (on a fleet each \
         server lists its own); dk-web's own share (merging, rendering {} KiB) is the rest.\n",
        pct(&mut d_ms, 0.5),
        pct(&mut t_ms, 0.5),
        pct(&mut s_ms, 0.5),
        size / 1024
    ));
    md.push_str(&format!(
        "\nLive updates: a deploy of v{tags} to all {n} (canary 1, batches of 25; {:.2} s from the stream's start to `finished`). \
         From a server's pre-deploy hook writing its last timestamp to its row's \"pre-deploy ok\" update arriving on the \
         SSE stream (hook exit, the agent's reply over the broker, dk-web, the stream), {} servers measured: \
         **p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms**. Target: well under the 1 s a person notices.\n<!-- web:end -->\n",
        wall.as_secs_f64(),
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.9),
        pct(&mut lat, 1.0)
    ));
    print!("{md}");
    if let Some(path) = readme {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let new = match (text.find("<!-- web:start -->"), text.find("<!-- web:end -->")) {
            (Some(a), Some(b)) => format!("{}{}{}", &text[..a], md.trim_end(), &text[b + "<!-- web:end -->".len()..]),
            _ => format!("{}\n{md}", text.trim_end()),
        };
        std::fs::write(&path, new).unwrap();
    }
    handle.shutdown(Duration::from_secs(5)).await;
    for a in agents {
        a.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
