// Package climatiqtest is an in-process fake of Climatiq's management API and
// of the regular API's key check, in the spirit of net/http/httptest. It
// follows the documented API, including its failure modes, and has switches
// for latency, 5xx, 429 with Retry-After, a request-rate cap and garbage
// JSON. It listens on 127.0.0.1 only.
package climatiqtest

import (
	"crypto/rand"
	"encoding/json"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

const (
	managementPrefix = "/management/v1-preview1"
	ownerID          = "usr_fake_owner"
)

// Stats counts what the fake has seen and done.
type Stats struct {
	Requests        int
	KeysCreated     int
	KeysDeleted     int
	ProjectsCreated int
	ProjectsDeleted int
	RateLimited     int // 429s sent
	Failures        int // 5xx sent
	// DuplicateNames counts creates of a key whose name an earlier create
	// already used: a retried create that the upstream had acted on.
	DuplicateNames int
}

// Server is a running fake.
type Server struct {
	srv *httptest.Server

	mu             sync.Mutex
	managementKeys map[string]bool
	projects       map[string]*climatiq.Project
	keys           map[string]*climatiq.APIKey
	order          []string // key ids in creation order, for stable views
	createdNames   map[string]bool
	stats          Stats

	latency     time.Duration
	failureRate float64
	retryAfter  time.Duration
	limiter     *rate.Limiter
	failNext    int
	failStatus  int
	failMethod  string
	garbage     bool
}

// NewServer starts a fake that accepts the given management keys.
func NewServer(managementKeys ...string) *Server {
	s := &Server{
		managementKeys: map[string]bool{},
		projects:       map[string]*climatiq.Project{},
		keys:           map[string]*climatiq.APIKey{},
		createdNames:   map[string]bool{},
	}
	for _, k := range managementKeys {
		s.managementKeys[k] = true
	}
	mux := http.NewServeMux()
	mux.HandleFunc(managementPrefix+"/", s.serveManagement)
	mux.HandleFunc("/data/v1/unit-types", s.serveUnitTypes)
	s.srv = httptest.NewServer(mux) // httptest binds 127.0.0.1
	return s
}

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake's base URL.
func (s *Server) URL() string { return s.srv.URL }

// ManagementURL is the base of the management API.
func (s *Server) ManagementURL() string { return s.srv.URL + managementPrefix }

// APIURL is the base of the regular API.
func (s *Server) APIURL() string { return s.srv.URL }

// SetLatency delays every management request.
func (s *Server) SetLatency(d time.Duration) { s.with(func() { s.latency = d }) }

// SetFailureRate answers this fraction of management requests with 503
// before acting on them.
func (s *Server) SetFailureRate(p float64) { s.with(func() { s.failureRate = p }) }

// SetRetryAfter sets the Retry-After of 503s and 429s (whole seconds, at least 1).
func (s *Server) SetRetryAfter(d time.Duration) { s.with(func() { s.retryAfter = d }) }

// SetRateLimit answers management requests beyond rps per second with 429.
// 0 turns the cap off.
func (s *Server) SetRateLimit(rps float64) {
	s.with(func() {
		s.limiter = nil
		if rps > 0 {
			s.limiter = rate.NewLimiter(rate.Limit(rps), int(math.Max(1, rps/10)))
		}
	})
}

// FailNext answers the next n management requests with status, before
// acting on them.
func (s *Server) FailNext(n, status int) { s.FailNextMethod("", n, status) }

// FailNextMethod is FailNext for requests of one HTTP method only (all
// methods when empty), e.g. to fail a delete but not the create before it.
func (s *Server) FailNextMethod(method string, n, status int) {
	s.with(func() { s.failMethod, s.failNext, s.failStatus = method, n, status })
}

// SetGarbage makes successful management answers invalid JSON; the action
// itself still happens.
func (s *Server) SetGarbage(on bool) { s.with(func() { s.garbage = on }) }

// RevokeManagementKey makes later calls with key fail with 401.
func (s *Server) RevokeManagementKey(key string) { s.with(func() { delete(s.managementKeys, key) }) }

// AddProject creates a project directly, for seeding.
func (s *Server) AddProject(name string) climatiq.Project {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addProject(name)
}

// AddKey creates a key directly, for seeding.
func (s *Server) AddKey(projectID, name string) climatiq.APIKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addKey(projectID, name)
}

// Projects lists all projects, sorted by id.
func (s *Server) Projects() []climatiq.Project {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]climatiq.Project, 0, len(s.projects))
	for _, p := range s.projects {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Keys lists all live keys in creation order.
func (s *Server) Keys() []climatiq.APIKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]climatiq.APIKey, 0, len(s.keys))
	for _, id := range s.order {
		if k, ok := s.keys[id]; ok {
			out = append(out, *k)
		}
	}
	return out
}

// Key returns a live key by id.
func (s *Server) Key(id string) (climatiq.APIKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return climatiq.APIKey{}, false
	}
	return *k, true
}

// KeyByValue returns a live key by its value.
func (s *Server) KeyByValue(value string) (climatiq.APIKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		if k.Key == value {
			return *k, true
		}
	}
	return climatiq.APIKey{}, false
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Server) with(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *Server) addProject(name string) climatiq.Project {
	p := &climatiq.Project{ID: "prj_" + randomString(16), Name: name}
	p.Owner.ID = ownerID
	s.projects[p.ID] = p
	return *p
}

func (s *Server) addKey(projectID, name string) climatiq.APIKey {
	k := &climatiq.APIKey{ID: "key_" + randomString(16), Name: name, Key: "sk_" + randomString(32)}
	k.Project.ID = projectID
	s.keys[k.ID] = k
	s.order = append(s.order, k.ID)
	s.compactOrder()
	return *k
}

// compactOrder drops deleted ids once they dominate the order slice.
func (s *Server) compactOrder() {
	if len(s.order) < 1024 || len(s.order) < 2*len(s.keys) {
		return
	}
	live := s.order[:0]
	for _, id := range s.order {
		if _, ok := s.keys[id]; ok {
			live = append(live, id)
		}
	}
	s.order = live
}

// fault decides, before any action, whether a management request is
// answered with a fault, and with which status.
func (s *Server) fault(method string) (status int, retryAfter time.Duration, garbage bool, latency time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Requests++
	latency, garbage = s.latency, s.garbage
	retryAfter = s.retryAfter
	switch {
	case s.failNext > 0 && (s.failMethod == "" || s.failMethod == method):
		s.failNext--
		status = s.failStatus
	case s.limiter != nil && !s.limiter.Allow():
		status = http.StatusTooManyRequests
	case s.failureRate > 0 && mrand.Float64() < s.failureRate:
		status = http.StatusServiceUnavailable
	}
	switch {
	case status == http.StatusTooManyRequests:
		s.stats.RateLimited++
	case status >= 500:
		s.stats.Failures++
	}
	return status, retryAfter, garbage, latency
}

func (s *Server) serveManagement(w http.ResponseWriter, r *http.Request) {
	status, retryAfter, garbage, latency := s.fault(r.Method)
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			secs := int(math.Ceil(retryAfter.Seconds()))
			if secs < 1 {
				secs = 1
			}
			w.Header().Set("Retry-After", strconv.Itoa(secs))
		}
		writeError(w, status, "injected_fault", http.StatusText(status))
		return
	}
	if !s.authorized(r, true) {
		writeError(w, http.StatusUnauthorized, "invalid_management_key", "The management key is invalid or was revoked.")
		return
	}

	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, managementPrefix), "/"), "/")
	var code int
	var body any
	switch {
	case len(parts) == 1 && parts[0] == "project":
		code, body = s.projectsCollection(r)
	case len(parts) == 2 && parts[0] == "project":
		code, body = s.projectItem(r, parts[1])
	case len(parts) == 3 && parts[0] == "project" && parts[2] == "api-key":
		code, body = s.keysCollection(r, parts[1])
	case len(parts) == 2 && parts[0] == "api-key":
		code, body = s.keyItem(r, parts[1])
	default:
		code, body = http.StatusNotFound, apiError(http.StatusNotFound, "not_found", "No such route.")
	}
	if garbage && code < 300 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"id": "unterminated`))
		return
	}
	writeJSON(w, code, body)
}

func (s *Server) authorized(r *http.Request, management bool) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if management {
		return s.managementKeys[token]
	}
	for _, k := range s.keys {
		if k.Key == token {
			return true
		}
	}
	return false
}

type nameBody struct {
	ProjectName string `json:"project_name"`
	KeyName     string `json:"key_name"`
}

func decodeName(r *http.Request) (nameBody, bool) {
	var b nameBody
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<16)).Decode(&b); err != nil {
		return b, false
	}
	return b, true
}

// projectJSON and keyJSON add a field clients do not know, to keep them
// tolerant of API growth.
func projectJSON(p climatiq.Project) map[string]any {
	return map[string]any{"id": p.ID, "project_name": p.Name, "owner": map[string]any{"id": p.Owner.ID}, "created_by": "fake"}
}

func keyJSON(k climatiq.APIKey) map[string]any {
	return map[string]any{"id": k.ID, "key_name": k.Name, "key": k.Key, "project": map[string]any{"id": k.Project.ID}, "scopes": []string{"all"}}
}

func (s *Server) projectsCollection(r *http.Request) (int, any) {
	switch r.Method {
	case http.MethodGet:
		list := []any{}
		for _, p := range s.Projects() {
			list = append(list, projectJSON(p))
		}
		return http.StatusOK, list
	case http.MethodPost:
		b, ok := decodeName(r)
		if !ok || strings.TrimSpace(b.ProjectName) == "" {
			return http.StatusBadRequest, apiError(http.StatusBadRequest, "invalid_request", "project_name is required.")
		}
		s.mu.Lock()
		p := s.addProject(b.ProjectName)
		s.stats.ProjectsCreated++
		s.mu.Unlock()
		return http.StatusOK, projectJSON(p)
	}
	return methodNotAllowed()
}

func (s *Server) projectItem(r *http.Request, id string) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.projects[id]
	if !ok {
		return http.StatusNotFound, apiError(http.StatusNotFound, "project_not_found", "Project not found.")
	}
	switch r.Method {
	case http.MethodPatch:
		b, ok := decodeName(r)
		if !ok || strings.TrimSpace(b.ProjectName) == "" {
			return http.StatusBadRequest, apiError(http.StatusBadRequest, "invalid_request", "project_name is required.")
		}
		p.Name = b.ProjectName
		return http.StatusOK, projectJSON(*p)
	case http.MethodDelete:
		delete(s.projects, id)
		s.stats.ProjectsDeleted++
		for kid, k := range s.keys {
			if k.Project.ID == id {
				delete(s.keys, kid)
				s.stats.KeysDeleted++
			}
		}
		return http.StatusOK, map[string]string{"message": "Project deleted."}
	}
	return methodNotAllowed()
}

func (s *Server) keysCollection(r *http.Request, projectID string) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.projects[projectID]; !ok {
		return http.StatusNotFound, apiError(http.StatusNotFound, "project_not_found", "Project not found.")
	}
	switch r.Method {
	case http.MethodGet:
		list := []any{}
		for _, id := range s.order {
			if k, ok := s.keys[id]; ok && k.Project.ID == projectID {
				list = append(list, keyJSON(*k))
			}
		}
		return http.StatusOK, list
	case http.MethodPost:
		b, ok := decodeName(r)
		if !ok || strings.TrimSpace(b.KeyName) == "" {
			return http.StatusBadRequest, apiError(http.StatusBadRequest, "invalid_request", "key_name is required.")
		}
		k := s.addKey(projectID, b.KeyName)
		s.stats.KeysCreated++
		if s.createdNames[b.KeyName] {
			s.stats.DuplicateNames++
		}
		s.createdNames[b.KeyName] = true
		return http.StatusOK, keyJSON(k)
	}
	return methodNotAllowed()
}

func (s *Server) keyItem(r *http.Request, id string) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return http.StatusNotFound, apiError(http.StatusNotFound, "api_key_not_found", "API key not found.")
	}
	switch r.Method {
	case http.MethodPatch:
		b, ok := decodeName(r)
		if !ok || strings.TrimSpace(b.KeyName) == "" {
			return http.StatusBadRequest, apiError(http.StatusBadRequest, "invalid_request", "key_name is required.")
		}
		k.Name = b.KeyName
		return http.StatusOK, keyJSON(*k)
	case http.MethodDelete:
		delete(s.keys, id)
		s.stats.KeysDeleted++
		return http.StatusOK, map[string]string{"message": "API key deleted."}
	}
	return methodNotAllowed()
}

// serveUnitTypes is the regular API's cheap key check.
func (s *Server) serveUnitTypes(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, apiError(http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed."))
		return
	}
	if !s.authorized(r, false) {
		writeError(w, http.StatusUnauthorized, "invalid_api_key", "Invalid API key.")
		return
	}
	writeJSON(w, http.StatusOK, []map[string]any{
		{"unit_type": "Energy", "units": map[string][]string{"energy": {"kWh", "MWh"}}},
		{"unit_type": "Weight", "units": map[string][]string{"weight": {"kg", "t"}}},
	})
}

func methodNotAllowed() (int, any) {
	return http.StatusMethodNotAllowed, apiError(http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed.")
}

func apiError(status int, code, message string) map[string]any {
	return map[string]any{"error": http.StatusText(status), "error_code": code, "message": message, "request_id": randomString(8)}
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, apiError(status, code, message))
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	for i, c := range buf {
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf)
}
