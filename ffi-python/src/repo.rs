//! Commit capture for the hooks: reading git pushes and SVN commits, repository
//! settings, the message spool, and decoding, all from core.

use crate::client::{body_arg, destinations_arg, fields, headers_arg, kind_name, seconds, timeout_err, wire_arg, Client};
use crate::convert::{from_py, to_py};
use crate::{message_err, stomp_err_with, GitError, SpoolError, SvnError};
use deploykit::message::{self, Commit};
use deploykit::spool::{self, SpoolError as CoreSpoolError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// The commits a push of ``refname`` from ``oldrev`` to ``newrev`` brought into the
/// repository at ``repo`` (a path), newest first, at most ``max_commits``: a list
/// of dicts with ``id``, ``author`` (``Name <email>``), ``timestamp`` (RFC 3339 in
/// the author's offset) and ``message``. A new branch (zero ``oldrev``) gives the
/// commits no other branch has; a deletion (zero ``newrev``) none; a tag the
/// tagged commit. Raises ``GitError`` for an invalid ref name or revision.
#[pyfunction]
#[pyo3(signature = (repo, oldrev, newrev, refname, max_commits = 50))]
pub fn read_git_push<'py>(py: Python<'py>, repo: PathBuf, oldrev: String, newrev: String, refname: String, max_commits: usize) -> PyResult<Bound<'py, PyAny>> {
    let commits = py.detach(move || deploykit::git::read_push(&repo, &oldrev, &newrev, &refname, max_commits)).map_err(|e| GitError::new_err(e.to_string()))?;
    let v = serde_json::to_value(commits).map_err(|e| GitError::new_err(e.to_string()))?;
    to_py(py, &v)
}

/// Revision ``rev`` of the Subversion repository at ``repos``, read with
/// ``svnlook`` (run with an argument vector, never a shell), as a commit dict:
/// ``repo``, ``newrev``, ``source="svn"``, ``svn={"revision", "project", "dirs"}``
/// (``project`` is the path component before ``/trunk``) and ``commits`` (author,
/// timestamp, log message). Raises ``SvnError``.
#[pyfunction]
#[pyo3(signature = (repos, rev, repo_name, svnlook = PathBuf::from("svnlook")))]
pub fn read_svn_commit<'py>(py: Python<'py>, repos: PathBuf, rev: u64, repo_name: String, svnlook: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let commit = py.detach(move || deploykit::svn::read_commit(&repos, rev, &repo_name, &svnlook)).map_err(|e| SvnError::new_err(e.to_string()))?;
    let v = serde_json::to_value(commit).map_err(|e| SvnError::new_err(e.to_string()))?;
    to_py(py, &v)
}

/// The value of git configuration key ``key`` (only ``deploykit.*`` keys) for the
/// repository at ``repo``, read with libgit2 (repository, user and system
/// configuration, as git reads them); None when unset. Raises ``GitError``.
#[pyfunction]
pub fn git_config(py: Python<'_>, repo: PathBuf, key: String) -> PyResult<Option<String>> {
    py.detach(move || deploykit::git::git_config(&repo, &key)).map_err(|e| GitError::new_err(e.to_string()))
}

/// The name a repository is published under: the directory name without ``.git``
/// (``/srv/git/site.git`` → ``site``; ``/src/site/.git`` → ``site``).
#[pyfunction]
pub fn repo_name(path: PathBuf) -> String {
    deploykit::git::repo_name(&path)
}

/// Decodes a message (JSON v1 or any legacy body) the way every deploykit tool
/// does: returns ``(kind, fields)``, with ``("keepalive", None)`` for the
/// single-newline keepalive. Raises ``MessageError``.
#[pyfunction]
#[pyo3(signature = (destination, headers, body))]
pub fn decode<'py>(py: Python<'py>, destination: &str, headers: Option<&Bound<'py, PyDict>>, body: &Bound<'py, PyAny>) -> PyResult<(String, Option<Bound<'py, PyAny>>)> {
    let h = headers_arg(headers)?;
    let body = body_arg(body)?;
    let m = message::decode(destination, &h, &body).map_err(message_err)?;
    Ok((kind_name(&m).to_owned(), fields(py, &m)?))
}

/// Maps a spool error: bus failures keep their bus exception class.
fn spool_err(e: CoreSpoolError) -> PyErr {
    match &e {
        CoreSpoolError::Bus { source, .. } => stomp_err_with(source, e.to_string()),
        CoreSpoolError::Message(_) => crate::MessageError::new_err(e.to_string()),
        CoreSpoolError::Io { .. } => SpoolError::new_err(e.to_string()),
        CoreSpoolError::Timeout { after } => timeout_err("draining the spool", *after),
    }
}

/// A directory of messages waiting to be sent (created with mode 0700).
///
/// The hooks write every message here first, then ``drain()`` it: oldest first,
/// each message deleted only after the broker's receipt, stopping at the first
/// bus failure so that the next run sends what is left, in order. Unreadable
/// files are moved to ``bad/``.
#[pyclass(module = "deploykit._native", frozen)]
pub struct Spool {
    inner: spool::Spool,
}

#[pymethods]
impl Spool {
    #[new]
    fn new(dir: PathBuf) -> PyResult<Spool> {
        let inner = spool::Spool::open(&dir).map_err(|e| SpoolError::new_err(format!("cannot use spool directory {}: {e}", dir.display())))?;
        Ok(Spool { inner })
    }

    /// The spool directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.inner.dir().to_owned()
    }

    /// Where unreadable files are moved.
    #[getter]
    fn bad_dir(&self) -> PathBuf {
        self.inner.bad_dir()
    }

    /// Spools one message; returns its file.
    #[pyo3(signature = (destination, body, headers = None))]
    fn push(&self, destination: &str, body: &Bound<'_, PyAny>, headers: Option<&Bound<'_, PyDict>>) -> PyResult<PathBuf> {
        let h = headers_arg(headers)?;
        let body = body_arg(body)?;
        self.inner.push(destination, &h, &body).map_err(|e| SpoolError::new_err(format!("cannot write to {}: {e}", self.inner.dir().display())))
    }

    /// Spools a commit (a dict as ``read_svn_commit`` returns, or with ``repo``,
    /// ``oldrev``, ``newrev``, ``refname``, ``commits``…) and its event line, as
    /// ``Client.publish_commit`` would send them; returns the two files.
    #[pyo3(signature = (commit, *, source = "git-hook", wire = "json", destinations = None))]
    fn push_commit(&self, commit: &Bound<'_, PyAny>, source: &str, wire: &str, destinations: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<PathBuf>> {
        let commit: Commit = serde_json::from_value(from_py(commit)?).map_err(|e| PyValueError::new_err(format!("commit: {e}")))?;
        self.inner.push_commit(&commit, source, wire_arg(wire)?, &destinations_arg(destinations)?).map_err(spool_err)
    }

    /// The spooled messages' files, oldest first.
    fn pending(&self) -> PyResult<Vec<PathBuf>> {
        self.inner.pending().map_err(|e| SpoolError::new_err(format!("cannot list {}: {e}", self.inner.dir().display())))
    }

    /// Reads one spooled file back as ``(destination, headers, body)``.
    #[staticmethod]
    fn read<'py>(py: Python<'py>, path: PathBuf) -> PyResult<(String, Bound<'py, PyDict>, Bound<'py, pyo3::types::PyBytes>)> {
        let m = spool::Spool::read(&path).map_err(|e| SpoolError::new_err(e.to_string()))?;
        Ok((m.destination, crate::client::headers_dict(py, &m.headers)?, pyo3::types::PyBytes::new(py, &m.body)))
    }

    /// Sends every spooled message through ``client``, oldest first, each with a
    /// receipt; returns how many were sent. Stops at the first bus failure (raising
    /// the bus's exception, e.g. ``ConnectionError``; what is left stays spooled) or
    /// when ``timeout`` seconds have passed (``TimeoutError``).
    #[pyo3(signature = (client, timeout = None))]
    fn drain(&self, py: Python<'_>, client: &Client, timeout: Option<f64>) -> PyResult<usize> {
        let limit = timeout.map(|t| seconds("timeout", t)).transpose()?;
        let blocking = client.blocking()?;
        let spool = self.inner.clone();
        py.detach(move || blocking.drain_spool(&spool, limit)).map_err(spool_err)
    }

    fn __repr__(&self) -> String {
        format!("<deploykit.Spool {}>", self.inner.dir().display())
    }
}
