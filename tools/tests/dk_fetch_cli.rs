//! dk-fetch's command line: --check, --once, --help, run as the built binary.

use std::process::Command;

fn dk_fetch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-fetch"));
    c.env_remove("DK_BROKER_URL");
    c
}

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dk-fetch-cli-{}-{}", std::process::id(), name));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("fetch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_on_a_broken_config_exits_1_naming_the_line() {
    let p = tmp("syntax", "node = \"web01\"\n\n[repos.site]\npath = /srv/git/site\n");
    let out = dk_fetch().arg("--check").arg("--config").arg(&p).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("{}:4:", p.display())), "names the file and line 4: {text}");
}

#[test]
fn check_on_a_missing_repo_path_exits_1_naming_the_key() {
    let p = tmp("path", "node = \"web01\"\n[repos.site]\npath = \"/nonexistent/dk-fetch-test\"\nmode = \"normal\"\n");
    let out = dk_fetch().arg("--check").arg("--config").arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("repos.site"), "{text}");
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = dk_fetch().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("--once") && text.contains("Exit codes"), "{text}");
}

#[test]
fn once_without_a_broker_fetches_and_reports_failure() {
    let p = tmp("once", "node = \"web01\"\n[broker]\nurl = \"stomp://127.0.0.1:1\"\n[repos.site]\npath = \"/nonexistent/dk-fetch-test\"\nmode = \"normal\"\n");
    let out = dk_fetch().args(["--once", "--connect-attempts", "1", "--config"]).arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("site: FAILED"), "{text}");
}
