//! `--import-legacy` of every tool whose predecessor had a config, run as the
//! built binaries: a realistic legacy file in, TOML out that the tool's own
//! `--check` accepts, and no secret of the legacy file on stdout or stderr.

mod common;

use common::TmpDir;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin(name: &str) -> Command {
    let path = match name {
        "dk-jenkins" => env!("CARGO_BIN_EXE_dk-jenkins"),
        "dk-keepalive" => env!("CARGO_BIN_EXE_dk-keepalive"),
        "dk-reprepro" => env!("CARGO_BIN_EXE_dk-reprepro"),
        "dk-apt-watch" => env!("CARGO_BIN_EXE_dk-apt-watch"),
        "dk-agent" => env!("CARGO_BIN_EXE_dk-agent"),
        "dk-web" => env!("CARGO_BIN_EXE_dk-web"),
        _ => unreachable!(),
    };
    let mut c = Command::new(path);
    c.env_remove("DK_BROKER_URL");
    c
}

/// The broker password every legacy file below carries in `rserver`.
const BROKER_PW: &str = "Br0ker-Pw-7781";

fn rserver() -> String {
    format!(
        "rserver: failover://(stomp://gituser:{BROKER_PW}@broker01:61613,stomp://gituser:{BROKER_PW}@broker02:61613)\n\
         stomp-options: initialReconnectDelay=0.01&randomize=false&useExponentialBackOff=true&MaxReconnectDelay=30&BackOffMultiplier=2&MaxReconnectAttempts=0&Backup=false&Timeout=-1\n"
    )
}

/// Runs `tool ARGS`; returns (exit code, stdout, stderr).
fn run(tool: &str, args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = bin(tool).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `tool --import-legacy FILE… [--secrets-dir DIR]`: succeeds, leaks none of `secrets`; the TOML is written to `out`.
fn import(tool: &str, files: &[&Path], secrets_dir: Option<&Path>, secrets: &[&str], out: &Path) -> String {
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    for f in files {
        args.push("--import-legacy".as_ref());
        args.push(f.as_os_str());
    }
    if let Some(d) = secrets_dir {
        args.push("--secrets-dir".as_ref());
        args.push(d.as_os_str());
    }
    let (code, stdout, stderr) = run(tool, &args);
    assert_eq!(code, Some(0), "{tool}: {stdout}\n{stderr}");
    for s in secrets {
        assert!(!stdout.contains(s) && !stderr.contains(s), "{tool} leaked {s:?}:\n{stdout}\n{stderr}");
    }
    std::fs::write(out, &stdout).unwrap();
    stderr
}

/// `tool --check --config FILE`: (exit code, stdout + stderr).
fn check(tool: &str, config: &Path) -> (Option<i32>, String) {
    let (code, out, err) = run(tool, &["--check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    (code, format!("{out}{err}"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn stomp_jenkins_tickets_become_token_files_and_check_passes() {
    let dir = TmpDir::new("imp-jenkins");
    let yaml = write(
        &dir.0,
        "stomp-jenkins.yaml",
        &format!(
            "---\n{}listen-topic: future.git.commits\nreport-topic: future.events.jenkins\njenkins-url: http://jenkins.example.org:8080\n\
             # repo-name: Jenkins-token\npuppet-environments: MagicJenkinsPassword\n\
             site:\n  project: web%20site\n  ticket: SiteTicket-4242\n  ignore_refs: refs/tags/jenkins-.*\n\
             svnrepo:\n  webapp:\n    project: webapp\n    ticket: SvnTicket-77\n",
            rserver()
        ),
    );
    let secrets = [BROKER_PW, "MagicJenkinsPassword", "SiteTicket-4242", "SvnTicket-77"];
    // Without --secrets-dir: placeholders, and a note for each on stderr.
    let out = dir.0.join("placeholder.toml");
    let notes = import("dk-jenkins", &[&yaml], None, &secrets, &out);
    let toml = std::fs::read_to_string(&out).unwrap();
    assert!(toml.contains("token_file = \"/etc/deploykit/tokens/puppet-environments\"") && toml.contains("passcode_file = \"/etc/deploykit/passcode\""), "{toml}");
    assert!(notes.contains("/etc/deploykit/tokens/site") && notes.contains("/etc/deploykit/passcode"), "{notes}");
    let (code, text) = check("dk-jenkins", &out);
    assert_eq!(code, Some(1), "the placeholder files do not exist yet: {text}");
    assert!(text.contains("token") && !text.contains("unknown field"), "{text}");

    // With --secrets-dir: each secret in its own 0600 file, and --check passes.
    let sdir = dir.0.join("secrets");
    let out = dir.0.join("jenkins.toml");
    import("dk-jenkins", &[&yaml], Some(&sdir), &secrets, &out);
    assert_eq!(std::fs::read_to_string(sdir.join("jenkins-site.token")).unwrap(), "SiteTicket-4242\n");
    assert_eq!(std::fs::read_to_string(sdir.join("passcode")).unwrap(), format!("{BROKER_PW}\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(sdir.join("jenkins-svnrepo-webapp.token")).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, text) = check("dk-jenkins", &out);
    assert_eq!(code, Some(0), "{text}\n{}", std::fs::read_to_string(&out).unwrap());
    assert!(text.contains("ok (3 repos)"), "{text}");

    // A broken legacy file: exit 2 naming the file, nothing on stdout.
    let bad = write(&dir.0, "bad.yaml", "jenkins-url: http://ci/\nsite:\n  ticket: t\n  ignore_refs: \"(\"\n");
    let (code, stdout, stderr) = run("dk-jenkins", &["--import-legacy".as_ref(), bad.as_os_str()]);
    assert_eq!((code, stdout.as_str()), (Some(2), ""), "{stderr}");
    assert!(stderr.contains("bad.yaml") && stderr.contains("ignore_refs"), "{stderr}");
}

#[test]
fn stomp_keepalive_destinations_become_targets_and_check_passes() {
    let dir = TmpDir::new("imp-keepalive");
    let yaml = write(
        &dir.0,
        "stomp-keepalive.yaml",
        "---\n# Corp\nstompserver1: broker01\nstompserver2: broker02\nstompport1: 61613\nstompport2: 61613\n\
         stomp-options: initialReconnectDelay=0.01&randomize=false&useExponentialBackOff=true&MaxReconnectDelay=30&BackOffMultiplier=2&MaxReconnectAttempts=0&Backup=false&Timeout=-1\n\
         topics:\n  future.git.commits:\n    user: gitbot\n    pass: GitBot-Pw-1\n    type: topic\n\n  future.randomqueue.dev:\n    user: queue-user\n    pass: Queue-Pw-2\n    type: queue\n",
    );
    let secrets = ["GitBot-Pw-1", "Queue-Pw-2"];
    let out = dir.0.join("placeholder.toml");
    let notes = import("dk-keepalive", &[&yaml], None, &secrets, &out);
    assert!(notes.contains("/etc/deploykit/keepalive-future.randomqueue.dev.pass"), "{notes}");
    let sdir = dir.0.join("secrets");
    let out = dir.0.join("keepalive.toml");
    import("dk-keepalive", &[&yaml], Some(&sdir), &secrets, &out);
    assert_eq!(std::fs::read_to_string(sdir.join("keepalive-future.git.commits.pass")).unwrap(), "GitBot-Pw-1\n");
    let (code, text) = check("dk-keepalive", &out);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("target future.git.commits: /topic/future.git.commits") && text.contains("target future.randomqueue.dev: /queue/future.randomqueue.dev"), "{text}");
    assert!(text.contains("ok: 2 target(s)"), "{text}");
}

#[test]
fn auto_reprepro_distros_become_dists_and_check_only_asks_for_the_base() {
    let dir = TmpDir::new("imp-reprepro");
    let incoming = dir.0.join("incoming");
    for d in ["squeeze", "wheezy"] {
        std::fs::create_dir_all(incoming.join(d).join("archive")).unwrap();
    }
    let yaml = write(
        &dir.0,
        "auto-reprepro.yaml",
        &format!(
            "---\n{}report-topic: future.events.repository\npackage-topic: future.package.updates\nincoming-dir: '{}/'\ndistro-list:\n  - squeeze\n  - wheezy\n",
            rserver(),
            incoming.display()
        ),
    );
    let out = dir.0.join("reprepro.toml");
    let notes = import("dk-reprepro", &[&yaml], None, &[BROKER_PW], &out);
    assert!(notes.contains("/var/www/repo"), "the fixed base is pointed out: {notes}");
    let (code, text) = check("dk-reprepro", &out);
    // The incoming directories exist; the repository (reprepro -b /var/www/repo) is not set up here.
    let prefix = format!("{}: ", out.display());
    for line in text.lines() {
        let rest = line.strip_prefix(&prefix).unwrap_or_else(|| panic!("every line names the file: {line}\n{text}"));
        assert!(rest.starts_with("base") || rest.starts_with("reprepro") || rest.starts_with("dpkg-deb") || rest.starts_with("ok"), "only the base may be missing: {line}\n{text}");
    }
    assert!(matches!(code, Some(0) | Some(1)), "{text}");
    let toml = std::fs::read_to_string(&out).unwrap();
    assert!(toml.contains(&format!("incoming = \"{}\"", incoming.join("wheezy").display())) && toml.contains("packages_topic = \"/topic/future.package.updates\""), "{toml}");
}

#[test]
fn stomp_repo_packages_become_apt_watch_and_check_passes() {
    let dir = TmpDir::new("imp-aptwatch");
    let yaml = write(
        &dir.0,
        "stomp-repo.yaml",
        &format!("---\n{}listen-topic: future.package.updates\nreport-topic: future.events.apt-watch\npackages:\n  - site-assets\n  - nginx\n", rserver()),
    );
    let out = dir.0.join("apt-watch.toml");
    import("dk-apt-watch", &[&yaml], None, &[BROKER_PW], &out);
    let (code, text) = check("dk-apt-watch", &out);
    if common::have("apt-get") || Path::new("/usr/bin/apt-get").exists() {
        assert_eq!(code, Some(0), "{text}");
    }
    assert!(text.contains("packages: site-assets nginx") && text.contains("topics: /topic/future.package.updates -> /topic/future.events.apt-watch"), "{text}");
}

#[test]
fn bloatagent_and_gitagent_files_become_agent_sites_and_check_passes() {
    let dir = TmpDir::new("imp-agent");
    let d = dir.0.display();
    let agent_yaml = write(&dir.0, "git-agent.yaml", &format!("---\n{}report-topic: future.events.deploys\n", rserver()));
    let site_yaml = write(
        &dir.0,
        "www.blah.com.yaml",
        &format!(
            "---\nsite-root: {d}/site\nrepo-root: {d}/repo\ndeploy-root: {d}/deploy\nuser-root: {d}/user\n\
             repo-list:\n  - name: wormpress\n    target: www.blah.com\n    base_tag: 3.4.1-future\n\n  - name: wp-tinymce-advanced\n    target: www.blah.com/wp-content/plugins/wp-tinymce-advanced\n    base_tag: 3.4.9.1\n\n\
             controldir: {d}/deploy/wormpress_3.4.1-future/future-control\n\
             directorymap:\n  - source: dodgy-uploaded-jpegs\n    target: wp-content/uploads\n"
        ),
    );
    let out = dir.0.join("agent.toml");
    let sdir = dir.0.join("secrets");
    let notes = import("dk-agent", &[&agent_yaml, &site_yaml], Some(&sdir), &[BROKER_PW], &out);
    assert!(notes.contains("trusted_keys"), "{notes}");
    assert_eq!(std::fs::read_to_string(sdir.join("passcode")).unwrap(), format!("{BROKER_PW}\n"));
    // A state_dir the test may write (the import keeps the default /var/lib/deploykit/agent).
    let toml = std::fs::read_to_string(&out).unwrap();
    std::fs::write(&out, format!("state_dir = \"{d}/state\"\n{toml}")).unwrap();
    let (code, text) = check("dk-agent", &out);
    assert_eq!(code, Some(0), "{text}\n{toml}");
    assert!(text.contains("site wormpress: repo ") && text.contains("site wp-tinymce-advanced"), "{text}");

    // gitagent's facts.yaml: a site per repo_NAME, the other facts as facts, secrets-looking ones left out.
    let facts = write(
        &dir.0,
        "facts.yaml",
        &format!("sitetype: live\ndb_password: Fact-Pw-3\nrepo_spog: {d}/git/spog\nsitedir_spog: {d}/www.spog.com\ncontroldir_spog: {d}/control/spog\n"),
    );
    let out = dir.0.join("agent2.toml");
    let notes = import("dk-agent", &[&agent_yaml, &facts], None, &[BROKER_PW, "Fact-Pw-3"], &out);
    assert!(notes.contains(&format!("mv {d}/www.spog.com")), "{notes}");
    let toml = std::fs::read_to_string(&out).unwrap();
    assert!(toml.contains("facts = { sitetype = \"live\" }") && toml.contains("passcode_file = \"/etc/deploykit/passcode\""), "{toml}");
    std::fs::write(&out, format!("state_dir = \"{d}/state\"\n{toml}")).unwrap();
    let (code, text) = check("dk-agent", &out);
    assert_eq!(code, Some(0), "{text}\n{toml}");
}

#[test]
fn grubby_sites_become_web_sites_and_check_passes() {
    let dir = TmpDir::new("imp-web");
    let yaml = write(
        &dir.0,
        "sites.yaml",
        "---\n# Anatomy of an entry: see grubby's README\nAn example site:\n  filter: identity_filter\n  payload: '/tessen|lazon|ledonia|brax/'\n  repo: example_repo\n  tags: 10\n  repo_type: git\n\n\
         A different site:\n  filter: fact_filter\n  payload: sitetype_externalfact=live\n  repo: different_repo\n  tags: 10\n  repo_type: git\n  api_token: Grubby-Tok-9\n",
    );
    let out = dir.0.join("web.toml");
    let notes = import("dk-web", &[&yaml], None, &["Grubby-Tok-9"], &out);
    assert!(std::fs::read_to_string(&out).unwrap().contains("# not imported: api_token = (value not shown"), "unknown keys are named, secrets not shown");
    assert!(notes.contains("deployers"), "{notes}");
    // The key and the history database are this host's (the defaults live under /etc and /var/lib).
    let key = dir.0.join("web.key");
    deploykit::deploy::keys::SecretKey::generate().unwrap().save(&key).unwrap();
    let toml = std::fs::read_to_string(&out).unwrap();
    std::fs::write(&out, format!("key_file = \"{}\"\ndatabase = \"{}\"\n{toml}", key.display(), dir.0.join("web.sqlite").display())).unwrap();
    let (code, text) = check("dk-web", &out);
    assert_eq!(code, Some(0), "{text}\n{toml}");
    assert!(text.contains("2 sites"), "{text}");
}
