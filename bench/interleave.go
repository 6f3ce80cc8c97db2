package main

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// newClient is an HTTP client to a benchmark Vault, pooled for high
// concurrency and without client-side retries.
func newClient(s *devvault.Server) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = "http://" + s.Addr
	cfg.MaxRetries = 0
	cfg.Timeout = 2 * time.Minute
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 2048
		t.MaxConnsPerHost = 0
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(err)
	}
	c.SetToken(s.Token)
	return c
}

// The operations the scenarios time, shared by every Vault they run on.

// readCreds issues a credential by reading path (carbon's creds/<role>).
func readCreds(path string, leases *leasePool) func(c *api.Client) error {
	return func(c *api.Client) error {
		s, err := c.Logical().Read(path)
		if err == nil && leases != nil && s != nil {
			leases.push(s.LeaseID)
		}
		return err
	}
}

// issueOTP issues an ssh one-time password: Vault's own leased issuance,
// with no plugin in the path, the control every carbon figure is set
// against.
func issueOTP(leases *leasePool) func(c *api.Client) error {
	return func(c *api.Client) error {
		s, err := c.Logical().Write("ssh/creds/otp", map[string]any{"ip": "127.0.0.1"})
		if err == nil && leases != nil && s != nil {
			leases.push(s.LeaseID)
		}
		return err
	}
}

// revokeLease revokes one lease of the pool the way `vault lease revoke
// -sync` does: PUT sys/leases/revoke with sync, answered once the secret
// engine has revoked it.
func revokeLease(leases *leasePool) func(c *api.Client) error {
	return func(c *api.Client) error {
		id := leases.pop()
		if id == "" {
			return fmt.Errorf("no lease left to revoke")
		}
		_, err := c.Logical().Write("sys/leases/revoke", map[string]any{"lease_id": id, "sync": true})
		return err
	}
}

// renewLease renews one lease of the pool by an hour and keeps it.
func renewLease(leases *leasePool) func(c *api.Client) error {
	return func(c *api.Client) error {
		id := leases.pop()
		if id == "" {
			return fmt.Errorf("no lease left to renew")
		}
		defer leases.push(id)
		_, err := c.Logical().Write("sys/leases/renew", map[string]any{"lease_id": id, "increment": 3600})
		return err
	}
}

// leasePool hands the leases one batch issued to the batch that revokes
// or renews them.
type leasePool struct {
	mu  sync.Mutex
	ids []string
}

func (p *leasePool) push(id string) {
	if id == "" {
		return
	}
	p.mu.Lock()
	p.ids = append(p.ids, id)
	p.mu.Unlock()
}

func (p *leasePool) pop() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) == 0 {
		return ""
	}
	id := p.ids[0]
	p.ids = p.ids[1:]
	return id
}

func (p *leasePool) reset() {
	p.mu.Lock()
	p.ids = nil
	p.mu.Unlock()
}

// benchCase is one timed operation of an interleaved measurement.
type benchCase struct {
	name    string
	conc    int
	n       int
	op      func(c *api.Client) error
	cleanup string        // lease prefix to revoke after each batch (not timed)
	pause   time.Duration // untimed pause before each request
}

// caseResult pools a case's batches over the rounds.
type caseResult struct {
	lat  []time.Duration
	tput []float64
	errs int
}

type results map[string]*caseResult

func (r results) p50(name string) time.Duration { return percentile(r.get(name).lat, 50) }
func (r results) p99(name string) time.Duration { return percentile(r.get(name).lat, 99) }
func (r results) tput(name string) float64      { return median(r.get(name).tput) }
func (r results) errs(name string) int          { return r.get(name).errs }

func (r results) get(name string) *caseResult {
	if cr, ok := r[name]; ok {
		return cr
	}
	return &caseResult{}
}

// interleave times groups of cases in rounds, after one warm-up batch of
// 20 calls per case (connections, the plugin's caches, Vault's caches).
// Within a round the groups run in order (a group may consume what an
// earlier one produced, such as leases to revoke); the cases of a group run
// in an order rotated every round, so no case always runs first and a noisy
// moment of the machine falls on each in turn. Latencies are pooled over
// the rounds; throughput is per round (report the median). afterRound, if
// set, runs untimed after the warm-up and after every round.
func interleave(s *devvault.Server, c *api.Client, rounds int, groups [][]benchCase, afterRound func() error) (results, error) {
	res := results{}
	runCase := func(ic benchCase, n int, record bool) error {
		b := runPacedBatch(n, ic.conc, ic.pause, func() error { return ic.op(c) })
		if b.firstErr != nil && b.errors > n/100 {
			return fmt.Errorf("%s: %d errors, first: %v", ic.name, b.errors, b.firstErr)
		}
		if record {
			cr := res[ic.name]
			if cr == nil {
				cr = &caseResult{}
				res[ic.name] = cr
			}
			cr.lat = append(cr.lat, b.latencies...)
			cr.tput = append(cr.tput, b.throughput())
			cr.errs += b.errors
		}
		if ic.cleanup != "" {
			return revokePrefix(s, ic.cleanup)
		}
		return nil
	}
	for _, g := range groups {
		for _, ic := range g {
			if err := runCase(ic, 20, false); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	if afterRound != nil {
		if err := afterRound(); err != nil {
			return nil, err
		}
	}
	for r := 0; r < rounds; r++ {
		for _, g := range groups {
			for i := range g {
				if err := runCase(g[(i+r)%len(g)], g[(i+r)%len(g)].n, true); err != nil {
					return nil, err
				}
			}
		}
		if afterRound != nil {
			if err := afterRound(); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// revokePrefix revokes leases synchronously between timed batches.
func revokePrefix(s *devvault.Server, prefix string) error {
	_, err := s.Vault("lease", "revoke", "-sync", "-prefix", prefix)
	return err
}
