package vaultd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Client is a pipelining client of vaultd over one Unix socket connection.
// It is safe for concurrent use by many goroutines: each call writes its
// request at once and waits for the answer with its id, whatever the order
// the server answers in.
//
// When the server closes the connection (idle timeout, restart,
// frame_too_large), calls still waiting fail with ErrConnectionLost
// (retryable) and the next call opens a new connection; a request written
// to a connection the server had already closed is sent once more.
type Client struct {
	path           string
	timeout        time.Duration
	connectTimeout time.Duration
	maxFrame       int
	dial           func(ctx context.Context, path string) (net.Conn, error)

	ids    atomic.Uint64
	mu     sync.Mutex
	cn     *conn
	closed bool
}

// Option configures a Client.
type Option func(*Client)

// WithTimeout bounds a call whose context has no deadline (default 30 s;
// 0: no bound).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithConnectTimeout bounds connecting (default 5 s; the call's context
// bounds it too).
func WithConnectTimeout(d time.Duration) Option { return func(c *Client) { c.connectTimeout = d } }

// WithMaxFrame refuses to send a request whose body is longer than n bytes
// (default DefaultMaxFrame, PROTOCOL.md's default max_frame), with an
// *Error of code frame_too_large; 0 sends anything.
func WithMaxFrame(n int) Option { return func(c *Client) { c.maxFrame = n } }

// WithDialer replaces how a connection is opened (default: a Unix socket
// at the client's path).
func WithDialer(dial func(ctx context.Context, path string) (net.Conn, error)) Option {
	return func(c *Client) { c.dial = dial }
}

// New returns a client of the socket at path ("" is $VAULTD_SOCKET, else
// DefaultSocket). It connects at its first call.
func New(path string, opts ...Option) *Client {
	if path == "" {
		path = SocketFromEnv()
	}
	c := &Client{
		path:           path,
		timeout:        30 * time.Second,
		connectTimeout: 5 * time.Second,
		maxFrame:       DefaultMaxFrame,
	}
	for _, o := range opts {
		o(c)
	}
	if c.dial == nil {
		c.dial = func(ctx context.Context, path string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	}
	return c
}

// Dial is New, then connects at once.
func Dial(ctx context.Context, path string, opts ...Option) (*Client, error) {
	c := New(path, opts...)
	if _, err := c.connection(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Path is the socket's path.
func (c *Client) Path() string { return c.path }

// Close closes the connection; calls still waiting fail with ErrClosed and
// later calls too.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	cn := c.cn
	c.cn = nil
	c.mu.Unlock()
	if cn != nil {
		cn.kill(clientErr(ErrClosed, "client is closed", nil))
		<-cn.readerDone
	}
	return nil
}

func (c *Client) connection(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, clientErr(ErrClosed, "client is closed", nil)
	}
	if c.cn != nil && !c.cn.isDead() {
		return c.cn, nil
	}
	dctx := ctx
	if c.connectTimeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, c.connectTimeout)
		defer cancel()
	}
	nc, err := c.dial(dctx, c.path)
	if err != nil {
		if ctx.Err() != nil {
			return nil, contextErr("connect", ctx.Err())
		}
		return nil, clientErr(ErrCannotConnect, "cannot connect to "+c.path+": "+errText(err), err)
	}
	c.cn = newConn(nc)
	return c.cn, nil
}

// errText is a system error's text without the operation and address.
func errText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// withDefault gives ctx the client's timeout when it has no deadline.
func (c *Client) withDefault(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Call is a request in flight; Wait returns its answer.
type Call struct {
	Op string
	ID uint64
	cn *conn
	ch chan result
	c  *Client
}

type result struct {
	v   any
	err error
}

// Send writes one request and returns without waiting for its answer:
// several Sends from one goroutine are pipelined on the connection. The
// context bounds the connect and the write (the client's timeout when it
// has no deadline).
func (c *Client) Send(ctx context.Context, op string, args Map) (*Call, error) {
	ctx, cancel := c.withDefault(ctx)
	defer cancel()
	id := c.ids.Add(1)
	framed, err := EncodeRequest(id, op, args)
	if err != nil {
		return nil, err
	}
	if c.maxFrame > 0 && len(framed)-4 > c.maxFrame {
		return nil, &Error{
			Code:      CodeFrameTooLarge,
			Message:   fmt.Sprintf("request frame longer than max_frame (%d bytes); not sent", c.maxFrame),
			Retryable: false,
		}
	}
	for attempt := 0; ; attempt++ {
		cn, err := c.connection(ctx)
		if err != nil {
			return nil, err
		}
		call := &Call{Op: op, ID: id, cn: cn, ch: make(chan result, 1), c: c}
		if err := cn.register(call); err != nil {
			// It ended between the look and the registration: nothing was
			// written; take a new one.
			if attempt == 0 {
				continue
			}
			return nil, err
		}
		written, werr := cn.write(ctx, framed)
		if werr == nil {
			return call, nil
		}
		var ne net.Error
		if ctx.Err() != nil || (errors.As(werr, &ne) && ne.Timeout()) {
			// The context ended (the write deadline is the context's). A
			// frame cut short leaves the stream out of step, so that
			// connection is closed (its other calls fail with
			// ErrConnectionLost); one not begun leaves it as it was.
			cn.forget(id)
			if written > 0 {
				cn.kill(clientErr(ErrConnectionLost, "a request was cut short by its caller's deadline", nil))
			}
			if ctx.Err() != nil {
				return nil, contextErr(op, ctx.Err())
			}
			return nil, clientErr(ErrTimeout, "could not write "+op+" before the deadline", context.DeadlineExceeded)
		}
		// The server closed the connection (EPIPE, ECONNRESET). Its reader
		// sees the end: an answer it read first (frame_too_large, say) is
		// this call's outcome; with none, the server closed before reading
		// the request, and it is sent once more on a new connection.
		select {
		case <-cn.readerDone:
		case <-ctx.Done():
			cn.kill(clientErr(ErrConnectionLost, "connection failed", nil))
			return nil, contextErr(op, ctx.Err())
		}
		select {
		case r := <-call.ch:
			if !errors.Is(r.err, ErrConnectionLost) {
				call.ch <- r // a real answer came first
				return call, nil
			}
		default:
		}
		cn.kill(clientErr(ErrConnectionLost, "connection closed by the server", nil))
		if attempt > 0 {
			return nil, clientErr(ErrConnectionLost, "connection closed by the server", werr)
		}
	}
}

// Wait returns the raw result of the call (a Map for every op of the
// protocol), or the server's *Error, or the client's *ClientError. When ctx
// ends first the call is forgotten: its late answer is dropped.
func (call *Call) Wait(ctx context.Context) (any, error) {
	ctx, cancel := call.c.withDefault(ctx)
	defer cancel()
	select {
	case r := <-call.ch:
		return r.v, r.err
	case <-ctx.Done():
		call.cn.forget(call.ID)
		select {
		case r := <-call.ch: // answered meanwhile
			return r.v, r.err
		default:
		}
		return nil, contextErr(call.Op, ctx.Err())
	}
}

// Call sends any op by name with args (nil: none) and returns its raw
// result (see Wait).
func (c *Client) Call(ctx context.Context, op string, args Map) (any, error) {
	ctx, cancel := c.withDefault(ctx)
	defer cancel()
	call, err := c.Send(ctx, op, args)
	if err != nil {
		return nil, err
	}
	return call.Wait(ctx)
}

// callTyped is Call, then the op's typed result.
func callTyped[T any](ctx context.Context, c *Client, op string, args Map) (*T, error) {
	raw, err := c.Call(ctx, op, args)
	if err != nil {
		return nil, err
	}
	var out T
	if err := decodeInto(&out, raw, "result"); err != nil {
		return nil, err
	}
	return &out, nil
}

// ---------------------------------------------------------------- conn

// conn is one connection and its reader goroutine.
type conn struct {
	nc         net.Conn
	wmu        sync.Mutex
	mu         sync.Mutex
	pending    map[uint64]*Call
	dead       error
	readerDone chan struct{}
}

func newConn(nc net.Conn) *conn {
	cn := &conn{nc: nc, pending: map[uint64]*Call{}, readerDone: make(chan struct{})}
	go cn.readLoop()
	return cn
}

func (cn *conn) isDead() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.dead != nil
}

func (cn *conn) register(call *Call) error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.dead != nil {
		return cn.dead
	}
	cn.pending[call.ID] = call
	return nil
}

func (cn *conn) forget(id uint64) {
	cn.mu.Lock()
	delete(cn.pending, id)
	cn.mu.Unlock()
}

// write writes one whole frame; ctx's deadline (or its cancellation)
// interrupts a write to a server that stopped reading.
func (cn *conn) write(ctx context.Context, framed []byte) (int, error) {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	deadline, _ := ctx.Deadline()
	if err := cn.nc.SetWriteDeadline(deadline); err != nil {
		return 0, err
	}
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			_ = cn.nc.SetWriteDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	n, err := cn.nc.Write(framed)
	close(stop)
	<-watched
	return n, err
}

func (cn *conn) kill(why error) {
	cn.mu.Lock()
	if cn.dead == nil {
		cn.dead = why
	}
	calls := cn.pending
	cn.pending = map[uint64]*Call{}
	cn.mu.Unlock()
	for _, call := range calls {
		call.finish(nil, why)
	}
	_ = cn.nc.Close()
}

func (call *Call) finish(v any, err error) {
	select {
	case call.ch <- result{v, err}:
	default:
	}
}

func (cn *conn) dispatch(r *Response) {
	var targets []*Call
	cn.mu.Lock()
	if r.ID != nil {
		if call, ok := cn.pending[*r.ID]; ok {
			delete(cn.pending, *r.ID)
			targets = append(targets, call)
		}
	} else {
		// No id (an envelope the server could not read, a frame too large,
		// a refused connection): every waiter gets it, as the Rust client
		// does.
		for _, call := range cn.pending {
			targets = append(targets, call)
		}
		cn.pending = map[uint64]*Call{}
	}
	cn.mu.Unlock()
	for _, call := range targets {
		if r.OK {
			call.finish(r.Result, nil)
		} else {
			call.finish(nil, r.Err)
		}
	}
}

func (cn *conn) readLoop() {
	defer close(cn.readerDone)
	br := bufio.NewReaderSize(cn.nc, 64<<10)
	var why error
	for {
		body, err := ReadFrame(br, MaxResponseFrame)
		if err != nil {
			var tl *FrameLengthError
			switch {
			case errors.As(err, &tl):
				why = protoErr("bad frame length from the server")
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				why = clientErr(ErrConnectionLost, "connection closed by the server", nil)
			default:
				why = clientErr(ErrConnectionLost, "connection failed: "+errText(err), err)
			}
			break
		}
		r, err := DecodeResponse(body)
		for i := range body {
			body[i] = 0
		}
		if err != nil {
			why = err
			break
		}
		cn.dispatch(r)
	}
	cn.kill(why)
}

// FrameLengthError is a frame header ReadFrame refuses: a zero length (the
// peer asks to close) or one over its limit (nothing allocated, the body
// not read).
type FrameLengthError struct {
	Length uint32
	Max    uint32
}

func (e *FrameLengthError) Error() string {
	if e.Length == 0 {
		return "zero frame length"
	}
	return fmt.Sprintf("frame length %d over %d", e.Length, e.Max)
}

// ReadFrame reads one frame and returns its body. At the end of the stream
// between frames it returns io.EOF; inside a header or a body,
// io.ErrUnexpectedEOF; a zero length or one over max, a *FrameLengthError.
func ReadFrame(r io.Reader, max uint32) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > max {
		return nil, &FrameLengthError{Length: n, Max: max}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}
