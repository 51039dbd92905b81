//! Running a site's hook scripts: argument vector `HOOK -t TAG`, cwd the hooks
//! directory, a clean environment plus `DK_*`, a timeout that kills the hook's
//! whole process group, and the last 64 KiB of stdout and stderr kept. With a
//! site `user`, the hook runs as that user with its supplementary groups
//! ([`crate::user::switch_to`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// How much of each output stream a step keeps (its tail).
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// What a hook run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// Exit code (`None` if killed by a signal or the timeout).
    pub exit_code: Option<i32>,
    /// Last 64 KiB of stdout (lossy UTF-8).
    pub stdout: String,
    /// Last 64 KiB of stderr (lossy UTF-8).
    pub stderr: String,
    /// Wall time.
    pub duration: Duration,
    /// Killed because it ran past the timeout.
    pub timed_out: bool,
    /// It could not be started at all (not executable, bad user, …).
    pub spawn_error: Option<String>,
}

impl HookRun {
    /// Whether the hook succeeded (exit 0).
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.spawn_error.is_none()
    }

    /// A one-line reason for a failure.
    pub fn why(&self) -> String {
        if let Some(e) = &self.spawn_error {
            return e.clone();
        }
        if self.timed_out {
            return format!("timed out after {:?}", self.duration);
        }
        match self.exit_code {
            Some(c) => format!("exited {c}"),
            None => "killed by a signal".into(),
        }
    }
}

/// One hook invocation.
#[derive(Debug, Clone)]
pub struct HookSpec {
    /// The hooks directory.
    pub dir: PathBuf,
    /// `pre-deploy`, `pre-link` or `post-deploy`.
    pub name: &'static str,
    /// The tag (`-t TAG`).
    pub tag: String,
    /// Extra environment (`DK_SITE`, `DK_TAG`, …).
    pub env: Vec<(String, String)>,
    /// Kill after this long.
    pub timeout: Duration,
    /// Run as this user (uid, gid, home, name).
    pub user: Option<crate::user::Passwd>,
}

/// The hook's path if it exists (`pre-deploy`, or the original's `pre-deploy.sh`).
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.sh"))].into_iter().find(|p| p.symlink_metadata().is_ok())
}

/// Runs the hook; `None` when it does not exist (skipped).
pub async fn run(spec: &HookSpec) -> Option<HookRun> {
    let path = find(&spec.dir, spec.name)?;
    Some(exec(&path, &["-t".to_owned(), spec.tag.clone()], spec).await)
}

/// Runs `argv` (an absolute program and its arguments, no shell) the way hooks run:
/// in `spec.dir`, with its user, environment and timeout.
pub async fn run_argv(argv: &[String], spec: &HookSpec) -> HookRun {
    match argv.split_first() {
        Some((program, args)) => exec(Path::new(program), args, spec).await,
        None => HookRun { exit_code: None, stdout: String::new(), stderr: String::new(), duration: Duration::ZERO, timed_out: false, spawn_error: Some("no program given".into()) },
    }
}

async fn exec(path: &Path, args: &[String], spec: &HookSpec) -> HookRun {
    let t0 = Instant::now();
    let fail = |e: String| HookRun { exit_code: None, stdout: String::new(), stderr: String::new(), duration: t0.elapsed(), timed_out: false, spawn_error: Some(e) };
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args).current_dir(&spec.dir).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()));
    cmd.env("LANG", "C.UTF-8");
    if let Some(u) = &spec.user {
        cmd.env("HOME", &u.home).env("USER", &u.name).env("LOGNAME", &u.name);
        // SAFETY: `switch_to`'s closure only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(crate::user::switch_to(u));
        }
    } else if let Some(h) = std::env::var_os("HOME") {
        cmd.env("HOME", h);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: cannot run: {e}", path.display())),
    };
    let pgid = child.id();
    let out = tokio::spawn(tail(child.stdout.take()));
    let err = tokio::spawn(tail(child.stderr.take()));
    let (status, timed_out) = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(s) => (s.ok(), false),
        Err(_) => {
            if let Some(pid) = pgid {
                // SAFETY: killpg on the group the child leads (process_group(0)).
                unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
            }
            (child.wait().await.ok(), true)
        }
    };
    if let Some(pid) = pgid {
        // Grandchildren left behind in the group would keep the pipes open.
        // SAFETY: as above; ESRCH when the group is gone is fine.
        unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
    }
    let stdout = out.await.unwrap_or_default();
    let stderr = err.await.unwrap_or_default();
    HookRun { exit_code: status.and_then(|s| s.code()), stdout, stderr, duration: t0.elapsed(), timed_out, spawn_error: None }
}

async fn tail<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> String {
    let Some(mut r) = r else { return String::new() };
    let mut keep: VecDeque<u8> = VecDeque::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                keep.extend(&buf[..n]);
                let over = keep.len().saturating_sub(OUTPUT_TAIL);
                keep.drain(..over);
            }
        }
    }
    String::from_utf8_lossy(keep.make_contiguous()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn spec(dir: &Path, name: &'static str, timeout: Duration) -> HookSpec {
        HookSpec { dir: dir.to_owned(), name, tag: "v1".into(), env: vec![("DK_SITE".into(), "www".into())], timeout, user: None }
    }

    #[tokio::test]
    async fn args_env_cwd_tail_and_timeout() {
        let dir = std::env::temp_dir().join(format!("dk-hooks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        script(&dir, "pre-deploy", "echo \"$1 $2 $DK_SITE $(pwd)\"; echo oops >&2; exit 3");
        let r = run(&spec(&dir, "pre-deploy", Duration::from_secs(30))).await.unwrap();
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.stdout.trim(), format!("-t v1 www {}", dir.display()));
        assert_eq!(r.stderr.trim(), "oops");
        assert!(!r.ok());
        assert!(run(&spec(&dir, "pre-link", Duration::from_secs(1))).await.is_none(), "missing hook is skipped");
        script(&dir, "post-deploy.sh", "head -c 200000 /dev/zero | tr '\\0' x; sleep 30");
        let r = run(&spec(&dir, "post-deploy", Duration::from_millis(500))).await.unwrap();
        assert!(r.timed_out && !r.ok());
        assert_eq!(r.stdout.len(), OUTPUT_TAIL);
        std::fs::write(dir.join("pre-link"), "not executable").unwrap();
        let r = run(&spec(&dir, "pre-link", Duration::from_secs(5))).await.unwrap();
        assert!(r.spawn_error.as_deref().unwrap().contains("cannot run"), "{r:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
