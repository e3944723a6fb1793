package pipeline

import "testing"

func TestPositionsAreRecorded(t *testing.T) {
	p, err := Parse("cleanroom.yaml", []byte(`version: 1
image: busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000
egress:
  allow: ["a.example.org", "*.example.net"]
steps:
  - name: build
    run: make
    env: {TOKEN: abc}
  - name: test
    timeout: 5m
    run: make test
`))
	if err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]Pos{
		"image":              {2, 8},
		"egress.allow[1]":    {4, 28},
		"steps[0]":           {6, 5},
		"steps[0].env.TOKEN": {8, 18},
		"steps[1].timeout":   {10, 14},
	} {
		got, ok := p.Position(field)
		if !ok || got != want {
			t.Errorf("Position(%q) = %v, %v; want %v", field, got, ok, want)
		}
	}
	if _, ok := p.Position("steps[0].timeout"); ok {
		t.Error("a defaulted timeout reported as written")
	}
}
