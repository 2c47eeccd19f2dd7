//! Per-uid limits against a real vaultd process: a uid that is no client
//! (but may reach the socket) floods it with connections and junk frames,
//! a configured uid passes its connection cap, and big frames meet the
//! budget of buffered request bytes. Throughout, a configured merchant's
//! calls must keep succeeding. Nothing here measures speed: waits have
//! generous ceilings and only say whether something happened.
//!
//! The tests take a lock and run one at a time (they share two cores).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vault_e2e::{TestEnv, Vaultd, as_uid, pan};
use vault_proto::frame::{self, FrameRead};
use vault_proto::ops::{self, NoArgs};
use vault_proto::{BlockingClient, ErrorCode, Pan};

/// Not in any configuration: only a member of the socket's group.
const HOSTILE: u32 = 4242;
/// A configured merchant of tenant t-a.
const SHOP: u32 = 1001;
/// Hostile connections per round.
const FLOOD: usize = 2000;
/// The default `[server].max_connections_per_uid`, which the unknown uids
/// share.
const DEFAULT_UID_CAP: usize = 128;
/// Ceiling for anything the tests wait for.
const CEILING: Duration = Duration::from_secs(120);
/// A little more than vaultd's interval of refusal audits (10 s): a flood
/// this long has had an interval end.
const PAST_AN_INTERVAL: Duration = Duration::from_secs(12);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Root is admin (to read the audit trail); SHOP is a merchant; `extra`
/// adds clients.
fn start(server_extra: &str, extra: &str) -> (TestEnv, Vaultd) {
    let env = TestEnv::new();
    env.write_config(
        server_extra,
        &format!(
            r#"{root}
[[client]]
name = "shop"
uid = {SHOP}
tenant = "t-a"
roles = ["merchant"]
{extra}"#,
            root = vault_e2e::ROOT_MERCHANT_T_A
        ),
    );
    let d = env.start();
    (env, d)
}

/// Raises this process's soft RLIMIT_NOFILE towards `want` (the daemon,
/// started after, inherits it) and returns the soft limit now.
fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
    }
    r.rlim_cur
}

/// Runs `f` on a new thread whose effective uid is `uid` (SO_PEERCRED
/// takes the euid at connect); unlike [`as_uid`] it does not wait.
fn spawn_as<R: Send + 'static>(uid: u32, f: impl FnOnce() -> R + Send + 'static) -> JoinHandle<R> {
    std::thread::spawn(move || {
        // SAFETY: setresuid(2) on this thread only; -1 keeps real/saved ids.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, u32::MAX, uid, u32::MAX) };
        assert_eq!(rc, 0, "setresuid (tests run as root)");
        f()
    })
}

fn tokenize_args(n: u64) -> ops::TokenizeArgs {
    ops::TokenizeArgs {
        pan: Pan::new(pan("411111", n)),
        exp_month: 12,
        exp_year: 2035,
        transaction_id: None,
    }
}

/// The configured merchant: tokenizes a new card on a new connection
/// every 20 ms until stopped, and records every failure.
struct Merchant {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Merchant {
    fn start(socket: PathBuf) -> Merchant {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let thread = spawn_as(SHOP, move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let call = || -> Result<ops::TokenizeResult, String> {
                    let mut c = BlockingClient::connect(&socket).map_err(|e| e.to_string())?;
                    c.set_timeout(Some(CEILING)).map_err(|e| e.to_string())?;
                    c.op::<ops::Tokenize>(&tokenize_args(n))
                        .map_err(|e| e.to_string())
                };
                match call() {
                    Ok(r) if r.created => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => f.lock().unwrap().push(format!("not created: {r:?}")),
                    Err(e) => f.lock().unwrap().push(format!("tokenize #{n}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Merchant {
            stop,
            ok,
            failures,
            thread: Some(thread),
        }
    }

    fn succeeded(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn assert_no_failure(&self) {
        let f = self.failures.lock().unwrap();
        assert!(
            f.is_empty(),
            "the merchant's calls failed: {:?}",
            &f[..f.len().min(5)]
        );
    }

    /// Waits until `more` calls have succeeded since `since` (a count
    /// from [`Merchant::succeeded`]); fails on the first failed call.
    fn wait_for(&self, since: u64, more: u64, what: &str) {
        let deadline = Instant::now() + CEILING;
        while self.succeeded() < since + more {
            self.assert_no_failure();
            assert!(
                Instant::now() < deadline,
                "{what}: the merchant made {} successful calls, waited for {more}",
                self.succeeded() - since
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.assert_no_failure();
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("merchant thread");
        }
        self.assert_no_failure();
        self.succeeded()
    }
}

/// Connects `n` times as `uid` and writes `junk(i)` on connection `i`
/// (nothing when it is empty). A write the server cut short (it answered
/// and closed) is fine.
fn connect_as(uid: u32, socket: &Path, n: usize, junk: fn(usize) -> Vec<u8>) -> Vec<UnixStream> {
    let socket = socket.to_path_buf();
    spawn_as(uid, move || {
        (0..n)
            .map(|i| {
                let mut s = UnixStream::connect(&socket).expect("connect");
                let bytes = junk(i);
                if !bytes.is_empty() {
                    let _ = s.write_all(&bytes);
                }
                s
            })
            .collect()
    })
    .join()
    .expect("connecting thread")
}

/// Frames a hostile client sends: a well-formed tokenize (even `i`) or
/// bytes that are no MessagePack (odd `i`) first, then more junk of both
/// kinds, and last a header announcing a frame over max_frame.
fn junk(i: usize) -> Vec<u8> {
    let mut out = if i.is_multiple_of(2) {
        frame::encode_request(i as u64, ops::op::TOKENIZE, &tokenize_args(i as u64))
    } else {
        frame::frame(b"\xc1\xc1 not MessagePack")
    };
    for k in 0..40u8 {
        out.extend(frame::frame(&vec![0xc1 ^ k; 1 + 37 * k as usize]));
        out.extend(frame::encode_request(
            1000 + k as u64,
            ops::op::HEALTH,
            &NoArgs {},
        ));
    }
    out.extend_from_slice(&(64u32 << 20).to_be_bytes());
    out
}

fn no_junk(_: usize) -> Vec<u8> {
    Vec::new()
}

/// Blocks until the server closes `s`; returns the bytes it sent first.
fn read_until_closed(s: &mut UnixStream) -> Vec<u8> {
    s.set_read_timeout(Some(CEILING)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        // Closed with our junk unread: the kernel says reset.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => got,
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
}

/// The one answer on `s`, after which the server must have closed it.
fn only_answer(s: &mut UnixStream) -> (Option<u64>, vault_proto::WireError) {
    s.set_read_timeout(Some(CEILING)).unwrap();
    let body = match frame::read_frame_blocking(s, 1 << 20) {
        Ok(FrameRead::Frame(b)) => b,
        other => panic!("expected one answer, got {other:?}"),
    };
    let h = frame::decode_response(&body).expect("an answer");
    let e = h.outcome.expect_err("an error answer");
    let rest = read_until_closed(s);
    assert!(
        rest.is_empty(),
        "closed after the first answer, yet {} more bytes came ({:?} first)",
        rest.len(),
        e.code
    );
    (h.id, e)
}

/// Whether the server has sent something on (or closed) `s` yet.
fn has_spoken(s: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: recv(2) peeking one byte into a valid buffer, without waiting.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0 || std::io::Error::last_os_error().kind() != ErrorKind::WouldBlock
}

/// The whole audit trail, page by page; asserts every page's chain. (Each
/// `audit` call adds a record of its own: a short page is the last.)
fn audit_trail(c: &mut BlockingClient) -> Vec<ops::AuditView> {
    const PAGE: u32 = 1000;
    let mut all: Vec<ops::AuditView> = Vec::new();
    loop {
        let page = c
            .op::<ops::AuditOp>(&ops::PageArgs {
                after: all.last().map(|r| r.seq),
                limit: PAGE,
            })
            .expect("audit");
        assert!(page.chain_ok, "the audit chain verifies");
        let last = page.records.len() < PAGE as usize;
        all.extend(page.records);
        if last {
            return all;
        }
    }
}

/// How many refusals an audit record stands for: 1 for a refusal's own
/// record (`outcome` = the code), N for "<code> xN (coalesced ...)".
fn refusals_in(r: &ops::AuditView, code: &str) -> u64 {
    if r.outcome == code {
        return 1;
    }
    let rest = r
        .outcome
        .strip_prefix(code)
        .and_then(|s| s.strip_prefix(" x"))
        .unwrap_or_else(|| panic!("unexpected outcome {:?} for uid {}", r.outcome, r.uid));
    let (n, tail) = rest.split_once(' ').expect("a count, then why");
    assert!(tail.starts_with("(coalesced since "), "{:?}", r.outcome);
    n.parse().expect("a count")
}

#[test]
fn an_unknown_uid_flooding_the_socket_does_not_stop_a_merchant_or_flood_the_audit_trail() {
    let _serial = serial();
    let nofile = raise_nofile(8192);
    // The test holds FLOOD hostile connections at once.
    let flood = FLOOD.min((nofile as usize).saturating_sub(500));
    if flood < FLOOD {
        eprintln!("RLIMIT_NOFILE is {nofile}: flooding with {flood} connections, not {FLOOD}");
    }
    assert!(
        flood > 2 * DEFAULT_UID_CAP,
        "RLIMIT_NOFILE {nofile} is too low for this test"
    );
    // Default limits: 1024 connections, 128 per uid.
    let (env, mut d) = start("", "");
    let socket = env.socket();
    let merchant = Merchant::start(socket.clone());
    merchant.wait_for(0, 3, "before the flood");

    // 1. The hostile uid opens `flood` connections and holds them silent:
    // it gets its share (128, for every unknown uid together), the rest
    // are answered `overloaded` and closed at once.
    let mut held = connect_as(HOSTILE, &socket, flood, no_junk);
    let mut refused = 0;
    let deadline = Instant::now() + CEILING;
    while refused < flood - DEFAULT_UID_CAP {
        let mut silent = Vec::new();
        for mut s in held {
            if has_spoken(&s) {
                let (id, e) = only_answer(&mut s);
                assert_eq!((id, e.code), (None, ErrorCode::Overloaded));
                assert!(e.retryable);
                refused += 1;
            } else {
                silent.push(s);
            }
        }
        held = silent;
        assert!(
            Instant::now() < deadline,
            "{refused} of {flood} hostile connections refused; {} held",
            held.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        held.len(),
        DEFAULT_UID_CAP,
        "the unknown uid holds exactly its cap"
    );
    // While it holds them, the merchant connects anew for every call.
    merchant.wait_for(
        merchant.succeeded(),
        5,
        "hostile uid holding its connections",
    );
    assert!(
        held.iter().all(|s| !has_spoken(s)),
        "a held connection was answered unasked"
    );

    // 2. Junk on the held connections: one answer each (`unauthenticated`,
    // with the id when the first frame had one), then closed; the rest of
    // the junk is never read.
    let flood_began = Instant::now();
    for (i, s) in held.iter_mut().enumerate() {
        let _ = s.write_all(&junk(i));
    }
    let mut unauthenticated = 0u64;
    for (i, mut s) in held.into_iter().enumerate() {
        let (id, e) = only_answer(&mut s);
        assert_eq!(e.code, ErrorCode::Unauthenticated, "connection {i}");
        let want = if i.is_multiple_of(2) {
            Some(i as u64)
        } else {
            None
        };
        assert_eq!(id, want, "connection {i}");
        unauthenticated += 1;
    }

    // 3. Rounds of `flood` connections, each sending junk at once, until
    // the merchant has succeeded 10 more times during them and an audit
    // interval has passed: every hostile connection gets one answer
    // (`unauthenticated` when admitted, `overloaded` when its uid's share
    // was taken) and is closed.
    let during = merchant.succeeded();
    let mut rounds = 0;
    let mut overloaded = 0u64;
    let going_on = |rounds: usize| {
        rounds == 0
            || ((merchant.succeeded() < during + 10 || flood_began.elapsed() < PAST_AN_INTERVAL)
                && rounds < 100)
    };
    while going_on(rounds) {
        rounds += 1;
        for mut s in connect_as(HOSTILE, &socket, flood, junk) {
            let (_, e) = only_answer(&mut s);
            match e.code {
                ErrorCode::Unauthenticated => unauthenticated += 1,
                ErrorCode::Overloaded => overloaded += 1,
                other => panic!("a hostile connection got {other:?}"),
            }
        }
        merchant.assert_no_failure();
    }
    assert!(
        merchant.succeeded() >= during + 10,
        "the merchant succeeded {} times during {rounds} flood rounds",
        merchant.succeeded() - during
    );
    assert!(flood_began.elapsed() >= PAST_AN_INTERVAL, "{rounds} rounds");
    // One more refusal, and stop at once: its count can only reach the
    // trail through the stop.
    let mut last = connect_as(HOSTILE, &socket, 1, junk);
    assert_eq!(only_answer(&mut last[0]).1.code, ErrorCode::Unauthenticated);
    unauthenticated += 1;
    let flood_secs = flood_began.elapsed().as_secs();
    let calls = merchant.finish();
    let stopped_at = now_ms();
    assert!(d.terminate().success(), "clean stop");
    eprintln!(
        "flood: {rounds} rounds of {flood} connections in {flood_secs} s, {unauthenticated} unauthenticated and {overloaded} overloaded answers; the merchant tokenized {calls} cards"
    );

    // The audit trail: every refusal of the hostile uid counted, in a
    // handful of records (its first, then one per interval of 10 s: at
    // most 2 per 10 s with the bursts' ends), not one per refusal.
    let _d = Vaultd::spawn(&env);
    let trail = audit_trail(&mut env.client());
    let hostile: Vec<&ops::AuditView> = trail.iter().filter(|r| r.uid == HOSTILE).collect();
    let counted: u64 = hostile
        .iter()
        .map(|r| refusals_in(r, "unauthenticated"))
        .sum();
    eprintln!(
        "flood: the hostile uid has {} audit records for {counted} refusals (the first ten: {:?})",
        hostile.len(),
        hostile
            .iter()
            .take(10)
            .map(|r| &r.outcome)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        counted, unauthenticated,
        "every refusal is counted in the trail, none twice"
    );
    let bound = 4 + 2 * (flood_secs as usize / 10);
    assert!(
        hostile.len() <= bound,
        "{} audit records for the hostile uid in {flood_secs} s (bound {bound})",
        hostile.len()
    );
    assert!(
        hostile.iter().all(|r| r.client == "(unknown)"),
        "named as unknown"
    );
    assert!(
        hostile
            .iter()
            .any(|r| r.outcome.contains("coalesced") && r.at < stopped_at),
        "the count of an interval that ended during the flood was written then, not only at the stop"
    );
    let tokenized = trail
        .iter()
        .filter(|r| r.uid == SHOP && r.op == "tokenize" && r.outcome == "ok created")
        .count() as u64;
    assert_eq!(
        tokenized, calls,
        "the merchant's calls are audited one by one"
    );
}

#[test]
fn a_configured_uid_over_its_connection_cap_is_overloaded_while_others_connect() {
    let _serial = serial();
    const CAPPED: u32 = 1002;
    let (env, _d) = start(
        "max_connections_per_uid = 4\n",
        &format!(
            "[[client]]\nname = \"busy-shop\"\nuid = {CAPPED}\ntenant = \"t-a\"\nroles = [\"merchant\"]\n"
        ),
    );
    let socket = env.socket();
    let connect_health = |uid: u32| {
        let socket = socket.clone();
        as_uid(uid, move || {
            let mut c = BlockingClient::connect(&socket).expect("connect");
            c.set_timeout(Some(CEILING)).unwrap();
            c.op::<ops::HealthOp>(&NoArgs {}).map(|_| c)
        })
    };
    let mut held: Vec<BlockingClient> = (0..4)
        .map(|i| connect_health(CAPPED).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();

    // The fifth: `overloaded` (id nil, retryable), then closed.
    let mut fifth = connect_as(CAPPED, &socket, 1, |_| {
        frame::encode_request(5, ops::op::HEALTH, &NoArgs {})
    });
    let (id, e) = only_answer(&mut fifth[0]);
    assert_eq!((id, e.code), (None, ErrorCode::Overloaded), "{e:?}");
    assert!(e.retryable, "overloaded is retryable");

    // Other uids connect and work meanwhile.
    let shop = as_uid(SHOP, {
        let socket = socket.clone();
        move || {
            let mut c = BlockingClient::connect(&socket).expect("connect");
            c.op::<ops::Tokenize>(&tokenize_args(1))
        }
    });
    assert!(shop.expect("the shop tokenizes").created);
    assert!(env.client().op::<ops::HealthOp>(&NoArgs {}).is_ok());
    // The capped uid's own connections were not disturbed.
    for c in &mut held {
        assert!(c.op::<ops::HealthOp>(&NoArgs {}).expect("health").ready);
    }
    // A slot comes back when one of them leaves.
    held.pop();
    let deadline = Instant::now() + CEILING;
    let again = loop {
        if let Ok(c) = connect_health(CAPPED) {
            break c;
        }
        assert!(Instant::now() < deadline, "no slot came back");
        std::thread::sleep(Duration::from_millis(50));
    };
    held.push(again);
    assert_eq!(held.len(), 4);
}

/// Writes `data` from `from` on until it is all written or the socket has
/// accepted nothing for `patience`; returns how far it got.
fn write_until_held(s: &mut UnixStream, data: &[u8], from: usize, patience: Duration) -> usize {
    s.set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut at = from;
    let mut stuck_since: Option<Instant> = None;
    while at < data.len() {
        match s.write(&data[at..]) {
            Ok(n) => {
                at += n;
                stuck_since = None;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stuck_since.get_or_insert_with(Instant::now).elapsed() >= patience {
                    break;
                }
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    at
}

/// Writes the rest of `data` from `from` (the server reads it, however
/// long that takes) and reads the answer: `bad_request`, the body being
/// no MessagePack.
fn complete(s: &mut UnixStream, data: &[u8], from: usize) {
    s.set_write_timeout(Some(CEILING)).unwrap();
    s.write_all(&data[from..])
        .expect("the rest of the frame is read");
    s.set_read_timeout(Some(CEILING)).unwrap();
    match frame::read_frame_blocking(s, 1 << 20) {
        Ok(FrameRead::Frame(b)) => {
            let e = frame::decode_response(&b)
                .unwrap()
                .outcome
                .expect_err("an error");
            assert_eq!(e.code, ErrorCode::BadRequest);
        }
        other => panic!("no answer to a completed frame: {other:?}"),
    }
}

#[test]
fn request_bytes_wait_for_the_uid_share_and_the_global_budget() {
    let _serial = serial();
    // 4 MiB of request bytes at once; each uid may hold a quarter (1 MiB).
    // frame_timeout is long: held frames are completed late on purpose.
    let clients: String = (1101..=1105)
        .map(|uid| {
            format!(
                "[[client]]\nname = \"bulk-{uid}\"\nuid = {uid}\ntenant = \"t-a\"\nroles = [\"collector\"]\n"
            )
        })
        .collect();
    let (env, _d) = start(
        "max_buffered_bytes = 4194304\nframe_timeout = \"5m\"\n",
        &clients,
    );
    let socket = env.socket();
    // A frame of 1,000,000 bytes, not MessagePack. `HOLD` of it is
    // written before the test decides when the rest follows.
    const LEN: usize = 1_000_000;
    const HOLD: usize = 900_000;
    let mut data = (LEN as u32).to_be_bytes().to_vec();
    data.extend(std::iter::repeat_n(0xc1u8, LEN));
    let hold = frame::HEADER_LEN + HOLD;
    let open = |uid: u32| connect_as(uid, &socket, 1, no_junk).remove(0);
    let patience = Duration::from_secs(2);
    // Written up to `hold` in full: the server reads the body.
    let taken = |s: &mut UnixStream, who: &str| {
        s.set_write_timeout(Some(CEILING)).unwrap();
        s.write_all(&data[..hold])
            .unwrap_or_else(|e| panic!("{who}: the server did not read the body: {e}"));
    };
    // Held: the server leaves the body in the socket. (The kernel buffers
    // a couple of hundred KB of it.)
    let held = |s: &mut UnixStream, who: &str| -> usize {
        let at = write_until_held(s, &data[..hold], 0, patience);
        assert!(at < hold, "{who}: the server read the body ({at} bytes)");
        eprintln!("budget: {who} held after {at} bytes");
        at
    };

    // A uid's second big frame waits for its share, though the budget has room.
    let mut a1 = open(1101);
    taken(&mut a1, "1101's first frame");
    let mut a2 = open(1101);
    let a2_at = held(&mut a2, "1101's second frame (its share is taken)");
    // Three more uids take 3,000,000 bytes: 4,000,000 of 4,194,304.
    let mut others: Vec<UnixStream> = (1102..=1104).map(open).collect();
    for (s, uid) in others.iter_mut().zip(1102..) {
        taken(s, &format!("uid {uid}"));
    }
    // A fifth uid, its share untouched, waits for the global budget.
    let mut e1 = open(1105);
    let e1_at = held(&mut e1, "1105's frame (the budget is taken)");
    // Small requests of other uids still fit.
    let shop = as_uid(SHOP, {
        let socket = socket.clone();
        move || {
            let mut c = BlockingClient::connect(&socket).expect("connect");
            c.set_timeout(Some(CEILING)).unwrap();
            c.op::<ops::Tokenize>(&tokenize_args(7))
        }
    });
    assert!(shop.expect("the shop tokenizes").created);

    // Bytes freed, waiting frames are read.
    complete(&mut others[0], &data, hold);
    complete(&mut e1, &data, e1_at);
    complete(&mut a1, &data, hold);
    complete(&mut a2, &data, a2_at);
    for s in &mut others[1..] {
        complete(s, &data, hold);
    }
}
