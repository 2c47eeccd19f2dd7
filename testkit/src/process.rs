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

/// The directory holding the built binaries (target/debug or target/release).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> → target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "vaultd",
            "-p",
            "vaultctl",
            "-p",
            "scheme-sim",
        ]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "building the binaries failed");
        dir
    })
}

/// Builds `package` (its library and binaries) with the profile of the
/// running test, once per test binary and package, and returns the
/// directory its artifacts land in (as [`bin_dir`]).
pub fn build_package(package: &str) -> &'static Path {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let dir = bin_dir();
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", package]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "building {package} failed");
        built.push(package.to_owned());
    }
    dir
}

/// Reads a process's first stdout line (used for scheme-sim's port).
pub fn first_line(child: &mut Child) -> String {
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("read line");
    line.trim().to_owned()
}
