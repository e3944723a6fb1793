package gitlab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
	"github.com/cleanroom-ci/cleanroom/internal/flock"
)

// Every job resolves its image and the helper image into the sandbox
// backend's store (archives are imported under a name of their content,
// registry images pinned by digest), so each new archive or tag a job
// names leaves an image behind. The driver records when it last used each
// image it resolved, and the cleanup of any job removes those unused for
// imageRetention and named by no job still on the host. Only images the
// driver recorded are ever removed: nothing else in the namespace is its
// to judge.

// imageRetention is how long an image nobody used is kept: long enough
// that a project's daily jobs never pull or import it again.
const imageRetention = 7 * 24 * time.Hour

// ImageRemover is the backend's optional image removal (the containerd
// executor's RemoveImage).
type ImageRemover interface {
	RemoveImage(ctx context.Context, name string) error
}

// imageUse is one record under <state-dir>/gitlab-images/.
type imageUse struct {
	Name     string    `json:"name"`
	LastUsed time.Time `json:"lastUsed"`
}

func imagesDir(stateDir string) string { return filepath.Join(stateDir, "gitlab-images") }

// lockImages takes the image records' lock: shared while a prepare
// resolves and records, exclusive (or not at all) for removal, so an
// image is never removed between a job's resolve and its record.
func lockImages(stateDir string, kind flock.Kind, try bool) (func(), error) {
	dir := imagesDir(stateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	take := func(p string, k flock.Kind) (*flock.Lock, error) { return flock.Acquire(context.Background(), p, k) }
	if try {
		take = flock.Try
	}
	l, err := take(filepath.Join(dir, "lock"), kind)
	if err != nil {
		return nil, err
	}
	return func() { l.Release() }, nil
}

func imageRecordPath(stateDir, name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(imagesDir(stateDir), hex.EncodeToString(sum[:16])+".json")
}

// noteImageUse records that a job uses the images named.
func noteImageUse(stateDir string, now time.Time, names ...string) error {
	for _, n := range names {
		if n == "" {
			continue
		}
		b, err := json.Marshal(imageUse{Name: n, LastUsed: now.UTC()})
		if err != nil {
			return err
		}
		if err := atomicfile.Write(imageRecordPath(stateDir, n), 0o600, func(w io.Writer) error {
			_, err := w.Write(b)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// liveImages are the images named by the jobs whose state is still on the
// host (prepared, not yet cleaned up).
func liveImages(stateDir string) map[string]bool {
	live := map[string]bool{}
	ents, _ := os.ReadDir(jobsRoot(stateDir))
	for _, e := range ents {
		if _, err := strconv.ParseInt(e.Name(), 10, 64); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(jobsRoot(stateDir), e.Name(), jobFile))
		if err != nil {
			continue
		}
		var st JobState
		if json.Unmarshal(b, &st) == nil {
			live[st.Image.Name] = true
			live[st.Helper.Name] = true
		}
	}
	return live
}

// removeUnusedImages removes the recorded images unused for
// imageRetention and named by no live job. A prepare in progress makes
// it skip this round.
func (d *Driver) removeUnusedImages(ctx context.Context, b Backend, log hclog.Logger) []error {
	rm, ok := b.(ImageRemover)
	if !ok {
		return nil
	}
	unlock, err := lockImages(d.StateDir, flock.Exclusive, true)
	if errors.Is(err, flock.ErrLocked) {
		return nil
	}
	if err != nil {
		return []error{err}
	}
	defer unlock()
	live := liveImages(d.StateDir)
	ents, err := os.ReadDir(imagesDir(d.StateDir))
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(imagesDir(d.StateDir), e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var u imageUse
		if err := json.Unmarshal(data, &u); err != nil || u.Name == "" {
			os.Remove(p)
			continue
		}
		if live[u.Name] || d.timeNow().Sub(u.LastUsed) < imageRetention {
			continue
		}
		log.Info("removing an image no job used recently", "image", u.Name, "last_used", u.LastUsed)
		if err := rm.RemoveImage(ctx, u.Name); err != nil && !strings.Contains(err.Error(), "no image") {
			errs = append(errs, fmt.Errorf("remove image %s: %w", u.Name, err))
			continue
		}
		os.Remove(p)
	}
	return errs
}
