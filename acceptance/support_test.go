package acceptance

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/keyname"
)

// ledger records every upstream resource the run created and what became
// of it, printed at the end so an operator can check the account.
type resourceLedger struct {
	mu      sync.Mutex
	created []string
	deleted []string
	markers map[string]bool // whose marked leftovers the final sweep deletes
}

func newLedger() *resourceLedger { return &resourceLedger{markers: map[string]bool{}} }

func (l *resourceLedger) create(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	fmt.Println("acceptance: created", msg)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.created = append(l.created, msg)
}

func (l *resourceLedger) delete(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	fmt.Println("acceptance: deleted", msg)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deleted = append(l.deleted, msg)
}

func (l *resourceLedger) addMarker(m string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.markers[m] = true
}

func (l *resourceLedger) markerList() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.markers))
	for m := range l.markers {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

func (l *resourceLedger) print(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(w, "acceptance: %d resources created upstream, %d deletions\n", len(l.created), len(l.deleted))
	for _, c := range l.created {
		fmt.Fprintln(w, "  created:", c)
	}
	for _, d := range l.deleted {
		fmt.Fprintln(w, "  deleted:", d)
	}
}

// reportRow is one answer the documents do not give.
type reportRow struct{ question, observed string }

// findings collects what the services answered where their documents are
// silent, for the next release to tighten defaults.
type findings struct {
	mu   sync.Mutex
	rows []reportRow
}

func newReport() *findings { return &findings{} }

func (f *findings) note(question, format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows = append(f.rows, reportRow{question, fmt.Sprintf(format, a...)})
}

func (f *findings) get(question string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rows {
		if r.question == question {
			return r.observed, true
		}
	}
	return "", false
}

func (f *findings) write(path, mode string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "# Acceptance report\n\nRun %s against %s.\n", time.Now().UTC().Format(time.RFC3339), map[string]string{
		modeReal: "the real services", modeFakes: "the in-process fakes (this proves the suite, not the services)",
	}[mode])
	fmt.Fprintf(&b, "\nClimatiq: %s\nAltruistiq: %s\n\n", describeCQ(), describeAQ())
	b.WriteString("| question | observed |\n|---|---|\n")
	for _, r := range f.rows {
		fmt.Fprintf(&b, "| %s | %s |\n", r.question, strings.ReplaceAll(r.observed, "|", `\|`))
	}
	if len(f.rows) == 0 {
		b.WriteString("| (nothing observed) | |\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// recorder counts the suite's own requests and keeps what 429s and 503s
// said about waiting; it never provokes them.
type recorder struct {
	base http.RoundTripper

	mu          sync.Mutex
	requests    int
	retryAfters []string // "429: Retry-After 1", "503: (none)"
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		ra := resp.Header.Get("Retry-After")
		if ra == "" {
			ra = "(none)"
		}
		r.retryAfters = append(r.retryAfters, fmt.Sprintf("%d on %s %s: Retry-After %s", resp.StatusCode, req.Method, req.URL.Path, ra))
	}
	return resp, err
}

func (r *recorder) seen() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, append([]string(nil), r.retryAfters...)
}

var cqRecorder = &recorder{base: http.DefaultTransport.(*http.Transport).Clone()}

// newManagementClient is the suite's own client, for checks and cleanup.
func newManagementClient() (*climatiq.Client, error) {
	return climatiq.New(climatiq.Options{
		ManagementURL: cqTarget.managementURL,
		APIURL:        cqTarget.apiURL,
		ManagementKey: cqTarget.managementKey,
		MaxRetries:    3,
		Transport:     cqRecorder,
	})
}

func managementClient(t testing.TB) *climatiq.Client {
	t.Helper()
	c, err := newManagementClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// poll calls ok with growing pauses (0.25 s doubling to 8 s) until it holds
// or within passes: a handful of requests, never a flood.
func poll(within time.Duration, ok func() bool) (time.Duration, bool) {
	start := time.Now()
	pause := 250 * time.Millisecond
	for {
		if ok() {
			return time.Since(start), true
		}
		if time.Since(start)+pause > within {
			return time.Since(start), false
		}
		time.Sleep(pause)
		pause = min(2*pause, 8*time.Second)
	}
}

// cli runs the vault CLI and fails the test on error.
func cli(t testing.TB, args ...string) string {
	t.Helper()
	out, err := vault.Vault(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cliJSON runs the vault CLI with -format=json and decodes its answer.
func cliJSON(t testing.TB, args ...string) *api.Secret {
	t.Helper()
	out := cli(t, args...)
	secret := new(api.Secret)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(secret); err != nil {
		t.Fatalf("decoding `vault %s`: %v", args[0], err)
	}
	return secret
}

func str(s *api.Secret, field string) string {
	v, _ := s.Data[field].(string)
	return v
}

func randomPart(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	for i, c := range buf {
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf)
}

// markedName is a name carrying marker, so the final sweep and
// carbon-sweep recognise what the run made by hand.
func markedName(t testing.TB, marker string, created time.Time, rest string) string {
	t.Helper()
	name, err := keyname.Format(marker, created, randomPart(keyname.NonceLength), rest)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// statusOf words an upstream error answer for the report.
func statusOf(err error) string {
	var e *climatiq.Error
	switch {
	case err == nil:
		return "success (2xx)"
	case errors.As(err, &e):
		return fmt.Sprintf("%d %s: %q", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
	}
	return err.Error()
}

// sweepLeftovers deletes whatever marked resources of this run's markers
// are still upstream, so a failed step leaves nothing behind. A project
// given in CLIMATIQ_PROJECT_ID is never deleted: it carries no marker.
func sweepLeftovers() {
	markers := ledger.markerList()
	if len(markers) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := newManagementClient()
	if err != nil {
		fmt.Println("acceptance: final sweep:", err)
		return
	}
	defer c.Close()
	ours := func(name string) bool {
		m, _, ok := keyname.Parse(name)
		return ok && slices.Contains(markers, m)
	}
	projects, err := c.ListProjects(ctx)
	if err != nil {
		fmt.Println("acceptance: final sweep could not list projects:", err)
		return
	}
	left := 0
	for _, p := range projects {
		if ours(p.Name) {
			left++
			if err := c.DeleteProject(ctx, p.ID); err != nil && !errors.Is(err, climatiq.ErrNotFound) {
				fmt.Printf("acceptance: LEFT UPSTREAM: project %s (%s): %v\n", p.ID, p.Name, err)
			} else {
				ledger.delete("project %s (%s) in the final sweep", p.ID, p.Name)
			}
			continue
		}
		keys, err := c.ListKeys(ctx, p.ID)
		if err != nil {
			continue
		}
		for _, k := range keys {
			if !ours(k.Name) {
				continue
			}
			left++
			if err := c.DeleteProjectKey(ctx, p.ID, k.ID); err != nil && !errors.Is(err, climatiq.ErrNotFound) {
				fmt.Printf("acceptance: LEFT UPSTREAM: key %s (%s): %v\n", k.ID, k.Name, err)
			} else {
				ledger.delete("key %s (%s) in the final sweep", k.ID, k.Name)
			}
		}
	}
	fmt.Printf("acceptance: final sweep for markers %s: %d leftovers found\n", strings.Join(markers, ", "), left)
}
