//! Sending an agent's replies: one per step start and finish, and a final one
//! carrying the whole result.

use crate::deploy::identity::AgentIdentity;
use crate::message::{encode, DeployReply, DeployRequest, StepState, Wire};
use crate::stomp::{Client, Headers, SendOptions};
use std::sync::Arc;

pub use crate::message::deploy::{StepResult, REPLY_VALIDITY, TEMP_QUEUE};

/// Where replies to `req` go: for a private `/temp-queue/` the broker's rewritten
/// `reply-to` header (the queue's name for everyone else), otherwise `reply_to`.
pub fn reply_destination(req: &DeployRequest, headers: &Headers) -> Option<String> {
    let body = req.reply_to.as_deref()?;
    if !body.starts_with(TEMP_QUEUE) {
        return Some(body.to_owned());
    }
    // Only the broker can have rewritten it; our own /temp-queue/ would be a queue of ours.
    headers.get("reply-to").filter(|h| h.starts_with('/') && !h.starts_with(TEMP_QUEUE) && h.len() <= 1024).map(str::to_owned)
}

/// Sends signed replies for one request to its reply destination (if any).
#[derive(Debug, Clone)]
pub struct Reporter {
    client: Client,
    reply_to: Option<String>,
    identity: Arc<AgentIdentity>,
    template: DeployReply,
}

impl Reporter {
    /// A reporter for `req` (which came with `headers`), answering and signing as `identity`.
    pub fn new(client: Client, req: &DeployRequest, headers: &Headers, identity: Arc<AgentIdentity>) -> Reporter {
        let template = DeployReply {
            request_id: req.request_id.clone(),
            node: identity.name().to_owned(),
            site: req.site.clone(),
            step: None,
            state: StepState::Started,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: None,
            is_final: false,
            error: None,
            correlation_id: req.correlation_id.clone(),
            data: serde_json::Value::Null,
            expires_at: 0,
        };
        Reporter { client, reply_to: reply_destination(req, headers), identity, template }
    }

    async fn send(&self, mut reply: DeployReply) {
        let Some(dest) = &self.reply_to else { return };
        reply.expires_at = crate::deploy::agent::releases::now() + REPLY_VALIDITY;
        match encode(&reply, Wire::Json) {
            Ok(out) => {
                let mut headers = out.headers;
                self.identity.sign(&out.body, &mut headers);
                let opts = SendOptions { headers, ..SendOptions::default() };
                if let Err(e) = self.client.send_with(dest, out.body, opts).await {
                    tracing::warn!(request = %reply.request_id, error = %e, "reply not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "reply not encodable"),
        }
    }

    /// Says a step began.
    pub async fn started(&self, step: &str) {
        self.send(DeployReply { step: Some(step.to_owned()), state: StepState::Started, ..self.template.clone() }).await
    }

    /// Says how a step ended.
    pub async fn finished(&self, r: &StepResult) {
        self.send(DeployReply {
            step: Some(r.step.clone()),
            state: r.state,
            exit_code: r.exit_code,
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            duration_ms: Some(r.duration_ms),
            error: r.error.clone(),
            ..self.template.clone()
        })
        .await
    }

    /// Sends the final reply.
    pub async fn last(&self, state: StepState, error: Option<String>, data: serde_json::Value) {
        self.send(DeployReply { state, error, data, is_final: true, ..self.template.clone() }).await
    }
}
