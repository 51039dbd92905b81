//! The one exit-code table every `dk-*` tool uses, and errors that carry their code.

use std::process::ExitCode;

/// A tool's exit status (the same meaning in every tool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: `--check` found problems, or the work failed (a deploy, a fetch, a daemon that died).
    Failed = 1,
    /// 2: usage or configuration error (bad arguments, config file, broker URL).
    Usage = 2,
    /// 3: the broker was unreachable at start-up or was lost for good.
    Broker = 3,
    /// 4: cannot listen (address in use, no permission).
    Listen = 4,
}

/// The table as printed at the end of every tool's `--help` (a macro, for `concat!`).
#[macro_export]
macro_rules! exit_codes {
    () => {
        "Exit codes (every dk-* tool): 0 ok; 1 --check found problems or the work failed (also: a daemon
that stopped on its own); 2 usage or configuration error; 3 broker unreachable at start-up or
lost for good; 4 cannot listen."
    };
}

/// The table as printed at the end of every tool's `--help`.
pub const TABLE: &str = exit_codes!();

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error that ends the tool with a given exit code.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::cli::error_text(error))]
pub struct ExitError {
    /// The exit code it ends the tool with.
    pub code: Exit,
    error: anyhow::Error,
}

/// Tags an error with the exit code it ends the tool with.
pub trait OrExit<T> {
    /// Turns the error into an [`ExitError`] with `code`.
    fn or_exit(self, code: Exit) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: Exit) -> anyhow::Result<T> {
        self.map_err(|e| ExitError { code, error: e.into() }.into())
    }
}

/// The code an error ends the tool with: its own, if tagged, else `default`.
pub fn code_of(e: &anyhow::Error, default: Exit) -> Exit {
    e.chain().find_map(|c| c.downcast_ref::<ExitError>()).map_or(default, |x| x.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn tagged_errors_keep_their_code_through_context() {
        let e = Err::<(), _>(std::io::Error::other("refused")).or_exit(Exit::Broker).context("connecting").unwrap_err();
        assert_eq!(code_of(&e, Exit::Failed), Exit::Broker);
        assert_eq!(code_of(&anyhow::anyhow!("plain"), Exit::Usage), Exit::Usage);
        assert_eq!(format!("{e:#}"), "connecting: refused");
    }
}
