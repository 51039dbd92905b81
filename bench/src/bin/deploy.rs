//! Deploy benchmark: one small site to N in-process agents (each its own bus
//! connection, release directory and no-op hook scripts) on one machine,
//! driven by dk-deploy's library. Compares `--batch 25` (after a canary of 1)
//! with the original's one-server-after-another order (`--batch 1`), same
//! agents, in one run. Reports wall time, the time spent in the servers' own
//! steps on the critical path, and the overhead beyond them.
//!
//!   cargo run --release --bin deploy -- [--agents 100] [--broker URL] [--readme ../bench/README.md]

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::deploy::agent::{Agent, AgentConfig};
use deploykit::deploy::controller::plan::BatchSize;
use deploykit::deploy::controller::{Controller, ControllerConfig, RolloutReport, RolloutSpec, Window};
use deploykit::deploy::keys::SecretKey;
use deploykit::message::{DeployAction, Filters};
use deploykit::stomp::{Client, ClientConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Per rollout: wall, critical path of the servers' own step time, overhead.
struct Row {
    label: String,
    wall_ms: f64,
    steps_ms: f64,
    per_server_overhead_ms: f64,
    ok: usize,
    total: usize,
}

fn analyse(label: &str, r: &RolloutReport, batches: &[Vec<String>], wall: Duration) -> Row {
    let own = |node: &str| -> f64 { r.nodes.iter().find(|n| n.node == node).map_or(0.0, |n| n.steps.iter().map(|s| s.duration_ms as f64).sum()) };
    let steps_ms: f64 = batches.iter().map(|b| b.iter().map(|n| own(n)).fold(0.0, f64::max)).sum();
    let per: Vec<f64> = r.nodes.iter().map(|n| n.elapsed_ms as f64 - own(&n.node)).collect();
    Row {
        label: label.into(),
        wall_ms: wall.as_secs_f64() * 1000.0,
        steps_ms,
        per_server_overhead_ms: per.iter().sum::<f64>() / per.len().max(1) as f64,
        ok: r.nodes.iter().filter(|n| n.state == deploykit::deploy::controller::NodeState::Ok).count(),
        total: r.nodes.len(),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let n: usize = opt("--agents").map_or(100, |s| s.parse().expect("--agents N"));
    let readme = opt("--readme").map(PathBuf::from);
    let (_broker, url, broker_name) = match opt("--broker") {
        Some(u) => (None, u, "RabbitMQ/other".to_owned()),
        None => {
            let b = Broker::start(BrokerConfig::default()).await.expect("broker");
            let u = b.url();
            (Some(b), u, "embedded dk-broker".to_owned())
        }
    };
    let root = std::env::temp_dir().join(format!("dk-deploy-bench-{}", std::process::id()));
    let repo = root.join("site");
    std::fs::create_dir_all(repo.join("static")).unwrap();
    git(&repo, &["init", "-q"]);
    for v in 1..=3 {
        for f in 0..20 {
            std::fs::write(repo.join("static").join(format!("page{f}.html")), format!("<p>page {f} of release {v}</p>\n").repeat(50)).unwrap();
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", &format!("release {v}")]);
        git(&repo, &["tag", &format!("v{v}")]);
    }
    let key = SecretKey::generate().unwrap();
    let topic = format!("/topic/deploykit.bench.{}", std::process::id());
    let mut agents = Vec::new();
    for i in 0..n {
        let home = root.join(format!("srv{i:03}"));
        let hooks = home.join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        for h in ["pre-deploy", "pre-link", "post-deploy"] {
            std::fs::write(hooks.join(h), "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(hooks.join(h), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let toml = format!(
            "identity = \"srv{i:03}\"\nstate_dir = \"{h}/state\"\n[destinations]\ndeploy = \"{topic}\"\n[trusted_keys]\nbench = \"{}\"\n[sites.site]\nrepo = \"{}\"\nreleases = \"{h}/releases\"\ncurrent = \"{h}/current\"\nhooks = \"{h}/hooks\"\ndeploy = [\"bench\"]\n",
            key.public(),
            repo.display(),
            h = home.display()
        );
        let client = Client::connect(ClientConfig::new(&url).unwrap().vhost("/")).await.expect("agent connects");
        agents.push(Agent::start(AgentConfig::parse(&toml).unwrap(), client).await.unwrap());
    }
    let client = Client::connect(ClientConfig::new(&url).unwrap().vhost("/")).await.unwrap();
    let mut cc = ControllerConfig::new("bench", Some(key));
    cc.destinations.deploy = topic.clone();
    let controller = Controller::new(client, cc).await.unwrap();
    let spec = |tag: &str, canary: usize, batch: BatchSize| RolloutSpec {
        action: DeployAction::Deploy,
        site: "site".into(),
        tag: Some(tag.into()),
        filters: Filters::default(),
        canary,
        batch,
        max_failures: 0,
        timeout: Duration::from_secs(120),
        discovery: Window { timeout: Duration::from_secs(30), expect: Some(n) },
        expected: Vec::new(),
        allow_missing: false,
        allow_downgrade: false,
    };
    let run = |s: RolloutSpec| {
        let c = &controller;
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (_stop, stop) = tokio::sync::watch::channel(false);
            let t0 = Instant::now();
            let report = c.rollout(&s, tx, stop).await.expect("rollout");
            let wall = t0.elapsed();
            let mut batches = Vec::new();
            while let Ok(e) = rx.try_recv() {
                if let deploykit::deploy::controller::RolloutEvent::Planned { batches: b } = e {
                    batches = b;
                }
            }
            (report, batches, wall)
        }
    };
    // Warm-up: every server gets v1 (page cache, first release dirs).
    let (w, _, _) = run(spec("v1", 0, BatchSize::Percent(100))).await;
    assert!(w.ok(), "warm-up deploy failed");
    let (r25, b25, t25) = run(spec("v2", 1, BatchSize::Count(25))).await;
    let (r1, b1, t1) = run(spec("v3", 0, BatchSize::Count(1))).await;
    let rows = [analyse("canary 1, then `--batch 25`", &r25, &b25, t25), analyse("`--batch 1` (the original's one-after-another)", &r1, &b1, t1)];
    let mut md = String::new();
    md.push_str("<!-- deploy:start -->\n## Deploy\n\n");
    md.push_str(&format!(
        "A small site (20 files, ~1 MB) deployed to {n} agents on one machine through the {broker_name}, \
         each agent in-process with its own STOMP connection, release directory and three no-op hook \
         scripts (`exit 0`, so every server forks three processes). `discover` first (counted in wall \
         time), then the rollout; every server is on the previous tag already, so each deploy is a full \
         pre-deploy, checkout, pre-link, link swap and post-deploy. *Steps* is the critical path of the \
         servers' own step durations (per batch, its slowest server); *overhead* = wall − steps: signing, \
         discovery, the bus, scheduling. Same agents, one run (`bench/deploy.sh`).\n\n"
    ));
    md.push_str("| rollout | servers ok | wall | steps (critical path) | overhead | overhead per server (mean, beyond its own steps) |\n|---|---|---|---|---|---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {}/{} | {:.2} s | {:.2} s | **{:.2} s** | {:.1} ms |\n",
            r.label,
            r.ok,
            r.total,
            r.wall_ms / 1000.0,
            r.steps_ms / 1000.0,
            (r.wall_ms - r.steps_ms) / 1000.0,
            r.per_server_overhead_ms
        ));
    }
    md.push_str(&format!(
        "\nRatio: `--batch 1` takes **{:.1}×** the wall time of canary + `--batch 25`. Target (issue #5): {n} servers in under 3 s of overhead on the embedded broker: {}.\n<!-- deploy:end -->\n",
        rows[1].wall_ms / rows[0].wall_ms,
        if (rows[0].wall_ms - rows[0].steps_ms) < 3000.0 { "met" } else { "**missed**" }
    ));
    print!("{md}");
    if let Some(path) = readme {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let new = match (text.find("<!-- deploy:start -->"), text.find("<!-- deploy:end -->")) {
            (Some(a), Some(b)) => format!("{}{}{}", &text[..a], md.trim_end(), &text[b + "<!-- deploy:end -->".len()..]),
            _ => format!("{}\n{md}", text.trim_end()),
        };
        std::fs::write(&path, new).unwrap();
    }
    for a in agents {
        a.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
