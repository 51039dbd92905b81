//! One `.deb` into the repository: read its control data, run
//! `reprepro -b BASE [-C COMPONENT] includedeb DIST FILE` (argument vector),
//! then move it to `archive/` — or, when the package is refused, to `failed/`
//! with `FILE.error` (the reason) beside it.
//!
//! A failure that is not the package's (reprepro cannot be started or times
//! out) leaves the file where it is, to be tried again.

use super::config::{DistConfig, RepreproConfig};
use super::deb::{self, DebError};
use crate::command;
use crate::message::{Package, PackageAction};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// What became of one file.
#[derive(Debug)]
pub enum IncludeOutcome {
    /// Included (`Added`) or refused (`Failed`), and moved to `moved_to`.
    Done {
        /// The package message to publish.
        package: Package,
        /// Where the file is now.
        moved_to: PathBuf,
    },
    /// Included or refused, but the file could not be moved away: it stays and is not tried again until it changes.
    Stuck {
        /// The package message to publish.
        package: Package,
        /// Why it could not be moved.
        error: String,
    },
    /// Not the package's fault (reprepro missing, timeout); the file stays and is tried again later.
    Retry {
        /// Why.
        error: String,
    },
}

/// Includes `file` into distribution `dist_name`.
pub async fn include(config: &RepreproConfig, dist_name: &str, dist: &DistConfig, file: &Path) -> IncludeOutcome {
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut package =
        Package { name: String::new(), version: String::new(), arch: String::new(), distro: dist_name.to_owned(), action: PackageAction::Failed, file: file_name, detail: None };
    let info = match deb::read_control(file, config.timeout).await {
        Ok(info) => info,
        Err(DebError::Command(e)) => return IncludeOutcome::Retry { error: format!("reading the control data: {e}") },
        Err(e) => return refuse(dist, file, package, e.to_string()),
    };
    package.name = info.name;
    package.version = info.version;
    package.arch = info.arch;

    let mut argv: Vec<OsString> = vec![config.reprepro.clone().into(), "-b".into(), config.base.clone().into()];
    if let Some(c) = &dist.component {
        argv.extend(["-C".into(), c.into()]);
    }
    argv.extend(["includedeb".into(), dist_name.into(), file.as_os_str().to_owned()]);
    tracing::info!(file = %file.display(), dist = dist_name, package = %package.name, version = %package.version, "reprepro includedeb");
    match command::run(&argv, Some(&config.base), config.timeout).await {
        // Not the package's fault: try again later.
        Err(e) => IncludeOutcome::Retry { error: e.to_string() },
        Ok(out) if out.success() => {
            let text = out.output();
            package.action = PackageAction::Added;
            package.detail = (!text.is_empty()).then_some(text);
            match move_into(file, &dist.archive) {
                Ok(moved_to) => IncludeOutcome::Done { package, moved_to },
                Err(e) => IncludeOutcome::Stuck { package, error: format!("included, but moving it to {} failed: {e}", dist.archive.display()) },
            }
        }
        Ok(out) => {
            let text = out.output();
            let why = if text.is_empty() { format!("reprepro includedeb: {}", out.status_text()) } else { format!("reprepro includedeb ({}): {text}", out.status_text()) };
            refuse(dist, file, package, why)
        }
    }
}

/// Moves a refused file to `failed/` and writes the reason beside it.
fn refuse(dist: &DistConfig, file: &Path, mut package: Package, why: String) -> IncludeOutcome {
    tracing::warn!(file = %file.display(), error = %why, "package refused");
    package.action = PackageAction::Failed;
    package.detail = Some(why.clone());
    match move_into(file, &dist.failed) {
        Ok(moved_to) => {
            let mut error_file = moved_to.clone().into_os_string();
            error_file.push(".error");
            if let Err(e) = std::fs::write(&error_file, format!("{}\n", why.trim_end())) {
                tracing::warn!(file = %PathBuf::from(&error_file).display(), error = %e, "could not write the error file");
            }
            IncludeOutcome::Done { package, moved_to }
        }
        Err(e) => IncludeOutcome::Stuck { package, error: format!("refused ({why}), and moving it to {} failed: {e}", dist.failed.display()) },
    }
}

/// Moves `file` into `dir` (created if missing) under its own name, or
/// `NAME.1`, `NAME.2`, … when that is taken; falls back to copy and remove
/// across file systems.
pub fn move_into(file: &Path, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = file.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut dest = dir.join(name);
    let mut n = 0;
    while dest.symlink_metadata().is_ok() {
        n += 1;
        let mut alt = name.to_owned();
        alt.push(format!(".{n}"));
        dest = dir.join(alt);
    }
    match std::fs::rename(file, &dest) {
        Ok(()) => Ok(dest),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(file, &dest)?;
            std::fs::remove_file(file)?;
            Ok(dest)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_into_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("dk-include-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for body in ["one", "two"] {
            std::fs::write(dir.join("a.deb"), body).unwrap();
            move_into(&dir.join("a.deb"), &dir.join("archive")).unwrap();
        }
        assert_eq!(std::fs::read_to_string(dir.join("archive/a.deb")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(dir.join("archive/a.deb.1")).unwrap(), "two");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
