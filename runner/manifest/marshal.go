package manifest

import (
	"fmt"
	"io"
	"os"

	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
)

// maxStatementSize bounds what ReadFile will load; real statements are a few
// hundred KiB even with thousands of fetches.
const maxStatementSize = 64 << 20

// Marshal encodes st as canonical JSON (RFC 8785: sorted keys, no
// insignificant whitespace) followed by one newline. Canonical form is
// chosen over indentation so that the bytes, and therefore any signature
// or digest over them, depend only on the content; pipe the file through
// `jq .` to read it.
func Marshal(st *intoto.Statement) ([]byte, error) {
	data, err := protojson.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	out, err := canonicalJSON(data)
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// WriteFile writes Marshal(st) to path atomically: the bytes go to a
// temporary file in the same directory, which is synced and then renamed
// over path, and the directory is synced. A reader sees the old file or the
// complete new one, never a prefix, even across a crash.
func WriteFile(path string, st *intoto.Statement) error {
	data, err := Marshal(st)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// ReadFile loads a statement written by WriteFile (or any in-toto v1
// statement carrying SLSA provenance v1). Unknown fields are errors: a
// verifier must not silently skip what it does not understand.
func ReadFile(path string) (*intoto.Statement, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStatementSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: reading %s: %w", path, err)
	}
	if len(data) > maxStatementSize {
		return nil, fmt.Errorf("manifest: %s is larger than %d bytes", path, maxStatementSize)
	}
	st, err := Unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return st, nil
}

// Unmarshal decodes and checks a statement: its _type, its predicateType,
// that the predicate is well-formed SLSA provenance v1, and that every
// subject is a valid resource descriptor.
func Unmarshal(data []byte) (*intoto.Statement, error) {
	st := &intoto.Statement{}
	if err := protojson.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("manifest: not an in-toto statement: %w", err)
	}
	if st.GetType() != StatementType {
		return nil, fmt.Errorf("manifest: _type is %q, want %q", st.GetType(), StatementType)
	}
	if st.GetPredicateType() != PredicateType {
		return nil, fmt.Errorf("manifest: predicateType is %q, want %q", st.GetPredicateType(), PredicateType)
	}
	prov, err := Provenance(st)
	if err != nil {
		return nil, err
	}
	if err := prov.Validate(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	for i, s := range st.GetSubject() {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("manifest: subject[%d]: %w", i, err)
		}
	}
	return st, nil
}
