//! A git server that accepts the connection and then says nothing (hung,
//! overloaded, or a connection its full accept queue dropped): with
//! `git_timeout` the fetch fails within it instead of blocking its repository
//! until TCP gives up (~15 minutes). Its own test binary: libgit2's timeouts
//! are process-wide.

use deploykit::fetch::config::FetchConfig;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_silent_git_server_fails_the_fetch_within_git_timeout() {
    let dir = std::env::temp_dir().join(format!("dk-fetch-timeout-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    // Accepts every connection and never answers (the sockets stay open).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || silent.incoming().take(4).filter_map(Result::ok).collect::<Vec<_>>());
    let clone: PathBuf = dir.join("site");
    let ok = Command::new("git").args(["init", "-q"]).arg(&clone).status().unwrap().success()
        && Command::new("git").arg("-C").arg(&clone).args(["remote", "add", "origin", &format!("git://127.0.0.1:{port}/site")]).status().unwrap().success();
    assert!(ok, "git init / remote add");
    let config =
        FetchConfig::parse(&format!("git_timeout = \"1s\"\n[broker]\nurl = \"stomp://127.0.0.1:1\"\n[repos.site]\npath = {:?}\nmode = \"normal\"\n", clone.to_str().unwrap()))
            .unwrap();
    assert_eq!(config.git_timeout, Some(Duration::from_secs(1)));
    deploykit::git::timeouts::set(config.git_timeout);
    let t0 = Instant::now();
    let res = deploykit::fetch::ops::run("site", &config.repos["site"], None, Duration::from_secs(600));
    let took = t0.elapsed();
    assert!(res.is_err(), "a silent server cannot give a successful fetch: {res:?}");
    assert!(took < Duration::from_secs(10), "the fetch gave up after {took:?}, not within git_timeout (1 s) plus slack");
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
