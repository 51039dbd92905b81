//! A small deploy fleet for the deploy and web tests: a temp dir, a repo with
//! annotated tags v1..vN, hook scripts, and agent configs for in-process agents
//! (each enrolled with the tests' fleet key, which [`fleet_trust`] trusts).

use deploykit::deploy::keys::SecretKey;
use deploykit::deploy::trust::{Certificate, TrustConfig, TrustStore};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

/// A temporary directory removed on drop.
pub struct Tmp(pub PathBuf);

impl Tmp {
    /// A fresh directory named after `what`.
    pub fn new(what: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("dk-{what}-test-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs git with an argument vector; panics with its stderr on failure; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=master", "-c", "advice.detachedHead=false"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Writes an executable `#!/bin/sh` script.
pub fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A repo at `dir` whose commits `release N` write `version` = `vN`, each tagged `vN` (annotated).
pub fn tagged_repo(dir: &Path, tags: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    for v in 1..=tags {
        std::fs::write(dir.join("version"), format!("v{v}\n")).unwrap();
        git(dir, &["add", "version"]);
        git(dir, &["commit", "-q", "-m", &format!("release {v}")]);
        git(dir, &["tag", "-a", &format!("v{v}"), "-m", &format!("v{v}")]);
    }
    dir.to_owned()
}

/// The fleet key every test agent is enrolled with.
pub fn fleet_key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate().unwrap())
}

/// A trust store that believes agents enrolled with [`fleet_key`].
pub fn fleet_trust() -> Arc<TrustStore> {
    Arc::new(TrustStore::new(TrustConfig { fleet_keys: vec![fleet_key().public()], ..TrustConfig::default() }))
}

/// Enrolls `node` living in `home` with `fleet`: makes its identity key in `home/state`
/// (as dk-agent would on first start) and writes `home/agent.cert`; returns the cert's path.
pub fn enroll(fleet: &SecretKey, node: &str, home: &Path) -> PathBuf {
    let key = deploykit::deploy::identity::load_or_create(&home.join("state")).unwrap();
    let cert = Certificate::issue(fleet, node, &key.public(), deploykit::deploy::agent::releases::now() + 86_400);
    let path = home.join("agent.cert");
    std::fs::write(&path, cert).unwrap();
    path
}

/// agent.toml for `node` (class `web`) living in `home` (enrolled with [`fleet_key`]): site `www` from `repo`,
/// requests on `topic` (announcements and events on `topic.agents` / `topic.events`),
/// `trusted` keys by name, and `site` lines appended to `[sites.www]`.
pub fn agent_toml(node: &str, home: &Path, repo: &Path, topic: &str, trusted: &[(&str, String)], site: &str) -> String {
    std::fs::create_dir_all(home.join("hooks")).unwrap();
    let keys: String = trusted.iter().map(|(n, k)| format!("{n} = \"{k}\"\n")).collect();
    let cert = enroll(fleet_key(), node, home);
    format!(
        "identity = \"{node}\"\nenrollment = \"{}\"\nclasses = [\"web\"]\nfacts = {{ sitetype = \"live\" }}\nstate_dir = \"{home}/state\"\n\
         [destinations]\ndeploy = \"{topic}\"\nagents = \"{topic}.agents\"\nevents = \"{topic}.events\"\n\
         [trusted_keys]\n{keys}\
         [sites.www]\nrepo = \"{}\"\nreleases = \"{home}/releases\"\ncurrent = \"{home}/www/current\"\nhooks = \"{home}/hooks\"\n\
         step_timeout = \"60s\"\n{site}\n",
        cert.display(),
        repo.display(),
        home = home.display()
    )
}
