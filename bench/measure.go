package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// batch is one timed run of an operation at a given concurrency.
type batch struct {
	latencies []time.Duration
	elapsed   time.Duration
	errors    int
	firstErr  error
}

func (b batch) throughput() float64 {
	return float64(len(b.latencies)) / b.elapsed.Seconds()
}

// runBatch runs op n times on conc workers and times each call.
func runBatch(n, conc int, op func() error) batch {
	return runPacedBatch(n, conc, 0, op)
}

// batchTimeLimit bounds every batch in time as n bounds it in count: no
// call starts after it, and the calls not started count as errors.
const batchTimeLimit = 5 * time.Minute

// runPacedBatch is runBatch with an untimed pause before each call, to see
// what a machine woken from idle adds to a request.
func runPacedBatch(n, conc int, pause time.Duration, op func() error) batch {
	var mu sync.Mutex
	var b batch
	work := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(batchTimeLimit)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if pause > 0 {
					time.Sleep(pause)
				}
				t := time.Now()
				err := op()
				d := time.Since(t)
				mu.Lock()
				if err != nil {
					b.errors++
					if b.firstErr == nil {
						b.firstErr = err
					}
				} else {
					b.latencies = append(b.latencies, d)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		if time.Now().After(deadline) {
			mu.Lock()
			b.errors += n - i
			if b.firstErr == nil {
				b.firstErr = fmt.Errorf("batch stopped at its time limit (%s) after %d of %d calls", batchTimeLimit, i, n)
			}
			mu.Unlock()
			break
		}
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.elapsed = time.Since(start) - time.Duration(n/conc)*pause
	return b
}

// percentile of an unsorted sample (nearest rank).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(s) {
		rank = len(s) - 1
	}
	return s[rank]
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

// pluginPID finds the running plugin process by its executable name.
func pluginPID() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv0 := strings.SplitN(string(cmdline), "\x00", 2)[0]
		if filepath.Base(argv0) == "vault-plugin-carbon" {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no vault-plugin-carbon process")
}

// rssMB is the resident set size of a process in MiB.
func rssMB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fields := strings.Fields(line)
			kb, err := strconv.ParseFloat(fields[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// cpuTime is the user+system CPU time a process has used.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (100 Hz on Linux).
	rest := string(data)[strings.LastIndex(string(data), ")")+2:]
	fields := strings.Fields(rest)
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// killPluginAndTime kills the plugin process and times the first success
// of op, retried until limit: Vault starts the plugin again, and runs its
// initialize, for that request.
func killPluginAndTime(pid int, limit time.Duration, op func() error) (time.Duration, error) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	var err error
	for time.Since(start) < limit {
		if err = op(); err == nil {
			return time.Since(start), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start), err
}
