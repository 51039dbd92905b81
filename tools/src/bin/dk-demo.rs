//! dk-demo: the deploykit flow on one machine, on the embedded broker.
//!
//! This version shows push → fetch: an embedded broker, a central bare repo,
//! a publisher for pushes (the post-receive hook's Rust equivalent, in-process:
//! `deploykit::git::read_push` + `Publisher::commit`), and three "servers",
//! each with its own clone and an in-process fetch daemon (modes trusting,
//! atomic, tags). It pushes a commit, a new branch and a tag and prints when
//! each server had it.
//!
//! Then deploys: each server also runs an in-process deploy agent (site
//! `site`, from its clone, with hook scripts), and `deploykit::deploy::controller`
//! (dk-deploy's library) deploys the tag everywhere, tags a second release and
//! deploys it canary first, printing every server's steps, and finally rolls
//! one server back. Third version: dk-web (the web UI) on 127.0.0.1 over the
//! same agents, its URL printed and its site page fetched once; `--serve` keeps
//! it running for a browser until Ctrl-C. Later versions add builds.

use anyhow::{bail, Context, Result};
use clap::Parser;
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::deploy::agent::{Agent, AgentConfig, AgentHandle};
use deploykit::deploy::controller::plan::BatchSize;
use deploykit::deploy::controller::{Controller, ControllerConfig, RolloutSpec, Window};
use deploykit::deploy::keys::SecretKey;
use deploykit::fetch::config::FetchConfig;
use deploykit::fetch::daemon::{DaemonEvent, DaemonHandle, DaemonOptions, FetchDaemon};
use deploykit::message::{Commit, Publisher, Source};
use deploykit::message::{DeployAction, Filters};
use deploykit::stomp::{Client, ClientConfig};
use dk_tools::deploy_view::{summary, Progress};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Run the deploykit flow on one machine, on the embedded broker.
#[derive(Parser, Debug)]
#[command(
    name = "dk-demo",
    version,
    after_help = "Example:
  cargo run --release --bin dk-demo

Starts an embedded broker on 127.0.0.1 (an ephemeral port), creates a central git repo
and three servers (each a clone with an in-process dk-fetch) in a temporary directory,
pushes a commit, a branch and a tag, and prints when each server had them.
Then deploys with three in-process agents and starts dk-web on 127.0.0.1 (its URL is
printed; no login on loopback). --serve keeps everything running until Ctrl-C so you
can deploy from the browser.
Needs the git command. The temporary directory is removed at the end (--keep keeps it)."
)]
struct Cli {
    #[command(flatten)]
    log: dk_tools::logging::LogArgs,
    /// Keep the temporary directory (its path is printed).
    #[arg(long)]
    keep: bool,
    /// Keep dk-web, the agents and the broker running until Ctrl-C (open the printed URL).
    #[arg(long)]
    serve: bool,
}

/// The servers: name, mode, extra config.
const SERVERS: [(&str, &str, &str); 3] = [("server1", "trusting", ""), ("server2", "atomic", "branch = \"master\"\n"), ("server3", "tags", "")];

/// A temporary directory removed on drop (unless kept).
struct Tmp {
    path: PathBuf,
    keep: bool,
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs git with an argument vector (never a shell); returns stdout.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=dk-demo", "-c", "user.email=dk-demo@localhost", "-c", "init.defaultBranch=master", "-c", "advice.detachedHead=false"])
        .args(args)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("temporary path is not UTF-8")
}

/// The publisher side: what the post-receive hook does, in-process.
struct Hook {
    central: PathBuf,
    publisher: Publisher,
}

impl Hook {
    /// The current value of `refname` in the central repo (zeros if absent).
    fn rev(&self, refname: &str) -> String {
        git(&self.central, &["rev-parse", "-q", "--verify", refname]).unwrap_or_else(|_| deploykit::message::commit::ZERO_REV.to_owned())
    }

    /// Pushes `refspec` from `work`, then publishes the Commit of `refname`; returns it and when the push returned.
    async fn push(&self, work: &Path, refspec: &str, refname: &str) -> Result<(Commit, Instant)> {
        let old = self.rev(refname);
        git(work, &["push", "-q", "origin", refspec])?;
        let pushed = Instant::now();
        let new = self.rev(refname);
        let commits = deploykit::git::read_push(&self.central, &old, &new, refname, 20)?;
        let commit = Commit { repo: "site".into(), oldrev: old, newrev: new, refname: refname.into(), source: Source::Git, svn: None, commits, correlation_id: None };
        self.publisher.commit(&commit).await?;
        Ok((commit, pushed))
    }
}

struct Server {
    name: &'static str,
    mode: &'static str,
    target: PathBuf,
    events: broadcast::Receiver<DaemonEvent>,
    handle: DaemonHandle,
    client: Client,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = dk_tools::generate::parse::<Cli>();
    cli.log.init();
    let broker = Broker::start(BrokerConfig::default()).await.context("starting the embedded broker")?;
    let url = broker.url();
    let tmp = Tmp { path: std::env::temp_dir().join(format!("dk-demo-{}", std::process::id())), keep: cli.keep };
    std::fs::create_dir_all(&tmp.path)?;
    println!("dk-demo: embedded broker on {url}; working in {}", tmp.path.display());

    // The central repo and a developer's clone with a first commit.
    let central = tmp.path.join("central/site.git");
    let work = tmp.path.join("developer/site");
    std::fs::create_dir_all(central.parent().unwrap())?;
    git(&tmp.path, &["init", "-q", "--bare", path_str(&central)?])?;
    git(&tmp.path, &["clone", "-q", path_str(&central)?, path_str(&work)?])?;
    std::fs::write(work.join("index.html"), "<h1>hello</h1>\n")?;
    git(&work, &["add", "index.html"])?;
    git(&work, &["commit", "-q", "-m", "first page"])?;
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/master"])?;

    let hook_client = Client::connect(ClientConfig::new(&url)?).await?;
    let hook = Hook { central: central.clone(), publisher: Publisher::new(hook_client.clone(), "git-hook") };
    println!("dk-demo: publisher for pushes: the post-receive hook's Rust equivalent, in-process (read_push + Publisher)");

    // Three servers, each a clone with an in-process fetch daemon.
    let mut servers = Vec::new();
    for (name, mode, extra) in SERVERS {
        let clone = tmp.path.join(name).join("site");
        let target = tmp.path.join(name).join("www");
        git(&tmp.path, &["clone", "-q", path_str(&central)?, path_str(&clone)?])?;
        let toml = format!(
            "node = {name:?}\nreconcile_interval = \"off\"\n[broker]\nurl = {url:?}\n[repos.site]\npath = {:?}\nmode = {mode:?}\ntarget = {:?}\n{extra}",
            path_str(&clone)?,
            path_str(&target)?
        );
        let config = FetchConfig::parse(&toml).with_context(|| format!("{name}'s config"))?;
        let client = Client::connect(ClientConfig::new(&url)?).await?;
        let (tx, mut events) = broadcast::channel(256);
        let handle = FetchDaemon::start_with(config, client.clone(), DaemonOptions { observer: Some(tx), ..DaemonOptions::default() }).await?;
        let first = wait_fetched(&mut events, |r| r.trigger == "startup").await?;
        if !first.ok {
            bail!("{name}: start-up fetch failed: {}", first.error.unwrap_or_default());
        }
        servers.push(Server { name, mode, target, events, handle, client });
    }
    println!("dk-demo: 3 servers up: {}", servers.iter().map(|s| format!("{} ({})", s.name, s.mode)).collect::<Vec<_>>().join(", "));

    // 1. A commit on master.
    std::fs::write(work.join("index.html"), "<h1>hello, world</h1>\n")?;
    git(&work, &["commit", "-q", "-am", "greet the world"])?;
    let step = hook.push(&work, "HEAD:refs/heads/master", "refs/heads/master").await?;
    report("commit on master", &mut servers, step).await?;

    // 2. A new branch.
    git(&work, &["checkout", "-q", "-b", "feature"])?;
    std::fs::write(work.join("feature.html"), "<p>new</p>\n")?;
    git(&work, &["add", "feature.html"])?;
    git(&work, &["commit", "-q", "-m", "a feature"])?;
    let step = hook.push(&work, "HEAD:refs/heads/feature", "refs/heads/feature").await?;
    report("new branch feature", &mut servers, step).await?;

    // 3. A tag.
    git(&work, &["tag", "-a", "-m", "release 1.0", "v1.0", "master"])?;
    let step = hook.push(&work, "refs/tags/v1.0", "refs/tags/v1.0").await?;
    report("tag v1.0", &mut servers, step).await?;

    for s in &servers {
        let entries: Vec<String> =
            std::fs::read_dir(s.target.parent().unwrap())?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("www")).collect();
        let tagdir = s.target.join("v1.0");
        let extra = if s.mode == "tags" && tagdir.is_dir() { format!(", {} holds the tag", tagdir.display()) } else { String::new() };
        println!("dk-demo: {} ({}) checkouts: {}{extra}", s.name, s.mode, entries.join(" "));
    }
    deploy_part(&tmp.path, &url, &work, &hook, &mut servers, cli.serve).await?;

    for s in servers {
        s.handle.shutdown().await;
        let _ = s.client.disconnect().await;
    }
    let _ = hook_client.disconnect().await;
    broker.shutdown().await;
    if cli.keep {
        println!("dk-demo: kept {}", tmp.path.display());
    }
    drop(tmp);
    println!("dk-demo: done. Next steps: ./scripts/test runs every suite; dk-fetch --help, dk-agent --help, dk-deploy --help, dk-web --help; examples/; dk-demo --serve keeps the web UI up.");
    Ok(())
}

/// Prints, per server, how long after the push it had the change.
async fn report(what: &str, servers: &mut [Server], (commit, pushed): (Commit, Instant)) -> Result<()> {
    let id = commit.effective_correlation_id();
    println!("dk-demo: pushed {what} ({})", &commit.newrev[..12.min(commit.newrev.len())]);
    for s in servers.iter_mut() {
        let r = wait_fetched(&mut s.events, |r| r.trigger == "commit" && r.correlation_id.as_deref() == Some(id.as_str()))
            .await
            .with_context(|| format!("{} never fetched {what}", s.name))?;
        let ms = pushed.elapsed().as_secs_f64() * 1000.0 - 0.0;
        let status = match &r.error {
            None => "ok".to_owned(),
            Some(e) => format!("FAILED: {e}"),
        };
        // The arrival time is when the result was seen; the daemon reports the fetch's own duration too.
        println!("  {:<8} {:<9} fetched by +{ms:>6.1} ms (fetch took {} ms) {status}", s.name, s.mode, r.duration_ms);
    }
    Ok(())
}

async fn wait_fetched(rx: &mut broadcast::Receiver<DaemonEvent>, pred: impl Fn(&deploykit::message::FetchResult) -> bool) -> Result<deploykit::message::FetchResult> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(DaemonEvent::Fetched(r)) if pred(&r) => return Ok(r),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("daemon stopped: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait).await.context("no fetch within 15 s")?
}

/// Starts one in-process agent per server (site `site` from the server's clone).
/// Starts the three agents, each enrolled by `fleet` (as `dk-agent --print-key` + `dk-deploy enroll` would).
async fn start_agents(root: &Path, url: &str, key: &SecretKey, fleet: &SecretKey) -> Result<Vec<(AgentHandle, Client)>> {
    let mut agents = Vec::new();
    for (name, _, _) in SERVERS {
        let home = root.join(name);
        let agent_key = deploykit::deploy::identity::load_or_create(&home.join("agent-state"))?;
        let cert = home.join("agent.cert");
        let not_after = deploykit::deploy::agent::releases::now() + 86_400;
        std::fs::write(&cert, deploykit::deploy::trust::Certificate::issue(fleet, name, &agent_key.public(), not_after))?;
        let hooks = home.join("hooks");
        std::fs::create_dir_all(&hooks)?;
        for (hook, body) in [
            ("pre-deploy", "echo \"pre-deploy: $DK_SITE $DK_TAG (request $DK_REQUEST_ID)\""),
            ("post-deploy", "echo \"post-deploy: now serving $(cat \"$DK_RELEASE/index.html\")\""),
        ] {
            let path = hooks.join(hook);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        let toml = format!(
            "identity = {name:?}\nclasses = [\"web\"]\nstate_dir = {:?}\nenrollment = {:?}\n[trusted_keys]\ndemo = \"{}\"\n[sites.site]\nrepo = {:?}\nreleases = {:?}\ncurrent = {:?}\nhooks = {:?}\ndeploy = [\"demo\"]\n",
            path_str(&home.join("agent-state"))?,
            path_str(&cert)?,
            key.public(),
            path_str(&home.join("site"))?,
            path_str(&home.join("releases"))?,
            path_str(&home.join("live/current"))?,
            path_str(&hooks)?,
        );
        let config = AgentConfig::parse(&toml).with_context(|| format!("{name}'s agent config"))?;
        let client = Client::connect(ClientConfig::new(url)?).await?;
        agents.push((Agent::start(config, client.clone()).await?, client));
    }
    Ok(agents)
}

/// Runs one rollout, printing its events and the summary table.
async fn rollout(controller: &Controller, spec: RolloutSpec) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let view = tokio::spawn(async move {
        let mut p = Progress::new(false);
        while let Some(e) = rx.recv().await {
            p.event(&e);
        }
    });
    let report = controller.rollout(&spec, tx, stop).await?;
    let _ = view.await;
    print!("{}", summary(&report));
    if !report.ok() {
        bail!("the rollout failed");
    }
    Ok(())
}

/// The deploy half of the demo: agents, a canary-first deploy, a rollback.
async fn deploy_part(root: &Path, url: &str, work: &Path, hook: &Hook, servers: &mut [Server], serve: bool) -> Result<()> {
    let key = SecretKey::generate()?;
    let fleet = SecretKey::generate()?;
    let agents = start_agents(root, url, &key, &fleet).await?;
    let key_for_web = key.clone();
    println!(
        "dk-demo: 3 deploy agents up, each enrolled by the demo's fleet key {} (site `site`, releases under each server's releases/, hooks print what they see)",
        fleet.public()
    );
    let client = Client::connect(ClientConfig::new(url)?).await?;
    let mut cc = ControllerConfig::new("dk-demo", Some(key));
    cc.trust = std::sync::Arc::new(deploykit::deploy::trust::TrustStore::new(deploykit::deploy::trust::TrustConfig { fleet_keys: vec![fleet.public()], ..Default::default() }));
    let controller = Controller::new(client.clone(), cc).await?;
    let key = key_for_web;
    let spec = |action, tag: Option<&str>, filters: Filters| RolloutSpec {
        action,
        site: "site".into(),
        tag: tag.map(str::to_owned),
        filters: filters.clone(),
        canary: 1,
        batch: BatchSize::Count(2),
        max_failures: 0,
        timeout: Duration::from_secs(60),
        // Everyone answers, or only the servers -I names (the controller stops waiting then).
        discovery: Window { timeout: Duration::from_secs(10), expect: filters.identity.is_empty().then_some(SERVERS.len()) },
        expected: Vec::new(),
        allow_missing: false,
        allow_downgrade: false,
    };

    println!("\ndk-demo: deploy v1.0 to every server (canary server1, then a batch of 2)");
    rollout(&controller, spec(DeployAction::Deploy, Some("v1.0"), Filters::default())).await?;

    std::fs::write(work.join("index.html"), "<h1>hello, world, v1.1</h1>\n")?;
    git(work, &["checkout", "-q", "master"])?;
    git(work, &["commit", "-q", "-am", "v1.1 copy"])?;
    git(work, &["tag", "-a", "-m", "release 1.1", "v1.1"])?;
    let step = hook.push(work, "HEAD:refs/heads/master", "refs/heads/master").await?;
    report("commit for v1.1", servers, step).await?;
    let step = hook.push(work, "refs/tags/v1.1", "refs/tags/v1.1").await?;
    report("tag v1.1", servers, step).await?;

    let plan = controller.dry_run("site", "v1.1", Filters::default(), Window { timeout: Duration::from_secs(10), expect: Some(SERVERS.len()) }).await?;
    println!("\ndk-demo: dry run of v1.1:");
    for r in &plan {
        let log: Vec<&str> = r.data["log"].as_array().into_iter().flatten().filter_map(|e| e["subject"].as_str()).collect();
        println!("  {:<8} live {} -> v1.1: {}", r.node, r.data["current"].as_str().unwrap_or("-"), log.join("; "));
    }
    println!("\ndk-demo: deploy v1.1, canary first");
    rollout(&controller, spec(DeployAction::Deploy, Some("v1.1"), Filters::default())).await?;

    println!("\ndk-demo: roll server2 back to its previous good release");
    rollout(&controller, spec(DeployAction::Rollback, None, Filters { identity: vec!["server2".into()], ..Filters::default() })).await?;
    for (name, _, _) in SERVERS {
        let page = std::fs::read_to_string(root.join(name).join("live/current/index.html")).unwrap_or_default();
        println!("  {name:<8} serves {}", page.trim());
    }
    web_part(root, url, &key, &fleet, serve).await?;
    drop(controller);
    let _ = client.disconnect().await;
    for (a, c) in agents {
        a.shutdown().await;
        let _ = c.disconnect().await;
    }
    Ok(())
}

/// The web part: dk-web over the same agents, on loopback without a login.
async fn web_part(root: &Path, url: &str, key: &SecretKey, fleet: &SecretKey, serve: bool) -> Result<()> {
    let config = deploykit::web::WebConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\n[trust]\nfleet_keys = [\"{}\"]\n[auth]\nmode = \"none\"\nuser = \"demo\"\n[sites.site]\nrepo = \"site\"\nclass = [\"web\"]\ndeployers = [\"demo\"]\nbatch = \"2\"\n",
        path_str(&root.join("web.sqlite"))?,
        fleet.public()
    ))?;
    let client = Client::connect(ClientConfig::new(url)?).await?;
    let web = deploykit::web::start(config, client.clone(), key.clone()).await?;
    let addr = web.addr();
    println!("\ndk-web: http://{addr}/ (on loopback without a login: you are `demo`, a deployer of site `site`)");
    let page = http_get(addr, "/sites/site").await?;
    let servers = page.matches("data-server=").count();
    let tags: Vec<&str> = page.split("name=\"tag\" value=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    println!("dk-web: GET /sites/site: {servers} servers, tags and branches {}", tags.join(" "));
    if serve {
        println!("dk-web: --serve: open http://{addr}/sites/site in a browser and deploy; Ctrl-C ends the demo");
        tokio::signal::ctrl_c().await?;
    }
    web.shutdown(Duration::from_secs(5)).await;
    let _ = client.disconnect().await;
    Ok(())
}

/// A plain HTTP/1.1 GET on loopback (the demo's check that dk-web answers).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await.context("dk-web did not answer within 30 s")??;
    let text = String::from_utf8_lossy(&out).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        bail!("dk-web answered {}", text.lines().next().unwrap_or(""));
    }
    Ok(text)
}
