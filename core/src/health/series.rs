//! Each daemon's labelled series, fed from its event broadcast (hand the returned
//! closure to [`super::Health::observe`]). Label values are bounded: names come
//! from the configuration ([`Allowed`], anything else is `other`) or from a fixed
//! set of results; no free text and no secrets.

use super::metrics::{Allowed, Metrics};
use crate::aptwatch::WatchEvent;
use crate::debrepo::RepoEvent;
use crate::deploy::agent::AgentEvent;
use crate::fetch::daemon::DaemonEvent;
use crate::jenkins::daemon::JenkinsEvent;
use crate::keepalive::KeepaliveEvent;
use crate::message::{DeployAction, PackageAction, StepState};
use std::path::PathBuf;

/// `ok` or `failed`.
fn result(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "failed"
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// dk-fetch: `deploykit_fetches_total{repo,result}` (`ok`, `failed`, `rejected`) and
/// `deploykit_fetch_duration_seconds{repo}`; `repos` are the configured ones.
pub fn fetch(m: &Metrics, repos: Allowed) -> impl Fn(&DaemonEvent) + Send + 'static {
    let total = m.counter("deploykit_fetches", "Fetches by repo and result (ok, failed, rejected).", &["repo", "result"]);
    let took = m.histogram("deploykit_fetch_duration_seconds", "How long fetches (and checkouts) took, by repo.", &["repo"]);
    move |e| match e {
        DaemonEvent::Fetched(r) => {
            let repo = repos.label(&r.repo);
            total.inc(&[&repo, result(r.ok)]);
            took.observe(&[&repo], seconds(r.duration_ms));
        }
        DaemonEvent::Rejected { repo, .. } | DaemonEvent::RejectedBuild { repo, .. } => total.inc(&[&repos.label(repo), "rejected"]),
        _ => {}
    }
}

fn step_result(s: StepState) -> &'static str {
    match s {
        StepState::Started => "started",
        StepState::Ok => "ok",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Refused => "refused",
    }
}

fn action(a: DeployAction) -> &'static str {
    match a {
        DeployAction::Discover => "discover",
        DeployAction::Tags => "tags",
        DeployAction::Deploy => "deploy",
        DeployAction::Rollback => "rollback",
        DeployAction::Status => "status",
    }
}

/// dk-agent: `deploykit_agent_requests_total{action,result}` (`ok`, `failed`,
/// `refused`, `unverified`), `deploykit_deploy_steps_total{site,step,result}` and
/// `deploykit_deploy_step_duration_seconds{site,step}`; `sites` are the configured ones.
pub fn agent(m: &Metrics, sites: Allowed) -> impl Fn(&AgentEvent) + Send + 'static {
    let requests = m.counter("deploykit_agent_requests", "Requests answered, by action and result (ok, failed, refused, unverified).", &["action", "result"]);
    let steps = m.counter("deploykit_deploy_steps", "Deploy and rollback steps by site, step and result.", &["site", "step", "result"]);
    let took = m.histogram("deploykit_deploy_step_duration_seconds", "How long deploy and rollback steps took, by site and step.", &["site", "step"]);
    move |e| match e {
        AgentEvent::Done { action: a, ok, .. } => requests.inc(&[action(*a), result(*ok)]),
        AgentEvent::Refused { action: a, .. } => requests.inc(&[action(*a), "refused"]),
        AgentEvent::Unverified { action: a, .. } => requests.inc(&[action(*a), "unverified"]),
        AgentEvent::Steps { site, steps: list } => {
            let site = sites.label(site);
            for s in list {
                // Step names are the agent's own (pre-deploy, checkout, link, …), a fixed set.
                let step = crate::health::metrics::clean(&s.step);
                steps.inc(&[&site, &step, step_result(s.state)]);
                took.observe(&[&site, &step], seconds(s.duration_ms));
            }
        }
        AgentEvent::Ignored { .. } => {}
    }
}

/// dk-jenkins: `deploykit_jenkins_triggers_total{job,result}`; `jobs` are the configured ones.
pub fn jenkins(m: &Metrics, jobs: Allowed) -> impl Fn(&JenkinsEvent) + Send + 'static {
    let triggers = m.counter("deploykit_jenkins_triggers", "Jenkins job triggers by job and result (ok, failed).", &["job", "result"]);
    move |e| match e {
        JenkinsEvent::Triggered { job, .. } => triggers.inc(&[&jobs.label(job), "ok"]),
        JenkinsEvent::Failed { job, .. } => triggers.inc(&[&jobs.label(job), "failed"]),
        _ => {}
    }
}

/// dk-reprepro: `deploykit_packages_total{result}` (`added`, `removed`, `failed`,
/// `stuck`, `retry`) and `deploykit_spool_depth` of `spool_dir`.
pub fn reprepro(m: &Metrics, spool_dir: PathBuf) -> impl Fn(&RepoEvent) + Send + 'static {
    let packages = m.counter("deploykit_packages", "Incoming packages by result (added, removed, failed, stuck, retry).", &["result"]);
    spool_depth(m, spool_dir);
    move |e| match e {
        RepoEvent::Done { package, .. } => packages.inc(&[match package.action {
            PackageAction::Added => "added",
            PackageAction::Removed => "removed",
            PackageAction::Failed => "failed",
        }]),
        RepoEvent::Stuck { .. } => packages.inc(&["stuck"]),
        RepoEvent::Retry { .. } => packages.inc(&["retry"]),
    }
}

/// `deploykit_spool_depth`: messages waiting in the spool at `dir` for the broker.
pub fn spool_depth(m: &Metrics, dir: PathBuf) {
    m.gauge_fn("deploykit_spool_depth", "Messages waiting in the spool for the broker.", move || {
        crate::spool::Spool::open(&dir).and_then(|s| s.pending()).map_or(0, |p| p.len() as i64)
    });
}

/// dk-apt-watch: `deploykit_apt_actions_total{result}` and `deploykit_apt_action_duration_seconds`.
pub fn apt_watch(m: &Metrics) -> impl Fn(&WatchEvent) + Send + 'static {
    let actions = m.counter("deploykit_apt_actions", "Action runs (apt-get update) by result (ok, failed).", &["result"]);
    let took = m.histogram("deploykit_apt_action_duration_seconds", "How long action runs took.", &[]);
    move |e| {
        if let WatchEvent::Ran(r) = e {
            actions.inc(&[result(r.ok)]);
            took.observe(&[], seconds(r.duration_ms));
        }
    }
}

/// dk-keepalive: `deploykit_keepalives_total{target,result}`,
/// `deploykit_keepalive_duration_seconds{target}`, `deploykit_keepalive_connected{target}`
/// and `deploykit_keepalive_reconnects_total{target}`; `targets` are the configured names.
pub fn keepalive(m: &Metrics, targets: Allowed) -> impl Fn(&KeepaliveEvent) + Send + 'static {
    let sent = m.counter("deploykit_keepalives", "Keepalive SENDs by target and result (ok, failed).", &["target", "result"]);
    let took = m.histogram("deploykit_keepalive_duration_seconds", "How long a keepalive SEND took until its receipt, by target.", &["target"]);
    let connected = m.gauges("deploykit_keepalive_connected", "1 while a target's broker connection is up.", &["target"]);
    let reconnects = m.counter("deploykit_keepalive_reconnects", "A target's broker connections made after a loss.", &["target"]);
    move |e| match e {
        KeepaliveEvent::Connection { target, up, reconnect } => {
            let target = targets.label(target);
            connected.set(&[&target], i64::from(*up));
            if *reconnect {
                reconnects.inc(&[&target]);
            }
        }
        KeepaliveEvent::Sent { target, ok, duration_ms } => {
            let target = targets.label(target);
            sent.inc(&[&target, result(*ok)]);
            took.observe(&[&target], seconds(*duration_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FetchResult;

    #[test]
    fn fetch_series_bound_repo_names() {
        let m = Metrics::new("dk-fetch");
        let observe = fetch(&m, Allowed::new(["www"]));
        let r = FetchResult {
            repo: "www".into(),
            node: "n".into(),
            mode: "normal".into(),
            refname: None,
            old_head: None,
            new_head: None,
            duration_ms: 1500,
            ok: true,
            error: None,
            trigger: "commit".into(),
            correlation_id: None,
        };
        observe(&DaemonEvent::Fetched(r.clone()));
        observe(&DaemonEvent::Fetched(FetchResult { repo: "evil\"}\n".into(), ok: false, ..r }));
        observe(&DaemonEvent::Rejected { repo: "../x".into(), refname: "r".into(), why: "no".into() });
        let text = m.encode().unwrap();
        assert!(text.contains("deploykit_fetches_total{daemon=\"dk-fetch\",repo=\"www\",result=\"ok\"} 1\n"), "{text}");
        assert!(text.contains("deploykit_fetches_total{daemon=\"dk-fetch\",repo=\"other\",result=\"failed\"} 1\n"), "{text}");
        assert!(text.contains("deploykit_fetches_total{daemon=\"dk-fetch\",repo=\"other\",result=\"rejected\"} 1\n"), "{text}");
        assert!(text.contains("deploykit_fetch_duration_seconds_count{daemon=\"dk-fetch\",repo=\"www\"} 1\n"), "{text}");
        assert!(text.contains("deploykit_fetch_duration_seconds_sum{daemon=\"dk-fetch\",repo=\"www\"} 1.5\n"), "{text}");
    }

    #[test]
    fn agent_steps_jenkins_and_keepalive_series() {
        use crate::deploy::agent::StepTime;
        let m = Metrics::new("dk-agent");
        let observe = agent(&m, Allowed::new(["www"]));
        let step = |name: &str, state| StepTime { step: name.into(), state, duration_ms: 250 };
        observe(&AgentEvent::Steps { site: "www".into(), steps: vec![step("checkout", StepState::Ok), step("pre-link", StepState::Failed)] });
        observe(&AgentEvent::Steps { site: "nope".into(), steps: vec![step("link", StepState::Skipped)] });
        observe(&AgentEvent::Done { request_id: "r".into(), action: DeployAction::Deploy, ok: false });
        let text = m.encode().unwrap();
        for line in [
            "deploykit_deploy_steps_total{daemon=\"dk-agent\",site=\"www\",step=\"checkout\",result=\"ok\"} 1\n",
            "deploykit_deploy_steps_total{daemon=\"dk-agent\",site=\"www\",step=\"pre-link\",result=\"failed\"} 1\n",
            "deploykit_deploy_steps_total{daemon=\"dk-agent\",site=\"other\",step=\"link\",result=\"skipped\"} 1\n",
            "deploykit_deploy_step_duration_seconds_sum{daemon=\"dk-agent\",site=\"www\",step=\"checkout\"} 0.25\n",
            "deploykit_agent_requests_total{daemon=\"dk-agent\",action=\"deploy\",result=\"failed\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let m = Metrics::new("dk-jenkins");
        let observe = jenkins(&m, Allowed::new(["site"]));
        observe(&JenkinsEvent::Failed { job: "secret-job?token=x".into(), error: "boom".into() });
        let text = m.encode().unwrap();
        assert!(text.contains("deploykit_jenkins_triggers_total{daemon=\"dk-jenkins\",job=\"other\",result=\"failed\"} 1\n"), "{text}");
        let m = Metrics::new("dk-keepalive");
        let observe = keepalive(&m, Allowed::new(["/topic/a"]));
        observe(&KeepaliveEvent::Sent { target: "/topic/a".into(), ok: true, duration_ms: 5 });
        let text = m.encode().unwrap();
        assert!(text.contains("deploykit_keepalives_total{daemon=\"dk-keepalive\",target=\"/topic/a\",result=\"ok\"} 1\n"), "{text}");
    }
}
