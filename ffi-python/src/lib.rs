//! Python binding of deploykit: the private extension module `deploykit._native`.
//!
//! The pure-Python package `deploykit` (ffi-python/python/deploykit/) re-exports
//! everything here and adds the hook entry points (`python -m deploykit.hooks`).
//! This crate is a thin layer: connecting, publishing, subscribing, reading
//! pushes and SVN commits and spooling are core's code (`deploykit::blocking`,
//! `deploykit::git`, `deploykit::svn`, `deploykit::spool`); here they only get
//! Python types, Python exceptions and a released GIL.
//!
//! - [`client`]: `Client`, `Subscription`, `Message`.
//! - [`repo`]: `read_git_push`, `read_svn_commit`, `git_config`, `repo_name`, `Spool`, `decode`.
//! - [`convert`]: JSON values ↔ Python objects.
//!
//! Every blocking call runs inside `Python::detach` (the GIL is released), and
//! waits that can last (subscription iteration) are cut into short slices with
//! `check_signals()` between them, so other threads run and Ctrl-C works.
//! PyO3 turns a Rust panic into `pyo3_runtime.PanicException`; none is expected.

mod client;
mod convert;
mod repo;

use deploykit::stomp;
use pyo3::create_exception;
use pyo3::exceptions::{PyConnectionError, PyException, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// `create_exception!` for an error that is both deploykit's and one of Python's
/// built-ins: `$name` subclasses `$base` (deploykit's) and `$builtin`, so both
/// `except deploykit.Error` and `except TimeoutError` catch it. The class is made
/// the way a Python `class $name($base, $builtin)` statement makes it (one call
/// to `type`), once per interpreter.
macro_rules! create_builtin_exception {
    ($module:ident, $name:ident, $base:ty, $builtin:ty, $doc:expr) => {
        #[repr(transparent)]
        #[doc = $doc]
        pub struct $name(pyo3::PyAny);

        pyo3::impl_exception_boilerplate!($name);
        pyo3::pyobject_native_type_core!($name, $name::type_object_raw, #module = ::std::option::Option::Some(stringify!($module)));

        impl $name {
            /// The class object, made on first use.
            fn type_object_raw(py: Python<'_>) -> *mut pyo3::ffi::PyTypeObject {
                static TYPE_OBJECT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
                TYPE_OBJECT
                    .get_or_init(py, || {
                        two_base_exception(py, stringify!($module), stringify!($name), $doc, &py.get_type::<$base>(), &py.get_type::<$builtin>())
                            .expect("creating an exception class from two exception classes")
                    })
                    .as_ptr()
                    .cast()
            }
        }
    };
}

/// `type(name, (base, builtin), {"__module__": module, "__doc__": doc})`: an
/// exception class with two bases (BaseException's layout and OSError's are
/// compatible, so Python accepts e.g. `(deploykit.Error, TimeoutError)`).
fn two_base_exception(py: Python<'_>, module: &str, name: &str, doc: &str, base: &Bound<'_, PyType>, builtin: &Bound<'_, PyType>) -> PyResult<Py<PyType>> {
    let dict = PyDict::new(py);
    dict.set_item("__module__", module)?;
    dict.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, [base, builtin])?;
    let class = py.get_type::<PyType>().call1((name, bases, dict))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

create_exception!(deploykit, Error, PyException, "Base class of every deploykit error.");
create_builtin_exception!(
    deploykit,
    ConnectionError,
    Error,
    PyConnectionError,
    "No broker could be reached, or the connection was lost (see the message for the endpoint and cause). Also a built-in ConnectionError (an OSError)."
);
create_exception!(deploykit, RefusedError, ConnectionError, "The broker refused the session: bad login or passcode, unknown virtual host, unsupported STOMP version.");
create_exception!(deploykit, ReceiptLostError, ConnectionError, "The connection dropped before the broker's receipt arrived: the broker may or may not have the message.");
create_builtin_exception!(
    deploykit,
    TimeoutError,
    Error,
    PyTimeoutError,
    "Nothing answered in time (connect, receipt, or a bounded wait). Also a built-in TimeoutError (an OSError)."
);
create_exception!(deploykit, ProtocolError, Error, "The bytes on the wire were not valid STOMP, or a frame could not be encoded.");
create_exception!(deploykit, BrokerError, ProtocolError, "The broker sent an ERROR frame on an open session.");
create_exception!(deploykit, ClosedError, Error, "The client or subscription is closed.");
create_exception!(deploykit, UrlError, Error, "The broker URL is malformed.");
create_exception!(deploykit, InvalidRequestError, Error, "The request makes no sense in this state or STOMP version (e.g. NACK on STOMP 1.0).");
create_exception!(deploykit, MessageError, Error, "A message could not be encoded or decoded (unknown dk-version, broken JSON, missing field).");
create_exception!(deploykit, GitError, Error, "A git repository could not be read, or a ref name / revision is invalid.");
create_exception!(deploykit, SvnError, Error, "A Subversion commit could not be read with svnlook.");
create_exception!(deploykit, SpoolError, Error, "The message spool directory could not be read or written.");

/// Maps a bus error to its Python exception class, keeping core's message.
pub(crate) fn stomp_err(e: stomp::Error) -> PyErr {
    stomp_err_with(&e, e.to_string())
}

/// The exception class for `e`, carrying `msg`.
pub(crate) fn stomp_err_with(e: &stomp::Error, msg: String) -> PyErr {
    use stomp::Error as E;
    // For GaveUp, the class comes from the last connection attempt's error.
    match e.root() {
        E::Url(_) => UrlError::new_err(msg),
        E::Frame(_) => ProtocolError::new_err(msg),
        E::Server { details, .. } if !details.trim().is_empty() => BrokerError::new_err(format!("{msg}: {}", details.trim())),
        E::Server { .. } => BrokerError::new_err(msg),
        E::Refused { .. } => RefusedError::new_err(msg),
        E::Connect { .. } | E::Tls { .. } | E::GaveUp { .. } => ConnectionError::new_err(msg),
        E::ReceiptLost { .. } => ReceiptLostError::new_err(msg),
        E::Timeout { .. } => TimeoutError::new_err(msg),
        E::Closed => ClosedError::new_err(msg),
        E::Invalid(_) => InvalidRequestError::new_err(msg),
        E::Io { .. } => Error::new_err(msg),
    }
}

/// Maps a message error.
pub(crate) fn message_err(e: deploykit::message::MessageError) -> PyErr {
    MessageError::new_err(e.to_string())
}

/// Maps a publishing error (an invalid message or a bus failure).
pub(crate) fn publish_err(e: deploykit::message::publisher::PublishError) -> PyErr {
    use deploykit::message::publisher::PublishError as P;
    match e {
        P::Invalid(e) => message_err(e),
        P::Bus(e) => stomp_err(e),
    }
}

/// deploykit's native module; import `deploykit` instead.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", deploykit::VERSION)?;
    for (name, ty) in [
        ("Error", py.get_type::<Error>()),
        ("ConnectionError", py.get_type::<ConnectionError>()),
        ("RefusedError", py.get_type::<RefusedError>()),
        ("ReceiptLostError", py.get_type::<ReceiptLostError>()),
        ("TimeoutError", py.get_type::<TimeoutError>()),
        ("ProtocolError", py.get_type::<ProtocolError>()),
        ("BrokerError", py.get_type::<BrokerError>()),
        ("ClosedError", py.get_type::<ClosedError>()),
        ("UrlError", py.get_type::<UrlError>()),
        ("InvalidRequestError", py.get_type::<InvalidRequestError>()),
        ("MessageError", py.get_type::<MessageError>()),
        ("GitError", py.get_type::<GitError>()),
        ("SvnError", py.get_type::<SvnError>()),
        ("SpoolError", py.get_type::<SpoolError>()),
    ] {
        m.add(name, ty)?;
    }
    m.add_class::<client::Client>()?;
    m.add_class::<client::Subscription>()?;
    m.add_class::<client::Message>()?;
    m.add_class::<repo::Spool>()?;
    m.add_function(wrap_pyfunction!(repo::read_git_push, m)?)?;
    m.add_function(wrap_pyfunction!(repo::read_svn_commit, m)?)?;
    m.add_function(wrap_pyfunction!(repo::git_config, m)?)?;
    m.add_function(wrap_pyfunction!(repo::repo_name, m)?)?;
    m.add_function(wrap_pyfunction!(repo::decode, m)?)?;
    Ok(())
}
