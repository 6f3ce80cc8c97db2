package carbon

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// countingSystemView counts the ReplicationState calls that reach Vault.
type countingSystemView struct {
	logical.SystemView
	calls int
	state consts.ReplicationState
}

func (s *countingSystemView) ReplicationState() consts.ReplicationState {
	s.calls++
	return s.state
}

func TestReplicationStateIsAskedOncePerTTL(t *testing.T) {
	sys := &countingSystemView{SystemView: logical.TestSystemView(), state: consts.ReplicationPerformancePrimary}
	c := newReplicationStateCache(sys)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	tests := []struct {
		name      string
		advance   time.Duration
		change    consts.ReplicationState
		wantCalls int
		want      consts.ReplicationState
	}{
		{"first ask reaches Vault", 0, 0, 1, consts.ReplicationPerformancePrimary},
		{"within the TTL: cached", replicationStateTTL / 2, consts.ReplicationPerformanceStandby, 1, consts.ReplicationPerformancePrimary},
		{"past the TTL: asked again", replicationStateTTL, 0, 2, consts.ReplicationPerformanceStandby},
		{"clock moved back: asked again", -time.Hour, 0, 3, consts.ReplicationPerformanceStandby},
	}
	for _, tc := range tests {
		now = now.Add(tc.advance)
		if tc.change != 0 {
			sys.state = tc.change
		}
		if got := c.ReplicationState(); got != tc.want || sys.calls != tc.wantCalls {
			t.Fatalf("%s: state %v after %d calls to Vault; want %v after %d", tc.name, got, sys.calls, tc.want, tc.wantCalls)
		}
	}
}

// The framework asks for the replication state before every request; the
// backend's requests reach Vault's system view once per TTL.
func TestRequestsShareOneReplicationStateAsk(t *testing.T) {
	sys := &countingSystemView{SystemView: logical.TestSystemView()}
	conf := &logical.BackendConfig{StorageView: &logical.InmemStorage{}, System: sys, Logger: testLogger()}
	b, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Cleanup(context.Background())
	for range 5 {
		if _, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ListOperation, Path: "roles/", Storage: conf.StorageView}); err != nil {
			t.Fatal(err)
		}
	}
	if sys.calls != 1 {
		t.Fatalf("5 requests asked Vault for the replication state %d times; want 1", sys.calls)
	}
}
