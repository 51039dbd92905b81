//! C ABI over `deploykit` (stub).
//!
//! The C binding (`libdeploykit.so`, `deploykit.h`, `deploykit.pc`) is built by
//! the messages issue; until then this crate only proves the workspace layout
//! compiles. No C symbols are exported yet.
