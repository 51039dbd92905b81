//! What each daemon's events mean for `/healthz`: work done, an error (shown as
//! `last_error`), or nothing. One impl per daemon, so mains only hand their
//! event stream to [`super::Health::follow`].

use super::Outcome;
use crate::aptwatch::WatchEvent;
use crate::debrepo::RepoEvent;
use crate::deploy::agent::AgentEvent;
use crate::fetch::daemon::DaemonEvent;
use crate::jenkins::daemon::JenkinsEvent;
use crate::keepalive::KeepaliveEvent;
use crate::message::PackageAction;

/// A daemon event that `/healthz` counts.
pub trait Reported {
    /// Work done, an error, or not counted.
    fn outcome(&self) -> Outcome;
}

impl Reported for DaemonEvent {
    fn outcome(&self) -> Outcome {
        match self {
            DaemonEvent::Fetched(r) if r.ok => Outcome::Message,
            DaemonEvent::Fetched(r) => Outcome::Error(format!("{}: {}", r.repo, r.error.as_deref().unwrap_or("failed"))),
            DaemonEvent::Rejected { repo, why, .. } => Outcome::Error(format!("rejected {repo:?}: {why}")),
            DaemonEvent::RejectedBuild { repo, commit, why } => Outcome::Error(format!("rejected build of {repo:?} commit {commit:?}: {why}")),
            _ => Outcome::Ignore,
        }
    }
}

impl Reported for AgentEvent {
    fn outcome(&self) -> Outcome {
        match self {
            AgentEvent::Ignored { .. } | AgentEvent::Steps { .. } => Outcome::Ignore,
            AgentEvent::Done { ok: true, .. } => Outcome::Message,
            AgentEvent::Done { request_id, action, .. } => Outcome::Error(format!("{action:?} {request_id} failed")),
            AgentEvent::Refused { request_id, reason, .. } => Outcome::Error(format!("refused {request_id}: {reason}")),
            AgentEvent::Unverified { reason, .. } => Outcome::Error(format!("unverified request dropped: {reason}")),
        }
    }
}

impl Reported for JenkinsEvent {
    fn outcome(&self) -> Outcome {
        match self {
            JenkinsEvent::Triggered { .. } => Outcome::Message,
            JenkinsEvent::Failed { job, error } => Outcome::Error(format!("{job}: {error}")),
            _ => Outcome::Ignore,
        }
    }
}

impl Reported for KeepaliveEvent {
    fn outcome(&self) -> Outcome {
        match self {
            KeepaliveEvent::Sent { ok: true, .. } => Outcome::Message,
            KeepaliveEvent::Sent { target, .. } => Outcome::Error(format!("keepalive to {target} failed")),
            KeepaliveEvent::Connection { .. } => Outcome::Ignore,
        }
    }
}

impl Reported for RepoEvent {
    fn outcome(&self) -> Outcome {
        match self {
            RepoEvent::Done { package, .. } if package.action != PackageAction::Failed => Outcome::Message,
            RepoEvent::Done { package, .. } => Outcome::Error(format!("{} {} refused", package.name, package.version)),
            RepoEvent::Stuck { error, .. } => Outcome::Error(error.clone()),
            RepoEvent::Retry { file, error } => Outcome::Error(format!("{}: {error}", file.display())),
            #[allow(unreachable_patterns)]
            _ => Outcome::Ignore,
        }
    }
}

impl Reported for WatchEvent {
    fn outcome(&self) -> Outcome {
        match self {
            WatchEvent::Ran(r) if r.ok => Outcome::Message,
            WatchEvent::Ran(r) => Outcome::Error(format!("action {}", r.status)),
            _ => Outcome::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::DeployAction;

    #[test]
    fn agent_refusals_and_failures_are_errors_with_their_reason() {
        let refused = AgentEvent::Refused { request_id: "r1".into(), action: DeployAction::Deploy, reason: "no tag or branch \"v9\"".into() };
        assert_eq!(refused.outcome(), Outcome::Error("refused r1: no tag or branch \"v9\"".into()));
        assert_eq!(AgentEvent::Done { request_id: "r2".into(), action: DeployAction::Deploy, ok: true }.outcome(), Outcome::Message);
        assert_eq!(AgentEvent::Ignored { request_id: None }.outcome(), Outcome::Ignore);
    }
}
