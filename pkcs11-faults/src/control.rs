//! The control file a test rewrites (`PKCS11_FAULTS_FILE`): re-read at most
//! every [`RECHECK`], and only when its inode, size or mtime changed, so an
//! intercepted call costs a vDSO clock read and a lock in between. Also
//! keeps the total of injected failures in `<control file>.injected`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::plan::{Action, Armed, Call, Plan, parse};

/// Environment variable naming the control file.
pub const FILE_ENV: &str = "PKCS11_FAULTS_FILE";

/// How stale the plan may be: a test that rewrites the file waits this long
/// (plus its own margin) before relying on the new plan.
pub const RECHECK: Duration = Duration::from_millis(20);

/// Suffix of the file holding the number of failures injected so far.
pub const INJECTED_SUFFIX: &str = ".injected";

/// What identifies one version of the control file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

struct Control {
    path: Option<PathBuf>,
    next_check: Option<Instant>,
    seen: Option<Stamp>,
    armed: Armed,
}

static CONTROL: Mutex<Option<Control>> = Mutex::new(None);
static INJECTED: AtomicU64 = AtomicU64::new(0);

/// Counts one intercepted call and says what to do with it.
pub(crate) fn decide(call: Call) -> Action {
    // A poisoned lock only means a panic elsewhere; the state is plain data.
    let mut guard = CONTROL.lock().unwrap_or_else(|p| p.into_inner());
    let control = guard.get_or_insert_with(|| Control {
        path: std::env::var_os(FILE_ENV).map(PathBuf::from),
        next_check: None,
        seen: None,
        armed: Armed::new(Plan::OFF),
    });
    control.refresh(Instant::now());
    let action = control.armed.decide(call);
    if action != Action::Forward {
        let total = INJECTED.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(path) = &control.path {
            write_injected(path, total);
        }
    }
    action
}

impl Control {
    fn refresh(&mut self, now: Instant) {
        if self.next_check.is_some_and(|t| now < t) {
            return;
        }
        self.next_check = Some(now + RECHECK);
        let Some(path) = &self.path else {
            return;
        };
        let stamp = std::fs::metadata(path).ok().map(|m| Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        });
        if stamp == self.seen {
            return;
        }
        self.seen = stamp;
        // Missing, unreadable or unparseable: off (a module cannot complain).
        let plan = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| parse(&text).ok())
            .unwrap_or(Plan::OFF);
        self.armed = Armed::new(plan);
    }
}

/// The path of the injected-failures counter next to `control`.
pub fn injected_path(control: &Path) -> PathBuf {
    let mut name = control.as_os_str().to_owned();
    name.push(INJECTED_SUFFIX);
    PathBuf::from(name)
}

/// Replaces the counter file atomically (a reader never sees half a number).
fn write_injected(control: &Path, total: u64) {
    let target = injected_path(control);
    let mut tmp = target.clone().into_os_string();
    tmp.push(".tmp");
    if std::fs::write(&tmp, format!("{total}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, &target);
    }
}
