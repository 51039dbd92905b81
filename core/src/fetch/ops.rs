//! One fetch of one repository, followed by what its mode asks for.
//!
//! Synchronous (libgit2); the daemon runs [`run`] in `spawn_blocking`, one at
//! a time per repository, or in a privilege-dropped child with
//! [`super::privilege::run_configured`] when `user` is set.
//!
//! Order of work in [`run`]: validate the ref name (before anything touches
//! the repository) → heal stale lock files ([`super::locks`]) → open the clone
//! (corrupt → [`FetchError::Corrupt`], or re-clone when `reclone = true`) →
//! fetch the remote's refspecs (+ `+refs/tags/*:refs/tags/*` when
//! `fetch_tags`), pruning refs the remote deleted (tags included) → the mode's
//! checkout ([`super::checkout`]: atomic symlink swaps into targets).
//!
//! Built commits ([`Checkout::Built`], repos with `trigger = "build"`): each
//! candidate is checked to be 7–64 hexadecimal digits before anything else;
//! after the fetch it must name a commit in the clone that is reachable from
//! `REMOTE/BRANCH` (the configured branch; `master` by default), else it is
//! [`BuiltVerdict::Refused`] — so a forged build message cannot check out a
//! commit of another branch. Of the verified candidates the newest by history
//! is taken; if it is an ancestor of what is checked out (an out-of-order or
//! replayed message) nothing moves ([`BuiltVerdict::Older`]). Otherwise exactly
//! that commit is checked out (trusting, branch, atomic: into the target;
//! dangerous: in the clone; normal: nothing is checked out, the commit is only
//! verified). puppetmaster and tags do not take built commits (refused by the config).
//!
//! Re-clone: the fresh clone is made at `PATH.reclone-NANOS` (bare if the old
//! one was bare), then `PATH` is renamed to `PATH.corrupt-UNIXSECONDS` (kept
//! for inspection; the operator removes it) and the fresh clone renamed to
//! `PATH`. Both steps are reported in [`FetchOutcome::healed`].
//!
//! Credentials: an ssh key file (`credentials.ssh_key`), else the ssh agent;
//! https: a token from `credentials.https_token_env` or `https_token_file`.
//! ssh host keys are checked by libgit2 against `~/.ssh/known_hosts`; https
//! certificates against the system store (OpenSSL). At most 3 credential
//! attempts per fetch.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::{Credentials, Mode, RepoConfig};
use crate::git::checkout;

/// What one [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOutcome {
    /// The tracked head before the fetch (the mode's branch, the pushed
    /// branch, or the tag), as remote-tracking ref target.
    pub old_head: Option<String>,
    /// The tracked head after.
    pub new_head: Option<String>,
    /// Whether the head moved or a checkout changed a target.
    pub changed: bool,
    /// What was done, one line each (`checked out origin/master (abc123) into /srv/site`).
    pub actions: Vec<String>,
    /// Self-healing done: stale locks removed, re-clone.
    pub healed: Vec<String>,
    /// Things worth reporting that did not stop the run (a young lock left alone, …).
    pub warnings: Vec<String>,
    /// For a [`Checkout::Built`] request: each refused candidate, then the one taken (accepted or older).
    #[serde(default)]
    pub built: Vec<BuiltVerdict>,
}

/// Which commit a mode that checks out shows after the fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checkout {
    /// The configured branch's tip (trigger = commit; a build success without a commit).
    #[default]
    Tip,
    /// The newest verified of these built commits (trigger = build; see the module doc).
    Built(Vec<String>),
    /// Fetch only, check nothing out (a build-triggered repo without a recorded build yet).
    FetchOnly,
}

/// One repository operation: the pushed ref and what to check out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The pushed ref (full or short); `None`: full sync.
    pub refname: Option<String>,
    /// What the mode checks out.
    #[serde(default)]
    pub checkout: Checkout,
}

impl Request {
    /// A request for the branch tip (the commit trigger's).
    pub fn tip(refname: Option<&str>) -> Request {
        Request { refname: refname.map(str::to_owned), checkout: Checkout::Tip }
    }
}

/// What became of a built commit of a [`Checkout::Built`] request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltVerdict {
    /// Verified and now checked out (mode normal: verified only); the full commit id.
    Accepted(String),
    /// An ancestor of what is checked out: nothing moved.
    Older {
        /// The built commit (full id).
        built: String,
        /// What stays checked out (full id).
        current: String,
    },
    /// Not in the clone after the fetch, or not on the configured branch: never checked out.
    Refused {
        /// The commit as given.
        commit: String,
        /// Why.
        why: String,
    },
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The ref name from the message is not acceptable; nothing was done.
    #[error("refused ref name {refname:?}: {why}")]
    BadRefName {
        /// The name as received (escaped by `{:?}` when shown).
        refname: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The clone could not be opened: missing or corrupt.
    #[error("{path}: corrupt or missing git repository: {message}")]
    Corrupt {
        /// The clone's path.
        path: PathBuf,
        /// libgit2's message.
        message: String,
    },
    /// Re-cloning a corrupt clone failed (the corrupt one is left in place).
    #[error("{path}: re-clone from {url} failed: {message}")]
    Reclone {
        /// The clone's path.
        path: PathBuf,
        /// The URL cloned from.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The configured remote is missing.
    #[error("{path}: no remote {remote:?}")]
    NoRemote {
        /// The clone's path.
        path: PathBuf,
        /// The remote name.
        remote: String,
    },
    /// The fetch itself failed (network, authentication, locked refs, …).
    #[error("fetching {remote} into {path}: {message}")]
    Fetch {
        /// The clone's path.
        path: PathBuf,
        /// The remote name.
        remote: String,
        /// libgit2's message.
        message: String,
    },
    /// The branch to check out does not exist on the remote.
    #[error("{path}: no {refname} after the fetch (does the remote have that branch?)")]
    NoBranch {
        /// The clone's path.
        path: PathBuf,
        /// The remote-tracking ref looked for.
        refname: String,
    },
    /// A built commit from a message is not 7–64 hexadecimal digits; nothing was done.
    #[error("refused built commit {commit:?}: expected 7 to 64 hexadecimal digits")]
    BadCommit {
        /// The commit as received (escaped by `{:?}` when shown).
        commit: String,
    },
    /// Checking out failed.
    #[error("checkout: {0}")]
    Checkout(String),
    /// The configured user cannot be used.
    #[error("user {user:?}: {message}")]
    User {
        /// The user.
        user: String,
        /// Why.
        message: String,
    },
    /// The privilege-dropped helper process failed or reported an error.
    #[error("as user {user:?}: {message}")]
    Child {
        /// The user.
        user: String,
        /// Its error text.
        message: String,
    },
}

impl From<checkout::CheckoutError> for FetchError {
    fn from(e: checkout::CheckoutError) -> FetchError {
        FetchError::Checkout(e.to_string())
    }
}

/// Checks a ref name from a message before any git operation (the shared
/// rules of [`crate::git::refs::validate_refname`]).
pub fn validate_refname(refname: &str) -> Result<(), FetchError> {
    crate::git::refs::validate_refname(refname).map_err(|e| match e {
        crate::git::refs::RefError::RefName { refname, why } => FetchError::BadRefName { refname, why },
        crate::git::refs::RefError::Revision { rev, why } => FetchError::BadRefName { refname: rev, why },
    })
}

/// Checks a built commit from a message before it goes anywhere: 7 to 64
/// hexadecimal digits (an abbreviated or full SHA-1 / SHA-256 id).
pub fn validate_built_commit(commit: &str) -> Result<(), FetchError> {
    if (7..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(FetchError::BadCommit { commit: commit.chars().take(80).collect() })
    }
}

use crate::git::refs::full_refname;

/// The git directory of a clone without opening it (`PATH/.git` or `PATH`).
fn git_dir(path: &Path) -> PathBuf {
    let dotgit = path.join(".git");
    if dotgit.is_dir() {
        dotgit
    } else {
        path.to_owned()
    }
}

fn short(oid: git2::Oid) -> String {
    oid.to_string()[..12].to_owned()
}

fn ref_target(repo: &git2::Repository, name: &str) -> Option<git2::Oid> {
    repo.find_reference(name).ok()?.resolve().ok()?.target()
}

fn read_secret(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    Some(s.lines().next().unwrap_or("").trim().to_owned())
}

fn callbacks(creds: &Credentials) -> git2::RemoteCallbacks<'_> {
    let mut cb = git2::RemoteCallbacks::new();
    let mut attempts = 0u32;
    cb.credentials(move |url, user_from_url, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str(&format!("authentication to {url} failed (gave up after 3 attempts)")));
        }
        let user = user_from_url.unwrap_or("git");
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            if let Some(key) = &creds.ssh_key {
                let pass = creds.ssh_key_passphrase_file.as_deref().and_then(read_secret);
                return git2::Cred::ssh_key(user, None, key, pass.as_deref());
            }
            if creds.ssh_agent {
                return git2::Cred::ssh_key_from_agent(user);
            }
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            let token = creds.https_token_env.as_deref().and_then(|v| std::env::var(v).ok()).or_else(|| creds.https_token_file.as_deref().and_then(read_secret));
            if let Some(token) = token {
                let name = creds.https_username.as_deref().or(user_from_url).unwrap_or("git");
                return git2::Cred::userpass_plaintext(name, &token);
            }
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(user);
        }
        if allowed.contains(git2::CredentialType::DEFAULT) {
            return git2::Cred::default();
        }
        Err(git2::Error::from_str(&format!("no credentials configured for {url}")))
    });
    cb
}

fn fetch_options(creds: &Credentials, tags: bool) -> git2::FetchOptions<'_> {
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(callbacks(creds));
    fo.prune(git2::FetchPrune::On);
    fo.download_tags(if tags { git2::AutotagOption::All } else { git2::AutotagOption::None });
    fo
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The URL to re-clone from: the config's `url`, else the remote's url read
/// straight from the clone's config file (works when the repository does not open).
fn reclone_url(repo: &RepoConfig) -> Option<String> {
    if let Some(u) = &repo.url {
        return Some(u.clone());
    }
    let cfg = git2::Config::open(&git_dir(&repo.path).join("config")).ok()?;
    cfg.get_string(&format!("remote.{}.url", repo.remote)).ok()
}

fn reclone(repo: &RepoConfig, healed: &mut Vec<String>) -> Result<git2::Repository, FetchError> {
    let url = reclone_url(repo).ok_or_else(|| FetchError::Reclone {
        path: repo.path.clone(),
        url: "(unknown)".into(),
        message: "no url configured and none readable from the clone's config".into(),
    })?;
    let fail = |message: String| FetchError::Reclone { path: repo.path.clone(), url: url.clone(), message };
    let bare = repo.path.exists() && !repo.path.join(".git").exists() && repo.mode != Mode::Dangerous;
    let name = repo.path.file_name().ok_or_else(|| fail("path has no file name".into()))?.to_string_lossy().into_owned();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = repo.path.with_file_name(format!("{name}.reclone-{nanos}"));
    let remote_name = repo.remote.clone();
    let mut builder = git2::build::RepoBuilder::new();
    builder.bare(bare).fetch_options(fetch_options(&repo.credentials, repo.fetch_tags));
    builder.remote_create(move |r, _default_name, u| r.remote(&remote_name, u));
    if let Err(e) = builder.clone(&url, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fail(e.message().to_owned()));
    }
    if repo.path.exists() {
        let aside = repo.path.with_file_name(format!("{name}.corrupt-{}", unix_secs()));
        std::fs::rename(&repo.path, &aside).map_err(|e| fail(format!("moving the corrupt clone to {}: {e}", aside.display())))?;
        healed.push(format!("moved corrupt clone {} to {}", repo.path.display(), aside.display()));
    }
    std::fs::rename(&tmp, &repo.path).map_err(|e| fail(format!("renaming {} to {}: {e}", tmp.display(), repo.path.display())))?;
    healed.push(format!("re-cloned {} from {url}", repo.path.display()));
    crate::git::open(&repo.path).map_err(|e| fail(e.to_string()))
}

/// The ref whose movement [`FetchOutcome`] reports.
fn tracked_ref(repo: &git2::Repository, cfg: &RepoConfig, refname: Option<&str>) -> Option<String> {
    let r = &cfg.remote;
    if let Some(b) = cfg.checkout_branch() {
        if cfg.mode != Mode::Normal && cfg.mode != Mode::Puppetmaster && cfg.mode != Mode::Tags {
            return Some(format!("refs/remotes/{r}/{b}"));
        }
    }
    match refname.map(full_refname) {
        Some(full) if full.starts_with("refs/heads/") => Some(format!("refs/remotes/{r}/{}", &full["refs/heads/".len()..])),
        Some(full) if full.starts_with("refs/tags/") => Some(full),
        _ => repo
            .find_reference(&format!("refs/remotes/{r}/HEAD"))
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned))
            .or_else(|| Some(format!("refs/remotes/{r}/{}", cfg.branch.as_deref().unwrap_or("master")))),
    }
}

/// Fetches `name`'s clone and applies its mode, in this process (see the module doc).
/// `refname` is the pushed ref (full or short), `None` for a reconcile; the mode
/// checks out the branch tip ([`Checkout::Tip`]).
pub fn run(name: &str, repo: &RepoConfig, refname: Option<&str>, lock_stale_after: Duration) -> Result<FetchOutcome, FetchError> {
    run_request(name, repo, &Request::tip(refname), lock_stale_after)
}

/// As [`run`], with what to check out given by `request` (built commits: see the module doc).
pub fn run_request(name: &str, repo: &RepoConfig, request: &Request, lock_stale_after: Duration) -> Result<FetchOutcome, FetchError> {
    let refname = request.refname.as_deref();
    if let Some(r) = refname {
        validate_refname(r)?;
    }
    if let Checkout::Built(candidates) = &request.checkout {
        for c in candidates {
            validate_built_commit(c)?;
        }
    }
    let _ = name;
    let mut out = FetchOutcome::default();
    if repo.path.exists() {
        let h = super::locks::heal(&git_dir(&repo.path), lock_stale_after);
        out.healed.extend(h.removed);
        out.warnings.extend(h.kept);
    }
    let git = match crate::git::open(&repo.path) {
        Ok(g) => g,
        Err(e) => {
            let message = match e {
                crate::git::GitError::Open { source, .. } => source.message().to_owned(),
                other => other.to_string(),
            };
            if !repo.reclone {
                return Err(FetchError::Corrupt { path: repo.path.clone(), message });
            }
            out.warnings.push(format!("{}: corrupt or missing git repository: {message}", repo.path.display()));
            reclone(repo, &mut out.healed)?
        }
    };
    let tracked = tracked_ref(&git, repo, refname);
    out.old_head = tracked.as_deref().and_then(|t| ref_target(&git, t)).map(|o| o.to_string());

    // Fetch.
    {
        let mut remote = git.find_remote(&repo.remote).map_err(|_| FetchError::NoRemote { path: repo.path.clone(), remote: repo.remote.clone() })?;
        let fetch_err = |e: git2::Error| FetchError::Fetch { path: repo.path.clone(), remote: repo.remote.clone(), message: e.message().to_owned() };
        let mut specs: Vec<String> = remote.fetch_refspecs().map_err(fetch_err)?.iter().filter_map(|s| s.ok().flatten()).map(str::to_owned).collect();
        if repo.fetch_tags {
            specs.push("+refs/tags/*:refs/tags/*".into());
        }
        let mut fo = fetch_options(&repo.credentials, repo.fetch_tags);
        remote.fetch(&specs, Some(&mut fo), Some("dk-fetch")).map_err(fetch_err)?;
        let stats = remote.stats();
        out.actions.push(format!("fetched {} ({} objects received)", repo.remote, stats.received_objects()));
    }
    let tracked = tracked_ref(&git, repo, refname).or(tracked);
    out.new_head = tracked.as_deref().and_then(|t| ref_target(&git, t)).map(|o| o.to_string());
    out.changed = out.old_head != out.new_head;

    let checked_out = match &request.checkout {
        Checkout::FetchOnly => false,
        Checkout::Built(candidates) if candidates.is_empty() => false,
        Checkout::Built(candidates) => built(&git, repo, candidates, &mut out)?,
        Checkout::Tip => checkout_tip(&git, repo, refname, &mut out)?,
    };
    out.changed |= checked_out;
    Ok(out)
}

/// The mode's checkout of the branch tip(s).
fn checkout_tip(git: &git2::Repository, repo: &RepoConfig, refname: Option<&str>, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    let checked_out = match repo.mode {
        Mode::Normal => false,
        Mode::Trusting | Mode::Branch => {
            let branch = repo.checkout_branch().expect("trusting/branch have a branch");
            let target = repo.target.as_deref().expect("checked by config");
            checkout_branch_into(git, repo, branch, target, out)?
        }
        Mode::Atomic => {
            let branch = repo.checkout_branch().expect("atomic has a branch");
            checkout_branch_into(git, repo, branch, &atomic_target(repo, branch)?, out)?
        }
        Mode::Dangerous => dangerous(git, repo, out)?,
        Mode::Puppetmaster => puppetmaster(git, repo, refname, out)?,
        Mode::Tags => tags(git, repo, out)?,
    };
    Ok(checked_out)
}

/// Atomic mode's directory: `TARGET_BRANCH`.
fn atomic_target(repo: &RepoConfig, branch: &str) -> Result<PathBuf, FetchError> {
    let target = repo.target.as_deref().expect("checked by config");
    let dir = checkout::dir_name(branch).ok_or_else(|| FetchError::Checkout(format!("branch {branch:?} is not a safe directory name")))?;
    let mut t = target.as_os_str().to_owned();
    t.push(format!("_{dir}"));
    Ok(PathBuf::from(t))
}

/// Checks out the newest verified built commit (see the module doc); returns whether anything changed.
fn built(git: &git2::Repository, repo: &RepoConfig, candidates: &[String], out: &mut FetchOutcome) -> Result<bool, FetchError> {
    let branch = repo.checkout_branch().unwrap_or("master");
    let tip = remote_commit(git, repo, branch)?.id();
    let on_branch = format!("{}/{branch}", repo.remote);
    let mut verified: Vec<git2::Oid> = Vec::new();
    for c in candidates {
        let oid = match git.find_object_by_prefix(c, None).and_then(|o| o.peel_to_commit()) {
            Ok(commit) => commit.id(),
            Err(e) => {
                let why = match e.code() {
                    git2::ErrorCode::Ambiguous => "ambiguous abbreviated id".to_owned(),
                    _ => "no such commit in the clone after the fetch".to_owned(),
                };
                out.built.push(BuiltVerdict::Refused { commit: c.clone(), why });
                continue;
            }
        };
        if oid == tip || git.graph_descendant_of(tip, oid).unwrap_or(false) {
            verified.push(oid);
        } else {
            out.built.push(BuiltVerdict::Refused { commit: c.clone(), why: format!("commit {oid} is not reachable from {on_branch}") });
        }
    }
    // The newest: one no other verified candidate descends from (ties: the last given).
    let Some(&oid) = verified.iter().rev().find(|&&a| !verified.iter().any(|&b| b != a && git.graph_descendant_of(b, a).unwrap_or(false))) else {
        return Ok(false);
    };
    let current = match repo.mode {
        Mode::Normal => None,
        Mode::Trusting | Mode::Branch => checkout::current_commit(repo.target.as_deref().expect("checked by config")),
        Mode::Atomic => checkout::current_commit(&atomic_target(repo, branch)?),
        Mode::Dangerous => git.head().ok().and_then(|h| h.target()).map(|o| o.to_string()),
        Mode::Puppetmaster | Mode::Tags => return Err(FetchError::Checkout(format!("mode \"{}\" does not take built commits", repo.mode))),
    };
    if let Some(cur) = current.as_deref().and_then(|c| git2::Oid::from_str(c).ok()) {
        if cur != oid && git.graph_descendant_of(cur, oid).unwrap_or(false) {
            out.built.push(BuiltVerdict::Older { built: oid.to_string(), current: cur.to_string() });
            return Ok(false);
        }
    }
    let commit = git.find_commit(oid).map_err(|e| FetchError::Checkout(e.message().to_owned()))?;
    let label = format!("build {} of {on_branch}", short(oid));
    let changed = match repo.mode {
        Mode::Trusting | Mode::Branch => swap_commit_into(git, &commit, &label, repo.target.as_deref().expect("checked by config"), out)?,
        Mode::Atomic => swap_commit_into(git, &commit, &label, &atomic_target(repo, branch)?, out)?,
        Mode::Dangerous => dangerous_at(git, repo, branch, &commit, &label, out)?,
        _ => false,
    };
    out.built.push(BuiltVerdict::Accepted(oid.to_string()));
    if repo.mode != Mode::Normal {
        out.new_head = Some(oid.to_string());
    }
    Ok(changed)
}

fn swap_commit_into(git: &git2::Repository, commit: &git2::Commit<'_>, label: &str, target: &Path, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    let changed = checkout::swap_in(git, commit, target)?;
    if changed {
        out.actions.push(format!("checked out {label} into {}", target.display()));
    }
    Ok(changed)
}

fn remote_commit<'r>(git: &'r git2::Repository, repo: &RepoConfig, branch: &str) -> Result<git2::Commit<'r>, FetchError> {
    let name = format!("refs/remotes/{}/{branch}", repo.remote);
    let oid = ref_target(git, &name).ok_or_else(|| FetchError::NoBranch { path: repo.path.clone(), refname: name.clone() })?;
    git.find_commit(oid).map_err(|e| FetchError::Checkout(format!("{name}: {}", e.message())))
}

fn checkout_branch_into(git: &git2::Repository, repo: &RepoConfig, branch: &str, target: &Path, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    let commit = remote_commit(git, repo, branch)?;
    let changed = checkout::swap_in(git, &commit, target)?;
    if changed {
        out.actions.push(format!("checked out {}/{branch} ({}) into {}", repo.remote, short(commit.id()), target.display()));
    }
    Ok(changed)
}

fn dangerous(git: &git2::Repository, repo: &RepoConfig, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    if git.is_bare() {
        return Err(FetchError::Checkout(format!("{}: mode dangerous needs a clone with a work tree, this one is bare", repo.path.display())));
    }
    let branch = repo.checkout_branch().expect("dangerous has a branch");
    let commit = remote_commit(git, repo, branch)?;
    dangerous_at(git, repo, branch, &commit, &format!("{}/{branch} ({})", repo.remote, short(commit.id())), out)
}

/// Dangerous mode: local `branch` at `commit`, checked out in the clone (hard reset).
fn dangerous_at(git: &git2::Repository, repo: &RepoConfig, branch: &str, commit: &git2::Commit<'_>, label: &str, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    if git.is_bare() {
        return Err(FetchError::Checkout(format!("{}: mode dangerous needs a clone with a work tree, this one is bare", repo.path.display())));
    }
    let local = format!("refs/heads/{branch}");
    let head_before = git.head().ok().and_then(|h| h.target());
    let cerr = |e: git2::Error| FetchError::Checkout(format!("{}: {}", repo.path.display(), e.message()));
    if git.head().ok().and_then(|h| h.name().ok().map(str::to_owned)).as_deref() != Some(local.as_str()) {
        git.reference(&local, commit.id(), true, "dk-fetch: dangerous mode").map_err(cerr)?;
        git.set_head(&local).map_err(cerr)?;
    }
    let mut co = git2::build::CheckoutBuilder::new();
    co.force();
    git.reset(commit.as_object(), git2::ResetType::Hard, Some(&mut co)).map_err(cerr)?;
    let changed = head_before != Some(commit.id());
    if changed {
        out.actions.push(format!("checked out {label} in {}", repo.path.display()));
    }
    Ok(changed)
}

fn ensure_dir(dir: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(dir).map_err(|e| FetchError::Checkout(format!("{}: {e}", dir.display())))
}

/// Where puppetmaster mode records which branch an environment came from: `TARGET/.DIR.dk-branch`.
fn owner_file(target: &Path, dir: &str) -> PathBuf {
    target.join(format!(".{dir}.dk-branch"))
}

/// The branch environment `dir` was checked out from, if recorded.
fn owner(target: &Path, dir: &str) -> Option<String> {
    let text = std::fs::read_to_string(owner_file(target, dir)).ok()?;
    Some(text.trim_end_matches('\n').to_owned())
}

fn set_owner(target: &Path, dir: &str, branch: &str) -> Result<(), FetchError> {
    if owner(target, dir).as_deref() == Some(branch) {
        return Ok(());
    }
    let f = owner_file(target, dir);
    crate::durable::write_atomic_mode(&f, format!("{branch}\n").as_bytes(), 0o644).map_err(|e| FetchError::Checkout(e.to_string()))
}

/// The remote's branches (remote-tracking refs after the fetch), `HEAD` left out.
fn remote_branches(git: &git2::Repository, prefix: &str) -> Result<Vec<String>, FetchError> {
    let refs = git.references_glob(&format!("{prefix}*")).map_err(|e| FetchError::Checkout(e.message().to_owned()))?;
    Ok(refs.flatten().filter_map(|r| r.name().ok().and_then(|n| n.strip_prefix(prefix)).map(str::to_owned)).filter(|b| b != "HEAD").collect())
}

/// Removes environment `dir` and its owner record.
fn remove_env(target: &Path, dir: &str, why: &str, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    let path = target.join(dir);
    let removed = checkout::remove(&path)?;
    let _ = crate::durable::remove(&owner_file(target, dir));
    if removed {
        out.actions.push(format!("removed {} ({why})", path.display()));
    }
    Ok(removed)
}

fn refuse(out: &mut FetchOutcome, line: String) {
    tracing::warn!("{line}");
    out.warnings.push(line);
}

/// One environment directory per branch (`feature/x` → `feature__x`). The
/// mapping is kept injective: each environment records the branch it came from
/// (`.DIR.dk-branch`), two remote branches that map to one directory are both
/// refused, and an environment is removed only when the remote no longer has
/// any branch mapping to it and, for a pushed deletion, the recorded branch is
/// exactly the one named.
fn puppetmaster(git: &git2::Repository, repo: &RepoConfig, refname: Option<&str>, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    let target = repo.target.as_deref().expect("checked by config");
    ensure_dir(target)?;
    let prefix = format!("refs/remotes/{}/", repo.remote);
    let branches = remote_branches(git, &prefix)?;
    if let Some(full) = refname.map(full_refname) {
        let Some(branch) = full.strip_prefix("refs/heads/") else {
            return Ok(false);
        };
        let dir = checkout::dir_name(branch).ok_or_else(|| FetchError::Checkout(format!("branch {branch:?} is not a safe directory name")))?;
        let claimants: Vec<&String> = branches.iter().filter(|b| checkout::dir_name(b).as_deref() == Some(dir.as_str())).collect();
        let recorded = owner(target, &dir);
        if branches.iter().any(|b| b == branch) {
            if claimants.len() > 1 {
                return Err(FetchError::Checkout(format!("branches {claimants:?} all map to environment {dir}: refused, rename all but one")));
            }
            if let Some(o) = recorded.as_deref().filter(|o| *o != branch && branches.iter().any(|b| b == o)) {
                return Err(FetchError::Checkout(format!("environment {dir} belongs to branch {o:?}: refusing to replace it with branch {branch:?}")));
            }
            set_owner(target, &dir, branch)?;
            return checkout_branch_into(git, repo, branch, &target.join(&dir), out);
        }
        // The message says the branch is gone: the remote must agree, and the environment must be that branch's.
        if !claimants.is_empty() {
            refuse(out, format!("branch {branch:?} is gone but {claimants:?} still map to environment {dir}: left in place"));
            return Ok(false);
        }
        match recorded {
            Some(o) if o != branch => {
                refuse(out, format!("branch {branch:?} is gone but environment {dir} belongs to branch {o:?}: left in place"));
                Ok(false)
            }
            _ => remove_env(target, &dir, &format!("branch {branch} deleted"), out),
        }
    } else {
        // Reconcile: every remote branch has its directory, no other directory of ours remains.
        let mut wanted: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        for branch in &branches {
            match checkout::dir_name(branch) {
                None => out.warnings.push(format!("branch {branch:?} skipped: not a safe directory name")),
                Some(dir) => wanted.entry(dir).or_default().push(branch.clone()),
            }
        }
        let mut changed = false;
        for (dir, claimants) in &wanted {
            let [branch] = claimants.as_slice() else {
                refuse(out, format!("branches {claimants:?} all map to environment {dir}: none is checked out there until all but one are renamed"));
                continue;
            };
            set_owner(target, dir, branch)?;
            changed |= checkout_branch_into(git, repo, branch, &target.join(dir), out)?;
        }
        if let Ok(rd) = std::fs::read_dir(target) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || wanted.contains_key(&name) {
                    continue;
                }
                if checkout::current_commit(&e.path()).is_some() {
                    changed |= remove_env(target, &name, "branch deleted", out)?;
                }
            }
        }
        Ok(changed)
    }
}

fn tags(git: &git2::Repository, repo: &RepoConfig, out: &mut FetchOutcome) -> Result<bool, FetchError> {
    let target = repo.target.as_deref().expect("checked by config");
    ensure_dir(target)?;
    let mut changed = false;
    let refs = git.references_glob("refs/tags/*").map_err(|e| FetchError::Checkout(e.message().to_owned()))?;
    for r in refs.flatten() {
        let Ok(name) = r.name().map(str::to_owned) else {
            continue;
        };
        let tag = &name["refs/tags/".len()..];
        let Some(dir) = checkout::dir_name(tag) else {
            out.warnings.push(format!("tag {tag:?} skipped: not a safe directory name"));
            continue;
        };
        let dest = target.join(&dir);
        if std::fs::symlink_metadata(&dest).is_ok() {
            continue;
        }
        let Ok(commit) = r.peel_to_commit() else {
            out.warnings.push(format!("tag {tag:?} skipped: does not point at a commit"));
            continue;
        };
        if checkout::create_once(git, &commit, &dest)? {
            out.actions.push(format!("checked out tag {tag} ({}) into {}", short(commit.id()), dest.display()));
            changed = true;
        }
    }
    Ok(changed)
}
