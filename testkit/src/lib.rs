//! The test kit of the workspace: what the tests, the examples, the fuzz
//! fixture and the bench need to stand up a vault's surroundings, written
//! once.
//!
//! - [`softhsm`]: a SoftHSM2 token in a temp dir, made with
//!   `softhsm/create-token.sh` (as operators make theirs), and the
//!   process-global `SOFTHSM2_CONF`.
//! - [`process`]: the workspace's binaries built with the running test's
//!   profile, directories removed when the process exits.
//! - [`wait`]: waiting for a state, never for a span of time.
//! - [`uid`]: speaking as another uid (tests run as root).
//! - [`daemon`] and [`sim`] (feature `daemons`): a temp vaultd
//!   ([`daemon::TestEnv`], [`daemon::Vaultd`]) and scheme-sim on a free port
//!   with its KEK ceremony ([`sim::SchemeSim`]).

#[cfg(feature = "daemons")]
pub mod daemon;
pub mod process;
#[cfg(feature = "daemons")]
pub mod sim;
pub mod softhsm;
pub mod uid;
pub mod wait;

pub use process::{bin_dir, build_package, first_line, profile_dir, remove_at_exit};
pub use softhsm::{Token, disk_temp_dir, process_token, softhsm_module};
pub use uid::as_uid;
