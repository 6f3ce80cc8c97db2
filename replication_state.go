package carbon

import (
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// replicationStateTTL bounds how stale the cached replication state may be.
const replicationStateTTL = time.Second

// replicationStateCache answers ReplicationState from a copy at most
// replicationStateTTL old. The framework asks for it before every request
// (to forward writes from a performance standby), and for an external
// plugin each ask is a gRPC round trip to Vault: on a busy mount that is a
// second call per request, and on integrated storage the measurable part
// of an issuance's cost that is not a write (BENCHMARKS.md). The state
// changes only when the node changes role, and Vault then sets up its mounts
// anew: a backend instance sees at most a second of a state it would not
// have served under anyway.
type replicationStateCache struct {
	logical.SystemView
	now func() time.Time

	mu    sync.Mutex
	state consts.ReplicationState
	read  time.Time
}

func newReplicationStateCache(sys logical.SystemView) *replicationStateCache {
	return &replicationStateCache{SystemView: sys, now: time.Now}
}

func (c *replicationStateCache) ReplicationState() consts.ReplicationState {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.read.IsZero() || now.Sub(c.read) >= replicationStateTTL || now.Before(c.read) {
		c.state, c.read = c.SystemView.ReplicationState(), now
	}
	return c.state
}
