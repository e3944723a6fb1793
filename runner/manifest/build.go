package manifest

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/google/uuid"
	provenance "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// NewInvocationID returns a fresh random UUID for Input.InvocationID, for
// runs that have no CI job URL to point at.
func NewInvocationID() string {
	return uuid.NewString()
}

// Build validates in and returns the provenance statement describing it.
//
// The result depends only on in: lists are sorted or kept in their
// meaningful order as documented in docs/buildtype.md, so Marshal of the
// same Input gives the same bytes. A failed run (FailedStep set) must have no
// subjects: the statement then records what ran and where it stopped, but
// vouches for no artifact. A successful run may also have no subjects (a
// test-only pipeline); such a statement likewise vouches for nothing, and
// in-toto's own Statement.Validate rejects it.
func Build(in Input) (*intoto.Statement, error) {
	if in.BuilderID == "" {
		in.BuilderID = DefaultBuilderID
	}
	if err := validate(&in); err != nil {
		return nil, err
	}
	prov, err := provenancePredicate(&in)
	if err != nil {
		return nil, err
	}
	if err := prov.Validate(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	predicate, err := toStruct(prov)
	if err != nil {
		return nil, err
	}
	st := &intoto.Statement{
		Type:          StatementType,
		Subject:       subjects(in.Subjects),
		PredicateType: PredicateType,
		Predicate:     predicate,
	}
	for _, s := range st.Subject {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("manifest: subject %q: %w", s.Name, err)
		}
	}
	return st, nil
}

func provenancePredicate(in *Input) (*provenance.Provenance, error) {
	ext, err := externalParameters(in)
	if err != nil {
		return nil, err
	}
	internal, err := internalParameters(in)
	if err != nil {
		return nil, err
	}
	deps, err := resolvedDependencies(in)
	if err != nil {
		return nil, fmt.Errorf("manifest: resolvedDependencies: %w", err)
	}
	extS, err := structpb.NewStruct(ext)
	if err != nil {
		return nil, fmt.Errorf("manifest: externalParameters: %w", err)
	}
	intS, err := structpb.NewStruct(internal)
	if err != nil {
		return nil, fmt.Errorf("manifest: internalParameters: %w", err)
	}
	byproducts, err := byproductList(in.Byproducts)
	if err != nil {
		return nil, err
	}
	return &provenance.Provenance{
		BuildDefinition: &provenance.BuildDefinition{
			BuildType:            BuildType,
			ExternalParameters:   extS,
			InternalParameters:   intS,
			ResolvedDependencies: deps,
		},
		RunDetails: &provenance.RunDetails{
			Builder: &provenance.Builder{
				Id:      in.BuilderID,
				Version: map[string]string{"cleanroom": in.RunnerVersion},
			},
			Metadata: &provenance.BuildMetadata{
				InvocationId: in.InvocationID,
				StartedOn:    timestamppb.New(in.StartedOn),
				FinishedOn:   timestamppb.New(in.FinishedOn),
			},
			Byproducts: byproducts,
		},
	}, nil
}

// subjects maps artifacts to resource descriptors sorted by name.
func subjects(ss []Subject) []*intoto.ResourceDescriptor {
	sorted := slices.Clone(ss)
	slices.SortFunc(sorted, func(a, b Subject) int { return cmp.Compare(a.Name, b.Name) })
	out := make([]*intoto.ResourceDescriptor, len(sorted))
	for i, s := range sorted {
		out[i] = &intoto.ResourceDescriptor{Name: s.Name, Digest: map[string]string{"sha256": s.SHA256}}
	}
	return out
}

// byproductList maps byproducts to resource descriptors sorted by name, with
// the size as an annotation when known.
func byproductList(bs []Byproduct) ([]*intoto.ResourceDescriptor, error) {
	sorted := slices.Clone(bs)
	slices.SortFunc(sorted, func(a, b Byproduct) int { return cmp.Compare(a.Name, b.Name) })
	out := make([]*intoto.ResourceDescriptor, len(sorted))
	for i, b := range sorted {
		rd := &intoto.ResourceDescriptor{Name: b.Name, Digest: map[string]string{"sha256": b.SHA256}}
		if b.Size > 0 {
			ann, err := structpb.NewStruct(map[string]any{"size": float64(b.Size)})
			if err != nil {
				return nil, err
			}
			rd.Annotations = ann
		}
		out[i] = rd
	}
	return out, nil
}

// toStruct converts the typed predicate into the Struct a Statement carries,
// going through protojson so that field names are the JSON ones
// (buildDefinition, not build_definition).
func toStruct(prov *provenance.Provenance) (*structpb.Struct, error) {
	data, err := protojson.Marshal(prov)
	if err != nil {
		return nil, fmt.Errorf("manifest: encoding predicate: %w", err)
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("manifest: encoding predicate: %w", err)
	}
	return s, nil
}

// Provenance decodes the predicate of st into the typed SLSA form.
func Provenance(st *intoto.Statement) (*provenance.Provenance, error) {
	if st.GetPredicate() == nil {
		return nil, fmt.Errorf("manifest: statement has no predicate")
	}
	data, err := protojson.Marshal(st.GetPredicate())
	if err != nil {
		return nil, fmt.Errorf("manifest: predicate: %w", err)
	}
	prov := &provenance.Provenance{}
	if err := protojson.Unmarshal(data, prov); err != nil {
		return nil, fmt.Errorf("manifest: predicate is not SLSA provenance v1: %w", err)
	}
	return prov, nil
}
