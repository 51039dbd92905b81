//! Facts about this machine that several daemons need: the host name, whether
//! the process runs as root, whether a directory is writable, where a program
//! is. Users and groups live in [`crate::user`].

use std::path::{Path, PathBuf};

/// This machine's host name (`localhost` if it has none or it is not UTF-8).
pub fn hostname() -> String {
    let uname = rustix::system::uname();
    match uname.nodename().to_str() {
        Ok(s) if !s.is_empty() => s.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether this process may create entries in `dir` (`access(2)` with W_OK and X_OK).
pub fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK).is_ok()
}

/// Finds `program` the way `execvp` would (a path with `/` is taken as is).
pub fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts() {
        let h = hostname();
        assert!(!h.is_empty() && !h.contains('\0'));
        assert!(writable(&std::env::temp_dir()));
        assert!(!writable(Path::new("/nonexistent/dk-sys-test")));
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/nonexistent/sh")).is_none());
        assert_eq!(is_root(), std::fs::read_to_string("/proc/self/status").unwrap().lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")));
    }
}
