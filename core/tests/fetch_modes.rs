//! dk-fetch's repository side against real repositories: a central bare repo,
//! a work clone that pushes (git CLI), and the server's clone fetched by
//! `deploykit::fetch::ops::run` in each mode.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deploykit::fetch::config::{import_legacy, ConfigError, Credentials, FetchConfig, Mode, RepoConfig};
use deploykit::fetch::ops::{self, FetchError};

const STALE: Duration = Duration::from_secs(600);

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
    let root = std::env::temp_dir().join(format!("dk-fetch-modes-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let central = root.join("central.git");
    let work = root.join("work");
    let server = root.join("server");
    git(&root, &["init", "-q", "--bare", central.to_str().unwrap()]);
    git(&root, &["clone", "-q", central.to_str().unwrap(), work.to_str().unwrap()]);
    git(&work, &["checkout", "-q", "-b", "master"]);
    std::fs::write(work.join("index.html"), "v0\n").unwrap();
    std::fs::create_dir_all(work.join("lib")).unwrap();
    std::fs::write(work.join("lib/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["update-index", "--chmod=+x", "lib/run.sh"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", "origin", "master"]);
    git(&root, &["clone", "-q", central.to_str().unwrap(), server.to_str().unwrap()]);
    Setup { root, work, server }
}

impl Setup {
    fn commit(&self, file: &str, content: &str) -> String {
        if let Some(p) = Path::new(file).parent() {
            std::fs::create_dir_all(self.work.join(p)).unwrap();
        }
        std::fs::write(self.work.join(file), content).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", &format!("update {file}")]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
    fn push(&self, spec: &str) {
        git(&self.work, &["push", "-q", "-f", "origin", spec]);
    }
    fn repo(&self, mode: Mode) -> RepoConfig {
        RepoConfig {
            path: self.server.clone(),
            remote: "origin".into(),
            mode,
            target: mode.needs_target().then(|| self.root.join("www")),
            branch: None,
            user: None,
            fetch_tags: true,
            reclone: false,
            url: None,
            credentials: Credentials { ssh_agent: true, ..Credentials::default() },
            trigger: Default::default(),
            jobs: Vec::new(),
        }
    }
    fn commit_all(&self, msg: &str) {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", msg]);
    }
    fn write(&self, file: &str, content: &str) {
        std::fs::write(self.work.join(file), content).unwrap();
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

#[test]
fn normal_fetches_only() {
    let s = setup();
    let head = s.commit("index.html", "v1\n");
    s.push("master");
    let o = ops::run("site", &s.repo(Mode::Normal), Some("refs/heads/master"), STALE).unwrap();
    assert!(o.changed);
    assert_eq!(o.new_head.as_deref(), Some(head.as_str()));
    assert_eq!(git(&s.server, &["rev-parse", "origin/master"]), head);
    // The work tree of the clone is untouched.
    assert_eq!(read(s.server.join("index.html")), "v0\n");
    // Nothing new: not changed.
    let o = ops::run("site", &s.repo(Mode::Normal), None, STALE).unwrap();
    assert!(!o.changed, "{o:?}");
}

#[test]
fn trusting_checks_out_master_into_target_atomically() {
    let s = setup();
    let cfg = s.repo(Mode::Trusting);
    let target = cfg.target.clone().unwrap();
    let o = ops::run("site", &cfg, None, STALE).unwrap();
    assert!(o.changed);
    assert_eq!(read(target.join("index.html")), "v0\n");
    use std::os::unix::fs::PermissionsExt;
    assert!(std::fs::metadata(target.join("lib/run.sh")).unwrap().permissions().mode() & 0o100 != 0, "exec bit kept");
    assert!(std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());

    // A reader never sees a missing or partial tree during 50 updates.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, seen, target) = (stop.clone(), seen.clone(), target.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let a = std::fs::read_to_string(target.join("index.html")).expect("index.html always present");
                let b = std::fs::read_to_string(target.join("lib/run.sh")).expect("lib/run.sh always present");
                assert!(a.starts_with('v') && a.ends_with('\n'), "partial index.html {a:?}");
                assert!(b.starts_with("#!/bin/sh"), "partial run.sh {b:?}");
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 1..=50 {
        s.commit("index.html", &format!("v{i}\n{}\n", "x".repeat(10_000)));
        s.push("master");
        let o = ops::run("site", &cfg, Some("refs/heads/master"), STALE).unwrap();
        assert!(o.changed && o.actions.iter().any(|a| a.contains("checked out origin/master")), "{o:?}");
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw a complete tree every time");
    assert!(seen.load(Ordering::Relaxed) > 50);
    assert!(read(target.join("index.html")).starts_with("v50\n"));
    // Only the current and the previous version are kept.
    let versions = std::fs::read_dir(s.root.join(".www.dk-versions")).unwrap().count();
    assert!(versions <= 2, "{versions} versions kept");
}

#[test]
fn trusting_replaces_a_legacy_real_directory() {
    let s = setup();
    let cfg = s.repo(Mode::Trusting);
    let target = cfg.target.clone().unwrap();
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("old.txt"), "legacy").unwrap();
    ops::run("site", &cfg, None, STALE).unwrap();
    assert!(std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());
    assert_eq!(read(target.join("index.html")), "v0\n");
    assert!(!target.join("old.txt").exists());
}

#[test]
fn dangerous_checks_out_in_the_clone() {
    let s = setup();
    let head = s.commit("index.html", "v1\n");
    s.push("master");
    std::fs::write(s.server.join("index.html"), "local edit\n").unwrap();
    let o = ops::run("site", &s.repo(Mode::Dangerous), Some("master"), STALE).unwrap();
    assert!(o.changed);
    assert_eq!(read(s.server.join("index.html")), "v1\n");
    assert_eq!(git(&s.server, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&s.server, &["status", "--porcelain"]), "");
}

#[test]
fn branch_and_atomic_modes() {
    let s = setup();
    git(&s.work, &["checkout", "-q", "-b", "live"]);
    s.commit("index.html", "live1\n");
    s.push("live");
    let mut cfg = s.repo(Mode::Branch);
    cfg.branch = Some("live".into());
    ops::run("site", &cfg, Some("refs/heads/live"), STALE).unwrap();
    assert_eq!(read(s.root.join("www/index.html")), "live1\n");

    let mut cfg = s.repo(Mode::Atomic);
    cfg.branch = Some("live".into());
    s.commit("index.html", "live2\n");
    s.push("live");
    let o = ops::run("site", &cfg, Some("refs/heads/live"), STALE).unwrap();
    assert!(o.changed);
    assert_eq!(read(s.root.join("www_live/index.html")), "live2\n");

    // A branch that does not exist is a precise error.
    cfg.branch = Some("nope".into());
    let e = ops::run("site", &cfg, None, STALE).unwrap_err();
    assert!(matches!(e, FetchError::NoBranch { .. }) && e.to_string().contains("refs/remotes/origin/nope"), "{e}");
}

#[test]
fn puppetmaster_branch_dirs_created_updated_removed() {
    let s = setup();
    let cfg = s.repo(Mode::Puppetmaster);
    let www = s.root.join("www");
    git(&s.work, &["checkout", "-q", "-b", "feature/x"]);
    s.commit("env.txt", "fx1\n");
    s.push("feature/x");
    let o = ops::run("puppet", &cfg, Some("refs/heads/feature/x"), STALE).unwrap();
    assert!(o.changed, "{o:?}");
    assert_eq!(read(www.join("feature__x/env.txt")), "fx1\n");
    assert!(!www.join("master").exists(), "only the pushed branch");

    s.commit("env.txt", "fx2\n");
    s.push("feature/x");
    ops::run("puppet", &cfg, Some("refs/heads/feature/x"), STALE).unwrap();
    assert_eq!(read(www.join("feature__x/env.txt")), "fx2\n");

    // Reconcile creates the missing master directory.
    ops::run("puppet", &cfg, None, STALE).unwrap();
    assert_eq!(read(www.join("master/index.html")), "v0\n");

    // Deleting the branch removes its directory.
    git(&s.work, &["push", "-q", "origin", ":feature/x"]);
    let o = ops::run("puppet", &cfg, Some("refs/heads/feature/x"), STALE).unwrap();
    assert!(o.actions.iter().any(|a| a.contains("removed")), "{o:?}");
    assert!(!www.join("feature__x").exists());
    assert!(!www.join(".feature__x.dk-versions").exists());

    // Reconcile removes a deleted branch's directory too.
    git(&s.work, &["checkout", "-q", "-b", "gone"]);
    s.push("gone");
    ops::run("puppet", &cfg, None, STALE).unwrap();
    assert!(www.join("gone/index.html").exists());
    git(&s.work, &["push", "-q", "origin", ":gone"]);
    ops::run("puppet", &cfg, None, STALE).unwrap();
    assert!(!www.join("gone").exists());
    assert!(www.join("master/index.html").exists());
}

#[test]
fn tags_get_their_own_directories_once() {
    let s = setup();
    let cfg = s.repo(Mode::Tags);
    let www = s.root.join("www");
    git(&s.work, &["tag", "-a", "-m", "release", "v1.0"]);
    git(&s.work, &["push", "-q", "origin", "v1.0"]);
    let o = ops::run("rel", &cfg, Some("refs/tags/v1.0"), STALE).unwrap();
    assert!(o.changed, "{o:?}");
    assert_eq!(read(www.join("v1.0/index.html")), "v0\n");
    // A moved tag does not rewrite the existing directory; a new tag gets one.
    s.commit("index.html", "v2\n");
    git(&s.work, &["tag", "-f", "-a", "-m", "moved", "v1.0"]);
    git(&s.work, &["tag", "release/v2"]);
    git(&s.work, &["push", "-q", "-f", "origin", "--tags"]);
    ops::run("rel", &cfg, Some("refs/tags/release/v2"), STALE).unwrap();
    assert_eq!(read(www.join("v1.0/index.html")), "v0\n");
    assert_eq!(read(www.join("release__v2/index.html")), "v2\n");
}

fn refs_snapshot(repo: &Path) -> String {
    let mut s = git(repo, &["for-each-ref"]);
    s.push_str(&git(repo, &["reflog", "--all"]));
    s
}

#[test]
fn hostile_refnames_are_rejected_before_any_git_operation() {
    let s = setup();
    s.commit("index.html", "v1\n");
    s.push("master");
    let pwned = s.root.join("pwned");
    let before = refs_snapshot(&s.server);
    let upload = format!("--upload-pack=touch {}", pwned.display());
    for hostile in [upload.as_str(), "-x", "../../etc", "refs/heads/a..b", "a\0b", "master\nrefs/heads/x", "refs/heads/x y", "refs/heads/\x1b[31m", ""] {
        for mode in Mode::ALL {
            let e = ops::run("site", &s.repo(mode), Some(hostile), STALE).unwrap_err();
            assert!(matches!(e, FetchError::BadRefName { .. }), "{hostile:?} {mode}: {e}");
        }
        assert!(ops::validate_refname(hostile).is_err(), "{hostile:?}");
    }
    assert_eq!(refs_snapshot(&s.server), before, "no ref or reflog changed");
    assert!(!pwned.exists());
    assert!(!s.root.join("www").exists(), "no target created");
    for ok in ["refs/heads/master", "master", "refs/tags/v1.0", "feature/x"] {
        ops::validate_refname(ok).unwrap();
    }
}

#[test]
fn stale_lock_is_healed_young_lock_kept_and_reported() {
    let s = setup();
    s.commit("index.html", "v1\n");
    s.push("master");
    let lock = s.server.join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    // Young (age < bound): kept and reported.
    let o = ops::run("site", &s.repo(Mode::Normal), None, STALE).unwrap();
    assert!(lock.exists());
    assert!(o.warnings.iter().any(|w| w.contains("index.lock") && w.contains("recent")), "{o:?}");
    // The same lock with a bound it exceeds: removed and reported.
    std::thread::sleep(Duration::from_millis(20));
    let o = ops::run("site", &s.repo(Mode::Dangerous), None, Duration::from_millis(10)).unwrap();
    assert!(!lock.exists());
    assert!(o.healed.iter().any(|h| h.contains("removed stale") && h.contains("index.lock")), "{o:?}");
    assert_eq!(read(s.server.join("index.html")), "v1\n");
    // A shallow.lock held open by a live process is kept even when old.
    let shallow = s.server.join(".git/shallow.lock");
    let _held = std::fs::File::create(&shallow).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let o = ops::run("site", &s.repo(Mode::Normal), None, Duration::from_millis(10)).unwrap();
    assert!(shallow.exists());
    assert!(o.warnings.iter().any(|w| w.contains("shallow.lock") && w.contains("held open")), "{o:?}");
}

#[test]
fn corrupt_clone_reported_then_recloned() {
    let s = setup();
    let head = s.commit("index.html", "v1\n");
    s.push("master");
    // Corrupt: HEAD and the object store gone.
    std::fs::remove_file(s.server.join(".git/HEAD")).unwrap();
    std::fs::remove_dir_all(s.server.join(".git/objects")).unwrap();
    let cfg = s.repo(Mode::Trusting);
    let e = ops::run("site", &cfg, None, STALE).unwrap_err();
    assert!(matches!(e, FetchError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(s.server.to_str().unwrap()) && e.to_string().contains("corrupt"), "{e}");

    let mut cfg = cfg;
    cfg.reclone = true; // url read from the corrupt clone's config
    let o = ops::run("site", &cfg, None, STALE).unwrap();
    assert!(o.healed.iter().any(|h| h.contains("re-cloned")), "{o:?}");
    assert!(o.healed.iter().any(|h| h.contains("corrupt-")), "{o:?}");
    assert_eq!(git(&s.server, &["rev-parse", "origin/master"]), head);
    assert_eq!(read(s.root.join("www/index.html")), "v1\n");
    let kept = std::fs::read_dir(&s.root).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("server.corrupt-")).count();
    assert_eq!(kept, 1, "the corrupt clone is kept beside it");
}

#[test]
fn config_errors_name_line_column_and_key() {
    let e = FetchConfig::parse("node = \"a\"\n[repos.site]\npath = \"/srv/site\"\nmode = 3\n").unwrap_err();
    let ConfigError::Syntax { line, column, .. } = &e else { panic!("{e}") };
    assert_eq!((*line, *column), (4, 8), "{e}");
    assert!(e.to_string().starts_with("<config>:4:8:"), "{e}");

    let e = FetchConfig::parse("[repos.site]\npath = \"/srv/site\"\n\nmode = \"fancy\"\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("repos.site.mode: unknown mode \"fancy\" (expected normal, trusting, dangerous, branch, atomic, puppetmaster, tags)"), "{s}");
    assert!(s.contains("line 4"), "{s}");

    let e = FetchConfig::parse("[repos.site]\npath = \"/srv/site\"\nmode = \"branch\"\ntarget = \"/srv/www\"\n").unwrap_err();
    assert!(e.to_string().contains("repos.site: mode \"branch\" needs branch = \"…\""), "{e}");
    let e = FetchConfig::parse("[repos.site]\npath = \"/srv/site\"\nmode = \"trusting\"\n").unwrap_err();
    assert!(e.to_string().contains("repos.site: mode \"trusting\" needs target"), "{e}");
    let e = FetchConfig::parse("[repos.site]\npath = \"/srv/site\"\nbogus = 1\n").unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { line: 3, .. }) && e.to_string().contains("bogus"), "{e}");
    let e = FetchConfig::parse("reconcile_interval = \"soon\"\n").unwrap_err();
    assert!(e.to_string().contains("reconcile_interval"), "{e}");
    let e = FetchConfig::parse("[repos.site]\npath = \"/srv/site\"\nbranch = \"-x\"\n").unwrap_err();
    assert!(e.to_string().contains("repos.site.branch"), "{e}");

    // A file's errors name the file.
    let dir = std::env::temp_dir().join(format!("dk-fetch-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("fetch.toml");
    std::fs::write(&f, "[broker\n").unwrap();
    let e = FetchConfig::load(&f).unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}:1:", f.display())), "{e}");
    let _ = std::fs::remove_dir_all(&dir);

    let c = FetchConfig::parse(
        "node = \"web01\"\nmax_parallel = 2\nreconcile_interval = \"off\"\nlock_stale_after = \"5m\"\n[broker]\nurl = \"stomp://b:61613\"\n[repos.site]\npath = \"/srv/site\"\nmode = \"puppetmaster\"\ntarget = \"/etc/puppet/environments\"\nuser = \"puppet\"\n[repos.site.credentials]\nssh_key = \"/etc/dk/key\"\n",
    )
    .unwrap();
    let r = &c.repos["site"];
    assert_eq!((r.mode, r.remote.as_str(), r.fetch_tags, r.user.as_deref()), (Mode::Puppetmaster, "origin", true, Some("puppet")));
    assert_eq!((c.max_parallel, c.reconcile_interval, c.lock_stale_after), (2, None, Duration::from_secs(300)));
    assert_eq!(c.commits_topic, "/topic/deploykit.git.commits");
}

#[test]
fn import_legacy_yaml_gives_accepted_toml() {
    let yaml = r#"
stomp-server: broker.example.com
repo-list:
  site:
    user: www-data
    repo: /srv/git/site
    target: /srv/www/site
    mode: trusting
  puppet:
    user: puppet
    repo: /etc/puppet/repo
    target: /etc/puppet/environments
    mode: puppetmaster
  plain:
    repo: /srv/git/plain
    mode: normal
"#;
    let toml = import_legacy(yaml, &Default::default()).unwrap().toml;
    let c = FetchConfig::parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(c.repos.len(), 3);
    assert_eq!(c.repos["site"].mode, Mode::Trusting);
    assert_eq!(c.repos["site"].user.as_deref(), Some("www-data"));
    assert_eq!(c.repos["puppet"].target.as_deref(), Some(Path::new("/etc/puppet/environments")));
    assert_eq!(c.commits_topic, "/topic/future.git.commits", "legacy wire and topics");
    assert!(toml.contains("# not imported: stomp-server = broker.example.com"), "{toml}");
    assert!(import_legacy("repo-list:\n  x:\n    mode: normal\n", &Default::default()).unwrap_err().to_string().contains("repo-list.x: missing repo"));
}

#[test]
fn check_names_each_problem() {
    let s = setup();
    // A target the daemon would create (parent missing) is fine; one below a regular file is not.
    std::fs::write(s.root.join("afile"), "x").unwrap();
    let bare_parent = s.root.join("afile/deeper");
    let text = format!(
        "[broker]\npasscode_file = \"{root}/no-passcode\"\n\
         [repos.good]\npath = \"{server}\"\n\
         [repos.missing]\npath = \"{root}/absent\"\n\
         [repos.notgit]\npath = \"{root}\"\n\
         [repos.noremote]\npath = \"{server}\"\nremote = \"upstream\"\n\
         [repos.target]\npath = \"{server}\"\nmode = \"trusting\"\ntarget = \"{bare_parent}/www\"\n\
         [repos.fresh]\npath = \"{server}\"\nmode = \"trusting\"\ntarget = \"{root}/nowhere/deeper/www\"\n\
         [repos.who]\npath = \"{server}\"\nuser = \"dk-no-such-user-xyz\"\n",
        root = s.root.display(),
        server = s.server.display(),
        bare_parent = bare_parent.display()
    );
    let c = FetchConfig::parse(&text).unwrap();
    let problems = c.check();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let has = |key: &str, what: &str| assert!(text.iter().any(|t| t.starts_with(key) && t.contains(what)), "{key} {what}: {text:#?}");
    has("broker.passcode_file", "no-passcode");
    has("repos.missing.path", "does not exist");
    has("repos.notgit.path", "is not a git repository");
    has("repos.noremote.remote", "no remote \"upstream\"");
    has("repos.target.target", "afile is not a directory");
    has("repos.who.user", "no such user");
    assert!(!text.iter().any(|t| t.starts_with("repos.good") || t.starts_with("repos.fresh")), "{text:#?}");
    assert_eq!(problems.len(), 6, "{text:#?}");
}

/// Child side for the privilege test: the test binary re-executed with this
/// test's name as filter acts as `dk-fetch __fetch-as`.
#[test]
fn fetch_as_child_entry() {
    if std::env::args().any(|a| a == "dk_fetch_child_marker") {
        let code = deploykit::fetch::privilege::child_main();
        std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
    }
}

#[test]
fn privilege_drop_runs_git_as_the_user() {
    if !deploykit::sys::is_root() {
        eprintln!("skipped: privilege drop needs root");
        return;
    }
    let user = "dkfetchtest";
    if deploykit::fetch::privilege::lookup_user(user).unwrap().is_none() {
        let st = Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]).status().unwrap();
        assert!(st.success(), "useradd");
    }
    let pw = deploykit::fetch::privilege::lookup_user(user).unwrap().unwrap();
    let s = setup();
    s.commit("index.html", "v1\n");
    s.push("master");
    // libgit2 refuses a local repository (the server's clone, and the central
    // one it fetches from by path) owned by another user: both go to the user.
    let st = Command::new("chown").args(["-R", &format!("{}:{}", pw.uid, pw.gid)]).arg(&s.server).arg(s.root.join("central.git")).status().unwrap();
    assert!(st.success());
    // The target's parent belongs to the user; the central repo is readable by all.
    let www_parent = s.root.join("pub");
    std::fs::create_dir_all(&www_parent).unwrap();
    Command::new("chown").arg(format!("{}:{}", pw.uid, pw.gid)).arg(&www_parent).status().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = s.repo(Mode::Trusting);
    cfg.target = Some(www_parent.join("www"));
    cfg.user = Some(user.into());
    let exe = std::env::current_exe().unwrap();
    let o = deploykit::fetch::privilege::run_configured("site", &cfg, Some("refs/heads/master"), STALE, || {
        let mut c = Command::new(&exe);
        c.args(["--exact", "fetch_as_child_entry", "--nocapture", "--test-threads=1", "dk_fetch_child_marker"]);
        c
    });
    let o = o.unwrap_or_else(|e| panic!("{e}"));
    assert!(o.changed, "{o:?}");
    let target = www_parent.join("www");
    assert_eq!(read(target.join("index.html")), "v1\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(target.join("index.html")).unwrap().uid(), pw.uid, "written by the user");
    assert_eq!(std::fs::metadata(s.server.join(".git/FETCH_HEAD")).unwrap().uid(), pw.uid, "fetched by the user");
}

// The attacks of issue #12 on dk-fetch (puppetmaster names, symlinks in the tree).

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

#[test]
fn check_judges_a_target_as_the_configured_user() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    let closed = s.root.join("closed");
    let open = s.root.join("open");
    for (d, mode) in [(&closed, 0o755), (&open, 0o1777)] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let text = format!(
        "[repos.closed]\npath = \"{server}\"\nmode = \"trusting\"\nuser = \"nobody\"\ntarget = \"{closed}/a/www\"\n\
         [repos.open]\npath = \"{server}\"\nmode = \"trusting\"\nuser = \"nobody\"\ntarget = \"{open}/a/www\"\n",
        server = s.server.display(),
        closed = closed.display(),
        open = open.display()
    );
    let problems: Vec<String> = FetchConfig::parse(&text).unwrap().check().iter().map(|p| p.to_string()).collect();
    let targets: Vec<&String> = problems.iter().filter(|p| p.contains(".target:")).collect();
    assert_eq!(
        targets,
        [&format!("repos.closed.target: cannot create {}/a (where checkouts go): {} is not writable by user nobody", closed.display(), closed.display())],
        "{problems:#?}"
    );
}
