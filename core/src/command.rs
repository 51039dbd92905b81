//! Running an external program by argument vector (never a shell), with a
//! time limit and its output captured.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// What a finished program said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Finished {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, trimmed (what a person wants to read).
    pub fn output(&self) -> String {
        let (o, e) = (self.stdout.trim(), self.stderr.trim());
        match (o.is_empty(), e.is_empty()) {
            (true, _) => e.to_owned(),
            (_, true) => o.to_owned(),
            _ => format!("{o}\n{e}"),
        }
    }

    /// "exit 3" / "killed by a signal".
    pub fn status_text(&self) -> String {
        match self.code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".to_owned(),
        }
    }
}

/// Why a program could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The argument vector is empty.
    #[error("empty command")]
    Empty,
    /// The program could not be started (not found, not executable).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// Waiting for it failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs `argv[0]` with the rest as arguments (stdin empty, optional working
/// directory), killing it after `timeout`.
pub async fn run<S: AsRef<OsStr>>(argv: &[S], cwd: Option<&Path>, timeout: Duration) -> Result<Finished, CommandError> {
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let name = program.as_ref().to_string_lossy().into_owned();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let started = std::time::Instant::now();
    let child = cmd.spawn().map_err(|source| CommandError::Spawn { program: name.clone(), source })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(CommandError::Timeout { program: name, timeout }),
        Ok(Err(source)) => Err(CommandError::Wait { program: name, source }),
        Ok(Ok(out)) => Ok(Finished {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_times_out_and_reports_missing_programs() {
        let ok = run(&["sh", "-c", "echo out; echo err >&2; exit 3"], None, Duration::from_secs(10)).await.unwrap();
        assert_eq!((ok.code, ok.output().as_str()), (Some(3), "out\nerr"));
        let slow = run(&["sleep", "10"], None, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(slow, CommandError::Timeout { .. }), "{slow}");
        let missing = run(&["/nonexistent/dk-program"], None, Duration::from_secs(1)).await.unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/dk-program"), "{missing}");
        assert!(matches!(run::<&str>(&[], None, Duration::from_secs(1)).await, Err(CommandError::Empty)));
    }
}
