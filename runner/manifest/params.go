package manifest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// The parameters are assembled as plain JSON-shaped Go values (map[string]any,
// []any, string, float64, bool) and only then converted to protobuf Structs,
// which keeps the mapping readable. Lists whose order carries no meaning are
// sorted here; lists whose order does (steps, flag values) are kept.

// sortedKeys returns the keys of m in byte order.
func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// strs converts a string slice to the []any a Struct needs.
func strs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// sortedSet returns the distinct values of ss in byte order.
func sortedSet(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

func sha256Digest(hex string) map[string]any {
	return map[string]any{"sha256": hex}
}

// externalParameters says what was asked for: the pipeline, the steps, the
// flags, and the requested source. Everything a person could change to get a
// different build is here; nothing here is environmental.
func externalParameters(in *Input) (map[string]any, error) {
	ext := map[string]any{
		"pipeline": map[string]any{
			"path":   in.Pipeline.Path,
			"digest": sha256Digest(in.Pipeline.SHA256),
		},
		"steps": strs(in.Steps),
	}
	if len(in.Flags) > 0 {
		flags := map[string]any{}
		for _, name := range sortedKeys(in.Flags) {
			flags[name] = strs(in.Flags[name])
		}
		ext["flags"] = flags
	}
	src := map[string]any{}
	if in.Source.Remote != "" {
		remote, err := gitRemoteURI(in.Source.Remote)
		if err != nil {
			return nil, err
		}
		src["remote"] = remote
	}
	if in.Source.Ref != "" {
		src["ref"] = in.Source.Ref
	}
	if len(src) > 0 {
		ext["source"] = src
	}
	return ext, nil
}

// internalParameters records what the builder decided on its own: its
// version, the sandbox, the effective egress policy and what it refused, the
// names of the variables set, and where a failed run stopped.
func internalParameters(in *Input) (map[string]any, error) {
	internal := map[string]any{"runnerVersion": in.RunnerVersion}
	if len(in.Sandbox) > 0 {
		sb, err := jsonValue(in.Sandbox)
		if err != nil {
			return nil, fmt.Errorf("manifest: Sandbox: %w", err)
		}
		internal["sandbox"] = sb
	}
	if len(in.Egress) > 0 {
		eg := map[string]any{}
		for _, step := range sortedKeys(in.Egress) {
			eg[step] = strs(sortedSet(in.Egress[step]))
		}
		internal["egress"] = eg
	}
	if len(in.Denied) > 0 {
		internal["egressDenied"] = deniedList(in.Denied)
	}
	if len(in.Environment) > 0 {
		internal["environment"] = strs(sortedSet(in.Environment))
	}
	if in.FailedStep != "" {
		internal["failedStep"] = in.FailedStep
	}
	if err := addInternal(internal, in.Internal); err != nil {
		return nil, err
	}
	return internal, nil
}

// deniedList sorts refusals by step, host, port and reason, merging entries
// that share all four so the list does not depend on log order.
func deniedList(denied []Denied) []any {
	ds := slices.Clone(denied)
	slices.SortFunc(ds, func(a, b Denied) int {
		return cmp.Or(cmp.Compare(a.Step, b.Step), cmp.Compare(a.Host, b.Host),
			cmp.Compare(a.Port, b.Port), cmp.Compare(a.Reason, b.Reason))
	})
	var out []any
	var last map[string]any
	for i, d := range ds {
		if i > 0 && ds[i-1].Step == d.Step && ds[i-1].Host == d.Host &&
			ds[i-1].Port == d.Port && ds[i-1].Reason == d.Reason {
			last["count"] = last["count"].(float64) + float64(d.Count)
			continue
		}
		m := map[string]any{"step": d.Step, "host": d.Host, "count": float64(d.Count)}
		if d.Port != 0 {
			m["port"] = float64(d.Port)
		}
		if d.Reason != "" {
			m["reason"] = d.Reason
		}
		out = append(out, m)
		last = m
	}
	return out
}

// jsonValue converts an arbitrary JSON-able value to the JSON-shaped Go
// value a Struct accepts, refusing numbers a float64 would round.
func jsonValue(v any) (any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return numbersToFloat(out, "")
}

func numbersToFloat(v any, where string) (any, error) {
	switch t := v.(type) {
	case json.Number:
		if !exactNumber(string(t)) {
			return nil, fmt.Errorf("%s: number %s is not exactly representable in JSON; record it as a string", where, t)
		}
		f, _ := t.Float64()
		return f, nil
	case map[string]any:
		for k, e := range t {
			c, err := numbersToFloat(e, where+"."+k)
			if err != nil {
				return nil, err
			}
			t[k] = c
		}
	case []any:
		for i, e := range t {
			c, err := numbersToFloat(e, fmt.Sprintf("%s[%d]", where, i))
			if err != nil {
				return nil, err
			}
			t[i] = c
		}
	}
	return v, nil
}
