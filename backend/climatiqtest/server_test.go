package climatiqtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const mk = "mgmt-key"

type reply struct {
	status int
	header http.Header
	body   []byte
}

// field decodes the body as an object and returns one field as JSON text.
func (r reply) field(t *testing.T, name string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return string(m[name])
}

func call(t *testing.T, url, method, bearer, body string) reply {
	t.Helper()
	r, err := send(url, method, bearer, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is call for goroutines, which must not t.Fatal.
func send(url, method, bearer, body string) (reply, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func newTestServer(t *testing.T) *Server {
	t.Helper()
	s := NewServer(mk)
	t.Cleanup(s.Close)
	return s
}

func TestListensOnLoopback(t *testing.T) {
	s := newTestServer(t)
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || s.APIURL() != s.URL() || s.ManagementURL() != s.URL()+"/management/v1-preview1" {
		t.Fatalf("URLs %s %s %s", s.URL(), s.APIURL(), s.ManagementURL())
	}
}

func TestAuth(t *testing.T) {
	s := NewServer(mk, "second-key")
	defer s.Close()
	k := s.AddKey(s.AddProject("p").ID, "k")
	gone := s.AddKey(s.AddProject("q").ID, "gone")
	if r := call(t, s.ManagementURL()+"/api-key/"+gone.ID, http.MethodDelete, mk, ""); r.status != http.StatusOK {
		t.Fatalf("delete: %d", r.status)
	}
	tests := []struct {
		name     string
		url      string
		bearer   string
		want     int
		wantCode string
	}{
		{"management key", s.ManagementURL() + "/project", mk, http.StatusOK, ""},
		{"second management key", s.ManagementURL() + "/project", "second-key", http.StatusOK, ""},
		{"no key", s.ManagementURL() + "/project", "", http.StatusUnauthorized, `"invalid_management_key"`},
		{"unknown key", s.ManagementURL() + "/project", "nope", http.StatusUnauthorized, `"invalid_management_key"`},
		{"regular key on management", s.ManagementURL() + "/project", k.Key, http.StatusUnauthorized, `"invalid_management_key"`},
		{"live regular key", s.APIURL() + "/data/v1/unit-types", k.Key, http.StatusOK, ""},
		{"deleted regular key", s.APIURL() + "/data/v1/unit-types", gone.Key, http.StatusUnauthorized, `"invalid_api_key"`},
		{"management key on regular API", s.APIURL() + "/data/v1/unit-types", mk, http.StatusUnauthorized, `"invalid_api_key"`},
		{"no regular key", s.APIURL() + "/data/v1/unit-types", "", http.StatusUnauthorized, `"invalid_api_key"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, tc.url, http.MethodGet, tc.bearer, "")
			if r.status != tc.want {
				t.Fatalf("status %d, want %d", r.status, tc.want)
			}
			if tc.wantCode != "" && r.field(t, "error_code") != tc.wantCode {
				t.Fatalf("body %s, want error_code %s", r.body, tc.wantCode)
			}
		})
	}
	t.Run("revoked management key", func(t *testing.T) {
		s.RevokeManagementKey("second-key")
		if r := call(t, s.ManagementURL()+"/project", http.MethodGet, "second-key", ""); r.status != http.StatusUnauthorized {
			t.Fatalf("status %d", r.status)
		}
		if r := call(t, s.ManagementURL()+"/project", http.MethodGet, mk, ""); r.status != http.StatusOK {
			t.Fatalf("the other key: status %d", r.status)
		}
	})
}

// TestCRUD walks the documented API in order; each step sees the state
// the previous ones left.
func TestCRUD(t *testing.T) {
	s := newTestServer(t)
	m := s.ManagementURL()
	var projectID, keyID, keyValue string
	steps := []struct {
		name   string
		method string
		path   func() string
		body   string
		want   int
		check  func(*testing.T, reply)
	}{
		{"create project without name", http.MethodPost, func() string { return "/project" }, `{"project_name":" "}`, 400, nil},
		{"create project with bad JSON", http.MethodPost, func() string { return "/project" }, `{`, 400, nil},
		{"create project", http.MethodPost, func() string { return "/project" }, `{"project_name":"p1"}`, 200, func(t *testing.T, r reply) {
			if err := json.Unmarshal([]byte(r.field(t, "id")), &projectID); err != nil || !strings.HasPrefix(projectID, "prj_") {
				t.Fatalf("project id %s must be a string like prj_…", r.field(t, "id"))
			}
			if r.field(t, "project_name") != `"p1"` || r.field(t, "owner") == "" || r.field(t, "created_by") == "" {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"list projects", http.MethodGet, func() string { return "/project" }, "", 200, func(t *testing.T, r reply) {
			var list []map[string]any
			if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 || list[0]["id"] != projectID {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"rename project", http.MethodPatch, func() string { return "/project/" + projectID }, `{"project_name":"p2"}`, 200, func(t *testing.T, r reply) {
			if r.field(t, "project_name") != `"p2"` || s.Projects()[0].Name != "p2" {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"rename project without name", http.MethodPatch, func() string { return "/project/" + projectID }, `{}`, 400, nil},
		{"rename unknown project", http.MethodPatch, func() string { return "/project/prj_nope" }, `{"project_name":"x"}`, 404, nil},
		{"GET one project", http.MethodGet, func() string { return "/project/" + projectID }, "", 405, func(t *testing.T, r reply) {
			if r.header.Get("Allow") != "PATCH, DELETE" {
				t.Fatalf("Allow = %q", r.header.Get("Allow"))
			}
		}},
		{"create key without name", http.MethodPost, func() string { return "/project/" + projectID + "/api-key" }, `{"key_name":""}`, 400, nil},
		{"create key in unknown project", http.MethodPost, func() string { return "/project/prj_nope/api-key" }, `{"key_name":"k"}`, 404, nil},
		{"create key", http.MethodPost, func() string { return "/project/" + projectID + "/api-key" }, `{"key_name":"k1"}`, 200, func(t *testing.T, r reply) {
			_ = json.Unmarshal([]byte(r.field(t, "id")), &keyID)
			_ = json.Unmarshal([]byte(r.field(t, "key")), &keyValue)
			if !strings.HasPrefix(keyID, "key_") || len(keyValue) != 35 || !strings.HasPrefix(keyValue, "sk_") {
				t.Fatalf("body %s", r.body)
			}
			if r.field(t, "project") != `{"id":"`+projectID+`"}` || r.field(t, "key_name") != `"k1"` {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"list keys", http.MethodGet, func() string { return "/project/" + projectID + "/api-key" }, "", 200, func(t *testing.T, r reply) {
			var list []map[string]any
			if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 || list[0]["key"] != keyValue {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"rename key", http.MethodPatch, func() string { return "/api-key/" + keyID }, `{"key_name":"k2"}`, 200, func(t *testing.T, r reply) {
			if k, _ := s.Key(keyID); r.field(t, "key_name") != `"k2"` || k.Name != "k2" {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"DELETE key collection", http.MethodDelete, func() string { return "/project/" + projectID + "/api-key" }, "", 405, nil},
		{"delete key", http.MethodDelete, func() string { return "/api-key/" + keyID }, "", 200, func(t *testing.T, r reply) {
			if r.field(t, "message") == "" {
				t.Fatalf("body %s", r.body)
			}
			if _, ok := s.KeyByValue(keyValue); ok {
				t.Fatal("deleted key still found by value")
			}
		}},
		{"delete key again", http.MethodDelete, func() string { return "/api-key/" + keyID }, "", 404, func(t *testing.T, r reply) {
			if r.field(t, "error_code") != `"api_key_not_found"` || r.field(t, "message") == "" {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"create another key", http.MethodPost, func() string { return "/project/" + projectID + "/api-key" }, `{"key_name":"k3"}`, 200, nil},
		{"delete project", http.MethodDelete, func() string { return "/project/" + projectID }, "", 200, func(t *testing.T, r reply) {
			if len(s.Keys()) != 0 || len(s.Projects()) != 0 {
				t.Fatalf("left %v and %v", s.Keys(), s.Projects())
			}
		}},
		{"list keys of deleted project", http.MethodGet, func() string { return "/project/" + projectID + "/api-key" }, "", 404, nil},
		{"unknown route", http.MethodGet, func() string { return "/nope" }, "", 404, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			r := call(t, m+st.path(), st.method, mk, st.body)
			if r.status != st.want {
				t.Fatalf("status %d, want %d; body %s", r.status, st.want, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if st.check != nil {
				st.check(t, r)
			}
		})
	}
	want := Stats{Requests: len(steps), KeysCreated: 2, KeysDeleted: 2, ProjectsCreated: 1, ProjectsDeleted: 1}
	if got := s.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

func TestRegularAPIMethod(t *testing.T) {
	s := newTestServer(t)
	k := s.AddKey(s.AddProject("p").ID, "k")
	if r := call(t, s.APIURL()+"/data/v1/unit-types", http.MethodPost, k.Key, "{}"); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET" {
		t.Fatalf("status %d, Allow %q", r.status, r.header.Get("Allow"))
	}
	r := call(t, s.APIURL()+"/data/v1/unit-types", http.MethodGet, k.Key, "")
	// Climatiq's shape: an object whose unit_types holds the list.
	var answer map[string][]struct {
		UnitType string `json:"unit_type"`
	}
	if err := json.Unmarshal(r.body, &answer); err != nil || len(answer) != 1 || len(answer["unit_types"]) == 0 || answer["unit_types"][0].UnitType == "" {
		t.Fatalf("body %s", r.body)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name           string
		setup          func(*Server)
		method         string
		want           []int // statuses of consecutive POST /project calls
		wantRetryAfter string
		wantCreated    int
		wantStats      func(Stats) bool
	}{
		{
			name:        "FailNext",
			setup:       func(s *Server) { s.FailNext(2, http.StatusInternalServerError) },
			want:        []int{500, 500, 200},
			wantCreated: 1,
			wantStats:   func(st Stats) bool { return st.Failures == 2 && st.Requests == 3 },
		},
		{
			name:        "FailNextMethod skips other methods",
			setup:       func(s *Server) { s.FailNextMethod(http.MethodDelete, 1, http.StatusInternalServerError) },
			want:        []int{200, 200},
			wantCreated: 2,
		},
		{
			name:           "503 carries Retry-After only when set",
			setup:          func(s *Server) { s.FailNext(1, http.StatusServiceUnavailable) },
			want:           []int{503},
			wantRetryAfter: "",
		},
		{
			name: "503 with Retry-After",
			setup: func(s *Server) {
				s.SetRetryAfter(1500 * time.Millisecond)
				s.FailNext(1, http.StatusServiceUnavailable)
			},
			want:           []int{503},
			wantRetryAfter: "2",
		},
		{
			name:           "429 always carries Retry-After",
			setup:          func(s *Server) { s.FailNext(1, http.StatusTooManyRequests) },
			want:           []int{429},
			wantRetryAfter: "1",
			wantStats:      func(st Stats) bool { return st.RateLimited == 1 && st.Failures == 0 },
		},
		{
			name:           "failure rate 1",
			setup:          func(s *Server) { s.SetFailureRate(1); s.SetRetryAfter(3 * time.Second) },
			want:           []int{503, 503, 503},
			wantRetryAfter: "3",
		},
		{
			name:           "rate limit",
			setup:          func(s *Server) { s.SetRateLimit(1); s.SetRetryAfter(2 * time.Second) },
			want:           []int{200, 429, 429},
			wantRetryAfter: "2",
			wantCreated:    1,
			wantStats:      func(st Stats) bool { return st.RateLimited == 2 },
		},
		{
			name:        "garbage: invalid JSON, action happens",
			setup:       func(s *Server) { s.SetGarbage(true) },
			want:        []int{200},
			wantCreated: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			tc.setup(s)
			var last reply
			for i, want := range tc.want {
				last = call(t, s.ManagementURL()+"/project", http.MethodPost, mk, `{"project_name":"p"}`)
				if last.status != want {
					t.Fatalf("call %d: status %d, want %d", i, last.status, want)
				}
				if want >= 400 && last.field(t, "error_code") == "" {
					t.Fatalf("fault without a JSON error body: %s", last.body)
				}
			}
			if got := last.header.Get("Retry-After"); got != tc.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.wantRetryAfter)
			}
			if got := len(s.Projects()); got != tc.wantCreated {
				t.Errorf("%d projects created, want %d", got, tc.wantCreated)
			}
			if strings.Contains(tc.name, "garbage") && json.Valid(last.body) {
				t.Errorf("garbage body is valid JSON: %s", last.body)
			}
			if tc.wantStats != nil && !tc.wantStats(s.Stats()) {
				t.Errorf("stats %+v", s.Stats())
			}
		})
	}
}

func TestLatency(t *testing.T) {
	s := newTestServer(t)
	s.SetLatency(100 * time.Millisecond)
	start := time.Now()
	if r := call(t, s.ManagementURL()+"/project", http.MethodGet, mk, ""); r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("answered after %s", d)
	}
}

func TestSeedingAndViews(t *testing.T) {
	s := newTestServer(t)
	p1, p2 := s.AddProject("a"), s.AddProject("b")
	k1, k2, k3 := s.AddKey(p1.ID, "k1"), s.AddKey(p2.ID, "k2"), s.AddKey(p1.ID, "k3")
	if ps := s.Projects(); len(ps) != 2 || ps[0] != p1 || ps[1] != p2 {
		t.Fatalf("projects %+v not in creation order", ps)
	}
	if ks := s.Keys(); len(ks) != 3 || ks[0] != k1 || ks[1] != k2 || ks[2] != k3 {
		t.Fatalf("keys %+v not in creation order", ks)
	}
	if k, ok := s.KeyByValue(k2.Key); !ok || k != k2 {
		t.Fatal("KeyByValue misses a live key")
	}
	if _, ok := s.Key("key_nope"); ok {
		t.Fatal("Key finds an unknown id")
	}
	if st := s.Stats(); st != (Stats{}) {
		t.Fatalf("seeding counted: %+v", st)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("AddKey into an unknown project did not panic")
		}
	}()
	s.AddKey("prj_nope", "k")
}

// TestConcurrency hammers the fake from many goroutines; run with -race.
func TestConcurrency(t *testing.T) {
	s := newTestServer(t)
	p := s.AddProject("p")
	const workers, perWorker = 32, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				r, err := send(s.ManagementURL()+"/project/"+p.ID+"/api-key", http.MethodPost, mk, fmt.Sprintf(`{"key_name":"w%d-%d"}`, w, i))
				var key struct{ ID string }
				if err != nil || r.status != http.StatusOK || json.Unmarshal(r.body, &key) != nil {
					t.Errorf("create: %d %v", r.status, err)
					return
				}
				if i%2 == 0 {
					if r, err := send(s.ManagementURL()+"/api-key/"+key.ID, http.MethodDelete, mk, ""); err != nil || r.status != http.StatusOK {
						t.Errorf("delete: %d %v", r.status, err)
					}
				}
				_ = s.Keys()
			}
		})
	}
	wg.Wait()
	const created, deleted = workers * perWorker, workers * ((perWorker + 1) / 2)
	st := s.Stats()
	if st.KeysCreated != created || st.KeysDeleted != deleted || len(s.Keys()) != created-deleted || st.DuplicateNames != 0 {
		t.Fatalf("stats %+v, %d live keys", st, len(s.Keys()))
	}
	seen := map[string]bool{}
	for _, k := range s.Keys() {
		if seen[k.Key] || seen[k.ID] {
			t.Fatalf("duplicate id or value: %+v", k)
		}
		seen[k.Key], seen[k.ID] = true, true
	}
}
