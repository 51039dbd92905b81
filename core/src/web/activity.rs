//! The activity feed: every event line on the configured destinations (what
//! eventbot showed in chat), the newest kept in memory and pushed to watchers.

use crate::message::{decode, Message};
use crate::stomp::{Client, SubscribeOptions};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// One line of the feed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Line {
    /// Unix seconds when it arrived.
    pub time: i64,
    /// Who spoke (`fetch`, `deploys`, `jenkins`, …).
    pub source: String,
    /// The host, if the line names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The text.
    pub text: String,
}

/// The feed.
#[derive(Debug)]
pub struct Activity {
    lines: Mutex<VecDeque<Line>>,
    capacity: usize,
    updates: broadcast::Sender<Arc<String>>,
}

impl Activity {
    /// An empty feed keeping `capacity` lines.
    pub fn new(capacity: usize) -> Arc<Activity> {
        Arc::new(Activity { lines: Mutex::new(VecDeque::new()), capacity: capacity.max(1), updates: broadcast::channel(256).0 })
    }

    /// The kept lines, newest first, and the updates after them.
    pub fn subscribe(&self) -> (Vec<Line>, broadcast::Receiver<Arc<String>>) {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        (l.iter().rev().cloned().collect(), self.updates.subscribe())
    }

    /// Adds a line.
    pub fn push(&self, line: Line) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == self.capacity {
            l.pop_front();
        }
        if let Ok(json) = serde_json::to_string(&line) {
            let _ = self.updates.send(Arc::new(json));
        }
        l.push_back(line);
    }

    /// Subscribes to `destinations` and feeds every event line in until the client closes;
    /// lines that carry a correlation id also go to `changes` (a push's journey).
    pub async fn follow(
        self: &Arc<Self>,
        client: &Client,
        destinations: &[String],
        changes: Option<Arc<super::changes::Changes>>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, crate::stomp::Error> {
        let mut tasks = Vec::new();
        for d in destinations {
            let mut sub = client.subscribe(d, SubscribeOptions::default()).await?;
            let me = self.clone();
            let changes = changes.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(m) = sub.recv().await {
                    match decode(m.destination(), &m.headers, &m.body) {
                        Ok(Message::Event(e)) => {
                            if let Some(c) = changes.as_ref().filter(|_| e.correlation_id.is_some()) {
                                if let Err(err) = c.apply(&Message::Event(e.clone())) {
                                    tracing::error!(error = %err, "change step not recorded");
                                }
                            }
                            me.push(Line { time: now(), source: e.source, host: e.host, text: e.text })
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "not an event line"),
                    }
                }
            }));
        }
        Ok(tasks)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
