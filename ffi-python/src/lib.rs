//! Python binding of `deploykit` (stub).
//!
//! The pyo3 extension and `python -m deploykit.hooks` come with the messages
//! issue; nothing is exported yet.
