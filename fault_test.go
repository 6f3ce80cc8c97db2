package carbon

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestFaultMatrix drives issuance against each upstream failure mode and
// checks what the operator would see and that nothing is left upstream.
func TestFaultMatrix(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		inject func(e *testEnv)
		heal   func(e *testEnv)
		// wantErr is a fragment of the issuance error; "" means success.
		wantErr string
		check   func(t *testing.T, e *testEnv)
	}{
		{
			name:   "429 with Retry-After is waited out, not counted as a retry",
			config: map[string]any{"max_retries": 0},
			inject: func(e *testEnv) {
				e.climatiq.SetRetryAfter(time.Second)
				e.climatiq.FailNext(2, http.StatusTooManyRequests)
			},
			check: func(t *testing.T, e *testEnv) {
				if n := e.climatiq.Stats().RateLimited; n != 2 {
					t.Fatalf("%d 429s sent, want 2", n)
				}
			},
		},
		{
			name:   "2s latency against a 1s timeout fails fast and strands nothing",
			config: map[string]any{"request_timeout": "1s", "max_retries": 0},
			inject: func(e *testEnv) { e.climatiq.SetLatency(2 * time.Second); e.climatiq.SetCompleteAbandoned(true) },
			// The abandoned create still lands upstream (its answer is
			// lost); wait for it so the rollback below must find it.
			heal: func(e *testEnv) {
				e.climatiq.SetLatency(0)
				time.Sleep(2 * time.Second)
				if n := len(e.climatiq.Keys()); n != 1 {
					e.t.Fatalf("%d keys upstream after the abandoned create, want 1", n)
				}
			},
			wantErr: "no answer within the request timeout",
		},
		{
			name:    "garbage JSON: the created key is found by name and deleted",
			inject:  func(e *testEnv) { e.climatiq.SetGarbage(true) },
			heal:    func(e *testEnv) { e.climatiq.SetGarbage(false) },
			wantErr: "invalid JSON",
		},
		{
			name:    "management key revoked upstream",
			inject:  func(e *testEnv) { e.climatiq.RevokeManagementKey(testManagementKey) },
			wantErr: "401 Unauthorized",
		},
		{
			name:   "create commits upstream, then 503: the key is found by its name, not created twice",
			config: map[string]any{"max_retries": 2},
			inject: func(e *testEnv) { e.climatiq.CommitThenFail(1, http.StatusServiceUnavailable) },
			check: func(t *testing.T, e *testEnv) {
				if st := e.climatiq.Stats(); st.KeysCreated != 1 || st.CommittedThenFailed != 1 {
					t.Fatalf("created %d keys, %d committed-then-failed answers; want 1, 1", st.KeysCreated, st.CommittedThenFailed)
				}
			},
		},
		{
			name:   "create commits upstream, then 504, with no retries left: the key is still found by its name",
			config: map[string]any{"max_retries": 0},
			inject: func(e *testEnv) { e.climatiq.CommitThenFail(1, http.StatusGatewayTimeout) },
			check: func(t *testing.T, e *testEnv) {
				if st := e.climatiq.Stats(); st.KeysCreated != 1 {
					t.Fatalf("created %d keys, want 1", st.KeysCreated)
				}
			},
		},
		{
			name:    "key name over the upstream's length limit: a 400 naming key_name_template, nothing stranded",
			inject:  func(e *testEnv) { e.climatiq.SetMaxNameLength(32) },
			wantErr: "key_name_template",
		},
		{
			name:   "30% 503 with retries",
			config: map[string]any{"max_retries": 8},
			inject: func(e *testEnv) { e.climatiq.SetFailureRate(0.3) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", tc.config)
			e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
			tc.inject(e)

			start := time.Now()
			resp, err := e.doErr(logical.ReadOperation, "creds/ci", nil)
			elapsed := time.Since(start)
			if err == nil && resp.IsError() {
				err = resp.Error() // a 400: the role's mistake
			}
			if elapsed > 30*time.Second {
				t.Fatalf("issuance took %s", elapsed)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("issuance failed: %v", err)
				}
				if _, err := e.revoke(resp.Secret); err != nil {
					t.Fatalf("revoke: %v", err)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				assertNoSecrets(t, err.Error())
			}
			if tc.check != nil {
				tc.check(t, e)
			}
			if tc.heal != nil {
				tc.heal(e)
			}
			// Whatever the in-request rollback could not finish, the
			// rollback manager does.
			runRollbackManager(t, e)
			if n := len(e.climatiq.Keys()); n != 0 {
				t.Fatalf("%d keys left upstream", n)
			}
			if st := e.climatiq.Stats(); st.DuplicateNames != 0 {
				t.Fatalf("%d keys created twice", st.DuplicateNames)
			}
		})
	}
}

// TestIssueRevokeCyclesUnderFaults runs 500 issue/revoke cycles while the
// upstream answers 30% of requests with 503 and rate-limits with 429 and
// Retry-After: every lease is revoked, no key is created twice, and no key is
// left upstream.
func TestIssueRevokeCyclesUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("500 cycles under faults take about a minute")
	}
	const cycles, workers = 500, 16
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 10})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.climatiq.SetFailureRate(0.3)
	e.climatiq.SetRateLimit(400)
	e.climatiq.SetRetryAfter(time.Second)
	// Whether 400 requests a second are reached depends on the machine's
	// load; these 429s come whatever the load.
	e.climatiq.FailNext(8, http.StatusTooManyRequests)

	var issued, issueFailed, revoked, revokeRetries atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				resp, err := e.doErr(logical.ReadOperation, "creds/ci", nil)
				if err != nil || resp.IsError() {
					issueFailed.Add(1)
					continue
				}
				issued.Add(1)
				// Vault retries a failed revocation; so do we, boundedly.
				for attempt := 0; attempt < 20; attempt++ {
					if _, err := e.revoke(resp.Secret); err == nil {
						revoked.Add(1)
						break
					}
					revokeRetries.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	for i := 0; i < cycles; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)

	e.climatiq.SetFailureRate(0)
	e.climatiq.SetRateLimit(0)
	runRollbackManager(t, e)
	st := e.climatiq.Stats()
	t.Logf("fault cycles: %d cycles in %s: %d issued, %d issuances failed, %d revoked (%d revoke retries); upstream sent %d 503s and %d 429s, created %d keys, deleted %d; %d keys left, %d created twice",
		cycles, elapsed.Round(time.Millisecond), issued.Load(), issueFailed.Load(), revoked.Load(), revokeRetries.Load(),
		st.Failures, st.RateLimited, st.KeysCreated, st.KeysDeleted, len(e.climatiq.Keys()), st.DuplicateNames)
	fmt.Printf("FAULT-MATRIX cycles=%d issued=%d revoked=%d 503s=%d 429s=%d orphans=%d duplicates=%d\n",
		cycles, issued.Load(), revoked.Load(), st.Failures, st.RateLimited, len(e.climatiq.Keys()), st.DuplicateNames)

	if revoked.Load() != issued.Load() {
		t.Fatalf("%d of %d leases could not be revoked", issued.Load()-revoked.Load(), issued.Load())
	}
	if issued.Load() < cycles*99/100 {
		t.Fatalf("only %d of %d issuances succeeded despite retries", issued.Load(), cycles)
	}
	if st.Failures == 0 || st.RateLimited == 0 {
		t.Fatalf("the fault mix did not bite: %d 503s, %d 429s", st.Failures, st.RateLimited)
	}
	if st.DuplicateNames != 0 {
		t.Fatalf("%d keys created twice", st.DuplicateNames)
	}
	if n := len(e.climatiq.Keys()); n != 0 {
		t.Fatalf("%d orphan keys left upstream", n)
	}
	if n, _ := countInventory(t.Context(), e.storage, keyKindDynamic, "ci"); n != 0 {
		t.Fatalf("%d inventory entries left", n)
	}
}

// TestRevokeWhenMissingIdsAnswer403 covers an upstream that answers a
// missing id with 403 (or 400) instead of 404: a revoke of a key deleted
// out of band still succeeds, after confirming the key's absence.
func TestRevokeWhenMissingIdsAnswer403(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusBadRequest} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			e := newTestEnv(t)
			e.writeClimatiqConfig("cq", nil)
			e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
			resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
			client, err := e.b.climatiqClient(t.Context(), e.storage, "cq")
			if err != nil {
				t.Fatal(err)
			}
			if err := client.DeleteProjectKey(t.Context(), e.projectID, resp.Data["key_id"].(string)); err != nil {
				t.Fatal(err)
			}
			e.climatiq.SetMissingStatus(status)
			if _, err := e.revoke(resp.Secret); err != nil {
				t.Fatalf("revoke of a key already gone: %v", err)
			}
			if n, _ := countInventory(t.Context(), e.storage, keyKindDynamic, "ci"); n != 0 {
				t.Fatalf("%d inventory entries left", n)
			}
		})
	}
}
