package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// TestHAFailover runs a three-node Vault cluster with integrated storage
// (Raft) on 127.0.0.1, issues keys through a standby, kills the active
// node, and checks that the new active node serves issuance and revocation,
// resolves the WAL, and ends with no untracked key upstream.
func TestHAFailover(t *testing.T) {
	fake := climatiqtest.NewServer(managementKey)
	defer fake.Close()
	project := fake.AddProject("ha").ID
	fake.SetLatency(100 * time.Millisecond)
	fake.SetCompleteAbandoned(true)

	start := func(name string, raft *devvault.RaftOptions) *devvault.Server {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), vaultStartBudget)
		defer cancel()
		s, err := devvault.Start(ctx, devvault.Options{
			VaultBin: vaultBin, Dir: serverDir(t, name), PluginDir: pluginDir, LogLevel: "info", Raft: raft,
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() {
			s.KillAll()
			if t.Failed() {
				if log, err := os.ReadFile(s.LogPath); err == nil {
					var keep []string
					for _, line := range strings.Split(string(log), "\n") {
						if !strings.Contains(line, "forward") {
							keep = append(keep, line)
						}
					}
					t.Logf("%s log:\n%s", name, tail(strings.Join(keep, "\n"), 40))
				}
			}
		})
		return s
	}
	node1 := start("ha-1", &devvault.RaftOptions{NodeID: "node1"})
	nodes := []*devvault.Server{node1}
	for _, id := range []string{"node2", "node3"} {
		nodes = append(nodes, start("ha-"+id, &devvault.RaftOptions{
			NodeID: id, JoinAddr: node1.Addr, UnsealKey: node1.UnsealKey, Token: node1.Token,
		}))
	}
	// Joining nodes start as non-voters; autopilot promotes them once
	// they are stable (about 10s). Only then can the cluster lose one.
	eventually(t, 90*time.Second, "three raft voters", func() bool {
		peers, err := node1.Client.Logical().Read("sys/storage/raft/configuration")
		if err != nil || peers == nil {
			return false
		}
		servers, _ := peers.Data["config"].(map[string]any)["servers"].([]any)
		voters := 0
		for _, srv := range servers {
			if v, _ := srv.(map[string]any)["voter"].(bool); v {
				voters++
			}
		}
		return voters == 3
	})

	if err := node1.RegisterAndEnable(pluginSHA, pluginVersion, mount); err != nil {
		t.Fatal(err)
	}
	standby := nodes[1]
	for _, args := range [][]string{
		{"write", mount + "/config/cq", "provider=climatiq", "management_key=" + managementKey,
			"management_url=" + fake.ManagementURL(), "api_url=" + fake.APIURL()},
		{"write", mount + "/roles/ci", "config=cq", "project_id=" + project, "ttl=1h"},
	} {
		if _, err := standby.Vault(args...); err != nil {
			t.Fatal(err)
		}
	}

	// Issuance load through the standby's address; it forwards to the active node.
	client, err := api.NewClient(&api.Config{Address: "http://" + standby.Addr, Timeout: 15 * time.Second, MaxRetries: 0})
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(node1.Token)
	var before, after, failed atomic.Int64
	var failedOver atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := client.Logical().Read(mount + "/creds/ci")
				switch {
				case err != nil:
					failed.Add(1)
					time.Sleep(100 * time.Millisecond)
				case failedOver.Load():
					after.Add(1)
				default:
					before.Add(1)
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	node1.KillAll() // the active node and its plugin die
	eventually(t, 60*time.Second, "a new active node", func() bool {
		leader, err := standby.Client.Sys().Leader()
		return err == nil && leader.IsSelf || (err == nil && leader.LeaderAddress != "" && !strings.Contains(leader.LeaderAddress, node1.Addr))
	})
	failedOver.Store(true)
	eventually(t, 60*time.Second, "issuance after fail-over", func() bool { return after.Load() >= 10 })
	close(stop)
	wg.Wait()

	// WAL rollback on the new active node, then the upstream must match
	// the inventory exactly.
	out, err := standby.Vault("write", "-format=json", mount+"/tidy", "min_age=0s")
	if err != nil {
		t.Fatal(err)
	}
	tidy := decodeSecret(t, out)
	tracked := inventoryIDs(t, standby.Client)
	var upstream []string
	for _, k := range fake.Keys() {
		upstream = append(upstream, k.ID)
	}
	sort.Strings(upstream)
	if strings.Join(upstream, ",") != strings.Join(tracked, ",") {
		t.Fatalf("after fail-over and tidy, upstream keys %d differ from the inventory %d", len(upstream), len(tracked))
	}
	if _, err := standby.Vault("lease", "revoke", "-sync", "-prefix", mount+"/creds/ci"); err != nil {
		t.Fatal(err)
	}
	left := inventoryIDs(t, standby.Client)
	if len(fake.Keys()) != len(left) {
		t.Fatalf("%d upstream keys but %d inventory entries after revocation", len(fake.Keys()), len(left))
	}
	t.Logf("HA: %d issued before fail-over, %d after, %d failed during it; tidy resolved %v WAL entries, found %v orphans; %d tracked keys without a lease, 0 untracked",
		before.Load(), after.Load(), failed.Load(), tidy.Data["wal_rolled_back"], len(tidy.Data["orphans"].([]any)), len(left))
	fmt.Printf("HA-TEST nodes=3 issued_before=%d issued_after=%d failed_during=%d orphans_left=0 tracked_without_lease=%d\n",
		before.Load(), after.Load(), failed.Load(), len(left))
}
