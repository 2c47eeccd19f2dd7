package vaultd

import (
	"context"
	"errors"
)

// The error codes of PROTOCOL.md.
const (
	CodeBadRequest           = "bad_request"
	CodeUnsupportedVersion   = "unsupported_version"
	CodeUnknownOp            = "unknown_op"
	CodeFrameTooLarge        = "frame_too_large"
	CodeUnauthenticated      = "unauthenticated"
	CodeForbidden            = "forbidden"
	CodeInvalidPan           = "invalid_pan"
	CodeInvalidExpiry        = "invalid_expiry"
	CodeAliasNotFound        = "alias_not_found"
	CodeTransactionNotFound  = "transaction_not_found"
	CodePanRequired          = "pan_required"
	CodeNoUsableCredential   = "no_usable_credential"
	CodeNetworkTokenRequired = "network_token_required"
	CodeRateLimited          = "rate_limited"
	CodeOverloaded           = "overloaded"
	CodeUnavailable          = "unavailable"
	CodeShuttingDown         = "shutting_down"
	CodeInternal             = "internal"
)

// Error is the server's answer {code, message, retryable}, or the client's
// refusal to send a request over max_frame (Code frame_too_large).
//
// errors.Is(err, ErrAliasNotFound) matches by Code; errors.As(err, &e)
// with e *Error gives Code, Message and Retryable. Messages are the
// server's, which never contain card data; programs must not parse them.
type Error struct {
	Code      string
	Message   string
	Retryable bool
	// RequestID is the id the answer carried; nil when the server could not
	// read one (an undecodable request, frame_too_large, overloaded at
	// connect).
	RequestID *uint64
}

func (e *Error) Error() string { return "vaultd: " + e.Code + ": " + e.Message }

// Is matches any *Error with the same Code (so the sentinels below match
// every answer with their code).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func sentinel(code string, retryable bool, doc string) *Error {
	return &Error{Code: code, Message: doc, Retryable: retryable}
}

// One sentinel per PROTOCOL.md error code; Retryable is the table's.
var (
	ErrBadRequest           = sentinel(CodeBadRequest, false, "malformed request, wrong types, unknown keys")
	ErrUnsupportedVersion   = sentinel(CodeUnsupportedVersion, false, "v is not 1")
	ErrUnknownOp            = sentinel(CodeUnknownOp, false, "no such op")
	ErrFrameTooLarge        = sentinel(CodeFrameTooLarge, false, "frame over max_frame (connection closed)")
	ErrUnauthenticated      = sentinel(CodeUnauthenticated, false, "peer uid not configured")
	ErrForbidden            = sentinel(CodeForbidden, false, "op not allowed for the client's roles or tenant")
	ErrInvalidPan           = sentinel(CodeInvalidPan, false, "not 12-19 digits, or Luhn check fails")
	ErrInvalidExpiry        = sentinel(CodeInvalidExpiry, false, "month or year out of range, or in the past")
	ErrAliasNotFound        = sentinel(CodeAliasNotFound, false, "unknown alias (or another tenant's)")
	ErrTransactionNotFound  = sentinel(CodeTransactionNotFound, false, "unknown or expired transaction id")
	ErrPanRequired          = sentinel(CodePanRequired, false, "remove_pan without an active network token")
	ErrNoUsableCredential   = sentinel(CodeNoUsableCredential, false, "credentials found nothing the receiver accepts")
	ErrNetworkTokenRequired = sentinel(CodeNetworkTokenRequired, false, "tenant stores no PANs and the card cannot get a network token")
	ErrRateLimited          = sentinel(CodeRateLimited, true, "the client passed its configured rate for PAN-returning credentials")
	ErrOverloaded           = sentinel(CodeOverloaded, true, "the server sheds load")
	ErrUnavailable          = sentinel(CodeUnavailable, true, "HSM or store temporarily failing; nothing was written")
	ErrShuttingDown         = sentinel(CodeShuttingDown, true, "the server is stopping")
	ErrInternal             = sentinel(CodeInternal, false, "a bug; details only in the server's log")
)

// ServerErrors lists the sentinels in PROTOCOL.md's order.
var ServerErrors = []*Error{
	ErrBadRequest, ErrUnsupportedVersion, ErrUnknownOp, ErrFrameTooLarge,
	ErrUnauthenticated, ErrForbidden, ErrInvalidPan, ErrInvalidExpiry,
	ErrAliasNotFound, ErrTransactionNotFound, ErrPanRequired,
	ErrNoUsableCredential, ErrNetworkTokenRequired, ErrRateLimited,
	ErrOverloaded, ErrUnavailable, ErrShuttingDown, ErrInternal,
}

// SentinelFor returns the sentinel of a code, nil for a code this client
// does not know (a newer server's).
func SentinelFor(code string) *Error {
	for _, e := range ServerErrors {
		if e.Code == code {
			return e
		}
	}
	return nil
}

// ClientError is an error on this side of the socket. errors.Is matches
// the sentinels below by Kind; a timeout or cancellation also unwraps to
// the context's error (context.DeadlineExceeded, context.Canceled).
type ClientError struct {
	Kind      string
	Message   string
	Retryable bool
	Err       error
}

func (e *ClientError) Error() string {
	if e.Message == "" {
		return "vaultd client: " + e.Kind
	}
	return "vaultd client: " + e.Message
}

// Is matches any *ClientError of the same Kind.
func (e *ClientError) Is(target error) bool {
	t, ok := target.(*ClientError)
	return ok && t.Kind == e.Kind
}

func (e *ClientError) Unwrap() error { return e.Err }

// The client's own errors.
var (
	// ErrCannotConnect: the socket could not be reached (no daemon, wrong
	// path, permissions). Retryable.
	ErrCannotConnect = &ClientError{Kind: "cannot_connect", Retryable: true}
	// ErrConnectionLost: the connection ended before the answer came. The
	// request may or may not have been carried out; PROTOCOL.md lets a
	// client retry it. The next call opens a new connection.
	ErrConnectionLost = &ClientError{Kind: "connection_lost", Retryable: true}
	// ErrTimeout: the context's deadline passed before the answer (or
	// before the request could be written). A late answer is dropped; the
	// request may still be carried out.
	ErrTimeout = &ClientError{Kind: "timeout", Retryable: true}
	// ErrCanceled: the context was canceled while the call waited.
	ErrCanceled = &ClientError{Kind: "canceled", Retryable: true}
	// ErrProtocol: the server's bytes do not follow PROTOCOL.md.
	ErrProtocol = &ClientError{Kind: "protocol"}
	// ErrClosed: the client was closed.
	ErrClosed = &ClientError{Kind: "closed"}
)

func clientErr(kind *ClientError, msg string, wrapped error) *ClientError {
	return &ClientError{Kind: kind.Kind, Message: msg, Retryable: kind.Retryable, Err: wrapped}
}

func contextErr(op string, err error) *ClientError {
	if errors.Is(err, context.DeadlineExceeded) {
		return clientErr(ErrTimeout, "no answer to "+op+" before the deadline", err)
	}
	return clientErr(ErrCanceled, op+" canceled while waiting for its answer", err)
}

// IsRetryable reports whether err (a server's answer or the client's own
// error) says the request may be sent again.
func IsRetryable(err error) bool {
	var se *Error
	if errors.As(err, &se) {
		return se.Retryable
	}
	var ce *ClientError
	if errors.As(err, &ce) {
		return ce.Retryable
	}
	return false
}
