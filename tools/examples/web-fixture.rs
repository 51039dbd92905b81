//! The browser suite's fixture (not a user-facing tool): an embedded broker,
//! a bare git repo with tags, three in-process agents (web01..web03) and dk-web with
//! Basic login `ann` / `ann-pw`, all on 127.0.0.1. Site `www` deploys cleanly;
//! site `shop` has a pre-deploy hook that fails on the canary (web01).
//!
//! The repo is a bare one that takes pushes (`www.git`, so the git hook names it
//! `www`): the agents resolve tags in it and deploy from it, and each server
//! runs dk-fetch's daemon in process, keeping a clone of it checked out on green
//! builds of job `www-tests` (`trigger = "build"`). The test installs the real
//! hook in it and runs dk-jenkins and dk-notify against the broker.
//!
//! Prints one `KEY VALUE` line per thing a test needs, the `URL` line last:
//! `BROKER stomp://127.0.0.1:PORT`, `REPO /path/to/www.git`, `TOKEN dkt_…` (an
//! API token of ann's for both sites, tests/api), `URL http://127.0.0.1:PORT`;
//! then serves until stdin closes or SIGTERM.
//! `cargo run -p deploykit-tools --example web-fixture`.

use anyhow::{bail, Context, Result};
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::deploy::agent::{Agent, AgentConfig};
use deploykit::deploy::keys::SecretKey;
use deploykit::fetch::daemon::FetchDaemon;
use deploykit::fetch::FetchConfig;
use deploykit::stomp::{Client, ClientConfig};
use deploykit::web::{self, WebConfig};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Ann Example", "-c", "user.email=ann@example.org", "-c", "init.defaultBranch=master"])
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn hook(path: &Path, body: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let root = std::env::temp_dir().join(format!("dk-web-fixture-{}", std::process::id()));
    let result = run(&root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn run(root: &Path) -> Result<()> {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q"])?;
    for (i, (tag, msg)) in [("v1.0", "first release"), ("v1.1", "faster checkout page"), ("v1.2", "new product search")].iter().enumerate() {
        std::fs::write(repo.join("index.html"), format!("<h1>{msg}</h1>\n"))?;
        git(&repo, &["add", "index.html"])?;
        git(&repo, &["commit", "-q", "-m", msg])?;
        if i > 0 {
            std::fs::write(repo.join("notes.txt"), format!("{tag}\n"))?;
            git(&repo, &["add", "notes.txt"])?;
            git(&repo, &["commit", "-q", "-m", &format!("changelog for {tag}")])?;
        }
        git(&repo, &["tag", "-a", tag, "-m", &format!("release {tag}")])?;
    }
    // What the servers deploy and fetch from: a bare clone (tags included) that takes pushes.
    let seed = repo;
    let repo = root.join("www.git");
    git(root, &["clone", "-q", "--bare", &seed.display().to_string(), &repo.display().to_string()])?;
    let broker = Broker::start(BrokerConfig::default()).await?;
    let url = broker.url();
    let key = SecretKey::generate()?;
    let fleet = SecretKey::generate()?;
    let mut agents = Vec::new();
    for (n, name) in ["web01", "web02", "web03"].iter().enumerate() {
        let home = root.join(name);
        hook(&home.join("hooks-www/pre-deploy"), "echo \"pre-deploy $DK_SITE $DK_TAG: draining from the load balancer\"")?;
        hook(&home.join("hooks-www/post-deploy"), "echo \"serving $(cat \"$DK_RELEASE/index.html\")\"")?;
        let shop_pre = if n == 0 { "echo 'pre-deploy: database migration 42 failed' >&2; exit 1" } else { "echo ok" };
        hook(&home.join("hooks-shop/pre-deploy"), shop_pre)?;
        // Enrolled by the fixture's fleet key, which dk-web trusts.
        let agent_key = deploykit::deploy::identity::load_or_create(&home.join("state"))?;
        let cert = home.join("agent.cert");
        std::fs::write(&cert, deploykit::deploy::trust::Certificate::issue(&fleet, name, &agent_key.public(), deploykit::deploy::agent::releases::now() + 86_400))?;
        let mut toml = format!(
            "identity = \"{name}\"\nclasses = [\"web\"]\nstate_dir = {:?}\nenrollment = {:?}\n[trusted_keys]\nweb = \"{}\"\n",
            home.join("state").display().to_string(),
            cert.display().to_string(),
            key.public()
        );
        for site in ["www", "shop", "blog"] {
            toml.push_str(&format!(
                "[sites.{site}]\nrepo = {:?}\nreleases = {:?}\ncurrent = {:?}\nhooks = {:?}\ndeploy = [\"web\"]\nrollback = [\"web\"]\n",
                repo.display().to_string(),
                home.join(format!("releases-{site}")).display().to_string(),
                home.join(format!("{site}/current")).display().to_string(),
                home.join(format!("hooks-{site}")).display().to_string(),
            ));
        }
        let client = Client::connect(ClientConfig::new(&url)?).await?;
        agents.push(Agent::start(AgentConfig::parse(&toml)?, client).await?);
    }
    let mut fetchers = Vec::new();
    for name in ["web01", "web02", "web03"] {
        let home = root.join(name);
        let clone = home.join("clone");
        git(root, &["clone", "-q", &repo.display().to_string(), &clone.display().to_string()])?;
        let toml = format!(
            "node = \"{name}\"\nstate_dir = {:?}\nreconcile_interval = \"off\"\n[broker]\nurl = \"{url}\"\n\
             [repos.www]\npath = {:?}\nmode = \"trusting\"\ntarget = {:?}\ntrigger = \"build\"\njobs = [\"www-tests\"]\n",
            home.join("fetch-state").display().to_string(),
            clone.display().to_string(),
            home.join("checkout").display().to_string(),
        );
        fetchers.push(FetchDaemon::start(FetchConfig::parse(&toml)?, Client::connect(ClientConfig::new(&url)?).await?).await?);
    }
    let htpasswd = root.join("htpasswd");
    std::fs::write(&htpasswd, format!("ann:{}\nbob:{}\n", bcrypt::hash("ann-pw", 4)?, bcrypt::hash("bob-pw", 4)?))?;
    let mut config = WebConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\n[trust]\nfleet_keys = [\"{}\"]\n[auth]\nmode = \"basic\"\nhtpasswd = {:?}\n\
         [sites.www]\nrepo = \"www\"\nclass = [\"web\"]\ndeployers = [\"ann\"]\ncanary = 1\nbatch = \"2\"\n\
         [sites.shop]\nrepo = \"shop\"\nclass = [\"web\"]\ndeployers = [\"ann\"]\ncanary = 1\nbatch = \"2\"\n\
         [sites.blog]\nrepo = \"blog\"\nclass = [\"web\"]\ndeployers = [\"ann\"]\napprovers = [\"bob\"]\n",
        root.join("web.sqlite").display().to_string(),
        fleet.public(),
        htpasswd.display().to_string()
    ))?;
    // The API's token (tests/api): ann's, for the fixture's two sites, stored hashed.
    let api_token = web::api::tokens::add(&root.join("web-tokens"), "api-suite", "ann", &web::api::tokens::Sites::Only(vec!["www".into(), "shop".into()]))?;
    config.api_tokens = Some(root.join("web-tokens"));
    let handle = web::start(config, Client::connect(ClientConfig::new(&url)?).await?, key).await?;
    println!("BROKER {url}");
    println!("REPO {}", repo.display());
    println!("TOKEN {api_token}");
    println!("URL http://{}", handle.addr());
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            _ = term.recv() => break,
            line = lines.recv() => match line.as_deref() {
                None => break,
                Some(other) => eprintln!("web-fixture: ignoring {other:?} (close stdin to stop)"),
            },
        }
    }
    for f in fetchers {
        f.shutdown().await;
    }
    handle.shutdown(std::time::Duration::from_secs(5)).await;
    for a in agents {
        a.shutdown().await;
    }
    broker.shutdown().await;
    Ok(())
}
