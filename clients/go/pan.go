package vaultd

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Pan is a primary account number, or a network token number (same shape,
// same secrecy). Every way of printing it gives the masked form
// (411111xxxxxx1111): String, GoString, every fmt verb (%v, %+v, %#v, %s,
// %q, %x, %d), JSON and text marshalling. The digits take an explicit
// Expose. The zero Pan is empty.
//
// It is not validated on construction: the server answers invalid_pan for a
// bad number (Check tells beforehand). Go strings cannot be wiped from
// memory; keep a Pan's lifetime short.
type Pan struct {
	d string
}

// NewPan wraps digits (not validated; see Check).
func NewPan(digits string) Pan { return Pan{d: digits} }

// Expose returns the digits. Every call is a place where card data leaves
// the type.
func (p Pan) Expose() string { return p.d }

// Masked is the first six and last four digits with every other one
// replaced by x; 10 characters or fewer (or not ASCII) are masked
// completely, as vault-proto's mask_digits does.
func (p Pan) Masked() string { return MaskDigits(p.d) }

// BIN is the first six digits.
func (p Pan) BIN() string {
	if len(p.d) < 6 {
		return p.d
	}
	return p.d[:6]
}

// Last4 is the last four digits.
func (p Pan) Last4() string {
	if len(p.d) < 4 {
		return p.d
	}
	return p.d[len(p.d)-4:]
}

// Len is the number of characters.
func (p Pan) Len() int { return len(p.d) }

// IsZero reports an empty Pan.
func (p Pan) IsZero() bool { return p.d == "" }

// Equal compares in constant time.
func (p Pan) Equal(q Pan) bool {
	return subtle.ConstantTimeCompare([]byte(p.d), []byte(q.d)) == 1
}

// Check returns nil for 12 to 19 ASCII digits with a valid Luhn check
// digit, else why not (the reason never contains the number).
func (p Pan) Check() error {
	d := p.d
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return errors.New("card number must be ASCII digits only")
		}
	}
	if len(d) < 12 || len(d) > 19 {
		return errors.New("card number must have 12 to 19 digits")
	}
	if !LuhnValid(d) {
		return errors.New("card number fails the Luhn check")
	}
	return nil
}

// String is the masked form.
func (p Pan) String() string { return p.Masked() }

// GoString is vaultd.Pan(<masked>).
func (p Pan) GoString() string { return "vaultd.Pan(" + p.Masked() + ")" }

// Format prints the masked form for every verb (%#v: GoString, %q: quoted).
func (p Pan) Format(f fmt.State, verb rune) {
	var s string
	switch {
	case verb == 'v' && f.Flag('#'):
		s = p.GoString()
	case verb == 'q':
		s = strconv.Quote(p.Masked())
	default:
		s = p.Masked()
	}
	if w, ok := f.Width(); ok && w > len(s) {
		pad := strings.Repeat(" ", w-len(s))
		if f.Flag('-') {
			s += pad
		} else {
			s = pad + s
		}
	}
	_, _ = f.Write([]byte(s))
}

// MarshalJSON writes the masked form: a Pan logged as JSON stays masked.
func (p Pan) MarshalJSON() ([]byte, error) { return json.Marshal(p.Masked()) }

// MarshalText writes the masked form (structured loggers use it).
func (p Pan) MarshalText() ([]byte, error) { return []byte(p.Masked()), nil }

// MaskDigits keeps the first six and last four characters and replaces
// every other one with x; strings of 10 or fewer characters (or not ASCII)
// become only x (at most 19).
func MaskDigits(digits string) string {
	n := len(digits)
	ascii := true
	for i := 0; i < n; i++ {
		if digits[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if n <= 10 || !ascii {
		if n > 19 {
			n = 19
		}
		return strings.Repeat("x", n)
	}
	return digits[:6] + strings.Repeat("x", n-10) + digits[n-4:]
}

// LuhnValid is the Luhn (mod 10) check over ASCII digits.
func LuhnValid(digits string) bool {
	if digits == "" {
		return false
	}
	sum := 0
	for i := 0; i < len(digits); i++ {
		c := digits[len(digits)-1-i]
		if c < '0' || c > '9' {
			return false
		}
		v := int(c - '0')
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}

// Secret holds a value that must not be printed, such as a cryptogram: every
// fmt verb, JSON and text marshalling give "[redacted]". Expose returns it.
type Secret struct {
	s string
}

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{s: s} }

// Expose returns the value.
func (s Secret) Expose() string { return s.s }

// String is "[redacted]".
func (s Secret) String() string { return "[redacted]" }

// GoString is "vaultd.Secret([redacted])".
func (s Secret) GoString() string { return "vaultd.Secret([redacted])" }

// Format prints "[redacted]" for every verb.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalJSON writes "[redacted]".
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText writes "[redacted]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
