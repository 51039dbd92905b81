//! Attacks on dk-fetch's checkouts through the real fetch code
//! (`deploykit::fetch::ops::run`, what the daemon runs for each message) with
//! real repositories: forged commit messages in puppetmaster mode, colliding
//! branch names, and repository trees whose symlinks point outside the target.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deploykit::fetch::config::{Credentials, Mode, RepoConfig};
use deploykit::fetch::ops;

const STALE: Duration = Duration::from_secs(600);

/// A central bare repo, a work clone that pushes, and the server's clone; removed on drop.
struct Setup {
    root: PathBuf,
    work: PathBuf,
    server: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=master", "-c", "advice.detachedHead=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn setup() -> Setup {
    static N: AtomicUsize = AtomicUsize::new(0);
    let root = std::env::temp_dir().join(format!("dk-fetch-attacks-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (central, work, server) = (root.join("central.git"), root.join("work"), root.join("server"));
    git(&root, &["init", "-q", "--bare", central.to_str().unwrap()]);
    git(&root, &["clone", "-q", central.to_str().unwrap(), work.to_str().unwrap()]);
    git(&work, &["checkout", "-q", "-b", "master"]);
    std::fs::write(work.join("index.html"), "v0\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", "origin", "master"]);
    git(&root, &["clone", "-q", central.to_str().unwrap(), server.to_str().unwrap()]);
    Setup { root, work, server }
}

impl Setup {
    fn commit_all(&self, msg: &str) {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", msg]);
    }

    fn write(&self, file: &str, content: &str) {
        std::fs::write(self.work.join(file), content).unwrap();
    }

    fn push(&self, spec: &str) {
        git(&self.work, &["push", "-q", "-f", "origin", spec]);
    }

    fn repo(&self, mode: Mode) -> RepoConfig {
        RepoConfig {
            path: self.server.clone(),
            remote: "origin".into(),
            mode,
            target: Some(self.root.join("www")),
            branch: None,
            user: None,
            fetch_tags: true,
            reclone: false,
            url: None,
            credentials: Credentials { ssh_agent: true, ..Credentials::default() },
        }
    }

    fn www(&self) -> PathBuf {
        self.root.join("www")
    }

    /// A directory outside every target, with content no checkout may touch.
    fn victim(&self) -> PathBuf {
        let v = self.root.join("victim");
        std::fs::create_dir_all(v.join("data")).unwrap();
        std::fs::write(v.join("data/precious"), "keep\n").unwrap();
        v
    }
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn assert_untouched(victim: &Path) {
    assert_eq!(read(victim.join("data/precious")), "keep\n");
    let names: Vec<String> = std::fs::read_dir(victim).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["data"], "nothing written into the victim");
}

/// Attack: `feature/x` is live as environment `feature__x`; a forged message
/// "branch feature__x deleted" (no such branch) must not remove it.
#[test]
fn a_forged_deletion_of_a_colliding_name_keeps_the_live_environment() {
    let s = setup();
    let cfg = s.repo(Mode::Puppetmaster);
    git(&s.work, &["checkout", "-q", "-b", "feature/x"]);
    s.write("env.txt", "feature/x\n");
    s.commit_all("fx");
    s.push("feature/x");
    ops::run("puppet", &cfg, Some("refs/heads/feature/x"), STALE).unwrap();
    assert_eq!(read(s.www().join("feature__x/env.txt")), "feature/x\n");
    let o = ops::run("puppet", &cfg, Some("refs/heads/feature__x"), STALE).unwrap();
    assert!(!o.actions.iter().any(|a| a.contains("removed")), "{o:?}");
    assert!(o.warnings.iter().any(|w| w.contains("left in place")), "{o:?}");
    assert_eq!(read(s.www().join("feature__x/env.txt")), "feature/x\n", "the live environment of feature/x stays");
    // The real deletion of feature/x does remove it.
    git(&s.work, &["push", "-q", "origin", ":feature/x"]);
    let o = ops::run("puppet", &cfg, Some("refs/heads/feature/x"), STALE).unwrap();
    assert!(o.actions.iter().any(|a| a.contains("removed")), "{o:?}");
    assert!(!s.www().join("feature__x").exists() && !s.www().join(".feature__x.dk-branch").exists());
}

/// Attack: a second branch whose name maps to the same directory
/// (`feature__x` next to `feature/x`) must not take the environment over.
#[test]
fn colliding_branch_names_are_refused_and_the_environment_kept() {
    let s = setup();
    let cfg = s.repo(Mode::Puppetmaster);
    git(&s.work, &["checkout", "-q", "-b", "feature/x"]);
    s.write("env.txt", "feature/x\n");
    s.commit_all("fx");
    s.push("feature/x");
    ops::run("puppet", &cfg, Some("refs/heads/feature/x"), STALE).unwrap();
    git(&s.work, &["checkout", "-q", "-b", "feature__x"]);
    s.write("env.txt", "impostor\n");
    s.commit_all("impostor");
    s.push("feature__x");
    let e = ops::run("puppet", &cfg, Some("refs/heads/feature__x"), STALE).unwrap_err();
    assert!(e.to_string().contains("all map to environment feature__x"), "{e}");
    assert_eq!(read(s.www().join("feature__x/env.txt")), "feature/x\n");
    let o = ops::run("puppet", &cfg, None, STALE).unwrap();
    assert!(o.warnings.iter().any(|w| w.contains("all map to environment feature__x")), "{o:?}");
    assert_eq!(read(s.www().join("feature__x/env.txt")), "feature/x\n", "reconcile leaves it too");
    assert_eq!(read(s.www().join("master/index.html")), "v0\n", "other environments are still reconciled");
}

/// Audit: trees with symlinks that point outside (absolute, relative, nested)
/// are written as symlinks; checkout, update and removal never follow them.
#[test]
fn symlinks_in_the_tree_never_lead_writes_or_removals_outside_the_target() {
    for mode in [Mode::Trusting, Mode::Puppetmaster, Mode::Tags] {
        let s = setup();
        let victim = s.victim();
        let cfg = s.repo(mode);
        std::os::unix::fs::symlink(&victim, s.work.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../victim", s.work.join("rel")).unwrap();
        std::fs::create_dir_all(s.work.join("sub")).unwrap();
        std::os::unix::fs::symlink("../../../../victim/data", s.work.join("sub/data")).unwrap();
        s.commit_all("links");
        git(&s.work, &["tag", "t1"]);
        s.push("master");
        s.push("t1");
        ops::run("site", &cfg, None, STALE).unwrap();
        let tree = match mode {
            Mode::Trusting => s.www(),
            Mode::Puppetmaster => s.www().join("master"),
            _ => s.www().join("t1"),
        };
        assert!(std::fs::symlink_metadata(tree.join("abs")).unwrap().file_type().is_symlink(), "{mode:?}");
        // Replace the links by real directories of the same names, twice (the old trees are removed).
        for round in 0..2 {
            for l in ["abs", "rel", "sub/data"] {
                let p = s.work.join(l);
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("f"), format!("{round}\n")).unwrap();
            }
            s.commit_all(&format!("round {round}"));
            s.push("master");
            ops::run("site", &cfg, None, STALE).unwrap();
        }
        if mode == Mode::Puppetmaster {
            git(&s.work, &["checkout", "-q", "-b", "other"]);
            s.push("other");
            ops::run("site", &cfg, None, STALE).unwrap();
            git(&s.root.join("central.git"), &["symbolic-ref", "HEAD", "refs/heads/other"]);
            git(&s.work, &["push", "-q", "origin", ":master"]);
            ops::run("site", &cfg, Some("refs/heads/master"), STALE).unwrap();
            assert!(!s.www().join("master").exists());
        }
        assert_untouched(&victim);
    }
}
