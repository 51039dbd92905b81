//! An attacker on the bus: a plain STOMP client that reads the broadcast
//! requests and answers them (or announces itself) as some identity, signed
//! however the test says. It uses only what every bus reader has.

use deploykit::deploy::keys::{SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use deploykit::deploy::trust::{Certificate, CERT_HEADER};
use deploykit::message::{decode, encode, AgentAnnounce, DeployReply, DeployRequest, Message, SiteStatus, StepState, Wire};
use deploykit::stomp::{Client, Headers, SendOptions, SubscribeOptions};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// How a forged message is signed.
#[derive(Clone)]
pub enum Forgery {
    /// No signature headers.
    Unsigned,
    /// Signed by the attacker's own key, with a certificate from the attacker's own "fleet" key.
    SelfSigned(SecretKey),
    /// Signed with another real agent's key and certificate (a compromised or malicious peer).
    Stolen {
        /// That agent's key.
        key: SecretKey,
        /// That agent's certificate text.
        cert: String,
    },
}

impl Forgery {
    /// Adds the headers this forgery carries for `body`.
    pub fn sign(&self, body: &[u8], headers: &mut Headers, identity: &str) {
        let (key, cert) = match self {
            Forgery::Unsigned => return,
            Forgery::SelfSigned(k) => {
                let fake_fleet = SecretKey::generate().unwrap();
                (k, Certificate::issue(&fake_fleet, identity, &k.public(), deploykit::deploy::agent::releases::now() + 3600))
            }
            Forgery::Stolen { key, cert } => (key, cert.clone()),
        };
        headers.push(SIGNER_HEADER, key.public().to_string());
        headers.push(SIGNATURE_HEADER, key.sign(body));
        headers.push(CERT_HEADER, cert);
    }
}

/// A description claiming site `www`, class `web`, fact `sitetype=live`.
pub fn fake_announce(identity: &str) -> AgentAnnounce {
    AgentAnnounce {
        identity: identity.into(),
        classes: vec!["web".into()],
        facts: BTreeMap::from([("sitetype".to_string(), "live".to_string())]),
        sites: vec![SiteStatus { name: "www".into(), current: None, repo: "www".into(), commit: None }],
        version: "6.6.6".into(),
        expires_at: deploykit::deploy::agent::releases::now() + 600,
    }
}

/// Where a bus reader sends a reply to `req`: the broker-rewritten `reply-to` header, else the body's.
pub fn reply_destination(req: &DeployRequest, headers: &Headers) -> String {
    headers.get("reply-to").map(str::to_owned).or_else(|| req.reply_to.clone()).expect("a reply destination")
}

/// Sends a forged final reply to `req` as `node`.
pub async fn forge_reply(client: &Client, req: &DeployRequest, headers: &Headers, node: &str, state: StepState, data: serde_json::Value, how: &Forgery) {
    let reply = DeployReply {
        request_id: req.request_id.clone(),
        node: node.into(),
        site: req.site.clone(),
        step: None,
        state,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        duration_ms: None,
        is_final: true,
        error: None,
        correlation_id: None,
        data,
        expires_at: deploykit::deploy::agent::releases::now() + 600,
    };
    let out = encode(&reply, Wire::Json).unwrap();
    let mut h = out.headers;
    how.sign(&out.body, &mut h, node);
    client.send_with(&reply_destination(req, headers), out.body, SendOptions { headers: h, receipt: true, ..Default::default() }).await.unwrap();
}

/// Announces `identity` on `agents_topic`, forged as `how`.
pub async fn forge_announce(client: &Client, agents_topic: &str, identity: &str, how: &Forgery) {
    let out = encode(&fake_announce(identity), Wire::Json).unwrap();
    let mut h = out.headers;
    how.sign(&out.body, &mut h, identity);
    client.send_with(agents_topic, out.body, SendOptions { headers: h, receipt: true, ..Default::default() }).await.unwrap();
}

/// A phantom server `identity`: announces itself, then answers every request
/// on `deploy_topic` with a final "ok" (its description for discovery).
/// Each request it answered is reported on the returned channel.
pub async fn phantom(
    client: Client,
    deploy_topic: &str,
    agents_topic: &str,
    identity: &str,
    how: Forgery,
) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<DeployRequest>) {
    let mut sub = client.subscribe(deploy_topic, SubscribeOptions::default()).await.unwrap();
    forge_announce(&client, agents_topic, identity, &how).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let identity = identity.to_owned();
    let task = tokio::spawn(async move {
        while let Some(m) = sub.recv().await {
            let Ok(Message::DeployRequest(req)) = decode(m.destination(), &m.headers, &m.body) else { continue };
            let data = serde_json::to_value(fake_announce(&identity)).unwrap();
            forge_reply(&client, &req, &m.headers, &identity, StepState::Ok, data, &how).await;
            let _ = tx.send(req);
        }
    });
    (task, rx)
}
