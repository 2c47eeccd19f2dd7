package vaultd

// End to end against a real vaultd (SoftHSM2 token, scheme-sim on
// 127.0.0.1), started by the test; the process runs as root so other uids
// can be tried, as in the Rust and Python end-to-end tests. One vaultd
// serves every subtest; the last one checks that no card data reached its
// log.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	e2eVisa       = "4111111111111111"
	e2eMastercard = "5555555555554444"
	e2eTenant     = "t-a"
)

// testPan is a Luhn-valid number of the 411111 test range, serial n.
func testPan(n int) string {
	body := fmt.Sprintf("411111%09d", n)
	for d := '0'; d <= '9'; d++ {
		if LuhnValid(body + string(d)) {
			return body + string(d)
		}
	}
	panic("no check digit")
}

// e2e is what the subtests share.
type e2e struct {
	v *vault
	c *Client
	// secrets: every PAN used and every token number and cryptogram seen,
	// which the daemon's log must not hold.
	mu      sync.Mutex
	secrets map[string]bool
}

func (e *e2e) saw(s ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, x := range s {
		if x != "" {
			e.secrets[x] = true
		}
	}
}

func (e *e2e) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), e2eCeiling)
	t.Cleanup(cancel)
	return ctx
}

func (e *e2e) tokenize(t *testing.T, pan string, m, y int, txn string) *TokenizeResult {
	t.Helper()
	e.saw(pan)
	r, err := e.c.Tokenize(e.ctx(t), TokenizeArgs{Pan: NewPan(pan), ExpMonth: m, ExpYear: y, TransactionID: txn})
	if err != nil {
		t.Fatalf("tokenize %s: %v", MaskDigits(pan), err)
	}
	return r
}

func (e *e2e) waitActive(t *testing.T, alias string) *AliasRecord {
	t.Helper()
	var rec *AliasRecord
	waitFor(t, "the network token to become active", func() (bool, error) {
		r, err := e.c.AliasStatus(e.ctx(t), alias)
		if err != nil {
			return false, err
		}
		rec = r
		return r.TokenInfo != nil && r.TokenInfo.Status == "active", nil
	})
	return rec
}

func wantErr(t *testing.T, err error, sentinel *Error) *Error {
	t.Helper()
	var se *Error
	if !errors.Is(err, sentinel) || !errors.As(err, &se) {
		t.Fatalf("want %s, got %v", sentinel.Code, err)
	}
	if se.Retryable != sentinel.Retryable || IsRetryable(err) != sentinel.Retryable {
		t.Fatalf("%s: retryable %v", se.Code, se.Retryable)
	}
	return se
}

func TestE2E(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the end-to-end tests run as root (scripts/test, clients/go/run-tests)")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	v := startVault(t)
	defer v.stop()
	e := &e2e{v: v, c: v.client(), secrets: map[string]bool{}}
	defer e.c.Close()

	t.Run("health", e.health)
	t.Run("tokenize_alias_status_and_convergence", e.tokenizeAndStatus)
	t.Run("transaction_tokens", e.transactionTokens)
	t.Run("credentials_as_forwarder", e.credentials)
	t.Run("admin_ops_and_the_pan_lifecycle", e.adminAndLifecycle)
	t.Run("error_paths", e.errorPaths)
	t.Run("roles_by_uid", e.rolesByUID)
	t.Run("envelope_errors_on_the_raw_socket", e.envelopeErrors)
	t.Run("frame_too_large_then_reconnect", e.frameTooLargeThenReconnect)
	t.Run("pipelining_and_goroutines", e.pipelining)
	t.Run("error_vectors_are_what_vaultd_answers", e.errorVectors)
	t.Run("framing_vectors_against_vaultd", e.framingVectors)
	t.Run("op_vectors_have_the_shape_vaultd_answers", e.opShapes)
	t.Run("example_service", e.exampleService)
	// Last: every PAN the tests used, and every network token number and
	// cryptogram they got back.
	t.Run("no_card_data_in_the_daemon_log", e.noCardDataInLog)
}

func (e *e2e) health(t *testing.T) {
	h, err := e.c.Health(e.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !h.Ready || h.HSM != "ok" || h.Store != "ok" || h.Version == "" {
		t.Fatalf("%+v", h)
	}
}

func (e *e2e) tokenizeAndStatus(t *testing.T) {
	r := e.tokenize(t, e2eVisa, 12, 2030, "")
	if len(r.Alias) != 32 || r.Type != "card" || r.Masked != "411111xxxxxx1111" {
		t.Fatalf("alias %q type %q masked %q", r.Alias, r.Type, r.Masked)
	}
	if r.Card.BIN != "411111" || r.Card.Last4 != "1111" || r.Card.Scheme != "visa" || r.Card.PanRemoved {
		t.Fatalf("%+v", r.Card)
	}
	if r.TokenInfo == nil || (r.TokenInfo.Status != "pending" && r.TokenInfo.Status != "active") {
		t.Fatalf("token_info %+v", r.TokenInfo)
	}
	again := e.tokenize(t, e2eVisa, 12, 2030, "")
	if again.Created || again.Alias != r.Alias || again.Fingerprint != r.Fingerprint {
		t.Fatal("tokenize is not convergent")
	}
	rec := e.waitActive(t, r.Alias)
	ti := rec.TokenInfo
	if ti.Scheme != "visa" || ti.TokenRef == nil || ti.TokenLast4 == nil || len(*ti.TokenLast4) != 4 ||
		ti.TokenRequestorID == nil || *ti.TokenRequestorID != "40010030273" {
		t.Fatalf("%+v", ti)
	}
	if s := fmt.Sprintf("%v %+v %#v", rec, rec, rec); strings.Contains(s, e2eVisa) {
		t.Fatal("a record printed the PAN")
	}
}

func (e *e2e) transactionTokens(t *testing.T) {
	r := e.tokenize(t, testPan(1), 11, 2031, "go-txn-0001")
	got, err := e.c.TransactionTokens(e.ctx(t), "go-txn-0001")
	if err != nil {
		t.Fatal(err)
	}
	if got.Alias != r.Alias || got.Card.ExpMonth != 11 {
		t.Fatalf("%s %d", got.Alias, got.Card.ExpMonth)
	}
	_, err = e.c.TransactionTokens(e.ctx(t), "go-txn-unknown")
	se := wantErr(t, err, ErrTransactionNotFound)
	if se.Code != CodeTransactionNotFound || se.RequestID == nil {
		t.Fatalf("%+v", se)
	}
}

func (e *e2e) credentials(t *testing.T) {
	ctx := e.ctx(t)
	alias := e.tokenize(t, e2eVisa, 12, 2030, "").Alias
	e.waitActive(t, alias)
	args := CredentialsArgs{Alias: alias, Tenant: e2eTenant, Accept: []string{AcceptNetworkToken, AcceptPan},
		Initiator: InitiatorCustomer, AmountMinor: 1250, Currency: "CHF"}
	cred, err := e.c.Credentials(ctx, args)
	if err != nil {
		t.Fatal(err)
	}
	cit, ok := cred.(*NetworkTokenCredentials)
	if !ok {
		t.Fatalf("want a network token, got a %s", cred.CredentialKind())
	}
	if cit.Kind != "network_token" || cit.Scheme != "visa" || cit.NetworkToken.Expose() == e2eVisa || cit.NetworkToken.Len() < 12 {
		t.Fatalf("kind %s scheme %s", cit.Kind, cit.Scheme)
	}
	if cit.Cryptogram == nil || cit.Cryptogram.Expose() == "" || cit.ECI == nil || *cit.ECI != "07" || cit.ATC == nil {
		t.Fatal("a customer-initiated payment needs a cryptogram, ECI 07 and an ATC")
	}
	e.saw(cit.NetworkToken.Expose(), cit.Cryptogram.Expose())
	text := fmt.Sprintf("%v %+v %#v %s", cit, cit, cit, cit.NetworkToken)
	if strings.Contains(text, cit.NetworkToken.Expose()) || strings.Contains(text, cit.Cryptogram.Expose()) {
		t.Fatal("credentials printed the token number or the cryptogram")
	}
	args3ds := args
	args3ds.Accept = []string{AcceptNetworkToken}
	args3ds.AuthenticatedECI = "05"
	cred, err = e.c.Credentials(ctx, args3ds)
	if err != nil {
		t.Fatal(err)
	}
	threeDS := cred.(*NetworkTokenCredentials)
	e.saw(threeDS.Cryptogram.Expose())
	if *threeDS.ECI != "05" || *threeDS.ATC == *cit.ATC {
		t.Fatal("3-D Secure ECI not passed through, or the ATC repeated")
	}
	mitArgs := args3ds
	mitArgs.AuthenticatedECI = ""
	mitArgs.Initiator = InitiatorMerchant
	cred, err = e.c.Credentials(ctx, mitArgs)
	if err != nil {
		t.Fatal(err)
	}
	mit := cred.(*NetworkTokenCredentials)
	if mit.Cryptogram != nil || mit.ECI != nil || mit.ATC != nil {
		t.Fatal("a merchant-initiated payment gets no cryptogram, ECI or ATC")
	}
	panArgs := args
	panArgs.Accept = []string{AcceptPan}
	cred, err = e.c.Credentials(ctx, panArgs)
	if err != nil {
		t.Fatal(err)
	}
	pc, ok := cred.(*PanCredentials)
	if !ok || !pc.Pan.Equal(NewPan(e2eVisa)) || pc.FallbackReason != "receiver_pan_only" || pc.CardScheme() != "visa" {
		t.Fatal("PAN credentials")
	}
	if strings.Contains(fmt.Sprintf("%v %+v %#v", pc, pc, pc), e2eVisa) {
		t.Fatal("PAN credentials printed the PAN")
	}
}

func (e *e2e) adminAndLifecycle(t *testing.T) {
	ctx := e.ctx(t)
	s, err := e.c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Aliases < 1 || s.Schemes["visa"].P99MS < s.Schemes["visa"].P50MS {
		t.Fatalf("stats: %d aliases", s.Aliases)
	}
	if _, ok := s.Schemes["visa"]; !ok {
		t.Fatal("no visa in stats.schemes")
	}
	paused, err := e.c.SchemePause(ctx, "visa")
	if err != nil || !paused.Paused || paused.Scheme != "visa" {
		t.Fatalf("scheme_pause: %v", err)
	}
	var r *TokenizeResult
	func() {
		defer func() {
			res, err := e.c.SchemeResume(ctx, "visa")
			if err != nil || res.Paused {
				t.Fatalf("scheme_resume: %v", err)
			}
		}()
		r = e.tokenize(t, testPan(2), 12, 2030, "")
		if r.TokenInfo == nil || r.TokenInfo.Status != "pending" {
			t.Fatalf("token_info %+v", r.TokenInfo)
		}
		// No active token: the PAN is the only credential.
		_, err := e.c.RemovePan(ctx, r.Alias)
		wantErr(t, err, ErrPanRequired)
		q, err := e.c.QueueList(ctx, QueueListArgs{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, j := range q.Jobs {
			found = found || j.Alias == r.Alias
		}
		if !found {
			t.Fatal("the pending job is not in queue_list")
		}
	}()
	e.waitActive(t, r.Alias)
	removed, err := e.c.RemovePan(ctx, r.Alias)
	if err != nil || !removed.Card.PanRemoved {
		t.Fatalf("remove_pan: %v", err)
	}
	_, err = e.c.Credentials(ctx, CredentialsArgs{Alias: r.Alias, Tenant: e2eTenant, Accept: []string{AcceptPan}, AmountMinor: 100, Currency: "CHF"})
	wantErr(t, err, ErrNoUsableCredential)
	cred, err := e.c.Credentials(ctx, CredentialsArgs{Alias: r.Alias, Tenant: e2eTenant, Initiator: InitiatorMerchant, AmountMinor: 100, Currency: "CHF"})
	if err != nil || cred.CredentialKind() != "network_token" {
		t.Fatalf("credentials after remove_pan: %v", err)
	}
	e.saw(cred.(*NetworkTokenCredentials).NetworkToken.Expose())
	if p, err := e.c.Provision(ctx, r.Alias); err != nil || p.Alias != r.Alias {
		t.Fatalf("provision: %v", err)
	}
	if d, err := e.c.DeleteAlias(ctx, r.Alias); err != nil || !d.Deleted {
		t.Fatalf("delete_alias: %v", err)
	}
	_, err = e.c.AliasStatus(ctx, r.Alias)
	wantErr(t, err, ErrAliasNotFound)
	a, err := e.c.Audit(ctx, PageArgs{Limit: 1000})
	if err != nil || !a.ChainOK {
		t.Fatalf("audit: %v", err)
	}
	ops := map[string]bool{}
	for _, rec := range a.Records {
		ops[rec.Op] = true
	}
	for _, op := range []string{"tokenize", "credentials", "remove_pan"} {
		if !ops[op] {
			t.Errorf("no %s in the audit log", op)
		}
	}
	if _, err := e.c.Events(ctx, PageArgs{Limit: 10}); err != nil {
		t.Fatal(err)
	}
	if ret, err := e.c.Retention(ctx); err != nil || len(ret.Tenants) == 0 {
		t.Fatalf("retention: %v", err)
	}
}

func (e *e2e) errorPaths(t *testing.T) {
	ctx := e.ctx(t)
	tok := func(pan string, m, y int) error {
		e.saw(pan)
		_, err := e.c.Tokenize(ctx, TokenizeArgs{Pan: NewPan(pan), ExpMonth: m, ExpYear: y})
		return err
	}
	err := tok("4111111111111112", 12, 2030)
	wantErr(t, err, ErrInvalidPan)
	if strings.Contains(err.Error(), "4111111111111112") {
		t.Fatal("the error names the number")
	}
	wantErr(t, tok("4111 1111 1111 1111", 12, 2030), ErrInvalidPan)
	wantErr(t, tok(e2eVisa, 13, 2030), ErrInvalidExpiry)
	wantErr(t, tok(e2eVisa, 1, 2001), ErrInvalidExpiry)
	_, err = e.c.AliasStatus(ctx, strings.Repeat("A", 32))
	wantErr(t, err, ErrAliasNotFound)
	// A key the op does not take is named, never its value.
	_, err = e.c.Call(ctx, OpTokenize, Map{{"pan", NewPan(e2eVisa)}, {"exp_month", 12}, {"exp_year", 2030}, {"cvc", "123"}})
	se := wantErr(t, err, ErrBadRequest)
	if !strings.Contains(se.Message, "cvc") || strings.Contains(se.Message, e2eVisa) || strings.Contains(se.Message, "123") {
		t.Fatal("bad_request must name the key and nothing of the values")
	}
	_, err = e.c.Call(ctx, OpTokenize, Map{{"pan", NewPan(e2eVisa)}, {"exp_month", "12"}, {"exp_year", 2030}})
	if se := wantErr(t, err, ErrBadRequest); !strings.Contains(se.Message, "exp_month") {
		t.Fatal("bad_request must name exp_month")
	}
	_, err = e.c.Call(ctx, "frobnicate", nil)
	wantErr(t, err, ErrUnknownOp)
	// The connection survived every refusal.
	if h, err := e.c.Health(ctx); err != nil || !h.Ready {
		t.Fatal(err)
	}
}

func (e *e2e) rolesByUID(t *testing.T) {
	ctx := e.ctx(t)
	merchant := e.v.client(WithDialer(dialAs(merchantUID)))
	defer merchant.Close()
	_, err := merchant.Stats(ctx)
	wantErr(t, err, ErrForbidden)
	_, err = merchant.Credentials(ctx, CredentialsArgs{Alias: strings.Repeat("A", 32), Tenant: e2eTenant, Accept: []string{AcceptPan}, AmountMinor: 1, Currency: "CHF"})
	wantErr(t, err, ErrForbidden)
	if h, err := merchant.Health(ctx); err != nil || !h.Ready {
		t.Fatalf("a merchant may call health: %v", err)
	}
	unknown := e.v.client(WithDialer(dialAs(unknownUID)))
	defer unknown.Close()
	_, err = unknown.Health(ctx)
	wantErr(t, err, ErrUnauthenticated)
}

func (e *e2e) envelopeErrors(t *testing.T) {
	decode := func(f []byte) *Response {
		r, err := DecodeResponse(f[4:])
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// v 2.
	body, _ := Marshal(Map{{"v", 2}, {"id", 9}, {"op", "health"}})
	frames, _ := rawFrames(t, plainDial, e.v.socket, Frame(body), 1, false)
	if r := decode(frames[0]); r.ID == nil || *r.ID != 9 || !errors.Is(r.Err, ErrUnsupportedVersion) {
		t.Fatalf("v 2: %v", r.Err)
	}
	// Not MessagePack: id nil, and the connection stays open for the next
	// frame (answered in any order).
	health, _ := EncodeRequest(5, OpHealth, nil)
	frames, _ = rawFrames(t, plainDial, e.v.socket, append(Frame([]byte{0xc1}), health...), 2, false)
	seen := map[string]bool{}
	for _, f := range frames {
		r := decode(f)
		switch {
		case r.ID == nil && errors.Is(r.Err, ErrBadRequest):
			seen["bad_request"] = true
		case r.ID != nil && *r.ID == 5 && r.OK:
			seen["health"] = true
		}
	}
	if !seen["bad_request"] || !seen["health"] {
		t.Fatalf("answers: %v", seen)
	}
	// Over max_frame: frame_too_large with id nil, then the server closes.
	hdr := []byte{0, 0x10, 0, 1} // DefaultMaxFrame + 1
	frames, closed := rawFrames(t, plainDial, e.v.socket, hdr, 1, true)
	if r := decode(frames[0]); r.ID != nil || !errors.Is(r.Err, ErrFrameTooLarge) || !closed {
		t.Fatalf("frame_too_large: %v, closed %v", r.Err, closed)
	}
	// A zero length: the server closes without an answer.
	frames, closed = rawFrames(t, plainDial, e.v.socket, []byte{0, 0, 0, 0}, 0, true)
	if len(frames) != 0 || !closed {
		t.Fatal("zero length")
	}
}

func (e *e2e) frameTooLargeThenReconnect(t *testing.T) {
	c := e.v.client(WithMaxFrame(0))
	defer c.Close()
	ctx := e.ctx(t)
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := c.AliasStatus(ctx, strings.Repeat("A", DefaultMaxFrame+10))
	wantErr(t, err, ErrFrameTooLarge)
	// The server closed that connection; the next call opens another.
	waitFor(t, "a call on a new connection", func() (bool, error) {
		h, err := c.Health(ctx)
		return err == nil && h.Ready, err
	})
	// Without WithMaxFrame(0) the client refuses to send it at all.
	_, err = e.c.AliasStatus(ctx, strings.Repeat("A", DefaultMaxFrame+10))
	wantErr(t, err, ErrFrameTooLarge)
}

func (e *e2e) pipelining(t *testing.T) {
	ctx := e.ctx(t)
	var calls []*Call
	var pans []string
	for n := 10; n < 20; n++ {
		pans = append(pans, testPan(n))
		e.saw(testPan(n))
		call, err := e.c.Send(ctx, OpTokenize, TokenizeArgs{Pan: NewPan(testPan(n)), ExpMonth: 12, ExpYear: 2030}.Map())
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call)
	}
	var aliases []string
	seen := map[string]bool{}
	for _, call := range calls {
		raw, err := call.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeResult(OpTokenize, raw)
		if err != nil {
			t.Fatal(err)
		}
		alias := r.(*TokenizeResult).Alias
		aliases = append(aliases, alias)
		seen[alias] = true
	}
	if len(seen) != len(pans) {
		t.Fatalf("%d aliases for %d cards", len(seen), len(pans))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, a := range aliases {
				rec, err := e.c.AliasStatus(ctx, a)
				if err != nil {
					errs <- err
					return
				}
				if rec.Alias != a {
					errs <- fmt.Errorf("asked %s, got %s", a, rec.Alias)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Error vectors whose cause this daemon reproduces as they are: the
// request frame is sent byte for byte and the answer must be the vector's
// response, byte for byte (message included). The others need another
// tenant set-up or a fault (network_token_required, rate_limited,
// unavailable, ...), or name synthetic aliases this daemon does not have
// (pan_required, no_usable_credential: it answers alias_not_found).
var sameAnswer = map[string]int{
	"bad_request/unknown_arg_key": 0,
	"bad_request/wrong_type":      0,
	"bad_request/missing_v":       0,
	"bad_request/not_msgpack":     0,
	"bad_request/not_a_map":       0,
	"unsupported_version":         0,
	"unknown_op":                  0,
	"frame_too_large":             0,
	"invalid_pan/luhn":            0,
	"invalid_pan/spaces":          0,
	"invalid_expiry":              0,
	"alias_not_found":             0,
	"transaction_not_found":       0,
	"forbidden":                   merchantUID,
	"unauthenticated":             unknownUID,
}

func (e *e2e) errorVectors(t *testing.T) {
	vectors := map[string]Map{}
	for _, v := range loadVectors(t, "errors.json") {
		vectors[str(v, "name")] = v
	}
	names := make([]string, 0, len(sameAnswer))
	for n := range sameAnswer {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		name := name
		t.Run(name, func(t *testing.T) {
			v, ok := vectors[name]
			if !ok {
				t.Fatalf("no vector %s", name)
			}
			req := frameOf(t, v, "request")
			want := frameOf(t, v, "response").Frame
			dial := plainDial
			if uid := sameAnswer[name]; uid != 0 {
				dial = dialAs(uid)
			}
			wantClosed := str(v, "connection") == "closed"
			got, closed := rawFrames(t, dial, e.v.socket, req.Frame, 1, wantClosed)
			if closed != wantClosed {
				t.Fatalf("connection closed %v, want %v", closed, wantClosed)
			}
			if len(got) != 1 || !bytes.Equal(got[0], want) {
				t.Fatalf("vaultd gave %d answers; the first differs from the vector: %s", len(got), bytesDiff(append(got, nil)[0], want))
			}
		})
	}
}

func (e *e2e) framingVectors(t *testing.T) {
	for _, v := range loadVectors(t, "framing.json") {
		v := v
		maxv, _ := v.Get("max_frame")
		if maxv.(uint64) != DefaultMaxFrame {
			continue
		}
		t.Run(str(v, "name"), func(t *testing.T) {
			data := mustHex(t, str(v, "bytes"))
			readsV, _ := v.Get("reads")
			requests, truncated := 0, false
			for _, r := range readsV.([]any) {
				if strings.HasPrefix(r.(string), "frame:") {
					requests++
				}
				truncated = truncated || r == "truncated"
			}
			wantClosed := str(v, "connection") == "closed"
			if truncated && !wantClosed {
				return // the server waits for the rest of the frame
			}
			if truncated {
				// The client ends the stream inside a frame: half-close and
				// expect the server to close without an answer.
				conn, err := net.DialTimeout("unix", e.v.socket, e2eCeiling)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(e2eCeiling))
				if _, err := conn.Write(data); err != nil {
					t.Fatal(err)
				}
				_ = conn.(*net.UnixConn).CloseWrite()
				buf := make([]byte, 64)
				if n, err := conn.Read(buf); n != 0 || err == nil {
					t.Fatalf("the server answered %d bytes (%v)", n, err)
				}
				return
			}
			resp := frameOf(t, v, "response")
			want := requests
			if resp != nil && want == 0 {
				want = 1
			}
			got, closed := rawFrames(t, plainDial, e.v.socket, data, want, wantClosed)
			if closed != wantClosed {
				t.Fatalf("connection closed %v, want %v", closed, wantClosed)
			}
			if resp != nil {
				if len(got) != 1 || !bytes.Equal(got[0], resp.Frame) {
					t.Fatalf("%d answers; the first differs: %s", len(got), bytesDiff(append(got, nil)[0], resp.Frame))
				}
				return
			}
			if len(got) != requests {
				t.Fatalf("%d answers for %d requests", len(got), requests)
			}
			for _, f := range got {
				if r, err := DecodeResponse(f[4:]); err != nil || !r.OK {
					t.Fatalf("answer: %v", err)
				}
			}
		})
	}
}

// sameShape checks that the vector's value and the daemon's have the same
// keys in the same order, recursively (values differ; maps keyed by data,
// like stats.tokens, compare their first entry's shape).
func sameShape(t *testing.T, vec, real any, where string) {
	t.Helper()
	switch x := vec.(type) {
	case Map:
		y, ok := real.(Map)
		if !ok {
			t.Fatalf("%s: not a map on the daemon's side", where)
		}
		if strings.HasSuffix(where, ".tokens") || strings.HasSuffix(where, ".schemes") {
			if len(x) > 0 && len(y) > 0 {
				sameShape(t, x[0].Value, y[0].Value, where+".*")
			}
			return
		}
		if !reflect.DeepEqual(x.Keys(), y.Keys()) {
			t.Fatalf("%s: keys %v, daemon %v", where, x.Keys(), y.Keys())
		}
		for i := range x {
			if x[i].Value != nil && y[i].Value != nil {
				sameShape(t, x[i].Value, y[i].Value, where+"."+x[i].Key)
			}
		}
	case []any:
		y, ok := real.([]any)
		if !ok {
			t.Fatalf("%s: not an array on the daemon's side", where)
		}
		if len(x) > 0 && len(y) > 0 {
			sameShape(t, x[0], y[0], where+"[]")
		}
	default:
		if reflect.TypeOf(vec) != reflect.TypeOf(real) {
			t.Fatalf("%s: %T, daemon %T", where, vec, real)
		}
	}
}

func (e *e2e) opShapes(t *testing.T) {
	vectors := map[string]any{}
	for _, v := range loadVectors(t, "ops.json") {
		resp := frameOf(t, v, "response")
		res, _ := resp.Value.(Map).Get("result")
		vectors[str(v, "name")] = res
	}
	real := func(op string, args Map) any {
		req, err := EncodeRequest(1, op, args)
		if err != nil {
			t.Fatal(err)
		}
		frames, _ := rawFrames(t, plainDial, e.v.socket, req, 1, false)
		r, err := DecodeResponse(frames[0][4:])
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK {
			t.Fatalf("%s: %v", op, r.Err)
		}
		if c, ok := r.Result.(Map); ok && op == OpCredentials {
			for _, k := range []string{"network_token", "cryptogram", "pan"} {
				if s, ok := c.Get(k); ok && s != nil {
					e.saw(s.(string))
				}
			}
		}
		return r.Result
	}
	alias := e.tokenize(t, e2eVisa, 12, 2030, "go-shape-1").Alias
	e.waitActive(t, alias)
	cred := func(accept []string, initiator string) Map {
		return CredentialsArgs{Alias: alias, Tenant: e2eTenant, Accept: accept, Initiator: initiator, AmountMinor: 1250, Currency: "CHF"}.Map()
	}
	checks := []struct {
		name, op string
		args     Map
	}{
		{"health", OpHealth, Map{}},
		{"tokenize/existing_with_transaction_id", OpTokenize, TokenizeArgs{Pan: NewPan(e2eVisa), ExpMonth: 12, ExpYear: 2030, TransactionID: "go-shape-1"}.Map()},
		{"transaction_tokens", OpTransactionTokens, transactionArgs("go-shape-1")},
		{"alias_status/active", OpAliasStatus, aliasArgs(alias)},
		{"provision", OpProvision, aliasArgs(alias)},
		{"credentials/network_token_cit", OpCredentials, cred([]string{AcceptNetworkToken}, InitiatorCustomer)},
		{"credentials/network_token_mit", OpCredentials, cred([]string{AcceptNetworkToken}, InitiatorMerchant)},
		{"credentials/pan", OpCredentials, cred([]string{AcceptPan}, InitiatorCustomer)},
		{"stats/extended", OpStats, Map{}},
		{"queue_list", OpQueueList, QueueListArgs{Limit: 10}.Map()},
		{"scheme_pause", OpSchemePause, schemeArgs("discover")},
		{"scheme_resume", OpSchemeResume, schemeArgs("discover")},
		{"retention", OpRetention, Map{}},
		{"purge_due", OpPurgeDue, purgeArgs("")},
		{"events", OpEvents, PageArgs{Limit: 10}.Map()},
		{"audit", OpAudit, PageArgs{Limit: 10}.Map()},
	}
	for _, c := range checks {
		vec, ok := vectors[c.name]
		if !ok {
			t.Fatalf("no vector %s", c.name)
		}
		sameShape(t, vec, real(c.op, c.args), c.name)
	}
	fresh := e.tokenize(t, testPan(3), 12, 2030, "").Alias
	e.waitActive(t, fresh)
	sameShape(t, vectors["remove_pan"], real(OpRemovePan, aliasArgs(fresh)), "remove_pan")
	sameShape(t, vectors["delete_alias"], real(OpDeleteAlias, aliasArgs(fresh)), "delete_alias")
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func (e *e2e) exampleService(t *testing.T) {
	bin := filepath.Join(e.v.dir, "checkout")
	build := exec.Command(goTool(), "build", "-o", bin, "./examples/checkout")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}
	const bad = "4111111111111112"
	e.saw(e2eVisa, e2eMastercard, bad)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "VAULTD_SOCKET="+e.v.socket)
	cmd.Stdin = strings.NewReader(e2eVisa + " 12/2030\n" + e2eMastercard + " 01/2031\n" + bad + " 12/2030\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	must(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the example failed: %v\n%s", err, tail(stderr.String(), 2000))
		}
	case <-time.After(2 * e2eCeiling):
		_ = cmd.Process.Kill()
		t.Fatal("the example did not finish")
	}
	out, errOut := stdout.String(), stderr.String()
	for _, want := range []string{"vaultd ready: true", "stored 411111xxxxxx1111", "stored 555555xxxxxx4444",
		"pay with a network_token credential (visa)"} {
		if !strings.Contains(out, want) {
			t.Errorf("the example's output lacks %q", want)
		}
	}
	if !strings.Contains(errOut, "refused: invalid_pan (retryable: false)") {
		t.Errorf("the example's errors lack the invalid_pan refusal")
	}
	for _, p := range []string{e2eVisa, e2eMastercard, bad} {
		if strings.Contains(out+errOut, p) {
			t.Fatal("the example printed a card number")
		}
	}
}

func (e *e2e) noCardDataInLog(t *testing.T) {
	for n := 1; n < 40; n++ {
		e.saw(testPan(n))
	}
	log := e.v.log()
	if log == "" {
		t.Fatal("vaultd wrote no log")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.secrets) < 10 {
		t.Fatalf("only %d secrets were recorded", len(e.secrets))
	}
	for s := range e.secrets {
		if strings.Contains(log, s) {
			t.Errorf("vaultd's log holds card data (a value of %d characters)", len(s))
		}
	}
}
