package carbon

import (
	"reflect"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRoleCRUD(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeAltruistiqConfig("aq", nil)

	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "1h", "max_ttl": "2h", "max_keys": 3})
	e.writeRole("per-lease", map[string]any{"config": "cq", "project_per_lease": true, "key_name_template": "{{ .RoleName }}"})
	e.writeRole("export", map[string]any{"config": "aq", "scopes": "read,export", "ttl": 600})

	tests := []struct {
		name string
		want map[string]any
	}{
		{"ci", map[string]any{"config": "cq", "ttl": int64(3600), "max_ttl": int64(7200), "project_id": e.projectID,
			"project_per_lease": false, "key_name_template": defaultKeyNameTemplate, "max_keys": 3}},
		{"per-lease", map[string]any{"config": "cq", "ttl": int64(0), "max_ttl": int64(0), "project_id": "",
			"project_per_lease": true, "key_name_template": "{{ .RoleName }}", "max_keys": 0}},
		{"export", map[string]any{"config": "aq", "ttl": int64(600), "max_ttl": int64(0), "scopes": []string{"read", "export"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.mustOK(logical.ReadOperation, "roles/"+tc.name, nil)
			if !reflect.DeepEqual(resp.Data, tc.want) {
				t.Fatalf("read roles/%s:\n got %#v\nwant %#v", tc.name, resp.Data, tc.want)
			}
		})
	}

	list := e.mustOK(logical.ListOperation, "roles/", nil)
	if got := list.Data["keys"]; !reflect.DeepEqual(got, []string{"ci", "export", "per-lease"}) {
		t.Fatalf("list = %v", got)
	}

	e.mustOK(logical.UpdateOperation, "roles/ci", map[string]any{"ttl": "30m"})
	if resp := e.mustOK(logical.ReadOperation, "roles/ci", nil); resp.Data["ttl"] != int64(1800) || resp.Data["max_keys"] != 3 {
		t.Fatalf("update did not merge: %v", resp.Data)
	}
	e.mustOK(logical.DeleteOperation, "roles/ci", nil)
	if resp := e.do(logical.ReadOperation, "roles/ci", nil); resp != nil {
		t.Fatalf("deleted role still readable: %v", resp.Data)
	}
}

func TestRoleValidation(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeAltruistiqConfig("aq", nil)
	tests := []struct {
		name  string
		path  string
		data  map[string]any
		field string
	}{
		{"missing config", "roles/r", map[string]any{"project_id": e.projectID}, "config"},
		{"unknown config", "roles/r", map[string]any{"config": "nope", "project_id": e.projectID}, "config"},
		{"invalid config name", "roles/r", map[string]any{"config": "bad name", "project_id": e.projectID}, "config"},
		{"no project", "roles/r", map[string]any{"config": "cq"}, "project_id"},
		{"project and per-lease", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "project_per_lease": true}, "project_id"},
		{"unknown project", "roles/r", map[string]any{"config": "cq", "project_id": "prj_does_not_exist"}, "project_id"},
		{"ttl above max_ttl", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "2h", "max_ttl": "1h"}, "ttl"},
		{"ttl above mount max", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "1000h"}, "ttl"},
		{"negative ttl", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": -5}, "ttl"},
		{"negative max_ttl", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "max_ttl": -5}, "max_ttl"},
		{"ttl not a duration", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "soon"}, "ttl"},
		{"negative max_keys", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": -1}, "max_keys"},
		{"max_keys not a number", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": "many"}, "max_keys"},
		{"broken template", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "key_name_template": "{{ .RoleName "}, "key_name_template"},
		{"template with unknown field", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "key_name_template": "{{ .Nope }}"}, "key_name_template"},
		{"scopes on climatiq", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "scopes": "a"}, "scopes"},
		{"project on altruistiq", "roles/r", map[string]any{"config": "aq", "project_id": e.projectID}, "project_id"},
		{"max_keys on altruistiq", "roles/r", map[string]any{"config": "aq", "max_keys": 2}, "max_keys"},
		{"fractional ttl", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": 1.5}, "ttl: \"1.5\" is not a whole number of seconds"},
		{"ttl in milliseconds", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "1500ms"}, "ttl: \"1500ms\" is not a whole number of seconds"},
		{"max_ttl beyond ten years", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "max_ttl": "87601h"}, "max_ttl: must be at most 87600h"},
		{"max_ttl that overflows", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "max_ttl": "100000000000000"}, "max_ttl"},
		{"max_keys beyond the inventory", "roles/r", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 100_001}, "max_keys: must be at most 100000"},
		{"scope with a space", "roles/r", map[string]any{"config": "aq", "scopes": "read write"}, "scopes: \"read write\" is not one OAuth scope"},
		{"invalid name", "roles/-x", map[string]any{"config": "cq", "project_id": e.projectID}, "name"},
		{"empty name", "roles/", map[string]any{"config": "cq", "project_id": e.projectID}, "name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.mustFail(logical.UpdateOperation, tc.path, tc.data, tc.field)
		})
	}
}

func TestADeletedRoleStopsIssuing(t *testing.T) {
	s := &pausingStorage{Storage: &logical.InmemStorage{}, reached: make(chan struct{}), release: make(chan struct{})}
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	s.key = roleStoragePrefix + "ci"

	// An issuance reads the role for the cache; the role is deleted
	// before that read is cached.
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = e.doErr(logical.ReadOperation, "creds/ci", nil)
	}()
	<-s.reached
	e.mustOK(logical.DeleteOperation, "roles/ci", nil)
	close(s.release)
	<-done

	e.mustFail(logical.ReadOperation, "creds/ci", nil, "role")
}
