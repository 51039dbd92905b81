//! A directory spool for messages that could not be sent yet.
//!
//! The git and SVN hooks (and later `dk-webhook`) write every message here
//! first and then [`Spool::drain`] the directory: oldest first, each SEND waiting
//! for the broker's receipt, each file deleted only after its receipt. A broker
//! that is down leaves the files for the next run, so nothing is lost and the
//! order is kept. Delivery is at least once: a receipt lost on the way back means
//! the message is sent again by the next drain.
//!
//! One file per message, named `<nanoseconds>-<pid>-<sequence>.msg` so that names
//! sort by time. A file is written to a hidden temporary name, fsynced and renamed
//! into place, so a crash never leaves half a message under a `.msg` name. A file
//! that cannot be read back (corrupt, truncated by hand) is moved to `bad/` with a
//! log line: kept for a person to look at, never blocking the rest. Concurrent
//! drains (two pushes at once) are serialised with `flock(2)` on `.lock`.
//!
//! File layout: the line `DKSPOOL1`, one line of JSON
//! `{"destination": …, "headers": [[name, value], …], "body_len": N}`, then the
//! `N` body bytes exactly.

use crate::message::{encode, Build, Commit, Destinations, Event, MessageError, Outgoing, Wire};
use crate::stomp::{self, Client, Headers, SendOptions};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8] = b"DKSPOOL1\n";
const SUFFIX: &str = ".msg";
/// Headers the client sets itself on SEND; never spooled.
const RESERVED: &[&str] = &["destination", "content-length", "receipt", "transaction"];

/// Why spooling or draining failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or the directory could not be read, written or moved.
    #[error("spool {what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The bus failed; the message that failed and every later one stay spooled.
    #[error("{source} ({sent} spooled message(s) sent, {pending} still pending)")]
    Bus {
        /// Messages delivered (and deleted) before the failure.
        sent: usize,
        /// Messages left in the spool.
        pending: usize,
        /// The bus error.
        source: stomp::Error,
    },
    /// The message to spool is invalid.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// Draining did not finish within its time limit; what is left stays spooled.
    #[error("draining the spool took longer than {after:?}; the rest stays spooled for the next run")]
    Timeout {
        /// The limit.
        after: Duration,
    },
}

/// A message read back from the spool.
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    /// Its file.
    pub path: PathBuf,
    /// Where it goes.
    pub destination: String,
    /// Its headers.
    pub headers: Headers,
    /// Its body.
    pub body: Bytes,
}

/// The JSON line of a spool file.
#[derive(Serialize, Deserialize)]
struct Meta {
    destination: String,
    headers: Vec<(String, String)>,
    body_len: usize,
}

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SpoolError {
    let what = what.into();
    move |source| SpoolError::Io { what, source }
}

impl Spool {
    /// Opens the spool at `dir`, creating it (mode 0700, parents as needed) if missing.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Spool> {
        let dir = dir.as_ref().to_owned();
        if !dir.is_dir() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        }
        // Writable? Better to know now than when a broker is down.
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        File::create(&probe)?;
        let _ = fs::remove_file(&probe);
        Ok(Spool { dir })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where unreadable files are moved.
    pub fn bad_dir(&self) -> PathBuf {
        self.dir.join("bad")
    }

    /// Writes one message atomically (temp file, fsync, rename, directory fsync) and returns its file.
    pub fn push(&self, destination: &str, headers: &Headers, body: &[u8]) -> io::Result<PathBuf> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{nanos:020}-{:010}-{seq:06}{SUFFIX}", std::process::id());
        let meta = Meta {
            destination: destination.to_owned(),
            headers: headers.iter().filter(|(k, _)| !RESERVED.contains(k)).map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            body_len: body.len(),
        };
        let mut data = Vec::with_capacity(body.len() + 256);
        data.extend_from_slice(MAGIC);
        serde_json::to_writer(&mut data, &meta).map_err(io::Error::other)?;
        data.push(b'\n');
        data.extend_from_slice(body);
        let path = self.dir.join(&name);
        crate::durable::write_atomic_mode(&path, &data, 0o600)?;
        Ok(path)
    }

    /// Spools the two messages [`crate::message::Publisher::commit`] would send: the commit
    /// (correlation id defaulting to the new revision) and its event line from `source`.
    pub fn push_commit(&self, commit: &Commit, source: &str, wire: Wire, destinations: &Destinations) -> Result<Vec<PathBuf>, SpoolError> {
        commit.validate()?;
        let mut commit = commit.clone();
        let id = commit.effective_correlation_id();
        commit.correlation_id = Some(id.clone());
        let event = Event { correlation_id: Some(id), ..Event::new(source, commit.event_line()) };
        let c = encode(&commit, wire)?;
        let e = encode(&event, wire)?;
        self.push_encoded([(destinations.commits.clone(), c), (destinations.events_for(source), e)])
    }

    /// Spools the two messages [`crate::message::Publisher::build`] would send: the build
    /// (to the destination for its status) and its event line from `source`.
    pub fn push_build(&self, build: &Build, source: &str, wire: Wire, destinations: &Destinations) -> Result<Vec<PathBuf>, SpoolError> {
        self.push_build_with_id(build, source, wire, destinations, None)
    }

    /// As [`Spool::push_build`], the two messages carrying `dk-id: ID` and `dk-id: ID.event` when `id` is given
    /// (as [`crate::message::Publisher::build_with_id`] sends them), kept on every resend from the spool.
    pub fn push_build_with_id(&self, build: &Build, source: &str, wire: Wire, destinations: &Destinations, id: Option<&str>) -> Result<Vec<PathBuf>, SpoolError> {
        let event = Event { correlation_id: build.correlation_id.clone(), ..Event::new(source, build.subject()) };
        let b = encode(build, wire)?.with_id(id);
        let e = encode(&event, wire)?.with_id(id.map(crate::message::dedup::event_id).as_deref());
        self.push_encoded([(destinations.build_for(build.status).to_owned(), b), (destinations.events_for(source), e)])
    }

    /// Writes encoded messages in order; returns their files.
    fn push_encoded(&self, messages: [(String, Outgoing); 2]) -> Result<Vec<PathBuf>, SpoolError> {
        let mut out = Vec::with_capacity(messages.len());
        for (dest, msg) in messages {
            out.push(self.push(&dest, &msg.headers, &msg.body).map_err(io_err(format!("writing to {}", self.dir.display())))?);
        }
        Ok(out)
    }

    /// The spooled messages' files, oldest first.
    pub fn pending(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with('.') && name.ends_with(SUFFIX) && entry.file_type()?.is_file() {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads one spooled message back.
    pub fn read(path: &Path) -> io::Result<Spooled> {
        let data = fs::read(path)?;
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
        let rest = data.strip_prefix(MAGIC).ok_or_else(|| bad("not a deploykit spool file (no DKSPOOL1 line)"))?;
        let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("no header line"))?;
        let meta: Meta = serde_json::from_slice(&rest[..nl]).map_err(|e| bad(&format!("broken header line: {e}")))?;
        let body = &rest[nl + 1..];
        if body.len() != meta.body_len {
            return Err(bad(&format!("body is {} bytes, header says {}", body.len(), meta.body_len)));
        }
        let mut headers = Headers::with_capacity(meta.headers.len());
        for (k, v) in meta.headers {
            headers.push(k, v);
        }
        Ok(Spooled { path: path.to_owned(), destination: meta.destination, headers, body: Bytes::copy_from_slice(body) })
    }

    /// Moves an unreadable file to `bad/`.
    fn quarantine(&self, path: &Path, why: &io::Error) {
        let bad = self.bad_dir();
        let moved = fs::DirBuilder::new().recursive(true).mode(0o700).create(&bad).and_then(|_| fs::rename(path, bad.join(path.file_name().unwrap_or_default())));
        match moved {
            Ok(()) => {
                tracing::warn!(file = %path.display(), error = %why, "spool: unreadable message moved to {}", bad.display())
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %why, move_error = %e, "spool: unreadable message could not be moved aside")
            }
        }
    }

    /// Takes the drain lock, waiting (asynchronously) while another process drains.
    async fn lock(&self) -> Result<File, SpoolError> {
        let path = self.dir.join(".lock");
        let f = OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(io_err(format!("opening {}", path.display())))?;
        loop {
            // SAFETY: flock on a file descriptor we own; released when `f` is closed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(f);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(io_err(format!("locking {}", path.display()))(e));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends every spooled message, oldest first, each with a receipt, deleting each
    /// file once its receipt arrived; returns how many were sent. Stops at the first
    /// bus failure (that message and the later ones stay, in order). Unreadable
    /// files are moved to `bad/` and skipped. Cancelling the future (a timeout) is
    /// safe: at worst the message in flight is sent again by the next drain.
    pub async fn drain(&self, client: &Client) -> Result<usize, SpoolError> {
        let _lock = self.lock().await?;
        let files = self.pending().map_err(io_err(format!("listing {}", self.dir.display())))?;
        let total = files.len();
        let mut sent = 0;
        for (i, path) in files.iter().enumerate() {
            let msg = match Spool::read(path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.quarantine(path, &e);
                    continue;
                }
            };
            let opts = SendOptions { headers: msg.headers, receipt: true, ..SendOptions::default() };
            if let Err(source) = client.send_with(&msg.destination, msg.body, opts).await {
                return Err(SpoolError::Bus { sent, pending: total - i, source });
            }
            sent += 1;
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("deleting sent message {}", path.display()))(e)),
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("dk-spool-unit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn push_read_pending_and_modes() {
        let dir = temp("rw");
        let spool = Spool::open(dir.join("a/b")).unwrap();
        assert_eq!(fs::metadata(spool.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        let mut h = Headers::new();
        h.push("subject", "[site] refs/heads/master abc");
        h.push("content-length", "3");
        h.push("receipt", "r-1");
        h.push("x:y", "a\nb");
        let body = [0u8, 0xff, b'\n', b'x'];
        let first = spool.push("/topic/a", &h, &body).unwrap();
        let second = spool.push("/queue/b", &Headers::new(), b"").unwrap();
        assert_eq!(fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(spool.pending().unwrap(), vec![first.clone(), second.clone()]);
        let m = Spool::read(&first).unwrap();
        assert_eq!((m.destination.as_str(), &m.body[..]), ("/topic/a", &body[..]));
        assert_eq!(m.headers.get("subject"), Some("[site] refs/heads/master abc"));
        assert_eq!(m.headers.get("x:y"), Some("a\nb"));
        assert_eq!((m.headers.get("content-length"), m.headers.get("receipt")), (None, None));
        assert!(Spool::read(&second).unwrap().body.is_empty());
        // No temporary file is left behind, and hidden files are not pending.
        let names: Vec<String> = fs::read_dir(spool.dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        fs::write(spool.dir().join(".x.msg.tmp"), b"partial").unwrap();
        assert_eq!(spool.pending().unwrap().len(), 2);
        // Truncated and foreign files are refused with a reason.
        let data = fs::read(&first).unwrap();
        fs::write(&first, &data[..data.len() - 1]).unwrap();
        assert!(Spool::read(&first).unwrap_err().to_string().contains("body is 3 bytes"));
        fs::write(&first, b"hello").unwrap();
        assert!(Spool::read(&first).unwrap_err().to_string().contains("DKSPOOL1"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_sort_by_time_within_a_process() {
        let dir = temp("order");
        let spool = Spool::open(&dir).unwrap();
        let paths: Vec<PathBuf> = (0..50).map(|i| spool.push("/topic/x", &Headers::new(), format!("{i}").as_bytes()).unwrap()).collect();
        assert_eq!(spool.pending().unwrap(), paths);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn push_commit_spools_commit_and_event() {
        let dir = temp("commit");
        let spool = Spool::open(&dir).unwrap();
        let c = Commit { repo: "site".into(), oldrev: "1".repeat(40), newrev: "2".repeat(40), refname: "refs/heads/master".into(), ..Commit::default() };
        let files = spool.push_commit(&c, "git-hook", Wire::Legacy, &Destinations::legacy()).unwrap();
        let commit = Spool::read(&files[0]).unwrap();
        assert_eq!(commit.destination, "/topic/future.git.commits");
        assert!(std::str::from_utf8(&commit.body).unwrap().starts_with("repo: site\n"));
        assert_eq!(commit.headers.get("dk-correlation-id"), Some("2".repeat(40).as_str()));
        let event = Spool::read(&files[1]).unwrap();
        assert_eq!(event.destination, "/topic/future.events.git-hook");
        assert_eq!(&event.body[..], format!("commit [site] refs/heads/master {}", "2".repeat(40)).as_bytes());
        let bad = Commit { repo: String::new(), ..c };
        assert!(matches!(spool.push_commit(&bad, "git-hook", Wire::Json, &Destinations::default()), Err(SpoolError::Message(_))));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn push_build_spools_build_and_event_in_both_wires() {
        use crate::message::{decode, BuildStatus, Message};
        let dir = temp("build");
        let spool = Spool::open(&dir).unwrap();
        // Only fields the legacy wire carries, so both wires read back the same build.
        let b = Build {
            job: "web/site".into(),
            number: 17,
            status: BuildStatus::Failure,
            url: Some("http://ci/job/web/job/site/17/".into()),
            repo: Some("origin".into()),
            branch: Some("origin/master".into()),
            commit: Some("3f2a".into()),
            duration_ms: None,
            correlation_id: Some("3f2a".into()),
        };
        for (wire, destinations, builds, events) in [
            (Wire::Json, Destinations::default(), "/topic/deploykit.builds", "/topic/deploykit.events"),
            (Wire::Legacy, Destinations::legacy(), "/topic/future.jenkins.cake", "/topic/future.events.jenkins"),
        ] {
            let files = spool.push_build(&b, "jenkins", wire, &destinations).unwrap();
            assert_eq!(spool.pending().unwrap(), files);
            let build = Spool::read(&files[0]).unwrap();
            assert_eq!(build.destination, builds);
            assert_eq!(build.headers.get("subject"), Some("Fail job 17 - [web/site] origin/master 3f2a"));
            assert_eq!(decode(&build.destination, &build.headers, &build.body).unwrap(), Message::Build(b.clone()), "{wire:?}");
            let event = Spool::read(&files[1]).unwrap();
            assert_eq!(event.destination, events);
            let Message::Event(e) = decode(&event.destination, &event.headers, &event.body).unwrap() else { panic!("not an event ({wire:?})") };
            assert_eq!(e.text, b.subject());
            assert_eq!(e.correlation_id.as_deref(), Some("3f2a"));
            for f in files {
                fs::remove_file(f).unwrap();
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
