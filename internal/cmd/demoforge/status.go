package main

// The forge's side of commit statuses, in GitHub's dialect: the agent
// posts POST /repos/OWNER/REPO/statuses/SHA with "Authorization: Bearer
// TOKEN", and the demo reads back what arrived with GitHub's
// GET /repos/OWNER/REPO/commits/REF/statuses (newest first).

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// commitStatus is one status as GitHub's API takes and returns it.
type commitStatus struct {
	State       string    `json:"state"`
	TargetURL   string    `json:"target_url,omitempty"`
	Description string    `json:"description,omitempty"`
	Context     string    `json:"context"`
	CreatedAt   time.Time `json:"created_at"`
}

// statusAPI records the statuses posted for each repository's commits.
type statusAPI struct {
	tokenFile string
	mu        sync.Mutex
	byCommit  map[string][]commitStatus // "owner/name@sha" → oldest first
}

func newStatusAPI(tokenFile string) *statusAPI {
	return &statusAPI{tokenFile: tokenFile, byCommit: map[string][]commitStatus{}}
}

func (s *statusAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("POST /repos/{owner}/{repo}/statuses/{sha}", s.post)
	mux.HandleFunc("GET /repos/{owner}/{repo}/commits/{ref}/statuses", s.list)
}

// authorized checks the bearer token against the token file, read at
// each request as the agent reads its copy.
func (s *statusAPI) authorized(w http.ResponseWriter, r *http.Request) bool {
	want, err := os.ReadFile(s.tokenFile)
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if err != nil || !ok || len(strings.TrimSpace(string(want))) == 0 ||
		subtle.ConstantTimeCompare([]byte(token), []byte(strings.TrimSpace(string(want)))) != 1 {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return false
	}
	return true
}

func (s *statusAPI) post(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	var st commitStatus
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&st); err != nil {
		http.Error(w, `{"message":"Problems parsing JSON"}`, http.StatusBadRequest)
		return
	}
	if !slices.Contains([]string{"pending", "success", "failure", "error"}, st.State) {
		http.Error(w, `{"message":"Validation Failed: state"}`, http.StatusUnprocessableEntity)
		return
	}
	if st.Context == "" {
		st.Context = "default" // GitHub's default
	}
	st.CreatedAt = time.Now().UTC()
	key := r.PathValue("owner") + "/" + r.PathValue("repo") + "@" + r.PathValue("sha")
	s.mu.Lock()
	s.byCommit[key] = append(s.byCommit[key], st)
	s.mu.Unlock()
	fmt.Fprintf(os.Stderr, "demoforge: commit status %s %q for %s\n", st.State, st.Context, key)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(st)
}

func (s *statusAPI) list(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	key := r.PathValue("owner") + "/" + r.PathValue("repo") + "@" + r.PathValue("ref")
	s.mu.Lock()
	out := slices.Clone(s.byCommit[key])
	s.mu.Unlock()
	slices.Reverse(out) // GitHub lists the newest first
	if out == nil {
		out = []commitStatus{}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// statuses waits until the statuses of a commit, oldest first, are the
// wanted states, each linking to the wanted target, and prints them. It
// fails when they do not arrive in time or arrive otherwise.
func statuses(args []string) error {
	fs := flag.NewFlagSet("statuses", flag.ExitOnError)
	api := fs.String("api", "", "the forge's API base URL")
	repo := fs.String("repo", "", "owner/name")
	commit := fs.String("commit", "", "the commit")
	tokenFile := fs.String("token-file", "", "file holding the API token")
	want := fs.String("want", "pending,success", "the states expected, oldest first")
	target := fs.String("target", "", "the link every status must carry")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for them")
	fs.Parse(args)
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	wanted := strings.Split(*want, ",")
	deadline := time.Now().Add(*timeout)
	for {
		got, err := listStatuses(*api, *repo, *commit, strings.TrimSpace(string(tok)))
		if err != nil {
			return err
		}
		slices.Reverse(got) // oldest first
		if len(got) >= len(wanted) || time.Now().After(deadline) {
			return checkStatuses(got, wanted, *target)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func listStatuses(api, repo, commit, token string) ([]commitStatus, error) {
	req, err := http.NewRequest("GET", strings.TrimRight(api, "/")+"/repos/"+repo+"/commits/"+commit+"/statuses", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("list statuses: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	var got []commitStatus
	return got, json.NewDecoder(resp.Body).Decode(&got)
}

func checkStatuses(got []commitStatus, wanted []string, target string) error {
	var errs []error
	for i, st := range got {
		fmt.Printf("%s  %-8s %s  %q  %s\n", st.CreatedAt.Format("15:04:05.000"), st.State, st.Context, st.Description, st.TargetURL)
		if target != "" && st.TargetURL != target {
			errs = append(errs, fmt.Errorf("status %d links to %q, not %q", i+1, st.TargetURL, target))
		}
	}
	states := make([]string, len(got))
	for i, st := range got {
		states[i] = st.State
	}
	if !slices.Equal(states, wanted) {
		errs = append(errs, fmt.Errorf("the forge received statuses %v, want %v", states, wanted))
	}
	return errors.Join(errs...)
}
