//! dk-web Changes benchmark: with 1 000 pushes stored (one chain, each push's
//! oldrev the previous one's newrev), each fetched on 100 servers, and a signed
//! rollout record making the newest live on all of them (so every push is live
//! through the chain), the time to serve `/changes` (the newest 200 with their
//! summaries) and one push's journey page; and the latency from a fetch result
//! published on the bus to its update on that journey's server-sent-events stream.
//!
//!   cargo run --release --bin changes -- [--pushes 1000] [--servers 100] [--rounds 50] [--readme ../bench/README.md]

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::deploy::controller::{NodeResult, NodeState, RolloutReport};
use deploykit::deploy::keys::SecretKey;
use deploykit::deploy::record::RolloutRecord;
use deploykit::message::{Commit, CommitInfo, FetchResult, Publisher};
use deploykit::stomp::{Client, ClientConfig};
use deploykit::web::{self, WebConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// GET `path` to the end; the time it took and the body's length.
async fn get(addr: SocketAddr, path: &str) -> (Duration, usize) {
    let t0 = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let took = t0.elapsed();
    assert!(all.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&all[..all.len().min(200)]));
    (took, all.len())
}

fn rev(i: usize) -> String {
    format!("{i:040x}")
}

fn fetch(i: usize, node: usize, ms: u64) -> FetchResult {
    FetchResult {
        repo: "www".into(),
        node: format!("srv{node:03}"),
        mode: "trusting".into(),
        refname: Some("refs/heads/master".into()),
        old_head: None,
        new_head: Some(rev(i)),
        duration_ms: ms,
        ok: true,
        error: None,
        trigger: "commit".into(),
        correlation_id: Some(format!("push-{i}")),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let pushes: usize = opt("--pushes").map_or(1000, |s| s.parse().expect("--pushes N"));
    let servers: usize = opt("--servers").map_or(100, |s| s.parse().expect("--servers N"));
    let rounds: usize = opt("--rounds").map_or(50, |s| s.parse().expect("--rounds N"));
    let readme = opt("--readme").map(PathBuf::from);
    let broker = Broker::start(BrokerConfig::default()).await.expect("broker");
    let url = broker.url();
    let root = std::env::temp_dir().join(format!("dk-changes-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let config = WebConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"{}\"\n[auth]\nmode = \"none\"\n[changes]\nkeep = {}\n[sites.www]\nrepo = \"www\"\n",
        root.join("web.sqlite").display(),
        pushes + 10
    ))
    .unwrap();
    let client = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
    let key = SecretKey::generate().unwrap();
    let handle = web::start(config, client, key.clone()).await.expect("dk-web starts");
    let addr = handle.addr();
    let bus = Client::connect(ClientConfig::new(&url).unwrap()).await.unwrap();
    let publisher = Publisher::new(bus.clone(), "git-hook").receipts(false);

    // Fill: every push, then each server's fetch of it; a receipted send at the end to know all went out.
    let t0 = Instant::now();
    for i in 0..pushes {
        let commit = Commit {
            repo: "www".into(),
            oldrev: if i == 0 { "0".repeat(40) } else { rev(i - 1) },
            newrev: rev(i),
            refname: "refs/heads/master".into(),
            commits: vec![CommitInfo { id: rev(i), author: "bench".into(), timestamp: "2026-12-04T00:00:00Z".into(), message: format!("change {i}") }],
            correlation_id: Some(format!("push-{i}")),
            ..Commit::default()
        };
        publisher.send("/topic/deploykit.git.commits", &commit).await.unwrap();
        for n in 0..servers {
            publisher.send("/topic/deploykit.fetch", &fetch(i, n, 100 + n as u64)).await.unwrap();
        }
    }
    // Wait until the last push's last fetch is stored (its journey lists every server).
    let last = format!("/changes/push-{}", pushes - 1);
    loop {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {last} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        if all.contains(&format!("id=\"fetched-count\">{servers}</b>")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The newest push deployed on every server: one rollout record, signed by dk-web's own key.
    let now = deploykit::message::unix_now() as i64;
    let nodes: Vec<NodeResult> = (0..servers)
        .map(|n| NodeResult { commit: Some(rev(pushes - 1)), ..NodeResult::without_reply(&format!("srv{n:03}"), NodeState::Ok, None, 1, n.min(1)) })
        .collect();
    let report = RolloutReport {
        action: deploykit::message::DeployAction::Deploy,
        site: "www".into(),
        tag: Some("v-bench".into()),
        nodes,
        stopped: None,
        request_ids: vec![],
        duration_ms: 1,
        missing: vec![],
        missing_unnamed: 0,
    };
    let record = RolloutRecord {
        id: RolloutRecord::new_id(),
        controller: "dk-deploy".into(),
        user: "bench".into(),
        reason: None,
        action: deploykit::message::DeployAction::Deploy,
        site: "www".into(),
        tag: Some("v-bench".into()),
        selection: "all".into(),
        started_at: now,
        finished_at: now,
        result: "ok".into(),
        detail: None,
        report: Some(report),
        approved_by: None,
    };
    record.publish(&bus, "/topic/deploykit.rollouts", &key).await.expect("record published");
    // Wait until the oldest push the chain walk reaches (MAX_HOPS back) shows live on every server.
    let oldest = pushes.saturating_sub(deploykit::web::changes::chain::MAX_HOPS - 1);
    loop {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /changes/push-{oldest} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        if all.contains(&format!("id=\"live-count\">{servers}</b>")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fill = t0.elapsed();

    let mut list = Vec::new();
    let mut list_len = 0;
    let mut page = Vec::new();
    for r in 0..rounds {
        let (t, len) = get(addr, "/changes").await;
        list.push(t.as_secs_f64() * 1e3);
        list_len = len;
        let (t, _) = get(addr, &format!("/changes/push-{}", pushes - 1 - r % pushes)).await;
        page.push(t.as_secs_f64() * 1e3);
    }

    // Latency: a fetch result published → its update on the journey's stream.
    let target = pushes - 1;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /changes/push-{target}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut lines = BufReader::new(s).lines();
    while let Some(l) = lines.next_line().await.unwrap() {
        if l.starts_with("data:") && l.contains("hello") {
            break;
        }
    }
    let mut lat = Vec::new();
    for r in 0..rounds {
        let node = servers + r;
        let t = Instant::now();
        Publisher::new(bus.clone(), "fetch").send("/topic/deploykit.fetch", &fetch(target, node, 1)).await.unwrap();
        let needle = format!("srv{node:03}");
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("data:") && l.contains(&needle) {
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let md = format!(
        "<!-- changes:start -->\n### Changes: journeys (bench/changes.sh)\n\n\
         {pushes} pushes stored in one chain, each fetched on {servers} servers ({} steps with the live ones) and live on all of them through the chain \
         (one signed rollout record of the newest; filled through the embedded broker in {:.1} s), {rounds} rounds, over loopback:\n\n\
         | what | p50 | p90 | max |\n|---|---|---|---|\n\
         | `/changes` (newest 200 with builds, fetched N of M and live on N, {} KiB) | {:.1} ms | {:.1} ms | {:.1} ms |\n\
         | `/changes/{{id}}` (one journey, {} steps, live on {servers}) | {:.1} ms | {:.1} ms | {:.1} ms |\n\
         | fetch result on the bus → its update on the journey's SSE stream | {:.2} ms | {:.2} ms | {:.2} ms |\n\n\
         The latency covers the publish, the broker, dk-web's store (SQLite insert and the change's summary) and the SSE write.\n<!-- changes:end -->\n",
        pushes * (servers + 1) + (pushes - oldest) * servers,
        fill.as_secs_f64(),
        list_len / 1024,
        pct(&mut list, 0.5),
        pct(&mut list, 0.9),
        pct(&mut list, 1.0),
        2 * servers + 1,
        pct(&mut page, 0.5),
        pct(&mut page, 0.9),
        pct(&mut page, 1.0),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.9),
        pct(&mut lat, 1.0),
    );
    print!("{md}");
    if let Some(path) = readme {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let new = match (text.find("<!-- changes:start -->"), text.find("<!-- changes:end -->")) {
            (Some(a), Some(b)) => format!("{}{}{}", &text[..a], md.trim_end(), &text[b + "<!-- changes:end -->".len()..]),
            _ => format!("{}\n\n{md}", text.trim_end()),
        };
        std::fs::write(&path, new).unwrap();
    }
    handle.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&root);
}
