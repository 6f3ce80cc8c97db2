package climatiqtest

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMissingStatus(t *testing.T) {
	requests := []struct {
		method, path, body string
		followsSwitch      bool // false: always 404
	}{
		{http.MethodDelete, "/api-key/key_missing", "", true},
		{http.MethodPatch, "/api-key/key_missing", `{"key_name":"x"}`, true},
		{http.MethodDelete, "/project/prj_missing", "", true},
		{http.MethodPatch, "/project/prj_missing", `{"project_name":"x"}`, true},
		{http.MethodGet, "/project/prj_missing/api-key", "", true},
		{http.MethodPost, "/project/prj_missing/api-key", `{"key_name":"x"}`, false},
	}
	tests := []struct {
		set      int
		want     int
		wantCode string
	}{
		{0, http.StatusNotFound, "_not_found"},
		{http.StatusNotFound, http.StatusNotFound, "_not_found"},
		{http.StatusForbidden, http.StatusForbidden, "forbidden"},
		{http.StatusBadRequest, http.StatusBadRequest, "invalid_request"},
	}
	for _, tc := range tests {
		s := newTestServer(t)
		s.SetMissingStatus(tc.set)
		for _, r := range requests {
			t.Run(http.StatusText(tc.want)+"/"+r.method+" "+r.path, func(t *testing.T) {
				got := call(t, s.ManagementURL()+r.path, r.method, mk, r.body)
				want, wantCode := tc.want, tc.wantCode
				if !r.followsSwitch {
					want, wantCode = http.StatusNotFound, "_not_found"
				}
				if got.status != want || !strings.Contains(got.field(t, "error_code"), wantCode) {
					t.Fatalf("status %d, body %s; want %d with a code containing %q", got.status, got.body, want, wantCode)
				}
			})
		}
		// Ids that exist are not affected.
		p := s.AddProject("p")
		k := s.AddKey(p.ID, "k")
		for _, path := range []string{"/project/" + p.ID + "/api-key", "/api-key/" + k.ID} {
			method := map[bool]string{true: http.MethodGet, false: http.MethodDelete}[strings.HasSuffix(path, "api-key")]
			if got := call(t, s.ManagementURL()+path, method, mk, ""); got.status != http.StatusOK {
				t.Fatalf("%s %s on a live id: %d", method, path, got.status)
			}
		}
	}
}

func TestCommitThenFail(t *testing.T) {
	tests := []struct {
		name    string
		path    func(*Server) string
		body    string
		created func(*Server) int
	}{
		{"project", func(*Server) string { return "/project" }, `{"project_name":"dup"}`, func(s *Server) int { return len(s.Projects()) - 1 }},
		{"key", func(s *Server) string { return "/project/" + s.Projects()[0].ID + "/api-key" }, `{"key_name":"dup"}`, func(s *Server) int { return len(s.Keys()) }},
	}
	for _, tc := range tests {
		for _, status := range []int{http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
			t.Run(tc.name+"/"+http.StatusText(status), func(t *testing.T) {
				s := newTestServer(t)
				s.AddProject("seed")
				s.CommitThenFail(2, status)
				// Other methods are not affected, nor counted.
				if got := call(t, s.ManagementURL()+"/project", http.MethodGet, mk, ""); got.status != http.StatusOK {
					t.Fatalf("GET answered %d", got.status)
				}
				var statuses []int
				for range 3 {
					got := call(t, s.ManagementURL()+tc.path(s), http.MethodPost, mk, tc.body)
					statuses = append(statuses, got.status)
					if got.status != http.StatusOK && got.field(t, "error_code") == "" {
						t.Fatalf("failure without a JSON error body: %s", got.body)
					}
				}
				if want := []int{status, status, http.StatusOK}; !slices.Equal(statuses, want) {
					t.Fatalf("statuses %v, want %v", statuses, want)
				}
				if n := tc.created(s); n != 3 {
					t.Fatalf("%d created, want 3: each failed create took effect", n)
				}
				st := s.Stats()
				if st.CommittedThenFailed != 2 || st.Failures != 2 || st.DuplicateNames+st.DuplicateProjectNames != 2 {
					t.Fatalf("stats %+v", st)
				}
			})
		}
	}
}

func TestCommitThenHang(t *testing.T) {
	s := newTestServer(t)
	p := s.AddProject("p")
	s.SetCommitThenHang(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ManagementURL()+"/project/"+p.ID+"/api-key", strings.NewReader(`{"key_name":"k"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+mk)
	start := time.Now()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("answered %d, want no answer", resp.StatusCode)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("gave up after %s", d)
	}
	if keys := s.Keys(); len(keys) != 1 || keys[0].Name != "k" || s.Stats().CommittedThenFailed != 1 {
		t.Fatalf("keys %+v, stats %+v: the create should have taken effect", keys, s.Stats())
	}
	s.SetCommitThenHang(false)
	if got := call(t, s.ManagementURL()+"/project/"+p.ID+"/api-key", http.MethodPost, mk, `{"key_name":"k2"}`); got.status != http.StatusOK {
		t.Fatalf("after switching off: %d", got.status)
	}
}

func TestMaxNameLength(t *testing.T) {
	tests := []struct {
		name      string
		limit     int
		method    string
		path      func(projectID, keyID string) string
		body      string
		wantOK    bool
		wantField string
	}{
		{"create project over", 5, http.MethodPost, func(string, string) string { return "/project" }, `{"project_name":"abcdef"}`, false, "project_name"},
		{"create project at", 5, http.MethodPost, func(string, string) string { return "/project" }, `{"project_name":"abcde"}`, true, ""},
		{"characters, not bytes", 5, http.MethodPost, func(string, string) string { return "/project" }, `{"project_name":"ééééé"}`, true, ""},
		{"rename project over", 5, http.MethodPatch, func(p, _ string) string { return "/project/" + p }, `{"project_name":"abcdef"}`, false, "project_name"},
		{"create key over", 5, http.MethodPost, func(p, _ string) string { return "/project/" + p + "/api-key" }, `{"key_name":"abcdef"}`, false, "key_name"},
		{"rename key over", 5, http.MethodPatch, func(_, k string) string { return "/api-key/" + k }, `{"key_name":"abcdef"}`, false, "key_name"},
		{"no limit", 0, http.MethodPost, func(p, _ string) string { return "/project/" + p + "/api-key" }, `{"key_name":"` + strings.Repeat("x", 1000) + `"}`, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			p := s.AddProject("p")
			k := s.AddKey(p.ID, "k")
			s.SetMaxNameLength(tc.limit)
			got := call(t, s.ManagementURL()+tc.path(p.ID, k.ID), tc.method, mk, tc.body)
			if tc.wantOK {
				if got.status != http.StatusOK {
					t.Fatalf("status %d: %s", got.status, got.body)
				}
				return
			}
			want := map[string]string{
				"error":      `"bad_request"`,
				"error_code": `"invalid_name"`,
				"message":    `"` + tc.wantField + ` must be at most 5 characters"`,
			}
			for field, value := range want {
				if got.field(t, field) != value {
					t.Errorf("%s = %s, want %s", field, got.field(t, field), value)
				}
			}
			if got.status != http.StatusBadRequest {
				t.Fatalf("status %d", got.status)
			}
			if st := s.Stats(); st.KeysCreated+st.ProjectsCreated != 0 {
				t.Fatalf("a refused create took effect: %+v", st)
			}
			if s.Projects()[0].Name != "p" || s.Keys()[0].Name != "k" {
				t.Fatal("a refused rename took effect")
			}
		})
	}
}

func TestRemoveKeyAndProject(t *testing.T) {
	s := newTestServer(t)
	p := s.AddProject("p")
	k1 := s.AddKey(p.ID, "k1")
	k2 := s.AddKey(p.ID, "k2")
	if !s.RemoveKey(k1.ID) || s.RemoveKey(k1.ID) {
		t.Fatal("RemoveKey: want true, then false")
	}
	if _, found := s.Key(k1.ID); found {
		t.Fatal("removed key still there")
	}
	// The API sees it gone too.
	if got := call(t, s.ManagementURL()+"/api-key/"+k1.ID, http.MethodDelete, mk, ""); got.status != http.StatusNotFound {
		t.Fatalf("DELETE of a removed key: %d", got.status)
	}
	if _, found := s.Project(p.ID); !found {
		t.Fatal("Project: not found")
	}
	if !s.RemoveProject(p.ID) || s.RemoveProject(p.ID) {
		t.Fatal("RemoveProject: want true, then false")
	}
	if _, found := s.Key(k2.ID); found {
		t.Fatal("a removed project's key is still there")
	}
	if _, found := s.Project(p.ID); found {
		t.Fatal("removed project still there")
	}
	if st := s.Stats(); st.KeysDeleted != 0 || st.ProjectsDeleted != 0 {
		t.Fatalf("operator removals counted in Stats: %+v", st)
	}
}

func TestInFlight(t *testing.T) {
	s := newTestServer(t)
	p := s.AddProject("p")
	s.SetLatency(300 * time.Millisecond)
	s.SetCompleteAbandoned(true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.ManagementURL()+"/project/"+p.ID+"/api-key", strings.NewReader(`{"key_name":"k"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+mk)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("answered %d within the client's timeout", resp.StatusCode)
	}
	// The client gave up; the upstream is still at work.
	if n := s.InFlight(); n != 1 {
		t.Fatalf("InFlight %d after the client gave up, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("InFlight never went back to 0")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if keys := s.Keys(); len(keys) != 1 {
		t.Fatalf("%d keys once the abandoned create finished, want 1", len(keys))
	}
}

func TestLandLate(t *testing.T) {
	s := newTestServer(t)
	p := s.AddProject("p")
	s.SetLandLate(true)
	if got := call(t, s.ManagementURL()+"/project/"+p.ID+"/api-key", http.MethodPost, mk, `{"key_name":"k"}`); got.status != http.StatusGatewayTimeout {
		t.Fatalf("create answered %d, want 504", got.status)
	}
	if got := call(t, s.ManagementURL()+"/project", http.MethodPost, mk, `{"project_name":"q"}`); got.status != http.StatusGatewayTimeout {
		t.Fatalf("project create answered %d, want 504", got.status)
	}
	if len(s.Keys()) != 0 || len(s.Projects()) != 1 {
		t.Fatal("a held create took effect before Land")
	}
	// Other requests are served as usual.
	if got := call(t, s.ManagementURL()+"/project/"+p.ID+"/api-key", http.MethodGet, mk, ""); got.status != http.StatusOK {
		t.Fatalf("list while holding creates: %d", got.status)
	}
	s.SetLandLate(false)
	if n := s.Land(); n != 2 {
		t.Fatalf("Land carried out %d creates, want 2", n)
	}
	if keys := s.Keys(); len(keys) != 1 || keys[0].Name != "k" || len(s.Projects()) != 2 {
		t.Fatalf("after Land: keys %+v, projects %+v", keys, s.Projects())
	}
	if s.Land() != 0 {
		t.Fatal("Land twice carried out creates twice")
	}
}

func TestEchoRequest(t *testing.T) {
	s := newTestServer(t)
	s.SetEchoRequest(true)
	p := s.AddProject("p")
	tests := []struct {
		name       string
		url        string
		method     string
		bearer     string
		body       string
		wantStatus int
		wantEcho   []string // in the message
	}{
		{"unknown management key", s.ManagementURL() + "/project", http.MethodGet, "wrong-mgmt-key", "", 401,
			[]string{"Authorization: Bearer wrong-mgmt-key", `"Authorization":["Bearer wrong-mgmt-key"]`}},
		{"missing key, JSON body echoed", s.ManagementURL() + "/api-key/key_missing", http.MethodPatch, mk, `{"key_name":"k<1>"}`, 404,
			[]string{"Bearer " + mk, `body: {"key_name":"k<1>"}`, `"body":"{\"key_name\":\"k\u003c1\u003e\"}"`}},
		{"key check", s.APIURL() + "/data/v1/unit-types", http.MethodGet, "sk_stale", "", 401, []string{"Bearer sk_stale"}},
		{"successes do not", s.ManagementURL() + "/project/" + p.ID + "/api-key", http.MethodGet, mk, "", 200, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := call(t, tc.url, tc.method, tc.bearer, tc.body)
			if got.status != tc.wantStatus {
				t.Fatalf("status %d, body %s; want %d", got.status, got.body, tc.wantStatus)
			}
			if tc.wantEcho == nil {
				if strings.Contains(string(got.body), mk) {
					t.Fatalf("a success echoes the request: %s", got.body)
				}
				return
			}
			var msg string
			if err := json.Unmarshal([]byte(got.field(t, "message")), &msg); err != nil {
				t.Fatal(err)
			}
			for _, want := range tc.wantEcho {
				if !strings.Contains(msg, want) {
					t.Fatalf("message %q lacks %q", msg, want)
				}
			}
			if got.field(t, "error_code") == "" || got.field(t, "request") == "" {
				t.Fatalf("the echo lost the error fields: %s", got.body)
			}
		})
	}
	s.FailNext(1, http.StatusServiceUnavailable)
	if got := call(t, s.ManagementURL()+"/project", http.MethodGet, mk, ""); got.status != 503 || !strings.Contains(string(got.body), "Bearer "+mk) {
		t.Fatalf("an injected fault does not echo: %d %s", got.status, got.body)
	}
	s.SetEchoRequest(false)
	if got := call(t, s.ManagementURL()+"/project", http.MethodGet, "wrong-mgmt-key", ""); got.status != 401 || strings.Contains(string(got.body), "wrong-mgmt-key") {
		t.Fatalf("echo off: %d %s", got.status, got.body)
	}
}
