//! Test-only PKCS#11 proxy module: load it instead of the real module and
//! it forwards to the module named by `PKCS11_FAULTS_MODULE`, failing
//! chosen calls the way a sick token does (device error, lost session,
//! locked PIN) as the control file `PKCS11_FAULTS_FILE` says. Never
//! prints: a PKCS#11 module must not write to stdout or stderr.
//!
//! Control file: one line, re-read at most every 20 ms:
//! `fault=<device|session|pin_locked> after=<n> count=<n|max>` or `off`
//! (empty or missing is off). The 0-based `after`-th intercepted call
//! counted from when the line was read is the first that may fail;
//! `count` failures are injected, `max` until the line changes.

mod calls;
pub mod control;
mod module;
pub mod plan;

pub use calls::{HIDE_MECHANISMS_ENV, INTERCEPTED};
pub use control::{FILE_ENV, INJECTED_SUFFIX, RECHECK, injected_path};
pub use module::{C_GetFunctionList, MODULE_ENV};
