//! What the packages are made of, checked from the built binaries: the man pages and
//! completions `scripts/package` generates, and the configs it ships in /etc/deploykit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every tool the packages ship, with its built binary.
const TOOLS: &[(&str, &str)] = &[
    ("dk-agent", env!("CARGO_BIN_EXE_dk-agent")),
    ("dk-apt-watch", env!("CARGO_BIN_EXE_dk-apt-watch")),
    ("dk-broker", env!("CARGO_BIN_EXE_dk-broker")),
    ("dk-demo", env!("CARGO_BIN_EXE_dk-demo")),
    ("dk-deploy", env!("CARGO_BIN_EXE_dk-deploy")),
    ("dk-fetch", env!("CARGO_BIN_EXE_dk-fetch")),
    ("dk-jenkins", env!("CARGO_BIN_EXE_dk-jenkins")),
    ("dk-keepalive", env!("CARGO_BIN_EXE_dk-keepalive")),
    ("dk-notify", env!("CARGO_BIN_EXE_dk-notify")),
    ("dk-reprepro", env!("CARGO_BIN_EXE_dk-reprepro")),
    ("dk-stomp", env!("CARGO_BIN_EXE_dk-stomp")),
    ("dk-web", env!("CARGO_BIN_EXE_dk-web")),
    ("dk-webhook", env!("CARGO_BIN_EXE_dk-webhook")),
];

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).env_remove("DK_BROKER_URL").output().expect("run the tool")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn every_tool_generates_its_man_page_and_completions_from_its_clap_definition() {
    for (name, bin) in TOOLS {
        let man = run(bin, &["__generate", "man"]);
        let page = String::from_utf8_lossy(&man.stdout);
        assert!(man.status.success(), "{name}: {}", text(&man));
        assert!(page.contains(&format!(".TH {name} 1")), "{name}: a section-1 page named for the tool:\n{page}");
        assert!(page.contains(".SH OPTIONS") || page.contains(".SH SUBCOMMANDS"), "{name}: lists its options:\n{page}");
        assert!(page.contains("help"), "{name}: --help is among them");
        for (shell, marker) in [("bash", "complete"), ("zsh", "#compdef"), ("fish", "complete -c")] {
            let out = run(bin, &["__generate", shell]);
            let script = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name} {shell}: {}", text(&out));
            assert!(script.contains(marker) && script.contains(name), "{name}: a {shell} completion for it:\n{script}");
        }
    }
}

#[test]
fn man_pages_into_a_directory_include_one_per_subcommand() {
    let dir = std::env::temp_dir().join(format!("dk-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(bin("dk-deploy"), &["__generate", "man", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let top = std::fs::read_to_string(dir.join("dk-deploy.1")).expect("dk-deploy.1");
    for sub in ["keygen", "deploy", "status"] {
        let page = dir.join(format!("dk-deploy-{sub}.1"));
        assert!(page.exists(), "{} is missing", page.display());
        assert!(top.contains(&format!("dk\\-deploy\\-{sub}(1)")), "dk-deploy.1 refers to dk-deploy-{sub}(1)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_artifact_is_refused_with_exit_64_and_nothing_on_stdout() {
    let (_, bin) = TOOLS[0];
    let out = run(bin, &["__generate", "powershell"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("man, bash, zsh or fish"), "{}", text(&out));
    // Without a kind, too.
    assert_eq!(run(bin, &["__generate"]).status.code(), Some(64));
}

#[test]
fn generate_is_not_offered_in_help() {
    for (name, bin) in TOOLS {
        let help = text(&run(bin, &["--help"]));
        assert!(!help.contains("__generate"), "{name} --help shows the hidden __generate:\n{help}");
    }
}

fn packaged(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc").join(format!("{name}.toml"))
}

fn bin(name: &str) -> &'static str {
    TOOLS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).expect("a packaged tool")
}

/// The configs whose --check needs nothing the package itself makes at install time
/// (dk-web's key and users, dk-reprepro's repository: the install suite checks those in a
/// Debian root).
#[test]
fn the_shipped_configs_pass_check_as_they_are() {
    for name in ["agent", "fetch", "apt-watch", "jenkins", "keepalive"] {
        let out = run(bin(&format!("dk-{name}")), &["--check", "--config", packaged(name).to_str().unwrap()]);
        assert!(out.status.success(), "dk-{name} --check on the shipped {name}.toml: {}", text(&out));
    }
}

#[test]
fn the_shipped_configs_set_nothing_but_the_broker_url_and_what_the_units_decide() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read_to_string(&path).unwrap();
        seen += 1;
        assert!(body.contains("[broker]\n") && body.contains("url = \"stomp://127.0.0.1:61613\""), "{}: a [broker] url", path.display());
        assert!(!body.contains("passcode =") && !body.contains("stomp://guest"), "{}: no password", path.display());
        for line in body.lines().filter(|l| l.contains("/var/") || l.contains("/etc/")) {
            if line.trim_start().starts_with('#') {
                continue;
            }
            // State where each unit's StateDirectory= puts it; secrets where the units load them from.
            assert!(line.contains("/var/lib/deploykit/") || line.contains("/etc/deploykit/"), "{}: a path outside the units' directories: {line}", path.display());
        }
    }
    assert_eq!(seen, 8, "one config per daemon with a config file");
}
