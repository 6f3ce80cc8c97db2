package carbon

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func testNamesWithDoubleDotsOnEveryPath(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	for _, tc := range []struct {
		op   logical.Operation
		path string
		data map[string]any
	}{
		{logical.CreateOperation, "config/a..b", map[string]any{"provider": "climatiq", "management_key": "k"}},
		{logical.ReadOperation, "config/a..b", nil},
		{logical.CreateOperation, "roles/a..b", map[string]any{"config": "cq", "project_id": e.projectID}},
		{logical.ReadOperation, "creds/a..b", nil},
		{logical.CreateOperation, "static-roles/a..b", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"}},
		{logical.UpdateOperation, "rotate-role/a..b", nil},
		{logical.ReadOperation, "static-creds/a..b", nil},
		{logical.CreateOperation, "roles/ok", map[string]any{"config": "a..b", "project_id": e.projectID}},
	} {
		t.Run(string(tc.op)+" "+tc.path, func(t *testing.T) {
			field := "name"
			switch {
			case strings.HasPrefix(tc.path, "creds/"):
				field = "role"
			case tc.path == "roles/ok":
				field = "config"
			}
			e.mustFail(tc.op, tc.path, tc.data, field)
		})
	}
}

// A name with ".." is refused by validation with a 4xx, never left for
// Vault's storage to refuse with a 500 (the existence check included).
func testNamesWithDoubleDotsAsVaultAnswers(t *testing.T) {
	e, _ := regressEnv(t)
	for _, req := range []struct {
		op   logical.Operation
		path string
		data map[string]any
	}{
		{logical.UpdateOperation, "config/a..b", map[string]any{
			"provider": "climatiq", "management_key": testManagementKey,
			"management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL(),
		}},
		{logical.UpdateOperation, "roles/a..b", map[string]any{"config": "cq", "project_id": e.projectID}},
		{logical.ReadOperation, "creds/a..b", nil},
		{logical.UpdateOperation, "static-roles/a..b", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": 60}},
		{logical.UpdateOperation, "tidy", map[string]any{"config": "a..b"}},
	} {
		status, _, err := vaultStatusOf(e, req.op, req.path, req.data)
		if status < 400 || status >= 500 {
			t.Errorf("%s %s: status %d (%v), want a 4xx", req.op, req.path, status, err)
		}
	}
}

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

// Reads and lists refuse a parameter their path does not have, as writes
// do, naming it and the nearest real one.
func TestReadsAndListsRefuseUnknownParameters(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	for _, tc := range []struct {
		op   logical.Operation
		path string
		data map[string]any
		want string
	}{
		{logical.ListOperation, "keys/", map[string]any{"limt": "5"}, `"limt": is not a field of this path; did you mean limit?`},
		{logical.ListOperation, "roles/", map[string]any{"after": "a"}, `"after": is not a field`},
		{logical.ReadOperation, "roles/ci", map[string]any{"verbose": "true"}, `"verbose": is not a field`},
		{logical.ReadOperation, "creds/ci", map[string]any{"ttl": "1h"}, `"ttl": is not a field`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			e.t = t
			e.mustFail(tc.op, tc.path, tc.data, tc.want)
		})
	}
	e.t = t
	e.mustOK(logical.ListOperation, "keys/", map[string]any{"limit": "5"})
}

// TestNamesWithDoubleDotsAreRefusedWith400: a name with ".." in any path
// or in the config field is a 400 naming the field, also as Vault answers
// it (its existence check first).
func TestNamesWithDoubleDotsAreRefusedWith400(t *testing.T) {
	t.Run("every path", testNamesWithDoubleDotsOnEveryPath)
	t.Run("as Vault answers", testNamesWithDoubleDotsAsVaultAnswers)
}
