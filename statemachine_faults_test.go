package carbon

// The state machine's faults (statemachine_test.go): storage faults and
// stops inside requests, concurrent batches, ticks with rotations in
// flight, upstream behaviour that lasts, the groups of steps whose order
// matters, and Heal, after which the invariants must hold in full.

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"pgregory.net/rapid"
)

// ---------------------------------------------------------------------------
// Running requests with stops and concurrency.

// smStop is a stop of the running instance at its at-th storage call from
// now (background work counted, the model's own reads not): that call
// fails, or with hang waits until a fresh instance is up and then fails,
// and so does every later call of the instance.
type smStop struct {
	at   int
	ops  smStorageOp // the calls counted: writes, mostly
	hang bool
}

// drawStopAt draws where a stop comes: at the k-th write mostly (a stop
// between two writes is what matters), sometimes at the k-th call.
func drawStopAt(t *rapid.T) (int, smStorageOp) {
	if rapid.IntRange(0, 3).Draw(t, "stop_counts_reads") == 0 {
		return rapid.IntRange(0, 15).Draw(t, "stop_at_call"), smAllOps
	}
	return rapid.IntRange(0, 5).Draw(t, "stop_at_write"), smWrites
}

type smResult struct {
	o outcome
	// lost: a storage call of the request met the stop, so Vault never got
	// its answer. A request whose storage work was done when the instance
	// stopped (on a background call) got its answer through.
	lost bool
}

// execute runs requests on the running instance, one after the other or
// all at once, optionally with a stop, after which a fresh instance takes
// over. Their judges are left to the caller (on this goroutine).
func (m *model) execute(reqs []smRequest, concurrent bool, stop *smStop) []smResult {
	b, v := m.b, m.view
	// Background work of earlier requests first: a fault's call number
	// counts this step's calls only.
	quiesce(b, v)
	if stop != nil {
		v.armStop(stop.at, stop.ops, stop.hang)
	}
	results := make([]smResult, len(reqs))
	runOne := func(i int) {
		ctx, tr := tracing(m.ctx)
		o := reqs[i].run(ctx, b, v)
		results[i] = smResult{o: o, lost: tr.stopped.Load()}
		if !concurrent {
			// One after the other, as Vault's requests come: the
			// background work a request leaves (a spent WAL entry's
			// delete) runs before the next, so a stop's call number means
			// the same on replay.
			quiesce(b, v)
		}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	if concurrent {
		for i := range reqs {
			wg.Add(1)
			go func() { defer wg.Done(); <-start; runOne(i) }()
		}
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range reqs {
				runOne(i)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	close(start)
	if stop != nil {
		select {
		case <-done:
		case <-v.stopped:
		}
		m.stopInstance(b, v)
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		var labels []string
		for _, r := range reqs {
			labels = append(labels, r.label)
		}
		m.fatalf("I3: requests did not finish within 2 minutes (deadlock?): %s", strings.Join(labels, ", "))
	}
	return results
}

// stopInstance is what a plugin stop does: the old instance's storage is
// gone (if its stop did not fire yet, it fires now: the stop came right
// after the answers), Clean runs on it, and a fresh instance starts on the
// same storage. Its background work is left as it is; calls hung in the
// stop fail once the fresh instance is up.
func (m *model) stopInstance(old *backend, v *smView) {
	v.kill()
	cleaned := make(chan struct{})
	go func() { defer close(cleaned); old.clean(m.ctx) }()
	m.view = m.store.newView()
	m.b = m.startBackend()
	engineStartedLater(m.b)
	v.releaseHung()
	select {
	case <-cleaned:
	case <-time.After(30 * time.Second):
		m.fatalf("I3: Clean of a stopped instance did not return within 30s")
	}
	m.stopped = true
	m.unresolved = true
}

// runStopping runs requests one after the other with a stop armed.
func (m *model) runStopping(reqs []smRequest, stop smStop) {
	results := m.execute(reqs, false, &stop)
	for i, r := range reqs {
		r.judge(results[i].o, results[i].lost)
	}
}

// ---------------------------------------------------------------------------
// Storage faults and stops inside requests.

var smOpChoices = map[string]smStorageOp{
	"all": smAllOps, "writes": smWrites, "reads": smReads,
	"Put": smPut, "Delete": smDelete, "Get": smGet, "List": smList,
}

func drawOps(t *rapid.T) smStorageOp {
	return smOpChoices[rapid.SampledFrom([]string{"all", "all", "writes", "writes", "Put", "Delete", "reads", "Get", "List"}).Draw(t, "ops")]
}

// drawFaultable draws the request(s) a fault is put inside. It may skip.
func (m *model) drawFaultable(t *rapid.T) []smRequest {
	kind := rapid.SampledFrom([]string{
		"issue", "issue", "issue", "renew", "renew", "renew-after-raise", "revoke", "revoke",
		"rotate", "rotate", "tick", "tick", "tidy", "create-static", "adopt", "update-static",
		"delete-static", "write-role", "delete-config", "write-config", "issue-until-max",
	}).Draw(t, "faulty_request")
	switch kind {
	case "issue":
		return []smRequest{m.buildIssue(t)}
	case "renew":
		return []smRequest{m.buildRenew(t)}
	case "renew-after-raise":
		return m.buildRenewAfterMaxRaise(t)
	case "revoke":
		return []smRequest{m.buildRevoke(t)}
	case "rotate":
		return []smRequest{m.buildRotate(t)}
	case "tick":
		return []smRequest{m.tickRequest()}
	case "tidy":
		return []smRequest{m.buildTidy(t)}
	case "create-static":
		return []smRequest{m.buildCreateStatic(t, "")}
	case "adopt":
		return []smRequest{m.buildAdopt(t, false)}
	case "update-static":
		return []smRequest{m.buildUpdateStatic(t)}
	case "delete-static":
		return []smRequest{m.buildDeleteStatic(t)}
	case "write-role":
		return []smRequest{m.buildWriteRole(t)}
	case "delete-config":
		return []smRequest{m.buildDeleteConfig(t)}
	case "write-config":
		return []smRequest{m.buildWriteConfig(t)}
	}
	name := rapid.SampledFrom(roleNames).Draw(t, "role")
	r := m.roles[name]
	if r == nil || r.maxKeys == 0 {
		t.Skip("no capped role")
	}
	var reqs []smRequest
	for i := 0; i <= r.maxKeys; i++ {
		reqs = append(reqs, m.issueRequest(name, 0))
	}
	return reqs
}

// drawRequestFault draws a fault for the requests of one step: "" (none),
// "fail" (the at-th storage call and some after it fail) or "stop".
type smRequestFault struct {
	kind  string
	at    int
	hang  bool
	ops   smStorageOp
	count int
}

// drawFailAt draws the first call a k-th-call storage fault fails.
func drawFailAt(t *rapid.T, ops smStorageOp) int {
	if ops&smReads == 0 {
		return rapid.IntRange(0, 5).Draw(t, "fail_at_write")
	}
	return rapid.IntRange(0, 15).Draw(t, "fail_at_call")
}

func (m *model) drawRequestFault(t *rapid.T, noneWeight int) smRequestFault {
	var kinds []string
	for range noneWeight {
		kinds = append(kinds, "")
	}
	if m.faults.storage {
		kinds = append(kinds, "fail", "fail")
	}
	if m.faults.stop {
		kinds = append(kinds, "stop", "stop")
	}
	if len(kinds) == 0 {
		return smRequestFault{}
	}
	f := smRequestFault{kind: rapid.SampledFrom(kinds).Draw(t, "fault_kind")}
	switch f.kind {
	case "fail":
		f.ops = drawOps(t)
		f.at = drawFailAt(t, f.ops)
		f.count = rapid.SampledFrom([]int{1, 1, 2, 1000}).Draw(t, "failures")
	case "stop":
		f.at, f.ops = drawStopAt(t)
		f.hang = rapid.Bool().Draw(t, "hang")
	}
	return f
}

// runWithFault runs requests one after the other with the fault inside.
func (m *model) runWithFault(reqs []smRequest, f smRequestFault) {
	switch f.kind {
	case "fail":
		quiesce(m.b, m.view)
		m.store.arm(&smStoragePlan{ops: f.ops, from: f.at, n: f.count, step: true})
		m.do(reqs...)
	case "stop":
		m.runStopping(reqs, smStop{at: f.at, ops: f.ops, hang: f.hang})
	default:
		m.do(reqs...)
	}
}

// FaultyRequest runs one request (or a short group) with a storage fault or
// a stop at a drawn storage call inside it.
func (m *model) FaultyRequest(t *rapid.T) {
	reqs := m.drawFaultable(t)
	m.runWithFault(reqs, m.drawRequestFault(t, 0))
}

// StorageFaultWindow fails calls under one key prefix (one the engine was
// seen using) for the next few steps, background work included.
func (m *model) StorageFaultWindow(t *rapid.T) {
	prefixes := m.store.knownPrefixes()
	if len(prefixes) == 0 {
		t.Skip("no storage used yet")
	}
	prefix := rapid.SampledFrom(prefixes).Draw(t, "prefix")
	ops := drawOps(t)
	steps := rapid.SampledFrom([]int{1, 2, 3, 5}).Draw(t, "window_steps")
	m.store.arm(&smStoragePlan{ops: ops, prefix: prefix})
	m.storageSteps = steps + 1 // the action's own check counts one
}

// ---------------------------------------------------------------------------
// Concurrency.

// ConcurrentBatch runs at least two issuances and a few renewals, revokes,
// rotations, ticks, tidies and adoptions at once, on a fresh instance or
// the running one, with storage slowed down to widen race windows, and
// maybe a stop or a storage fault among them. The invariants are checked
// on the outcome.
func (m *model) ConcurrentBatch(t *rapid.T) {
	roles := sortedKeys(m.roles)
	if len(roles) == 0 && len(m.statics) == 0 {
		t.Skip("nothing to run concurrently")
	}
	fresh := rapid.Bool().Draw(t, "fresh_instance")
	delay := smDelay(rapid.IntRange(int(smNoDelay), int(smSlowPuts)).Draw(t, "storage_delay"))
	var stop *smStop
	if m.faults.stop && rapid.IntRange(0, 2).Draw(t, "with_stop") == 0 {
		stop = &smStop{at: rapid.IntRange(0, 20).Draw(t, "stop_at_write"), ops: smWrites, hang: rapid.Bool().Draw(t, "hang")}
	}
	var fail *smStoragePlan
	if m.faults.storage && rapid.IntRange(0, 3).Draw(t, "with_storage_fault") == 0 {
		fail = &smStoragePlan{ops: smWrites, from: rapid.IntRange(0, 20).Draw(t, "fail_at_write"), n: rapid.SampledFrom([]int{1, 2}).Draw(t, "failures"), step: true}
	}
	var issues []string
	if len(roles) > 0 {
		for range rapid.IntRange(2, 4).Draw(t, "issuers") {
			issues = append(issues, rapid.SampledFrom(roles).Draw(t, "role"))
		}
	}
	type pending struct {
		kind string
		req  func() (smRequest, bool)
	}
	var others []pending
	adopting := ""
	for range rapid.IntRange(0, 4).Draw(t, "others") {
		kind := rapid.SampledFrom([]string{"renew", "renew", "revoke", "revoke", "rotate", "rotate", "tick", "tidy", "adopt", "static-creds"}).Draw(t, "batch_op")
		switch kind {
		case "renew", "revoke":
			if len(m.leases) == 0 {
				continue
			}
			l := m.leases[rapid.IntRange(0, len(m.leases)-1).Draw(t, "lease")]
			if kind == "renew" {
				inc := rapid.SampledFrom([]time.Duration{0, time.Hour, 6 * time.Hour}).Draw(t, "increment")
				others = append(others, pending{kind, func() (smRequest, bool) { return m.renewRequest(l, inc), true }})
			} else {
				others = append(others, pending{kind, func() (smRequest, bool) { return m.revokeRequest(l), true }})
			}
		case "rotate":
			name := rapid.SampledFrom(staticNames).Draw(t, "static")
			others = append(others, pending{kind, func() (smRequest, bool) { return m.rotateRequest(name), name != adopting }})
		case "tick":
			others = append(others, pending{kind, func() (smRequest, bool) { return m.tickRequest(), true }})
		case "tidy":
			data := map[string]any{}
			if minAge := rapid.SampledFrom([]int{-1, 30, 0}).Draw(t, "min_age"); minAge >= 0 {
				data["min_age"] = minAge
			}
			// Right after a stop, the instance says it started a moment
			// later than it did (engineStartedLater); a tidy running with
			// its issuances would take their WAL entries for stale ones.
			others = append(others, pending{kind, func() (smRequest, bool) { return m.tidyRequest(data), !engineStartsLater(m.b) }})
		case "adopt":
			if adopting != "" {
				continue
			}
			req, name, ok := m.drawBatchAdopt(t)
			if ok {
				adopting = name
				others = append(others, pending{kind, func() (smRequest, bool) { return req, true }})
			}
		case "static-creds":
			name := rapid.SampledFrom(staticNames).Draw(t, "static")
			others = append(others, pending{kind, func() (smRequest, bool) {
				return m.logical("read static creds", logical.ReadOperation, "static-creds/"+name, nil, func(o outcome, lost bool) { m.expectNo500(o, false) }), true
			}})
		}
	}
	if len(issues)+len(others) < 2 {
		t.Skip("fewer than two requests")
	}

	// Everything is drawn; from here on, effects.
	if fresh {
		// A fresh instance (its live counts not built yet). Its start is
		// taken as it comes: the batch needs no deterministic WAL age.
		m.b.clean(m.ctx)
		m.view.kill()
		m.view = m.store.newView()
		m.b = m.startBackend()
	}
	perRole := map[string]int{}
	for _, name := range issues {
		perRole[name]++
	}
	liveBefore := map[string]int{}
	for name := range perRole {
		liveBefore[name] = m.liveKeysOfRole(name, false)
	}
	var reqs []smRequest
	for _, name := range issues {
		reqs = append(reqs, m.issueRequestInBatch(name, perRole[name]-1))
	}
	for _, p := range others {
		if r, ok := p.req(); ok {
			reqs = append(reqs, r)
		}
	}
	m.store.setDelay(delay)
	if fail != nil {
		quiesce(m.b, m.view)
		m.store.arm(fail)
	}
	m.batch = true
	leasesBefore := slices.Clone(m.leases)
	wasRevoking := map[*modelLease]bool{}
	for _, l := range leasesBefore {
		wasRevoking[l] = l.revoking
	}
	results := m.execute(reqs, true, stop)
	m.store.setDelay(smNoDelay)
	// Issuances first: max_keys is judged on what the batch began with.
	for i, r := range reqs {
		r.judge(results[i].o, results[i].lost)
	}
	m.checkBatchMaxKeys(perRole, liveBefore, leasesBefore, wasRevoking)
}

// issueRequestInBatch is an issuance among others of the same role that
// run at once: others hold places of max_keys meanwhile.
func (m *model) issueRequestInBatch(name string, others int) smRequest {
	r := m.roles[name]
	all := m.liveKeysOfRole(name, true)
	return m.logical("issue "+name, logical.ReadOperation, "creds/"+name, nil, func(o outcome, lost bool) {
		m.judgeIssue(name, r, o, lost, -1, all+others)
	})
}

// checkBatchMaxKeys: a batch never leaves a capped role with more live keys
// than max_keys, counting the revokes that finished in it, and those that
// failed or lost their answer in it (the engine may have given their place
// back before the failure).
func (m *model) checkBatchMaxKeys(perRole, liveBefore map[string]int, leasesBefore []*modelLease, wasRevoking map[*modelLease]bool) {
	for name := range perRole {
		r := m.roles[name]
		if r == nil || r.maxKeys == 0 {
			continue
		}
		revoked, issued := 0, 0
		for _, l := range leasesBefore {
			if l.role == name && !wasRevoking[l] && (l.revoking || !slices.Contains(m.leases, l)) {
				revoked++
			}
		}
		for _, l := range m.leases {
			if l.role == name && !slices.Contains(leasesBefore, l) {
				issued++
			}
		}
		// A role may hold more than a lowered max_keys; it must not issue
		// past it.
		if issued > 0 && liveBefore[name]-revoked+issued > r.maxKeys {
			m.fatalf("a concurrent batch issued %d keys of role %s, which held %d live keys (%d revoked in the batch): beyond max_keys=%d", issued, name, liveBefore[name], revoked, r.maxKeys)
		}
	}
}

// drawBatchAdopt draws an adoption of a released or foreign key into a free
// static-role name, or reports there is none; it never skips.
func (m *model) drawBatchAdopt(t *rapid.T) (smRequest, string, bool) {
	var free []string
	for _, n := range staticNames {
		if m.statics[n] == nil {
			free = append(free, n)
		}
	}
	var candidates []heldKey
	for k := range m.released {
		candidates = append(candidates, k)
	}
	for k := range m.foreign {
		candidates = append(candidates, k)
	}
	candidates = slices.DeleteFunc(candidates, func(k heldKey) bool {
		_, up := m.accounts[k.account].fake.Key(k.id)
		return m.maybeGone[k] || !up || m.configOf(k.account) == ""
	})
	if len(free) == 0 || len(candidates) == 0 {
		return smRequest{}, "", false
	}
	slices.SortFunc(candidates, func(a, b heldKey) int { return m.seen[a] - m.seen[b] })
	name := rapid.SampledFrom(free).Draw(t, "static")
	k := rapid.SampledFrom(candidates).Draw(t, "adopt")
	up, _ := m.accounts[k.account].fake.Key(k.id)
	config := m.configOf(k.account)
	s := &modelStaticRole{config: config, account: k.account, project: up.Project.ID}
	data, valid := m.staticParams(t, s)
	data["config"], data["project_id"], data["key_id"] = config, s.project, k.id
	return m.createStaticRequest(name, s, data, valid, k), name, true
}

// configOf is a connection to the account, if any.
func (m *model) configOf(acct string) string {
	for _, n := range configNames {
		if m.configs[n] == acct {
			return n
		}
	}
	return ""
}

// TickInFlight starts a scheduler tick and, while its rotations are in
// flight, reloads the plugin (Clean meets them), stops it at a drawn
// storage call, or rotates a role on request.
func (m *model) TickInFlight(t *rapid.T) {
	if len(m.statics) == 0 {
		t.Skip("no static role")
	}
	variants := []string{"reload", "rotate"}
	if m.faults.stop {
		variants = append(variants, "stop", "stop")
	}
	variant := rapid.SampledFrom(variants).Draw(t, "in_flight")
	advance := rapid.SampledFrom([]time.Duration{0, 5 * time.Second, 30 * time.Second, 10 * time.Minute, 2 * time.Hour}).Draw(t, "advance")
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	at, ops := drawStopAt(t)
	hang := rapid.Bool().Draw(t, "hang")

	m.advance(advance)
	m.midStep()
	b, v := m.b, m.view
	m.batch = true // rotations may interleave: settle them from what the engine reports
	switch variant {
	case "reload":
		b.startDueRotations(v)
		m.reload()
	case "rotate":
		rotate := m.rotateRequest(name)
		b.startDueRotations(v)
		o := rotate.run(m.ctx, b, v)
		b.scheduler.inFlight.Wait()
		rotate.judge(o, false)
	default:
		v.armStop(at, ops, hang)
		b.startDueRotations(v)
		done := make(chan struct{})
		go func() { b.scheduler.inFlight.Wait(); close(done) }()
		select {
		case <-done:
		case <-v.stopped:
		}
		m.stopInstance(b, v)
		<-done
	}
}

// ---------------------------------------------------------------------------
// Upstream faults.

// UpstreamFault makes an account misbehave for the next few steps.
func (m *model) UpstreamFault(t *rapid.T) {
	a := m.accounts[rapid.SampledFrom([]string{"A", "B"}).Draw(t, "fault_account")]
	n := rapid.IntRange(1, 3).Draw(t, "fault_count")
	// Slow faults (a second a request) last one step; the others two.
	window := smFaultSteps
	switch rapid.SampledFrom([]string{"503", "500", "429", "latency", "commit-then-503", "commit-then-hang", "missing-403", "delete-503", "garbage"}).Draw(t, "fault") {
	case "503":
		a.fake.FailNext(n, http.StatusServiceUnavailable)
	case "500":
		a.fake.FailNext(n, http.StatusInternalServerError)
	case "429":
		a.fake.SetRetryAfter(time.Second)
		a.fake.FailNext(n, http.StatusTooManyRequests)
		window = 1
	case "latency":
		a.fake.SetLatency(1100 * time.Millisecond) // past the 1s request_timeout
		window = 1
	case "commit-then-503":
		a.fake.CommitThenFail(n, http.StatusServiceUnavailable)
	case "commit-then-hang":
		a.fake.SetCommitThenHang(true)
	case "missing-403":
		a.fake.SetMissingStatus(http.StatusForbidden)
	case "delete-503":
		a.fake.FailNextMethod(http.MethodDelete, n, http.StatusServiceUnavailable)
	case "garbage":
		a.fake.SetGarbage(true)
	}
	m.faultSteps = window + 1 // the fault action's own check counts one
}

// AbandonedCreate: in the next step the account's creates are answered
// 504 by its gateway and take effect only once the step is over, after any
// clean-up the engine did at once: the key (or project) appears when the
// request is long over.
func (m *model) AbandonedCreate(t *rapid.T) {
	a := m.accounts[rapid.SampledFrom([]string{"A", "B"}).Draw(t, "fault_account")]
	a.fake.SetLandLate(true)
	m.faultSteps = 2
}

func (m *model) clearUpstreamFaults() {
	for _, a := range m.accounts {
		a.fake.FailNext(0, 0)
		a.fake.SetLatency(0)
		a.fake.SetLandLate(false)
		a.fake.SetRetryAfter(0)
		a.fake.CommitThenFail(0, 0)
		a.fake.SetCommitThenHang(false)
		a.fake.SetGarbage(false)
		a.fake.SetCompleteAbandoned(false)
		a.fake.SetMissingStatus(a.missingStatus) // a lasting quirk stays
	}
	m.faultSteps = 0
}

// LastingQuirk: from now on, an account answers ids that do not exist with
// 403 (or 400) rather than 404, as some upstreams do. Not a fault:
// the engine must confirm absence and carry on, never answer a 5xx.
func (m *model) LastingQuirk(t *rapid.T) {
	a := m.accounts[rapid.SampledFrom([]string{"A", "B"}).Draw(t, "quirk_account")]
	a.missingStatus = rapid.SampledFrom([]int{http.StatusForbidden, http.StatusForbidden, http.StatusBadRequest}).Draw(t, "missing_status")
	a.fake.SetMissingStatus(a.missingStatus)
}

// operatorTargets are the keys an operator might delete by hand, in a
// stable order.
func (m *model) operatorTargets() []heldKey {
	var keys []heldKey
	for _, l := range m.leases {
		keys = append(keys, l.key)
	}
	for _, s := range m.statics {
		keys = append(keys, s.keys()...)
	}
	for k := range m.released {
		keys = append(keys, k)
	}
	keys = slices.DeleteFunc(keys, func(k heldKey) bool {
		_, up := m.accounts[k.account].fake.Key(k.id)
		return !up
	})
	slices.SortFunc(keys, func(a, b heldKey) int { return m.seen[a] - m.seen[b] })
	return slices.Compact(keys)
}

// OperatorDeletesKey: an operator deletes a key the mount deals with in
// the dashboard (a lease's per-lease project, sometimes). Not a fault: the
// engine must carry on, never answer a 5xx.
func (m *model) OperatorDeletesKey(t *rapid.T) {
	targets := m.operatorTargets()
	if len(targets) == 0 {
		t.Skip("no key to delete")
	}
	k := rapid.SampledFrom(targets).Draw(t, "operator_deletes")
	project := rapid.Bool().Draw(t, "whole_project")
	m.operatorDelete(k, project)
}

func (m *model) operatorDelete(k heldKey, wholeProject bool) {
	fake := m.accounts[k.account].fake
	for _, l := range m.leases {
		if l.key == k && l.perLease && wholeProject {
			fake.RemoveProject(l.project)
		}
	}
	fake.RemoveKey(k.id)
	m.maybeGone[k] = true
}

// drawLiveLease draws a lease that is not being revoked, or skips.
func (m *model) drawLiveLease(t *rapid.T) *modelLease {
	var live []*modelLease
	for _, l := range m.leases {
		if !l.revoking {
			live = append(live, l)
		}
	}
	if len(live) == 0 {
		t.Skip("no live lease")
	}
	l := live[rapid.IntRange(0, len(live)-1).Draw(t, "lease")]
	return l
}

// OperatorDeleteThenRevoke: the key of a live lease is deleted by hand
// (maybe on an account answering 403 for missing ids), then the lease is
// revoked: that must succeed.
func (m *model) OperatorDeleteThenRevoke(t *rapid.T) {
	l := m.drawLiveLease(t)
	status := rapid.SampledFrom([]int{0, http.StatusForbidden, http.StatusBadRequest}).Draw(t, "missing_status")
	wholeProject := rapid.Bool().Draw(t, "whole_project")
	if status != 0 {
		a := m.accounts[l.key.account]
		a.missingStatus = status
		a.fake.SetMissingStatus(status)
	}
	m.operatorDelete(l.key, wholeProject)
	m.do(m.revokeRequest(l))
}

// RevokeWhileDeletesFail: the account of a live lease answers its deletes
// 503 past every retry, and the lease is revoked: the revoke must fail and
// leave the lease to Vault's retry (the judge checks that a revoke that
// answered left no key upstream).
func (m *model) RevokeWhileDeletesFail(t *rapid.T) {
	l := m.drawLiveLease(t)
	a := m.accounts[l.key.account]
	a.fake.FailNextMethod(http.MethodDelete, 10, http.StatusServiceUnavailable)
	m.faultSteps = smFaultSteps + 1
	m.do(m.revokeRequest(l))
}

// ExpiredRevokeDuringTidy: a lease whose revocations failed until long
// past its expiry (its account refused deletes) is revoked again by Vault
// while tidy, finding the key expired, deletes it too: the key goes once,
// and the live counts that max_keys is checked against stay exact.
func (m *model) ExpiredRevokeDuringTidy(t *rapid.T) {
	l := m.drawLiveLease(t)
	delay := smDelay(rapid.IntRange(int(smNoDelay), int(smSlowPuts)).Draw(t, "storage_delay"))
	fake := m.accounts[l.key.account].fake
	fake.FailNextMethod(http.MethodDelete, 1000, http.StatusServiceUnavailable)
	m.faultSteps = smFaultSteps + 1
	// Past every max_ttl the model draws, and tidy's grace after it.
	m.advance(96 * time.Hour)
	m.midStep()
	m.clearUpstreamFaults()
	m.store.setDelay(delay)
	m.batch = true
	reqs := []smRequest{m.revokeRequest(l), m.tidyRequest(map[string]any{"min_age": 0})}
	results := m.execute(reqs, true, nil)
	m.store.setDelay(smNoDelay)
	for i, r := range reqs {
		r.judge(results[i].o, results[i].lost)
	}
	m.midStep()
	m.settle()
	m.checkLiveCounts()
}

// OverlapEndWhileDeletesFail: a static role (created manual-only if the
// name is free) is rotated, its overlap ends, and the scheduler ticks while
// the account refuses deletes: the replaced key stays the role's, listed in
// keys/ (checkInventory), until a later tick deletes it.
func (m *model) OverlapEndWhileDeletesFail(t *rapid.T) {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	if m.statics[name] == nil {
		req, ok := m.createManualStatic(t, name, true)
		if !ok {
			return
		}
		m.do(req)
		m.midStep()
	}
	s := m.statics[name]
	if s == nil {
		return
	}
	m.do(m.rotateRequest(name))
	m.midStep()
	m.advance(rapid.SampledFrom([]time.Duration{10 * time.Minute, 2 * time.Hour}).Draw(t, "past_overlap"))
	m.midStep()
	m.accounts[s.account].fake.FailNextMethod(http.MethodDelete, 10, http.StatusServiceUnavailable)
	m.faultSteps = smFaultSteps + 1
	m.do(m.tickRequest())
}

// ---------------------------------------------------------------------------
// The orders that matter.

// midStep is what happens between two steps of a group: Vault's expiry and
// revoke retries, the model's sync, and I1.
func (m *model) midStep() {
	m.land()
	m.expireLeases()
	m.syncStatics()
	m.snapshotUpstream()
	m.checkHeldKeysExist()
}

// The groups set up what they need (a connection, a role, a lease) rather
// than skip: without it, the orders that matter would come up rarely.

// ensureConfig returns a connection, writing one if none exists ("" if
// that failed).
func (m *model) ensureConfig(t *rapid.T) string {
	for _, n := range configNames {
		if m.configs[n] != "" {
			return n
		}
	}
	name := rapid.SampledFrom(configNames).Draw(t, "setup_config")
	acct := rapid.SampledFrom([]string{"A", "B"}).Draw(t, "setup_account")
	m.do(m.logical("setup config", logical.UpdateOperation, "config/"+name, m.configData(acct), func(o outcome, lost bool) {
		m.expectNo500(o, false)
		if o.ok() {
			m.configs[name] = acct
		} else if !m.faultActive() {
			m.fatalf("valid config write refused: %s", o)
		}
	}))
	m.midStep()
	if m.configs[name] == "" {
		return ""
	}
	return name
}

// ensureRole returns a dynamic role, writing one (short max_ttl, so that
// renewals move the recorded expiry) if none exists ("" if that failed).
func (m *model) ensureRole(t *rapid.T) string {
	for _, n := range roleNames {
		if r := m.roles[n]; r != nil && m.configs[r.config] != "" {
			return n
		}
	}
	config := m.ensureConfig(t)
	if config == "" {
		return ""
	}
	name := rapid.SampledFrom(roleNames).Draw(t, "setup_role")
	r := &modelRole{
		config:   config,
		ttl:      rapid.SampledFrom([]time.Duration{0, 5 * time.Minute}).Draw(t, "setup_ttl"),
		maxTTL:   rapid.SampledFrom([]time.Duration{10 * time.Minute, 2 * time.Hour}).Draw(t, "setup_max_ttl"),
		perLease: rapid.Bool().Draw(t, "setup_per_lease"),
		maxKeys:  rapid.SampledFrom([]int{0, 0, 2}).Draw(t, "setup_max_keys"),
	}
	if !r.perLease {
		r.project = rapid.SampledFrom(m.projectsOf(m.configs[config])).Draw(t, "setup_project")
	}
	data := map[string]any{
		"config": config, "ttl": int(r.ttl.Seconds()), "max_ttl": int(r.maxTTL.Seconds()),
		"max_keys": r.maxKeys, "project_per_lease": r.perLease, "project_id": r.project,
	}
	m.do(m.logical("setup role", logical.UpdateOperation, "roles/"+name, data, func(o outcome, lost bool) {
		m.expectNo500(o, false)
		switch {
		case o.ok():
			m.roles[name] = r
		case !m.faultActive():
			m.fatalf("valid role write refused: %s", o)
		default:
			m.resyncRole(name)
		}
	}))
	m.midStep()
	if m.roles[name] == nil {
		return ""
	}
	return name
}

// ensureLease returns a live lease whose role exists: one drawn from those
// there are, or a new one (nil if that failed).
func (m *model) ensureLease(t *rapid.T) *modelLease {
	var live []*modelLease
	for _, l := range m.leases {
		if !l.revoking && m.roles[l.role] != nil && m.now().Before(l.expires) {
			live = append(live, l)
		}
	}
	if len(live) > 0 && rapid.Bool().Draw(t, "existing_lease") {
		return live[rapid.IntRange(0, len(live)-1).Draw(t, "lease")]
	}
	role := m.ensureRole(t)
	if role == "" {
		return nil
	}
	before := len(m.leases)
	m.do(m.issueRequest(role, 0))
	m.midStep()
	if len(m.leases) > before {
		if l := m.leases[len(m.leases)-1]; l.role == role && !l.revoking {
			return l
		}
	}
	return nil
}

// drawTargetedFault draws a fault for one request whose writes are few:
// a storage fault or stop at one of its first writes, or none.
func (m *model) drawTargetedFault(t *rapid.T, noneWeight int) smRequestFault {
	f := m.drawRequestFault(t, noneWeight)
	if f.kind != "" && f.ops&smReads == 0 {
		f.at = rapid.IntRange(0, 3).Draw(t, "at_write")
	}
	return f
}

// RenewClockTidy: raise a role's max_ttl, renew one of its leases past the
// max_ttl it was issued under (maybe with a storage fault or a stop among
// the renewal's writes), renew again, jump past the first expiry and
// tidy's grace, and tidy. The key of a lease renewed past its first expiry
// must stay.
func (m *model) RenewClockTidy(t *rapid.T) {
	l := m.ensureLease(t)
	if l == nil {
		return
	}
	r := m.roles[l.role]
	increment := rapid.SampledFrom([]time.Duration{time.Hour, 6 * time.Hour}).Draw(t, "increment")
	f := m.drawTargetedFault(t, 2)
	again := rapid.Bool().Draw(t, "renew_again")
	jump := rapid.SampledFrom([]time.Duration{70 * time.Minute, 2 * time.Hour, 5 * time.Hour, 25 * time.Hour}).Draw(t, "jump")
	data := map[string]any{}
	if minAge := rapid.SampledFrom([]int{-1, 0}).Draw(t, "min_age"); minAge >= 0 {
		data["min_age"] = minAge
	}

	if r.maxTTL != 48*time.Hour {
		raise := map[string]any{"max_ttl": int((48 * time.Hour).Seconds()), "ttl": int(time.Hour.Seconds())}
		m.do(m.logical("raise max_ttl", logical.UpdateOperation, "roles/"+l.role, raise, func(o outcome, lost bool) {
			m.expectNo500(o, false)
			if o.ok() {
				r.maxTTL, r.ttl = 48*time.Hour, time.Hour
			} else if !m.faultActive() {
				m.fatalf("raising max_ttl refused: %s", o)
			}
		}))
		m.midStep()
	}
	m.runWithFault([]smRequest{m.renewRequest(l, increment)}, f)
	m.midStep()
	if again && slices.Contains(m.leases, l) && !l.revoking {
		m.do(m.renewRequest(l, 6*time.Hour))
		m.midStep()
	}
	m.advance(jump)
	m.midStep()
	m.do(m.tidyRequest(data))
}

// createManualStatic is the creation of manual-only static role name on
// some connection (written if there is none; false if that failed), with
// delete_key_on_remove as drawn, or false unless drawDelete.
func (m *model) createManualStatic(t *rapid.T, name string, drawDelete bool) (smRequest, bool) {
	config := m.ensureConfig(t)
	if config == "" {
		return smRequest{}, false
	}
	s := &modelStaticRole{config: config, account: m.configs[config]}
	s.project = rapid.SampledFrom(m.projectsOf(s.account)).Draw(t, "project")
	data, valid := m.staticParamsMode(t, s, "manual")
	data["config"], data["project_id"] = config, s.project
	if !drawDelete {
		s.deleteOnRemove = false
		data["delete_key_on_remove"] = false
	}
	return m.createStaticRequest(name, s, data, valid, heldKey{}), true
}

// ManualRotateTick: a static role (created manual-only if the name is
// free) is rotated on request once or twice (maybe with a storage fault or
// a stop inside), the clock moves, and the scheduler ticks: a manual-only
// role is never rotated by the scheduler, and previous keys go at the end
// of their overlap.
func (m *model) ManualRotateTick(t *rapid.T) {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	var create []smRequest
	if m.statics[name] == nil {
		req, ok := m.createManualStatic(t, name, true)
		if !ok {
			return
		}
		create = append(create, req)
	}
	rotations := rapid.IntRange(1, 2).Draw(t, "rotations")
	f := m.drawRequestFault(t, 2)
	if f.kind != "" && f.ops&smReads == 0 {
		f.at = rapid.IntRange(0, 6).Draw(t, "at_write")
	}
	jump := rapid.SampledFrom([]time.Duration{5 * time.Second, 30 * time.Second, 10 * time.Minute, 2 * time.Hour}).Draw(t, "jump")

	m.do(create...)
	m.midStep()
	var rotate []smRequest
	for range rotations {
		rotate = append(rotate, m.rotateRequest(name))
	}
	m.runWithFault(rotate[:1], f)
	m.midStep()
	if len(rotate) > 1 {
		m.do(m.rotateRequest(name))
		m.midStep()
	}
	m.advance(jump)
	m.midStep()
	m.do(m.tickRequest())
}

// ReleaseThenAdopt: a static role that keeps its keys on removal (made
// so, or created so) is maybe rotated, deleted, and its key adopted by
// another role, each maybe with a storage fault or a stop inside; then
// maybe the rollback manager's min age passes, and tidy runs. A released
// key stays upstream until a role adopts it; a WAL entry left by the
// rotation never rolls back a key that was released since.
func (m *model) ReleaseThenAdopt(t *rapid.T) {
	name := rapid.SampledFrom(staticNames).Draw(t, "static")
	if s := m.statics[name]; s == nil {
		req, ok := m.createManualStatic(t, name, false)
		if !ok {
			return
		}
		m.do(req)
	} else if s.deleteOnRemove {
		m.do(m.logical("keep keys on removal", logical.UpdateOperation, "static-roles/"+name, map[string]any{"delete_key_on_remove": false}, func(o outcome, lost bool) {
			m.expectNo500(o, false)
			switch {
			case lost || (!o.ok() && m.faultActive()):
				next := *s
				next.deleteOnRemove = false
				m.intents[name] = &staticIntent{op: "update", role: &next}
			case o.ok():
				s.deleteOnRemove = false
			default:
				m.fatalf("setting delete_key_on_remove=false refused: %s", o)
			}
		}))
	}
	m.midStep()
	if m.statics[name] == nil {
		return
	}
	if rapid.Bool().Draw(t, "rotate_first") {
		m.runWithFault([]smRequest{m.rotateRequest(name)}, m.drawRequestFault(t, 1))
		m.midStep()
	}
	s := m.statics[name]
	if s == nil {
		return
	}
	m.runWithFault([]smRequest{m.deleteStaticRequest(name)}, m.drawRequestFault(t, 1))
	m.midStep()
	if m.statics[name] != nil || !m.released[s.current] {
		return
	}
	other := ""
	for _, n := range staticNames {
		if m.statics[n] == nil && m.intents[n] == nil {
			other = n
		}
	}
	if other != "" {
		m.runWithFault([]smRequest{m.adoptRequest(t, other, s.current, false)}, m.drawRequestFault(t, 1))
		m.midStep()
	}
	if rapid.Bool().Draw(t, "after_rollback_age") {
		m.advance(walRollbackMinAge)
		m.midStep()
	}
	m.do(m.tidyRequest(map[string]any{"min_age": 0}))
}

// TidyDuringIssuance: an issuance's create has taken effect upstream and
// its answer is slow; meanwhile the clock moves (or not) and tidy runs
// with a small min_age. The key is the issuance's, not an orphan: its
// block of names is in flight, and a name of the second tidy started in is
// never old enough.
func (m *model) TidyDuringIssuance(t *rapid.T) {
	name := m.ensureRole(t)
	if name == "" {
		return
	}
	// Right after a stop the instance says it started a moment later
	// (engineStartedLater); a block it wrote before then would look like
	// its predecessor's to the tidy, which no real instance can write.
	// Say it started at the start of this second instead, as a quick real
	// restart does: the predecessor's entries of this second then wait for
	// the rollback manager.
	if engineStartsLater(m.b) {
		m.b.startedAt = time.Now().Truncate(time.Second)
	}
	jump := rapid.SampledFrom([]time.Duration{0, 0, 2 * time.Second, 30 * time.Second}).Draw(t, "jump")
	minAge := rapid.SampledFrom([]int{0, 0, 1}).Draw(t, "min_age")
	fake := m.accounts[m.configs[m.roles[name].config]].fake
	keys, projects := len(fake.Keys()), len(fake.Projects())
	release := fake.HoldCreateAnswers()
	defer release()
	issue := m.issueRequest(name, 0)
	b, v := m.b, m.view
	issued := make(chan outcome, 1)
	go func() { issued <- issue.run(m.ctx, b, v) }()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if len(fake.Keys()) > keys || len(fake.Projects()) > projects || len(issued) > 0 {
			break
		}
	}
	m.clock.Advance(jump)
	tidy := m.tidyRequest(map[string]any{"min_age": minAge})
	tidied := tidy.run(m.ctx, b, v)
	release()
	issue.judge(<-issued, false)
	tidy.judge(tidied, false)
	m.midStep()
}

// checkLiveCounts: once healed and settled, the live counts that max_keys
// is checked against are those of keys/, role by role, and no issuance
// slot is held.
func (m *model) checkLiveCounts() {
	want := map[string]int{}
	for _, k := range m.listKeys() {
		if k.kind == keyKindDynamic {
			want[roleCountKey(keyKindDynamic, k.role)]++
		}
	}
	c := &m.b.liveCounts
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.built {
		return
	}
	for _, key := range sortedKeys(want) {
		if c.byRole[key] != want[key] {
			m.fatalf("I4: the live count of %s is %d; keys/ lists %d", key, c.byRole[key], want[key])
		}
	}
	for _, key := range sortedKeys(c.byRole) {
		if strings.HasPrefix(key, keyKindDynamic+"/") && c.byRole[key] != want[key] {
			m.fatalf("I4: the live count of %s is %d; keys/ lists %d", key, c.byRole[key], want[key])
		}
	}
	if len(c.slots) != 0 {
		m.fatalf("I4: issuance slots %v are held with no issuance in flight", c.slots)
	}
}

// IssueStopTidy: a burst of issuances with a stop at a drawn storage call
// inside, then tidy (maybe after the rollback manager's min age): the keys
// of the leases Vault holds must stay, and the rest must go.
func (m *model) IssueStopTidy(t *rapid.T) {
	name := m.ensureRole(t)
	if name == "" {
		return
	}
	n := rapid.IntRange(1, 3).Draw(t, "burst")
	at, ops := drawStopAt(t)
	hang := rapid.Bool().Draw(t, "hang")
	data := map[string]any{}
	if minAge := rapid.SampledFrom([]int{-1, 0, 0, 30}).Draw(t, "min_age"); minAge >= 0 {
		data["min_age"] = minAge
	}
	rollback := rapid.Bool().Draw(t, "after_rollback_age")

	var reqs []smRequest
	for range n {
		reqs = append(reqs, m.issueRequest(name, 0))
	}
	m.runStopping(reqs, smStop{at: at, ops: ops, hang: hang})
	m.midStep()
	if rollback {
		m.advance(walRollbackMinAge)
		m.midStep()
	}
	m.do(m.tidyRequest(data))
}

// ---------------------------------------------------------------------------
// Healing.

// Heal: every fault switches off, background work finishes, Vault retries
// failed revokes, its rollback manager runs and an operator runs tidy. Then
// the invariants hold in full.
func (m *model) Heal(*rapid.T) { m.heal() }

func (m *model) heal() {
	m.land()
	m.clearUpstreamFaults()
	m.store.disarmAll()
	m.storageSteps = 0
	m.store.setDelay(smNoDelay)
	m.settle()
	// A failed Initialize is retried until it succeeds, which it does
	// within milliseconds of the faults ending.
	for deadline := time.Now().Add(10 * time.Second); initRetrying(m.b); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			m.fatalf("Initialize still failing 10s after the faults ended")
		}
	}
	m.expireLeases()
	m.rollbackManager(true)
	// Healing takes a while: the scheduler's back-offs run out and it does
	// what is due (a failed delete of a replaced key is retried), and key
	// names carry whole seconds, so tidy sees this second's keys as young.
	m.clock.Advance(rotationBackoffMax)
	m.expireLeases()
	m.syncStatics()
	m.do(m.tickRequest())
	m.midStep()
	m.clock.Advance(time.Second)
	m.expireLeases()
	m.settle()
	m.checkUntrackedBeforeTidy()
	if o := m.request(logical.UpdateOperation, "tidy", map[string]any{"min_age": 0}); !o.ok() {
		m.fatalf("tidy after the faults were resolved: %s", o)
	}
	m.settle()
	m.expireLeases()
	m.syncStatics()
	m.snapshotUpstream()
	m.checkHeldKeysExist()
	m.checkInventory(true)
	m.checkLiveCounts()
	m.checkUntracked()
	m.checkKeyReads()
	// What the engine still lists of limbo is live in its eyes: answers
	// Vault lost, kept until tidy finds them expired.
	for _, k := range m.listKeys() {
		if m.limbo[k.key] {
			m.tracked[k.key] = true
		}
	}
	m.unresolved = false
}

// settle lets background work finish: storage calls of every instance,
// requests the upstream is still serving (abandoned ones included), and
// the engine's queues.
func (m *model) settle() {
	start := time.Now()
	defer func() { smSettleTime.Add(int64(time.Since(start))) }()
	deadline := time.Now().Add(10 * time.Second)
	for !(m.store.idle(time.Millisecond) && m.upstreamIdle() && engineIdle(m.b)) {
		if time.Now().After(deadline) {
			m.fatalf("background work did not settle within 10s")
		}
		time.Sleep(250 * time.Microsecond)
	}
}

func (m *model) upstreamIdle() bool {
	for _, a := range m.accounts {
		if a.fake.InFlight() != 0 {
			return false
		}
	}
	return true
}

// The state machine's looks into the engine beyond its requests, kept here
// so that a redesign has one place to update: the scheduler's tick
// (runDueRotations, startDueRotations, rotations), the clock, Clean and
// Initialize, the max_keys slots, the mount marker, and these.

// engineIdle: the engine's queue of spent WAL entries is empty.
func engineIdle(b *backend) bool { return len(b.spentWAL) == 0 }

// initRetrying: a failed Initialize is being retried in the background.
func initRetrying(b *backend) bool {
	b.initRetryLock.Lock()
	done := b.initRetryDone
	b.initRetryLock.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// quiesce waits (briefly) for the background work a request left on its
// instance: the spent WAL queue drained, no storage call in flight.
func quiesce(b *backend, v *smView) {
	start := time.Now()
	defer func() { smQuiesceTime.Add(int64(time.Since(start))) }()
	deadline := time.Now().Add(2 * time.Second)
	// A stopped instance's background work fails at its first call.
	for !v.isDead() && !(engineIdle(b) && v.quiet(250*time.Microsecond)) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Microsecond)
	}
}

var smQuiesceTime, smSettleTime atomic.Int64

// engineStartedLater tells a fresh instance it started after every write
// of the instance before it, as a real restart does (it takes a moment):
// WAL entries carry whole seconds of real time, and tidy treats those
// written before the instance started as stale.
func engineStartedLater(b *backend) {
	b.startedAt = time.Now().Truncate(time.Second).Add(time.Second)
}

// engineStartsLater: the instance says it started after now.
func engineStartsLater(b *backend) bool { return time.Now().Before(b.startedAt) }

// checkUntracked: once faults are resolved, every marked key upstream is
// one the mount tracks (keys/), holds or released, and every marked
// project is a listed key's per-lease project.
func (m *model) checkUntracked() {
	m.checkMarkedKeysTracked("after the rollback manager and tidy ran on a healthy upstream", false)
	projects := map[string]bool{}
	for _, k := range m.listKeys() {
		projects[k.project] = true
	}
	for _, acct := range sortedKeys(m.accounts) {
		for _, p := range m.accounts[acct].fake.Projects() {
			if m.marked(p.Name) && !projects[p.ID] {
				m.fatalf("I4: per-lease project %s (%s) in account %s carries the mount's marker and no listed key lives in it, after the rollback manager and tidy ran on a healthy upstream", p.ID, p.Name, acct)
			}
		}
	}
}

// checkUntrackedBeforeTidy: tidy's orphan scan is a last resort, not how
// the engine keeps I4. Once the rollback manager and a healthy tick have
// run, every marked key upstream is already tracked, held or released;
// the exception is a key that landed after its request (AbandonedCreate),
// whose WAL entry a tidy may have resolved before it appeared.
func (m *model) checkUntrackedBeforeTidy() {
	m.checkMarkedKeysTracked("after the rollback manager and a healthy tick, before tidy", true)
}

// checkMarkedKeysTracked: every marked key upstream is listed in keys/,
// held by the model, released or possibly gone (and, with exceptLate, not
// one that landed after its request). when says at what point.
func (m *model) checkMarkedKeysTracked(when string, exceptLate bool) {
	listed := map[string]bool{}
	for _, k := range m.listKeys() {
		listed[k.key.id] = true
	}
	held := m.held()
	for _, acct := range sortedKeys(m.accounts) {
		for _, k := range m.accounts[acct].fake.Keys() {
			hk := heldKey{acct, k.ID}
			if m.marked(k.Name) && !listed[k.ID] && held[hk] == "" && !m.released[hk] && !m.maybeGone[hk] && !(exceptLate && m.landedLate[hk]) {
				m.fatalf("I4: key %s (%s) in account %s carries the mount's marker and nothing tracks it, %s", k.ID, k.Name, acct, when)
			}
		}
	}
}

// checkKeyReads: keys/<id> describes exactly the keys LIST keys/ shows.
func (m *model) checkKeyReads() {
	listed := map[string]bool{}
	for _, k := range m.listKeys() {
		listed[k.key.id] = true
	}
	ids := map[string]bool{}
	for k := range m.seen {
		ids[k.id] = true
	}
	for _, id := range m.rankIDs(sortedKeys(ids)) {
		o := m.observe(logical.ReadOperation, "keys/"+id, nil)
		if !o.ok() {
			m.fatalf("I4: reading keys/%s: %s", id, o)
		}
		if read := o.resp != nil; read != listed[id] {
			m.fatalf("I4: keys/%s describes a key (%v) that LIST keys/ does not show, or the other way round (listed: %v)", id, read, listed[id])
		}
	}
}
