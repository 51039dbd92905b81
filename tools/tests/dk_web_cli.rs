//! dk-web and dk-demo as real processes: --help, config errors and --check,
//! serving against a dk-broker process, SIGHUP re-reading the htpasswd file,
//! SIGTERM exit 0; dk-demo ending by itself with dk-web's site page fetched.

mod common;

use base64::Engine;
use common::{broker, http, temp_dir, Proc};
use deploykit::deploy::keys::SecretKey;
use std::process::Command;
use std::time::Duration;

fn dk_web() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dk-web"));
    c.env_remove("DK_BROKER_URL");
    c
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = dk_web().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("Examples") && text.contains("Exit codes") && text.contains("deployers"), "{text}");
}

#[test]
fn check_lists_every_problem_not_only_the_first() {
    let dir = temp_dir("web-check-all");
    let p = dir.join("web.toml");
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\nkey_file = {:?}\n[auth]\nmode = \"basic\"\nhtpasswd = {:?}\n[sites.www]\ndeployers = [\"ann\"]\n",
        dir.join("db/web.sqlite").display().to_string(),
        dir.join("missing.key").display().to_string(),
        dir.join("missing.htpasswd").display().to_string()
    );
    std::fs::write(&p, config).unwrap();
    let out = dk_web().arg("--check").arg("--config").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dk-web: auth:") && err.contains("missing.htpasswd"), "{err}");
    assert!(err.contains("dk-web: key_file:") && err.contains("missing.key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_errors_exit_2_and_check_reads_htpasswd_key_and_database() {
    let dir = temp_dir("web-cfg");
    let p = dir.join("web.toml");
    std::fs::write(&p, "[auth]\nmode = \"kerberos\"\n").unwrap();
    let out = dk_web().arg("--config").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("auth.mode"), "{err}");
    assert_eq!(dk_web().arg("--check").arg("--config").arg(&p).output().unwrap().status.code(), Some(1));
    // Proxy login without its proxies: no default list, --check says what to set.
    std::fs::write(&p, "[auth]\nmode = \"proxy\"\n").unwrap();
    let out = dk_web().arg("--check").arg("--config").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("auth.proxies") && err.contains("proxies = [\"127.0.0.1\"]"), "{err}");
    // Every address without public_url: refused, also when --listen asks for it.
    std::fs::write(&p, "listen = \"127.0.0.1:0\"\n").unwrap();
    let out = dk_web().args(["--check", "--listen", "0.0.0.0:8090", "--config"]).arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("public_url"), "{err}");

    let key = dir.join("web.key");
    SecretKey::generate().unwrap().save(&key).unwrap();
    let htpasswd = dir.join("htpasswd");
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = {:?}\nkey_file = {:?}\n[auth]\nmode = \"basic\"\nhtpasswd = {:?}\n[sites.www]\ndeployers = [\"ann\"]\n",
        dir.join("db/web.sqlite").display().to_string(),
        key.display().to_string(),
        htpasswd.display().to_string()
    );
    std::fs::write(&p, &config).unwrap();
    let out = dk_web().arg("--check").arg("--config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("htpasswd"), "the missing file is named");
    std::fs::write(&htpasswd, "ann:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let out = dk_web().arg("--check").arg("--config").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(":1: unsupported hash"), "{err}");
    std::fs::write(&htpasswd, format!("ann:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
    let out = dk_web().arg("--check").arg("--config").arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("ok: listen 127.0.0.1:0, 1 sites") && text.contains("signing key ed25519:"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serves_reloads_users_on_sighup_and_exits_0_on_sigterm() {
    let (_broker, url) = broker();
    let dir = temp_dir("web-run");
    let key = dir.join("web.key");
    SecretKey::generate().unwrap().save(&key).unwrap();
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, format!("ann:{}\n", bcrypt::hash("ann-pw", 4).unwrap())).unwrap();
    let p = dir.join("web.toml");
    std::fs::write(
        &p,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = {:?}\nkey_file = {:?}\ndiscovery_window = \"200ms\"\n[auth]\nmode = \"basic\"\nhtpasswd = {:?}\n[sites.www]\n",
            dir.join("web.sqlite").display().to_string(),
            key.display().to_string(),
            htpasswd.display().to_string()
        ),
    )
    .unwrap();
    let mut c = dk_web();
    c.arg("-v").arg("--config").arg(&p).arg("--broker").arg(&url);
    let mut web = Proc::spawn(c);
    let line = web.line(Duration::from_secs(30), |l| l.contains("dk-web: listening on http://"));
    let addr = line.rsplit("http://").next().unwrap().trim().to_owned();
    let (status, body) = http(&addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    assert!(body.contains("\"broker\":\"ready\""), "{body}");
    assert_eq!(http(&addr, "GET", "/", &[("Authorization", &basic("ann", "ann-pw"))], b"").0, 200);
    assert_eq!(http(&addr, "GET", "/", &[("Authorization", &basic("bob", "bob-pw"))], b"").0, 401);
    std::fs::write(&htpasswd, format!("ann:{}\nbob:{}\n", bcrypt::hash("ann-pw", 4).unwrap(), bcrypt::hash("bob-pw", 4).unwrap())).unwrap();
    web.signal("HUP");
    web.line(Duration::from_secs(30), |l| l.contains("configuration reloaded"));
    assert_eq!(http(&addr, "GET", "/", &[("Authorization", &basic("bob", "bob-pw"))], b"").0, 200);
    web.signal("TERM");
    let (code, _) = web.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dk_demo_ends_by_itself_after_fetching_dk_webs_site_page() {
    let out = Command::new(env!("CARGO_BIN_EXE_dk-demo")).env_remove("DK_BROKER_URL").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("dk-web: http://127.0.0.1:"), "{text}");
    assert!(text.contains("dk-web: GET /sites/site: 3 servers, tags and branches v1.1 v1.0"), "{text}");
    assert!(text.contains("dk-demo: done."), "{text}");
}

#[test]
fn api_tokens_made_by_the_cli_and_dk_deploy_history_as_a_client() {
    use std::os::unix::fs::PermissionsExt;
    let (_broker, url) = broker();
    let dir = temp_dir("web-api");
    let key = dir.join("web.key");
    SecretKey::generate().unwrap().save(&key).unwrap();
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, format!("ann:{}\n", bcrypt::hash("ann-pw", 4).unwrap())).unwrap();
    let tokens = dir.join("web-tokens");
    let p = dir.join("web.toml");
    std::fs::write(
        &p,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase = {:?}\nkey_file = {:?}\ndiscovery_window = \"200ms\"\n[api]\ntokens = {:?}\n[auth]\nmode = \"basic\"\nhtpasswd = {:?}\n\
             [sites.www]\ndeployers = [\"ann\"]\n[sites.shop]\ndeployers = [\"ann\"]\n",
            dir.join("web.sqlite").display().to_string(),
            key.display().to_string(),
            tokens.display().to_string(),
            htpasswd.display().to_string()
        ),
    )
    .unwrap();
    let token_cmd = |args: &[&str]| dk_web().arg("--config").arg(&p).arg("token").args(args).output().unwrap();
    // add: the token once on stdout, only its hash in the 0600 file.
    let out = token_cmd(&["add", "--user", "ann", "--sites", "www", "--name", "ci"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("dkt_") && token.len() == 47, "{token}");
    let file = std::fs::read_to_string(&tokens).unwrap();
    assert!(file.contains("ci ann www sha256:") && !file.contains(&token[4..]), "{file}");
    assert_eq!(std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(token_cmd(&["add", "--user", "ann", "--sites", "nope", "--name", "x"]).status.code(), Some(2));
    assert_eq!(token_cmd(&["add", "--user", "ann", "--sites", "www", "--name", "ci"]).status.code(), Some(2), "names are unique");
    let list = token_cmd(&["list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && text.contains("ci") && text.contains("www") && !text.contains(&token[4..]), "{text}");

    let mut c = dk_web();
    c.arg("-v").arg("--config").arg(&p).arg("--broker").arg(&url);
    let mut web = Proc::spawn(c);
    let line = web.line(Duration::from_secs(30), |l| l.contains("dk-web: listening on http://"));
    let addr = line.rsplit("http://").next().unwrap().trim().to_owned();
    let bearer = format!("Bearer {token}");
    // A deploy through the API (no agent answers here: it ends in error, and History keeps it).
    let (status, body) = http(&addr, "POST", "/api/v1/sites/www/deploys", &[("Authorization", &bearer)], b"{\"tag\":\"v1\",\"reason\":\"CHG-7\"}");
    assert_eq!(status, 202, "{body}");
    assert_eq!(http(&addr, "POST", "/api/v1/sites/shop/deploys", &[("Authorization", &bearer)], b"{\"tag\":\"v1\"}").0, 403, "outside the token's sites");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !http(&addr, "GET", "/api/v1/deploys/1", &[("Authorization", &bearer)], b"").1.contains("\"finished\":true") {
        assert!(std::time::Instant::now() < deadline, "the deploy never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dk_deploy = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dk-deploy"));
        c.env_remove("DK_WEB_TOKEN").env_remove("DK_WEB_URL").env("HOME", std::env::temp_dir());
        c.args(["history", "--web", &format!("http://{addr}")]);
        c
    };
    // The History page's table: header and the row.
    let out = dk_deploy().env("DK_WEB_TOKEN", &token).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["#", "when", "who", "via", "site", "action", "tag", "servers", "result", "reason"], "{text}");
    let row = lines.next().unwrap();
    for want in ["1 ", " UTC", " ann ", " dk-web ", " www ", " deploy ", " v1 ", " all ", "CHG-7"] {
        assert!(row.contains(want), "{want:?} in {row:?}");
    }
    let page = http(&addr, "GET", "/history", &[("Authorization", &basic("ann", "ann-pw"))], b"").1;
    let result = text.lines().nth(1).unwrap().split_whitespace().nth(10).unwrap().to_owned();
    assert!(page.contains(&format!("data-deploy=\"1\" data-result=\"{result}\"")), "the page's result is {result}: {page}");
    // --json, the token from a file, the site filter.
    let tf = dir.join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let out = dk_deploy().arg("--token-file").arg(&tf).args(["--json", "--site", "www", "--limit", "5"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((rows[0]["id"].as_i64(), rows[0]["site"].as_str(), rows[0]["reason"].as_str()), (Some(1), Some("www"), Some("CHG-7")), "{rows}");
    // No token: usage (2); outside the scope or a wrong token: refused (1), saying why.
    assert_eq!(dk_deploy().output().unwrap().status.code(), Some(2));
    let out = dk_deploy().env("DK_WEB_TOKEN", &token).args(["--site", "shop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    // Revoked and SIGHUP: refused.
    assert!(token_cmd(&["revoke", "ci"]).status.success());
    web.signal("HUP");
    web.line(Duration::from_secs(30), |l| l.contains("configuration reloaded"));
    let out = dk_deploy().env("DK_WEB_TOKEN", &token).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("unknown or revoked token") && !err.contains(&token[4..]), "{err}");
    web.signal("TERM");
    assert_eq!(web.wait_exit(Duration::from_secs(30)).0, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
