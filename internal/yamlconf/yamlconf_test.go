package yamlconf

import (
	"errors"
	"strings"
	"testing"
)

type conf struct {
	Name  string   `yaml:"name"`
	Items []string `yaml:"items"`
}

func TestDecodePlacesErrors(t *testing.T) {
	var c conf
	d := &Decoder{File: "c.yaml"}
	if n, err := d.Decode([]byte("name: x\nitems: [a, b]\n"), &c); err != nil || n != 1 || c.Name != "x" || len(c.Items) != 2 {
		t.Fatalf("decode: %d %v %+v", n, err, c)
	}
	d.Errorf("$.items[1]", "items", "%q is not allowed", "b")
	d.Errorf("$.missing", "missing", "needed")
	err := d.Err()
	for _, want := range []string{`c.yaml:2:12: items: "b" is not allowed`, "c.yaml:1:1: missing: needed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("errors %v lack %q", err, want)
		}
	}
	var e *Error
	if !errors.As(err, &e) || e.File != "c.yaml" {
		t.Fatalf("not a *Error: %v", err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	cases := map[string]string{
		"name: x\nnmae: y\n":      "c.yaml:2:1:",
		"name: [\n":               "c.yaml:",
		"name: x\n---\nname: y\n": "one YAML document",
	}
	for in, want := range cases {
		var c conf
		_, err := (&Decoder{File: "c.yaml"}).Decode([]byte(in), &c)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want one line containing %q", in, err, want)
		}
	}
	var c conf
	if n, err := (&Decoder{File: "c.yaml"}).Decode(nil, &c); n != 0 || err != nil {
		t.Errorf("empty file: %d %v", n, err)
	}
}
