//! Attacks on dk-agent's filesystem handling, through a real in-process agent
//! with a real git repository and a controller on the embedded broker:
//! symlinks inside a tag's tree, hostile fields in the release journal and the
//! lock file, torn state files left by a crash, and the hooks' groups.
//! Synchronisation is on replies and on `Agent::start` (which runs recovery
//! before it returns), never on sleeps.

mod common;

use common::fleet::{agent_toml, fleet_trust, git, script, tagged_repo, Tmp};
use common::targets::Target;
use deploykit::deploy::agent::{Agent, AgentConfig, AgentHandle};
use deploykit::deploy::controller::plan::BatchSize;
use deploykit::deploy::controller::{Controller, ControllerConfig, NodeResult, NodeState, RolloutSpec, Window};
use deploykit::deploy::keys::SecretKey;
use deploykit::message::{DeployAction, Filters};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// One agent (`node-a`, home `TMP/node-a`) serving site `www` from a repo with tags v1..v3, and a controller.
struct Rig {
    tmp: Tmp,
    repo: PathBuf,
    toml: String,
    agent: Option<AgentHandle>,
    controller: Controller,
    target: Target,
}

impl Rig {
    /// Starts the rig; `site` is appended to `[sites.www]`, `edit` may rewrite the whole agent.toml.
    async fn start(site: &str, edit: impl FnOnce(String) -> String) -> Rig {
        let target = Target::embedded().await;
        let tmp = Tmp::new("deploy-fs");
        let repo = tagged_repo(&tmp.0.join("www"), 3);
        let ops = SecretKey::generate().unwrap();
        let topic = target.dest("topic");
        let toml = edit(agent_toml("node-a", &tmp.0.join("node-a"), &repo, &topic, &[("ops", ops.public().to_string())], &format!("deploy = [\"ops\"]\n{site}")));
        let mut cc = ControllerConfig::new("ann", Some(ops));
        cc.destinations.deploy = topic;
        cc.trust = fleet_trust();
        cc.reply_to = target.reply_to();
        let controller = Controller::new(target.client().await, cc).await.unwrap();
        let mut rig = Rig { tmp, repo, toml, agent: None, controller, target };
        rig.restart().await;
        rig
    }

    /// (Re)starts the agent; recovery of interrupted deploys runs before this returns.
    async fn restart(&mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
        self.agent = Some(Agent::start(AgentConfig::parse(&self.toml).unwrap(), self.target.client().await).await.unwrap());
    }

    fn home(&self) -> PathBuf {
        self.tmp.0.join("node-a")
    }

    fn releases(&self) -> PathBuf {
        self.home().join("releases")
    }

    fn state(&self) -> PathBuf {
        self.releases().join(".deploykit")
    }

    /// The `version` file the live link shows.
    fn live(&self) -> Option<String> {
        std::fs::read_to_string(self.home().join("www/current/version")).ok().map(|s| s.trim().to_owned())
    }

    /// Release directories (hidden ones left out).
    fn release_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(self.releases()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect();
        v.sort();
        v
    }

    /// Deploys `tag` (or rolls back with `None`) to the one agent and returns its result.
    async fn run(&self, action: DeployAction, tag: Option<&str>) -> NodeResult {
        let spec = RolloutSpec {
            action,
            site: "www".into(),
            tag: tag.map(str::to_owned),
            filters: Filters::default(),
            canary: 1,
            batch: BatchSize::Count(1),
            max_failures: 0,
            timeout: Duration::from_secs(60),
            discovery: Window { timeout: Duration::from_secs(20), expect: Some(1) },
            expected: Vec::new(),
            allow_missing: false,
            allow_downgrade: false,
        };
        let (tx, _rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop) = watch::channel(false);
        let mut report = self.controller.rollout(&spec, tx, stop).await.unwrap();
        assert_eq!(report.nodes.len(), 1, "{report:#?}");
        report.nodes.remove(0)
    }

    async fn deploy(&self, tag: &str) -> NodeResult {
        self.run(DeployAction::Deploy, Some(tag)).await
    }

    /// Commits the work tree as it is now and tags it `tag`.
    fn tag_tree(&self, tag: &str, prepare: impl FnOnce(&Path)) {
        prepare(&self.repo);
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-q", "-m", tag]);
        git(&self.repo, &["tag", tag]);
    }
}

/// A directory with content that no deploy may touch.
fn victim(at: &Path) -> PathBuf {
    std::fs::create_dir_all(at.join("uploads")).unwrap();
    std::fs::write(at.join("uploads/precious"), "keep me\n").unwrap();
    std::fs::write(at.join("index.html"), "victim\n").unwrap();
    at.to_owned()
}

fn assert_untouched(victim: &Path) {
    assert_eq!(std::fs::read_to_string(victim.join("uploads/precious")).ok().as_deref(), Some("keep me\n"), "victim's files must survive");
    assert!(!std::fs::symlink_metadata(victim.join("uploads")).unwrap().file_type().is_symlink(), "no symlink planted in the victim");
    assert_eq!(std::fs::read_to_string(victim.join("index.html")).unwrap(), "victim\n");
}

fn replace_with_symlink(repo: &Path, name: &str, to: &Path) {
    let p = repo.join(name);
    let _ = std::fs::remove_dir_all(&p);
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(to, &p).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_whose_tree_links_out_cannot_delete_or_plant_through_user_links() {
    let shared = Tmp::new("deploy-fs-shared");
    let rig = Rig::start(&format!("user_links = [{{ source = \"{}\", target = \"public/uploads\" }}]", shared.0.display()), |t| t).await;
    let abs_victim = victim(&rig.tmp.0.join("victim-abs"));
    let rel_victim = victim(&rig.tmp.0.join("victim-rel"));
    // The legitimate case: public/ is a real directory, uploads becomes the shared link.
    rig.tag_tree("ok", |r| {
        std::fs::create_dir_all(r.join("public")).unwrap();
        std::fs::write(r.join("public/index.html"), "site\n").unwrap();
    });
    let r = rig.deploy("ok").await;
    assert_eq!(r.state, NodeState::Ok, "{r:#?}");
    assert_eq!(std::fs::read_link(rig.releases().join("www_ok/public/uploads")).unwrap(), shared.0);
    // public -> /abs/victim, and public -> ../../../victim-rel (from RELEASES/DIR/ up to the test dir).
    rig.tag_tree("evil-abs", |r| replace_with_symlink(r, "public", &abs_victim));
    rig.tag_tree("evil-rel", |r| replace_with_symlink(r, "public", Path::new("../../../victim-rel")));
    for (tag, v) in [("evil-abs", &abs_victim), ("evil-rel", &rel_victim)] {
        let r = rig.deploy(tag).await;
        assert_eq!(r.state, NodeState::Failed, "{tag}: {r:#?}");
        let e = r.error.as_deref().unwrap_or_default();
        assert!(e.starts_with("checkout:") && e.contains("public: is a symlink; refusing to follow it"), "{tag}: {e}");
        assert_untouched(v);
        assert_eq!(rig.live().as_deref(), Some("v3"), "{tag}: the old release stays live");
        assert_eq!(std::fs::read_link(rig.home().join("www/current")).unwrap(), rig.releases().join("www_ok"));
        assert_eq!(rig.release_dirs(), vec!["www_ok"], "{tag}: half-made release removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_path_that_is_a_symlink_in_the_tag_is_refused_before_the_swap() {
    let mut current = String::new();
    let rig = Rig::start("", |t| {
        // `current` → RELEASE/htdocs instead of the release itself.
        let line = t.lines().find(|l| l.starts_with("current = ")).unwrap().to_owned();
        current = line.trim_start_matches("current = ").to_owned();
        t.replace(&line, &format!("links = [{{ target = {current}, path = \"htdocs\" }}]"))
    })
    .await;
    let victim = victim(&rig.tmp.0.join("victim"));
    rig.tag_tree("ok", |r| {
        std::fs::create_dir_all(r.join("htdocs")).unwrap();
        std::fs::write(r.join("htdocs/index.html"), "site\n").unwrap();
    });
    assert_eq!(rig.deploy("ok").await.state, NodeState::Ok);
    let link = PathBuf::from(current.trim_matches('"'));
    assert_eq!(std::fs::read_link(&link).unwrap(), rig.releases().join("www_ok/htdocs"));
    rig.tag_tree("evil", |r| replace_with_symlink(r, "htdocs", &victim));
    let r = rig.deploy("evil").await;
    assert_eq!(r.state, NodeState::Failed, "{r:#?}");
    assert!(r.error.as_deref().unwrap_or_default().contains("htdocs: is a symlink"), "{r:#?}");
    assert_eq!(std::fs::read_link(&link).unwrap(), rig.releases().join("www_ok/htdocs"), "the old release stays live");
    assert_eq!(rig.release_dirs(), vec!["www_ok"]);
    assert_untouched(&victim);
}

fn journal_entry(dir: &str, state: &str) -> serde_json::Value {
    serde_json::json!({ "dir": dir, "tag": "x", "commit": "0".repeat(40), "state": state, "at": 1, "request_id": "r", "user": "eve" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_dirs_that_leave_the_releases_dir_are_never_removed() {
    let rig = Rig::start("keep_releases = 2", |t| t).await;
    let victim = victim(&rig.tmp.0.join("victim"));
    assert_eq!(rig.deploy("v1").await.state, NodeState::Ok);
    // A journal edited (or forged) to name ../../victim as a failed release: cleanup would remove it.
    let file = rig.state().join("releases.json");
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    list.insert(0, journal_entry("../../victim", "failed"));
    list.insert(0, journal_entry("/tmp", "failed"));
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let r = rig.deploy("v2").await;
    assert_eq!(r.state, NodeState::Ok, "{r:#?}");
    assert_untouched(&victim);
    assert_eq!(rig.live().as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_fields_that_leave_the_releases_dir_are_refused_by_recovery() {
    let mut rig = Rig::start("", |t| t).await;
    let victim = victim(&rig.tmp.0.join("victim"));
    assert_eq!(rig.deploy("v1").await.state, NodeState::Ok);
    // A dead deploy's lock claiming it created ../../victim (recovery removes what a dead deploy created).
    let lock = serde_json::json!({
        "request_id": "dead", "user": "eve", "action": "deploy", "pid": 0, "acquired_at": 1, "expires_at": 2,
        "release": "../../victim", "previous": "../../victim", "phase": "preparing", "created": true
    });
    std::fs::write(rig.state().join("lock.json"), serde_json::to_vec(&lock).unwrap()).unwrap();
    rig.restart().await;
    assert_untouched(&victim);
    assert!(!rig.state().join("lock.json").exists(), "the stale lock is cleared after recovery");
    assert_eq!(std::fs::read_link(rig.home().join("www/current")).unwrap(), rig.releases().join("www_v1"), "links not pointed at the victim");
    assert_eq!(rig.deploy("v2").await.state, NodeState::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_lock_file_means_recovery_not_no_lock() {
    let mut rig = Rig::start("", |t| t).await;
    assert_eq!(rig.deploy("v1").await.state, NodeState::Ok);
    // The agent died while checking v2 out: a half-made release, journalled as building, and a lock torn mid-write.
    let half = rig.releases().join("www_v2");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("version"), "v2 (half)\n").unwrap();
    let file = rig.state().join("releases.json");
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    list.push(journal_entry("www_v2", "building"));
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    std::fs::write(rig.state().join("lock.json"), br#"{"request_id": "r-2", "user": "ann", "action": "dep"#).unwrap();
    rig.restart().await;
    assert!(!half.exists(), "recovery removed the half-made release");
    assert!(!rig.state().join("lock.json").exists(), "the torn lock is cleared after recovery");
    let journal = std::fs::read_to_string(&file).unwrap();
    assert!(!journal.contains("www_v2"), "{journal}");
    assert_eq!(rig.live().as_deref(), Some("v1"));
    let r = rig.deploy("v2").await;
    assert_eq!(r.state, NodeState::Ok, "{r:#?}");
    assert_eq!(rig.live().as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_release_journal_is_moved_aside_and_the_site_stays_deployable() {
    let rig = Rig::start("", |t| t).await;
    assert_eq!(rig.deploy("v1").await.state, NodeState::Ok);
    let file = rig.state().join("releases.json");
    let body = std::fs::read(&file).unwrap();
    std::fs::write(&file, &body[..body.len() / 2]).unwrap();
    let r = rig.deploy("v2").await;
    assert_eq!(r.state, NodeState::Ok, "{r:#?}");
    assert_eq!(rig.live().as_deref(), Some("v2"));
    let aside: Vec<String> =
        std::fs::read_dir(rig.state()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("releases.json.corrupt-")).collect();
    assert_eq!(aside.len(), 1, "the torn journal is kept for inspection");
    let journal = std::fs::read_to_string(&file).unwrap();
    assert!(journal.contains("www_v2") && !journal.contains("www_v1"), "{journal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_run_with_the_users_supplementary_groups() {
    if !deploykit::sys::is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let (user, group) = ("dkhookuser", "dkhookextra");
    if Command::new("getent").args(["group", group]).output().unwrap().stdout.is_empty() {
        assert!(Command::new("groupadd").args(["--system", group]).status().unwrap().success(), "groupadd");
    }
    if deploykit::user::lookup_user(user).unwrap().is_none() {
        let st = Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", group, user]).status().unwrap();
        assert!(st.success(), "useradd");
    }
    let pw = deploykit::user::lookup_user(user).unwrap().unwrap();
    let gid: u32 = String::from_utf8(Command::new("getent").args(["group", group]).output().unwrap().stdout).unwrap().split(':').nth(2).unwrap().parse().unwrap();
    let rig = Rig::start(&format!("user = \"{user}\""), |t| t).await;
    script(&rig.home().join("hooks/pre-deploy"), "id -u; id -G");
    let r = rig.deploy("v1").await;
    assert_eq!(r.state, NodeState::Ok, "{r:#?}");
    let out = &r.steps.iter().find(|s| s.step == "pre-deploy").unwrap().stdout;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(pw.uid.to_string().as_str()), "{out}");
    let groups: Vec<u32> = lines.next().unwrap().split_whitespace().map(|g| g.parse().unwrap()).collect();
    assert!(groups.contains(&gid), "supplementary group {gid} missing from {groups:?}");
    assert!(groups.contains(&pw.gid), "{groups:?}");
    assert!(!groups.contains(&0), "the agent's root group must not leak: {groups:?}");
}
