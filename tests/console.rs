//! The security console end to end: vault-tui runs in tmux against real
//! vaultd, SoftHSM2 and scheme-sim processes; the test types with
//! `send-keys` and reads the screen with `capture-pane`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_e2e::console::{Tmux, vault_tui_bin};
use vault_e2e::{
    AMEX, DISCOVER, MASTERCARD, TokenEnv, TokenOpts, VISA, assert_took, bin_dir, machine_load, pan,
    tokenize, wait_for,
};
use vault_proto::ops::{self, NoArgs, PageArgs, SchemeArgs, TokenStatus};

/// The ceiling of a wait for the screen: only a hung test reaches it.
const SCREEN_WAIT: Duration = Duration::from_secs(30);
/// How often the test captures the screen.
const POLL: Duration = Duration::from_millis(50);
/// How often vault-tui polls the daemon (its default `poll_every`).
const CONSOLE_POLL: Duration = Duration::from_secs(1);
const SCHEMES: [&str; 4] = ["amex", "discover", "mastercard", "visa"];

/// A test of a captured screen.
type ScreenCheck<'a> = dyn Fn(&str) -> bool + 'a;

/// Starts vault-tui on `t`'s socket in a 120×40 tmux pane.
fn start_console(t: &TokenEnv, width: u16, height: u16) -> Tmux {
    let cmd = format!(
        "exec {} --socket {} 2>{}",
        vault_tui_bin().display(),
        t.env.socket().display(),
        t.env.path().join("vault-tui.stderr").display()
    );
    Tmux::start(&cmd, width, height)
}

/// Fails (without quoting the screen) if a secret is on it.
fn guard(secrets: &[String]) -> impl FnMut(&str) + '_ {
    move |screen: &str| {
        for s in secrets {
            assert!(
                !screen.contains(s.as_str()),
                "a PAN or token number appears on the console screen"
            );
        }
    }
}

/// The count the Overview's "Network tokens by status" box shows for
/// `status` (cells are split on the box borders).
fn token_count(screen: &str, status: &str) -> Option<u64> {
    screen.lines().flat_map(|l| l.split('│')).find_map(|cell| {
        let rest = cell.trim().strip_prefix(status)?;
        rest.trim().replace(',', "").parse().ok()
    })
}

fn vaultctl_stats(t: &TokenEnv) -> serde_json::Value {
    let out = Command::new(bin_dir().join("vaultctl"))
        .arg("--socket")
        .arg(t.env.socket())
        .args(["--json", "stats"])
        .output()
        .expect("run vaultctl");
    assert!(
        out.status.success(),
        "vaultctl stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("vaultctl --json prints JSON")
}

#[test]
fn console_shows_tokens_pauses_a_scheme_and_survives_a_daemon_restart() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let tui = start_console(&t, 120, 40);

    let mut aliases = Vec::new();
    for p in [VISA, MASTERCARD, AMEX, DISCOVER] {
        aliases.push(tokenize(&mut c, p, 12, 2030).record.alias);
    }
    // Token numbers are as secret as PANs on this screen.
    let mut secrets: Vec<String> = [VISA, MASTERCARD, AMEX, DISCOVER].map(str::to_owned).into();
    for a in &aliases {
        let r = t.wait_status(&mut c, a, SCREEN_WAIT);
        let ti = r.token_info.expect("token_info");
        assert_eq!(ti.status, TokenStatus::Active, "{:?}", ti.last_error);
        let token_ref = ti.token_ref.expect("token_ref");
        let sim = t.sim.get(&format!("/sim/tokens/{token_ref}"));
        secrets.push(sim["token"].as_str().expect("token number").to_owned());
    }
    let mut seen = guard(&secrets);

    // Overview: the four tokens show up as active.
    let overview = tui
        .wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
            s.contains("CONNECTED") && token_count(s, "active") == Some(4)
        })
        .unwrap_or_else(|s| panic!("the Overview never showed 4 active tokens:\n{s}"));
    assert_eq!(token_count(&overview, "pending"), Some(0), "{overview}");
    assert!(overview.contains("Aliases"), "{overview}");
    println!("Overview, 120x40:\n{overview}");

    // Schemes: select visa by reading the screen, pause it, confirm.
    tui.send_keys(&["3"]);
    let mut screen = tui
        .wait_for(SCREEN_WAIT, POLL, &mut seen, |s| s.contains("Selected:"))
        .unwrap_or_else(|s| panic!("the Schemes tab did not open:\n{s}"));
    for _ in 0..SCHEMES.len() {
        if screen.contains("Selected: visa") {
            break;
        }
        let before = screen.clone();
        tui.send_keys(&["j"]);
        screen = tui
            .wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
                s != before && s.contains("Selected:")
            })
            .unwrap_or_else(|s| panic!("j did not move the selection:\n{s}"));
    }
    assert!(screen.contains("Selected: visa"), "{screen}");
    tui.send_keys(&["p"]);
    tui.wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
        s.contains("Pause provisioning for visa?")
    })
    .unwrap_or_else(|s| panic!("no confirmation dialog:\n{s}"));
    // Not paused before the user confirms.
    assert_eq!(vaultctl_stats(&t)["schemes"]["visa"]["paused"], false);
    tui.send_keys(&["y"]);
    // The confirmation comes with the answer to the pause, the PAUSED row
    // with the next stats poll: wait for both.
    tui.wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
        s.contains("visa is paused") && s.contains("PAUSED")
    })
    .unwrap_or_else(|s| panic!("the pause was not confirmed on screen:\n{s}"));

    let stats = vaultctl_stats(&t);
    assert_eq!(stats["schemes"]["visa"]["paused"], true, "{stats}");
    for other in ["amex", "discover", "mastercard"] {
        assert_eq!(stats["schemes"][other]["paused"], false, "{stats}");
    }
    let audit = c
        .op::<ops::AuditOp>(&PageArgs {
            after: None,
            limit: 1000,
        })
        .expect("audit");
    assert!(audit.chain_ok);
    let pause = audit
        .records
        .iter()
        .find(|r| r.op == "scheme_pause")
        .expect("the pause is audited");
    assert_eq!(pause.outcome, "ok visa");
    assert_eq!(pause.uid, 0);

    // Every other screen gets its data from the real daemon (no op refused).
    let aliases_on = |s: &str| aliases.iter().filter(|a| s.contains(a.as_str())).count();
    let tour: [(&str, &str, &ScreenCheck); 4] = [
        ("2", "Provisioning", &|s| s.contains(" Page 1 ")),
        ("4", "Retention", &|s| {
            s.contains("t-a") && s.contains("Due now")
        }),
        ("5", "Events", &|s| s.contains("Kind") && aliases_on(s) == 4),
        ("6", "Audit", &|s| {
            s.contains("scheme_pause") && s.contains("ok visa") && aliases_on(s) == 4
        }),
    ];
    for (key, name, ready) in tour {
        tui.send_keys(&[key]);
        let screen = tui
            .wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
                s.contains("unavailable:") || ready(s)
            })
            .unwrap_or_else(|s| panic!("{name} never showed the daemon's data:\n{s}"));
        assert!(!screen.contains("unavailable:"), "{name}:\n{screen}");
        println!("{name}, 120x40:\n{screen}");
    }

    // The daemon dies: the console says so at its next poll. The wait's
    // ceiling only ends a hung test; the time it took is the property,
    // checked against ten times two polls.
    tui.send_keys(&["1"]);
    let killed_at = Instant::now();
    t.daemon().kill9();
    let down = tui
        .wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
            s.contains("DISCONNECTED from vaultd")
        })
        .unwrap_or_else(|s| {
            panic!(
                "no disconnected state after {SCREEN_WAIT:?} ({}):\n{s}",
                machine_load()
            )
        });
    let took = killed_at.elapsed();
    println!("disconnected shown after {took:?}");
    assert_took(took, CONSOLE_POLL * 2 * 10, "showing the daemon gone");
    assert!(down.contains("Data below is stale"), "{down}");
    assert!(tui.alive(), "the console must survive the daemon");

    // It comes back on its own, with the pause still in force.
    t.restart();
    let restarted_at = Instant::now();
    let back = tui
        .wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
            s.contains(" CONNECTED ") && !s.contains("DISCONNECTED")
        })
        .unwrap_or_else(|s| {
            panic!(
                "no reconnect after {SCREEN_WAIT:?} ({}):\n{s}",
                machine_load()
            )
        });
    let took = restarted_at.elapsed();
    println!("reconnected after {took:?}");
    assert_took(
        took,
        CONSOLE_POLL * 2 * 10,
        "reconnecting to the restarted daemon",
    );
    assert!(back.contains("Aliases"), "{back}");
    tui.send_keys(&["3"]);
    tui.wait_for(SCREEN_WAIT, POLL, &mut seen, |s| {
        s.contains("PAUSED") && s.contains("Selected: visa")
    })
    .unwrap_or_else(|s| panic!("visa not shown paused after the restart:\n{s}"));

    // q quits and the tmux session ends with it.
    tui.send_keys(&["q"]);
    wait_for(SCREEN_WAIT, "q to end the console", || !tui.alive());
    let stderr = std::fs::read_to_string(t.env.path().join("vault-tui.stderr")).unwrap_or_default();
    assert!(
        stderr.trim().is_empty(),
        "vault-tui wrote to stderr: {stderr}"
    );
}

/// How many cards the responsiveness test queues (`VAULT_E2E_QUEUE_JOBS`
/// overrides: 100,000 is the figure, slow in a debug build).
fn queue_jobs() -> usize {
    std::env::var("VAULT_E2E_QUEUE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Tokenizes `n` distinct cards over pipelined connections.
fn tokenize_many(t: &TokenEnv, n: usize) {
    const CONNECTIONS: usize = 2;
    const IN_FLIGHT_PER_CONNECTION: usize = 64;
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let socket = t.env.socket();
    rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for conn in 0..CONNECTIONS {
            let client = Arc::new(
                vault_proto::Client::connect(&socket)
                    .await
                    .expect("connect"),
            );
            for lane in 0..IN_FLIGHT_PER_CONNECTION {
                let client = client.clone();
                let first = conn * IN_FLIGHT_PER_CONNECTION + lane;
                tasks.spawn(async move {
                    let lanes = CONNECTIONS * IN_FLIGHT_PER_CONNECTION;
                    for i in (first..n).step_by(lanes) {
                        let args = ops::TokenizeArgs {
                            pan: vault_proto::Pan::new(pan("4", i as u64)),
                            exp_month: 12,
                            exp_year: 2030,
                            transaction_id: None,
                        };
                        client.op::<ops::Tokenize>(&args).await.expect("tokenize");
                    }
                });
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("tokenize task");
        }
    });
}

/// Presses `key` and returns how long until `changed` holds for the
/// screen (capture-pane every 10 ms).
fn time_key(tui: &Tmux, key: &str, changed: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    tui.send_keys(&[key]);
    let mut ignore = |_: &str| {};
    tui.wait_for(SCREEN_WAIT, Duration::from_millis(10), &mut ignore, changed)
        .unwrap_or_else(|s| {
            panic!(
                "{key} changed nothing after {SCREEN_WAIT:?} ({}):\n{s}",
                machine_load()
            )
        });
    start.elapsed()
}

/// The first rows of the jobs table (the lines below the filter line).
fn job_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !l.contains(" Page "))
        .skip(3)
        .take(10)
        .collect()
}

#[test]
fn console_stays_responsive_with_a_deep_queue() {
    let t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    for s in SCHEMES {
        c.op::<ops::SchemePause>(&SchemeArgs {
            scheme: s.to_owned(),
        })
        .expect("pause");
    }
    let n = queue_jobs();
    let started = Instant::now();
    tokenize_many(&t, n);
    let fill = started.elapsed();
    let stats = c.op::<ops::StatsOp>(&NoArgs {}).expect("stats");
    let queued = stats.queue.due + stats.queue.scheduled;
    assert_eq!(queued, n as u64, "{:?}", stats.queue);
    println!(
        "queued {n} jobs in {:.1} s ({:.0} tokenize/s)",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64()
    );

    let tui = start_console(&t, 120, 40);
    let mut ignore = |_: &str| {};
    tui.send_keys(&["2"]);
    let first = tui
        .wait_for(SCREEN_WAIT, POLL, &mut ignore, |s| {
            s.contains("Page 1 ") && s.contains("more ▶") && !s.contains("loading…")
        })
        .unwrap_or_else(|s| panic!("the first queue page never arrived:\n{s}"));

    let mut key_ms = Vec::new();
    let mut page_ms = Vec::new();
    let mut before = first;
    for page in 2..=6 {
        let label = format!("Page {page} ");
        let start = Instant::now();
        // The key is reflected as soon as the page number moves...
        key_ms.push(time_key(&tui, "]", |s| s.contains(&label)));
        // ...and the page itself arrives from the server after that.
        let screen = tui
            .wait_for(SCREEN_WAIT, Duration::from_millis(10), &mut ignore, |s| {
                s.contains(&label) && !s.contains("loading…")
            })
            .unwrap_or_else(|s| panic!("page {page} never arrived:\n{s}"));
        page_ms.push(start.elapsed());
        assert_ne!(
            job_rows(&screen),
            job_rows(&before),
            "page {page} shows the same jobs"
        );
        before = screen;
    }
    // Switching screens while the queue is this deep.
    for (key, title) in [("3", "Selected:"), ("1", "Network tokens"), ("2", " Page ")] {
        key_ms.push(time_key(&tui, key, |s| s.contains(title)));
    }
    println!("with {n} queued jobs: key reflected in {key_ms:?}, next page shown in {page_ms:?}");
    // The polls kept up with the deep queue too (no 5 s request timeout).
    tui.send_keys(&["1"]);
    let overview = tui
        .wait_for(SCREEN_WAIT, POLL, &mut ignore, |s| {
            s.contains("Queue depth")
        })
        .unwrap_or_else(|s| panic!("no Overview:\n{s}"));
    assert!(!overview.contains("DISCONNECTED"), "{overview}");
    let depth = overview
        .lines()
        .flat_map(|l| l.split('│'))
        .find_map(|cell| cell.trim().strip_prefix("Queue depth"))
        .map(|v| v.trim().replace(',', ""));
    assert_eq!(depth, Some(n.to_string()), "{overview}");
    // A key shows at the next frame, before any answer from the daemon:
    // 200 ms at most on an idle machine (each look at the screen runs a
    // tmux process); the bound is ten times that, which a loaded machine
    // does not reach. (That keys never wait for the daemon at all is
    // vault-tui's own test, keys_are_handled_while_the_daemon_hangs.)
    let worst = key_ms.iter().max().copied().unwrap_or_default();
    assert_took(
        worst,
        Duration::from_secs(2),
        format_args!("a key press to show (all: {key_ms:?})"),
    );
    tui.send_keys(&["q"]);
}
