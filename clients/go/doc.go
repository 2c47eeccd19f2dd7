// Package vaultd is a Go client of vaultd, the card vault daemon (wire
// protocol v1, PROTOCOL.md), checked against the language-neutral vectors
// of vault-proto/conformance.
//
//	vault := vaultd.New("")                 // $VAULTD_SOCKET, else /run/vaultd/vaultd.sock
//	defer vault.Close()
//	card, err := vault.Tokenize(ctx, vaultd.TokenizeArgs{Pan: vaultd.NewPan(number), ExpMonth: 12, ExpYear: 2030})
//	if errors.Is(err, vaultd.ErrInvalidPan) { ... }
//
// One Client is safe for concurrent goroutines and pipelines their requests
// over one connection, matching answers by id. Calls take a context (its
// deadline is the call's timeout). Results are structs; errors are *Error
// (the server's code, message and retryable; one sentinel per code for
// errors.Is) or *ClientError (ErrConnectionLost, ErrTimeout, ...).
// IsRetryable tells whether a request may be sent again.
//
// Card data: a Pan prints as 411111xxxxxx1111 whatever the verb, and
// Expose gives the digits; network token numbers in results are Pans and
// the cryptogram is a Secret. Error texts never hold arguments.
//
// MessagePack: this module has no dependencies. It carries its own encoder
// and decoder (msgpack.go) for the subset the protocol uses: nil, bool,
// integers in their smallest form, str, arrays and string-keyed maps whose
// key order the caller controls (request bytes equal vault-proto's, which
// the conformance vectors check byte for byte). A library would have to be
// fetched from the Go module proxy, which the machines that build and test
// vaultd cannot reach; Debian's packaged one would need a GOPATH/replace
// set-up pointing into /usr/share/gocode, tying the module to one machine's
// layout; and either would need an ordered-map type of ours for exact key
// order.
package vaultd
