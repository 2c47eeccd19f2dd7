package vaultd

import (
	"encoding/binary"
	"fmt"
	"os"
)

const (
	// ProtocolVersion is the v of every request.
	ProtocolVersion = 1
	// DefaultSocket is PROTOCOL.md's default path.
	DefaultSocket = "/run/vaultd/vaultd.sock"
	// DefaultMaxFrame is the server's default max_frame, and this client's
	// limit on a request it sends (WithMaxFrame changes it).
	DefaultMaxFrame = 1 << 20
	// MaxResponseFrame is the largest answer this client reads (as the
	// Rust client: 16 MiB).
	MaxResponseFrame = 16 * DefaultMaxFrame
)

// The ops of PROTOCOL.md and of the README's extensions.
const (
	OpHealth            = "health"
	OpTokenize          = "tokenize"
	OpTransactionTokens = "transaction_tokens"
	OpAliasStatus       = "alias_status"
	OpProvision         = "provision"
	OpRemovePan         = "remove_pan"
	OpDeleteAlias       = "delete_alias"
	OpCredentials       = "credentials"
	OpStats             = "stats"
	OpQueueList         = "queue_list"
	OpQueueRetry        = "queue_retry"
	OpSchemePause       = "scheme_pause"
	OpSchemeResume      = "scheme_resume"
	OpRetention         = "retention"
	OpPurgeDue          = "purge_due"
	OpEvents            = "events"
	OpAudit             = "audit"
	OpKeyRotate         = "key_rotate"
	OpKeyRetire         = "key_retire"
	OpBackup            = "backup"
	OpKekRefresh        = "kek_refresh"
)

// SocketFromEnv is $VAULTD_SOCKET, else DefaultSocket.
func SocketFromEnv() string {
	if s := os.Getenv("VAULTD_SOCKET"); s != "" {
		return s
	}
	return DefaultSocket
}

// Frame puts body behind its 4-byte big-endian length.
func Frame(body []byte) []byte {
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...)
}

// EncodeRequest is the framed request {v, id, op, args}; nil args is an
// empty map.
func EncodeRequest(id uint64, op string, args Map) ([]byte, error) {
	if args == nil {
		args = Map{}
	}
	body, err := Marshal(Map{{"v", ProtocolVersion}, {"id", id}, {"op", op}, {"args", args}})
	if err != nil {
		return nil, fmt.Errorf("vaultd: %s request: %w", op, err)
	}
	return Frame(body), nil
}

// Response is a decoded response envelope. Exactly one of Result and Err
// is set (Result may be nil when the server answered ok with a nil result).
type Response struct {
	// ID is nil when the server could not read the request's id.
	ID     *uint64
	OK     bool
	Result any
	Err    *Error
}

// DecodeResponse reads one response body (without its length header).
func DecodeResponse(body []byte) (*Response, error) {
	v, err := Unmarshal(body)
	if err != nil {
		return nil, clientErr(ErrProtocol, err.Error(), nil)
	}
	m, ok := v.(Map)
	if !ok {
		return nil, protoErr("response is not a map")
	}
	r := &Response{}
	switch id, _ := m.Get("id"); x := id.(type) {
	case nil:
	case uint64:
		r.ID = &x
	default:
		return nil, protoErr("response id is not a u64")
	}
	okv, _ := m.Get("ok")
	if okv == true {
		if res, has := m.Get("result"); has {
			r.OK, r.Result = true, res
			return r, nil
		}
	} else if okv == false {
		if e, has := m.Get("error"); has {
			se, err := serverError(e, r.ID)
			if err != nil {
				return nil, err
			}
			r.Err = se
			return r, nil
		}
	}
	return nil, protoErr("response is neither ok with a result nor an error")
}

func serverError(v any, id *uint64) (*Error, error) {
	m, ok := v.(Map)
	if !ok {
		return nil, protoErr("error object is not a map")
	}
	code, _ := m.Get("code")
	msg, _ := m.Get("message")
	retry, _ := m.Get("retryable")
	c, ok1 := code.(string)
	s, ok2 := msg.(string)
	r, ok3 := retry.(bool)
	if !ok1 || !ok2 || !ok3 {
		return nil, protoErr("error object lacks code, message or retryable")
	}
	return &Error{Code: c, Message: s, Retryable: r, RequestID: id}, nil
}

// ---------------------------------------------------------------- args
//
// Key order and left-out keys as vault-proto's serde derives them, so a
// request is byte for byte what the Rust client sends.

// TokenizeArgs are tokenize's arguments. ExpMonth and ExpYear are u8 and
// u16 on the wire; the server checks them (invalid_expiry, or bad_request
// for a value that does not fit).
type TokenizeArgs struct {
	Pan      Pan
	ExpMonth int
	ExpYear  int
	// TransactionID, when not empty, remembers the alias for
	// transaction_tokens for 30 minutes.
	TransactionID string
}

// Map is the request's args.
func (a TokenizeArgs) Map() Map {
	m := Map{{"pan", a.Pan}, {"exp_month", a.ExpMonth}, {"exp_year", a.ExpYear}}
	if a.TransactionID != "" {
		m = append(m, Entry{"transaction_id", a.TransactionID})
	}
	return m
}

// The values of CredentialsArgs.Accept and .Initiator.
const (
	AcceptNetworkToken = "network_token"
	AcceptPan          = "pan"
	InitiatorCustomer  = "customer"
	InitiatorMerchant  = "merchant"
)

// CredentialsArgs are credentials' arguments.
type CredentialsArgs struct {
	Alias  string
	Tenant string
	// Accept is what the receiver takes, in order of preference (nil:
	// network_token, then pan).
	Accept []string
	// Initiator is "customer" (a cryptogram) or "merchant" (none); empty
	// means customer.
	Initiator   string
	AmountMinor uint64
	// Currency is ISO 4217 alphabetic, e.g. "CHF".
	Currency string
	// AuthenticatedECI, when not empty, is a 3-D Secure ECI passed through.
	AuthenticatedECI string
}

// Map is the request's args.
func (a CredentialsArgs) Map() Map {
	accept := a.Accept
	if accept == nil {
		accept = []string{AcceptNetworkToken, AcceptPan}
	}
	initiator := a.Initiator
	if initiator == "" {
		initiator = InitiatorCustomer
	}
	m := Map{
		{"alias", a.Alias}, {"tenant", a.Tenant}, {"accept", accept},
		{"initiator", initiator}, {"amount_minor", a.AmountMinor}, {"currency", a.Currency},
	}
	if a.AuthenticatedECI != "" {
		m = append(m, Entry{"authenticated_eci", a.AuthenticatedECI})
	}
	return m
}

// QueueListArgs are queue_list's arguments.
type QueueListArgs struct {
	// State is due, scheduled, in_flight or failed; empty: every state.
	State string
	// Limit 0 means 100; more than 1000 is cut to 1000.
	Limit uint32
	// After is the previous page's Next; empty: the first page.
	After string
}

func optString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Map is the request's args.
func (a QueueListArgs) Map() Map {
	return Map{{"state", optString(a.State)}, {"limit", a.Limit}, {"after", optString(a.After)}}
}

// PageArgs are the arguments of events and audit.
type PageArgs struct {
	// After is the seq to page on from; nil: from the oldest.
	After *uint64
	// Limit 0 means 100; more than 1000 is cut to 1000.
	Limit uint32
}

// Map is the request's args.
func (a PageArgs) Map() Map {
	var after any
	if a.After != nil {
		after = *a.After
	}
	return Map{{"after", after}, {"limit", a.Limit}}
}

func aliasArgs(alias string) Map            { return Map{{"alias", alias}} }
func transactionArgs(id string) Map         { return Map{{"transaction_id", id}} }
func jobArgs(jobID string) Map              { return Map{{"job_id", jobID}} }
func schemeArgs(scheme string) Map          { return Map{{"scheme", scheme}} }
func purgeArgs(tenant string) Map           { return Map{{"tenant", optString(tenant)}} }
func keyRetireArgs(version uint32) Map      { return Map{{"version", version}} }
func backupArgs(path string) Map            { return Map{{"path", path}} }
func kekRefreshArgs(s string, v uint32) Map { return Map{{"scheme", s}, {"version", v}} }
func keyRotateArgs(key string) Map {
	if key == "" {
		return Map{}
	}
	return Map{{"key", key}}
}
