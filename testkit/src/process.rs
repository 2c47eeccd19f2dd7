//! The workspace's binaries, built with the running test's profile, and
//! directories that outlive every test of a process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;

/// Removes `dir` when the test process exits: for a directory every test of
/// the binary uses through a static that is never dropped (a SoftHSM2
/// token named by the process-global `SOFTHSM2_CONF`), which would
/// otherwise stay behind after every run.
pub fn remove_at_exit(dir: PathBuf) {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        let dirs = DIRS.lock().unwrap_or_else(|p| p.into_inner());
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    DIRS.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
    // SAFETY: registers a plain function without captured state.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_all);
    });
}

/// The running test's profile directory (target/debug or
/// target/release): target/<profile>/deps/<test> → target/<profile>.
pub fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf()
    })
}

/// `cargo build -q -p <package>...` with the running test's profile.
fn cargo_build(packages: &[&str]) {
    let release = profile_dir().file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "building {packages:?} failed");
}

/// The directory holding the built binaries (target/debug or target/release),
/// vaultd, vaultctl and scheme-sim built there first, once per process.
pub fn bin_dir() -> &'static Path {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| cargo_build(&["vaultd", "vaultctl", "scheme-sim"]));
    profile_dir()
}

/// Builds `package` (its library and binaries) with the profile of the
/// running test, once per test binary and package, and returns the
/// directory its artifacts land in ([`profile_dir`]).
pub fn build_package(package: &str) -> &'static Path {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|p| p == package) {
        cargo_build(&[package]);
        built.push(package.to_owned());
    }
    profile_dir()
}

/// Reads a process's first stdout line (used for scheme-sim's port).
pub fn first_line(child: &mut Child) -> String {
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("read line");
    line.trim().to_owned()
}
