package carbon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/logging"
	"github.com/hashicorp/vault/sdk/logical"
)

// Tests for what an operator meets on the first day: typos, habits from
// other engines, and what tidy, logs and leases say.

func TestUnknownFieldsAreRefused(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	tests := []struct {
		path    string
		data    map[string]any
		field   string
		nearest string
	}{
		{"roles/ci", map[string]any{"tll": "1h"}, "tll", "ttl"},
		{"config/cq", map[string]any{"request_timout": "10s"}, "request_timout", "request_timeout"},
		{"static-roles/app", map[string]any{"ttl": "1h"}, "ttl", ""},
		{"tidy", map[string]any{"dryrun": true}, "dryrun", "dry_run"},
		{"rotate-role/app", map[string]any{"delete_previous_key": true}, "delete_previous_key", "delete_previous_keys"},
	}
	for _, tc := range tests {
		t.Run(tc.path+" "+tc.field, func(t *testing.T) {
			resp := e.do(logical.UpdateOperation, tc.path, tc.data)
			if resp == nil || !resp.IsError() {
				t.Fatalf("a write with %q was accepted", tc.field)
			}
			msg := resp.Error().Error()
			if !strings.Contains(msg, tc.field) || (tc.nearest != "" && !strings.Contains(msg, "did you mean "+tc.nearest)) {
				t.Fatalf("message %q does not name %q and suggest %q", msg, tc.field, tc.nearest)
			}
		})
	}
	if role := e.mustOK(logical.ReadOperation, "roles/ci", nil); role.Data["ttl"] != int64(0) {
		t.Fatal("a refused write changed the role")
	}
}

func TestTidyCoversOnlyClimatiqAndReportsRealErrors(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeAltruistiqConfig("aq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.writeRole("export", map[string]any{"config": "aq"})

	report := e.mustOK(logical.UpdateOperation, "tidy", nil)
	if errs := report.Data["errors"].([]string); len(errs) != 0 {
		t.Fatalf("tidy reported errors on a healthy mount with an Altruistiq role: %v", errs)
	}

	e.climatiq.RevokeManagementKey(testManagementKey)
	report = e.mustOK(logical.UpdateOperation, "tidy", nil)
	errs := report.Data["errors"].([]string)
	if len(errs) != 1 || !strings.Contains(errs[0], `config "cq"`) || !strings.Contains(errs[0], "401") {
		t.Fatalf("errors %v, want one naming the connection and the upstream's 401", errs)
	}
	status := e.mustOK(logical.ReadOperation, "tidy-status", nil)
	if got := status.Data["errors"].([]string); len(got) != 1 || status.Data["finished"] == "" {
		t.Fatalf("tidy-status does not show the last run: %v", status.Data)
	}
}

func TestHabitsFromOtherEngines(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"verify_connection": true})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "1h"})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})

	for _, path := range []string{"rotate-root/cq", "rotate-root"} {
		resp, err := e.doErr(logical.UpdateOperation, path, nil)
		if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "config/") {
			t.Fatalf("%s: %v %v, want a 400 saying to write config/", path, resp, err)
		}
	}
	e.mustFail(logical.ReadOperation, "creds/app", nil, "static-creds/app")

	for _, tc := range []struct {
		path, item, field string
		want              any
	}{
		{"config/", "cq", "provider", "climatiq"},
		{"roles/", "ci", "ttl", int64(3600)},
		{"static-roles/", "app", "key_id", e.staticRole("app").KeyID},
	} {
		list := e.mustOK(logical.ListOperation, tc.path, nil)
		info, _ := list.Data["key_info"].(map[string]any)
		item, _ := info[tc.item].(map[string]any)
		if item[tc.field] != tc.want {
			t.Errorf("list -detailed %s: key_info[%s][%s] = %v, want %v", tc.path, tc.item, tc.field, item[tc.field], tc.want)
		}
	}
	if cfg := e.mustOK(logical.ReadOperation, "config/cq", nil); cfg.Data["verify_connection"] != true {
		t.Fatalf("config read lacks verify_connection: %v", cfg.Data)
	}
}

func TestEventsCarryNoEmptyFields(t *testing.T) {
	b := newBackend()
	b.Backend.Setup(context.Background(), &logical.BackendConfig{System: logical.TestSystemView(), Logger: testLogger()})
	b.logAndEmit(eventStaticRotate, "role", "app", "previous_key_id", "", "trigger", "manual", "lateness_ms", "")
	ev := <-b.events
	for i := 1; i < len(ev.metadata); i += 2 {
		if ev.metadata[i] == "" {
			t.Fatalf("event carries empty field %q: %v", ev.metadata[i-1], ev.metadata)
		}
	}
	if len(ev.metadata) != 4 {
		t.Fatalf("metadata %v, want role and trigger only", ev.metadata)
	}
}

func TestAltruistiqLeaseNeverCutShortQuietly(t *testing.T) {
	e := newTestEnv(t)
	e.altruistiq.SetTokenLifetime(minAltruistiqLease + 2*time.Second)
	e.writeAltruistiqConfig("aq", nil)
	e.writeRole("export", map[string]any{"config": "aq", "ttl": "5h"})

	first := e.mustOK(logical.ReadOperation, "creds/export", nil)
	if len(first.Warnings) == 0 || !strings.Contains(first.Warnings[0], "ttl") {
		t.Fatalf("a lease cut short by the token carries no warning: %v", first.Warnings)
	}
	// Once less than minAltruistiqLease remains, the next read gets a new
	// token, and so a lease no shorter than the minimum.
	time.Sleep(3 * time.Second)
	second := e.mustOK(logical.ReadOperation, "creds/export", nil)
	if second.Secret.TTL < minAltruistiqLease-time.Second {
		t.Fatalf("lease of %s, shorter than the documented minimum %s", second.Secret.TTL, minAltruistiqLease)
	}
	if second.Data["access_token"] == first.Data["access_token"] {
		t.Fatal("the token was not replaced before its last minAltruistiqLease")
	}
}

func TestReadResponsesHaveSchemas(t *testing.T) {
	b := newBackend()
	for _, p := range b.Paths {
		for op, h := range p.Operations {
			po, ok := h.(*framework.PathOperation)
			if !ok || po.Unpublished || (op != logical.ReadOperation && p.Pattern != "tidy$" && !strings.HasPrefix(p.Pattern, "rotate-role/")) {
				continue
			}
			// A raw answer (metrics) has its media type instead of fields.
			if len(po.Responses[200]) == 0 || (len(po.Responses[200][0].Fields) == 0 && po.Responses[200][0].MediaType == "") {
				t.Errorf("%s %s has no response schema", op, p.Pattern)
			}
		}
	}
}

func testLogger() hclog.Logger { return logging.NewVaultLogger(hclog.Warn) }

func TestConnectionChecksSayWhatFailed(t *testing.T) {
	e := newTestEnv(t)
	closed := "http://127.0.0.1:1" // nothing listens on port 1
	// Not the management API: a web page, a redirect, no such route, an
	// upstream failing.
	impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/html/"):
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>Welcome</body></html>"))
		case strings.HasPrefix(r.URL.Path, "/moved/"):
			http.Redirect(w, r, "https://elsewhere.example/management/v1/project?token=x", http.StatusTemporaryRedirect)
		case strings.HasPrefix(r.URL.Path, "/down/"):
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer impostor.Close()
	tests := []struct {
		name string
		data map[string]any
		want string
	}{
		{"unreachable host", map[string]any{"management_url": closed + "/management/v1-preview1"}, "could not reach climatiq at " + closed},
		{"refused credentials", map[string]any{"management_key": "not-the-key"}, "climatiq refused the credentials"},
		{"a web page", map[string]any{"management_url": impostor.URL + "/html"}, "verify_connection: " + impostor.URL + "/html answered, but not as the climatiq API does"},
		{"a redirect", map[string]any{"management_url": impostor.URL + "/moved"}, "was redirected (climatiq: check management key: 307 Temporary Redirect: redirected to https://elsewhere.example/management/v1/project); set management_url"},
		{"no such route", map[string]any{"management_url": impostor.URL + "/nowhere"}, "verify_connection: no such route at " + impostor.URL + "/nowhere"},
		{"upstream down", map[string]any{"management_url": impostor.URL + "/down"}, "verify_connection: climatiq at " + impostor.URL + "/down failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := map[string]any{"provider": "climatiq", "management_key": testManagementKey,
				"management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL(), "max_retries": 0}
			for k, v := range tc.data {
				data[k] = v
			}
			resp := e.do(logical.CreateOperation, "config/check", data)
			if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", resp, tc.want)
			}
		})
	}
}

func TestVerifyIssuedKeys(t *testing.T) {
	e := newTestEnv(t)
	defer func(w time.Duration) { issuedKeyWait = w }(issuedKeyWait)
	issuedKeyWait = time.Second
	e.writeClimatiqConfig("works", map[string]any{"verify_issued_keys": true})
	e.writeRole("works", map[string]any{"config": "works", "project_id": e.projectID})
	// The regular API behind api_url is unreachable: the key is returned
	// with a warning once the bounded wait has passed.
	e.writeClimatiqConfig("unchecked", map[string]any{"verify_issued_keys": true, "api_url": "http://127.0.0.1:1"})
	e.writeRole("unchecked", map[string]any{"config": "unchecked", "project_id": e.projectID})

	if resp := e.mustOK(logical.ReadOperation, "creds/works", nil); len(resp.Warnings) != 0 {
		t.Fatalf("a key the regular API accepts came with warnings: %v", resp.Warnings)
	}
	start := time.Now()
	resp := e.mustOK(logical.ReadOperation, "creds/unchecked", nil)
	if len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "verify_issued_keys") {
		t.Fatalf("no warning for a key the regular API never accepted: %v", resp.Warnings)
	}
	if took := time.Since(start); took < issuedKeyWait || took > issuedKeyWait+5*time.Second {
		t.Fatalf("issuance took %s, want about the bounded wait %s", took, issuedKeyWait)
	}
}

func TestNewFieldsRefuseBadInput(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	tests := []struct {
		op          logical.Operation
		path, field string
		data        map[string]any
	}{
		{logical.ListOperation, "keys/", "limit", map[string]any{"limit": -1}},
		{logical.UpdateOperation, "config/cq", "verify_issued_keys", map[string]any{"verify_issued_keys": "maybe"}},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			resp, err := e.doErr(tc.op, tc.path, tc.data)
			if err == nil && (resp == nil || !resp.IsError()) {
				t.Fatalf("%s %s with a bad %s was accepted", tc.op, tc.path, tc.field)
			}
			msg := ""
			if err != nil {
				msg = err.Error()
			} else {
				msg = resp.Error().Error()
			}
			if !strings.Contains(msg, tc.field) {
				t.Fatalf("error %q does not name %s", msg, tc.field)
			}
		})
	}
}
