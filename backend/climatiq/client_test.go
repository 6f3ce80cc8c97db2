package climatiq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/testutil"
)

const mgmtKey = "mgmt-s3cr3t-do-not-leak"

func newFake(t *testing.T) *climatiqtest.Server {
	t.Helper()
	fake := climatiqtest.NewServer(mgmtKey)
	t.Cleanup(fake.Close)
	return fake
}

func newClient(t *testing.T, fake *climatiqtest.Server, mutate func(*climatiq.Options)) *climatiq.Client {
	t.Helper()
	o := climatiq.Options{ManagementURL: fake.ManagementURL(), APIURL: fake.APIURL(), ManagementKey: mgmtKey, MaxRetries: 2}
	return testutil.NewClient(t, climatiq.New, o, mutate)
}

// assertNoSecrets fails if an error (or log) text carries a secret.
func assertNoSecrets(t *testing.T, text string, secrets ...string) {
	t.Helper()
	testutil.NoSecrets(t, text, append(secrets, mgmtKey)...)
}

func TestNewValidates(t *testing.T) {
	valid := climatiq.Options{ManagementURL: "https://m.example/v1/", APIURL: "http://127.0.0.1:1", ManagementKey: mgmtKey}
	tests := []struct {
		name   string
		mutate func(*climatiq.Options)
		ok     bool
	}{
		{"valid", func(*climatiq.Options) {}, true},
		{"no management key", func(o *climatiq.Options) { o.ManagementKey = "" }, false},
		{"no management URL", func(o *climatiq.Options) { o.ManagementURL = "" }, false},
		{"no API URL", func(o *climatiq.Options) { o.APIURL = "" }, false},
		{"relative URL", func(o *climatiq.Options) { o.ManagementURL = "/management" }, false},
		{"not a URL", func(o *climatiq.Options) { o.APIURL = "not a url" }, false},
		{"other scheme", func(o *climatiq.Options) { o.APIURL = "ftp://x.example" }, false},
		{"query in base", func(o *climatiq.Options) { o.ManagementURL = "https://x.example/?a=b" }, false},
		{"negative retries", func(o *climatiq.Options) { o.MaxRetries = -1 }, false},
		{"negative rate", func(o *climatiq.Options) { o.RateLimit = -1 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			tc.mutate(&o)
			_, err := climatiq.New(o)
			if (err == nil) != tc.ok {
				t.Fatalf("New = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				assertNoSecrets(t, err.Error())
			}
		})
	}
}

func TestMethods(t *testing.T) {
	type seed struct {
		project climatiq.Project
		key     climatiq.APIKey
	}
	tests := []struct {
		name  string
		call  func(context.Context, *climatiq.Client, seed) (any, error)
		check func(*testing.T, *climatiqtest.Server, seed, any)
	}{
		{
			name: "ListProjects",
			call: func(ctx context.Context, c *climatiq.Client, _ seed) (any, error) { return c.ListProjects(ctx) },
			check: func(t *testing.T, _ *climatiqtest.Server, s seed, got any) {
				ps := got.([]climatiq.Project)
				if len(ps) != 1 || ps[0].ID != s.project.ID || ps[0].Name != "p" || ps[0].Owner.ID == "" {
					t.Fatalf("projects = %+v", ps)
				}
			},
		},
		{
			name: "CreateProject",
			call: func(ctx context.Context, c *climatiq.Client, _ seed) (any, error) { return c.CreateProject(ctx, "new") },
			check: func(t *testing.T, fake *climatiqtest.Server, _ seed, got any) {
				p := got.(climatiq.Project)
				if p.ID == "" || p.Name != "new" || len(fake.Projects()) != 2 || fake.Stats().ProjectsCreated != 1 {
					t.Fatalf("project = %+v, upstream %+v", p, fake.Projects())
				}
			},
		},
		{
			name: "RenameProject",
			call: func(ctx context.Context, c *climatiq.Client, s seed) (any, error) {
				return c.RenameProject(ctx, s.project.ID, "renamed")
			},
			check: func(t *testing.T, fake *climatiqtest.Server, s seed, got any) {
				if p := got.(climatiq.Project); p.ID != s.project.ID || p.Name != "renamed" || fake.Projects()[0].Name != "renamed" {
					t.Fatalf("project = %+v", p)
				}
			},
		},
		{
			name: "DeleteProject",
			call: func(ctx context.Context, c *climatiq.Client, s seed) (any, error) {
				return nil, c.DeleteProject(ctx, s.project.ID)
			},
			check: func(t *testing.T, fake *climatiqtest.Server, _ seed, _ any) {
				if len(fake.Projects()) != 0 || len(fake.Keys()) != 0 {
					t.Fatalf("left %d projects and %d keys", len(fake.Projects()), len(fake.Keys()))
				}
			},
		},
		{
			name: "ListKeys",
			call: func(ctx context.Context, c *climatiq.Client, s seed) (any, error) {
				return c.ListKeys(ctx, s.project.ID)
			},
			check: func(t *testing.T, _ *climatiqtest.Server, s seed, got any) {
				if ks := got.([]climatiq.APIKey); len(ks) != 1 || ks[0] != s.key {
					t.Fatalf("keys = %+v, want [%+v]", ks, s.key)
				}
			},
		},
		{
			name: "CreateKey",
			call: func(ctx context.Context, c *climatiq.Client, s seed) (any, error) {
				return c.CreateKey(ctx, s.project.ID, "new-key")
			},
			check: func(t *testing.T, fake *climatiqtest.Server, s seed, got any) {
				k := got.(climatiq.APIKey)
				if k.ID == "" || !strings.HasPrefix(k.Key, "sk_") || k.Name != "new-key" || k.ProjectID() != s.project.ID {
					t.Fatalf("key = %+v", k)
				}
				if up, ok := fake.Key(k.ID); !ok || up != k {
					t.Fatalf("upstream has %+v, %v", up, ok)
				}
			},
		},
		{
			name: "RenameKey",
			call: func(ctx context.Context, c *climatiq.Client, s seed) (any, error) {
				return c.RenameKey(ctx, s.key.ID, "renamed")
			},
			check: func(t *testing.T, fake *climatiqtest.Server, s seed, got any) {
				up, _ := fake.Key(s.key.ID)
				if k := got.(climatiq.APIKey); k.ID != s.key.ID || k.Name != "renamed" || up.Name != "renamed" {
					t.Fatalf("key = %+v, upstream %+v", k, up)
				}
			},
		},
		{
			name: "DeleteKey",
			call: func(ctx context.Context, c *climatiq.Client, s seed) (any, error) {
				return nil, c.DeleteKey(ctx, s.key.ID)
			},
			check: func(t *testing.T, fake *climatiqtest.Server, s seed, _ any) {
				if _, ok := fake.Key(s.key.ID); ok {
					t.Fatal("key still upstream")
				}
			},
		},
		{
			name: "CheckManagementKey",
			call: func(ctx context.Context, c *climatiq.Client, _ seed) (any, error) {
				return nil, c.CheckManagementKey(ctx)
			},
			check: func(t *testing.T, fake *climatiqtest.Server, _ seed, _ any) {
				if n := fake.Stats().Requests; n != 1 {
					t.Fatalf("%d requests, want 1", n)
				}
			},
		},
		{
			name: "CheckKey",
			call: func(ctx context.Context, c *climatiq.Client, s seed) (any, error) {
				return nil, c.CheckKey(ctx, s.key.Key)
			},
			check: func(*testing.T, *climatiqtest.Server, seed, any) {},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			s := seed{project: fake.AddProject("p")}
			s.key = fake.AddKey(s.project.ID, "k")
			got, err := tc.call(context.Background(), newClient(t, fake, nil), s)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, fake, s, got)
		})
	}
}

func TestLifecycleErrors(t *testing.T) {
	fake := newFake(t)
	c := newClient(t, fake, nil)
	ctx := context.Background()
	k := fake.AddKey(fake.AddProject("p").ID, "k")

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"delete key", func() error { return c.DeleteKey(ctx, k.ID) }, nil},
		{"delete it again", func() error { return c.DeleteKey(ctx, k.ID) }, climatiq.ErrNotFound},
		{"check the deleted key", func() error { return c.CheckKey(ctx, k.Key) }, climatiq.ErrUnauthorized},
		{"rename the deleted key", func() error { _, err := c.RenameKey(ctx, k.ID, "x"); return err }, climatiq.ErrNotFound},
		{"delete its project", func() error { return c.DeleteProject(ctx, k.ProjectID()) }, nil},
		{"list keys of the deleted project", func() error { _, err := c.ListKeys(ctx, k.ProjectID()); return err }, climatiq.ErrNotFound},
		{"create key in it", func() error { _, err := c.CreateKey(ctx, k.ProjectID(), "x"); return err }, climatiq.ErrNotFound},
		{"revoked management key", func() error { fake.RevokeManagementKey(mgmtKey); return c.CheckManagementKey(ctx) }, climatiq.ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil {
				assertNoSecrets(t, err.Error(), k.Key)
			}
		})
	}
}

func TestEmptyArgumentsSendNothing(t *testing.T) {
	fake := newFake(t)
	c := newClient(t, fake, nil)
	ctx := context.Background()
	calls := map[string]func() error{
		"RenameProject": func() error { _, err := c.RenameProject(ctx, "", "x"); return err },
		"DeleteProject": func() error { return c.DeleteProject(ctx, "") },
		"ListKeys":      func() error { _, err := c.ListKeys(ctx, ""); return err },
		"CreateKey":     func() error { _, err := c.CreateKey(ctx, "", "x"); return err },
		"RenameKey":     func() error { _, err := c.RenameKey(ctx, "", "x"); return err },
		"DeleteKey":     func() error { return c.DeleteKey(ctx, "") },
		"CheckKey":      func() error { return c.CheckKey(ctx, "") },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s with an empty id succeeded", name)
		}
	}
	if n := fake.Stats().Requests; n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}

func TestRequestHeaders(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]http.Header{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method+" "+r.URL.Path] = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.Method {
		case http.MethodPost:
			_, _ = io.WriteString(w, `{"id":"key_1","key":"sk_1"}`)
		default:
			_, _ = io.WriteString(w, `[]`)
		}
	}))
	defer srv.Close()
	const userAgent = "Vault/v1.21.0 (+https://www.vaultproject.io/; vault-plugin-carbon/v9.9.9; go1.26)"
	c, err := climatiq.New(climatiq.Options{ManagementURL: srv.URL + "/mgmt", APIURL: srv.URL, ManagementKey: mgmtKey, UserAgent: userAgent})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateKey(ctx, "prj/1", "k"); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckKey(ctx, "sk_regular"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		request     string
		bearer      string
		contentType string
	}{
		{"POST /mgmt/project/prj/1/api-key", mgmtKey, "application/json"},
		{"GET /data/v1/unit-types", "sk_regular", ""},
	}
	for _, tc := range tests {
		t.Run(tc.request, func(t *testing.T) {
			h, ok := seen[tc.request]
			if !ok {
				t.Fatalf("no %s among %v", tc.request, seen)
			}
			want := map[string]string{
				"Authorization": "Bearer " + tc.bearer,
				"Accept":        "application/json",
				"User-Agent":    userAgent,
				"Content-Type":  tc.contentType,
			}
			for name, value := range want {
				if got := h.Get(name); got != value {
					t.Errorf("%s = %q, want %q", name, got, value)
				}
			}
		})
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		status   int
		sentinel error
	}{
		{http.StatusBadRequest, nil},
		{http.StatusUnauthorized, climatiq.ErrUnauthorized},
		{http.StatusForbidden, climatiq.ErrForbidden},
		{http.StatusNotFound, climatiq.ErrNotFound},
		{http.StatusTooManyRequests, climatiq.ErrRateLimited},
		{http.StatusInternalServerError, nil},
		{http.StatusServiceUnavailable, nil},
	}
	sentinels := []error{climatiq.ErrUnauthorized, climatiq.ErrForbidden, climatiq.ErrNotFound, climatiq.ErrRateLimited}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			fake := newFake(t)
			// A budget too small for any Retry-After: a 429 comes back at
			// once. A fresh client: a 429 pauses the client for a second.
			c := newClient(t, fake, func(o *climatiq.Options) { o.MaxRetries = 0; o.RetryBudget = time.Millisecond })
			fake.FailNext(1, tc.status)
			_, err := c.CreateProject(context.Background(), "p")
			var ce *climatiq.Error
			if !errors.As(err, &ce) || ce.StatusCode != tc.status || ce.Op != "create project" {
				t.Fatalf("err = %#v, want *Error with status %d", err, tc.status)
			}
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tc.sentinel) {
					t.Errorf("errors.Is(err, %v) = %v", s, got)
				}
			}
			if ce.Code != "injected_fault" || !strings.Contains(ce.Message, "Injected fault") {
				t.Errorf("upstream code/message lost: %+v", ce)
			}
			want := fmt.Sprintf("climatiq: create project: %d %s: ", tc.status, http.StatusText(tc.status))
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Error() = %q, want prefix %q", err, want)
			}
			assertNoSecrets(t, err.Error())
		})
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		maxRetries   int
		retryAfter   time.Duration // fake's Retry-After, 0 = none on 503
		failStatus   int
		failCount    int
		create       bool // CreateKey (POST), else ListProjects (GET)
		wantStatus   int  // 0 = success
		wantRequests int
		minDuration  time.Duration
	}{
		{name: "GET 503 then success", maxRetries: 2, failStatus: 503, failCount: 2, wantRequests: 3},
		{name: "GET 500 exhausts retries", maxRetries: 1, failStatus: 500, failCount: 2, wantStatus: 500, wantRequests: 2},
		{name: "GET 502 retried", maxRetries: 1, failStatus: 502, failCount: 1, wantRequests: 2},
		{name: "GET 400 not retried", maxRetries: 3, failStatus: 400, failCount: 1, wantStatus: 400, wantRequests: 1},
		{name: "GET 503 Retry-After honoured", maxRetries: 1, retryAfter: time.Second, failStatus: 503, failCount: 1, wantRequests: 2, minDuration: time.Second},
		// A create answered 5xx may have happened: it is looked up by name
		// (the GET in between) before it is sent again.
		{name: "POST 503 looked up, then retried", maxRetries: 2, failStatus: 503, failCount: 1, create: true, wantRequests: 3},
		{name: "POST 500 looked up, then retried", maxRetries: 3, failStatus: 500, failCount: 1, create: true, wantRequests: 3},
		{name: "POST 502 looked up, then retried", maxRetries: 3, failStatus: 502, failCount: 1, create: true, wantRequests: 3},
		{name: "POST 500 looked up, no retry left", maxRetries: 0, failStatus: 500, failCount: 1, create: true, wantStatus: 500, wantRequests: 2},
		{name: "429 not counted against MaxRetries", maxRetries: 0, failStatus: 429, failCount: 1, create: true, wantRequests: 2, minDuration: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			p := fake.AddProject("p")
			c := newClient(t, fake, func(o *climatiq.Options) { o.MaxRetries = tc.maxRetries })
			fake.SetRetryAfter(tc.retryAfter)
			fake.FailNext(tc.failCount, tc.failStatus)
			start := time.Now()
			var err error
			if tc.create {
				_, err = c.CreateKey(context.Background(), p.ID, "k")
			} else {
				_, err = c.ListProjects(context.Background())
			}
			elapsed := time.Since(start)
			var ce *climatiq.Error
			switch {
			case tc.wantStatus == 0 && err != nil:
				t.Fatalf("err = %v, want success", err)
			case tc.wantStatus != 0 && (!errors.As(err, &ce) || ce.StatusCode != tc.wantStatus):
				t.Fatalf("err = %v, want status %d", err, tc.wantStatus)
			}
			st := fake.Stats()
			if st.Requests != tc.wantRequests {
				t.Errorf("%d requests upstream, want %d", st.Requests, tc.wantRequests)
			}
			if wantCreated := tc.create && tc.wantStatus == 0; st.KeysCreated != map[bool]int{true: 1}[wantCreated] {
				t.Errorf("%d keys created", st.KeysCreated)
			}
			if elapsed < tc.minDuration {
				t.Errorf("took %s, want at least %s", elapsed, tc.minDuration)
			}
		})
	}
}

// failFirst fails the first attempt with err before anything is sent, then
// passes through.
type failFirst struct {
	err      error
	attempts atomic.Int32
	base     http.RoundTripper
}

func (f *failFirst) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.attempts.Add(1) == 1 {
		return nil, f.err
	}
	return f.base.RoundTrip(r)
}

// TestCreateRetriedOnlyWhenNeverSent: a create that never left is sent
// again at once; one that failed after it was sent is first looked up by
// name (the attempt in between).
func TestCreateRetriedOnlyWhenNeverSent(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		wantAttempts int32
		wantOK       bool
	}{
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, 2, true},
		{"connection reset after sending", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, 3, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, 3, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			p := fake.AddProject("p")
			rt := &failFirst{err: tc.err, base: http.DefaultTransport}
			c := newClient(t, fake, func(o *climatiq.Options) { o.Transport = rt; o.MaxRetries = 3 })
			_, err := c.CreateKey(context.Background(), p.ID, "k")
			if (err == nil) != tc.wantOK {
				t.Fatalf("err = %v, want ok %v", err, tc.wantOK)
			}
			if got := rt.attempts.Load(); got != tc.wantAttempts {
				t.Fatalf("%d attempts, want %d", got, tc.wantAttempts)
			}
			if err != nil {
				assertNoSecrets(t, err.Error())
			}
		})
	}
}

func TestRateLimitedBeyondBudget(t *testing.T) {
	tests := []struct {
		name        string
		budget      time.Duration
		ctxTimeout  time.Duration
		cancelAfter time.Duration
		wantCtxErr  error
		wantSays    string // what the message says about giving up
	}{
		{name: "budget spent", budget: 500 * time.Millisecond,
			wantSays: "(gave up after waiting out rate limits for 0s: the upstream asked for a further wait (Retry-After: 1) that would pass the 500ms the engine waits out rate limits for one request; try again later)"},
		{name: "ctx deadline before Retry-After", budget: time.Minute, ctxTimeout: 300 * time.Millisecond,
			wantSays: "that would pass the request's deadline; try again later)"},
		{name: "ctx cancelled while waiting", budget: time.Minute, cancelAfter: 100 * time.Millisecond, wantCtxErr: context.Canceled,
			wantSays: "while waiting out a rate limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			c := newClient(t, fake, func(o *climatiq.Options) { o.RetryBudget = tc.budget })
			fake.FailNext(5, http.StatusTooManyRequests)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.ctxTimeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, tc.ctxTimeout)
				defer cancel()
			}
			if tc.cancelAfter > 0 {
				time.AfterFunc(tc.cancelAfter, cancel)
			}
			start := time.Now()
			_, err := c.ListProjects(ctx)
			var ce *climatiq.Error
			if !errors.Is(err, climatiq.ErrRateLimited) || !errors.As(err, &ce) || ce.RetryAfter != time.Second {
				t.Fatalf("err = %v, want ErrRateLimited with Retry-After 1s", err)
			}
			if tc.wantCtxErr != nil && !errors.Is(err, tc.wantCtxErr) {
				t.Fatalf("err = %v, want also %v", err, tc.wantCtxErr)
			}
			if !strings.Contains(err.Error(), tc.wantSays) {
				t.Fatalf("err = %v, want it to say %q", err, tc.wantSays)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Fatalf("gave up after %s; a wait that cannot finish should not start", d)
			}
			if n := fake.Stats().Requests; n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
		})
	}
}

func TestResponses(t *testing.T) {
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body.Load().(string))
	}))
	defer srv.Close()
	c, err := climatiq.New(climatiq.Options{ManagementURL: srv.URL, APIURL: srv.URL, ManagementKey: mgmtKey})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		body      string
		wantErr   string
		wantID    string
		wantOwner string
	}{
		{name: "garbage", body: `{"id": "unterminated`, wantErr: "invalid JSON in response"},
		{name: "empty", body: ``, wantErr: "invalid JSON in response"},
		{name: "HTML", body: `<html>oops</html>`, wantErr: "invalid JSON in response"},
		{name: "id of wrong type", body: `{"id": {"nested": true}}`, wantErr: "invalid JSON in response"},
		{name: "no id", body: `{"project_name": "p"}`, wantErr: "invalid response"},
		{name: "oversized", body: `{"id":"x","pad":"` + strings.Repeat("a", 1<<20) + `"}`, wantErr: "response larger than"},
		{name: "string ids, unknown fields", body: `{"id": "prj_1", "project_name": "p", "owner": {"id": "u1", "x": 1}, "created_by": {}}`, wantID: "prj_1", wantOwner: "u1"},
		{name: "numeric ids kept as text", body: `{"id": 12345678901234567890, "project_name": "p", "owner": {"id": 7}}`, wantID: "12345678901234567890", wantOwner: "7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body.Store(tc.body)
			p, err := c.CreateProject(context.Background(), "p")
			if tc.wantErr != "" {
				var ce *climatiq.Error
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want *Error containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "unterminated") || strings.Contains(err.Error(), "html") {
					t.Fatalf("error echoes the body: %v", err)
				}
				return
			}
			if err != nil || p.ID != tc.wantID || p.Owner.ID != tc.wantOwner {
				t.Fatalf("project = %+v, %v; want id %q owner %q", p, err, tc.wantID, tc.wantOwner)
			}
		})
	}
}

func TestGarbageAfterAction(t *testing.T) {
	fake := newFake(t)
	p := fake.AddProject("p")
	c := newClient(t, fake, nil)
	fake.SetGarbage(true)
	_, err := c.CreateKey(context.Background(), p.ID, "k")
	if err == nil || !strings.Contains(err.Error(), "invalid JSON in response") {
		t.Fatalf("err = %v, want invalid JSON", err)
	}
	// The key exists upstream and is not created twice: the caller finds
	// it by name.
	if st := fake.Stats(); st.KeysCreated != 1 || st.Requests != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A delete whose answer is garbage still succeeded: its body is unused.
	if err := c.DeleteKey(context.Background(), fake.Keys()[0].ID); err != nil {
		t.Fatal(err)
	}
}

func TestPerAttemptTimeout(t *testing.T) {
	tests := []struct {
		name         string
		create       bool
		wantRequests int
	}{
		{"GET retried after timeouts", false, 2},
		// The lookup by name that follows times out too (twice): the
		// create is not sent again.
		{"POST not retried after a timeout", true, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			p := fake.AddProject("p")
			fake.SetLatency(2 * time.Second)
			c := newClient(t, fake, func(o *climatiq.Options) { o.Timeout = 100 * time.Millisecond; o.MaxRetries = 1 })
			start := time.Now()
			var err error
			if tc.create {
				_, err = c.CreateKey(context.Background(), p.ID, "k")
			} else {
				_, err = c.ListProjects(context.Background())
			}
			if err == nil || !strings.Contains(err.Error(), "request timeout") {
				t.Fatalf("err = %v, want a request timeout", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("timed out after %s", d)
			}
			fake.Close() // waits for the abandoned requests
			if st := fake.Stats(); st.Requests != tc.wantRequests || st.KeysCreated != 0 {
				t.Fatalf("stats %+v, want %d requests", st, tc.wantRequests)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	t.Run("paces requests", func(t *testing.T) {
		fake := newFake(t)
		// 20/s with a burst of 2: 8 requests need at least 6/20 s.
		c := newClient(t, fake, func(o *climatiq.Options) { o.RateLimit = 20 })
		start := time.Now()
		for range 8 {
			if err := c.CheckManagementKey(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("8 requests at 20/s took %s", d)
		}
	})
	t.Run("queueing does not count as a timeout", func(t *testing.T) {
		fake := newFake(t)
		p := fake.AddProject("p")
		// Each create waits 200ms at the limiter, longer than the timeout.
		c := newClient(t, fake, func(o *climatiq.Options) { o.RateLimit = 5; o.Timeout = 100 * time.Millisecond })
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for i := range 3 {
			wg.Go(func() {
				_, err := c.CreateKey(context.Background(), p.ID, fmt.Sprint("k", i))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("waiting honours ctx", func(t *testing.T) {
		fake := newFake(t)
		c := newClient(t, fake, func(o *climatiq.Options) { o.RateLimit = 0.5 })
		if err := c.CheckManagementKey(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := c.CheckManagementKey(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the ctx deadline", err)
		}
		if n := fake.Stats().Requests; n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
	})
}

func TestUpstreamMessages(t *testing.T) {
	const apiKey = "sk_regular_secret"
	tests := []struct {
		name      string
		body      string
		wantMsg   string
		wantCode  string
		maxLength int
	}{
		{
			name:     "echoed keys redacted",
			body:     `{"error":"Unauthorized","error_code":"bad_` + apiKey + `","message":"key ` + apiKey + ` or ` + mgmtKey + ` is invalid"}`,
			wantMsg:  "key [redacted] or [redacted] is invalid",
			wantCode: "bad_[redacted]",
		},
		{name: "not JSON", body: `<html>Unauthorized ` + apiKey + `</html>`, wantMsg: "Unauthorized"},
		{name: "error without message", body: `{"error":"Unauthorized"}`, wantMsg: "Unauthorized"},
		{name: "control characters", body: `{"message":"line\nbreak\u0000end"}`, wantMsg: "line break end"},
		{name: "long message truncated by runes", body: `{"message":"` + strings.Repeat("é", 1000) + `"}`, maxLength: 300},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c, err := climatiq.New(climatiq.Options{ManagementURL: srv.URL, APIURL: srv.URL, ManagementKey: mgmtKey})
			if err != nil {
				t.Fatal(err)
			}
			err = c.CheckKey(context.Background(), apiKey)
			var ce *climatiq.Error
			if !errors.As(err, &ce) || !errors.Is(err, climatiq.ErrUnauthorized) {
				t.Fatalf("err = %v", err)
			}
			assertNoSecrets(t, err.Error(), apiKey)
			if tc.wantMsg != "" && ce.Message != tc.wantMsg || ce.Code != tc.wantCode {
				t.Fatalf("message %q code %q, want %q %q", ce.Message, ce.Code, tc.wantMsg, tc.wantCode)
			}
			if tc.maxLength > 0 {
				if n := utf8.RuneCountInString(ce.Message); n != tc.maxLength || !utf8.ValidString(ce.Message) {
					t.Fatalf("message of %d runes (valid UTF-8: %v)", n, utf8.ValidString(ce.Message))
				}
			}
		})
	}
}

func TestLogsCarryNoSecrets(t *testing.T) {
	fake := newFake(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: &lockedWriter{w: &buf, mu: &mu}})
	c := newClient(t, fake, func(o *climatiq.Options) { o.Logger = logger; o.RetryBudget = time.Millisecond })
	ctx := context.Background()
	p := fake.AddProject("p")
	k, err := c.CreateKey(ctx, p.ID, "k")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.CheckKey(ctx, k.Key)
	fake.FailNext(1, http.StatusServiceUnavailable)
	_, _ = c.ListKeys(ctx, p.ID)
	fake.FailNext(1, http.StatusTooManyRequests)
	_ = c.DeleteKey(ctx, k.ID)
	mu.Lock()
	defer mu.Unlock()
	logs := buf.String()
	if !strings.Contains(logs, "/project/"+p.ID+"/api-key") || !strings.Contains(logs, "attempt=2") {
		t.Fatalf("logs lack paths or attempts:\n%s", logs)
	}
	assertNoSecrets(t, logs, k.Key)
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestEchoedKeys: a management API that echoes the request in its error
// answers (the bearer header, the JSON body), as climatiqtest's
// SetEchoRequest does, shows no form of the management key or of a
// checked key in the client's error.
func TestEchoedKeys(t *testing.T) {
	const oddKey = `mgmt s3cr3t/+&"<é>=%`
	const staleKey = "sk_stale_key_value"
	tests := []struct {
		name   string
		key    string // the client's management key
		fault  int    // injected before the call
		call   func(*climatiq.Client, string) error
		wantIs error
	}{
		{"wrong key listing projects", "CQ-MGMT-REFLECT-7", 0, func(c *climatiq.Client, _ string) error {
			_, err := c.ListProjects(context.Background())
			return err
		}, climatiq.ErrUnauthorized},
		{"wrong key that needs encoding", oddKey, 0, func(c *climatiq.Client, _ string) error {
			return c.CheckManagementKey(context.Background())
		}, climatiq.ErrUnauthorized},
		{"right key refused on a create with a JSON body", mgmtKey, http.StatusForbidden, func(c *climatiq.Client, project string) error {
			_, err := c.CreateKey(context.Background(), project, "k-"+mgmtKey)
			return err
		}, climatiq.ErrForbidden},
		{"right key, missing key renamed", mgmtKey, 0, func(c *climatiq.Client, _ string) error {
			_, err := c.RenameKey(context.Background(), "key_missing", "renamed")
			return err
		}, climatiq.ErrNotFound},
		{"key check echoing the checked key", mgmtKey, 0, func(c *climatiq.Client, _ string) error {
			return c.CheckKey(context.Background(), staleKey)
		}, climatiq.ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			project := fake.AddProject("p").ID
			fake.SetEchoRequest(true)
			if tc.fault != 0 {
				fake.FailNext(1, tc.fault)
			}
			c := newClient(t, fake, func(o *climatiq.Options) { o.ManagementKey = tc.key; o.MaxRetries = 0 })
			err := tc.call(c, project)
			if !errors.Is(err, tc.wantIs) || !strings.Contains(err.Error(), "[redacted]") {
				t.Fatalf("err = %v, want %v with the echo redacted", err, tc.wantIs)
			}
			testutil.NoEncodedSecrets(t, err.Error(), tc.key, staleKey)
		})
	}
}
