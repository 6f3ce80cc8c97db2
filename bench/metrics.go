package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// barrier is Vault's count of storage writes through its barrier (every
// write of every engine, Vault's own leases included), from its telemetry.
type barrier struct{ puts, deletes float64 }

func (b barrier) sub(o barrier) barrier { return barrier{b.puts - o.puts, b.deletes - o.deletes} }
func (b barrier) writes() float64       { return b.puts + b.deletes }

// readBarrier reads vault_barrier_put_count and vault_barrier_delete_count
// (the _count of the summaries Vault keeps for barrier.put and
// barrier.delete) from GET sys/metrics?format=prometheus.
func readBarrier(c *api.Client) (barrier, error) {
	resp, err := c.Logical().ReadRawWithData("sys/metrics", map[string][]string{"format": {"prometheus"}})
	if err != nil {
		return barrier{}, fmt.Errorf("reading sys/metrics: %w", err)
	}
	defer resp.Body.Close()
	var b barrier
	seen := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if name != "vault_barrier_put_count" && name != "vault_barrier_delete_count" {
			continue
		}
		if i := strings.LastIndex(rest, "}"); i >= 0 {
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return barrier{}, fmt.Errorf("sys/metrics: unexpected line %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return barrier{}, fmt.Errorf("sys/metrics: line %q: %w", line, err)
		}
		if name == "vault_barrier_put_count" {
			b.puts += v
			seen = true
		} else {
			b.deletes += v
		}
	}
	if err := sc.Err(); err != nil {
		return barrier{}, err
	}
	if !seen {
		return barrier{}, fmt.Errorf("sys/metrics has no vault_barrier_put_count: is telemetry (prometheus_retention_time) configured?")
	}
	return b, nil
}

// writeCount is the storage writes of n operations, and of a quiet
// interval as long as the n operations took, measured right after them.
type writeCount struct {
	name    string
	n       int
	ops     barrier // over the n operations and the settle time after them
	quiet   barrier // over a quiet interval of the same length
	elapsed time.Duration
}

func (w writeCount) perOp(b barrier) barrier {
	return barrier{b.puts / float64(w.n), b.deletes / float64(w.n)}
}

// net is the writes per operation once the quiet interval's are taken off.
func (w writeCount) net() barrier { return w.perOp(w.ops.sub(w.quiet)) }

// settle is how long a count waits after its last operation, so that what
// an operation writes just after its answer (the plugin's spent-WAL delete,
// Vault's lease bookkeeping) lands inside the count.
const settle = time.Second

// countWrites runs op n times one after another (bounded by
// batchTimeLimit) and counts Vault's barrier writes over them and the
// settle time; then counts a quiet interval of the same length with no
// request at all, which is Vault's background (autopilot, activity log,
// expiration bookkeeping), for the report to subtract.
func countWrites(c *api.Client, name string, n int, op func(c *api.Client) error) (writeCount, error) {
	w := writeCount{name: name, n: n}
	before, err := readBarrier(c)
	if err != nil {
		return w, err
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if time.Since(start) > batchTimeLimit {
			return w, fmt.Errorf("%s: %d of %d operations within %s", name, i, n, batchTimeLimit)
		}
		if err := op(c); err != nil {
			return w, fmt.Errorf("%s: operation %d: %w", name, i, err)
		}
	}
	time.Sleep(settle)
	after, err := readBarrier(c)
	if err != nil {
		return w, err
	}
	w.elapsed = time.Since(start)
	w.ops = after.sub(before)
	time.Sleep(w.elapsed)
	quietEnd, err := readBarrier(c)
	if err != nil {
		return w, err
	}
	w.quiet = quietEnd.sub(after)
	return w, nil
}
