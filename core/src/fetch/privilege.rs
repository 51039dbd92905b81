//! Running a repository's git work as its configured `user`.
//!
//! `setuid` in a multi-threaded daemon is unsafe, and `su`/a shell is never
//! used. Instead the daemon spawns a helper process (normally its own binary
//! with a hidden subcommand, `dk-fetch __fetch-as`) with
//! `setgroups(2)`, `setgid(2)` and `setuid(2)` run in the child between fork
//! and `exec` (`CommandExt::pre_exec`), a minimal
//! environment (`HOME`, `USER`, `LOGNAME`, `PATH`, plus the https token
//! variable the repository names), the request as one JSON line on stdin and
//! the [`FetchOutcome`](super::ops::FetchOutcome) as one JSON line on stdout. The child
//! side is [`child_main`]. A user without a login shell works: no shell runs.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::RepoConfig;
use super::ops::{Checkout, FetchError, FetchOutcome, Request};

pub use crate::user::{lookup_user, Passwd};

/// Runs `repo`'s fetch the way its configuration asks: in this process when
/// no `user` is set (or it is the current user), else in a child made by
/// `child` (the daemon's own binary with its hidden `__fetch-as` subcommand,
/// which calls [`child_main`]) running as that user.
pub fn run_configured(name: &str, repo: &RepoConfig, refname: Option<&str>, lock_stale_after: Duration, child: impl FnOnce() -> Command) -> Result<FetchOutcome, FetchError> {
    run_configured_request(name, repo, &Request::tip(refname), lock_stale_after, child)
}

/// As [`run_configured`], with what to check out given by `request` ([`super::ops::run_request`]).
pub fn run_configured_request(name: &str, repo: &RepoConfig, request: &Request, lock_stale_after: Duration, child: impl FnOnce() -> Command) -> Result<FetchOutcome, FetchError> {
    validate(request)?;
    let Some(user) = &repo.user else {
        return super::ops::run_request(name, repo, request, lock_stale_after);
    };
    let pw = lookup_user(user)
        .map_err(|e| FetchError::User { user: user.clone(), message: format!("cannot look up: {e}") })?
        .ok_or_else(|| FetchError::User { user: user.clone(), message: "no such user".into() })?;
    if rustix::process::geteuid().as_raw() == pw.uid {
        return super::ops::run_request(name, repo, request, lock_stale_after);
    }
    run_as_user_request(child(), user, name, repo, request, lock_stale_after)
}

/// The message-borne parts of a request, checked before any process is started.
fn validate(request: &Request) -> Result<(), FetchError> {
    if let Some(r) = &request.refname {
        super::ops::validate_refname(r)?;
    }
    if let Checkout::Built(candidates) = &request.checkout {
        for c in candidates {
            super::ops::validate_built_commit(c)?;
        }
    }
    Ok(())
}

/// What the parent sends the child (one JSON line on stdin).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildRequest {
    /// Configured repository name.
    pub name: String,
    /// Its configuration.
    pub repo: RepoConfig,
    /// The pushed ref, if any.
    pub refname: Option<String>,
    /// What to check out (absent from older parents: the branch tip).
    #[serde(default)]
    pub checkout: Checkout,
    /// `lock_stale_after` in milliseconds.
    pub lock_stale_after_ms: u64,
    /// The user the child must be running as (checked by the child).
    pub uid: u32,
}

/// The environment variable handing `git_timeout` (milliseconds) to the child.
pub const GIT_TIMEOUT_ENV: &str = "DK_FETCH_GIT_TIMEOUT_MS";

/// What the child answers (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildReply {
    /// The fetch ran.
    Ok(FetchOutcome),
    /// It failed; the error's text.
    Error(String),
}

/// Runs [`super::ops::run_request`] as `user` in a child process made from `cmd`
/// (e.g. `Command::new(std::env::current_exe()?).arg("__fetch-as")`; the
/// command's program must call [`child_main`]). Needs root unless `user` is
/// the current user, in which case the child is still used (same code path).
pub fn run_as_user_request(mut cmd: Command, user: &str, name: &str, repo: &RepoConfig, request: &Request, lock_stale_after: Duration) -> Result<FetchOutcome, FetchError> {
    validate(request)?;
    let pw = lookup_user(user)
        .map_err(|e| FetchError::User { user: user.into(), message: format!("cannot look up: {e}") })?
        .ok_or_else(|| FetchError::User { user: user.into(), message: "no such user".into() })?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && euid != pw.uid {
        return Err(FetchError::User { user: user.into(), message: format!("switching to uid {} needs root (running as uid {euid})", pw.uid) });
    }
    let timeout = cmd.get_envs().find(|(k, _)| *k == GIT_TIMEOUT_ENV).and_then(|(_, v)| v.map(|v| v.to_owned()));
    cmd.env_clear();
    if let Some(t) = timeout {
        cmd.env(GIT_TIMEOUT_ENV, t);
    }
    cmd.env("HOME", &pw.home)
        .env("USER", &pw.name)
        .env("LOGNAME", &pw.name)
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(var) = &repo.credentials.https_token_env {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    if euid == 0 {
        let drop = crate::user::switch_to(&pw);
        // SAFETY: the closure only calls setgroups/setgid/setuid (async-signal-safe)
        // on memory allocated before fork; see `user::switch_to`.
        unsafe {
            cmd.pre_exec(drop);
        }
    }
    let request = ChildRequest {
        name: name.into(),
        repo: repo.clone(),
        refname: request.refname.clone(),
        checkout: request.checkout.clone(),
        lock_stale_after_ms: lock_stale_after.as_millis() as u64,
        uid: pw.uid,
    };
    let child_err = |message: String| FetchError::Child { user: user.into(), message };
    let mut child = cmd.spawn().map_err(|e| child_err(format!("cannot start the helper process: {e}")))?;
    let line = serde_json::to_string(&request).map_err(|e| child_err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(line.as_bytes()).and_then(|()| stdin.write_all(b"\n"));
    }
    let out = child.wait_with_output().map_err(|e| child_err(format!("waiting for the helper process: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().find_map(|l| serde_json::from_str::<ChildReply>(l).ok()) {
        Some(ChildReply::Ok(o)) => Ok(o),
        Some(ChildReply::Error(e)) => Err(child_err(e)),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(child_err(format!("helper process exited with {} without an answer: {}", out.status, stderr.trim())))
        }
    }
}

/// The child side: reads one [`ChildRequest`] from stdin, checks it runs as
/// the requested uid, runs [`super::ops::run_request`] and prints one [`ChildReply`].
/// The reply is written on a line of its own (preceded by a newline, so a
/// wrapper's partial line before it does not matter). Exit code 0 when the
/// reply was written (even for a failed fetch).
pub fn child_main() -> ExitCode {
    // Still one thread: libgit2's process-wide timeouts can be set.
    let timeout = std::env::var(GIT_TIMEOUT_ENV).ok().and_then(|v| v.parse::<u64>().ok()).map(Duration::from_millis);
    crate::git::timeouts::set(timeout);
    let mut input = String::new();
    let reply = match std::io::stdin().take(1 << 20).read_to_string(&mut input) {
        Err(e) => ChildReply::Error(format!("reading the request: {e}")),
        Ok(_) => match serde_json::from_str::<ChildRequest>(input.trim()) {
            Err(e) => ChildReply::Error(format!("invalid request: {e}")),
            Ok(req) => {
                // SAFETY: getuid/geteuid have no preconditions.
                let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
                if uid != req.uid || euid != req.uid {
                    ChildReply::Error(format!("helper runs as uid {uid}/{euid}, expected {}", req.uid))
                } else {
                    let request = Request { refname: req.refname, checkout: req.checkout };
                    match super::ops::run_request(&req.name, &req.repo, &request, Duration::from_millis(req.lock_stale_after_ms)) {
                        Ok(o) => ChildReply::Ok(o),
                        Err(e) => ChildReply::Error(e.to_string()),
                    }
                }
            }
        },
    };
    match serde_json::to_string(&reply) {
        Ok(line) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "\n{line}").and_then(|()| out.flush()).is_ok() {
                return ExitCode::SUCCESS;
            }
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}
