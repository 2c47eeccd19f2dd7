package vaultd

// The client against a scripted fake server on a temporary Unix socket:
// out-of-order answers, many goroutines on one connection, timeouts,
// reconnect on EOF, answers without an id, a server that stops reading.
// Waits have ceilings; nothing asserts how long anything took.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const ceiling = 30 * time.Second

var healthResult = Map{{"ready", true}, {"version", "t"}, {"hsm", "ok"}, {"store", "ok"}, {"uptime_ms", 1}}

func healthWith(version string) Map {
	m := append(Map{}, healthResult...)
	m[1] = Entry{"version", version}
	return m
}

func okFrame(id any, result any) []byte {
	b, err := Marshal(Map{{"id", id}, {"ok", true}, {"result", result}})
	if err != nil {
		panic(err)
	}
	return Frame(b)
}

func errFrame(id any, code string, retryable bool) []byte {
	b, _ := Marshal(Map{{"id", id}, {"ok", false}, {"error", Map{{"code", code}, {"message", "m"}, {"retryable", retryable}}}})
	return Frame(b)
}

type action int

const (
	send      action = iota // write the bytes
	sendClose               // write the bytes, then close
	closeConn               // close without writing
	silent                  // write nothing
)

// fakeServer calls script(connNo, requests) once batch requests have come
// in on a connection and does what it says.
type fakeServer struct {
	t      *testing.T
	path   string
	ln     net.Listener
	script func(conn int, reqs []Map) ([]byte, action)
	batch  int

	mu       sync.Mutex
	conns    int
	requests []Map
	raw      [][]byte
	open     []net.Conn
	wg       sync.WaitGroup
}

func newFake(t *testing.T, batch int, script func(conn int, reqs []Map) ([]byte, action)) *fakeServer {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, path: path, ln: ln, script: script, batch: batch}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		n := s.conns
		s.open = append(s.open, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c, n)
	}
}

func (s *fakeServer) serve(c net.Conn, n int) {
	defer s.wg.Done()
	defer c.Close()
	r := bufio.NewReader(c)
	var pending []Map
	for {
		body, err := ReadFrame(r, 64<<20)
		if err != nil {
			return
		}
		v, err := Unmarshal(body)
		if err != nil {
			return
		}
		req := v.(Map)
		s.mu.Lock()
		s.requests = append(s.requests, req)
		s.raw = append(s.raw, body)
		s.mu.Unlock()
		pending = append(pending, req)
		if len(pending) < s.batch {
			continue
		}
		out, act := s.script(n, pending)
		pending = nil
		switch act {
		case closeConn:
			return
		case silent:
			continue
		}
		if _, err := c.Write(out); err != nil || act == sendClose {
			return
		}
	}
}

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *fakeServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func ctxCeiling(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), ceiling)
	t.Cleanup(cancel)
	return ctx
}

func idOf(req Map) uint64 {
	v, _ := req.Get("id")
	return v.(uint64)
}

// waitUntil polls cond with a ceiling.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ceiling)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", ceiling, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAnswersOutOfOrderAreMatchedByID(t *testing.T) {
	// Three requests are answered together, in reverse order.
	srv := newFake(t, 3, func(_ int, reqs []Map) ([]byte, action) {
		var out []byte
		for i := len(reqs) - 1; i >= 0; i-- {
			out = append(out, okFrame(idOf(reqs[i]), healthWith(fmt.Sprint(idOf(reqs[i]))))...)
		}
		return out, send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	var calls []*Call
	for i := 0; i < 3; i++ {
		call, err := c.Send(ctx, OpHealth, nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call)
	}
	for _, call := range calls {
		raw, err := call.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		h, err := DecodeResult(OpHealth, raw)
		if err != nil {
			t.Fatal(err)
		}
		if h.(*Health).Version != fmt.Sprint(call.ID) {
			t.Fatalf("call %d got the answer to %s", call.ID, h.(*Health).Version)
		}
	}
	if srv.connCount() != 1 {
		t.Fatalf("%d connections", srv.connCount())
	}
}

func TestManyGoroutinesShareOneConnection(t *testing.T) {
	// Each request is answered from its own goroutine after a random pause,
	// so answers cross; each goroutine must get its own.
	var answerMu sync.Mutex
	var srvMu sync.Mutex
	var srv *fakeServer
	srvMu.Lock()
	srv = newFake(t, 1, func(n int, reqs []Map) ([]byte, action) {
		srvMu.Lock()
		srv := srv
		srvMu.Unlock()
		id := idOf(reqs[0])
		alias, _ := reqs[0].Get("args")
		a, _ := alias.(Map).Get("alias")
		go func() {
			time.Sleep(time.Duration(rand.Intn(3)) * time.Millisecond)
			answerMu.Lock()
			defer answerMu.Unlock()
			srv.mu.Lock()
			conn := srv.open[len(srv.open)-1]
			srv.mu.Unlock()
			rec := Map{{"alias", a}, {"fingerprint", "f"}, {"type", "card"}, {"masked", "x"}, {"created_at", 1},
				{"card", Map{{"bin", "411111"}, {"last4", "1111"}, {"exp_month", 1}, {"exp_year", 2030}, {"scheme", "visa"}, {"pan_removed", false}}},
				{"token_info", nil}}
			_, _ = conn.Write(okFrame(id, rec))
		}()
		return nil, silent
	})
	srvMu.Unlock()
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32*20)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				alias := fmt.Sprintf("alias-%d-%d", g, i)
				rec, err := c.AliasStatus(ctx, alias)
				if err != nil {
					errs <- err
					return
				}
				if rec.Alias != alias {
					errs <- fmt.Errorf("asked %s, got %s", alias, rec.Alias)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if srv.connCount() != 1 {
		t.Fatalf("%d connections", srv.connCount())
	}
}

func TestTimeoutThenTheLateAnswerIsDropped(t *testing.T) {
	// The first request is never answered; the second is answered with both
	// ids (the late answer to the first must not be taken for anything).
	srv := newFake(t, 1, func(_ int, reqs []Map) ([]byte, action) {
		if idOf(reqs[0]) == 1 {
			return nil, silent
		}
		return append(okFrame(1, healthWith("late")), okFrame(idOf(reqs[0]), healthResult)...), send
	})
	c := New(srv.path)
	defer c.Close()
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Health(short)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !IsRetryable(err) {
		t.Fatalf("want a retryable timeout, got %v", err)
	}
	h, err := c.Health(ctxCeiling(t))
	if err != nil || h.Version != "t" {
		t.Fatalf("%v %v", h, err)
	}
}

func TestClientTimeoutAppliesWithoutDeadline(t *testing.T) {
	srv := newFake(t, 1, func(int, []Map) ([]byte, action) { return nil, silent })
	c := New(srv.path, WithTimeout(100*time.Millisecond))
	defer c.Close()
	if _, err := c.Health(context.Background()); !errors.Is(err, ErrTimeout) {
		t.Fatalf("want a timeout, got %v", err)
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	srv := newFake(t, 1, func(int, []Map) ([]byte, action) { return nil, silent })
	c := New(srv.path)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitUntil(t, "the request to arrive", func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			return len(srv.requests) == 1
		})
		cancel()
	}()
	_, err := c.Health(ctx)
	if !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("want canceled, got %v", err)
	}
}

func TestReconnectAfterTheServerCloses(t *testing.T) {
	// Connection 1 closes without answering; connection 2 answers.
	srv := newFake(t, 1, func(n int, reqs []Map) ([]byte, action) {
		if n == 1 {
			return nil, closeConn
		}
		return okFrame(idOf(reqs[0]), healthResult), send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	_, err := c.Health(ctx)
	if !errors.Is(err, ErrConnectionLost) || !IsRetryable(err) {
		t.Fatalf("want connection lost, got %v", err)
	}
	if h, err := c.Health(ctx); err != nil || !h.Ready {
		t.Fatalf("after reconnect: %v", err)
	}
	if srv.connCount() != 2 {
		t.Fatalf("%d connections", srv.connCount())
	}
}

func TestAConnectionClosedWhileIdleIsReplacedWithoutError(t *testing.T) {
	// Every connection answers one request and is then closed by the server
	// (as vaultd does after its idle timeout): the next call just works.
	srv := newFake(t, 1, func(_ int, reqs []Map) ([]byte, action) {
		return okFrame(idOf(reqs[0]), healthResult), sendClose
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	for i := 0; i < 3; i++ {
		if _, err := c.Health(ctx); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		waitUntil(t, "the reader to see the end", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.cn.isDead()
		})
	}
	if srv.connCount() != 3 {
		t.Fatalf("%d connections", srv.connCount())
	}
}

func TestAnAnswerWithoutIDGoesToEveryWaiter(t *testing.T) {
	srv := newFake(t, 2, func(n int, reqs []Map) ([]byte, action) {
		return errFrame(nil, CodeOverloaded, true), send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	a, err := c.Send(ctx, OpHealth, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Send(ctx, OpAliasStatus, aliasArgs("x"))
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []*Call{a, b} {
		_, err := call.Wait(ctx)
		var se *Error
		if !errors.Is(err, ErrOverloaded) || !errors.As(err, &se) || !se.Retryable || se.RequestID != nil {
			t.Fatalf("want overloaded without id, got %v", err)
		}
	}
}

func TestServerErrorsAreTheirSentinels(t *testing.T) {
	srv := newFake(t, 1, func(_ int, reqs []Map) ([]byte, action) {
		op, _ := reqs[0].Get("op")
		if op == OpAliasStatus {
			return errFrame(idOf(reqs[0]), CodeAliasNotFound, false), send
		}
		return errFrame(idOf(reqs[0]), CodeBadRequest, false), send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	_, err := c.AliasStatus(ctx, "x")
	var se *Error
	if !errors.Is(err, ErrAliasNotFound) || errors.Is(err, ErrBadRequest) || !errors.As(err, &se) {
		t.Fatalf("%v", err)
	}
	if se.Code != CodeAliasNotFound || se.Retryable || se.RequestID == nil || *se.RequestID != 1 || IsRetryable(err) {
		t.Fatalf("%+v", se)
	}
	if _, err := c.Call(ctx, "anything", Map{{"k", 1}}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("%v", err)
	}
}

func TestCannotConnect(t *testing.T) {
	c := New("/nonexistent/vaultd.sock")
	defer c.Close()
	_, err := c.Health(ctxCeiling(t))
	if !errors.Is(err, ErrCannotConnect) || !IsRetryable(err) {
		t.Fatalf("%v", err)
	}
	if _, err := Dial(ctxCeiling(t), "/nonexistent/vaultd.sock"); !errors.Is(err, ErrCannotConnect) {
		t.Fatalf("%v", err)
	}
}

func TestRequestsAreWhatTheTypedMethodsSay(t *testing.T) {
	srv := newFake(t, 1, func(_ int, reqs []Map) ([]byte, action) {
		op, _ := reqs[0].Get("op")
		switch op {
		case OpPurgeDue:
			return okFrame(idOf(reqs[0]), Map{{"purged", 0}}), send
		case OpEvents:
			return okFrame(idOf(reqs[0]), Map{{"events", []any{}}}), send
		}
		return okFrame(idOf(reqs[0]), Map{{"kind", "pan"}, {"scheme", "visa"}, {"pan", testVisa}, {"exp_month", 12}, {"exp_year", 2030}, {"fallback_reason", "receiver_pan_only"}}), send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	if r, err := c.PurgeDue(ctx, ""); err != nil || r.Purged != 0 {
		t.Fatal(err)
	}
	if _, err := c.Events(ctx, PageArgs{After: Ptr(uint64(10)), Limit: 2}); err != nil {
		t.Fatal(err)
	}
	cred, err := c.Credentials(ctx, CredentialsArgs{Alias: "a", Tenant: "t-a", Accept: []string{AcceptPan}, AmountMinor: 1250, Currency: "CHF"})
	if err != nil {
		t.Fatal(err)
	}
	if pc, ok := cred.(*PanCredentials); !ok || pc.Pan.Expose() != testVisa || pc.FallbackReason != "receiver_pan_only" {
		t.Fatalf("%v", cred)
	}
	want := []Map{
		{{"v", 1}, {"id", 1}, {"op", "purge_due"}, {"args", Map{{"tenant", nil}}}},
		{{"v", 1}, {"id", 2}, {"op", "events"}, {"args", Map{{"after", 10}, {"limit", 2}}}},
		{{"v", 1}, {"id", 3}, {"op", "credentials"}, {"args", Map{{"alias", "a"}, {"tenant", "t-a"}, {"accept", []string{"pan"}},
			{"initiator", "customer"}, {"amount_minor", 1250}, {"currency", "CHF"}}}},
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for i, w := range want {
		b, _ := Marshal(w)
		if !bytes.Equal(srv.raw[i], b) {
			t.Errorf("request %d: %s", i, bytesDiff(srv.raw[i], b))
		}
	}
}

func TestARequestOverMaxFrameIsNotSent(t *testing.T) {
	srv := newFake(t, 1, func(_ int, reqs []Map) ([]byte, action) {
		return okFrame(idOf(reqs[0]), healthResult), send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	_, err := c.AliasStatus(ctx, strings.Repeat("a", DefaultMaxFrame))
	var se *Error
	if !errors.Is(err, ErrFrameTooLarge) || !errors.As(err, &se) || se.Retryable {
		t.Fatalf("%v", err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.requests) != 1 {
		t.Fatalf("%d requests reached the server", len(srv.requests))
	}
}

func TestAWriteToAServerThatStoppedReadingEndsWithTheContext(t *testing.T) {
	// This server answers one request and then reads nothing more: the
	// socket's buffers fill up and the write blocks until the context ends.
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			return
		}
		defer sc.Close()
		body, err := ReadFrame(sc, 1<<20)
		if err != nil {
			return
		}
		v, _ := Unmarshal(body)
		_, _ = sc.Write(okFrame(idOf(v.(Map)), healthResult))
		<-done
	}()
	c := New(path, WithMaxFrame(0))
	defer c.Close()
	if _, err := c.Health(ctxCeiling(t)); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("a", 8<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.AliasStatus(ctx, big)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !IsRetryable(err) {
		t.Fatalf("want a timeout, got %v", err)
	}
	// A half-written frame leaves the stream out of step: that connection
	// is not used again.
	c.mu.Lock()
	dead := c.cn.isDead()
	c.mu.Unlock()
	if !dead {
		t.Fatal("the connection with a half-written request is still in use")
	}
}

func TestGarbageFromTheServerIsAProtocolError(t *testing.T) {
	srv := newFake(t, 1, func(n int, reqs []Map) ([]byte, action) {
		if n == 1 {
			return Frame([]byte{0xc1}), send
		}
		return okFrame(idOf(reqs[0]), healthResult), send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	if _, err := c.Health(ctx); !errors.Is(err, ErrProtocol) || IsRetryable(err) {
		t.Fatalf("%v", err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("the next call opens a new connection: %v", err)
	}
}

func TestCloseEndsWaitingCalls(t *testing.T) {
	srv := newFake(t, 1, func(int, []Map) ([]byte, action) { return nil, silent })
	c := New(srv.path)
	ctx := ctxCeiling(t)
	call, err := c.Send(ctx, OpHealth, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := call.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("%v", err)
	}
	if _, err := c.Health(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("%v", err)
	}
}

func TestSocketFromEnv(t *testing.T) {
	t.Setenv("VAULTD_SOCKET", "/tmp/x.sock")
	if New("").Path() != "/tmp/x.sock" {
		t.Fatal("VAULTD_SOCKET")
	}
	os.Unsetenv("VAULTD_SOCKET")
	if New("").Path() != DefaultSocket {
		t.Fatal("default")
	}
}

func TestAnExpiredCallerDoesNotDisturbTheOthers(t *testing.T) {
	// The server answers requests two at a time. A call whose context has
	// already ended in between writes nothing and leaves the connection,
	// and the call in flight on it, alone.
	srv := newFake(t, 2, func(_ int, reqs []Map) ([]byte, action) {
		var out []byte
		for _, r := range reqs {
			out = append(out, okFrame(idOf(r), healthWith(fmt.Sprint(idOf(r))))...)
		}
		return out, send
	})
	c := New(srv.path)
	defer c.Close()
	ctx := ctxCeiling(t)
	first, err := c.Send(ctx, OpHealth, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Health(gone); !errors.Is(err, ErrCanceled) {
		t.Fatalf("want canceled, got %v", err)
	}
	third, err := c.Send(ctx, OpHealth, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []*Call{first, third} {
		raw, err := call.Wait(ctx)
		if err != nil {
			t.Fatalf("call %d: %v", call.ID, err)
		}
		if v, _ := raw.(Map).Get("version"); v != fmt.Sprint(call.ID) {
			t.Fatalf("call %d got %v", call.ID, v)
		}
	}
	if srv.connCount() != 1 {
		t.Fatalf("%d connections", srv.connCount())
	}
}
