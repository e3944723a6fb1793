// Package vary names what `cleanroom rebuild` changes between builds that a
// reproducible build must not depend on, and turns a choice of them into the
// concrete values of one build (a Plan). The runner applies a Plan; the
// rebuild driver (runner/rebuild) chooses them.
package vary

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
)

// The variations, by the name the CLI and the report use.
const (
	SourceDateEpoch = "source-date-epoch" // SOURCE_DATE_EPOCH one day later per build
	WorkspacePath   = "workspace-path"    // the workspace mounted elsewhere than /workspace
	UID             = "uid"               // the step runs as another user than root
	Umask           = "umask"             // 0002 instead of 0022
	Timezone        = "timezone"          // TZ far from UTC
	Locale          = "locale"            // LANG and LC_ALL set to another language
	Hostname        = "hostname"          // another host name
	CPUs            = "cpus"              // pinned to one CPU (nproc)
	FileOrder       = "file-order"        // another directory order in the fresh workspace
	EnvOrder        = "env-order"         // the environment in reverse order
	Clock           = "clock"             // the wall clock (not available, see Unavailable)
)

// All lists the variations a rebuild applies by default, in report order.
var All = []string{SourceDateEpoch, WorkspacePath, UID, Umask, Timezone, Locale, Hostname, CPUs, FileOrder, EnvOrder}

// Unavailable are variations that cannot be applied here, with why.
var Unavailable = map[string]string{
	Clock: "the wall clock cannot be moved for one step: a time namespace offsets only CLOCK_MONOTONIC and CLOCK_BOOTTIME (not CLOCK_REALTIME, which date and file times use), and runc 1.1 has none; builds run at different times anyway, so a build that embeds the current time is caught without it",
}

// Parse reads a --vary list ("all", "none", or names separated by commas,
// each optionally prefixed by "-" to remove it) into the names switched on,
// in the order of All.
func Parse(specs []string) ([]string, error) {
	on := map[string]bool{}
	if len(specs) == 0 {
		specs = []string{"all"}
	}
	for _, spec := range specs {
		for _, name := range strings.Split(spec, ",") {
			name = strings.TrimSpace(name)
			off := strings.HasPrefix(name, "-")
			name = strings.TrimPrefix(name, "-")
			switch {
			case name == "":
			case name == "all":
				for _, n := range All {
					on[n] = !off
				}
			case name == "none":
				clear(on)
			case Unavailable[name] != "":
				if !off {
					return nil, fmt.Errorf("variation %s: %s", name, Unavailable[name])
				}
			case slices.Contains(All, name):
				on[name] = !off
			default:
				return nil, fmt.Errorf("unknown variation %q (known: %s, all, none)", name, strings.Join(All, ", "))
			}
		}
	}
	var out []string
	for _, n := range All {
		if on[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// Plan is what one build changes. The zero Plan (or nil) is the reference:
// an ordinary run.
type Plan struct {
	// Names are the variations on, in the order of All; Skipped those asked
	// for that could not be applied here, with why.
	Names   []string          `json:"varied"`
	Skipped map[string]string `json:"notVaried,omitempty"`

	SourceDateEpochOffset int64   `json:"sourceDateEpochOffsetSeconds,omitempty"`
	WorkspaceDir          string  `json:"workspaceDir,omitempty"`
	UID                   uint32  `json:"uid,omitempty"`
	GID                   uint32  `json:"gid,omitempty"`
	Umask                 *uint32 `json:"umask,omitempty"`
	TZ                    string  `json:"tz,omitempty"`
	Locale                string  `json:"locale,omitempty"`
	Hostname              string  `json:"hostname,omitempty"`
	CPUSet                string  `json:"cpuset,omitempty"`
	// FileOrder: the fresh workspace's filesystem gets another directory
	// hash seed (ext4 lists a directory in hash order) and the source is
	// copied in reverse order.
	FileOrder bool `json:"fileOrder,omitempty"`
	EnvOrder  bool `json:"envOrder,omitempty"`
}

// Has reports whether the variation is on.
func (p *Plan) Has(name string) bool { return p != nil && slices.Contains(p.Names, name) }

// ReferenceHashSeed is the directory hash seed of every fresh workspace an
// ordinary run makes: fixed, so that directory order does not change from
// one run to the next by chance.
const ReferenceHashSeed = "6c65616e-726f-4f6d-8000-000000000000"

// HashSeed is the seed of the fresh workspace's filesystem for this build.
func (p *Plan) HashSeed(build int) string {
	if !p.Has(FileOrder) {
		return ReferenceHashSeed
	}
	return fmt.Sprintf("6c65616e-726f-4f6d-8000-%012x", 0x7265000000+build)
}

// For makes the plan of build number n (1, 2, …; each build varies a little
// differently) with the named variations on.
func For(names []string, n int) *Plan {
	p := &Plan{Skipped: map[string]string{}}
	for _, name := range names {
		switch name {
		case SourceDateEpoch:
			p.SourceDateEpochOffset = int64(n) * 86400
		case WorkspacePath:
			p.WorkspaceDir = fmt.Sprintf("/build/rebuild-%d/src", n)
		case UID:
			p.UID, p.GID = uint32(1000+n), uint32(1000+n)
		case Umask:
			m := uint32(0o002)
			p.Umask = &m
		case Timezone:
			// POSIX TZ needs no zone files in the image: 14 hours east of UTC,
			// then 12 west, so that two builds never share a date by chance.
			p.TZ = []string{"XYZ-14", "XYZ+12"}[n%2]
		case Locale:
			p.Locale = []string{"fr_CH.UTF-8", "de_DE.UTF-8"}[n%2]
		case Hostname:
			p.Hostname = fmt.Sprintf("rebuild-%d", n)
		case CPUs:
			if runtime.NumCPU() < 2 {
				p.Skipped[name] = "the host has one CPU"
				continue
			}
			p.CPUSet = "0"
		case FileOrder:
			p.FileOrder = true
		case EnvOrder:
			p.EnvOrder = true
		}
		p.Names = append(p.Names, name)
	}
	if len(p.Skipped) == 0 {
		p.Skipped = nil
	}
	return p
}

// Describe says in words what the plan changes, one item per variation.
func (p *Plan) Describe() []string {
	if p == nil {
		return nil
	}
	var out []string
	for _, n := range p.Names {
		switch n {
		case SourceDateEpoch:
			out = append(out, fmt.Sprintf("SOURCE_DATE_EPOCH +%ds", p.SourceDateEpochOffset))
		case WorkspacePath:
			out = append(out, "workspace at "+p.WorkspaceDir)
		case UID:
			out = append(out, fmt.Sprintf("uid %d gid %d", p.UID, p.GID))
		case Umask:
			out = append(out, fmt.Sprintf("umask %04o", *p.Umask))
		case Timezone:
			out = append(out, "TZ="+p.TZ)
		case Locale:
			out = append(out, "LANG=LC_ALL="+p.Locale)
		case Hostname:
			out = append(out, "hostname "+p.Hostname)
		case CPUs:
			out = append(out, "cpuset "+p.CPUSet)
		case FileOrder:
			out = append(out, "another directory order")
		case EnvOrder:
			out = append(out, "environment reversed")
		}
	}
	return out
}
