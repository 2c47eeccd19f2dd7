package vaultd

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestMsgpackSmallestForms(t *testing.T) {
	for _, c := range []struct {
		v    any
		want []byte
	}{
		{nil, []byte{0xc0}},
		{true, []byte{0xc3}},
		{false, []byte{0xc2}},
		{0, []byte{0x00}},
		{127, []byte{0x7f}},
		{128, []byte{0xcc, 0x80}},
		{uint16(256), []byte{0xcd, 0x01, 0x00}},
		{65536, []byte{0xce, 0, 1, 0, 0}},
		{uint64(math.MaxUint64), []byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{-1, []byte{0xff}},
		{-32, []byte{0xe0}},
		{-33, []byte{0xd0, 0xdf}},
		{-129, []byte{0xd1, 0xff, 0x7f}},
		{int64(math.MinInt64), []byte{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}},
		{"", []byte{0xa0}},
		{strings.Repeat("a", 31), append([]byte{0xbf}, strings.Repeat("a", 31)...)},
		{strings.Repeat("a", 32), append([]byte{0xd9, 32}, strings.Repeat("a", 32)...)},
		{strings.Repeat("a", 256), append([]byte{0xda, 1, 0}, strings.Repeat("a", 256)...)},
		{[]string{"a"}, []byte{0x91, 0xa1, 'a'}},
		{Map{{"b", 1}, {"a", 2}}, []byte{0x82, 0xa1, 'b', 1, 0xa1, 'a', 2}},
		{map[string]any{"b": 1, "a": 2}, []byte{0x82, 0xa1, 'a', 2, 0xa1, 'b', 1}},
		{NewPan("42"), []byte{0xa2, '4', '2'}},
	} {
		got, err := Marshal(c.v)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("Marshal(%T): %x, %v; want %x", c.v, got, err, c.want)
		}
	}
	big := make([]any, 16)
	got, _ := Marshal(big)
	if got[0] != 0xdc || len(got) != 3+16 {
		t.Errorf("array 16: %x", got[:3])
	}
	bigMap := Map{}
	for i := 0; i < 16; i++ {
		bigMap = append(bigMap, Entry{string(rune('a' + i)), nil})
	}
	got, _ = Marshal(bigMap)
	if got[0] != 0xde {
		t.Errorf("map 16: %x", got[:3])
	}
	if _, err := Marshal(struct{}{}); err == nil {
		t.Error("an unknown type is encoded")
	}
}

func TestMsgpackRoundTripAndRefusals(t *testing.T) {
	v := Map{{"id", uint64(math.MaxUint64)}, {"neg", int64(-5)}, {"list", []any{nil, true, "x", Map{}}}, {"bin", []byte{1, 2}}, {"f", 1.5}}
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil || !reflect.DeepEqual(back, v) {
		t.Fatalf("round trip: %#v %v", back, err)
	}
	// Non-negative values of signed forms read as uint64.
	if x, _ := Unmarshal([]byte{0xd0, 0x05}); x != uint64(5) {
		t.Errorf("int8 5: %#v", x)
	}
	for name, bad := range map[string][]byte{
		"reserved":      {0xc1},
		"trailing":      {0x01, 0x02},
		"truncated str": {0xa5, 'a'},
		"truncated u32": {0xce, 0, 0},
		"huge array":    {0xdd, 0xff, 0xff, 0xff, 0xff},
		"huge map":      {0xdf, 0xff, 0xff, 0xff, 0xff},
		"huge str":      {0xdb, 0xff, 0xff, 0xff, 0xff},
		"int key":       {0x81, 0x01, 0x02},
		"ext":           {0xd4, 0x01, 0x02},
		"bad utf-8":     {0xa1, 0xff},
		"empty":         {},
	} {
		if _, err := Unmarshal(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	deep := bytes.Repeat([]byte{0x91}, maxDepth+5)
	deep = append(deep, 0xc0)
	if _, err := Unmarshal(deep); err == nil {
		t.Error("nesting without bound")
	}
}
