package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// The storage scenarios: issuance, revocation and static-role rotation,
// timed against Vault's own ssh OTP engine in the same interleaved rounds,
// and the storage writes of each operation counted from Vault's telemetry.
// They run the same way on every storage (Raft, one node and three; the dev
// server's memory), so the tables differ only by storage.
const (
	stConfig = "st" // connection and role of the storage scenarios
	stStatic = 32   // static roles, rotated in turn (never two rotations of one role at once)
	stN1     = 100  // calls per c=1 batch of issuance and revocation
	stN16    = 480  // calls per c=16 batch
	stRot1   = 40   // rotations per c=1 batch
	stRot16  = 160  // rotations per c=16 batch
	stCountN = 200  // operations per storage-write count
)

// The case names of the storage scenarios.
const (
	cIssue1, sIssue1   = "carbon issuance, c=1", "ssh OTP issuance, c=1"
	cIssue16, sIssue16 = "carbon issuance, c=16", "ssh OTP issuance, c=16"
	cRev1, sRev1       = "carbon revocation, c=1", "ssh OTP revocation, c=1"
	cRev16, sRev16     = "carbon revocation, c=16", "ssh OTP revocation, c=16"
	cRot1, cRot16      = "carbon rotate-role, c=1", "carbon rotate-role, c=16"
)

// storageResult is one storage's measurement, for the report.
type storageResult struct {
	order  int    // place in the report: Raft first
	title  string // "Raft, 1 node"
	about  string
	res    results
	counts []writeCount
	took   time.Duration
}

// storageScenario measures s, a Vault (the active node of a cluster) with
// the carbon mount and the ssh OTP role enabled, and adds the result to
// the report. It leaves the mount as it found it.
func (e *env) storageScenario(s *devvault.Server, title, about string, order, rounds int) error {
	began := time.Now()
	fake := climatiqtest.NewServer(managementKey)
	defer fake.Close()
	project := fake.AddProject("storage").ID
	c := newClient(s)
	for _, cmd := range [][]string{
		{"write", mount + "/config/" + stConfig, "provider=climatiq", "management_key=" + managementKey,
			"management_url=" + fake.ManagementURL(), "api_url=" + fake.APIURL()},
		{"write", mount + "/roles/" + stConfig, "config=" + stConfig, "project_id=" + project, "ttl=1h"},
	} {
		if _, err := s.Vault(cmd...); err != nil {
			return err
		}
	}
	names := make(chan string, stStatic)
	for i := range stStatic {
		names <- fmt.Sprintf("%s%02d", stConfig, i)
	}
	if b := runBatch(stStatic, 8, func() error {
		name := <-names
		defer func() { names <- name }()
		_, err := c.Logical().Write(mount+"/static-roles/"+name, map[string]any{
			"config": stConfig, "project_id": project, "rotation_period": "24h",
		})
		return err
	}); b.errors > 0 {
		return fmt.Errorf("creating static roles: %v", b.firstErr)
	}
	// Whatever happens, the mount is left without this scenario's roles
	// and leases (the dev server goes on to other scenarios).
	defer func() {
		_ = revokePrefix(s, mount+"/creds/"+stConfig)
		_ = revokePrefix(s, "ssh/creds/otp")
		for i := range stStatic {
			_, _ = c.Logical().Delete(fmt.Sprintf("%s/static-roles/%s%02d", mount, stConfig, i))
		}
		_, _ = c.Logical().Delete(mount + "/roles/" + stConfig)
		_, _ = c.Logical().Delete(mount + "/config/" + stConfig)
	}()
	// One rotation at a time per role: a rotation takes a free role and
	// gives it back.
	rotate := func(c *api.Client) error {
		name := <-names
		defer func() { names <- name }()
		_, err := c.Logical().Write(mount+"/rotate-role/"+name, nil)
		return err
	}

	step(title + ": timed rounds")
	carbon1, carbon16, ssh1, ssh16 := &leasePool{}, &leasePool{}, &leasePool{}, &leasePool{}
	creds := mount + "/creds/" + stConfig
	groups := [][]benchCase{
		{{name: cIssue1, conc: 1, n: stN1, op: readCreds(creds, carbon1)}, {name: sIssue1, conc: 1, n: stN1, op: issueOTP(ssh1)}},
		{{name: cIssue16, conc: 16, n: stN16, op: readCreds(creds, carbon16)}, {name: sIssue16, conc: 16, n: stN16, op: issueOTP(ssh16)}},
		{{name: cRot1, conc: 1, n: stRot1, op: rotate}, {name: cRot16, conc: 16, n: stRot16, op: rotate}},
		// The revocations revoke the leases the issuance batches of the
		// same round issued.
		{{name: cRev1, conc: 1, n: stN1, op: revokeLease(carbon1)}, {name: sRev1, conc: 1, n: stN1, op: revokeLease(ssh1)}},
		{{name: cRev16, conc: 16, n: stN16, op: revokeLease(carbon16)}, {name: sRev16, conc: 16, n: stN16, op: revokeLease(ssh16)}},
	}
	res, err := interleave(s, c, rounds, groups, func() error {
		for _, p := range []*leasePool{carbon1, carbon16, ssh1, ssh16} {
			p.reset()
		}
		if err := revokePrefix(s, creds); err != nil {
			return err
		}
		return revokePrefix(s, "ssh/creds/otp")
	})
	if err != nil {
		return err
	}

	step(title + ": counting storage writes")
	leases, sshLeases := &leasePool{}, &leasePool{}
	var counts []writeCount
	for _, cnt := range []struct {
		name string
		op   func(c *api.Client) error
	}{
		{"carbon issuance (`creds/`, Vault's lease included)", readCreds(creds, leases)},
		{"carbon renewal (`sys/leases/renew`, +1h)", renewLease(leases)},
		{"carbon revocation (`sys/leases/revoke`, sync)", revokeLease(leases)},
		{"carbon static-role rotation (`rotate-role/`)", rotate},
		{"ssh OTP issuance (`ssh/creds/otp`, Vault's lease included)", issueOTP(sshLeases)},
		{"ssh OTP revocation (`sys/leases/revoke`, sync)", revokeLease(sshLeases)},
	} {
		w, err := countWrites(c, cnt.name, stCountN, cnt.op)
		if err != nil {
			return err
		}
		fmt.Printf("    %s: %.2f puts + %.2f deletes per operation (quiet interval of %s: %.0f + %.0f)\n",
			cnt.name, w.perOp(w.ops).puts, w.perOp(w.ops).deletes, w.elapsed.Round(time.Millisecond), w.quiet.puts, w.quiet.deletes)
		counts = append(counts, w)
	}
	e.report.storages = append(e.report.storages, &storageResult{
		order: order, title: title, about: about, res: res, counts: counts, took: time.Since(began),
	})
	return nil
}

// devStorage runs the storage scenarios on the dev server, for the same
// tables on in-memory storage.
func (e *env) devStorage(rounds int) error {
	return e.storageScenario(e.vault, "Dev server (in-memory storage)",
		"`vault server -dev`: storage is a map in Vault's memory, so a write costs no I/O.", 3, rounds)
}

// writeStorages writes the storage tables, Raft first, and a summary
// across storages.
func (r *report) writeStorages(out *strings.Builder) {
	if len(r.storages) == 0 {
		return
	}
	sort.SliceStable(r.storages, func(i, j int) bool { return r.storages[i].order < r.storages[j].order })
	w := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	w("## Issuance, revocation and rotation by storage\n")
	w("The same scenarios on each storage: carbon issuance (`creds/`), revocation (`PUT sys/leases/revoke` with `sync`, "+
		"as `vault lease revoke -sync`) and static-role rotation (`rotate-role/`), timed in the same interleaved rounds as "+
		"Vault's builtin ssh engine with an OTP role, the control (no plugin in its path). A round runs, in this order: "+
		"issuance at c=1 (%d calls each: carbon, ssh OTP) and at c=16 (%d each), rotation (%d at c=1, %d at c=16, over %d static "+
		"roles, never two rotations of one role at once), then the revocation of the leases those issuance batches made "+
		"(%d at c=1, %d at c=16); within each step the order of the two alternates by round. Ratios are carbon/control: "+
		"p50 latency at c=1 (over 1 = carbon slower) and throughput at c=16 (under 1 = carbon slower). Rotation has no ssh "+
		"counterpart: its control is ssh OTP issuance from the same rounds.\n",
		stN1, stN16, stRot1, stRot16, stStatic, stN1, stN16)
	w("Storage writes per operation come from Vault's own telemetry: `vault_barrier_put_count` and `vault_barrier_delete_count` "+
		"(the `_count` of the barrier summaries) from `GET sys/metrics?format=prometheus` on the active node, read before and "+
		"after %d operations run one after another, then %s for writes made just after an answer to land. Then the same "+
		"counters over a quiet interval of the same length, with no request: Vault's background writes. The net figure "+
		"subtracts the quiet interval's writes from the operations' and divides by %d. The renewal extends leases issued "+
		"seconds before by an hour, within the role's max_ttl.\n", stCountN, settle, stCountN)
	for _, st := range r.storages {
		st.write(w)
	}
	r.writeSummary(w)
}

func (st *storageResult) write(w func(string, ...any)) {
	res := st.res
	w("### %s\n", st.title)
	w("%s Measured in %s.\n", st.about, st.took.Round(time.Second))
	w("| scenario (control) | carbon p50, c=1 | carbon p99, c=1 | control p50, c=1 | control p99, c=1 | p50 carbon/control | carbon c=16 | control c=16 | throughput carbon/control |")
	w("|---|---|---|---|---|---|---|---|---|")
	row := func(label, c1, s1, c16, s16 string) {
		w("| %s | %s | %s | %s | %s | **%.2f×** | %.0f /s | %.0f /s | **%.2f** |", label,
			ms(res.p50(c1)), ms(res.p99(c1)), ms(res.p50(s1)), ms(res.p99(s1)), float64(res.p50(c1))/float64(res.p50(s1)),
			res.tput(c16), res.tput(s16), res.tput(c16)/res.tput(s16))
	}
	row("issuance (ssh OTP issuance)", cIssue1, sIssue1, cIssue16, sIssue16)
	row("revocation, sync (ssh OTP lease revocation)", cRev1, sRev1, cRev16, sRev16)
	row("static-role rotation (ssh OTP issuance)", cRot1, sIssue1, cRot16, sIssue16)
	var errs []string
	for _, name := range []string{cIssue1, sIssue1, cIssue16, sIssue16, cRot1, cRot16, cRev1, sRev1, cRev16, sRev16} {
		if n := res.errs(name); n > 0 {
			errs = append(errs, fmt.Sprintf("%s: %d", name, n))
		}
	}
	if len(errs) == 0 {
		w("\nErrors over all rounds: none.\n")
	} else {
		w("\nErrors over all rounds: %s.\n", strings.Join(errs, "; "))
	}
	w("| storage writes per operation (%d operations) | puts/op | deletes/op | writes/op | quiet interval (%s): puts, deletes | **writes/op, net of quiet** |", stCountN, "same length")
	w("|---|---|---|---|---|---|")
	for _, c := range st.counts {
		raw, net := c.perOp(c.ops), c.net()
		w("| %s | %.2f | %.2f | %.2f | %.0f, %.0f in %s | **%.2f** (%.2f + %.2f) |", c.name, raw.puts, raw.deletes, raw.writes(),
			c.quiet.puts, c.quiet.deletes, c.elapsed.Round(100*time.Millisecond), net.writes(), net.puts, net.deletes)
	}
	w("")
}

// writeSummary sets the headline figures of every storage side by side.
func (r *report) writeSummary(w func(string, ...any)) {
	if len(r.storages) < 2 {
		return
	}
	w("### Across storages\n")
	head, sep := "| figure |", "|---|"
	for _, st := range r.storages {
		head += " " + st.title + " |"
		sep += "---|"
	}
	w("%s\n%s", head, sep)
	row := func(label string, f func(st *storageResult) string) {
		line := "| " + label + " |"
		for _, st := range r.storages {
			line += " " + f(st) + " |"
		}
		w("%s", line)
	}
	lat := func(name string) func(*storageResult) string {
		return func(st *storageResult) string { return ms(st.res.p50(name)) }
	}
	tput := func(name string) func(*storageResult) string {
		return func(st *storageResult) string { return fmt.Sprintf("%.0f /s", st.res.tput(name)) }
	}
	ratio := func(a, b string) func(*storageResult) string {
		return func(st *storageResult) string {
			return fmt.Sprintf("%.2f×", float64(st.res.p50(a))/float64(st.res.p50(b)))
		}
	}
	tratio := func(a, b string) func(*storageResult) string {
		return func(st *storageResult) string { return fmt.Sprintf("%.2f", st.res.tput(a)/st.res.tput(b)) }
	}
	netWrites := func(i int) func(*storageResult) string {
		return func(st *storageResult) string {
			if i >= len(st.counts) {
				return "–"
			}
			return fmt.Sprintf("%.2f", st.counts[i].net().writes())
		}
	}
	row("carbon issuance p50, c=1", lat(cIssue1))
	row("ssh OTP issuance p50, c=1", lat(sIssue1))
	row("issuance p50 carbon/ssh OTP", ratio(cIssue1, sIssue1))
	row("carbon issuance, c=16", tput(cIssue16))
	row("ssh OTP issuance, c=16", tput(sIssue16))
	row("issuance throughput carbon/ssh OTP", tratio(cIssue16, sIssue16))
	row("carbon revocation p50, c=1", lat(cRev1))
	row("ssh OTP revocation p50, c=1", lat(sRev1))
	row("revocation throughput carbon/ssh OTP, c=16", tratio(cRev16, sRev16))
	row("carbon rotate-role p50, c=1", lat(cRot1))
	row("carbon rotate-role, c=16", tput(cRot16))
	row("storage writes per carbon issuance (net)", netWrites(0))
	row("storage writes per ssh OTP issuance (net)", netWrites(4))
	row("storage writes per carbon revocation (net)", netWrites(2))
	row("storage writes per rotation (net)", netWrites(3))
	w("")
}
