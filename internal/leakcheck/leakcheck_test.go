package leakcheck

import (
	"slices"
	"testing"
)

func TestEncodings(t *testing.T) {
	const secret = `a b/c"<d>`
	want := map[string]string{
		"literal":                            secret,
		"query-escaped":                      "a+b%2Fc%22%3Cd%3E",
		"path-escaped":                       "a%20b%2Fc%22%3Cd%3E",
		"JSON-escaped":                       `a b/c\"\u003cd\u003e`,
		"JSON-escaped without HTML escaping": `a b/c\"<d>`,
		"base64 std":                         "YSBiL2MiPGQ+",
		"base64 raw url":                     "YSBiL2MiPGQ-",
	}
	got := map[string]string{}
	for _, f := range Encodings(secret) {
		got[f.Name] = f.Text
	}
	for name, text := range want {
		if got[name] != text {
			t.Errorf("%s = %q, want %q", name, got[name], text)
		}
	}
	if len(Encodings("")) != 0 || len(BasicEncodings("id", "")) != 0 {
		t.Error("an empty secret has forms")
	}
	basic := BasicEncodings("cid", "ATQ-SECRET-REFLECT-7")
	if len(basic) != 8 || !slices.ContainsFunc(basic, func(f Form) bool { return f.Text == "Y2lkOkFUUS1TRUNSRVQtUkVGTEVDVC03" }) {
		t.Errorf("Basic encodings %v lack base64 of cid:ATQ-SECRET-REFLECT-7", basic)
	}
	if found := Find("Basic Y2lkOkFUUS1TRUNSRVQtUkVGTEVDVC03 and a+b%2Fc%22%3Cd%3E", append(basic, All(secret)...)); len(found) < 2 {
		t.Errorf("Find = %v", found)
	}
}
