package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/cleanroom-ci/cleanroom/internal/longpath"
)

// hashBufSize is the read size per worker. Larger buffers stop paying off
// once a read covers several pages of page cache; 256 KiB keeps the memory
// of a full worker pool small (workers × 256 KiB) whatever the file sizes.
const hashBufSize = 256 << 10

// checkEvery is how many bytes a hash reads between context checks, so that
// cancelling a multi-GiB file does not wait for its end.
const checkEvery = 64 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, hashBufSize); return &b }}

var hasherPool = sync.Pool{New: func() any { return sha256.New() }}

// HashFile returns the lowercase hex sha256 of the file at path and its
// size. It follows symlinks: callers that must not (TreeDigest,
// MatchArtifacts) resolve and check paths before hashing.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	sum, n, err := hashReader(context.Background(), f)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: hashing %s: %w", path, err)
	}
	return hex.EncodeToString(sum[:]), n, nil
}

// hashReader streams r through sha256 with a pooled buffer and hasher, so
// hashing allocates nothing per file in steady state.
func hashReader(ctx context.Context, r io.Reader) (sum [sha256.Size]byte, n int64, err error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	h := hasherPool.Get().(hash.Hash)
	defer hasherPool.Put(h)
	h.Reset()
	buf := *bp
	var sinceCheck int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			sinceCheck += int64(k)
			if sinceCheck >= checkEvery {
				sinceCheck = 0
				if err := ctx.Err(); err != nil {
					return sum, n, err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return sum, n, rerr
		}
	}
	h.Sum(sum[:0])
	return sum, n, nil
}

// hashNoFollow hashes a regular file without following a final symlink; it
// also reports the file's mode as seen on the open descriptor, so that the
// mode and the content come from the same file.
func hashNoFollow(ctx context.Context, path string) (sum [sha256.Size]byte, info os.FileInfo, err error) {
	f, err := openNoFollow(path)
	if err != nil {
		return sum, nil, err
	}
	defer f.Close()
	return hashOpenRegular(ctx, f, path)
}

// hashNoFollowIn is hashNoFollow of rel below dir, by a path of any length.
func hashNoFollowIn(ctx context.Context, dir *longpath.Dir, rel string) (sum [sha256.Size]byte, info os.FileInfo, err error) {
	f, err := dir.OpenFile(rel, os.O_RDONLY|noFollowFlags, 0)
	if err != nil {
		return sum, nil, err
	}
	defer f.Close()
	return hashOpenRegular(ctx, f, rel)
}

// hashOpenRegular hashes an open file that must (still) be a regular file,
// with the mode seen on the same descriptor.
func hashOpenRegular(ctx context.Context, f *os.File, name string) (sum [sha256.Size]byte, info os.FileInfo, err error) {
	if info, err = f.Stat(); err != nil {
		return sum, nil, err
	}
	if !info.Mode().IsRegular() {
		return sum, nil, fmt.Errorf("%s is no longer a regular file", name)
	}
	sum, _, err = hashReader(ctx, f)
	return sum, info, err
}
