package manifest

import (
	"cmp"
	"slices"
	"strings"

	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// Dependency kinds, recorded as annotations.kind so a verifier can tell the
// resolvedDependencies apart without guessing from their names.
const (
	KindSource    = "source"
	KindWorkspace = "workspace"
	KindPipeline  = "pipeline"
	KindImage     = "image"
	KindFetch     = "fetch"
)

// resolvedDependencies lists every input of the run in a fixed order of
// kinds (source, workspace, pipeline, images, fetches), each kind sorted, so
// the list never depends on the order the runner observed things in.
func resolvedDependencies(in *Input) ([]*intoto.ResourceDescriptor, error) {
	var rds []*intoto.ResourceDescriptor
	add := func(rd *intoto.ResourceDescriptor, ann map[string]any) error {
		s, err := structpb.NewStruct(ann)
		if err != nil {
			return err
		}
		rd.Annotations = s
		rds = append(rds, rd)
		return nil
	}
	if err := sourceDependencies(in.Source, add); err != nil {
		return nil, err
	}
	if err := add(&intoto.ResourceDescriptor{
		Name:   in.Pipeline.Path,
		Digest: map[string]string{"sha256": in.Pipeline.SHA256},
	}, map[string]any{"kind": KindPipeline}); err != nil {
		return nil, err
	}
	for _, im := range imageGroups(in.Images) {
		if err := add(&intoto.ResourceDescriptor{
			Name:   im.ref,
			Digest: map[string]string{"sha256": im.digest},
		}, imageAnnotations(im)); err != nil {
			return nil, err
		}
	}
	fetches, err := fetchDependencies(in.Dependencies)
	if err != nil {
		return nil, err
	}
	for _, f := range fetches {
		if err := add(f.rd, f.ann); err != nil {
			return nil, err
		}
	}
	return rds, nil
}

type addFunc func(*intoto.ResourceDescriptor, map[string]any) error

// sourceDependencies records the git revision (SLSA's git+<remote>@<ref>
// URI with a gitCommit digest) and, separately, the digest of the tree that
// was actually built: the two differ when the checkout was dirty.
func sourceDependencies(s Source, add addFunc) error {
	if s.Commit != "" {
		rd := &intoto.ResourceDescriptor{Digest: map[string]string{"gitCommit": s.Commit}}
		if s.Remote != "" {
			remote, err := gitRemoteURI(s.Remote)
			if err != nil {
				return err
			}
			rd.Uri = "git+" + remote
			if s.Ref != "" {
				rd.Uri += "@" + s.Ref
			}
		} else {
			rd.Name = "source"
		}
		if err := add(rd, map[string]any{"kind": KindSource}); err != nil {
			return err
		}
	}
	if s.TreeSHA256 != "" {
		return add(&intoto.ResourceDescriptor{
			Name:   "workspace",
			Digest: map[string]string{"sha256": s.TreeSHA256},
		}, map[string]any{"kind": KindWorkspace, "format": TreeFormat})
	}
	return nil
}

type imageGroup struct {
	ref, digest string
	steps       []string
	services    [][2]string // step, alias
}

// imageAnnotations: "steps" lists the steps that ran in the image (always
// present, as before services existed) and "services" the services, each
// with its step and alias.
func imageAnnotations(im imageGroup) map[string]any {
	ann := map[string]any{"kind": KindImage, "steps": strs(im.steps)}
	if len(im.services) > 0 {
		svcs := make([]any, len(im.services))
		for i, s := range im.services {
			svcs[i] = map[string]any{"step": s[0], "alias": s[1]}
		}
		ann["services"] = svcs
	}
	return ann
}

// imageGroups merges steps that ran in the same image (same ref and same
// digest) into one dependency, sorted by ref then digest.
func imageGroups(images []Image) []imageGroup {
	byKey := map[[2]string]*imageGroup{}
	var groups []*imageGroup
	for _, im := range images {
		d := strings.TrimPrefix(im.Digest, "sha256:")
		k := [2]string{im.Ref, d}
		g := byKey[k]
		if g == nil {
			g = &imageGroup{ref: im.Ref, digest: d}
			byKey[k] = g
			groups = append(groups, g)
		}
		if im.Service != "" {
			g.services = append(g.services, [2]string{im.Step, im.Service})
			continue
		}
		g.steps = append(g.steps, im.Step)
	}
	out := make([]imageGroup, len(groups))
	for i, g := range groups {
		g.steps = sortedSet(g.steps)
		slices.SortFunc(g.services, func(a, b [2]string) int {
			return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
		})
		g.services = slices.Compact(g.services)
		out[i] = *g
	}
	slices.SortFunc(out, func(a, b imageGroup) int {
		return cmp.Or(cmp.Compare(a.ref, b.ref), cmp.Compare(a.digest, b.digest))
	})
	return out
}

type fetch struct {
	d   Dependency
	rd  *intoto.ResourceDescriptor
	ann map[string]any
}

// fetchDependencies maps proxy records to dependencies sorted by URI, then
// step, then every remaining field, so that even repeated identical fetches
// land in a stable order.
func fetchDependencies(deps []Dependency) ([]fetch, error) {
	out := make([]fetch, 0, len(deps))
	for _, d := range deps {
		uri, tunnel, err := dependencyURI(d.URL)
		if err != nil {
			return nil, err
		}
		rd := &intoto.ResourceDescriptor{Uri: uri}
		if d.SHA256 != "" {
			rd.Digest = map[string]string{"sha256": d.SHA256}
		}
		ann := map[string]any{"kind": KindFetch, "step": d.Step}
		if tunnel {
			ann["tunnel"] = true
		}
		for _, kv := range [][2]string{{"method", d.Method}, {"module", d.Module}, {"version", d.Version}} {
			if kv[1] != "" {
				ann[kv[0]] = kv[1]
			}
		}
		for _, kv := range []struct {
			k string
			v int64
		}{{"size", d.Size}, {"bytesIn", d.BytesIn}, {"bytesOut", d.BytesOut}} {
			if kv.v != 0 {
				ann[kv.k] = float64(kv.v)
			}
		}
		out = append(out, fetch{d: d, rd: rd, ann: ann})
	}
	slices.SortFunc(out, func(a, b fetch) int {
		return cmp.Or(
			cmp.Compare(a.rd.Uri, b.rd.Uri), cmp.Compare(a.d.Step, b.d.Step),
			cmp.Compare(a.d.SHA256, b.d.SHA256), cmp.Compare(a.d.Method, b.d.Method),
			cmp.Compare(a.d.Size, b.d.Size), cmp.Compare(a.d.BytesIn, b.d.BytesIn),
			cmp.Compare(a.d.BytesOut, b.d.BytesOut), cmp.Compare(a.d.Module, b.d.Module),
			cmp.Compare(a.d.Version, b.d.Version))
	})
	return out, nil
}
