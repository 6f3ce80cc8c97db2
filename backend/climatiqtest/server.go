// Package climatiqtest is an in-process fake of Climatiq's management API and
// of the regular API's key check, in the spirit of net/http/httptest. It
// follows the documented API, including its failure modes, and has switches
// for latency, 5xx, 429 with Retry-After, a request-rate cap, garbage
// JSON and error answers that echo the request. It listens on 127.0.0.1
// only.
package climatiqtest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/loopback"
)

const (
	managementPrefix = "/management/v1-preview1"
	unitTypesPath    = "/data/v1/unit-types"
	ownerID          = "usr_fake_owner"
)

// Stats counts what the fake has seen and done.
type Stats struct {
	Requests        int // management requests, faults included
	KeysCreated     int
	KeysDeleted     int // by DELETE /api-key/:id and with their project
	ProjectsCreated int
	ProjectsDeleted int
	RateLimited     int // 429s sent
	Failures        int // 5xx sent
	// DuplicateNames counts creates of a key whose name an earlier create
	// already used: a retried create that the upstream had acted on.
	DuplicateNames int
	// DuplicateProjectNames is DuplicateNames for projects.
	DuplicateProjectNames int
	// CommittedThenFailed counts creates that took effect but were answered
	// with a failure (CommitThenFail) or not at all (SetCommitThenHang).
	CommittedThenFailed int
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	srv *httptest.Server

	mu              sync.Mutex
	seq             uint64 // creation order, for stable views
	managementKeys  map[string]bool
	projects        map[string]*project
	keys            map[string]*apiKey
	keysByValue     map[string]*apiKey
	createdNames    map[string]bool // of keys
	createdProjects map[string]bool // names of projects
	stats           Stats

	latency time.Duration
	// landLate: creates are answered 504 and take effect only at Land.
	landLate bool
	landing  []func()
	// completeAbandoned: act on requests whose client gave up.
	completeAbandoned bool
	failureRate       float64
	lastUserAgent     string
	retryAfter        time.Duration
	limiter           *rate.Limiter
	failNext          int
	failStatus        int
	failMethod        string
	garbage           bool
	// missingStatus answers an id that does not exist (404 unless set).
	missingStatus int
	// commitFailNext creates commit and are then answered commitFailStatus.
	commitFailNext   int
	commitFailStatus int
	commitThenHang   bool
	answerGate       chan struct{}
	maxNameLength    int // in characters; 0: no limit
	echo             bool
	// inFlight counts management requests being served, abandoned ones
	// that still complete (SetCompleteAbandoned) included.
	inFlight int
}

type project struct {
	seq uint64
	climatiq.Project
	keys map[string]*apiKey
}

type apiKey struct {
	seq uint64
	climatiq.APIKey
}

// NewServer starts a fake that accepts the given management keys. It
// panics without one, or when it cannot listen, as httptest does.
func NewServer(managementKeys ...string) *Server {
	if len(managementKeys) == 0 {
		panic("climatiqtest: NewServer needs at least one management key")
	}
	s := &Server{
		managementKeys:  map[string]bool{},
		projects:        map[string]*project{},
		keys:            map[string]*apiKey{},
		keysByValue:     map[string]*apiKey{},
		createdNames:    map[string]bool{},
		createdProjects: map[string]bool{},
		missingStatus:   http.StatusNotFound,
	}
	for _, k := range managementKeys {
		s.managementKeys[k] = true
	}
	mux := http.NewServeMux()
	mux.HandleFunc(managementPrefix+"/", s.serveManagement)
	mux.HandleFunc(unitTypesPath, s.serveUnitTypes)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "No such route.")
	})

	s.srv = loopback.NewServer("climatiqtest", mux)
	return s
}

// Close stops the fake and waits for its requests to finish.
func (s *Server) Close() { s.srv.Close() }

// URL is the fake's base URL, e.g. http://127.0.0.1:port.
func (s *Server) URL() string { return s.srv.URL }

// ManagementURL is the base of the management API.
func (s *Server) ManagementURL() string { return s.srv.URL + managementPrefix }

// APIURL is the base of the regular API.
func (s *Server) APIURL() string { return s.srv.URL }

// SetCompleteAbandoned makes a request whose client gives up during the
// latency still take effect, as a real upstream that already started the
// work may: the key exists, only the answer is lost. Off by default.
func (s *Server) SetCompleteAbandoned(on bool) { s.with(func() { s.completeAbandoned = on }) }

func (s *Server) completesAbandoned() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.completeAbandoned
}

// SetLatency delays every management request, faults included.
func (s *Server) SetLatency(d time.Duration) { s.with(func() { s.latency = d }) }

// SetLandLate makes creates (POST of a project or a key) be answered 504
// Gateway Timeout before they take effect, and take effect only when Land
// is called: an upstream that finishes the work after its gateway gave up,
// later than any clean-up the client does right away.
func (s *Server) SetLandLate(on bool) { s.with(func() { s.landLate = on }) }

// Land carries out the creates SetLandLate held back, in the order they
// came, and reports how many.
func (s *Server) Land() int {
	s.mu.Lock()
	landing := s.landing
	s.landing = nil
	s.mu.Unlock()
	for _, f := range landing {
		f()
	}
	return len(landing)
}

// LastUserAgent is the User-Agent of the last management request.
func (s *Server) LastUserAgent() (ua string) {
	s.with(func() { ua = s.lastUserAgent })
	return ua
}

// SetFailureRate answers this fraction of management requests with 503
// before acting on them.
func (s *Server) SetFailureRate(p float64) { s.with(func() { s.failureRate = p }) }

// SetRetryAfter sets the Retry-After of 503s and 429s (whole seconds, at
// least 1). Without it 503s carry none and 429s say 1.
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

// FailNext answers the next n management requests with status and a JSON
// error body, before acting on them.
func (s *Server) FailNext(n, status int) { s.FailNextMethod("", n, status) }

// FailNextMethod is FailNext for requests of one HTTP method only (all
// methods when empty), e.g. to fail a delete but not the create before it.
func (s *Server) FailNextMethod(method string, n, status int) {
	s.with(func() { s.failMethod, s.failNext, s.failStatus = method, n, status })
}

// SetGarbage makes successful management answers invalid JSON; the action
// itself still happens.
func (s *Server) SetGarbage(on bool) { s.with(func() { s.garbage = on }) }

// SetMissingStatus sets the status that answers a GET, PATCH or DELETE of
// a project or key id that does not exist: 404 as documented (also when
// status is 0), or, as some upstreams do, 403 or 400.
func (s *Server) SetMissingStatus(status int) {
	if status == 0 {
		status = http.StatusNotFound
	}
	s.with(func() { s.missingStatus = status })
}

// CommitThenFail makes the next n creates (POST of a project or a key)
// take effect and then be answered status, e.g. 503 or 504, as if a proxy
// lost the upstream's answer.
func (s *Server) CommitThenFail(n, status int) {
	s.with(func() { s.commitFailNext, s.commitFailStatus = n, status })
}

// SetCommitThenHang makes every create take effect and then never answer,
// until the client gives up or the fake closes: a create that times out.
func (s *Server) SetCommitThenHang(on bool) { s.with(func() { s.commitThenHang = on }) }

// HoldCreateAnswers makes every create take effect and then wait with its
// answer until release is called (or the client gives up): a slow answer,
// during which the key already exists upstream.
func (s *Server) HoldCreateAnswers() (release func()) {
	gate := make(chan struct{})
	s.with(func() { s.answerGate = gate })
	var once sync.Once
	return func() {
		once.Do(func() {
			s.with(func() {
				if s.answerGate == gate {
					s.answerGate = nil
				}
			})
			close(gate)
		})
	}
}

// SetMaxNameLength makes a create or rename with a name longer than n
// characters fail with 400 (invalid_name). 0 means no limit.
func (s *Server) SetMaxNameLength(n int) { s.with(func() { s.maxNameLength = n }) }

// SetEchoRequest makes every error answer, of the management API and of
// the key check, echo the request, as some APIs and proxies do: its
// message quotes the Authorization header (the bearer key) and the body
// verbatim and the request as JSON, which a "request" field carries too.
// Off by default.
func (s *Server) SetEchoRequest(on bool) { s.with(func() { s.echo = on }) }

func (s *Server) echoes() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.echo
}

// RevokeManagementKey makes later calls with key fail with 401.
func (s *Server) RevokeManagementKey(key string) { s.with(func() { delete(s.managementKeys, key) }) }

// AddManagementKey accepts another management key for the same account, as
// after a rotation in the dashboard.
func (s *Server) AddManagementKey(key string) { s.with(func() { s.managementKeys[key] = true }) }

// AddProject creates a project directly, for seeding. It is not counted in
// Stats.
func (s *Server) AddProject(name string) climatiq.Project {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addProject(name).Project
}

// AddKey creates a key directly, for seeding. It is not counted in Stats.
// It panics if the project does not exist: such a key could never be
// listed.
func (s *Server) AddKey(projectID, name string) climatiq.APIKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.projects[projectID]
	if !ok {
		panic(fmt.Sprintf("climatiqtest: AddKey: no project %q", projectID))
	}
	return s.addKey(p, name).APIKey
}

// RemoveKey deletes a key directly, as an operator in the dashboard would,
// behind the back of whoever created it. It is not counted in Stats. It
// reports whether the key existed.
func (s *Server) RemoveKey(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if ok {
		s.removeKey(k)
	}
	return ok
}

// RemoveProject deletes a project and its keys directly, as an operator in
// the dashboard would. It is not counted in Stats. It reports whether the
// project existed.
func (s *Server) RemoveProject(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.projects[id]
	if ok {
		for _, k := range p.keys {
			s.removeKey(k)
		}
		delete(s.projects, id)
	}
	return ok
}

// InFlight is the number of management requests being served, including
// requests whose client gave up that still complete (SetCompleteAbandoned):
// 0 means nothing more will change upstream until the next request.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// Project returns a project by id.
func (s *Server) Project(id string) (climatiq.Project, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.projects[id]; ok {
		return p.Project, true
	}
	return climatiq.Project{}, false
}

// Projects lists all projects in creation order.
func (s *Server) Projects() []climatiq.Project {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.projectList()
}

// Keys lists all live keys in creation order.
func (s *Server) Keys() []climatiq.APIKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return keyList(s.keys)
}

// Key returns a live key by id.
func (s *Server) Key(id string) (climatiq.APIKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[id]; ok {
		return k.APIKey, true
	}
	return climatiq.APIKey{}, false
}

// KeyByValue returns a live key by its value.
func (s *Server) KeyByValue(value string) (climatiq.APIKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keysByValue[value]; ok {
		return k.APIKey, true
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

func (s *Server) nextSeq() uint64 {
	s.seq++
	return s.seq
}

func (s *Server) addProject(name string) *project {
	p := &project{seq: s.nextSeq(), keys: map[string]*apiKey{}}
	p.ID, p.Name, p.Owner.ID = "prj_"+randomString(20), name, ownerID
	s.projects[p.ID] = p
	return p
}

func (s *Server) addKey(p *project, name string) *apiKey {
	k := &apiKey{seq: s.nextSeq()}
	k.ID, k.Name, k.Key, k.Project.ID = "key_"+randomString(20), name, "sk_"+randomString(32), p.ID
	s.keys[k.ID] = k
	s.keysByValue[k.Key] = k
	p.keys[k.ID] = k
	return k
}

func (s *Server) deleteKey(k *apiKey) {
	s.removeKey(k)
	s.stats.KeysDeleted++
}

// removeKey deletes a key without counting it. Called with s.mu held.
func (s *Server) removeKey(k *apiKey) {
	delete(s.keys, k.ID)
	delete(s.keysByValue, k.Key)
	if p, ok := s.projects[k.Project.ID]; ok {
		delete(p.keys, k.ID)
	}
}

func (s *Server) projectList() []climatiq.Project {
	ps := make([]*project, 0, len(s.projects))
	for _, p := range s.projects {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *project) int { return compareSeq(a.seq, b.seq) })
	out := make([]climatiq.Project, len(ps))
	for i, p := range ps {
		out[i] = p.Project
	}
	return out
}

func keyList(keys map[string]*apiKey) []climatiq.APIKey {
	ks := make([]*apiKey, 0, len(keys))
	for _, k := range keys {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b *apiKey) int { return compareSeq(a.seq, b.seq) })
	out := make([]climatiq.APIKey, len(ks))
	for i, k := range ks {
		out[i] = k.APIKey
	}
	return out
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// injectedFault is what fault decided for one management request.
type injectedFault struct {
	status     int // 0: none
	retryAfter time.Duration
	latency    time.Duration
	garbage    bool
}

// fault decides, before any action, whether a management request is
// answered with a fault, and with which status.
func (s *Server) fault(method string) injectedFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Requests++
	f := injectedFault{retryAfter: s.retryAfter, latency: s.latency, garbage: s.garbage}
	switch {
	case s.failNext > 0 && (s.failMethod == "" || s.failMethod == method):
		s.failNext--
		f.status = s.failStatus
	case s.limiter != nil && !s.limiter.Allow():
		f.status = http.StatusTooManyRequests
	case s.failureRate > 0 && mrand.Float64() < s.failureRate:
		f.status = http.StatusServiceUnavailable
	}
	switch {
	case f.status == http.StatusTooManyRequests:
		s.stats.RateLimited++
	case f.status >= 500:
		s.stats.Failures++
	}
	return f
}

func (s *Server) serveManagement(rw http.ResponseWriter, r *http.Request) {
	s.with(func() { s.inFlight++ })
	defer s.with(func() { s.inFlight-- })
	// Read the body first: only then does net/http notice a client that
	// gives up during the latency, so an abandoned request does nothing.
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 1<<16))
	w := s.echoWriter(rw, r, body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "Request body unreadable or too large.")
		return
	}
	s.with(func() { s.lastUserAgent = r.Header.Get("User-Agent") })
	f := s.fault(r.Method)
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			if !s.completesAbandoned() {
				t.Stop()
				return // the client gave up: nothing happens
			}
			// The upstream finishes what it started; only the answer is lost.
			<-t.C
		}
	}
	if f.status != 0 {
		// A 429 always says when to come back; a 503 only when told to.
		if f.status == http.StatusTooManyRequests || (f.status == http.StatusServiceUnavailable && f.retryAfter > 0) {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(f.retryAfter.Seconds())))))
		}
		writeError(w, f.status, "injected_fault", "Injected fault: "+http.StatusText(f.status)+".")
		return
	}
	if !s.authorized(r, true) {
		writeError(w, http.StatusUnauthorized, "invalid_management_key", "The management key is invalid or was revoked.")
		return
	}

	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, managementPrefix), "/"), "/")
	if r.Method == http.MethodPost && s.holdCreate(parts, body) {
		writeError(w, http.StatusGatewayTimeout, "injected_fault", "Injected fault: the gateway gave up; the create may still take effect.")
		return
	}
	a := s.route(r.Method, parts, body)
	if r.Method == http.MethodPost && a.status < 300 {
		// A create that took effect: its answer may still be lost.
		switch failStatus, hang := s.loseCreateAnswer(); {
		case hang:
			<-r.Context().Done()
			return
		case failStatus != 0:
			writeError(w, failStatus, "injected_fault", "Injected fault after the create: "+http.StatusText(failStatus)+".")
			return
		}
		s.mu.Lock()
		gate := s.answerGate
		s.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
	}
	if f.garbage && a.status < 300 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(`{"id": "unterminated`))
		return
	}
	a.write(w)
}

// holdCreate queues a create for Land when SetLandLate is on.
func (s *Server) holdCreate(parts []string, body []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.landLate {
		return false
	}
	s.stats.Failures++
	s.landing = append(s.landing, func() { s.route(http.MethodPost, parts, body) })
	return true
}

// route acts on a management request and builds its answer.
func (s *Server) route(method string, parts []string, body []byte) answer {
	var a answer
	switch {
	case len(parts) == 1 && parts[0] == "project":
		a = s.projectsCollection(method, body)
	case len(parts) == 2 && parts[0] == "project" && parts[1] != "":
		a = s.projectItem(method, parts[1], body)
	case len(parts) == 3 && parts[0] == "project" && parts[1] != "" && parts[2] == "api-key":
		a = s.keysCollection(method, parts[1], body)
	case len(parts) == 2 && parts[0] == "api-key" && parts[1] != "":
		a = s.keyItem(method, parts[1], body)
	default:
		a = errorAnswer(http.StatusNotFound, "not_found", "No such route.")
	}
	return a
}

// loseCreateAnswer says whether the answer to a create that took effect
// is replaced by a failure status (CommitThenFail) or never sent
// (SetCommitThenHang).
func (s *Server) loseCreateAnswer() (failStatus int, hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.commitFailNext > 0:
		s.commitFailNext--
		s.stats.CommittedThenFailed++
		s.stats.Failures++
		return s.commitFailStatus, false
	case s.commitThenHang:
		s.stats.CommittedThenFailed++
		return 0, true
	}
	return 0, false
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
	_, ok = s.keysByValue[token]
	return ok
}

// answer is a response the handlers build under the lock and write after.
type answer struct {
	status int
	body   any
	allow  string // for 405
}

func (a answer) write(w http.ResponseWriter) {
	if a.allow != "" {
		w.Header().Set("Allow", a.allow)
	}
	writeJSON(w, a.status, a.body)
}

func ok(body any) answer { return answer{status: http.StatusOK, body: body} }

func errorAnswer(status int, code, message string) answer {
	return answer{status: status, body: apiError(status, code, message)}
}

// missing answers a GET, PATCH or DELETE of an id that does not exist,
// with the status SetMissingStatus chose. Called with s.mu held.
func (s *Server) missing(code, message string) answer {
	switch s.missingStatus {
	case http.StatusNotFound:
		return errorAnswer(http.StatusNotFound, code, message)
	case http.StatusForbidden:
		return errorAnswer(http.StatusForbidden, "forbidden", "You do not have access to this resource.")
	}
	return errorAnswer(s.missingStatus, "invalid_request", "Invalid id.")
}

// invalidName answers a name over the limit SetMaxNameLength set, if any.
// Called with s.mu held.
func (s *Server) invalidName(field, name string) (answer, bool) {
	if s.maxNameLength <= 0 || utf8.RuneCountInString(name) <= s.maxNameLength {
		return answer{}, false
	}
	return answer{status: http.StatusBadRequest, body: map[string]any{
		"error":      "bad_request",
		"error_code": "invalid_name",
		"message":    fmt.Sprintf("%s must be at most %d characters", field, s.maxNameLength),
	}}, true
}

func methodNotAllowed(allow ...string) answer {
	a := errorAnswer(http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed.")
	a.allow = strings.Join(allow, ", ")
	return a
}

type nameBody struct {
	ProjectName string `json:"project_name"`
	KeyName     string `json:"key_name"`
}

func decodeName(body []byte) (nameBody, bool) {
	var b nameBody
	err := json.Unmarshal(body, &b)
	return b, err == nil
}

// projectJSON and keyJSON add fields clients do not know, to keep them
// tolerant of API growth.
func projectJSON(p climatiq.Project) map[string]any {
	return map[string]any{"id": p.ID, "project_name": p.Name, "owner": map[string]any{"id": p.Owner.ID}, "created_by": "fake"}
}

func keyJSON(k climatiq.APIKey) map[string]any {
	return map[string]any{"id": k.ID, "key_name": k.Name, "key": k.Key, "project": map[string]any{"id": k.Project.ID}, "created_by": "fake", "scopes": []string{"all"}}
}

func (s *Server) projectsCollection(method string, body []byte) answer {
	switch method {
	case http.MethodGet:
		s.mu.Lock()
		projects := s.projectList()
		s.mu.Unlock()
		list := make([]any, 0, len(projects))
		for _, p := range projects {
			list = append(list, projectJSON(p))
		}
		return ok(list)
	case http.MethodPost:
		b, valid := decodeName(body)
		if !valid || strings.TrimSpace(b.ProjectName) == "" {
			return errorAnswer(http.StatusBadRequest, "invalid_request", "project_name is required.")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if a, invalid := s.invalidName("project_name", b.ProjectName); invalid {
			return a
		}
		p := s.addProject(b.ProjectName)
		s.stats.ProjectsCreated++
		if s.createdProjects[b.ProjectName] {
			s.stats.DuplicateProjectNames++
		}
		s.createdProjects[b.ProjectName] = true
		return ok(projectJSON(p.Project))
	}
	return methodNotAllowed(http.MethodGet, http.MethodPost)
}

func (s *Server) projectItem(method, id string, body []byte) answer {
	if method != http.MethodPatch && method != http.MethodDelete {
		return methodNotAllowed(http.MethodPatch, http.MethodDelete)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, found := s.projects[id]
	if !found {
		return s.missing("project_not_found", "Project not found.")
	}
	if method == http.MethodPatch {
		b, valid := decodeName(body)
		if !valid || strings.TrimSpace(b.ProjectName) == "" {
			return errorAnswer(http.StatusBadRequest, "invalid_request", "project_name is required.")
		}
		if a, invalid := s.invalidName("project_name", b.ProjectName); invalid {
			return a
		}
		p.Name = b.ProjectName
		return ok(projectJSON(p.Project))
	}
	for _, k := range p.keys {
		s.deleteKey(k)
	}
	delete(s.projects, id)
	s.stats.ProjectsDeleted++
	return ok(map[string]string{"message": "Project deleted."})
}

func (s *Server) keysCollection(method, projectID string, body []byte) answer {
	if method != http.MethodGet && method != http.MethodPost {
		return methodNotAllowed(http.MethodGet, http.MethodPost)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, found := s.projects[projectID]
	switch {
	case !found && method == http.MethodGet:
		return s.missing("project_not_found", "Project not found.")
	case !found:
		return errorAnswer(http.StatusNotFound, "project_not_found", "Project not found.")
	}
	if method == http.MethodGet {
		keys := keyList(p.keys)
		list := make([]any, 0, len(keys))
		for _, k := range keys {
			list = append(list, keyJSON(k))
		}
		return ok(list)
	}
	b, valid := decodeName(body)
	if !valid || strings.TrimSpace(b.KeyName) == "" {
		return errorAnswer(http.StatusBadRequest, "invalid_request", "key_name is required.")
	}
	if a, invalid := s.invalidName("key_name", b.KeyName); invalid {
		return a
	}
	k := s.addKey(p, b.KeyName)
	s.stats.KeysCreated++
	if s.createdNames[b.KeyName] {
		s.stats.DuplicateNames++
	}
	s.createdNames[b.KeyName] = true
	return ok(keyJSON(k.APIKey))
}

func (s *Server) keyItem(method, id string, body []byte) answer {
	if method != http.MethodPatch && method != http.MethodDelete {
		return methodNotAllowed(http.MethodPatch, http.MethodDelete)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, found := s.keys[id]
	if !found {
		return s.missing("api_key_not_found", "API key not found.")
	}
	if method == http.MethodPatch {
		b, valid := decodeName(body)
		if !valid || strings.TrimSpace(b.KeyName) == "" {
			return errorAnswer(http.StatusBadRequest, "invalid_request", "key_name is required.")
		}
		if a, invalid := s.invalidName("key_name", b.KeyName); invalid {
			return a
		}
		k.Name = b.KeyName
		return ok(keyJSON(k.APIKey))
	}
	s.deleteKey(k)
	return ok(map[string]string{"message": "API key deleted."})
}

// serveUnitTypes is the regular API's cheap key check. Faults do not apply:
// they model the management API.
func (s *Server) serveUnitTypes(rw http.ResponseWriter, r *http.Request) {
	w := s.echoWriter(rw, r, nil)
	if r.Method != http.MethodGet {
		methodNotAllowed(http.MethodGet).write(w)
		return
	}
	if !s.authorized(r, false) {
		writeError(w, http.StatusUnauthorized, "invalid_api_key", "Invalid API key.")
		return
	}
	// The shape Climatiq answers: the list sits under "unit_types".
	writeJSON(w, http.StatusOK, map[string]any{"unit_types": []map[string]any{
		{"unit_type": "Energy", "units": map[string][]string{"energy": {"Wh", "kWh", "MWh"}}},
		{"unit_type": "Weight", "units": map[string][]string{"weight": {"g", "kg", "t"}}},
	}})
}

// echoWriter is w, or with SetEchoRequest on a writer that adds the echo
// of the request to every error answer.
func (s *Server) echoWriter(w http.ResponseWriter, r *http.Request, body []byte) http.ResponseWriter {
	if !s.echoes() {
		return w
	}
	return &echoingWriter{ResponseWriter: w, r: r, body: body}
}

// echoingWriter rewrites JSON error answers to echo the request.
type echoingWriter struct {
	http.ResponseWriter
	r      *http.Request
	body   []byte
	status int
}

func (e *echoingWriter) WriteHeader(status int) {
	e.status = status
	if status < 400 {
		e.ResponseWriter.WriteHeader(status)
	}
	// An error answer's header goes out with its rewritten body.
}

func (e *echoingWriter) Write(p []byte) (int, error) {
	if e.status < 400 {
		return e.ResponseWriter.Write(p)
	}
	var answer map[string]any
	if json.Unmarshal(p, &answer) != nil {
		answer = map[string]any{}
	}
	request := map[string]any{"method": e.r.Method, "path": e.r.URL.Path, "headers": e.r.Header, "body": string(e.body)}
	asJSON, _ := json.Marshal(request)
	answer["request"] = request
	answer["message"] = fmt.Sprintf("%v Rejected request: Authorization: %s; body: %s; as JSON: %s",
		answer["message"], e.r.Header.Get("Authorization"), e.body, asJSON)
	out, _ := json.Marshal(answer)
	e.Header().Del("Content-Length")
	e.ResponseWriter.WriteHeader(e.status)
	e.status = 0 // the rest, if any, passes as it is
	if _, err := e.ResponseWriter.Write(append(out, '\n')); err != nil {
		return 0, err
	}
	return len(p), nil
}

func apiError(status int, code, message string) map[string]any {
	return map[string]any{"error": http.StatusText(status), "error_code": code, "message": message, "request_id": randomString(12)}
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, apiError(status, code, message))
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// randomString draws from a base32-like alphabet; 256 is a multiple of 32,
// so every letter is equally likely.
func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	for i, c := range buf {
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf)
}
