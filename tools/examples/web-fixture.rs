//! The browser suite's fixture (not a user-facing tool): an embedded broker,
//! a git repo with tags, three in-process agents (web01..web03) and dk-web with
//! Basic login `ann` / `ann-pw`, all on 127.0.0.1. Site `www` deploys cleanly;
//! site `shop` has a pre-deploy hook that fails on the canary (web01).
//!
//! Prints `URL http://127.0.0.1:PORT` on stdout, then serves until stdin closes
//! or SIGTERM. `cargo run -p deploykit-tools --example web-fixture`.

use anyhow::{bail, Context, Result};
use deploykit::broker::{Broker, BrokerConfig};
use deploykit::deploy::agent::{Agent, AgentConfig};
use deploykit::deploy::keys::SecretKey;
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
        for site in ["www", "shop"] {
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
    let htpasswd = root.join("htpasswd");
    std::fs::write(&htpasswd, format!("ann:{}\n", bcrypt::hash("ann-pw", 4)?))?;
    let config = WebConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\n[trust]\nfleet_keys = [\"{}\"]\n[auth]\nmode = \"basic\"\nhtpasswd = {:?}\n\
         [sites.www]\nrepo = \"www\"\nclass = [\"web\"]\ndeployers = [\"ann\"]\ncanary = 1\nbatch = \"2\"\n\
         [sites.shop]\nrepo = \"shop\"\nclass = [\"web\"]\ndeployers = [\"ann\"]\ncanary = 1\nbatch = \"2\"\n",
        root.join("web.sqlite").display().to_string(),
        fleet.public(),
        htpasswd.display().to_string()
    ))?;
    let handle = web::start(config, Client::connect(ClientConfig::new(&url)?).await?, key).await?;
    println!("URL http://{}", handle.addr());
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (eof_tx, eof) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = eof_tx.send(());
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = eof => {}
    }
    handle.shutdown(std::time::Duration::from_secs(5)).await;
    for a in agents {
        a.shutdown().await;
    }
    broker.shutdown().await;
    Ok(())
}
