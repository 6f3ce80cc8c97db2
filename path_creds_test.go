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

	"github.com/hashicorp/vault/sdk/logical"
)

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

// BenchmarkIssueClimatiqKey measures the plugin's own cost of one issuance
// (in-process, in-memory storage, zero-latency fake upstream), without
// Vault's request handling, gRPC or lease storage. Profile it with
//
//	go test -run XXX -bench IssueClimatiqKey -cpuprofile cpu.out && go tool pprof -top cpu.out
func BenchmarkIssueClimatiqKey(b *testing.B) {
	e := newTestEnv(b)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/ci", Storage: e.storage, DisplayName: "token-bench"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := e.b.HandleRequest(context.Background(), req)
		if err != nil || resp.IsError() {
			b.Fatal(err, resp.Error())
		}
	}
}

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
