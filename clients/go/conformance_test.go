package vaultd

// The language-neutral vectors of vault-proto/conformance, run through this
// client: every request is built by the client's own encoder (generic and
// typed) and must equal the vector byte for byte; every response is decoded
// into its typed result (or error) and agrees with the vector's JSON
// meaning, and re-encodes to the same bytes.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func conformanceDir() string {
	if d := os.Getenv("VAULTD_CONFORMANCE_DIR"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "vault-proto", "conformance")
}

// repoRoot is two levels above this package (clients/go).
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// parseJSON reads JSON keeping object key order (objects become Maps) and
// integers exact (uint64, or int64 when negative).
func parseJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := jsonValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data")
	}
	return v, nil
}

func jsonValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := Map{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := jsonValue(dec)
				if err != nil {
					return nil, err
				}
				m = append(m, Entry{k.(string), v})
			}
			_, err := dec.Token()
			return m, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := jsonValue(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token()
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case json.Number:
		s := t.String()
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		return nil, fmt.Errorf("not an integer: %s", s)
	default:
		return tok, nil // string, bool, nil
	}
}

type frameVec struct {
	Frame []byte
	Value any
	Null  bool // "value": null
}

func loadVectors(t *testing.T, name string) []Map {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(conformanceDir(), name))
	if err != nil {
		t.Fatalf("reading the vectors: %v", err)
	}
	doc, err := parseJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	m := doc.(Map)
	if s, _ := m.Get("schema"); s != "vaultd-conformance/1" {
		t.Fatalf("%s: schema %v", name, s)
	}
	vs, _ := m.Get("vectors")
	var out []Map
	for _, v := range vs.([]any) {
		out = append(out, v.(Map))
	}
	if len(out) == 0 {
		t.Fatalf("%s has no vectors", name)
	}
	return out
}

func str(m Map, k string) string {
	v, _ := m.Get(k)
	s, _ := v.(string)
	return s
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex: %v", err)
	}
	return b
}

// frameOf reads a frame object (nil when the vector has none).
func frameOf(t *testing.T, m Map, k string) *frameVec {
	t.Helper()
	v, _ := m.Get(k)
	if v == nil {
		return nil
	}
	fm := v.(Map)
	val, _ := fm.Get("value")
	return &frameVec{Frame: mustHex(t, str(fm, "frame")), Value: val, Null: val == nil}
}

// typedArgs rebuilds a request's args through this client's typed API.
func typedArgs(t *testing.T, op string, a Map) Map {
	t.Helper()
	s := func(k string) string { return str(a, k) }
	u := func(k string) uint64 { v, _ := a.Get(k); x, _ := v.(uint64); return x }
	switch op {
	case OpHealth, OpStats, OpRetention:
		return Map{}
	case OpTokenize:
		return TokenizeArgs{Pan: NewPan(s("pan")), ExpMonth: int(u("exp_month")), ExpYear: int(u("exp_year")), TransactionID: s("transaction_id")}.Map()
	case OpTransactionTokens:
		return transactionArgs(s("transaction_id"))
	case OpAliasStatus, OpProvision, OpRemovePan, OpDeleteAlias:
		return aliasArgs(s("alias"))
	case OpCredentials:
		acc, _ := a.Get("accept")
		var accept []string
		for _, x := range acc.([]any) {
			accept = append(accept, x.(string))
		}
		return CredentialsArgs{
			Alias: s("alias"), Tenant: s("tenant"), Accept: accept, Initiator: s("initiator"),
			AmountMinor: u("amount_minor"), Currency: s("currency"), AuthenticatedECI: s("authenticated_eci"),
		}.Map()
	case OpQueueList:
		return QueueListArgs{State: s("state"), Limit: uint32(u("limit")), After: s("after")}.Map()
	case OpQueueRetry:
		return jobArgs(s("job_id"))
	case OpSchemePause, OpSchemeResume:
		return schemeArgs(s("scheme"))
	case OpPurgeDue:
		return purgeArgs(s("tenant"))
	case OpEvents, OpAudit:
		p := PageArgs{Limit: uint32(u("limit"))}
		if v, _ := a.Get("after"); v != nil {
			p.After = Ptr(v.(uint64))
		}
		return p.Map()
	case OpKeyRotate:
		return keyRotateArgs(s("key"))
	case OpKeyRetire:
		return keyRetireArgs(uint32(u("version")))
	case OpBackup:
		return backupArgs(s("path"))
	case OpKekRefresh:
		return kekRefreshArgs(s("scheme"), uint32(u("version")))
	}
	t.Fatalf("no typed builder for %s", op)
	return nil
}

// plain turns a decoded value (Maps) or a typed result (structs) into
// order-free JSON-like values: map[string]any, []any, uint64/int64, string,
// bool, nil. Pans and Secrets are exposed, Extra merged into its struct.
func plain(v any) any {
	return plainValue(reflect.ValueOf(v))
}

func plainValue(rv reflect.Value) any {
	if !rv.IsValid() {
		return nil
	}
	switch rv.Type() {
	case panType:
		return rv.Interface().(Pan).Expose()
	case secretType:
		return rv.Interface().(Secret).Expose()
	case mapType:
		out := map[string]any{}
		for _, e := range rv.Interface().(Map) {
			out[e.Key] = plain(e.Value)
		}
		return out
	}
	switch rv.Kind() {
	case reflect.Interface, reflect.Pointer:
		if rv.IsNil() {
			return nil
		}
		return plainValue(rv.Elem())
	case reflect.Struct:
		out := map[string]any{}
		plainStruct(rv, out)
		return out
	case reflect.Slice:
		out := []any{}
		for i := 0; i < rv.Len(); i++ {
			out = append(out, plainValue(rv.Index(i)))
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		for _, k := range rv.MapKeys() {
			out[k.String()] = plainValue(rv.MapIndex(k))
		}
		return out
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return rv.Uint()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if rv.Int() >= 0 {
			return uint64(rv.Int())
		}
		return rv.Int()
	}
	return rv.Interface()
}

func plainStruct(rv reflect.Value, out map[string]any) {
	si := infoOf(rv.Type())
	for _, f := range si.fields {
		fv := rv.FieldByIndex(f.index)
		if f.embedded {
			plainStruct(fv, out)
			continue
		}
		out[f.name] = plainValue(fv)
	}
	if si.extra != nil {
		for _, e := range rv.FieldByIndex(si.extra).Interface().(Map) {
			out[e.Key] = plain(e.Value)
		}
	}
}

// dropAbsent removes from got the keys the wire value does not have; each
// must hold its zero (an optional field read as absent).
func dropAbsent(t *testing.T, got, wire any, where string) any {
	g, ok1 := got.(map[string]any)
	w, ok2 := wire.(map[string]any)
	if !ok1 || !ok2 {
		return got
	}
	out := map[string]any{}
	for k, v := range g {
		wv, has := w[k]
		if !has {
			if !isZero(v) {
				t.Errorf("%s.%s: absent on the wire but decoded as non-zero", where, k)
			}
			continue
		}
		out[k] = dropAbsent(t, v, wv, where+"."+k)
	}
	return out
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case uint64:
		return x == 0
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func TestConformanceCoversEveryOpAndErrorCode(t *testing.T) {
	ops := map[string]bool{}
	for _, v := range loadVectors(t, "ops.json") {
		ops[str(v, "op")] = true
	}
	for op := range resultDecoders {
		if !ops[op] {
			t.Errorf("no vector for op %s", op)
		}
		delete(ops, op)
	}
	for op := range ops {
		t.Errorf("op %s has a vector but no typed method here", op)
	}
	codes := map[string]bool{}
	for _, v := range loadVectors(t, "errors.json") {
		codes[str(v, "error")] = true
	}
	if len(ServerErrors) != 18 || len(codes) != 18 {
		t.Fatalf("%d sentinels, %d codes in the vectors; PROTOCOL.md has 18", len(ServerErrors), len(codes))
	}
	for _, e := range ServerErrors {
		if !codes[e.Code] {
			t.Errorf("no vector for %s", e.Code)
		}
	}
}

func exchanges(t *testing.T) []Map {
	return append(loadVectors(t, "ops.json"), loadVectors(t, "errors.json")...)
}

func TestConformanceRequestBytes(t *testing.T) {
	for _, v := range exchanges(t) {
		v := v
		t.Run(str(v, "name"), func(t *testing.T) {
			req := frameOf(t, v, "request")
			if req == nil {
				return
			}
			raw := req.Frame
			if req.Null {
				// Not a MessagePack value (or only a header): nothing to build.
				if len(raw) != 4 && int(uint32(raw[0])<<24|uint32(raw[1])<<16|uint32(raw[2])<<8|uint32(raw[3])) != len(raw)-4 {
					t.Fatalf("header does not match the body")
				}
				return
			}
			// The generic encoder: JSON meaning -> bytes, and back.
			body, err := Marshal(req.Value)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(Frame(body), raw) {
				t.Fatalf("generic encoding differs: %s", bytesDiff(Frame(body), raw))
			}
			back, err := Unmarshal(raw[4:])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, req.Value) {
				t.Fatalf("decoding the request gives another value")
			}
			// The typed builders: the same bytes as vault-proto's client.
			m, ok := req.Value.(Map)
			if !ok || !reflect.DeepEqual(m.Keys(), []string{"v", "id", "op", "args"}) {
				return
			}
			if ver, _ := m.Get("v"); ver != uint64(1) || str(v, "error") == CodeBadRequest {
				return
			}
			op := str(m, "op")
			if _, typed := resultDecoders[op]; !typed {
				return
			}
			id, _ := m.Get("id")
			args, _ := m.Get("args")
			got, err := EncodeRequest(id.(uint64), op, typedArgs(t, op, args.(Map)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("typed request differs: %s", bytesDiff(got, raw))
			}
		})
	}
}

// secretsOf lists the card data of a vector value (PANs, token numbers,
// cryptograms), which no printing of a typed result may show.
func secretsOf(v any, out *[]string) {
	switch x := v.(type) {
	case Map:
		for _, e := range x {
			if s, ok := e.Value.(string); ok && (e.Key == "pan" || e.Key == "network_token" || e.Key == "cryptogram") {
				*out = append(*out, s)
			}
			secretsOf(e.Value, out)
		}
	case []any:
		for _, e := range x {
			secretsOf(e, out)
		}
	}
}

func TestConformanceResponses(t *testing.T) {
	for _, v := range exchanges(t) {
		v := v
		t.Run(str(v, "name"), func(t *testing.T) {
			resp := frameOf(t, v, "response")
			raw := resp.Frame
			if n := int(uint32(raw[0])<<24 | uint32(raw[1])<<16 | uint32(raw[2])<<8 | uint32(raw[3])); n != len(raw)-4 {
				t.Fatalf("length %d, body %d", n, len(raw)-4)
			}
			body, err := Marshal(resp.Value)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(Frame(body), raw) {
				t.Fatalf("re-encoding the JSON meaning differs: %s", bytesDiff(Frame(body), raw))
			}
			r, err := DecodeResponse(raw[4:])
			if err != nil {
				t.Fatal(err)
			}
			val := resp.Value.(Map)
			wantID, _ := val.Get("id")
			if wantID == nil {
				if r.ID != nil {
					t.Fatalf("id %d, want nil", *r.ID)
				}
			} else if r.ID == nil || *r.ID != wantID.(uint64) {
				t.Fatalf("id differs")
			}
			code := str(v, "error")
			if code == "" {
				if !r.OK || r.Err != nil {
					t.Fatalf("not ok")
				}
				typed, err := DecodeResult(str(v, "op"), r.Result)
				if err != nil {
					t.Fatal(err)
				}
				wantResult, _ := val.Get("result")
				want := plain(wantResult)
				got := dropAbsent(t, plain(typed), want, "result")
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("typed result differs from the vector at %s", valueDiff(got, want, "result"))
				}
				// Every key of the vectors is a field of the structs: a
				// misspelt tag would land in Extra and still compare equal.
				if where := extraKeys(reflect.ValueOf(typed), "result"); where != "" {
					t.Fatalf("%s lands in Extra: the structs miss a field", where)
				}
				var secrets []string
				secretsOf(wantResult, &secrets)
				printed := fmt.Sprintf("%v|%+v|%#v|%s", typed, typed, typed, typed)
				if js, err := json.Marshal(typed); err == nil {
					printed += string(js)
				}
				for _, s := range secrets {
					if strings.Contains(printed, s) {
						t.Fatalf("printing the typed %s result shows card data", str(v, "op"))
					}
				}
				return
			}
			if r.OK || r.Err == nil {
				t.Fatalf("ok, want %s", code)
			}
			sentinel := SentinelFor(code)
			if sentinel == nil || !errors.Is(r.Err, sentinel) {
				t.Fatalf("errors.Is(%v, sentinel of %s) is false", r.Err, code)
			}
			var se *Error
			if !errors.As(error(r.Err), &se) || se.Code != code {
				t.Fatalf("errors.As gives no *Error of %s", code)
			}
			wantErr, _ := val.Get("error")
			wr, _ := wantErr.(Map).Get("retryable")
			if se.Retryable != wr.(bool) || se.Retryable != sentinel.Retryable || IsRetryable(r.Err) != se.Retryable {
				t.Fatalf("retryable %v, vector %v, sentinel %v", se.Retryable, wr, sentinel.Retryable)
			}
			if se.Message != str(wantErr.(Map), "message") {
				t.Fatalf("message differs")
			}
		})
	}
}

func TestConformancePipeline(t *testing.T) {
	for _, v := range loadVectors(t, "pipeline.json") {
		v := v
		t.Run(str(v, "name"), func(t *testing.T) {
			reqs, _ := v.Get("requests")
			resps, _ := v.Get("responses")
			var reqStream []byte
			var asked []string
			for _, f := range reqs.([]any) {
				fm := f.(Map)
				reqStream = append(reqStream, mustHex(t, str(fm, "frame"))...)
				val, _ := fm.Get("value")
				id := "nil"
				if m, ok := val.(Map); ok {
					if ver, _ := m.Get("v"); ver == uint64(1) {
						x, _ := m.Get("id")
						id = fmt.Sprint(x)
					}
				}
				asked = append(asked, id)
			}
			if !bytes.Equal(reqStream, mustHex(t, str(v, "request_stream"))) {
				t.Fatalf("request_stream is not the requests concatenated")
			}
			// Split the response stream as the client's reader does, over
			// readers that hand out 1, 3, 7, 64 bytes and everything.
			stream := mustHex(t, str(v, "response_stream"))
			var want [][]byte
			for _, f := range resps.([]any) {
				want = append(want, mustHex(t, str(f.(Map), "frame"))[4:])
			}
			readers := map[string]io.Reader{
				"one-byte": iotest.OneByteReader(bytes.NewReader(stream)),
				"half":     iotest.HalfReader(bytes.NewReader(stream)),
				"chunk3":   &chunkReader{stream, 3},
				"chunk7":   &chunkReader{stream, 7},
				"chunk64":  &chunkReader{stream, 64},
				"bufio":    bufio.NewReader(bytes.NewReader(stream)),
			}
			for name, r := range readers {
				var got [][]byte
				for {
					b, err := ReadFrame(r, MaxResponseFrame)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					got = append(got, b)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%s: the frames differ", name)
				}
			}
			var answered []string
			for _, b := range want {
				r, err := DecodeResponse(b)
				if err != nil {
					t.Fatal(err)
				}
				id := "nil"
				if r.ID != nil {
					id = fmt.Sprint(*r.ID)
				}
				answered = append(answered, id)
			}
			if reflect.DeepEqual(asked, answered) {
				t.Fatalf("the vector's answers are in request order")
			}
			sort.Strings(asked)
			sort.Strings(answered)
			if !reflect.DeepEqual(asked, answered) {
				t.Fatalf("ids asked %v, answered %v", asked, answered)
			}
		})
	}
}

type chunkReader struct {
	b []byte
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := c.n
	if n > len(p) {
		n = len(p)
	}
	if n > len(c.b) {
		n = len(c.b)
	}
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// readsOf is what ReadFrame sees in data, in the vectors' vocabulary.
func readsOf(data []byte, max uint32) []string {
	var out []string
	r := bytes.NewReader(data)
	for {
		b, err := ReadFrame(r, max)
		var fl *FrameLengthError
		switch {
		case err == nil:
			out = append(out, fmt.Sprintf("frame:%d", len(b)))
			continue
		case err == io.EOF:
			out = append(out, "eof")
		case err == io.ErrUnexpectedEOF:
			out = append(out, "truncated")
		case errors.As(err, &fl) && fl.Length == 0:
			out = append(out, "close")
		case errors.As(err, &fl):
			out = append(out, fmt.Sprintf("too_large:%d", fl.Length))
		default:
			out = append(out, "error:"+err.Error())
		}
		return out
	}
}

func TestConformanceFraming(t *testing.T) {
	for _, v := range loadVectors(t, "framing.json") {
		v := v
		t.Run(str(v, "name"), func(t *testing.T) {
			maxv, _ := v.Get("max_frame")
			readsV, _ := v.Get("reads")
			var want []string
			for _, r := range readsV.([]any) {
				want = append(want, r.(string))
			}
			got := readsOf(mustHex(t, str(v, "bytes")), uint32(maxv.(uint64)))
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("reads %v, want %v", got, want)
			}
			if resp := frameOf(t, v, "response"); resp != nil {
				r, err := DecodeResponse(resp.Frame[4:])
				if err != nil {
					t.Fatal(err)
				}
				if r.ID != nil || r.OK {
					t.Fatalf("want an error answer without id")
				}
				body, _ := Marshal(resp.Value)
				if !bytes.Equal(Frame(body), resp.Frame) {
					t.Fatalf("re-encoding differs")
				}
			}
		})
	}
}

// extraKeys names the first struct field path whose Extra is not empty.
func extraKeys(rv reflect.Value, where string) string {
	switch rv.Kind() {
	case reflect.Interface, reflect.Pointer:
		if rv.IsNil() {
			return ""
		}
		return extraKeys(rv.Elem(), where)
	case reflect.Struct:
		if rv.Type() == panType || rv.Type() == secretType {
			return ""
		}
		si := infoOf(rv.Type())
		if si.extra != nil {
			if m := rv.FieldByIndex(si.extra).Interface().(Map); len(m) > 0 {
				return where + "." + m[0].Key
			}
		}
		for _, f := range si.fields {
			at := where + "." + f.name
			if f.embedded {
				at = where
			}
			if w := extraKeys(rv.FieldByIndex(f.index), at); w != "" {
				return w
			}
		}
	case reflect.Slice:
		for i := 0; i < rv.Len(); i++ {
			if w := extraKeys(rv.Index(i), where+"[]"); w != "" {
				return w
			}
		}
	case reflect.Map:
		for _, k := range rv.MapKeys() {
			if w := extraKeys(rv.MapIndex(k), where+"."+k.String()); w != "" {
				return w
			}
		}
	}
	return ""
}

// bytesDiff tells where two byte strings part, without showing them (they
// may hold test card numbers): test output carries no card data.
func bytesDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("%d bytes, want %d; first difference at offset %d", len(got), len(want), i)
}

// valueDiff names the first path where two plain values differ.
func valueDiff(got, want any, where string) string {
	g, ok1 := got.(map[string]any)
	w, ok2 := want.(map[string]any)
	if ok1 && ok2 {
		for k := range w {
			if _, has := g[k]; !has {
				return where + "." + k + " (missing)"
			}
		}
		for k := range g {
			if _, has := w[k]; !has {
				return where + "." + k + " (not in the vector)"
			}
			if !reflect.DeepEqual(g[k], w[k]) {
				return valueDiff(g[k], w[k], where+"."+k)
			}
		}
		return where
	}
	ga, ok1 := got.([]any)
	wa, ok2 := want.([]any)
	if ok1 && ok2 && len(ga) == len(wa) {
		for i := range wa {
			if !reflect.DeepEqual(ga[i], wa[i]) {
				return valueDiff(ga[i], wa[i], fmt.Sprintf("%s[%d]", where, i))
			}
		}
	}
	return fmt.Sprintf("%s (%T, want %T)", where, got, want)
}
