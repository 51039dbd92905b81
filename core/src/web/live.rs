//! Deploys in progress: each holds a view (a row per server with its steps)
//! that rollout events update, a broadcast of the changed rows for the
//! deploy page's server-sent events, and the stop switch.

use crate::deploy::controller::{NodeResult, NodeState, RolloutEvent, RolloutReport};
use crate::message::StepState;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// The steps of a deploy, in order (rollbacks use `link` and `post-deploy` only).
pub const STEPS: [&str; 6] = ["pre-deploy", "checkout", "pre-link", "link", "post-deploy", "health"];

/// One step of one server, as shown.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepView {
    /// Its name.
    pub step: String,
    /// `running`, `ok`, `failed`, `skipped`, `refused`.
    pub state: String,
    /// A hook's exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Output tails.
    pub stdout: String,
    /// Error output tail.
    pub stderr: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One server's row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeView {
    /// Identity.
    pub node: String,
    /// Its batch (0 is the canary when there is one).
    pub batch: usize,
    /// `pending`, `running`, `ok`, `failed`, `refused`, `no-answer`, `not-started`, `missing`.
    pub state: String,
    /// Its steps so far.
    pub steps: Vec<StepView>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The release live afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// The tag was already live there: nothing ran (`state` is `ok`).
    #[serde(default)]
    pub unchanged: bool,
}

impl NodeView {
    /// Whether this server ended on the tag by deploying it now (not already live).
    pub fn changed_ok(&self) -> bool {
        self.state == "ok" && !self.unchanged
    }
}

/// The whole view of a deploy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct DeployView {
    /// Rows in plan order.
    pub nodes: Vec<NodeView>,
    /// Why no further batch started.
    pub stopped: Option<String>,
    /// Whether the rollout is over (false while it waits for an approval: it has not begun).
    pub finished: bool,
    /// `running`, `ok`, `failed`, `stopped`, `error`; `awaiting approval` while it waits, or how its wait ended.
    pub result: String,
    /// An error that ended the rollout before or outside the servers (no servers, bus).
    pub error: Option<String>,
}

impl DeployView {
    /// Servers finished (in any state) and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.nodes.iter().filter(|n| !matches!(n.state.as_str(), "pending" | "running")).count(), self.nodes.len())
    }

    /// The outcome in words, each kind counted apart: "2 deployed, 1 already live, 1 failed";
    /// `done` names what an `ok` server went through ("deployed", "rolled back").
    pub fn summary(&self, done: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut count = |n: usize, what: &str| {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        };
        let of = |state: &str| self.nodes.iter().filter(|n| n.state == state).count();
        count(self.nodes.iter().filter(|n| n.changed_ok()).count(), done);
        count(self.nodes.iter().filter(|n| n.state == "ok" && n.unchanged).count(), "already live");
        for (state, what) in [
            ("failed", "failed"),
            ("refused", "refused"),
            ("no-answer", "no answer"),
            ("not-started", "not started"),
            ("missing", "missing"),
            ("running", "running"),
            ("pending", "pending"),
        ] {
            count(of(state), what);
        }
        parts.join(", ")
    }

    /// The view of a finished report (history pages of earlier deploys).
    pub fn from_report(report: &RolloutReport, result: &str) -> DeployView {
        let mut nodes: Vec<NodeView> = report.nodes.iter().map(|r| node_from_result(r, r.batch)).collect();
        nodes.extend(report.missing.iter().map(|n| missing_row(n)));
        DeployView { nodes, stopped: report.stopped.clone(), finished: true, result: result.to_owned(), error: None }
    }
}

/// What the SSE stream carries, as JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Update {
    /// The whole view (first message of each stream).
    Snapshot {
        /// The view.
        view: DeployView,
    },
    /// One row changed.
    Node {
        /// The row.
        node: NodeView,
        /// Finished servers.
        done: usize,
        /// All servers.
        total: usize,
    },
    /// The plan is known (rows appear).
    Planned {
        /// The view.
        view: DeployView,
    },
    /// No further batch starts.
    Stopped {
        /// Why.
        reason: String,
    },
    /// The rollout is over.
    Finished {
        /// The final view.
        view: DeployView,
    },
    /// A deploy waiting for an approval stopped waiting (approved, rejected, cancelled or
    /// lapsed): the page reloads to show what became of it.
    Decided,
}

fn state_name(s: StepState) -> &'static str {
    match s {
        StepState::Started => "running",
        StepState::Ok => "ok",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Refused => "refused",
    }
}

fn node_state(s: NodeState) -> &'static str {
    match s {
        NodeState::Ok => "ok",
        NodeState::Failed => "failed",
        NodeState::Refused => "refused",
        NodeState::NoAnswer => "no-answer",
        NodeState::NotStarted => "not-started",
    }
}

fn node_from_result(r: &NodeResult, batch: usize) -> NodeView {
    NodeView {
        node: r.node.clone(),
        batch,
        state: node_state(r.state).to_owned(),
        steps: r
            .steps
            .iter()
            .map(|s| StepView {
                step: s.step.clone(),
                state: state_name(s.state).to_owned(),
                exit_code: s.exit_code,
                duration_ms: Some(s.duration_ms),
                stdout: s.stdout.clone(),
                stderr: s.stderr.clone(),
                error: s.error.clone(),
            })
            .collect(),
        error: r.error.clone(),
        live: r.live.clone(),
        unchanged: r.already_live(),
    }
}

/// The row of an expected server that did not answer discovery.
fn missing_row(node: &str) -> NodeView {
    NodeView { node: node.to_owned(), batch: 0, state: "missing".into(), steps: vec![], error: Some("did not answer discovery".into()), live: None, unchanged: false }
}

/// A deploy in progress.
#[derive(Debug)]
pub struct LiveDeploy {
    /// Its history id.
    pub id: i64,
    view: Mutex<DeployView>,
    updates: broadcast::Sender<Arc<String>>,
    stop: watch::Sender<bool>,
}

impl LiveDeploy {
    /// A deploy with no plan yet; returns it and the stop receiver for the rollout.
    pub fn new(id: i64) -> (Arc<LiveDeploy>, watch::Receiver<bool>) {
        let (stop, stop_rx) = watch::channel(false);
        let (updates, _) = broadcast::channel(1024);
        let view = DeployView { result: "running".into(), ..DeployView::default() };
        (Arc::new(LiveDeploy { id, view: Mutex::new(view), updates, stop }), stop_rx)
    }

    /// The current view.
    pub fn view(&self) -> DeployView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A snapshot and the updates after it (no update is missed or doubled).
    pub fn subscribe(&self) -> (DeployView, broadcast::Receiver<Arc<String>>) {
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        (v.clone(), self.updates.subscribe())
    }

    /// Asks the rollout to start no further batch.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Whether stop was asked.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn publish(&self, u: &Update) {
        if let Ok(json) = serde_json::to_string(u) {
            let _ = self.updates.send(Arc::new(json));
        }
    }

    /// Applies a rollout event and tells the watchers.
    pub fn apply(&self, e: &RolloutEvent) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            RolloutEvent::Planned { batches } => {
                let missing: Vec<NodeView> = v.nodes.drain(..).filter(|n| n.state == "missing").collect();
                v.nodes = batches
                    .iter()
                    .enumerate()
                    .flat_map(|(b, nodes)| {
                        nodes.iter().map(move |n| NodeView { node: n.clone(), batch: b, state: "pending".into(), steps: vec![], error: None, live: None, unchanged: false })
                    })
                    .collect();
                v.nodes.extend(missing);
                self.publish(&Update::Planned { view: v.clone() });
            }
            RolloutEvent::Missing { nodes, .. } => {
                v.nodes.extend(nodes.iter().map(|n| missing_row(n)));
                self.publish(&Update::Planned { view: v.clone() });
            }
            RolloutEvent::BatchStarted { nodes, .. } => {
                for n in v.nodes.iter_mut().filter(|n| nodes.contains(&n.node)) {
                    n.state = "running".into();
                }
                let (done, total) = v.progress();
                for n in v.nodes.iter().filter(|n| nodes.contains(&n.node)) {
                    self.publish(&Update::Node { node: n.clone(), done, total });
                }
            }
            RolloutEvent::Step { reply } => {
                let (done, total) = v.progress();
                let Some(n) = v.nodes.iter_mut().find(|n| n.node == reply.node) else {
                    return;
                };
                let step = reply.step.clone().unwrap_or_default();
                let sv = StepView {
                    step: step.clone(),
                    state: state_name(reply.state).to_owned(),
                    exit_code: reply.exit_code,
                    duration_ms: reply.duration_ms,
                    stdout: reply.stdout.clone(),
                    stderr: reply.stderr.clone(),
                    error: reply.error.clone(),
                };
                match n.steps.iter_mut().find(|s| s.step == step) {
                    Some(s) => *s = sv,
                    None => n.steps.push(sv),
                }
                self.publish(&Update::Node { node: n.clone(), done, total });
            }
            RolloutEvent::NodeDone { result } => {
                let batch = v.nodes.iter().find(|n| n.node == result.node).map_or(result.batch, |n| n.batch);
                let mut nv = node_from_result(result, batch);
                if let Some(n) = v.nodes.iter_mut().find(|n| n.node == result.node) {
                    if nv.steps.is_empty() {
                        nv.steps = std::mem::take(&mut n.steps);
                    }
                    *n = nv.clone();
                } else {
                    v.nodes.push(nv.clone());
                }
                let (done, total) = v.progress();
                self.publish(&Update::Node { node: nv, done, total });
            }
            RolloutEvent::Stopped { reason } => {
                v.stopped = Some(reason.clone());
                self.publish(&Update::Stopped { reason: reason.clone() });
            }
        }
    }

    /// Marks the rollout over with `result` (and an error outside the servers).
    pub fn finish(&self, result: &str, error: Option<String>) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.finished = true;
        v.result = result.to_owned();
        v.error = error;
        self.publish(&Update::Finished { view: v.clone() });
    }
}

/// The deploys in progress (and recently finished, until their page is served from history).
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<i64, Arc<LiveDeploy>>>,
    removed: tokio::sync::Notify,
}

impl Registry {
    /// Adds a deploy.
    pub fn insert(&self, d: Arc<LiveDeploy>) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(d.id, d);
    }

    /// Deploy `id`, if in progress.
    pub fn get(&self, id: i64) -> Option<Arc<LiveDeploy>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// Forgets deploy `id` (its history row holds the result).
    pub fn remove(&self, id: i64) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.removed.notify_waiters();
    }

    /// Waits until no deploy is in progress.
    pub async fn drained(&self) {
        loop {
            let removed = self.removed.notified();
            tokio::pin!(removed);
            removed.as_mut().enable();
            if self.is_empty() {
                return;
            }
            removed.await;
        }
    }

    /// Every deploy in progress.
    pub fn all(&self) -> Vec<Arc<LiveDeploy>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// How many deploys are in progress.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_servers_are_rows_before_and_after_the_plan_and_in_history() {
        let (live, _stop) = LiveDeploy::new(1);
        live.apply(&RolloutEvent::Missing { nodes: vec!["web03".into()], unnamed: 0 });
        live.apply(&RolloutEvent::Planned { batches: vec![vec!["web01".into()], vec!["web02".into()]] });
        let rows: Vec<(String, String)> = live.view().nodes.iter().map(|n| (n.node.clone(), n.state.clone())).collect();
        let want = |s: &[(&str, &str)]| s.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert_eq!(rows, want(&[("web01", "pending"), ("web02", "pending"), ("web03", "missing")]));
        let report = RolloutReport {
            action: crate::message::DeployAction::Deploy,
            site: "www".into(),
            tag: Some("v2".into()),
            nodes: vec![],
            stopped: Some("missing".into()),
            request_ids: vec![],
            duration_ms: 1,
            missing: vec!["web03".into()],
            missing_unnamed: 0,
        };
        let view = DeployView::from_report(&report, "failed");
        assert_eq!(view.nodes[0].state, "missing");
        assert_eq!(view.nodes[0].error.as_deref(), Some("did not answer discovery"));
    }

    #[test]
    fn a_report_from_history_keeps_each_servers_batch() {
        let node = |name: &str, batch: usize| NodeResult {
            node: name.into(),
            state: NodeState::Ok,
            error: None,
            steps: vec![],
            live: Some("www_v2".into()),
            previous: None,
            elapsed_ms: 5,
            batch,
            unchanged: false,
            commit: None,
        };
        let report = RolloutReport {
            action: crate::message::DeployAction::Deploy,
            site: "www".into(),
            tag: Some("v2".into()),
            nodes: vec![node("web01", 0), node("web02", 1), node("web03", 2)],
            stopped: None,
            request_ids: vec![],
            duration_ms: 9,
            missing: vec![],
            missing_unnamed: 0,
        };
        let json = serde_json::to_string(&report).unwrap();
        let view = DeployView::from_report(&serde_json::from_str(&json).unwrap(), "ok");
        assert_eq!(view.nodes.iter().map(|n| n.batch).collect::<Vec<_>>(), [0, 1, 2], "the canary stays the canary");
    }

    #[test]
    fn an_already_live_server_is_counted_apart_live_and_from_history() {
        let result = |node: &str, unchanged: bool| NodeResult {
            node: node.into(),
            state: NodeState::Ok,
            error: None,
            steps: vec![],
            live: Some("www_v2".into()),
            previous: Some("www_v2".into()),
            elapsed_ms: 5,
            batch: 0,
            unchanged,
            commit: None,
        };
        let (live, _stop) = LiveDeploy::new(1);
        live.apply(&RolloutEvent::Planned { batches: vec![vec!["web01".into()], vec!["web02".into(), "web03".into()]] });
        for (n, unchanged) in [("web01", true), ("web02", false), ("web03", false)] {
            live.apply(&RolloutEvent::NodeDone { result: NodeResult { batch: usize::from(n != "web01"), ..result(n, unchanged) } });
        }
        let view = live.view();
        assert_eq!(view.nodes.iter().map(|n| n.unchanged).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(view.summary("deployed"), "2 deployed, 1 already live");
        // Old reports (no `unchanged` field) still parse; new ones keep it through history.
        let old: NodeResult = serde_json::from_str(r#"{"node":"web01","state":"ok","elapsed_ms":1,"batch":0}"#).unwrap();
        assert!(!old.unchanged && old.commit.is_none());
        let json = serde_json::to_string(&result("web01", false)).unwrap();
        assert!(!json.contains("unchanged") && !json.contains("commit"), "skipped when false or none: {json}");
        let report = RolloutReport {
            action: crate::message::DeployAction::Deploy,
            site: "www".into(),
            tag: Some("v2".into()),
            nodes: vec![result("web01", true), NodeResult { batch: 1, ..result("web02", false) }],
            stopped: None,
            request_ids: vec![],
            duration_ms: 9,
            missing: vec![],
            missing_unnamed: 0,
        };
        let back: RolloutReport = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        let view = DeployView::from_report(&back, "ok");
        assert!(view.nodes[0].unchanged && !view.nodes[1].unchanged);
        assert_eq!(view.summary("deployed"), "1 deployed, 1 already live");
    }
}
