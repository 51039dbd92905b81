//! `Client`, `Subscription` and `Message`: the bus from Python, over core's blocking facade.

use crate::convert::{from_py, to_py, type_name};
use crate::{message_err, publish_err, stomp_err, ClosedError, TimeoutError};
use deploykit::blocking::{BlockingClient, BlockingSubscription, Next};
use deploykit::message::{self, Build, BuildStatus, Commit, CommitInfo, Destinations, Source, SvnInfo, Wire};
use deploykit::stomp::{self, AckMode, ClientConfig, Headers, HeartbeatConfig, SendOptions, SubscribeOptions};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyType};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one GIL-free wait lasts before signals are checked again.
const SLICE: Duration = Duration::from_millis(100);

/// Converts a seconds argument into a duration, refusing negative, NaN and absurd values.
pub(crate) fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    if (0.0..1e9).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(PyValueError::new_err(format!("{name} must be a non-negative number of seconds, not {s}")))
    }
}

/// A `dict[str, str]` (or None) as STOMP headers.
pub(crate) fn headers_arg(headers: Option<&Bound<'_, PyDict>>) -> PyResult<Headers> {
    let mut out = Headers::new();
    if let Some(h) = headers {
        for (k, v) in h.iter() {
            let k: String = k.extract().map_err(|_| PyTypeError::new_err(format!("header names must be str, not {}", type_name(&k))))?;
            let v: String = v.extract().map_err(|_| PyTypeError::new_err(format!("header {k:?}: values must be str, not {}", type_name(&v))))?;
            out.push(k, v);
        }
    }
    Ok(out)
}

/// STOMP headers as a dict (the first value of a repeated header wins, as in STOMP).
pub(crate) fn headers_dict<'py>(py: Python<'py>, headers: &Headers) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in headers.iter() {
        if !d.contains(k)? {
            d.set_item(k, v)?;
        }
    }
    Ok(d)
}

/// `bytes` or `str` (UTF-8 encoded) as a body.
pub(crate) fn body_arg(body: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = body.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    body.extract::<Vec<u8>>().map_err(|_| PyTypeError::new_err(format!("body must be bytes or str, not {}", type_name(body))))
}

/// `"json"` or `"legacy"`.
pub(crate) fn wire_arg(wire: &str) -> PyResult<Wire> {
    wire.parse().map_err(|_| PyValueError::new_err(format!("wire must be \"json\" or \"legacy\", not {wire:?}")))
}

/// `None`/`"default"`, `"legacy"`, or a dict of `Destinations` fields laid over
/// the defaults (or over the legacy names with `"base": "legacy"`).
pub(crate) fn destinations_arg(d: Option<&Bound<'_, PyAny>>) -> PyResult<Destinations> {
    let Some(d) = d.filter(|d| !d.is_none()) else {
        return Ok(Destinations::default());
    };
    let named = |s: &str| match s {
        "default" => Ok(Destinations::default()),
        "legacy" => Ok(Destinations::legacy()),
        other => Err(PyValueError::new_err(format!("destinations must be \"default\", \"legacy\" or a dict, not {other:?}"))),
    };
    if let Ok(s) = d.extract::<String>() {
        return named(&s);
    }
    let serde_json::Value::Object(mut fields) = from_py(d)? else {
        return Err(PyTypeError::new_err("destinations must be \"default\", \"legacy\" or a dict"));
    };
    let base = match fields.remove("base") {
        None => Destinations::default(),
        Some(serde_json::Value::String(s)) => named(&s)?,
        Some(other) => return Err(PyValueError::new_err(format!("destinations: base must be \"default\" or \"legacy\", not {other}"))),
    };
    let serde_json::Value::Object(mut merged) = serde_json::to_value(base).map_err(|e| PyValueError::new_err(e.to_string()))? else {
        unreachable!("Destinations serialises to an object")
    };
    merged.extend(fields);
    serde_json::from_value(serde_json::Value::Object(merged)).map_err(|e| PyValueError::new_err(format!("destinations: {e}")))
}

/// Parses a serde-typed value (enum names, dicts) from a Python object.
fn serde_arg<T: serde::de::DeserializeOwned>(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<T> {
    serde_json::from_value(from_py(obj)?).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

/// A connection to a STOMP broker (embedded dk-broker, RabbitMQ, ActiveMQ).
///
/// ``Client(url, *, vhost="/", login=None, passcode=None, heartbeat_ms=10000,
/// timeout=10.0, connect_attempts=3)`` connects at once and raises
/// ``deploykit.ConnectionError`` (or ``UrlError``, ``RefusedError``) if it cannot.
/// ``url`` is ``stomp://[user:pass@]host:port``, ``stomp+ssl://…`` or the failover
/// form ``failover:(stomp://a:61613,stomp://b:61613)?options``. ``timeout`` bounds
/// the whole connect (shared among ``connect_attempts`` attempts) and every
/// receipt wait. Once connected the client heart-beats and reconnects by
/// itself. Thread-safe; use it as a context manager or call ``close()``.
#[pyclass(module = "deploykit._native", frozen)]
pub struct Client {
    inner: Mutex<Option<BlockingClient>>,
    endpoint: String,
}

impl Client {
    /// The live client, or `ClosedError`.
    fn live(&self) -> PyResult<BlockingClient> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| ClosedError::new_err("client is closed"))
    }

    /// The live blocking client (for the spool's drain).
    pub(crate) fn blocking(&self) -> PyResult<BlockingClient> {
        self.live()
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (url, *, vhost = "/".to_owned(), login = None, passcode = None, heartbeat_ms = 10_000, timeout = 10.0, connect_attempts = 3))]
    #[allow(clippy::too_many_arguments)]
    fn new(py: Python<'_>, url: &str, vhost: String, login: Option<String>, passcode: Option<String>, heartbeat_ms: u64, timeout: f64, connect_attempts: u32) -> PyResult<Client> {
        let timeout = seconds("timeout", timeout)?;
        if timeout.is_zero() {
            return Err(PyValueError::new_err("timeout must be positive"));
        }
        if connect_attempts == 0 {
            return Err(PyValueError::new_err("connect_attempts must be at least 1"));
        }
        let mut config = ClientConfig::new(url).map_err(stomp_err)?.vhost(vhost);
        if login.is_some() || passcode.is_some() {
            config = config.credentials(login.unwrap_or_default(), passcode.unwrap_or_default());
        }
        let hb = Duration::from_millis(heartbeat_ms);
        config = config.heartbeat(HeartbeatConfig { send: hb, receive: hb, emulate: heartbeat_ms > 0, ..HeartbeatConfig::default() });
        config.handshake.timeout = (timeout / connect_attempts).max(Duration::from_millis(50));
        config.receipt_timeout = timeout;
        config.url.options.startup_max_reconnect_attempts = Some(connect_attempts);
        let endpoint = config.url.to_string();
        let client = py.detach(move || BlockingClient::connect(config)).map_err(stomp_err)?;
        Ok(Client { inner: Mutex::new(Some(client)), endpoint })
    }

    /// Sends ``body`` (bytes, or str sent as UTF-8) to ``destination`` with extra
    /// ``headers``; with ``receipt=True`` waits until the broker confirms it.
    #[pyo3(signature = (destination, body, headers = None, receipt = false, *, persistent = false))]
    fn send(&self, py: Python<'_>, destination: &str, body: &Bound<'_, PyAny>, headers: Option<&Bound<'_, PyDict>>, receipt: bool, persistent: bool) -> PyResult<()> {
        let client = self.live()?;
        let body = body_arg(body)?;
        let opts = SendOptions { headers: headers_arg(headers)?, receipt, persistent, content_type: None };
        let destination = destination.to_owned();
        py.detach(move || client.send(&destination, body, opts)).map_err(stomp_err)
    }

    /// Sends each of ``bodies`` (an iterable of bytes or str) to ``destination``, in
    /// order, with the same ``headers``: one call for many messages, far cheaper than
    /// a loop of ``send``. With ``receipt=True`` waits until the broker confirms the
    /// last (and so all). The bodies are read before anything is sent: a bad one
    /// raises ``TypeError`` naming its index, and nothing is sent.
    #[pyo3(signature = (destination, bodies, headers = None, receipt = false, *, persistent = false))]
    fn send_many(&self, py: Python<'_>, destination: &str, bodies: &Bound<'_, PyAny>, headers: Option<&Bound<'_, PyDict>>, receipt: bool, persistent: bool) -> PyResult<()> {
        let client = self.live()?;
        if bodies.cast::<PyString>().is_ok() || bodies.cast::<pyo3::types::PyBytes>().is_ok() {
            return Err(PyTypeError::new_err("bodies must be an iterable of bodies (such as a list of bytes), not one body; use send() for one"));
        }
        let items = bodies.try_iter().map_err(|_| PyTypeError::new_err(format!("bodies must be an iterable of bytes or str, not {}", type_name(bodies))))?;
        let mut all = Vec::new();
        for (i, item) in items.enumerate() {
            let item = item?;
            all.push(body_arg(&item).map_err(|_| PyTypeError::new_err(format!("bodies[{i}]: a body must be bytes or str, not {}", type_name(&item))))?);
        }
        let opts = SendOptions { headers: headers_arg(headers)?, receipt, persistent, content_type: None };
        let destination = destination.to_owned();
        py.detach(move || client.send_many(&destination, all, &opts)).map_err(stomp_err)
    }

    /// Subscribes to ``destination`` and returns a ``Subscription`` (an iterator of
    /// ``Message``). ``ack`` is ``"auto"``, ``"client"`` or ``"client-individual"``;
    /// ``prefetch`` limits unacknowledged messages in flight.
    #[pyo3(signature = (destination, ack = "auto", *, prefetch = None, headers = None))]
    fn subscribe(&self, py: Python<'_>, destination: &str, ack: &str, prefetch: Option<u32>, headers: Option<&Bound<'_, PyDict>>) -> PyResult<Subscription> {
        let client = self.live()?;
        let ack = AckMode::parse(ack).ok_or_else(|| PyValueError::new_err(format!("ack must be \"auto\", \"client\" or \"client-individual\", not {ack:?}")))?;
        let opts = SubscribeOptions { ack, prefetch, id: None, headers: headers_arg(headers)? };
        let dest = destination.to_owned();
        let sub = py.detach(move || client.subscribe(&dest, opts)).map_err(stomp_err)?;
        Ok(Subscription { inner: Mutex::new(Some(sub)), destination: destination.to_owned() })
    }

    /// Publishes a commit message (a push of one ref, or an SVN commit with ``svn=``)
    /// and its one-line event. ``commits`` is a list of dicts with ``id``, ``author``,
    /// ``timestamp``, ``message`` (newest first); ``correlation_id`` defaults to
    /// ``newrev``; ``wire`` is ``"json"`` or ``"legacy"``; ``destinations`` is
    /// ``"default"``, ``"legacy"`` or a dict such as ``{"commits": "/topic/x"}``;
    /// ``event_source`` names the speaker of the event line (default ``git-hook``,
    /// ``svn-hook``, or ``source``).
    #[pyo3(signature = (repo, oldrev, newrev, refname, *, source = "git", commits = None, correlation_id = None, wire = "json", destinations = None, svn = None, event_source = None))]
    #[allow(clippy::too_many_arguments)]
    fn publish_commit(
        &self,
        py: Python<'_>,
        repo: String,
        oldrev: String,
        newrev: String,
        refname: String,
        source: &str,
        commits: Option<&Bound<'_, PyAny>>,
        correlation_id: Option<String>,
        wire: &str,
        destinations: Option<&Bound<'_, PyAny>>,
        svn: Option<&Bound<'_, PyAny>>,
        event_source: Option<String>,
    ) -> PyResult<()> {
        let client = self.live()?;
        let src: Source = serde_arg("source", &PyString::new(py, source))?;
        let commits: Vec<CommitInfo> = match commits.filter(|c| !c.is_none()) {
            Some(c) => serde_arg("commits", c)?,
            None => Vec::new(),
        };
        let svn: Option<SvnInfo> = match svn.filter(|s| !s.is_none()) {
            Some(s) => Some(serde_arg("svn", s)?),
            None => None,
        };
        let commit = Commit { repo, oldrev, newrev, refname, source: src, svn, commits, correlation_id };
        let speaker = event_source.unwrap_or_else(|| default_event_source(source));
        let publisher = client.publisher(&speaker, wire_arg(wire)?, destinations_arg(destinations)?);
        py.detach(move || publisher.commit(&commit)).map_err(publish_err)
    }

    /// Publishes a build message and its event line. ``status`` is ``"started"``,
    /// ``"success"``, ``"failure"``, ``"unstable"`` or ``"aborted"``.
    #[pyo3(signature = (job, number, status, *, url = None, repo = None, branch = None, commit = None, duration_ms = None, correlation_id = None, wire = "json", destinations = None, event_source = "jenkins"))]
    #[allow(clippy::too_many_arguments)]
    fn publish_build(
        &self,
        py: Python<'_>,
        job: String,
        number: u64,
        status: &str,
        url: Option<String>,
        repo: Option<String>,
        branch: Option<String>,
        commit: Option<String>,
        duration_ms: Option<u64>,
        correlation_id: Option<String>,
        wire: &str,
        destinations: Option<&Bound<'_, PyAny>>,
        event_source: &str,
    ) -> PyResult<()> {
        let client = self.live()?;
        let status = BuildStatus::parse(status).ok_or_else(|| PyValueError::new_err(format!("status must be started, success, failure, unstable or aborted, not {status:?}")))?;
        let build = Build { job, number, status, url, repo, branch, commit, duration_ms, correlation_id };
        let publisher = client.publisher(event_source, wire_arg(wire)?, destinations_arg(destinations)?);
        py.detach(move || publisher.build(&build)).map_err(publish_err)
    }

    /// Publishes a one-line event (``text``) from daemon ``source`` to the events
    /// destination (``/topic/deploykit.events``; legacy: ``/topic/future.events.SOURCE``).
    #[pyo3(signature = (text, *, source = "python", correlation_id = None, wire = "json", destinations = None))]
    fn publish_event(&self, py: Python<'_>, text: String, source: &str, correlation_id: Option<String>, wire: &str, destinations: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let client = self.live()?;
        let publisher = client.publisher(source, wire_arg(wire)?, destinations_arg(destinations)?);
        py.detach(move || publisher.event(&text, correlation_id)).map_err(publish_err)
    }

    /// Disconnects (waiting for the broker's receipt). Idempotent; later calls raise ``ClosedError``.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        match client {
            // Closing a client whose connection is already gone is not an error.
            Some(c) => py.detach(move || c.disconnect()).or_else(|e| if e.is_connection_gone() { Ok(()) } else { Err(stomp_err(e)) }),
            None => Ok(()),
        }
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(&self, py: Python<'_>, _exc_type: Option<&Bound<'_, PyType>>, _exc: Option<&Bound<'_, PyAny>>, _tb: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("<deploykit.Client {} {}>", self.endpoint, if self.closed() { "closed" } else { "open" })
    }
}

/// The event speaker for a commit source.
fn default_event_source(source: &str) -> String {
    match source {
        "git" => "git-hook".into(),
        "svn" => "svn-hook".into(),
        other => other.into(),
    }
}

/// A subscription: iterate it for ``Message`` objects (blocking, GIL released,
/// Ctrl-C honoured), or call ``next_message(timeout)``. Iteration ends when the
/// subscription or its client is closed.
#[pyclass(module = "deploykit._native", frozen)]
pub struct Subscription {
    inner: Mutex<Option<BlockingSubscription>>,
    destination: String,
}

/// What one slice of waiting found.
enum Slice {
    Got(stomp::Message),
    Nothing,
    Closed,
}

impl Subscription {
    /// Waits up to `limit` (forever if `None`), in GIL-free slices with signal checks.
    fn wait(&self, py: Python<'_>, limit: Option<Duration>) -> PyResult<Option<stomp::Message>> {
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                None => SLICE,
            };
            let got = py.detach(|| {
                let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                match guard.as_mut() {
                    None => Slice::Closed,
                    Some(sub) => match sub.next(Some(slice)) {
                        Next::Message(m) => Slice::Got(m),
                        Next::Timeout => Slice::Nothing,
                        Next::Closed => Slice::Closed,
                    },
                }
            });
            match got {
                Slice::Got(m) => return Ok(Some(m)),
                Slice::Closed => return Err(ClosedError::new_err(format!("subscription to {} is closed", self.destination))),
                Slice::Nothing => {}
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

#[pymethods]
impl Subscription {
    /// The destination subscribed to.
    #[getter]
    fn destination(&self) -> &str {
        &self.destination
    }

    /// The next message, waiting at most ``timeout`` seconds (forever if None);
    /// None on timeout. Raises ``ClosedError`` once closed.
    #[pyo3(signature = (timeout = None))]
    fn next_message(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Message>> {
        let limit = timeout.map(|t| seconds("timeout", t)).transpose()?;
        Ok(self.wait(py, limit)?.map(Message::from))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Message>> {
        match self.wait(py, None) {
            Ok(m) => Ok(m.map(Message::from)),
            Err(e) if e.is_instance_of::<ClosedError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Acknowledges ``message`` (``ack="client"`` or ``"client-individual"``).
    fn ack(&self, py: Python<'_>, message: &Message) -> PyResult<()> {
        let raw = message.raw.clone();
        py.detach(|| match self.inner.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(sub) => sub.ack(&raw),
            None => Err(stomp::Error::Closed),
        })
        .map_err(stomp_err)
    }

    /// Rejects ``message`` (client ack modes, STOMP 1.1+).
    fn nack(&self, py: Python<'_>, message: &Message) -> PyResult<()> {
        let raw = message.raw.clone();
        py.detach(|| match self.inner.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(sub) => sub.nack(&raw),
            None => Err(stomp::Error::Closed),
        })
        .map_err(stomp_err)
    }

    /// Unsubscribes (waiting for the broker's receipt). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let sub = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        match sub {
            Some(s) => py.detach(move || s.unsubscribe()).or_else(|e| if e.is_connection_gone() { Ok(()) } else { Err(stomp_err(e)) }),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(&self, py: Python<'_>, _exc_type: Option<&Bound<'_, PyType>>, _exc: Option<&Bound<'_, PyAny>>, _tb: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("<deploykit.Subscription {}>", self.destination)
    }
}

/// A message received from the bus: ``destination``, ``headers`` (dict),
/// ``body`` (bytes), ``text`` (str or None), ``kind`` and ``decoded()``.
#[pyclass(module = "deploykit._native", frozen)]
pub struct Message {
    raw: stomp::Message,
}

impl From<stomp::Message> for Message {
    fn from(raw: stomp::Message) -> Message {
        Message { raw }
    }
}

/// The kind name of a decoded message (`keepalive` for the single-newline keepalive).
pub(crate) fn kind_name(m: &message::Message) -> &'static str {
    m.kind().map_or("keepalive", |k| k.as_str())
}

/// A decoded message's fields as a dict (None for a keepalive).
pub(crate) fn fields<'py>(py: Python<'py>, m: &message::Message) -> PyResult<Option<Bound<'py, PyAny>>> {
    if matches!(m, message::Message::Keepalive) {
        return Ok(None);
    }
    // Core's serialisation: the schema's fields plus "kind".
    let v = serde_json::to_value(m).map_err(|e| crate::MessageError::new_err(e.to_string()))?;
    to_py(py, &v).map(Some)
}

#[pymethods]
impl Message {
    /// Where the message was sent.
    #[getter]
    fn destination(&self) -> &str {
        self.raw.destination()
    }

    /// All headers as a dict (the first of repeated headers wins, as STOMP says).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        headers_dict(py, &self.raw.headers)
    }

    /// One header, or ``default``.
    #[pyo3(signature = (name, default = None))]
    fn header(&self, name: &str, default: Option<String>) -> Option<String> {
        self.raw.header(name).map(str::to_owned).or(default)
    }

    /// The body, as bytes.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.raw.body)
    }

    /// The body as text, or None if it is not UTF-8.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.raw.text()
    }

    /// The broker's ``message-id`` header.
    #[getter]
    fn message_id(&self) -> Option<&str> {
        self.raw.header("message-id")
    }

    /// Whether this is the original deploykit's keepalive (a body of one newline), which receivers ignore.
    #[getter]
    fn is_keepalive(&self) -> bool {
        self.raw.is_keepalive()
    }

    /// The deploykit kind (``"commit"``, ``"build"``, ``"package"``, ``"event"``,
    /// ``"deploy-request"``, ``"deploy-reply"``, ``"agent-announce"``, ``"keepalive"``),
    /// JSON or legacy; None if the message is not a deploykit message.
    #[getter]
    fn kind(&self) -> Option<&'static str> {
        message::decode(self.raw.destination(), &self.raw.headers, &self.raw.body).ok().map(|m| kind_name(&m))
    }

    /// The message decoded by core (JSON v1 or any legacy text body) as a dict of
    /// its fields; None for a keepalive. Raises ``MessageError`` naming the
    /// destination and message id if it is not a valid deploykit message.
    fn decoded<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let m = message::decode(self.raw.destination(), &self.raw.headers, &self.raw.body).map_err(message_err)?;
        fields(py, &m)
    }

    fn __repr__(&self) -> String {
        format!("<deploykit.Message {} {} bytes>", self.raw.destination(), self.raw.body.len())
    }
}

/// Turns an elapsed drain or wait into a `TimeoutError`.
pub(crate) fn timeout_err(what: &str, after: Duration) -> PyErr {
    TimeoutError::new_err(format!("timed out after {:.1}s {what}", after.as_secs_f64()))
}
