package sign

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	rekorpb "github.com/sigstore/rekor-tiles/v2/pkg/generated/protobuf"
	"google.golang.org/protobuf/encoding/protojson"
)

// rekorV2Client implements sigstore-go's sign.RekorV2Client over the given
// http.Client. rekor-tiles' own writer builds its transport internally, so
// KeylessOptions.HTTPClient (proxy, custom roots, test transports) would not
// reach Rekor with it. The API is one POST of a protobuf-JSON request that
// answers 201 with the TransparencyLogEntry (inclusion proof + checkpoint).
type rekorV2Client struct {
	base string
	hc   *http.Client
}

const rekorV2AddPath = "/api/v2/log/entries"

func (c *rekorV2Client) Add(ctx context.Context, entry any) (*protorekor.TransparencyLogEntry, error) {
	h, ok := entry.(*rekorpb.HashedRekordRequestV002)
	if !ok {
		return nil, fmt.Errorf("rekor v2: unsupported entry type %T", entry)
	}
	body, err := protojson.Marshal(&rekorpb.CreateEntryRequest{
		Spec: &rekorpb.CreateEntryRequest_HashedRekordRequestV002{HashedRekordRequestV002: h},
	})
	if err != nil {
		return nil, fmt.Errorf("rekor v2: encoding request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.base, "/")+rekorV2AddPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rekor v2: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 10<<20))
	if err != nil {
		return nil, fmt.Errorf("rekor v2: reading response: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("rekor v2 answered %s: %s", resp.Status, truncate(out, 512))
	}
	var tle protorekor.TransparencyLogEntry
	if err := protojson.Unmarshal(out, &tle); err != nil {
		return nil, fmt.Errorf("rekor v2: decoding entry: %w", err)
	}
	return &tle, nil
}

func truncate(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
