package vaultd

// The MessagePack subset of PROTOCOL.md, written here rather than taken from
// a library (see doc.go): nil, booleans, integers (smallest form), UTF-8
// strings, arrays and maps with string keys, in the order they are given.
// The decoder also reads floats and binaries (a newer server's extra fields)
// and refuses extension types, maps with non-string keys, trailing bytes and
// nesting deeper than maxDepth.

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"unicode/utf8"
)

// Entry is one key of a Map.
type Entry struct {
	Key   string
	Value any
}

// Map is a MessagePack map with its keys in wire order. Requests are built
// from Maps (so their bytes are exact), and decoded maps are Maps.
//
// Values in a Map, and what they encode as: nil; bool; every Go integer
// type; string; Pan (its digits); []byte (bin); float32/float64; []any,
// []string, []Map; Map; map[string]any (keys sorted). Decoded values are
// nil, bool, uint64 (non-negative integers), int64 (negative ones), string,
// []byte, float64, []any and Map.
type Map []Entry

// Get returns the value of key and whether the map has it.
func (m Map) Get(key string) (any, bool) {
	for _, e := range m {
		if e.Key == key {
			return e.Value, true
		}
	}
	return nil, false
}

// Keys returns the map's keys in order.
func (m Map) Keys() []string {
	out := make([]string, len(m))
	for i, e := range m {
		out[i] = e.Key
	}
	return out
}

const maxDepth = 256

// Marshal encodes one value as the protocol does.
func Marshal(v any) ([]byte, error) {
	return appendValue(nil, v, 0)
}

func appendUint(b []byte, u uint64) []byte {
	switch {
	case u <= 0x7f:
		return append(b, byte(u))
	case u <= math.MaxUint8:
		return append(b, 0xcc, byte(u))
	case u <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(u))
	case u <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(u))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), u)
	}
}

func appendInt(b []byte, i int64) []byte {
	switch {
	case i >= 0:
		return appendUint(b, uint64(i))
	case i >= -32:
		return append(b, byte(i))
	case i >= math.MinInt8:
		return append(b, 0xd0, byte(i))
	case i >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(i))
	case i >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(i))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(i))
	}
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n <= 31:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func appendArrayHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	}
}

func appendMapHeader(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

func appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("value nested deeper than %d", maxDepth)
	}
	var err error
	switch x := v.(type) {
	case nil:
		return append(b, 0xc0), nil
	case bool:
		if x {
			return append(b, 0xc3), nil
		}
		return append(b, 0xc2), nil
	case int:
		return appendInt(b, int64(x)), nil
	case int8:
		return appendInt(b, int64(x)), nil
	case int16:
		return appendInt(b, int64(x)), nil
	case int32:
		return appendInt(b, int64(x)), nil
	case int64:
		return appendInt(b, x), nil
	case uint:
		return appendUint(b, uint64(x)), nil
	case uint8:
		return appendUint(b, uint64(x)), nil
	case uint16:
		return appendUint(b, uint64(x)), nil
	case uint32:
		return appendUint(b, uint64(x)), nil
	case uint64:
		return appendUint(b, x), nil
	case string:
		if len(x) > math.MaxUint32 {
			return nil, fmt.Errorf("string too long")
		}
		return appendStr(b, x), nil
	case Pan:
		return appendStr(b, x.d), nil
	case *Pan:
		if x == nil {
			return append(b, 0xc0), nil
		}
		return appendStr(b, x.d), nil
	case []byte:
		n := len(x)
		switch {
		case n <= math.MaxUint8:
			b = append(b, 0xc4, byte(n))
		case n <= math.MaxUint16:
			b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
		default:
			b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
		}
		return append(b, x...), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(b, 0xca), math.Float32bits(x)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(x)), nil
	case []string:
		b = appendArrayHeader(b, len(x))
		for _, s := range x {
			b = appendStr(b, s)
		}
		return b, nil
	case []any:
		b = appendArrayHeader(b, len(x))
		for _, e := range x {
			if b, err = appendValue(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case []Map:
		b = appendArrayHeader(b, len(x))
		for _, e := range x {
			if b, err = appendValue(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case Map:
		b = appendMapHeader(b, len(x))
		for _, e := range x {
			b = appendStr(b, e.Key)
			if b, err = appendValue(b, e.Value, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = appendMapHeader(b, len(x))
		for _, k := range keys {
			b = appendStr(b, k)
			if b, err = appendValue(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	default:
		// The type only, never the value: it may be card data.
		return nil, fmt.Errorf("cannot encode a %T", v)
	}
}

// Unmarshal decodes exactly one MessagePack value (see Map for the Go types
// it gives). Its errors never quote the bytes.
func Unmarshal(data []byte) (any, error) {
	d := decoder{b: data}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.p != len(d.b) {
		return nil, fmt.Errorf("not one MessagePack value (%d trailing bytes)", len(d.b)-d.p)
	}
	return v, nil
}

type decoder struct {
	b []byte
	p int
}

var errShort = fmt.Errorf("not one MessagePack value (truncated)")

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || len(d.b)-d.p < n {
		return nil, errShort
	}
	s := d.b[d.p : d.p+n]
	d.p += n
	return s, nil
}

func (d *decoder) uintN(n int) (uint64, error) {
	s, err := d.take(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(s[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(s)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(s)), nil
	default:
		return binary.BigEndian.Uint64(s), nil
	}
}

func (d *decoder) str(n uint64) (string, error) {
	s, err := d.take(int(min64(n, math.MaxInt32)))
	if err != nil || n > math.MaxInt32 {
		return "", errShort
	}
	if !utf8.Valid(s) {
		return "", fmt.Errorf("string is not UTF-8")
	}
	return string(s), nil
}

func min64(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

func signed(i int64) any {
	if i >= 0 {
		return uint64(i)
	}
	return i
}

func (d *decoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("value nested deeper than %d", maxDepth)
	}
	s, err := d.take(1)
	if err != nil {
		return nil, err
	}
	c := s[0]
	switch {
	case c <= 0x7f:
		return uint64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c&0xf0 == 0x80:
		return d.mapBody(uint64(c&0x0f), depth)
	case c&0xf0 == 0x90:
		return d.arrayBody(uint64(c&0x0f), depth)
	case c&0xe0 == 0xa0:
		return d.str(uint64(c & 0x1f))
	}
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xcc, 0xcd, 0xce, 0xcf:
		return d.uintN(1 << (c - 0xcc))
	case 0xd0, 0xd1, 0xd2, 0xd3:
		n := 1 << (c - 0xd0)
		u, err := d.uintN(n)
		if err != nil {
			return nil, err
		}
		switch n {
		case 1:
			return signed(int64(int8(u))), nil
		case 2:
			return signed(int64(int16(u))), nil
		case 4:
			return signed(int64(int32(u))), nil
		default:
			return signed(int64(u)), nil
		}
	case 0xd9, 0xda, 0xdb:
		n, err := d.uintN(1 << (c - 0xd9))
		if err != nil {
			return nil, err
		}
		return d.str(n)
	case 0xc4, 0xc5, 0xc6:
		n, err := d.uintN(1 << (c - 0xc4))
		if err != nil {
			return nil, err
		}
		if n > uint64(len(d.b)-d.p) {
			return nil, errShort
		}
		s, _ := d.take(int(n))
		return append([]byte(nil), s...), nil
	case 0xca:
		u, err := d.uintN(4)
		if err != nil {
			return nil, err
		}
		return float64(math.Float32frombits(uint32(u))), nil
	case 0xcb:
		u, err := d.uintN(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(u), nil
	case 0xdc, 0xdd:
		n, err := d.uintN(2 << (c - 0xdc))
		if err != nil {
			return nil, err
		}
		return d.arrayBody(n, depth)
	case 0xde, 0xdf:
		n, err := d.uintN(2 << (c - 0xde))
		if err != nil {
			return nil, err
		}
		return d.mapBody(n, depth)
	case 0xc1:
		return nil, fmt.Errorf("not MessagePack (reserved byte 0xc1)")
	default: // 0xc7-0xc9, 0xd4-0xd8: extension types
		return nil, fmt.Errorf("MessagePack extension types are not part of the protocol")
	}
}

func (d *decoder) arrayBody(n uint64, depth int) (any, error) {
	// Every element takes at least one byte: a count the rest cannot hold
	// is refused before anything is allocated.
	if n > uint64(len(d.b)-d.p) {
		return nil, errShort
	}
	out := make([]any, 0, n)
	for i := uint64(0); i < n; i++ {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (d *decoder) mapBody(n uint64, depth int) (any, error) {
	if n > uint64(len(d.b)-d.p)/2 {
		return nil, errShort
	}
	out := make(Map, 0, n)
	for i := uint64(0); i < n; i++ {
		k, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		ks, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("map key is not a string")
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out = append(out, Entry{ks, v})
	}
	return out, nil
}
