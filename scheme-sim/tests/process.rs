//! The process contract: one stdout line with the port, KEK components
//! generated or refused, clean exit on SIGTERM and SIGINT.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scheme_sim::Scheme;
use scheme_sim::kek::component_path;

const BIN: &str = env!("CARGO_BIN_EXE_scheme-sim");

fn stops_cleanly_on(signal: libc::c_int) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--kek-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("line");
    let port: u16 = line
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.strip_suffix('\n'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad first line {line:?}"));
    assert_ne!(port, 0);
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("accepts connections");

    // Signal only the child this test started.
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) with a valid pid and signal has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        // Only ends a hung test.
        assert!(t.elapsed() < Duration::from_secs(30), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest of stdout");
    assert_eq!(rest, "", "exactly one line on stdout");
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("stderr");
    assert!(log.contains("generated a missing KEK component"), "{log}");
}

#[test]
fn sigterm_stops_cleanly() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_stops_cleanly() {
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn gen_components_writes_only_missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keep = component_path(dir.path(), Scheme::Visa, 1);
    let text = format!("{}\n", "ab".repeat(32));
    std::fs::write(&keep, &text).expect("write");

    let out = Command::new(BIN)
        .args(["gen-components", "--kek-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&keep).expect("read"), text);
    for scheme in Scheme::ALL {
        for n in [1, 2] {
            let p = component_path(dir.path(), scheme, n);
            let c = std::fs::read_to_string(&p).expect("component");
            assert_eq!(c.len(), 65);
            assert!(c.ends_with('\n') && c[..64].bytes().all(|b| b.is_ascii_hexdigit()));
            if p != keep {
                let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
    }
    let c1 = std::fs::read_to_string(component_path(dir.path(), Scheme::Amex, 1)).expect("c1");
    let c2 = std::fs::read_to_string(component_path(dir.path(), Scheme::Amex, 2)).expect("c2");
    assert_ne!(c1, c2);
}

#[test]
fn refuses_to_start_on_a_malformed_component() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = component_path(dir.path(), Scheme::Discover, 2);
    std::fs::write(&bad, "00112233\n").expect("write");
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--kek-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no listening line");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("discover.c2") && err.contains("64 hex"),
        "{err}"
    );
    assert!(
        !err.contains("00112233"),
        "component content must not be echoed"
    );
}
