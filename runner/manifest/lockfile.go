package manifest

import (
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"
)

// LockfileCheck compares what the source's lockfiles declare (go.sum,
// package-lock.json) with the packages the build actually fetched. It is
// recorded as internalParameters.lockfileCheck.
type LockfileCheck struct {
	// Lockfiles are the lockfiles read, workspace-relative.
	Lockfiles []string `json:"lockfiles"`
	// Checked counts fetched packages that were compared with a
	// declaration and matched it.
	Checked int `json:"checked"`
	// Undeclared are fetched packages no lockfile declares.
	Undeclared []LockfileFinding `json:"undeclared"`
	// Mismatches are fetched packages whose hash differs from the
	// declared one.
	Mismatches []LockfileFinding `json:"mismatches"`
	// Unverified are fetched packages whose hash could not be computed
	// (the body was not kept in the store) or whose declaration uses an
	// algorithm that cannot be compared.
	Unverified []LockfileFinding `json:"unverified,omitempty"`
}

// LockfileFinding is one package in a LockfileCheck.
type LockfileFinding struct {
	Step string `json:"step"`
	// Ecosystem is "go" (module zip), "go.mod" (a module's go.mod) or
	// "npm".
	Ecosystem string `json:"ecosystem"`
	Package   string `json:"package"`
	Version   string `json:"version,omitempty"`
	URL       string `json:"url"`
	// Declared and Fetched are hashes in the lockfile's notation
	// ("h1:…" for Go, "sha512-…" for npm).
	Declared string `json:"declared,omitempty"`
	Fetched  string `json:"fetched,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// addInternal merges runner-provided parameters into internalParameters.
func addInternal(internal map[string]any, extra map[string]any) error {
	for _, k := range sortedKeys(extra) {
		if _, ok := internal[k]; ok {
			return fmt.Errorf("manifest: Internal[%q] collides with a built-in parameter", k)
		}
		v, err := jsonValue(extra[k])
		if err != nil {
			return fmt.Errorf("manifest: Internal[%q]: %w", k, err)
		}
		internal[k] = v
	}
	return nil
}

// checkLockfilePolicy applies noUndeclaredFetches and noHashMismatches.
// A statement without a lockfile check fails them: the requirement cannot
// be shown to hold.
func checkLockfilePolicy(internal map[string]*structpb.Value, pol Policy, fail, pass func(string, ...any)) {
	if !pol.NoUndeclaredFetches && !pol.NoHashMismatches {
		return
	}
	lc := internal["lockfileCheck"].GetStructValue()
	if lc == nil {
		fail("the provenance records no lockfile check (internalParameters.lockfileCheck); policy requires noUndeclaredFetches/noHashMismatches")
		return
	}
	list := func(key string) []string {
		var out []string
		for _, v := range lc.GetFields()[key].GetListValue().GetValues() {
			f := v.GetStructValue().GetFields()
			name := f["package"].GetStringValue()
			if ver := f["version"].GetStringValue(); ver != "" {
				name += "@" + ver
			}
			out = append(out, name)
		}
		return out
	}
	if u := list("undeclared"); pol.NoUndeclaredFetches && len(u) > 0 {
		fail("%d fetched packages are not declared in a lockfile; policy requires none: %s", len(u), abbreviate(u))
	} else if pol.NoUndeclaredFetches {
		pass("noUndeclaredFetches: every fetched package is declared in a lockfile")
	}
	if m := list("mismatches"); pol.NoHashMismatches && len(m) > 0 {
		fail("%d fetched packages do not match the hash their lockfile declares; policy requires none: %s", len(m), abbreviate(m))
	} else if pol.NoHashMismatches {
		pass("noHashMismatches: every fetched package has the hash its lockfile declares")
	}
}
