package carbon

// Failures the state-machine test (statemachine_test.go) found, each as the
// shortest readable sequence. They fail until the engine is fixed.

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

// regressEnv is a testEnv on storage that refuses "..", as Vault's does,
// with a fake clock.
func regressEnv(t *testing.T) (*testEnv, *fakeClock) {
	t.Helper()
	e := newTestEnvWithStorage(t, vaultStorage{&logical.InmemStorage{}})
	clock := &fakeClock{now: time.Now().UTC().Truncate(time.Second)}
	e.b.clock = clock.Now
	e.b.scheduler.tick = 0
	if err := e.b.initializeOnce(context.Background(), &logical.InitializationRequest{Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
	e.writeClimatiqConfig("cq", map[string]any{"request_timeout": 1})
	return e, clock
}

// vaultStatusOf is the HTTP status Vault would answer.
func vaultStatusOf(e *testEnv, op logical.Operation, path string, data map[string]any) (int, *logical.Response, error) {
	if op == logical.CreateOperation || op == logical.UpdateOperation {
		// Vault runs the existence check first and answers its failure
		// with a 500 (a 400 for a field that does not parse).
		req := &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage}
		if _, _, err := e.b.HandleExistenceCheck(context.Background(), req); err != nil && !errors.Is(err, logical.ErrUnsupportedPath) {
			if _, ok := err.(errutil.UserError); ok {
				return http.StatusBadRequest, nil, err
			}
			return http.StatusInternalServerError, nil, err
		}
	}
	resp, err := e.doErr(op, path, data)
	switch {
	case err != nil:
		if _, ok := err.(errutil.UserError); ok {
			return http.StatusBadRequest, resp, err
		}
		status, _ := logical.RespondErrorCommon(&logical.Request{Operation: op, Path: path}, resp, err)
		if status == 0 {
			status = http.StatusInternalServerError
		}
		return status, resp, err
	case resp != nil && resp.IsError():
		return http.StatusBadRequest, resp, nil
	}
	return 0, resp, nil
}

// Scenario 9: a name with ".." passes validation, then Vault's storage
// refuses the key and the caller gets a 500.
func TestRegressionDotDotNameIs4xx(t *testing.T) {
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

// Scenario 5: a static role adopts the key of a live lease; deleting the
// role (or rotating it) deletes the key under the lease.
func TestRegressionStaticRoleCannotAdoptLeasedKey(t *testing.T) {
	e, _ := regressEnv(t)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := lease.Data["key_id"].(string)

	status, _, err := vaultStatusOf(e, logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "key_id": keyID, "rotation_period": 3600,
	})
	if status < 400 || status >= 500 {
		t.Fatalf("adopting the leased key %s: status %d (%v), want a 4xx", keyID, status, err)
	}
}

// Scenario 5, second form: two static roles adopt the same key.
func TestRegressionStaticRoleCannotAdoptAnotherStaticRolesKey(t *testing.T) {
	e, _ := regressEnv(t)
	e.mustOK(logical.CreateOperation, "static-roles/first", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": 3600,
	})
	keyID := e.mustOK(logical.ReadOperation, "static-roles/first", nil).Data["key_id"].(string)
	status, _, err := vaultStatusOf(e, logical.CreateOperation, "static-roles/second", map[string]any{
		"config": "cq", "project_id": e.projectID, "key_id": keyID, "rotation_period": 3600,
	})
	if status < 400 || status >= 500 {
		t.Fatalf("adopting static role first's key: status %d (%v), want a 4xx", status, err)
	}
}

// Scenario 7: rotate-role twice within overlap_period deletes the first
// previous key before its overlap ends.
func TestRegressionRotateRoleKeepsOverlapKey(t *testing.T) {
	e, clock := regressEnv(t)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": 3600, "overlap_period": 300,
	})
	first := e.mustOK(logical.ReadOperation, "static-roles/app", nil).Data["key_id"].(string)
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	clock.Advance(time.Second)
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	if _, found := e.climatiq.Key(first); !found {
		t.Fatalf("key %s was deleted 1s into its 5m overlap", first)
	}
}

// Scenario 14: a static role on a project the connection cannot see
// answers 500 (the upstream's 404) instead of a 4xx naming project_id.
func TestRegressionStaticRoleUnknownProjectIs4xx(t *testing.T) {
	e, _ := regressEnv(t)
	status, _, err := vaultStatusOf(e, logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": "prj_does_not_exist", "rotation_period": 3600,
	})
	if status < 400 || status >= 500 {
		t.Fatalf("static role on an unknown project: status %d (%v), want a 4xx", status, err)
	}
}

// Found by the state machine (I2): config/<name> is re-pointed to another
// account while a lease holds a key in the first; the revoke deletes the id
// in the new account (404, counted as gone) and the key is stranded where
// no tidy looks. The write should be refused while the connection holds keys.
func TestRegressionRepointWithLiveLeaseStrandsNoKey(t *testing.T) {
	e, _ := regressEnv(t)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := lease.Data["key_id"].(string)

	other := climatiqtest.NewServer(testManagementKey)
	t.Cleanup(other.Close)
	status, _, _ := vaultStatusOf(e, logical.UpdateOperation, "config/cq", map[string]any{
		"management_url": other.ManagementURL(), "api_url": other.APIURL(),
	})
	if status != 0 {
		return // refused while in use: nothing can be stranded
	}
	if _, err := e.revoke(lease.Secret); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, found := e.climatiq.Key(keyID); found {
		t.Fatalf("re-pointing config/cq with a live lease was accepted, and revoking the lease left key %s upstream in the first account", keyID)
	}
}

// Scenario 1: a static role deleted with delete_key_on_remove=false
// releases its key to the operator; a later tidy finds the marker on it and
// deletes it.
func TestRegressionTidyKeepsReleasedStaticKeyFound(t *testing.T) {
	e, clock := regressEnv(t)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{
		"config": "cq", "project_id": e.projectID, "rotation_period": 3600, "delete_key_on_remove": false,
	})
	keyID := e.mustOK(logical.ReadOperation, "static-roles/app", nil).Data["key_id"].(string)
	e.mustOK(logical.DeleteOperation, "static-roles/app", nil)
	// Any role on the project makes tidy scan it.
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	clock.Advance(time.Hour)
	e.mustOK(logical.UpdateOperation, "tidy", map[string]any{"config": "cq"})
	if _, found := e.climatiq.Key(keyID); !found {
		t.Fatalf("tidy deleted key %s, released by delete_key_on_remove=false", keyID)
	}
}
