package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

// TestCrashDuringIssuance SIGKILLs Vault five times at random moments while
// issuance is in flight against a slow upstream. Vault's death leaves the
// plugin process running, finishing upstream calls whose results Vault can
// no longer store. After each restart and, at the end, WAL rollback and
// tidy, the upstream holds exactly the keys the inventory tracks, and every
// surviving lease revokes cleanly.
func TestCrashDuringIssuance(t *testing.T) {
	const crashes, workers = 5, 6
	s := startVault(t, "crash", "info")
	fake := climatiqtest.NewServer(managementKey)
	defer fake.Close()
	project := fake.AddProject("crash").ID
	fake.SetLatency(300 * time.Millisecond) // requests are in flight when Vault dies
	fake.SetCompleteAbandoned(true)         // and creates happen even when the answer is lost

	vaultCmd := func(args ...string) {
		t.Helper()
		if _, err := s.Vault(args...); err != nil {
			t.Fatal(err)
		}
	}
	vaultCmd("write", mount+"/config/cq", "provider=climatiq", "management_key="+managementKey,
		"management_url="+fake.ManagementURL(), "api_url="+fake.APIURL())
	vaultCmd("write", mount+"/roles/ci", "config=cq", "project_id="+project, "ttl=1h")

	var issued, failed atomic.Int64
	for crash := 1; crash <= crashes; crash++ {
		client, err := api.NewClient(&api.Config{Address: "http://" + s.Addr, Timeout: 10 * time.Second, MaxRetries: 0})
		if err != nil {
			t.Fatal(err)
		}
		client.SetToken(s.Token)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ { // bounded: Vault dies long before
					select {
					case <-stop:
						return
					default:
					}
					if _, err := client.Logical().Read(mount + "/creds/ci"); err != nil {
						failed.Add(1)
					} else {
						issued.Add(1)
					}
				}
			}()
		}
		time.Sleep(time.Duration(1000+rand.IntN(2000)) * time.Millisecond)
		s.Kill() // SIGKILL Vault only; its plugin process lives on
		close(stop)
		wg.Wait()
		// The orphaned plugin finishes its in-flight calls, then goes, as
		// an operator's process supervisor would see to.
		time.Sleep(time.Second)
		s.KillAll()

		ctx, cancel := context.WithTimeout(context.Background(), vaultStartBudget)
		err = s.Restart(ctx)
		cancel()
		if err != nil {
			t.Fatalf("restart after crash %d: %v", crash, err)
		}
		t.Logf("crash %d: %d issued so far, %d upstream keys", crash, issued.Load(), len(fake.Keys()))
	}
	fake.SetLatency(0)
	upstreamBeforeTidy := len(fake.Keys())

	out, err := s.Vault("write", "-format=json", mount+"/tidy", "min_age=0s")
	if err != nil {
		t.Fatal(err)
	}
	tidy := decodeSecret(t, out)
	orphansFound := len(tidy.Data["orphans"].([]any))
	walRolledBack := tidy.Data["wal_rolled_back"]

	tracked := inventoryIDs(t, s.Client)
	upstream := make([]string, 0)
	for _, k := range fake.Keys() {
		upstream = append(upstream, k.ID)
	}
	sort.Strings(upstream)
	if strings.Join(upstream, ",") != strings.Join(tracked, ",") {
		t.Fatalf("upstream keys %v differ from the inventory %v", upstream, tracked)
	}

	// Every lease Vault stored revokes cleanly and takes its key along.
	leases, _ := s.Client.Logical().List("sys/leases/lookup/" + mount + "/creds/ci/")
	leaseCount := 0
	if leases != nil {
		leaseCount = len(leases.Data["keys"].([]any))
	}
	if _, err := s.Vault("lease", "revoke", "-sync", "-prefix", mount+"/creds/ci"); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.Client.Logical().List("sys/leases/lookup/" + mount + "/creds/ci/"); left != nil && len(left.Data["keys"].([]any)) > 0 {
		t.Fatalf("%d leases survived revoke-prefix", len(left.Data["keys"].([]any)))
	}
	// What is left upstream is tracked by the inventory: keys whose lease
	// Vault never stored; tidy deletes them once their max_ttl has passed.
	after := inventoryIDs(t, s.Client)
	if len(fake.Keys()) != len(after) {
		t.Fatalf("%d upstream keys but %d inventory entries after revocation", len(fake.Keys()), len(after))
	}
	t.Logf("crash test: %d crashes, %d issued, %d failed requests, %d leases revoked; tidy resolved %v WAL entries and found %d orphans; %d tracked keys without a lease, 0 untracked",
		crashes, issued.Load(), failed.Load(), leaseCount, walRolledBack, orphansFound, len(after))
	fmt.Printf("CRASH-TEST crashes=%d issued=%d upstream_keys_before_tidy=%d leases_revoked=%d wal_resolved=%v orphans_found_by_tidy=%d orphans_left=0 tracked_without_lease=%d\n",
		crashes, issued.Load(), upstreamBeforeTidy, leaseCount, walRolledBack, orphansFound, len(after))
}

func inventoryIDs(t *testing.T, c *api.Client) []string {
	t.Helper()
	list, err := c.Logical().List(mount + "/keys/")
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	if list != nil {
		for _, id := range list.Data["keys"].([]any) {
			ids = append(ids, id.(string))
		}
	}
	sort.Strings(ids)
	return ids
}

func decodeSecret(t *testing.T, out string) *api.Secret {
	t.Helper()
	secret, err := api.ParseSecret(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	return secret
}
