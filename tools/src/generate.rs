//! Man pages and shell completions generated from each tool's clap definition.
//!
//! Every `dk-*` binary answers `dk-TOOL __generate KIND` (hidden, like git's
//! plumbing) with the artifact on stdout, before its own arguments are parsed,
//! so the packages ship pages that cannot drift from `--help`:
//!
//! ```text
//! dk-fetch __generate man  > dk-fetch.1
//! dk-deploy __generate man DIR               # dk-deploy.1 and one page per subcommand
//! dk-fetch __generate bash > dk-fetch        # also: zsh, fish
//! ```

use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use std::io::Write;

/// The hidden first argument that asks for a generated artifact.
pub const GENERATE_ARG: &str = "__generate";

/// What `__generate` can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// A roff man page (section 1).
    Man,
    /// A completion script for one shell.
    Completion(Shell),
}

impl Artifact {
    /// Parses `man`, `bash`, `zsh` or `fish`.
    pub fn parse(kind: &str) -> Option<Artifact> {
        match kind {
            "man" => Some(Artifact::Man),
            "bash" => Some(Artifact::Completion(Shell::Bash)),
            "zsh" => Some(Artifact::Completion(Shell::Zsh)),
            "fish" => Some(Artifact::Completion(Shell::Fish)),
            _ => None,
        }
    }
}

/// Writes `artifact` for the command `cmd` to `out`.
pub fn write_artifact(mut cmd: clap::Command, artifact: Artifact, out: &mut dyn Write) -> std::io::Result<()> {
    let name = cmd.get_name().to_owned();
    match artifact {
        Artifact::Man => clap_mangen::Man::new(cmd).render(out),
        Artifact::Completion(shell) => {
            clap_complete::generate(shell, &mut cmd, name, out);
            Ok(())
        }
    }
}

/// Writes the man page of `cmd` and one per (visible) subcommand into `dir`
/// (`dk-deploy.1`, `dk-deploy-keygen.1`, …), as the tool's page refers to them.
pub fn write_man_pages(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    clap_mangen::generate_to(cmd, dir)
}

/// Parses the command line as `C`, after answering `__generate KIND [DIR]` if that is what was asked.
///
/// Exits 0 after writing the artifact, 64 on an unknown kind, 74 if writing fails.
pub fn parse<C: Parser + CommandFactory>() -> C {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(GENERATE_ARG)) {
        let kind = args.next().map(|k| k.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(artifact) = Artifact::parse(&kind) else {
            eprintln!("{GENERATE_ARG}: unknown kind {kind:?} (man, bash, zsh or fish)");
            std::process::exit(64);
        };
        let written = match (artifact, args.next()) {
            (Artifact::Man, Some(dir)) => write_man_pages(C::command(), std::path::Path::new(&dir)),
            _ => {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                write_artifact(C::command(), artifact, &mut out).and_then(|()| out.flush())
            }
        };
        if let Err(e) = &written {
            eprintln!("{GENERATE_ARG} {kind}: {e}");
        }
        std::process::exit(if written.is_ok() { 0 } else { 74 });
    }
    C::parse()
}
