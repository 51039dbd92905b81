//! A blocking facade over the async client, for the C, Python and JVM bindings.
//!
//! It owns a small tokio runtime (one I/O worker thread) so the connection keeps
//! heart-beating and reconnecting between calls, and so subscription callbacks
//! run on a Rust thread the binding does not own. Bindings call only this
//! module and never re-implement logic.

use crate::message::publisher::PublishError;
use crate::message::{Build, Commit, Destinations, Package, Publisher, Wire};
use crate::spool::{Spool, SpoolError};
use crate::stomp::{self, Client, ClientConfig, Message, SendOptions, SubscribeOptions, Subscription};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// A connected client usable from plain threads.
#[derive(Debug, Clone)]
pub struct BlockingClient {
    rt: Arc<Runtime>,
    client: Client,
}

/// Refuses to block inside an async context (such as a subscription callback on
/// the I/O thread), which would panic or deadlock.
fn not_in_async_context() -> Result<(), stomp::Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(stomp::Error::Invalid("blocking deploykit call made inside an async context or a subscription callback (the I/O thread); make it from another thread".into()));
    }
    Ok(())
}

/// Runs `f` to completion on `rt`, unless called from an async context.
fn run<T, E: From<stomp::Error>>(rt: &Runtime, f: impl std::future::Future<Output = Result<T, E>>) -> Result<T, E> {
    not_in_async_context()?;
    rt.block_on(f)
}

/// Builds the runtime every blocking client uses.
fn runtime() -> Result<Runtime, stomp::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("deploykit-io")
        .enable_all()
        .build()
        .map_err(|source| stomp::Error::Io { what: "starting the deploykit I/O runtime".into(), source })
}

impl BlockingClient {
    /// Connects (honouring the failover options) and returns once ready.
    pub fn connect(config: ClientConfig) -> Result<BlockingClient, stomp::Error> {
        let rt = Arc::new(runtime()?);
        let client = run(&rt, Client::connect(config))?;
        Ok(BlockingClient { rt, client })
    }

    /// The async client underneath (for code that has its own runtime).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends a message; waits for the receipt when `opts.receipt` is set.
    pub fn send(&self, destination: &str, body: impl Into<Bytes>, opts: SendOptions) -> Result<(), stomp::Error> {
        run(&self.rt, self.client.send_with(destination, body, opts))
    }

    /// Sends each of `bodies` to `destination`, in order, with the same options
    /// ([`Client::send_many`]: many SENDs per turn of the client's lock); with
    /// `opts.receipt`, waits until the broker confirms the last (and so all).
    pub fn send_many<I>(&self, destination: &str, bodies: I, opts: &SendOptions) -> Result<(), stomp::Error>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        run(&self.rt, self.client.send_many(destination, bodies, opts))
    }

    /// Subscribes; returns once the broker confirmed it.
    pub fn subscribe(&self, destination: &str, opts: SubscribeOptions) -> Result<BlockingSubscription, stomp::Error> {
        let sub = run(&self.rt, self.client.subscribe(destination, opts))?;
        Ok(BlockingSubscription { rt: self.rt.clone(), sub: Some(sub) })
    }

    /// A publisher of typed messages for daemon `source`.
    pub fn publisher(&self, source: &str, wire: Wire, destinations: Destinations) -> BlockingPublisher {
        BlockingPublisher { rt: self.rt.clone(), inner: Publisher::new(self.client.clone(), source).wire(wire).destinations(destinations) }
    }

    /// Sends DISCONNECT and waits for its receipt.
    pub fn disconnect(self) -> Result<(), stomp::Error> {
        let BlockingClient { rt, client } = self;
        run(&rt, client.disconnect())
    }

    /// Sends what `spool` holds through this client (see [`Spool::drain`]), giving
    /// up with [`SpoolError::Timeout`] after `limit`; returns how many were sent.
    pub fn drain_spool(&self, spool: &Spool, limit: Option<Duration>) -> Result<usize, SpoolError> {
        not_in_async_context().map_err(|source| SpoolError::Bus { sent: 0, pending: spool.pending().map_or(0, |p| p.len()), source })?;
        self.rt.block_on(async {
            match limit {
                Some(after) => tokio::time::timeout(after, spool.drain(&self.client)).await.unwrap_or(Err(SpoolError::Timeout { after })),
                None => spool.drain(&self.client).await,
            }
        })
    }
}

/// Typed publishing from plain threads.
#[derive(Debug, Clone)]
pub struct BlockingPublisher {
    rt: Arc<Runtime>,
    inner: Publisher,
}

impl BlockingPublisher {
    /// Publishes a commit and its event line.
    pub fn commit(&self, commit: &Commit) -> Result<(), PublishError> {
        run(&self.rt, self.inner.commit(commit))
    }

    /// Publishes a build and its event line.
    pub fn build(&self, build: &Build) -> Result<(), PublishError> {
        run(&self.rt, self.inner.build(build))
    }

    /// Publishes a build and its event line with `dk-id`s (see [`Publisher::build_with_id`]).
    pub fn build_with_id(&self, build: &Build, id: Option<&str>) -> Result<(), PublishError> {
        run(&self.rt, self.inner.build_with_id(build, id))
    }

    /// Publishes a package and its event line.
    pub fn package(&self, package: &Package) -> Result<(), PublishError> {
        run(&self.rt, self.inner.package(package))
    }

    /// Publishes an event line.
    pub fn event(&self, text: &str, correlation_id: Option<String>) -> Result<(), PublishError> {
        run(&self.rt, self.inner.event(text, correlation_id))
    }
}

/// What [`BlockingSubscription::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A message arrived.
    Message(Message),
    /// Nothing within the timeout.
    Timeout,
    /// The client closed for good.
    Closed,
}

/// A subscription read from plain threads, by polling or by callback.
#[derive(Debug)]
pub struct BlockingSubscription {
    rt: Arc<Runtime>,
    sub: Option<Subscription>,
}

/// Keeps a callback subscription running; dropping it (or [`CallbackHandle::stop`]) stops the callbacks.
#[derive(Debug)]
pub struct CallbackHandle {
    rt: Arc<Runtime>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CallbackHandle {
    /// Stops delivering and waits until no callback is running (so the caller may free its state).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Aborts the task and waits for it.
    fn stop_inner(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = self.rt.block_on(task);
        }
    }
}

impl Drop for CallbackHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

impl BlockingSubscription {
    /// Waits up to `timeout` (forever if `None`) for the next message.
    pub fn next(&mut self, timeout: Option<Duration>) -> Next {
        let Some(sub) = self.sub.as_mut() else {
            return Next::Closed;
        };
        let got = match timeout {
            Some(t) => match self.rt.block_on(async { tokio::time::timeout(t, sub.recv()).await }) {
                Ok(m) => m,
                Err(_) => return Next::Timeout,
            },
            None => self.rt.block_on(sub.recv()),
        };
        got.map_or(Next::Closed, Next::Message)
    }

    /// Acknowledges a message (client ack modes).
    pub fn ack(&self, msg: &Message) -> Result<(), stomp::Error> {
        match &self.sub {
            Some(sub) => run(&self.rt, sub.ack(msg)),
            None => Err(stomp::Error::Closed),
        }
    }

    /// Rejects a message (client ack modes, STOMP 1.1+).
    pub fn nack(&self, msg: &Message) -> Result<(), stomp::Error> {
        match &self.sub {
            Some(sub) => run(&self.rt, sub.nack(msg)),
            None => Err(stomp::Error::Closed),
        }
    }

    /// Delivers every further message to `callback` on the I/O runtime's thread.
    pub fn on_message(mut self, mut callback: impl FnMut(Message) + Send + 'static) -> CallbackHandle {
        let mut sub = self.sub.take();
        let task = self.rt.spawn(async move {
            while let Some(msg) = match sub.as_mut() {
                Some(s) => s.recv().await,
                None => None,
            } {
                callback(msg);
            }
        });
        CallbackHandle { rt: self.rt.clone(), task: Some(task) }
    }

    /// Unsubscribes and waits for the receipt.
    pub fn unsubscribe(mut self) -> Result<(), stomp::Error> {
        match self.sub.take() {
            Some(sub) => run(&self.rt, sub.unsubscribe()),
            None => Ok(()),
        }
    }
}
