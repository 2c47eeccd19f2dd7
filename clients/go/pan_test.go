package vaultd

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const testVisa = "4111111111111111"

func TestPanNeverPrintsItsDigits(t *testing.T) {
	p := NewPan(testVisa)
	cases := map[string]string{
		p.String():                                "411111xxxxxx1111",
		p.GoString():                              "vaultd.Pan(411111xxxxxx1111)",
		fmt.Sprint(p):                             "411111xxxxxx1111",
		fmt.Sprintf("%v", p):                      "411111xxxxxx1111",
		fmt.Sprintf("%+v", p):                     "411111xxxxxx1111",
		fmt.Sprintf("%#v", p):                     "vaultd.Pan(411111xxxxxx1111)",
		fmt.Sprintf("%s", p):                      "411111xxxxxx1111",
		fmt.Sprintf("%q", p):                      `"411111xxxxxx1111"`,
		fmt.Sprintf("%x", p):                      "411111xxxxxx1111",
		fmt.Sprintf("%X", p):                      "411111xxxxxx1111",
		fmt.Sprintf("%d", p):                      "411111xxxxxx1111",
		fmt.Sprintf("%20s", p):                    "    411111xxxxxx1111",
		fmt.Sprintf("%-18s|", p):                  "411111xxxxxx1111  |",
		fmt.Sprintf("%v", &p):                     "411111xxxxxx1111",
		fmt.Sprintf("%v", []Pan{p}):               "[411111xxxxxx1111]",
		fmt.Sprintf("%v", map[string]Pan{"k": p}): "map[k:411111xxxxxx1111]",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if p.Expose() != testVisa || p.BIN() != "411111" || p.Last4() != "1111" || p.Len() != 16 {
		t.Fatal("Expose, BIN, Last4 or Len")
	}
	if !p.Equal(NewPan(testVisa)) || p.Equal(NewPan("5555555555554444")) {
		t.Fatal("Equal")
	}
	// Inside structs, maps, errors and JSON.
	type form struct {
		Name string
		Card Pan
		Ptr  *Pan
	}
	f := form{"x", p, &p}
	js, _ := json.Marshal(f)
	text := fmt.Sprintf("%v %+v %#v %s", f, f, f, js) + fmt.Errorf("wrapped %v", p).Error()
	if strings.Contains(text, testVisa) {
		t.Fatal("a Pan printed its digits")
	}
	if !strings.Contains(text, "411111xxxxxx1111") {
		t.Fatal("the masked form is missing")
	}
}

func TestMaskLikeTheRustType(t *testing.T) {
	for in, want := range map[string]string{
		"378282246310005":         "378282xxxxx0005",
		"1234567890":              "xxxxxxxxxx",
		"":                        "",
		"12345678901":             "123456x8901",
		"4111111111111111111":     "411111xxxxxxxxx1111",
		"41111111111111111111111": "411111xxxxxxxxxxxxx1111",
		"4111é1111111":            "xxxxxxxxxxxxx",
	} {
		if got := MaskDigits(in); got != want {
			t.Errorf("MaskDigits(len %d) = %q, want %q", len(in), got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	if err := NewPan(testVisa).Check(); err != nil {
		t.Fatal(err)
	}
	for bad, why := range map[string]string{
		"4111111111111112":    "Luhn",
		"4111 1111 1111 1111": "digits only",
		"42":                  "12 to 19",
	} {
		err := NewPan(bad).Check()
		if err == nil || !strings.Contains(err.Error(), why) || strings.Contains(err.Error(), bad) {
			t.Errorf("Check: %v", err)
		}
	}
}

func TestCredentialsPrintNeitherTokenNumberNorCryptogram(t *testing.T) {
	raw := Map{
		{"kind", "network_token"}, {"scheme", "visa"}, {"network_token", "4999000000000001"},
		{"exp_month", uint64(11)}, {"exp_year", uint64(2031)}, {"cryptogram", "AQAHAAAAAAAAAAAAAAAAAAAAAAA="},
		{"eci", "07"}, {"atc", uint64(7)}, {"par", nil}, {"token_ref", "tref"},
	}
	c, err := decodeCredentials(raw)
	if err != nil {
		t.Fatal(err)
	}
	nt := c.(*NetworkTokenCredentials)
	js, _ := json.Marshal(nt)
	text := fmt.Sprintf("%v %+v %#v %s", nt, *nt, nt, js)
	if strings.Contains(text, "4999000000000001") || strings.Contains(text, "AQAHAAAA") {
		t.Fatal("credentials printed card data")
	}
	if !strings.Contains(text, "499900xxxxxx0001") || !strings.Contains(text, "[redacted]") {
		t.Fatal("masked forms missing")
	}
	if nt.NetworkToken.Expose() != "4999000000000001" || nt.Cryptogram.Expose() != "AQAHAAAAAAAAAAAAAAAAAAAAAAA=" || *nt.ATC != 7 || nt.PAR != nil {
		t.Fatal("values")
	}
	p, err := decodeCredentials(Map{
		{"kind", "pan"}, {"scheme", "visa"}, {"pan", testVisa}, {"exp_month", uint64(12)},
		{"exp_year", uint64(2030)}, {"fallback_reason", "no_token"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprintf("%v %+v %#v", p, p, p), testVisa) || p.(*PanCredentials).Pan.Expose() != testVisa || p.CredentialKind() != "pan" {
		t.Fatal("pan credentials")
	}
}

func TestEveryErrorCodeCarriesCodeAndRetryable(t *testing.T) {
	retryable := map[string]bool{"rate_limited": true, "overloaded": true, "unavailable": true, "shutting_down": true}
	for _, s := range ServerErrors {
		id := uint64(3)
		e, err := serverError(Map{{"code", s.Code}, {"message", "m"}, {"retryable", retryable[s.Code]}}, &id)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(e, s) || e.Retryable != retryable[s.Code] || s.Retryable != retryable[s.Code] || *e.RequestID != 3 {
			t.Errorf("%s", s.Code)
		}
		if e.Error() != "vaultd: "+s.Code+": m" {
			t.Errorf("%q", e.Error())
		}
		for _, other := range ServerErrors {
			if other != s && errors.Is(e, other) {
				t.Errorf("%s matches %s", s.Code, other.Code)
			}
		}
	}
	e, _ := serverError(Map{{"code", "brand_new"}, {"message", "m"}, {"retryable", true}}, nil)
	if SentinelFor("brand_new") != nil || !IsRetryable(e) {
		t.Fatal("an unknown code")
	}
	for _, ce := range []*ClientError{ErrConnectionLost, ErrTimeout, ErrCannotConnect, ErrCanceled} {
		if !IsRetryable(clientErr(ce, "x", nil)) {
			t.Errorf("%s is retryable", ce.Kind)
		}
	}
	if IsRetryable(clientErr(ErrProtocol, "x", nil)) || IsRetryable(errors.New("other")) {
		t.Fatal("not retryable")
	}
}

func TestResultsKeepUnknownFieldsAndNameMissingOnes(t *testing.T) {
	var h Health
	err := decodeInto(&h, Map{{"ready", true}, {"version", "1"}, {"hsm", "ok"}, {"store", "ok"}, {"uptime_ms", uint64(1)}, {"new", uint64(5)}}, "result")
	if err != nil || len(h.Extra) != 1 || h.Extra[0].Key != "new" {
		t.Fatalf("extra: %v", err)
	}
	err = decodeInto(&h, Map{{"ready", true}}, "result")
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "version") {
		t.Fatalf("missing: %v", err)
	}
	var c Card
	err = decodeInto(&c, Map{{"bin", "411111"}, {"last4", "1111"}, {"exp_month", testVisa}, {"exp_year", uint64(2030)}, {"scheme", "v"}, {"pan_removed", false}}, "result")
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "exp_month") || strings.Contains(err.Error(), "4111") {
		t.Fatalf("wrong type: %v", err)
	}
	err = decodeInto(&c, Map{{"bin", "411111"}, {"last4", "1111"}, {"exp_month", uint64(300)}, {"exp_year", uint64(2030)}, {"scheme", "v"}, {"pan_removed", false}}, "result")
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("overflow: %v", err)
	}
}
