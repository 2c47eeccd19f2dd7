package vaultd

// A real vaultd for the end-to-end tests, started the way the Rust harness
// (tests/harness) and the Python client's tests start it: a SoftHSM2 token
// in a temp directory, scheme-sim on 127.0.0.1 (a free port), the KEK
// ceremony, then `vaultd run`. Uses the binaries in target/debug
// (VAULTD_BIN_DIR overrides; they are built with cargo when missing).
//
// Waits poll with a ceiling and never assert how long something took.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	e2eCeiling = 60 * time.Second
	// A merchant of tenant t-a (role merchant only), and a uid configured
	// nowhere.
	merchantUID = 1401
	unknownUID  = 1499
)

type vault struct {
	dir     string
	socket  string
	logPath string
	env     []string
	sim     *exec.Cmd
	daemon  *exec.Cmd
	exited  chan struct{}
}

func binDir(t *testing.T) string {
	d := os.Getenv("VAULTD_BIN_DIR")
	if d == "" {
		d = filepath.Join(repoRoot(), "target", "debug")
	}
	have := func() bool {
		for _, b := range []string{"vaultd", "scheme-sim"} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				return false
			}
		}
		return true
	}
	if !have() {
		cmd := exec.Command("cargo", "build", "-q", "-p", "vaultd", "-p", "scheme-sim")
		cmd.Dir = repoRoot()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil || !have() {
			t.Fatalf("building vaultd and scheme-sim: %v", err)
		}
	}
	return d
}

func softhsmModule(t *testing.T) string {
	for _, m := range []string{
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	} {
		if _, err := os.Stat(m); err == nil {
			return m
		}
	}
	t.Fatal("SoftHSM2 is not installed (apt-get install softhsm2)")
	return ""
}

// waitFor calls probe until it returns true; fails after the ceiling with
// the last error it returned.
func waitFor(t *testing.T, what string, probe func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(e2eCeiling)
	pause := 20 * time.Millisecond
	var last error
	for {
		ok, err := probe()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %v", e2eCeiling, what, last)
		}
		time.Sleep(pause)
		if pause < 500*time.Millisecond {
			pause *= 2
		}
	}
}

func startVault(t *testing.T) *vault {
	bins := binDir(t)
	dir, err := os.MkdirTemp("", "vault-go-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("VAULTD_E2E_KEEP") != "" {
			t.Logf("kept %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	// Other uids (the tests' other clients) must reach the socket inside.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := &vault{
		dir:     dir,
		socket:  filepath.Join(dir, "vaultd.sock"),
		logPath: filepath.Join(dir, "vaultd.log"),
		exited:  make(chan struct{}),
	}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "RUST_LOG=") && !strings.HasPrefix(e, "SOFTHSM2_CONF=") {
			v.env = append(v.env, e)
		}
	}
	v.env = append(v.env, "SOFTHSM2_CONF="+filepath.Join(dir, "softhsm2.conf"))
	ok := false
	defer func() {
		if !ok {
			v.stop()
		}
	}()
	tokens := filepath.Join(dir, "tokens")
	must(t, os.Mkdir(tokens, 0o700))
	must(t, os.WriteFile(filepath.Join(dir, "softhsm2.conf"),
		[]byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o644))
	pin := filepath.Join(dir, "hsm.pin")
	must(t, os.WriteFile(pin, []byte("1234-test-pin\n"), 0o600)) // vaultd refuses a PIN file open to others
	v.run(t, "softhsm2-util", "--init-token", "--free", "--label", "vaultd-test",
		"--pin", "1234-test-pin", "--so-pin", "5678-test-so")
	kek := filepath.Join(dir, "kek")
	must(t, os.Mkdir(kek, 0o700))
	simLog, err := os.Create(filepath.Join(dir, "scheme-sim.log"))
	must(t, err)
	defer simLog.Close()
	v.sim = exec.Command(filepath.Join(bins, "scheme-sim"), "--listen", "127.0.0.1:0", "--kek-dir", kek)
	v.sim.Env = v.env
	v.sim.Stderr = simLog
	out, err := v.sim.StdoutPipe()
	must(t, err)
	must(t, v.sim.Start())
	banner, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("scheme-sim wrote no banner: %v", err)
	}
	banner = strings.TrimSpace(banner)
	port := banner[strings.LastIndex(banner, ":")+1:]
	url := "http://127.0.0.1:" + port
	var schemes strings.Builder
	for _, s := range [][2]string{{"visa", "40010030273"}, {"mastercard", "50110030273"}, {"amex", "34010030273"}, {"discover", "60110030273"}} {
		fmt.Fprintf(&schemes, "[schemes.%s]\nurl = %q\ntoken_requestor_id = %q\n", s[0], url, s[1])
	}
	config := fmt.Sprintf(`[server]
socket = %q
[storage]
path = %q
[hsm]
module = %q
token_label = "vaultd-test"
pin_file = %q
[log]
level = "info,vaultd=debug"
[provisioning]
backoff_initial = "50ms"
backoff_max = "500ms"
max_attempts = 30
poll_interval = "1s"
breaker_threshold = 20
breaker_cooldown = "500ms"
%s
[[tenant]]
id = "t-a"
network_tokens = true

[[client]]
name = "root"
uid = 0
tenant = "t-a"
tenants = ["*"]
roles = ["merchant", "admin", "forwarder"]

[[client]]
name = "shop-a"
uid = %d
tenant = "t-a"
roles = ["merchant"]
`, v.socket, filepath.Join(dir, "vault.redb"), softhsmModule(t), pin, schemes.String(), merchantUID)
	cfg := filepath.Join(dir, "vaultd.toml")
	must(t, os.WriteFile(cfg, []byte(config), 0o644))
	vaultdBin := filepath.Join(bins, "vaultd")
	v.run(t, vaultdBin, "--config", cfg, "keys", "init")
	for _, s := range []string{"visa", "mastercard", "amex", "discover"} {
		v.run(t, vaultdBin, "--config", cfg, "keys", "import-kek", "--scheme", s,
			"--component", filepath.Join(kek, s+".c1"), "--component", filepath.Join(kek, s+".c2"))
	}
	logf, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	must(t, err)
	defer logf.Close()
	v.daemon = exec.Command(vaultdBin, "--config", cfg, "run", "--allow-root")
	v.daemon.Env = v.env
	v.daemon.Stdout, v.daemon.Stderr = logf, logf
	must(t, v.daemon.Start())
	go func() { _ = v.daemon.Wait(); close(v.exited) }()
	waitFor(t, "vaultd to answer health", func() (bool, error) {
		select {
		case <-v.exited:
			t.Fatalf("vaultd exited during start-up; its log ends:\n%s", tail(v.log(), 3000))
		default:
		}
		c := New(v.socket, WithTimeout(5*time.Second))
		defer c.Close()
		h, err := c.Health(context.Background())
		return err == nil && h != nil, err
	})
	ok = true
	return v
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (v *vault) run(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = v.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		name := filepath.Base(args[0])
		t.Fatalf("%s %s failed: %v\n%s", name, strings.Join(args[1:min(3, len(args))], " "), err, tail(string(out), 2000))
	}
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func (v *vault) log() string {
	b, _ := os.ReadFile(v.logPath)
	return string(b)
}

func (v *vault) client(opts ...Option) *Client {
	return New(v.socket, append([]Option{WithTimeout(30 * time.Second)}, opts...)...)
}

func (v *vault) stop() {
	if v.daemon != nil && v.daemon.Process != nil {
		select {
		case <-v.exited:
		default:
			_ = v.daemon.Process.Signal(syscall.SIGTERM)
			select {
			case <-v.exited:
			case <-time.After(e2eCeiling):
				_ = v.daemon.Process.Kill()
				<-v.exited
			}
		}
	}
	if v.sim != nil && v.sim.Process != nil {
		_ = v.sim.Process.Kill()
		_ = v.sim.Wait()
	}
}

// dialAs connects to path with all uids of the connecting thread set to
// uid (its gid stays root's, so it may open the 0660 socket, as the Rust
// harness's clients do): the server reads the peer's credentials at
// connect. The goroutine keeps its thread locked and ends, so the Go
// runtime ends that thread and its changed uids never run anything else
// (and the runtime never clones a locked thread for a new one). The tests
// run as root.
func dialAs(uid int) func(ctx context.Context, path string) (net.Conn, error) {
	return func(ctx context.Context, path string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
				ch <- res{nil, e}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// rawFrames writes data on a fresh connection (dialled by dial) and reads
// want whole answer frames (length header included); with thenEOF also
// waits for the server to close. Returns the frames and whether the server
// closed the connection.
func rawFrames(t *testing.T, dial func(ctx context.Context, path string) (net.Conn, error), path string, data []byte, want int, thenEOF bool) ([][]byte, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eCeiling)
	defer cancel()
	c, err := dial(ctx, path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(e2eCeiling))
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	r := bufio.NewReader(c)
	var frames [][]byte
	closed := false
	for len(frames) < want || (thenEOF && !closed) {
		body, err := ReadFrame(r, MaxResponseFrame)
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			closed = true
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		frames = append(frames, Frame(body))
	}
	return frames, closed
}

func plainDial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}
