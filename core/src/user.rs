//! Users from the password database and switching a child process to one:
//! `setgroups(2)` with the user's supplementary groups (`getgrouplist`), then
//! `setgid(2)` and `setuid(2)`, run between fork and exec. Shared by dk-fetch's
//! privilege-dropped helper and dk-agent's hooks (std's `CommandExt::uid/gid`
//! alone would leave the daemon's own supplementary groups, or none).

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A user from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// Looks `name` up with `getpwnam_r`; `Ok(None)` when there is no such user.
pub fn lookup_user(name: &str) -> std::io::Result<Option<Passwd>> {
    let cname = CString::new(name).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in user name"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: pwd and result are plain out-parameters; buf outlives the call and its length is passed.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the strings point into buf, NUL-terminated.
        let (pname, home) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
        return Ok(Some(Passwd {
            name: pname.to_string_lossy().into_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes())),
        }));
    }
}

/// The user's supplementary groups (`getgrouplist`).
pub fn groups_of(pw: &Passwd) -> Vec<libc::gid_t> {
    let Ok(cname) = CString::new(pw.name.as_str()) else {
        return vec![pw.gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: groups has room for `count` entries; getgrouplist updates count.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), pw.gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if count <= n || n > 65536 {
            return vec![pw.gid];
        }
        n = count;
    }
}

/// The `pre_exec` closure that makes a child `pw`: supplementary groups, group, user, in that order.
/// Use it instead of `CommandExt::uid/gid` (std runs setuid before `pre_exec`
/// closures, after which setgroups is refused). Without root only setgid/setuid
/// are tried (which succeed only for the process's own ids).
pub fn switch_to(pw: &Passwd) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    let groups = groups_of(pw);
    let (uid, gid) = (pw.uid, pw.gid);
    move || {
        // SAFETY: setgroups/setgid/setuid are async-signal-safe; `groups` was allocated before fork.
        let root = unsafe { libc::geteuid() } == 0;
        if (root && unsafe { libc::setgroups(groups.len() as _, groups.as_ptr()) } != 0) || unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
