//! dk-deploy's terminal output: the live per-server view on a TTY, one line
//! per event otherwise, and the summary table.

use deploykit::deploy::controller::{NodeResult, NodeState, RolloutEvent, RolloutReport};
use deploykit::message::StepState;
use std::collections::BTreeMap;
use std::io::Write;

/// What the live view shows for one server.
#[derive(Debug, Clone, Default)]
struct Row {
    batch: usize,
    step: String,
    state: String,
}

/// Renders rollout events as they come.
pub struct Progress {
    tty: bool,
    order: Vec<String>,
    rows: BTreeMap<String, Row>,
    drawn: usize,
}

fn state_word(s: StepState) -> &'static str {
    match s {
        StepState::Started => "running",
        StepState::Ok => "ok",
        StepState::Failed => "FAILED",
        StepState::Skipped => "skipped",
        StepState::Refused => "REFUSED",
    }
}

/// A node's end state as a word.
pub fn node_word(s: NodeState) -> &'static str {
    match s {
        NodeState::Ok => "ok",
        NodeState::Failed => "FAILED",
        NodeState::Refused => "REFUSED",
        NodeState::NoAnswer => "NO ANSWER",
        NodeState::NotStarted => "not started",
    }
}

/// A node's result as a word: "already live" for a server that was already on the tag.
pub fn result_word(r: &NodeResult) -> &'static str {
    if r.already_live() {
        "already live"
    } else {
        node_word(r.state)
    }
}

impl Progress {
    /// A view; `tty` redraws a table in place, otherwise lines are appended.
    pub fn new(tty: bool) -> Progress {
        Progress { tty, order: Vec::new(), rows: BTreeMap::new(), drawn: 0 }
    }

    /// Takes one event.
    pub fn event(&mut self, e: &RolloutEvent) {
        match e {
            RolloutEvent::Planned { batches } => {
                for (i, b) in batches.iter().enumerate() {
                    for n in b {
                        self.order.push(n.clone());
                        self.rows.insert(n.clone(), Row { batch: i, step: "-".into(), state: "waiting".into() });
                    }
                }
                if !self.tty {
                    let sizes: Vec<String> = batches.iter().map(|b| b.len().to_string()).collect();
                    println!("plan: {} servers in {} batches ({})", self.order.len(), batches.len(), sizes.join(" + "));
                }
            }
            RolloutEvent::BatchStarted { index, nodes, request_id } => {
                if !self.tty {
                    println!("batch {index}: {} (request {request_id})", nodes.join(", "));
                }
                for n in nodes {
                    if let Some(r) = self.rows.get_mut(n) {
                        r.state = "sent".into();
                    }
                }
            }
            RolloutEvent::Step { reply } => {
                let step = reply.step.clone().unwrap_or_default();
                if !self.tty {
                    println!("  {:<20} {:<12} {}", reply.node, step, state_word(reply.state));
                    // The tail of what the hook said (its last lines), indented.
                    let out = if reply.state == StepState::Failed && !reply.stderr.is_empty() { &reply.stderr } else { &reply.stdout };
                    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
                    for l in &lines[lines.len().saturating_sub(3)..] {
                        println!("  {:<20} {:<12} | {l}", "", "");
                    }
                }
                if let Some(r) = self.rows.get_mut(&reply.node) {
                    r.step = step;
                    r.state = state_word(reply.state).into();
                }
            }
            RolloutEvent::NodeDone { result } => {
                if !self.tty {
                    println!("  {:<20} done         {}{}", result.node, result_word(result), result.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default());
                }
                if let Some(r) = self.rows.get_mut(&result.node) {
                    r.state = result_word(result).into();
                    if result.state == NodeState::Ok {
                        r.step = if result.unchanged { "-".into() } else { "done".into() };
                    }
                }
            }
            RolloutEvent::Missing { nodes, unnamed } => {
                // Said on stderr in both modes: it is the reason the rollout may not start.
                eprintln!("missing: {}", missing_text(nodes, *unnamed));
            }
            RolloutEvent::Stopped { reason } => {
                if !self.tty {
                    println!("stopped: {reason}");
                }
            }
        }
        if self.tty {
            self.redraw();
        }
    }

    fn redraw(&mut self) {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        for n in &self.order {
            let r = &self.rows[n];
            let _ = writeln!(out, "\x1b[2K{:<24} batch {:<3} {:<12} {}", n, r.batch, r.step, r.state);
        }
        self.drawn = self.order.len();
        let _ = out.flush();
    }
}

/// Missing servers as words: their names, and how many more were expected by count.
pub fn missing_text(nodes: &[String], unnamed: usize) -> String {
    let mut parts: Vec<String> = nodes.to_vec();
    if unnamed > 0 {
        parts.push(format!("{unnamed} more expected server{} (--expect; names unknown)", if unnamed == 1 { "" } else { "s" }));
    }
    format!("{} did not answer discovery", parts.join(", "))
}

/// The summary table printed at the end.
pub fn summary(report: &RolloutReport) -> String {
    let mut s = String::new();
    s.push_str(&format!("{:<24} {:<12} {:<28} {:>8}  {}\n", "SERVER", "RESULT", "LIVE", "TIME", "ERROR"));
    for n in &report.nodes {
        let live = n.live.clone().or_else(|| n.previous.clone()).unwrap_or_else(|| "-".into());
        let time = match n.elapsed_ms {
            0 => "-".into(),
            ms if ms < 1000 => format!("{ms}ms"),
            ms => format!("{:.1}s", ms as f64 / 1000.0),
        };
        s.push_str(&format!("{:<24} {:<12} {:<28} {:>8}  {}\n", n.node, result_word(n), live, time, n.error.as_deref().unwrap_or("")));
    }
    for n in &report.missing {
        s.push_str(&format!("{:<24} {:<12} {:<28} {:>8}  {}\n", n, "MISSING", "-", "-", "did not answer discovery"));
    }
    let ok = report.nodes.iter().filter(|n| n.state == NodeState::Ok).count();
    s.push_str(&format!("{ok}/{} ok in {:.1}s", report.nodes.len() + report.missing.len() + report.missing_unnamed, report.duration_ms as f64 / 1000.0));
    let unchanged = report.nodes.iter().filter(|n| n.already_live()).count();
    if unchanged > 0 {
        let done = if report.action == deploykit::message::DeployAction::Rollback { "rolled back" } else { "deployed" };
        s.push_str(&format!(" ({} {done}, {unchanged} already live)", ok - unchanged));
    }
    if !report.missing.is_empty() || report.missing_unnamed > 0 {
        s.push_str(&format!("; missing: {}", missing_text(&report.missing, report.missing_unnamed)));
    }
    if let Some(r) = &report.stopped {
        s.push_str(&format!("; stopped: {r}"));
    }
    s.push('\n');
    s
}

/// `text` with control characters (terminal escapes) replaced by `?`: for names and reasons from the bus.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn an_already_live_server_says_so_and_is_counted_apart() {
        let node = |name: &str, unchanged: bool| NodeResult {
            node: name.into(),
            state: NodeState::Ok,
            error: None,
            steps: vec![],
            live: Some("www_v2".into()),
            previous: None,
            elapsed_ms: 12,
            batch: 0,
            unchanged,
            commit: None,
        };
        let report = RolloutReport {
            action: deploykit::message::DeployAction::Deploy,
            site: "www".into(),
            tag: Some("v2".into()),
            nodes: vec![node("web01", true), node("web02", false), node("web03", false)],
            stopped: None,
            request_ids: vec![],
            duration_ms: 900,
            missing: vec![],
            missing_unnamed: 0,
        };
        let text = summary(&report);
        let web01 = text.lines().find(|l| l.starts_with("web01")).unwrap();
        assert!(web01.contains("already live"), "{text}");
        assert!(text.lines().find(|l| l.starts_with("web02")).unwrap().contains(" ok "), "{text}");
        assert!(text.contains("3/3 ok in 0.9s (2 deployed, 1 already live)"), "{text}");
    }
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(super::printable("web01\x1b[2J\n"), "web01?[2J?");
    }
}
