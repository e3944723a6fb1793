package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

// Material is one fetched body a provenance records: what a replay may
// serve and what export-materials copies.
type Material struct {
	URL     string `json:"url"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size,omitempty"`
	Step    string `json:"step,omitempty"`
	Module  string `json:"module,omitempty"`
	Version string `json:"version,omitempty"`
}

// Replay is a recorded run to rebuild from: the bodies its provenance lists
// (served from the store, with no upstream at all) and the artifacts it
// produced (compared with the rebuild's).
type Replay struct {
	// Path and SHA256 identify the provenance file; PipelineSHA256 is the
	// digest of the pipeline file it records.
	Path           string
	SHA256         string
	PipelineSHA256 string
	// PipelinePath is the pipeline file as recorded (workspace-relative).
	PipelinePath string
	// Materials are the recorded fetches with a digest.
	Materials []Material
	// Tunnels are fetches recorded without content (opaque CONNECT
	// tunnels): a replay cannot serve them.
	Tunnels  []string
	Subjects []manifest.Subject
	// SourceDateEpoch is what the recorded run gave its steps (nil: none);
	// WorkspaceSHA256 the tree digest of its workspace before the first
	// step; Flags the recorded command-line flags
	// (externalParameters.flags), which a replay reuses unless told
	// otherwise; Images the recorded images by digest ("ref" -> "sha256:…").
	SourceDateEpoch *int64
	WorkspaceSHA256 string
	Flags           map[string][]string
	Images          map[string]string
	// Steps are the recorded steps in order with their workspace digests.
	Steps []StepDigests

	set *egress.Materials
}

// LoadReplay reads a provenance statement written by `cleanroom run`.
func LoadReplay(path string) (*Replay, error) {
	st, err := manifest.ReadFile(path)
	if err != nil {
		return nil, err
	}
	prov, err := manifest.Provenance(st)
	if err != nil {
		return nil, err
	}
	if bt := prov.GetBuildDefinition().GetBuildType(); bt != manifest.BuildType {
		return nil, fmt.Errorf("%s: buildType is %q, not %q: not a cleanroom run", path, bt, manifest.BuildType)
	}
	sum, _, err := manifest.HashFile(path)
	if err != nil {
		return nil, err
	}
	r := &Replay{Path: path, SHA256: sum, set: egress.NewMaterials()}
	r.PipelineSHA256 = prov.GetBuildDefinition().GetExternalParameters().GetFields()["pipeline"].
		GetStructValue().GetFields()["digest"].GetStructValue().GetFields()["sha256"].GetStringValue()
	r.PipelinePath = prov.GetBuildDefinition().GetExternalParameters().GetFields()["pipeline"].
		GetStructValue().GetFields()["path"].GetStringValue()
	r.set.Normalize = manifest.RedactURL
	bd := prov.GetBuildDefinition()
	internal := bd.GetInternalParameters().GetFields()
	if v, ok := internal["sourceDateEpoch"]; ok {
		n := int64(v.GetStructValue().GetFields()["value"].GetNumberValue())
		r.SourceDateEpoch = &n
	}
	r.Flags = map[string][]string{}
	for name, v := range bd.GetExternalParameters().GetFields()["flags"].GetStructValue().GetFields() {
		for _, e := range v.GetListValue().GetValues() {
			r.Flags[name] = append(r.Flags[name], e.GetStringValue())
		}
	}
	r.Images = map[string]string{}
	r.Steps = StepDigestsOf(prov)
	for _, rd := range bd.GetResolvedDependencies() {
		ann := rd.GetAnnotations().GetFields()
		switch ann["kind"].GetStringValue() {
		case manifest.KindWorkspace:
			r.WorkspaceSHA256 = rd.GetDigest()["sha256"]
		case manifest.KindImage:
			r.Images[rd.GetName()] = "sha256:" + rd.GetDigest()["sha256"]
		}
		if ann["kind"].GetStringValue() != manifest.KindFetch {
			continue
		}
		d := rd.GetDigest()["sha256"]
		if d == "" {
			r.Tunnels = append(r.Tunnels, rd.GetUri())
			continue
		}
		m := Material{
			URL: rd.GetUri(), SHA256: d, Size: int64(ann["size"].GetNumberValue()),
			Step: ann["step"].GetStringValue(), Module: ann["module"].GetStringValue(), Version: ann["version"].GetStringValue(),
		}
		r.Materials = append(r.Materials, m)
		r.set.Add(m.URL, m.SHA256, m.Module, m.Version)
	}
	for _, s := range st.GetSubject() {
		r.Subjects = append(r.Subjects, manifest.Subject{Name: s.GetName(), SHA256: s.GetDigest()["sha256"]})
	}
	return r, nil
}

// materials is the set the proxy serves from; nil for a nil Replay.
func (r *Replay) materials() *egress.Materials {
	if r == nil {
		return nil
	}
	return r.set
}

// ReplayResult compares a rebuild's artifacts with the recorded ones.
type ReplayResult struct {
	Provenance string `json:"provenance"`
	SHA256     string `json:"provenanceSha256"`
	// Reproduced is true when the rebuild produced exactly the recorded
	// artifacts: the same names with the same sha256, none missing and
	// none extra.
	Reproduced  bool                 `json:"reproduced"`
	Differences []ArtifactDifference `json:"differences,omitempty"`
	// WorkspaceDiffers is set when the workspace the steps started from
	// is not the recorded one (another checkout, local changes): the
	// inputs differ, so the run is not a reproduction whatever its
	// artifacts. Recorded and Replayed give both tree digests.
	WorkspaceDiffers  bool   `json:"workspaceDiffers,omitempty"`
	RecordedWorkspace string `json:"recordedWorkspace,omitempty"`
	ReplayedWorkspace string `json:"replayedWorkspace,omitempty"`
	// Images are those that resolved to another digest than recorded.
	Images []ImageDifference `json:"images,omitempty"`
}

// ArtifactDifference is one artifact that was not reproduced. Recorded or
// Replayed is empty when the artifact exists on one side only.
type ArtifactDifference struct {
	Name     string `json:"name"`
	Recorded string `json:"recorded,omitempty"`
	Replayed string `json:"replayed,omitempty"`
}

// Compare checks the rebuild's subjects against the recorded ones.
func (r *Replay) Compare(got []manifest.Subject) *ReplayResult {
	res := &ReplayResult{Provenance: r.Path, SHA256: r.SHA256}
	want := map[string]string{}
	for _, s := range r.Subjects {
		want[s.Name] = s.SHA256
	}
	have := map[string]string{}
	for _, s := range got {
		have[s.Name] = s.SHA256
	}
	for name, d := range want {
		if have[name] != d {
			res.Differences = append(res.Differences, ArtifactDifference{Name: name, Recorded: d, Replayed: have[name]})
		}
	}
	for name, d := range have {
		if _, ok := want[name]; !ok {
			res.Differences = append(res.Differences, ArtifactDifference{Name: name, Replayed: d})
		}
	}
	sort.Slice(res.Differences, func(i, j int) bool { return res.Differences[i].Name < res.Differences[j].Name })
	res.Reproduced = len(res.Differences) == 0
	return res
}

// MaterialsFile names the list of materials in an export directory.
const MaterialsFile = "materials.json"

// ExportReport says what ExportMaterials did.
type ExportReport struct {
	Exported int      `json:"exported"`
	Bytes    int64    `json:"bytes"`
	Missing  []string `json:"missing,omitempty"` // "url (sha256:…)" not in the store, or corrupt
	Tunnels  []string `json:"tunnels,omitempty"` // recorded without content
}

// ExportMaterials copies the bodies a provenance lists (verified) and their
// index entries from src into dir, which becomes a store of its own plus
// materials.json. A body missing from src is reported, not fatal, so that
// everything that can be moved is.
func ExportMaterials(src *store.Store, r *Replay, dir string) (ExportReport, error) {
	var rep ExportReport
	rep.Tunnels = r.Tunnels
	dst, err := store.Open(dir, store.Options{MaxBytes: 1 << 62})
	if err != nil {
		return rep, err
	}
	entries, err := src.Entries()
	if err != nil {
		return rep, err
	}
	byURL := map[string][]store.Entry{}
	for _, e := range entries {
		u := manifest.RedactURL(e.URL)
		byURL[u] = append(byURL[u], e)
	}
	done := map[string]bool{}
	for _, m := range r.Materials {
		if !done[m.SHA256] {
			n, err := copyBlob(src, dst, m.SHA256)
			if err != nil {
				rep.Missing = append(rep.Missing, fmt.Sprintf("%s (sha256:%s): %v", m.URL, m.SHA256, err))
				continue
			}
			done[m.SHA256] = true
			rep.Exported++
			rep.Bytes += n
		}
		for _, e := range byURL[m.URL] {
			if e.SHA256 == m.SHA256 {
				e.URL = manifest.RedactURL(e.URL) // no credentials leave the machine
				if err := dst.PutEntry(e); err != nil {
					return rep, err
				}
			}
		}
	}
	data, err := json.MarshalIndent(struct {
		Provenance string     `json:"provenance"`
		SHA256     string     `json:"provenanceSha256"`
		Materials  []Material `json:"materials"`
	}{filepath.Base(r.Path), r.SHA256, r.Materials}, "", "  ")
	if err != nil {
		return rep, err
	}
	if err := os.WriteFile(filepath.Join(dir, MaterialsFile), append(data, '\n'), 0o644); err != nil {
		return rep, err
	}
	if len(rep.Missing) > 0 {
		return rep, fmt.Errorf("%d recorded materials are not in the store %s", len(rep.Missing), src.Dir())
	}
	return rep, nil
}

// ImportReport says what ImportMaterials did.
type ImportReport struct {
	Imported int      `json:"imported"`
	Bytes    int64    `json:"bytes"`
	Entries  int      `json:"entries"`
	Rejected []string `json:"rejected,omitempty"` // blobs that failed verification
}

// ImportMaterials copies every blob and index entry of an export directory
// into dst, verifying each blob against its digest on the way.
func ImportMaterials(dst *store.Store, dir string) (ImportReport, error) {
	var rep ImportReport
	if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256")); err != nil {
		return rep, fmt.Errorf("%s is not a materials directory (no blobs/sha256): %w", dir, err)
	}
	src, err := store.Open(dir, store.Options{MaxBytes: 1 << 62})
	if err != nil {
		return rep, err
	}
	digests := map[string]bool{}
	filepath.WalkDir(filepath.Join(dir, "blobs", "sha256"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && store.ValidDigest(d.Name()) {
			digests[d.Name()] = true
		}
		return nil
	})
	sorted := make([]string, 0, len(digests))
	for d := range digests {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted)
	for _, d := range sorted {
		n, err := copyBlob(src, dst, d)
		if err != nil {
			rep.Rejected = append(rep.Rejected, fmt.Sprintf("sha256:%s: %v", d, err))
			continue
		}
		rep.Imported++
		rep.Bytes += n
	}
	entries, err := src.Entries()
	if err != nil {
		return rep, err
	}
	for _, e := range entries {
		if !dst.Has(e.SHA256) {
			continue
		}
		if err := dst.PutEntry(e); err != nil {
			return rep, err
		}
		rep.Entries++
	}
	if len(rep.Rejected) > 0 {
		return rep, fmt.Errorf("%d blobs failed verification and were not imported:\n  %s", len(rep.Rejected), strings.Join(rep.Rejected, "\n  "))
	}
	return rep, nil
}

// copyBlob copies one verified blob between stores.
func copyBlob(src, dst *store.Store, digest string) (int64, error) {
	b, err := src.Open(digest)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return 0, errors.New("not in the store")
		}
		return 0, err
	}
	defer b.Close()
	if dst.Has(digest) {
		if v, err := dst.Open(digest); err == nil {
			v.Close()
			return b.Size, nil
		}
	}
	if _, err := dst.Put(io.Reader(b), digest); err != nil {
		return 0, err
	}
	return b.Size, nil
}
