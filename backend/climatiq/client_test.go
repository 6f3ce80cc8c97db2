package climatiq_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

const mgmtKey = "mgmt-s3cr3t"

func newClient(t *testing.T, fake *climatiqtest.Server, mutate func(*climatiq.Options)) *climatiq.Client {
	t.Helper()
	o := climatiq.Options{ManagementURL: fake.ManagementURL(), APIURL: fake.APIURL(), ManagementKey: mgmtKey, MaxRetries: 2}
	if mutate != nil {
		mutate(&o)
	}
	c, err := climatiq.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestClientLifecycle(t *testing.T) {
	fake := climatiqtest.NewServer(mgmtKey)
	defer fake.Close()
	c := newClient(t, fake, nil)
	ctx := context.Background()

	p, err := c.CreateProject(ctx, "p1")
	if err != nil || p.ID == "" || p.Name != "p1" {
		t.Fatalf("CreateProject = %+v, %v", p, err)
	}
	if p, err = c.RenameProject(ctx, p.ID, "p2"); err != nil || p.Name != "p2" {
		t.Fatalf("RenameProject = %+v, %v", p, err)
	}
	projects, err := c.ListProjects(ctx)
	if err != nil || len(projects) != 1 || projects[0].Owner.ID == "" {
		t.Fatalf("ListProjects = %+v, %v", projects, err)
	}

	k, err := c.CreateKey(ctx, p.ID, "k1")
	if err != nil || k.ID == "" || k.Key == "" || k.ProjectID() != p.ID {
		t.Fatalf("CreateKey = %+v, %v", k, err)
	}
	if err := c.CheckKey(ctx, k.Key); err != nil {
		t.Fatalf("CheckKey of a live key: %v", err)
	}
	if k2, err := c.RenameKey(ctx, k.ID, "k2"); err != nil || k2.Name != "k2" {
		t.Fatalf("RenameKey = %+v, %v", k2, err)
	}
	keys, err := c.ListKeys(ctx, p.ID)
	if err != nil || len(keys) != 1 || keys[0].Key != k.Key {
		t.Fatalf("ListKeys = %+v, %v", keys, err)
	}
	if err := c.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteKey(ctx, k.ID); !errors.Is(err, climatiq.ErrNotFound) {
		t.Fatalf("second DeleteKey = %v, want ErrNotFound", err)
	}
	if err := c.CheckKey(ctx, k.Key); !errors.Is(err, climatiq.ErrUnauthorized) {
		t.Fatalf("CheckKey of a deleted key = %v, want ErrUnauthorized", err)
	}
	if err := c.DeleteProject(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListKeys(ctx, p.ID); !errors.Is(err, climatiq.ErrNotFound) {
		t.Fatalf("ListKeys of a deleted project = %v, want ErrNotFound", err)
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
		{http.StatusInternalServerError, nil},
		{http.StatusServiceUnavailable, nil},
	}
	fake := climatiqtest.NewServer(mgmtKey)
	defer fake.Close()
	c := newClient(t, fake, func(o *climatiq.Options) { o.MaxRetries = 0 })
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			fake.FailNext(1, tc.status)
			_, err := c.ListProjects(context.Background())
			var ce *climatiq.Error
			if !errors.As(err, &ce) || ce.StatusCode != tc.status {
				t.Fatalf("err = %v, want *Error with status %d", err, tc.status)
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.sentinel)
			}
			if ce.Code != "injected_fault" || !strings.Contains(err.Error(), "list projects") {
				t.Fatalf("error lacks the upstream code or the operation: %v", err)
			}
			if strings.Contains(err.Error(), mgmtKey) {
				t.Fatalf("error carries the management key: %v", err)
			}
		})
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name        string
		maxRetries  int
		failStatus  int
		failCount   int
		call        string // "list" or "create"
		wantErr     bool
		wantCreates int
	}{
		{"503 then success, idempotent", 2, http.StatusServiceUnavailable, 2, "list", false, 0},
		{"500 exhausts retries", 1, http.StatusInternalServerError, 2, "list", true, 0},
		{"create retried after 503", 2, http.StatusServiceUnavailable, 1, "create", false, 1},
		{"create not retried after 500", 3, http.StatusInternalServerError, 1, "create", true, 0},
		{"429 not counted against retries", 0, http.StatusTooManyRequests, 2, "create", false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := climatiqtest.NewServer(mgmtKey)
			defer fake.Close()
			p := fake.AddProject("p")
			c := newClient(t, fake, func(o *climatiq.Options) { o.MaxRetries = tc.maxRetries })
			fake.FailNext(tc.failCount, tc.failStatus)
			var err error
			if tc.call == "list" {
				_, err = c.ListProjects(context.Background())
			} else {
				_, err = c.CreateKey(context.Background(), p.ID, "k")
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got := fake.Stats().KeysCreated; got != tc.wantCreates {
				t.Fatalf("%d keys created, want %d", got, tc.wantCreates)
			}
		})
	}
}

func TestRateLimitBudgetSpent(t *testing.T) {
	fake := climatiqtest.NewServer(mgmtKey)
	defer fake.Close()
	c := newClient(t, fake, func(o *climatiq.Options) { o.RetryBudget = 500 * time.Millisecond })
	fake.FailNext(5, http.StatusTooManyRequests)
	_, err := c.ListProjects(context.Background())
	var ce *climatiq.Error
	if !errors.Is(err, climatiq.ErrRateLimited) || !errors.As(err, &ce) || ce.RetryAfter < time.Second {
		t.Fatalf("err = %v, want ErrRateLimited carrying Retry-After", err)
	}
}

func TestGarbageAndOddAnswers(t *testing.T) {
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body.Load().(string)))
	}))
	defer srv.Close()
	c, err := climatiq.New(climatiq.Options{ManagementURL: srv.URL, APIURL: srv.URL, ManagementKey: mgmtKey})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		body    string
		wantErr bool
		wantID  string
	}{
		{"garbage", `{"id": "unterminated`, true, ""},
		{"empty", ``, true, ""},
		{"numeric id kept as text", `{"id": 12345678901234567890, "project_name": "p", "extra": {"a": 1}}`, false, "12345678901234567890"},
		{"string id", `{"id": "prj_1", "project_name": "p", "owner": {"id": 7}}`, false, "prj_1"},
		{"id of wrong type", `{"id": {"nested": true}}`, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body.Store(tc.body)
			p, err := c.CreateProject(context.Background(), "p")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "unterminated") {
				t.Fatalf("error echoes the body: %v", err)
			}
			if p.ID != tc.wantID {
				t.Fatalf("id = %q, want %q", p.ID, tc.wantID)
			}
		})
	}
}

func TestPerAttemptTimeout(t *testing.T) {
	fake := climatiqtest.NewServer(mgmtKey)
	defer fake.Close()
	fake.SetLatency(2 * time.Second)
	c := newClient(t, fake, func(o *climatiq.Options) { o.Timeout = 200 * time.Millisecond; o.MaxRetries = 0 })
	start := time.Now()
	if _, err := c.ListProjects(context.Background()); err == nil {
		t.Fatal("a 2s answer beat a 200ms timeout")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("timeout took %s", d)
	}
}

func TestNewValidates(t *testing.T) {
	tests := []climatiq.Options{
		{ManagementURL: "https://x", APIURL: "https://y"},
		{ManagementURL: "not a url", APIURL: "https://y", ManagementKey: "k"},
		{ManagementURL: "https://x", APIURL: "", ManagementKey: "k"},
	}
	for _, o := range tests {
		if _, err := climatiq.New(o); err == nil {
			t.Errorf("New(%+v) accepted bad options", o)
		}
	}
}
