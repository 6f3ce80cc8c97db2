package carbon

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// tidyJobs runs tidy in the background, one run at a time per instance,
// as PKI's tidy does: a run outlives the request that started it (an
// upstream that hangs would otherwise hold the caller past its timeout and
// lose the report), and Clean stops it.
type tidyJobs struct {
	lock    sync.Mutex
	current *tidyRun // nil when no run is going on
	ctx     context.Context
	stop    context.CancelFunc
	running sync.WaitGroup
}

func (j *tidyJobs) init() { j.ctx, j.stop = context.WithCancel(context.Background()) }

// startTidy starts a run in the background unless one is going on, which
// it returns instead. Both are nil once the instance is stopping.
func (b *backend) startTidy(s logical.Storage, opts tidyOptions) (started, running *tidyRun) {
	j := &b.tidyJobs
	j.lock.Lock()
	defer j.lock.Unlock()
	if j.current != nil {
		return nil, j.current
	}
	if j.ctx.Err() != nil {
		return nil, nil
	}
	run := b.newTidyRun(s, opts)
	j.current = run
	j.running.Add(1)
	go func() {
		defer j.running.Done()
		b.runTidy(j.ctx, run)
		j.lock.Lock()
		j.current = nil
		j.lock.Unlock()
		close(run.done)
	}()
	return run, nil
}

// runningTidy is the run going on on this instance, if any.
func (b *backend) runningTidy() *tidyRun {
	b.tidyJobs.lock.Lock()
	defer b.tidyJobs.lock.Unlock()
	return b.tidyJobs.current
}

// tidyReportTimeout bounds the report's storage writes: they are the last
// steps of a run, also of one that Clean cancelled.
const tidyReportTimeout = 5 * time.Second

// runTidy runs one tidy and keeps its report: marked running first, so
// that a run the plugin stopped midway reads as interrupted.
func (b *backend) runTidy(ctx context.Context, run *tidyRun) {
	b.storeTidyReport(ctx, run.storage, run.snapshot())
	report := run.run(ctx)
	run.final = report
	b.storeTidyReport(ctx, run.storage, report)
	b.logAndEmit(eventTidy, "dry_run", strconv.FormatBool(report.DryRun), "periodic", strconv.FormatBool(report.Periodic),
		"config", report.Config,
		"orphans", strconv.Itoa(len(report.Orphans)), "orphan_projects", strconv.Itoa(len(report.OrphanProjects)),
		"expired", strconv.Itoa(len(report.Expired)), "deleted", strconv.Itoa(report.Deleted),
		"wal_rolled_back", strconv.Itoa(report.WALRolledBack), "errors", strconv.Itoa(len(report.Errors)))
	for _, e := range report.Errors {
		b.Logger().Warn("tidy could not finish a step", "error", e)
	}
}

func (b *backend) storeTidyReport(ctx context.Context, s logical.Storage, r *tidyReport) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tidyReportTimeout)
	defer cancel()
	if err := putEntry(ctx, s, tidyStatusStorageKey, r); err != nil {
		b.Logger().Warn("storing the tidy report failed; tidy-status shows the run before it", "state", r.State, "error", err)
	}
}

// waitTidy waits for the run going on, if any, to end.
func (b *backend) waitTidy() {
	if run := b.runningTidy(); run != nil {
		<-run.done
	}
}

// stopTidy cancels the run going on and waits for it to end; no run
// starts after it.
func (b *backend) stopTidy() {
	b.tidyJobs.lock.Lock()
	b.tidyJobs.stop()
	b.tidyJobs.lock.Unlock()
	b.tidyJobs.running.Wait()
}
