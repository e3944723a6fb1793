package manifest

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestRoundTrip(t *testing.T) {
	st, err := Build(sampleInput())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "provenance.intoto.json")
	if err := WriteFile(path, st); err != nil {
		t.Fatal(err)
	}
	back, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(st, back) {
		t.Errorf("round trip changed the statement")
	}
	a, _ := Marshal(st)
	b, _ := Marshal(back)
	if !bytes.Equal(a, b) {
		t.Errorf("round trip changed the bytes")
	}
	if !bytes.HasSuffix(a, []byte("}\n")) || bytes.Count(a, []byte("\n")) != 1 {
		t.Errorf("Marshal is not compact JSON plus one newline")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	st, err := Build(sampleInput())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "provenance.intoto.json")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, st); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", info.Mode().Perm())
	}
	// A failing write leaves neither a partial file nor a temporary one.
	if err := WriteFile(filepath.Join(dir, "missing", "x.json"), st); err == nil {
		t.Errorf("WriteFile into a missing directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("failed write left files: %v", entries)
	}
}

func TestReadFileRejects(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "golden.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"wrong type":           strings.Replace(string(good), "https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1", 1),
		"wrong predicate":      strings.Replace(string(good), `"predicateType":"https://slsa.dev/provenance/v1"`, `"predicateType":"https://slsa.dev/provenance/v0.2"`, 1),
		"unknown field":        strings.Replace(string(good), `"_type"`, `"extra":1,"_type"`, 1),
		"unknown in predicate": strings.Replace(string(good), `"buildDefinition":{`, `"buildDefinition":{"bogus":1,`, 1),
		"no builder id":        strings.Replace(string(good), `"id":"https://ci.example.com/cleanroom@v1",`, ``, 1),
		"bad subject digest":   strings.Replace(string(good), `"sha256":"a172cedcae47474b615c54d510a5d84a8dea3032e958587430b413538be3f333"`, `"sha256":"zz"`, 1),
		"not json":             "{",
	}
	dir := t.TempDir()
	for name, content := range cases {
		if content == string(good) {
			t.Fatalf("%s: replacement did not apply", name)
		}
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := ReadFile(p); err == nil {
			t.Errorf("%s: ReadFile accepted it", name)
		}
	}
}

func TestCanonicalJSON(t *testing.T) {
	cases := map[string]string{
		`{ "b" : 1, "a" : [ true, null, "x" ] }`:                                 `{"a":[true,null,"x"],"b":1}`,
		`{"n":[1.0, 1e21, 1e-7, 0.000001, -0, 123456789012345680000, 4.5e+300]}`: `{"n":[1,1e+21,1e-7,0.000001,0,123456789012345680000,4.5e+300]}`,
		`"<&>\u2028é\u0001\"\\\/"`:                                               "\"<&>\u2028é\\u0001\\\"\\\\/\"",
		`{"\ud83d\ude00":1,"\ufb01":2}`:                                          "{\"\U0001F600\":1,\"\ufb01\":2}", // UTF-16 order: D83D < FB01
	}
	for in, want := range cases {
		got, err := canonicalJSON([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("canonicalJSON(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := canonicalJSON([]byte(`{} {}`)); err == nil {
		t.Errorf("trailing data accepted")
	}
	if _, err := canonicalNumber(math.NaN()); err == nil {
		t.Errorf("NaN accepted")
	}
}
