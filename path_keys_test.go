package carbon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func TestClimatiqIssueAndRevoke(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "1h", "max_ttl": "2h"})

	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	apiKey, keyID := resp.Data["api_key"].(string), resp.Data["key_id"].(string)
	if apiKey == "" || keyID == "" || resp.Data["project_id"] != e.projectID {
		t.Fatalf("creds response incomplete: %v", resp.Data)
	}
	if resp.Secret == nil || resp.Secret.TTL != time.Hour || resp.Secret.MaxTTL != 2*time.Hour || !resp.Secret.Renewable {
		t.Fatalf("lease = %+v", resp.Secret)
	}
	up, ok := e.climatiq.Key(keyID)
	if !ok || up.Key != apiKey {
		t.Fatal("issued key does not exist upstream")
	}
	marker, _, ok := parseKeyName(up.Name)
	if !ok || marker != e.b.marker || !strings.Contains(up.Name, "-ci-token-tester") {
		t.Fatalf("key name %q lacks the mount's prefix or the rendered template", up.Name)
	}
	if err := e.b.connections["cq"].climatiq.CheckKey(context.Background(), apiKey); err != nil {
		t.Fatalf("issued key does not work against the regular API: %v", err)
	}
	assertInventory(t, e, "ci", resp.Data["key_name"].(string), true)

	// The inventory shows the key, never its value.
	list := e.mustOK(logical.ListOperation, "keys/", nil)
	if ids := list.Data["keys"].([]string); len(ids) != 1 || ids[0] != keyID {
		t.Fatalf("keys/ = %v", list.Data["keys"])
	}
	inv := e.mustOK(logical.ReadOperation, "keys/"+keyID, nil)
	if inv.Data["role"] != "ci" || inv.Data["kind"] != keyKindDynamic || inv.Data["config"] != "cq" || inv.Data["expires"] == "" {
		t.Fatalf("keys/%s = %v", keyID, inv.Data)
	}
	assertNoSecrets(t, fmt.Sprint(list.Data, inv.Data))
	if strings.Contains(fmt.Sprint(list.Data, inv.Data), apiKey) {
		t.Fatal("the inventory shows a key value")
	}

	// The issuance's WAL entry is spent and retired off the request path;
	// once it is gone the rollback manager has nothing to undo and neither
	// deletes the key nor asks the upstream.
	waitSpentWALRetired(t, e)
	requests := e.climatiq.Stats().Requests
	runRollbackManager(t, e)
	if !e.upstreamHas(keyID) || e.climatiq.Stats().Requests != requests {
		t.Fatal("the rollback manager touched the issued key or the upstream after the issuance finished")
	}

	if _, err := e.revoke(resp.Secret); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.climatiq.Key(keyID); ok {
		t.Fatal("revoke did not delete the key upstream")
	}
	assertInventory(t, e, "ci", resp.Data["key_name"].(string), false)

	// Revoking again (Vault retries after a lost answer) and revoking a key
	// someone already deleted upstream both succeed.
	if _, err := e.revoke(resp.Secret); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
}

// A plugin that stops between recording a key and deleting the issuance's
// WAL entry leaves a spent entry without the key's id. The rollback manager
// finds the key by its unique name, sees it recorded, keeps it and drops the
// entry, with one listing call upstream.
func TestSpentWALEntryLeftByAStopKeepsTheKey(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID, keyName := resp.Data["key_id"].(string), resp.Data["key_name"].(string)
	waitSpentWALRetired(t, e)

	// The entry exactly as issuance writes it before the create.
	left := &ownedKey{Kind: keyKindDynamic, Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: keyName}
	if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey, left); err != nil {
		t.Fatal(err)
	}
	requests := e.climatiq.Stats().Requests
	runRollbackManager(t, e)
	assertNoWAL(t, e)
	if !e.upstreamHas(keyID) {
		t.Fatal("the rollback manager deleted a key its lease still holds")
	}
	assertInventory(t, e, "ci", keyName, true)
	if got := e.climatiq.Stats().Requests - requests; got != 1 {
		t.Fatalf("dropping the spent entry took %d upstream requests, want 1 listing", got)
	}
}

func TestClimatiqRevokeFailureIsRetried(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := resp.Data["key_id"].(string)

	e.climatiq.FailNext(1, http.StatusInternalServerError)
	if _, err := e.revoke(resp.Secret); err == nil {
		t.Fatal("revoke reported success although the upstream delete failed")
	}
	assertInventory(t, e, "ci", resp.Data["key_name"].(string), true)
	if _, err := e.revoke(resp.Secret); err != nil {
		t.Fatalf("retried revoke: %v", err)
	}
	if _, ok := e.climatiq.Key(keyID); ok {
		t.Fatal("key still exists upstream")
	}
}

// A revocation keeps retrying a delete that failed in a way that may pass
// (5xx, 429) beyond the client's max_retries, within revokeRetryFor, and
// gives up at once on one that will not (a 401).
func TestRevocationRetriesFailuresThatMayPass(t *testing.T) {
	defer func(d time.Duration) { revokeRetryFor = d }(revokeRetryFor)
	revokeRetryFor = 10 * time.Second
	for _, tc := range []struct {
		name     string
		failures int
		status   int
		revoked  bool
	}{
		{"503s past max_retries", 4, http.StatusServiceUnavailable, true},
		{"500s past max_retries", 3, http.StatusInternalServerError, true},
		{"401 is final", 1, http.StatusUnauthorized, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
			e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
			resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
			keyID := resp.Data["key_id"].(string)

			e.climatiq.FailNextMethod(http.MethodDelete, tc.failures, tc.status)
			began := time.Now()
			_, err := e.revoke(resp.Secret)
			if (err == nil) != tc.revoked {
				t.Fatalf("revoke after %d× %d: err=%v, want revoked=%v", tc.failures, tc.status, err, tc.revoked)
			}
			if _, upstream := e.climatiq.Key(keyID); upstream == tc.revoked {
				t.Fatalf("key upstream=%v after the revocation (revoked=%v)", upstream, tc.revoked)
			}
			if !tc.revoked && time.Since(began) > time.Second {
				t.Fatalf("a final failure was retried for %s", time.Since(began))
			}
		})
	}
}

func TestClimatiqRenewCappedByMaxTTL(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID, "ttl": "1h", "max_ttl": "90m"})
	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)

	tests := []struct {
		name      string
		issuedAgo time.Duration
		increment time.Duration
		want      time.Duration
	}{
		{"role ttl", 0, 0, time.Hour},
		{"increment honoured", 0, 20 * time.Minute, 20 * time.Minute},
		{"capped at max_ttl", 60 * time.Minute, 0, 30 * time.Minute},
		{"increment capped", 80 * time.Minute, time.Hour, 10 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := *resp.Secret
			s.IssueTime = time.Now().Add(-tc.issuedAgo)
			renewed, err := e.renew(&s, tc.increment)
			if err != nil || renewed.IsError() {
				t.Fatalf("renew: %v %v", err, renewed.Error())
			}
			if got := renewed.Secret.TTL; got < tc.want-2*time.Second || got > tc.want {
				t.Fatalf("TTL = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestClimatiqProjectPerLease(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("isolated", map[string]any{"config": "cq", "project_per_lease": true})
	before := len(e.climatiq.Projects())

	resp := e.mustOK(logical.ReadOperation, "creds/isolated", nil)
	projectID := resp.Data["project_id"].(string)
	if projectID == "" || projectID == e.projectID || len(e.climatiq.Projects()) != before+1 {
		t.Fatalf("no fresh project: %v", resp.Data)
	}
	if _, err := e.revoke(resp.Secret); err != nil {
		t.Fatal(err)
	}
	for _, p := range e.climatiq.Projects() {
		if p.ID == projectID {
			t.Fatal("per-lease project survived the revoke")
		}
	}
	if _, ok := e.climatiq.Key(resp.Data["key_id"].(string)); ok {
		t.Fatal("per-lease key survived the revoke")
	}
}

func TestClimatiqMaxKeys(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("capped", map[string]any{"config": "cq", "project_id": e.projectID, "max_keys": 2})

	var wg sync.WaitGroup
	results := make([]*logical.Response, 6)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], _ = e.doErr(logical.ReadOperation, "creds/capped", nil)
		}(i)
	}
	wg.Wait()
	var issued []*logical.Response
	for _, r := range results {
		if r != nil && !r.IsError() {
			issued = append(issued, r)
		} else if r == nil || !strings.Contains(r.Error().Error(), "max_keys") {
			t.Fatalf("refusal does not name max_keys: %v", r)
		}
	}
	if len(issued) != 2 || len(e.climatiq.Keys()) != 2 {
		t.Fatalf("issued %d keys (%d upstream), want 2", len(issued), len(e.climatiq.Keys()))
	}
	if _, err := e.revoke(issued[0].Secret); err != nil {
		t.Fatal(err)
	}
	e.mustOK(logical.ReadOperation, "creds/capped", nil)
}

func TestClimatiqIssueUpstreamFailure(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})

	e.climatiq.FailNext(1, http.StatusInternalServerError)
	resp, err := e.doErr(logical.ReadOperation, "creds/ci", nil)
	if status := statusOf(resp, err); status != http.StatusInternalServerError {
		t.Fatalf("status = %d (%v), want 500", status, err)
	}
	if !strings.Contains(err.Error(), "500") {
		t.Fatalf("error %q does not carry the upstream status", err)
	}
	assertNoSecrets(t, err.Error())
	if n := len(e.climatiq.Keys()); n != 0 {
		t.Fatalf("%d keys upstream after a failed issuance", n)
	}
	// A 500 may still commit: the entry stays for the rollback manager.
	runRollbackManager(t, e)
	assertNoWAL(t, e)
}

func TestAltruistiqTokenSharedAndBounded(t *testing.T) {
	e := newTestEnv(t)
	e.altruistiq.SetTokenLifetime(10 * time.Minute)
	e.writeAltruistiqConfig("aq", nil)
	e.writeRole("export", map[string]any{"config": "aq", "ttl": "1h"})
	// verify_connection fetched one token with a throwaway client.
	callsBefore := e.altruistiq.TokenCalls()

	const readers = 100
	var wg sync.WaitGroup
	tokens := make(chan string, readers)
	errs := make(chan error, readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.doErr(logical.ReadOperation, "creds/export", nil)
			if err != nil || resp.IsError() {
				errs <- errors.Join(err, resp.Error())
				return
			}
			expiresAt, _ := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
			if resp.Secret.TTL <= 0 || time.Now().Add(resp.Secret.TTL).After(expiresAt.Add(time.Second)) {
				errs <- errors.New("lease outlives the token")
			}
			if resp.Secret.Renewable {
				errs <- errors.New("token lease is renewable")
			}
			tokens <- resp.Data["access_token"].(string)
		}()
	}
	wg.Wait()
	close(errs)
	close(tokens)
	for err := range errs {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for tok := range tokens {
		distinct[tok] = true
		if !e.altruistiq.ValidToken(tok) {
			t.Fatal("issued token is not valid upstream")
		}
	}
	if calls := e.altruistiq.TokenCalls() - callsBefore; calls != 1 || len(distinct) != 1 {
		t.Fatalf("%d upstream token calls and %d distinct tokens for %d reads, want 1 and 1", calls, len(distinct), readers)
	}

	// The lease never outlives the token, even when the role allows more.
	resp := e.mustOK(logical.ReadOperation, "creds/export", nil)
	if resp.Secret.TTL > 10*time.Minute {
		t.Fatalf("lease TTL %s exceeds the token lifetime", resp.Secret.TTL)
	}
	if _, err := e.revoke(resp.Secret); err != nil {
		t.Fatalf("revoking a token lease: %v", err)
	}
}

func TestCredsBadInput(t *testing.T) {
	e := newTestEnv(t)
	e.mustFail(logical.ReadOperation, "creds/nope", nil, "role")
	e.mustFail(logical.ReadOperation, "creds/bad name", nil, "role")
	e.mustFail(logical.ReadOperation, "creds/", nil, "role")
}

// A LIST of a path that names one role is a 405 pointing at the roles'
// list, not a 400 asking for a name a list never takes.
func TestNamedPathsAreNotListable(t *testing.T) {
	e := newTestEnv(t)
	for path, roles := range map[string]string{"creds/": "vault list roles", "static-creds/": "vault list static-roles", "rotate-role/": "vault list static-roles"} {
		_, err := e.doErr(logical.ListOperation, path, nil)
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) || coded.Code() != 405 || !strings.Contains(err.Error(), "not listable") || !strings.Contains(err.Error(), roles) {
			t.Errorf("LIST %s: %v, want a 405 saying it is not listable and pointing at %q", path, err, roles)
		}
	}
}

func assertInventory(t *testing.T, e *testEnv, role, keyName string, want bool) {
	t.Helper()
	got := inventoryByName(t, e, keyKindDynamic, role, keyName)
	if (got != nil) != want {
		t.Fatalf("inventory entry for key %s present=%v, want %v", keyName, got != nil, want)
	}
}

func assertNoWAL(t *testing.T, e *testEnv) {
	t.Helper()
	waitSpentWALRetired(t, e)
}

// waitSpentWALRetired closes the instance's issuance blocks, waits
// (bounded) for the background deletion of their WAL entries, then asserts
// none is left: every issuance has resolved what it created.
func waitSpentWALRetired(t *testing.T, e *testEnv) {
	t.Helper()
	e.b.closeBlocks(context.Background(), "")
	var ids []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var err error
		if ids, err = framework.ListWAL(context.Background(), e.storage); err != nil {
			t.Fatal(err)
		}
		if len(ids) == 0 {
			return
		}
	}
	t.Fatalf("%d WAL entries left", len(ids))
}

// runRollbackManager runs the framework's WAL rollback as Vault's rollback
// manager does, ignoring the entries' minimum age.
func runRollbackManager(t *testing.T, e *testEnv) {
	t.Helper()
	if _, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RollbackOperation,
		Storage:   e.storage,
		Data:      map[string]any{"immediate": true},
	}); err != nil {
		t.Fatal(err)
	}
}

// inventoryByName finds an inventory entry by role and key name, by walking.
func inventoryByName(t *testing.T, e *testEnv, kind, role, keyName string) *ownedKey {
	t.Helper()
	var found *ownedKey
	err := walkKeys(context.Background(), e.storage, func(k *ownedKey) error {
		if k.kind() == kind && k.Role == role && k.KeyName == keyName {
			found = k
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// countInventory counts a role's entries by walking the inventory.
func countInventory(ctx context.Context, s logical.Storage, kind, role string) (int, error) {
	n := 0
	err := walkKeys(ctx, s, func(k *ownedKey) error {
		if k.kind() == kind && k.Role == role {
			n++
		}
		return nil
	})
	return n, err
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
