package e2e

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// TestBadInput sends bad input through Vault's HTTP API: each request must
// get a 4xx whose message names the field, never a 5xx.
func TestBadInput(t *testing.T) {
	writeClimatiqConfig(t, "bad-cq")
	writeAltruistiqConfig(t, "bad-aq")
	cq := func(kv ...any) map[string]any {
		d := map[string]any{"provider": "climatiq", "management_key": managementKey,
			"management_url": climatiqFake.ManagementURL(), "api_url": climatiqFake.APIURL()}
		for i := 0; i < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	aq := func(kv ...any) map[string]any {
		d := map[string]any{"provider": "altruistiq", "client_id": atqClientID, "client_secret": atqClientSecret,
			"token_url": altruistiqFake.TokenURL(), "api_url": altruistiqFake.APIURL()}
		for i := 0; i < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	role := func(kv ...any) map[string]any {
		d := map[string]any{"config": "bad-cq", "project_id": projectID}
		for i := 0; i < len(kv); i += 2 {
			d[kv[i].(string)] = kv[i+1]
		}
		return d
	}
	without := func(d map[string]any, field string) map[string]any {
		delete(d, field)
		return d
	}

	tests := []struct {
		name   string
		method string // "write" (default) or "read"
		path   string
		data   map[string]any
		field  string
	}{
		// config/:name
		{name: "unknown provider", path: "config/x", data: cq("provider", "watttime"), field: "provider"},
		{name: "missing provider", path: "config/x", data: without(cq(), "provider"), field: "provider"},
		{name: "provider not a string", path: "config/x", data: cq("provider", []any{"a", "b"}), field: "provider"},
		{name: "climatiq without management_key", path: "config/x", data: without(cq(), "management_key"), field: "management_key"},
		{name: "altruistiq without client_id", path: "config/x", data: without(aq(), "client_id"), field: "client_id"},
		{name: "altruistiq without client_secret", path: "config/x", data: without(aq(), "client_secret"), field: "client_secret"},
		{name: "client_id on climatiq", path: "config/x", data: cq("client_id", "x"), field: "client_id"},
		{name: "scopes on climatiq", path: "config/x", data: cq("scopes", "read"), field: "scopes"},
		{name: "management_key on altruistiq", path: "config/x", data: aq("management_key", "x"), field: "management_key"},
		{name: "management_url on altruistiq", path: "config/x", data: aq("management_url", "https://example.com"), field: "management_url"},
		{name: "http management_url to remote host", path: "config/x", data: cq("management_url", "http://example.com/m"), field: "management_url"},
		{name: "http api_url to remote host", path: "config/x", data: cq("api_url", "http://10.1.2.3/"), field: "api_url"},
		{name: "http token_url to remote host", path: "config/x", data: aq("token_url", "http://app.example.com/token"), field: "token_url"},
		{name: "management_url not a URL", path: "config/x", data: cq("management_url", "::not a url"), field: "management_url"},
		{name: "api_url with credentials", path: "config/x", data: cq("api_url", "https://u:p@example.com"), field: "api_url"},
		{name: "auth_style unknown", path: "config/x", data: aq("auth_style", "digest"), field: "auth_style"},
		{name: "request_timeout not a duration", path: "config/x", data: cq("request_timeout", "soon"), field: "request_timeout"},
		{name: "request_timeout zero", path: "config/x", data: cq("request_timeout", "0s"), field: "request_timeout"},
		{name: "request_timeout absurd", path: "config/x", data: cq("request_timeout", "9999h"), field: "request_timeout"},
		{name: "max_retries not a number", path: "config/x", data: cq("max_retries", "many"), field: "max_retries"},
		{name: "max_retries too large", path: "config/x", data: cq("max_retries", 99), field: "max_retries"},
		{name: "rate_limit negative", path: "config/x", data: cq("rate_limit", -1), field: "rate_limit"},
		{name: "rate_limit not a number", path: "config/x", data: cq("rate_limit", "fast"), field: "rate_limit"},
		{name: "verify_connection not a bool", path: "config/x", data: cq("verify_connection", "maybe"), field: "verify_connection"},
		{name: "config name with spaces", path: "config/bad name", data: cq(), field: "name"},
		{name: "config name nested", path: "config/a/b", data: cq(), field: "name"},
		{name: "config name empty", path: "config/", data: cq(), field: "name"},
		{name: "provider change", path: "config/bad-cq", data: map[string]any{"provider": "altruistiq"}, field: "provider"},
		// roles/:name
		{name: "role without config", path: "roles/r", data: without(role(), "config"), field: "config"},
		{name: "role naming a missing connection", path: "roles/r", data: role("config", "nope"), field: "config"},
		{name: "role without project", path: "roles/r", data: without(role(), "project_id"), field: "project_id"},
		{name: "role with project and per-lease", path: "roles/r", data: role("project_per_lease", true), field: "project_id"},
		{name: "role with unknown project", path: "roles/r", data: role("project_id", "prj_nope"), field: "project_id"},
		{name: "ttl above max_ttl", path: "roles/r", data: role("ttl", "2h", "max_ttl", "1h"), field: "ttl"},
		{name: "ttl not a duration", path: "roles/r", data: role("ttl", "forever"), field: "ttl"},
		{name: "max_ttl negative", path: "roles/r", data: role("max_ttl", -10), field: "max_ttl"},
		{name: "broken key_name_template", path: "roles/r", data: role("key_name_template", "{{ .RoleName "), field: "key_name_template"},
		{name: "key_name_template unknown field", path: "roles/r", data: role("key_name_template", "{{ .Secret }}"), field: "key_name_template"},
		{name: "max_keys negative", path: "roles/r", data: role("max_keys", -1), field: "max_keys"},
		{name: "scopes on climatiq role", path: "roles/r", data: role("scopes", "read"), field: "scopes"},
		{name: "project_id on altruistiq role", path: "roles/r", data: role("config", "bad-aq"), field: "project_id"},
		{name: "role name invalid", path: "roles/bad*name", data: role(), field: "name"},
		{name: "role name empty", path: "roles/", data: role(), field: "name"},
		// static-roles/:name
		{name: "static role without rotation", path: "static-roles/s", data: map[string]any{"config": "bad-cq", "project_id": projectID}, field: "rotation_period"},
		{name: "static role with bad cron", path: "static-roles/s", data: map[string]any{"config": "bad-cq", "project_id": projectID, "rotation_schedule": "every day"}, field: "rotation_schedule"},
		{name: "static role period and schedule", path: "static-roles/s", data: map[string]any{"config": "bad-cq", "project_id": projectID, "rotation_period": "1h", "rotation_schedule": "0 * * * *"}, field: "rotation_schedule"},
		{name: "static role window without schedule", path: "static-roles/s", data: map[string]any{"config": "bad-cq", "project_id": projectID, "rotation_period": "1h", "rotation_window": "2h"}, field: "rotation_window"},
		{name: "static role period too short", path: "static-roles/s", data: map[string]any{"config": "bad-cq", "project_id": projectID, "rotation_period": "1s"}, field: "rotation_period"},
		{name: "static role on altruistiq", path: "static-roles/s", data: map[string]any{"config": "bad-aq", "project_id": projectID, "rotation_period": "1h"}, field: "config"},
		{name: "static role adopting a missing key", path: "static-roles/s", data: map[string]any{"config": "bad-cq", "project_id": projectID, "rotation_period": "1h", "key_id": "key_nope"}, field: "key_id"},
		{name: "static creds of missing role", method: "read", path: "static-creds/nope", field: "name"},
		{name: "rotate missing role", path: "rotate-role/nope", data: map[string]any{}, field: "name"},
		// tidy
		{name: "tidy of altruistiq connection", path: "tidy", data: map[string]any{"config": "bad-aq"}, field: "config"},
		{name: "tidy negative min_age", path: "tidy", data: map[string]any{"min_age": "-1h"}, field: "min_age"},
		// hostile values
		{name: "absurd ttl", path: "roles/r", data: role("ttl", "99999999h"), field: "ttl"},
		{name: "negative request_timeout", path: "config/x", data: cq("request_timeout", "-5s"), field: "request_timeout"},
		{name: "unicode role name", path: "roles/ключ", data: role(), field: "name"},
		{name: "control character in config name", path: "config/a%01b", data: cq(), field: "name"},
		{name: "right-to-left override in name", path: "roles/a%E2%80%AEb", data: role(), field: "name"},
		{name: "oversized name", path: "roles/" + strings.Repeat("n", 5000), data: role(), field: "name"},
		{name: "oversized template", path: "roles/r", data: role("key_name_template", strings.Repeat("x", 1<<20)), field: "key_name_template"},
		{name: "oversized provider value", path: "config/x", data: cq("provider", strings.Repeat("p", 1<<20)), field: "provider"},
		{name: "control characters in template", path: "roles/r", data: role("key_name_template", "{{ .RoleName \x00"), field: "key_name_template"},
		// creds/:role
		{name: "creds of missing role", method: "read", path: "creds/nope", field: "role"},
		{name: "creds with invalid role name", method: "read", path: "creds/bad name", field: "role"},
		{name: "creds without role", method: "read", path: "creds/", field: "role"},
	}
	if len(tests) < 50 {
		t.Fatalf("bad-input table has %d cases; at least 50 are required", len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			path, rawPath := mount+"/"+tc.path, strings.Contains(tc.path, "%")
			switch {
			case rawPath:
				err = rawRequest(tc.method, path, tc.data)
			case tc.method == "read":
				_, err = vault.Client.Logical().Read(path)
			default:
				_, err = vault.Client.Logical().Write(path, tc.data)
			}
			var re *api.ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("want a 4xx, got %v", err)
			}
			if re.StatusCode < 400 || re.StatusCode >= 500 {
				t.Fatalf("status %d (want 4xx): %v", re.StatusCode, re.Errors)
			}
			msg := strings.Join(re.Errors, "; ")
			if !strings.Contains(msg, tc.field) {
				t.Fatalf("message does not name %q: %s", tc.field, msg)
			}
			if strings.Contains(msg, managementKey) || strings.Contains(msg, atqClientSecret) {
				t.Fatalf("message carries a secret: %s", msg)
			}
			if re.StatusCode == http.StatusMethodNotAllowed {
				t.Fatalf("405 is not a useful answer: %s", msg)
			}
		})
	}
}

// rawRequest sends a request whose path is already escaped (control
// characters, unicode), which the api client would escape again.
func rawRequest(method, path string, data map[string]any) error {
	m := http.MethodPut
	if method == "read" {
		m = http.MethodGet
	}
	req := vault.Client.NewRequest(m, "/v1/"+path)
	if data != nil {
		if err := req.SetJSONBody(data); err != nil {
			return err
		}
	}
	httpReq, err := req.ToHTTP()
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// As the api client does: an error status is an *api.ResponseError.
	return (&api.Response{Response: resp}).Error()
}
