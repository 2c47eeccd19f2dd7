//! systemd deployment tests: the units pass `systemd-analyze verify` and
//! `security`, and a real vaultd behaves as systemd expects: it adopts a
//! passed socket, notifies READY/STOPPING, pings the watchdog, reloads
//! clients on SIGHUP, is not dumpable and logs where it should.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vault_e2e::systemd::{Launch, NotifySocket, chown_tree, send_signal, wait_exit};
use vault_e2e::{CEILING, TestEnv, VISA, assert_took, bin_dir, ceiling_for, wait_for};
use vault_proto::BlockingClient;
use vault_proto::ops::{HealthOp, NoArgs};

const TENANT_AND_ROOT: &str = r#"
[[tenant]]
id = "t-a"
[[client]]
name = "root-admin"
uid = 0
tenant = "t-a"
roles = ["merchant", "admin"]
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn env_with(extra: &str) -> TestEnv {
    let env = TestEnv::new();
    env.write_config("", extra);
    env.vaultd_cmd(&["keys", "init"]);
    env
}

fn health(c: &mut BlockingClient) -> bool {
    c.op::<HealthOp>(&NoArgs {}).expect("health answers").ready
}

/// Waits until `log` contains `needle`.
fn wait_log(env: &TestEnv, needle: &str) {
    wait_for(
        CEILING,
        env.with_log(&format!("the log to say {needle:?}")),
        || env.log().contains(needle),
    );
}

// ------------------------------------------------------------------ units

/// Copies the units to a temp dir with ExecStart pointing at the built
/// binary (verify checks that the command exists).
fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    let vaultd = bin_dir().join("vaultd");
    ["vaultd.service", "vaultd.socket"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
            let text = text.replace("/usr/bin/vaultd", &vaultd.display().to_string());
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

fn verify(units: &[PathBuf]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = units_for_verify(dir.path());
    let (ok, text) = verify(&units);
    // verify exits 0 on unknown keys and only prints them: demand silence.
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );

    // The same check catches a mistake.
    let service = &units[0];
    let mut broken = std::fs::read_to_string(service).unwrap();
    broken = broken.replace("[Service]\n", "[Service]\nWatchdogSecs=30s\n");
    std::fs::write(service, broken).unwrap();
    let (_, text) = verify(&units);
    assert!(text.contains("WatchdogSecs"), "{text}");
}

#[test]
fn service_hardening_is_rated_2_or_lower() {
    let unit = repo().join("systemd/vaultd.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rating: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for vaultd.service: "))
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no overall rating in: {text}"));
    assert!(rating <= 2.0, "exposure {rating}: {text}");
}

/// What systemd-analyze does not check but vaultd relies on.
#[test]
fn units_and_shipped_config_agree() {
    let service = std::fs::read_to_string(repo().join("systemd/vaultd.service")).unwrap();
    let socket = std::fs::read_to_string(repo().join("systemd/vaultd.socket")).unwrap();
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let service = lines(&service);
    let socket = lines(&socket);
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "LimitCORE=0",
        "User=vaultd",
        "RuntimeDirectory=vaultd",
        "RuntimeDirectoryMode=0750",
        "RuntimeDirectoryPreserve=yes",
        "StateDirectory=vaultd",
        "ExecStart=/usr/bin/vaultd --config /etc/vaultd/vaultd.toml run",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            service.iter().any(|l| l == want),
            "vaultd.service lacks {want}"
        );
    }
    // In a user namespace SO_PEERCRED maps every client uid to 65534.
    assert!(!service.iter().any(|l| l == "PrivateUsers=yes"));
    for want in [
        "ListenStream=/run/vaultd/vaultd.sock",
        "SocketMode=0660",
        "SocketGroup=vault-clients",
    ] {
        assert!(
            socket.iter().any(|l| l == want),
            "vaultd.socket lacks {want}"
        );
    }

    // The shipped configuration is valid and names the same socket.
    let config = repo().join("config/vaultd.toml");
    let out = Command::new(bin_dir().join("vaultd"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\nsocket = \"/run/vaultd/vaultd.sock\"\n"));
    // It enables no client: a shipped example uid would be a way in.
    assert!(!text.lines().any(|l| l.trim() == "[[client]]"));
}

// ------------------------------------------------------ socket activation

#[test]
fn adopts_the_socket_systemd_passes() {
    let env = env_with(TENANT_AND_ROOT);
    let mut d = Launch::new().activate(env.socket()).spawn(&env);
    let mut c = env.client();
    assert!(health(&mut c));
    assert!(
        env.log().contains("serving the socket systemd passed"),
        "{}",
        env.log()
    );
    assert!(d.terminate().success());
    // The socket belongs to the service manager: vaultd leaves it in place
    // (a self-bound socket is removed, see below).
    assert!(env.socket().exists(), "vaultd removed the passed socket");

    std::fs::remove_file(env.socket()).unwrap();
    let mut d = Launch::new().spawn(&env);
    assert!(env.log().contains("listening"));
    assert!(d.terminate().success());
    assert!(!env.socket().exists(), "vaultd left its own socket behind");
}

#[test]
fn refuses_more_than_one_passed_socket() {
    let env = env_with(TENANT_AND_ROOT);
    let other = env.path().join("other.sock");
    let mut child = Launch::new()
        .activate(env.socket())
        .activate(&other)
        .spawn_raw(&env);
    // systemd-socket-activate execs vaultd on the first connection attempt.
    wait_for(CEILING, "the passed socket to accept a connection", || {
        std::os::unix::net::UnixStream::connect(env.socket()).is_ok()
    });
    let st = wait_exit(&mut child, CEILING);
    assert!(!st.success());
    assert!(
        env.log().contains("systemd passed 2 sockets"),
        "{}",
        env.log()
    );
}

// --------------------------------------------------- notify and watchdog

#[test]
fn notifies_ready_pings_the_watchdog_and_notifies_stopping() {
    let env = env_with(TENANT_AND_ROOT);
    let mut notify = NotifySocket::bind(env.path());
    let watchdog = Duration::from_secs(1);
    let mut child = Launch::new()
        .env("NOTIFY_SOCKET", notify.env_value())
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .spawn_raw(&env);

    let ready = notify.wait_for("READY=1", CEILING);
    // READY only once the socket is bound and the HSM and store are open.
    let mut c = env.client();
    assert!(health(&mut c));
    assert_eq!(ready.value("STATUS"), Some("serving"));
    assert!(
        !notify
            .seen
            .iter()
            .any(|n| n.has("WATCHDOG=1") && n.at < ready.at),
        "watchdog pinged before READY"
    );

    // Pings every WatchdogSec/2: the period the daemon chose is in its log
    // (exact, no clock involved)...
    let interval = watchdog / 2;
    wait_log(&env, "watchdog_timeout=1s ping_every=500ms");
    // ...and the pings come. Their gaps are measured by the kernel's
    // receive times, so a test thread that gets to them late does not
    // shorten or lengthen them. A loaded machine can only delay a tick
    // (the ticker delays, never bursts, after a stall), so the mean gap
    // is at least about the period: half of it is asserted. Above, the
    // bound is ten periods, which no load reaches and a daemon that pings
    // only now and then (or never: the wait's ceiling) does.
    let pings = notify.wait_for_n("WATCHDOG=1", 9, ceiling_for(watchdog));
    let gaps: Vec<Duration> = pings
        .windows(2)
        .map(|w| w[1].arrived.saturating_sub(w[0].arrived))
        .collect();
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        mean >= interval / 2,
        "pings more often than every WatchdogSec/2: mean gap {mean:?}: {gaps:?}"
    );
    assert_took(
        mean,
        interval * 10,
        format_args!("the mean gap between watchdog pings ({gaps:?})"),
    );

    send_signal(child.id(), libc::SIGTERM);
    notify.wait_for("STOPPING=1", CEILING);
    assert!(wait_exit(&mut child, CEILING).success());
}

#[test]
fn never_notifies_ready_when_the_hsm_does_not_open() {
    let env = TestEnv::new();
    env.write_config("", TENANT_AND_ROOT);
    let cfg = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        cfg.replace(
            "token_label = \"vaultd-test\"",
            "token_label = \"no-such-token\"",
        ),
    )
    .unwrap();
    let mut notify = NotifySocket::bind(env.path());
    let mut child = Launch::new()
        .env("NOTIFY_SOCKET", notify.env_value())
        .spawn_raw(&env);
    assert!(!wait_exit(&mut child, CEILING).success());
    // It has exited: whatever it sent is queued on the socket already, so
    // this short timeout only ends the draining, and cannot miss a READY.
    while notify.recv(Duration::from_millis(200)).is_some() {}
    assert!(
        !notify.seen.iter().any(|n| n.has("READY=1")),
        "{:?}",
        notify.seen
    );
    assert!(env.log().contains("no-such-token"), "{}", env.log());
}

// ------------------------------------------------------------------ SIGHUP

/// Sends SIGHUP and waits for the reload to finish (RELOADING=1, READY=1).
fn reload(pid: u32, notify: &mut NotifySocket) -> String {
    send_signal(pid, libc::SIGHUP);
    notify.wait_for("RELOADING=1", CEILING);
    let done = notify.wait_for("READY=1", CEILING);
    done.value("STATUS").unwrap_or_default().to_owned()
}

#[test]
fn sighup_reloads_clients_and_tenants_and_keeps_connections() {
    let env = env_with(TENANT_AND_ROOT);
    let mut notify = NotifySocket::bind(env.path());
    let d = Launch::new()
        .env("NOTIFY_SOCKET", notify.env_value())
        .spawn(&env);
    notify.wait_for("READY=1", CEILING);
    let mut existing = env.client();
    assert!(health(&mut existing));
    let card = json!({"pan": VISA, "exp_month": 12, "exp_year": 2030});
    assert_eq!(
        env.call_as(4242, "health", &json!({})).unwrap_err().0,
        "unauthenticated"
    );

    // A new tenant and a client for it.
    let added = format!(
        "{TENANT_AND_ROOT}
[[tenant]]
id = \"t-new\"
[[client]]
name = \"new-shop\"
uid = 4242
tenant = \"t-new\"
roles = [\"merchant\"]
"
    );
    env.write_config("", &added);
    assert_eq!(
        reload(d.pid(), &mut notify),
        "serving; configuration reloaded"
    );
    assert!(env.call_as(4242, "health", &json!({})).is_ok());
    let tokenized = env
        .call_as(4242, "tokenize", &card)
        .expect("new tenant works");
    assert_eq!(tokenized["created"], true);
    // The connection opened before the reload still works.
    assert!(health(&mut existing));

    // An invalid file changes nothing.
    env.write_config(
        "",
        &added.replace("tenant = \"t-new\"", "tenant = \"t-missing\""),
    );
    assert_eq!(
        reload(d.pid(), &mut notify),
        "serving; last reload refused (see the log)"
    );
    wait_log(&env, "configuration reload refused");
    assert!(
        env.log().contains("[[client]] new-shop.tenant"),
        "the log names the key: {}",
        env.log()
    );
    let again = env
        .call_as(4242, "tokenize", &card)
        .expect("still a client");
    assert_eq!(again["created"], false);
    assert_eq!(again["alias"], tokenized["alias"]);
    assert!(health(&mut existing));

    // A valid file without the client takes its access away.
    env.write_config("", TENANT_AND_ROOT);
    assert_eq!(
        reload(d.pid(), &mut notify),
        "serving; configuration reloaded"
    );
    assert_eq!(
        env.call_as(4242, "health", &json!({})).unwrap_err().0,
        "unauthenticated"
    );
    assert!(health(&mut existing));
    drop(d);
    env.assert_absent_everywhere(&[VISA]);
}

// --------------------------------------------------------- process hygiene

const DAEMON_UID: u32 = 4343;

fn proc_owner(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/status"))
        .expect("stat /proc/<pid>/status")
        .uid()
}

fn proc_status_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("Uid: line")
}

/// Linux has no "Dumpable:" line in /proc/<pid>/status; what it does for a
/// non-dumpable process is make its /proc/<pid> files belong to root
/// instead of the process's uid (proc(5), PR_SET_DUMPABLE in prctl(2)).
/// So: run vaultd as an unprivileged uid, as in production, and compare
/// the `Uid:` line of /proc/<pid>/status with that file's owner.
#[test]
fn daemon_is_not_dumpable_and_has_no_core_limit() {
    let env = env_with(TENANT_AND_ROOT);
    chown_tree(env.path(), DAEMON_UID, DAEMON_UID);
    let d = Launch::new().user(DAEMON_UID, DAEMON_UID).spawn(&env);
    let pid = d.pid();
    assert_eq!(proc_status_uid(pid), DAEMON_UID);
    assert_eq!(proc_owner(pid), 0, "vaultd is dumpable");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );

    // The control: an ordinary process of the same uid is dumpable.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .uid_gid(DAEMON_UID)
        .spawn()
        .unwrap();
    assert_eq!(proc_status_uid(sleeper.id()), DAEMON_UID);
    assert_eq!(proc_owner(sleeper.id()), DAEMON_UID);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

trait UidGid {
    fn uid_gid(&mut self, id: u32) -> &mut Self;
}

impl UidGid for Command {
    fn uid_gid(&mut self, id: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.uid(id).gid(id)
    }
}

#[test]
fn refuses_to_run_as_root_without_allow_root() {
    let env = env_with(TENANT_AND_ROOT);
    let out = Command::new(bin_dir().join("vaultd"))
        .arg("--config")
        .arg(env.config_path())
        .arg("run")
        .env("SOFTHSM2_CONF", env.softhsm_conf())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to run as root"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.socket().exists());
}

// ------------------------------------------------------------------ logging

/// stderr is the journal only when `JOURNAL_STREAM` names stderr's own
/// device and inode.
#[test]
fn logs_to_the_journal_only_when_stderr_is_the_journal_stream() {
    let env = env_with(TENANT_AND_ROOT);
    // Inherited from a parent whose stderr was the journal: not ours.
    let mut d = Launch::new().env("JOURNAL_STREAM", "1:1").spawn(&env);
    wait_log(&env, "vaultd ready");
    assert!(d.terminate().success());
    let lines_before = env.log().lines().count();

    // Names the log file the daemon's stderr is: the journal, then.
    let meta = std::fs::metadata(env.log_path()).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let mut d = Launch::new().env("JOURNAL_STREAM", stream).spawn(&env);
    assert!(d.terminate().success());
    let second_run: Vec<String> = env
        .log()
        .lines()
        .skip(lines_before)
        .map(str::to_owned)
        .collect();
    if Path::new("/run/systemd/journal/socket").exists() {
        // Went to journald: nothing on stderr.
        assert!(second_run.is_empty(), "{second_run:?}");
    } else {
        // No journald here: vaultd says so and falls back to stderr.
        assert!(
            second_run
                .iter()
                .any(|l| l.contains("journald is unreachable; logging to stderr")),
            "{second_run:?}"
        );
        assert!(second_run.iter().any(|l| l.contains("vaultd ready")));
    }
}
