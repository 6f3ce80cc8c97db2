package climatiq_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

// upstreamState is what a test arranges before the call under test.
type upstreamState struct {
	fake    *climatiqtest.Server
	client  *climatiq.Client
	project climatiq.Project
	key     climatiq.APIKey
}

func deleteKeyFirst(t *testing.T, u upstreamState) {
	t.Helper()
	if err := u.client.DeleteKey(context.Background(), u.key.ID); err != nil {
		t.Fatal(err)
	}
}

// wantOutcome: 0 success, -1 an error matching ErrNotFound, else an
// *Error of that status that does not match ErrNotFound.
func checkOutcome(t *testing.T, err error, want int) {
	t.Helper()
	var ce *climatiq.Error
	switch {
	case want == 0 && err != nil:
		t.Fatalf("err = %v, want success", err)
	case want == 0:
		return
	case !errors.As(err, &ce):
		t.Fatalf("err = %#v, want a *climatiq.Error", err)
	case want == -1 && !errors.Is(err, climatiq.ErrNotFound):
		t.Fatalf("err = %v, want ErrNotFound", err)
	case want > 0 && (ce.StatusCode != want || errors.Is(err, climatiq.ErrNotFound)):
		t.Fatalf("err = %v, want status %d and not ErrNotFound", err, want)
	}
	assertNoSecrets(t, err.Error())
}

func TestDeleteProjectKeyConfirmsAbsence(t *testing.T) {
	tests := []struct {
		name          string
		missingStatus int
		arrange       func(*testing.T, upstreamState)
		want          int // see checkOutcome
		wantKeyLeft   bool
		wantRequests  int // after arranging
	}{
		{name: "live key is deleted", missingStatus: 403, wantRequests: 1},
		{name: "gone key, 404", missingStatus: 404, arrange: deleteKeyFirst, want: -1, wantRequests: 2},
		{name: "gone key, 403", missingStatus: 403, arrange: deleteKeyFirst, want: -1, wantRequests: 2},
		{name: "gone key, 400", missingStatus: 400, arrange: deleteKeyFirst, want: -1, wantRequests: 2},
		{name: "gone project, 404 on its key list", missingStatus: 404, arrange: deleteProjectFirst, want: -1, wantRequests: 2},
		// The key list of a gone project answers 403 too: the project list decides.
		{name: "gone project, 403", missingStatus: 403, arrange: deleteProjectFirst, want: -1, wantRequests: 3},
		{name: "gone project, 400", missingStatus: 400, arrange: deleteProjectFirst, want: -1, wantRequests: 3},
		{
			name: "403 for a key that is still listed", missingStatus: 403,
			arrange: func(_ *testing.T, u upstreamState) {
				u.fake.FailNextMethod(http.MethodDelete, 1, http.StatusForbidden)
			},
			want: 403, wantKeyLeft: true, wantRequests: 2,
		},
		{
			name: "404 for a key that is still listed is not ErrNotFound", missingStatus: 404,
			arrange: func(_ *testing.T, u upstreamState) {
				u.fake.FailNextMethod(http.MethodDelete, 1, http.StatusNotFound)
			},
			want: 404, wantKeyLeft: true, wantRequests: 2,
		},
		{
			name: "a failed lookup leaves the answer as it came", missingStatus: 403,
			// The delete, the key list and the project list all get 403.
			arrange: func(_ *testing.T, u upstreamState) { u.fake.FailNext(3, http.StatusForbidden) },
			want:    403, wantKeyLeft: true, wantRequests: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			u := upstreamState{fake: fake, client: newClient(t, fake, nil), project: fake.AddProject("p")}
			u.key = fake.AddKey(u.project.ID, "k")
			if tc.arrange != nil {
				tc.arrange(t, u)
			}
			fake.SetMissingStatus(tc.missingStatus)
			before := fake.Stats().Requests
			err := u.client.DeleteProjectKey(context.Background(), u.project.ID, u.key.ID)
			checkOutcome(t, err, tc.want)
			if _, left := fake.Key(u.key.ID); left != tc.wantKeyLeft {
				t.Fatalf("key left upstream: %v, want %v", left, tc.wantKeyLeft)
			}
			if n := fake.Stats().Requests - before; n != tc.wantRequests {
				t.Fatalf("%d requests, want %d", n, tc.wantRequests)
			}
		})
	}
}

func deleteProjectFirst(t *testing.T, u upstreamState) {
	t.Helper()
	if err := u.client.DeleteProject(context.Background(), u.project.ID); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteProjectConfirmsAbsence(t *testing.T) {
	tests := []struct {
		name          string
		missingStatus int
		gone          bool
		injected      int // a status the DELETE is answered with instead
		want          int // see checkOutcome
	}{
		{name: "live project is deleted", missingStatus: 403},
		{name: "gone project, 404", missingStatus: 404, gone: true, want: -1},
		{name: "gone project, 403", missingStatus: 403, gone: true, want: -1},
		{name: "gone project, 400", missingStatus: 400, gone: true, want: -1},
		{name: "403 for a listed project", missingStatus: 403, injected: 403, want: 403},
		{name: "400 for a listed project", missingStatus: 400, injected: 400, want: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			c := newClient(t, fake, nil)
			u := upstreamState{fake: fake, client: c, project: fake.AddProject("p")}
			if tc.gone {
				deleteProjectFirst(t, u)
			}
			if tc.injected != 0 {
				fake.FailNextMethod(http.MethodDelete, 1, tc.injected)
			}
			fake.SetMissingStatus(tc.missingStatus)
			checkOutcome(t, c.DeleteProject(context.Background(), u.project.ID), tc.want)
			if left := len(fake.Projects()) == 1; left != (tc.injected != 0) {
				t.Fatalf("project left upstream: %v", left)
			}
		})
	}
}

// createCall is CreateKey or CreateProject, as seen by the tests.
type createCall struct {
	name   string
	create func(context.Context, *climatiq.Client, climatiq.Project, string) (id string, err error)
	// named lists the live resources of a name upstream.
	named func(*climatiqtest.Server, string) []string
	// seed makes a resource of that name, as an earlier attempt might have.
	seed func(*climatiqtest.Server, climatiq.Project, string)
}

var createCalls = []createCall{
	{
		name: "key",
		create: func(ctx context.Context, c *climatiq.Client, p climatiq.Project, name string) (string, error) {
			k, err := c.CreateKey(ctx, p.ID, name)
			return k.ID, err
		},
		named: func(f *climatiqtest.Server, name string) []string {
			var ids []string
			for _, k := range f.Keys() {
				if k.Name == name {
					ids = append(ids, k.ID)
				}
			}
			return ids
		},
		seed: func(f *climatiqtest.Server, p climatiq.Project, name string) { f.AddKey(p.ID, name) },
	},
	{
		name: "project",
		create: func(ctx context.Context, c *climatiq.Client, _ climatiq.Project, name string) (string, error) {
			p, err := c.CreateProject(ctx, name)
			return p.ID, err
		},
		named: func(f *climatiqtest.Server, name string) []string {
			var ids []string
			for _, p := range f.Projects() {
				if p.Name == name {
					ids = append(ids, p.ID)
				}
			}
			return ids
		},
		seed: func(f *climatiqtest.Server, _ climatiq.Project, name string) { f.AddProject(name) },
	},
}

func TestCreateNeverLeavesDuplicates(t *testing.T) {
	tests := []struct {
		name       string
		maxRetries int
		timeout    time.Duration
		arrange    func(*climatiqtest.Server)
		seedCopy   bool // a copy of the name exists already, as from an earlier attempt
		wantStatus int  // 0: success
		wantLive   int  // resources of the name upstream afterwards
		wantPosts  int  // creates that took effect
	}{
		{name: "commits, then 503", maxRetries: 2, arrange: func(f *climatiqtest.Server) { f.CommitThenFail(1, 503) }, wantLive: 1, wantPosts: 1},
		{name: "commits, then 504", maxRetries: 2, arrange: func(f *climatiqtest.Server) { f.CommitThenFail(1, 504) }, wantLive: 1, wantPosts: 1},
		{name: "commits, then 504 with no retries", maxRetries: 0, arrange: func(f *climatiqtest.Server) { f.CommitThenFail(1, 504) }, wantLive: 1, wantPosts: 1},
		{name: "commits, then times out", maxRetries: 1, timeout: 200 * time.Millisecond, arrange: func(f *climatiqtest.Server) { f.SetCommitThenHang(true) }, wantLive: 1, wantPosts: 1},
		{name: "503 before acting: sent again", maxRetries: 1, arrange: func(f *climatiqtest.Server) { f.FailNextMethod(http.MethodPost, 1, 503) }, wantLive: 1, wantPosts: 1},
		{name: "503 before acting, no retries left", maxRetries: 0, arrange: func(f *climatiqtest.Server) { f.FailNextMethod(http.MethodPost, 1, 503) }, wantStatus: 503},
		{name: "extra copies deleted", maxRetries: 1, seedCopy: true, arrange: func(f *climatiqtest.Server) { f.CommitThenFail(1, 503) }, wantLive: 1, wantPosts: 1},
		{name: "400 is not looked up", maxRetries: 2, arrange: func(f *climatiqtest.Server) { f.FailNextMethod(http.MethodPost, 1, 400) }, wantStatus: 400},
	}
	for _, call := range createCalls {
		for _, tc := range tests {
			t.Run(call.name+"/"+tc.name, func(t *testing.T) {
				fake := newFake(t)
				p := fake.AddProject("seed")
				const name = "carbon-nonce-1234"
				if tc.seedCopy {
					call.seed(fake, p, name)
				}
				c := newClient(t, fake, func(o *climatiq.Options) {
					o.MaxRetries = tc.maxRetries
					if tc.timeout > 0 {
						o.Timeout = tc.timeout
					}
				})
				tc.arrange(fake)
				id, err := call.create(context.Background(), c, p, name)
				var ce *climatiq.Error
				switch {
				case tc.wantStatus == 0 && err != nil:
					t.Fatalf("err = %v, want success", err)
				case tc.wantStatus != 0 && (!errors.As(err, &ce) || ce.StatusCode != tc.wantStatus):
					t.Fatalf("err = %v, want status %d", err, tc.wantStatus)
				}
				live := call.named(fake, name)
				if len(live) != tc.wantLive {
					t.Fatalf("%d live resources named %q, want %d", len(live), name, tc.wantLive)
				}
				if tc.wantStatus == 0 && live[0] != id {
					t.Fatalf("returned %q, but %q is the one left upstream", id, live[0])
				}
				st := fake.Stats()
				if posts := st.KeysCreated + st.ProjectsCreated; posts != tc.wantPosts {
					t.Fatalf("%d creates took effect, want %d", posts, tc.wantPosts)
				}
			})
		}
	}
}

func TestNameTooLong(t *testing.T) {
	tests := []struct {
		name    string
		call    func(context.Context, *climatiq.Client, climatiq.Project) error
		wantMsg string
	}{
		{"create key", func(ctx context.Context, c *climatiq.Client, p climatiq.Project) error {
			_, err := c.CreateKey(ctx, p.ID, "too-long-name")
			return err
		}, "key_name must be at most 8 characters"},
		{"create project", func(ctx context.Context, c *climatiq.Client, _ climatiq.Project) error {
			_, err := c.CreateProject(ctx, "too-long-name")
			return err
		}, "project_name must be at most 8 characters"},
		{"rename project", func(ctx context.Context, c *climatiq.Client, p climatiq.Project) error {
			_, err := c.RenameProject(ctx, p.ID, "too-long-name")
			return err
		}, "project_name must be at most 8 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(t)
			p := fake.AddProject("p")
			fake.SetMaxNameLength(8)
			err := tc.call(context.Background(), newClient(t, fake, nil), p)
			var ce *climatiq.Error
			if !errors.As(err, &ce) || ce.StatusCode != http.StatusBadRequest || ce.Code != "invalid_name" || ce.Message != tc.wantMsg {
				t.Fatalf("err = %#v, want 400 invalid_name %q", err, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Error() = %q lacks the upstream message", err)
			}
			if n := fake.Stats().Requests; n != 1 {
				t.Fatalf("%d requests, want 1: a 400 is neither retried nor looked up", n)
			}
		})
	}
}

func TestCheckKeyAcceptsUnitTypes(t *testing.T) {
	fake := newFake(t)
	k := fake.AddKey(fake.AddProject("p").ID, "k")
	c := newClient(t, fake, nil)
	tests := []struct {
		name    string
		key     string
		wantErr error
	}{
		{"live key: {unit_types: [...]}", k.Key, nil},
		{"unknown key", "sk_unknown", climatiq.ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.CheckKey(context.Background(), tc.key); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
