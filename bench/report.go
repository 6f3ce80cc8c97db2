package main

import (
	"fmt"
	"strings"
	"time"
)

// report collects the sections of BENCHMARKS.md as scenarios finish: the
// storage comparison (Raft first, then the dev server) and the dev-server
// sections, in that order whatever order they ran in.
type report struct {
	vaultVersion string
	rounds       int
	disk         string
	storages     []*storageResult
	b            strings.Builder
	targets      []string
}

func newReport(vaultVersion string, rounds int) *report {
	return &report{vaultVersion: vaultVersion, rounds: rounds}
}

func (r *report) header(out *strings.Builder) {
	fmt.Fprintf(out, "# Benchmarks\n\n")
	fmt.Fprintf(out, "Written by `make bench` (`go run ./bench`) on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(out, "- Machine: %s\n", machine())
	fmt.Fprintf(out, "- Disk: %s\n", r.disk)
	fmt.Fprintf(out, "- Vault: %s, on 127.0.0.1: integrated storage (Raft) on disk, one node and a three-node cluster; "+
		"then a dev server (in-memory storage). Plugin %s registered by sha256\n", r.vaultVersion, version)
	fmt.Fprintf(out, "- Upstreams: in-process fakes (`backend/climatiqtest`, `backend/altruistiqtest`) on 127.0.0.1, answering at once unless a section says otherwise\n")
	fmt.Fprintf(out, "- Clients: the Go `vault/api` client over HTTP, from the benchmark process, with the root token\n")
	fmt.Fprintf(out, "- Timed scenarios run in %d interleaved rounds; latencies are pooled over the rounds, throughput is the median of the rounds\n\n", r.rounds)
	fmt.Fprintf(out, "Rerun: `make bench` (builds the plugin; uses `$VAULT_BIN`, `vault` on PATH or `bin/vault`); "+
		"`go run ./bench -only raft -out /tmp/raft.md` runs the Raft part alone.\n\n")
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
	r.header(&out)
	r.writeStorages(&out)
	out.WriteString(r.b.String())
	if len(r.targets) > 0 {
		out.WriteString("## Targets\n\n| target | measured | verdict |\n|---|---|---|\n")
		for _, t := range r.targets {
			out.WriteString(t + "\n")
		}
	}
	return out.String()
}
