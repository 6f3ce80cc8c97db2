package main

import (
	"fmt"
	"strings"
	"time"
)

// report collects the sections of BENCHMARKS.md as scenarios finish.
type report struct {
	b       strings.Builder
	targets []string
}

func newReport() *report { return &report{} }

func (r *report) header(vaultVersion string, rounds int) {
	fmt.Fprintf(&r.b, "# Benchmarks\n\n")
	fmt.Fprintf(&r.b, "Written by `make bench` (`go run ./bench`) on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&r.b, "- Machine: %s\n", machine())
	fmt.Fprintf(&r.b, "- Vault: %s, dev server (in-memory storage) on 127.0.0.1, plugin %s registered by sha256\n", vaultVersion, version)
	fmt.Fprintf(&r.b, "- Upstreams: in-process fakes (`backend/climatiqtest`, `backend/altruistiqtest`) on 127.0.0.1\n")
	fmt.Fprintf(&r.b, "- Clients: the Go `vault/api` client over HTTP, from the benchmark process\n")
	fmt.Fprintf(&r.b, "- Issuance scenarios run in %d interleaved rounds; latencies are pooled over the rounds, throughput is the median of the rounds\n\n", rounds)
	fmt.Fprintf(&r.b, "Rerun: `make bench` (builds the plugin; uses `$VAULT_BIN`, `vault` on PATH or `bin/vault`).\n\n")
}

func (r *report) section(title string) { fmt.Fprintf(&r.b, "## %s\n\n", title) }

func (r *report) line(format string, args ...any) { fmt.Fprintf(&r.b, format+"\n", args...) }

// target records a target's verdict for the summary.
func (r *report) target(name string, met bool, measured string) {
	verdict := "met"
	if !met {
		verdict = "**missed**"
	}
	r.targets = append(r.targets, fmt.Sprintf("| %s | %s | %s |", name, measured, verdict))
}

func (r *report) String() string {
	var out strings.Builder
	out.WriteString(r.b.String())
	out.WriteString("## Targets\n\n| target | measured | verdict |\n|---|---|---|\n")
	for _, t := range r.targets {
		out.WriteString(t + "\n")
	}
	return out.String()
}
