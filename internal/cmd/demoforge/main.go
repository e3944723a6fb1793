// Command demoforge stands in for a git forge in `make demo-agent`: it
// serves a directory of bare repositories over HTTP with git's own
// http-backend on loopback, and sends GitHub-style push webhooks signed
// with HMAC-SHA256, as GitHub would. With -status-token-file it also
// takes GitHub's commit-status API (status.go) and records what it got;
// `demoforge statuses` prints a commit's and checks them.
//
//	demoforge serve -root DIR -addr-file FILE [-status-token-file FILE]
//	demoforge statuses -api http://ADDR -repo OWNER/NAME -commit SHA -token-file F -want pending,success -target URL
//	demoforge freeport
//	demoforge push -url http://127.0.0.1:8080/hooks/app -secret-file F -repo URL -ref refs/heads/main -commit SHA
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"strings"
)

const gitHTTPBackend = "/usr/lib/git-core/git-http-backend"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demoforge serve|push|statuses|freeport [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "push":
		err = push(os.Args[2:])
	case "statuses":
		err = statuses(os.Args[2:])
	case "freeport":
		var l net.Listener
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
			fmt.Println(l.Addr().(*net.TCPAddr).Port)
			l.Close()
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demoforge:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	root := fs.String("root", "", "directory holding bare repositories")
	addrFile := fs.String("addr-file", "", "write the listening address here")
	statusToken := fs.String("status-token-file", "", "also serve GitHub's commit-status API, for this token")
	fs.Parse(args)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*addrFile, []byte(l.Addr().String()), 0o644); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", &cgi.Handler{Path: gitHTTPBackend, Env: []string{"GIT_PROJECT_ROOT=" + *root, "GIT_HTTP_EXPORT_ALL=1"}})
	if *statusToken != "" {
		newStatusAPI(*statusToken).register(mux)
	}
	return http.Serve(l, mux)
}

func push(args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	url := fs.String("url", "", "the agent's webhook URL")
	secretFile := fs.String("secret-file", "", "file holding the hook's secret")
	repo := fs.String("repo", "", "clone URL of the repository")
	ref := fs.String("ref", "refs/heads/main", "pushed ref")
	commit := fs.String("commit", "", "pushed commit")
	fs.Parse(args)
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{
		"ref": *ref, "after": *commit, "deleted": false,
		"repository": map[string]any{"clone_url": *repo},
		"pusher":     map[string]any{"name": "demo"},
	})
	mac := hmac.New(sha256.New, []byte(strings.TrimRight(string(secret), "\r\n")))
	mac.Write(body)
	var id [8]byte
	rand.Read(id[:])
	req, _ := http.NewRequest("POST", *url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", hex.EncodeToString(id[:]))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("webhook answered %s: %s", resp.Status, out)
	}
	var sub struct{ ID string }
	json.Unmarshal(out, &sub)
	fmt.Println(sub.ID)
	return nil
}
