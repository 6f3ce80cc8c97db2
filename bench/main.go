// Command bench measures the carbon secrets engine inside real Vault
// servers against in-process fake upstreams on 127.0.0.1, next to Vault's
// built-in ssh (OTP) and kv-v2 engines, and writes BENCHMARKS.md.
//
//	go run ./bench -out BENCHMARKS.md
//	go run ./bench -only raft -out /tmp/raft.md   # only the Raft part
//
// Issuance, revocation and rotation run on Vault integrated storage (Raft)
// on disk, one node and a three-node cluster, and on a dev server
// (in-memory storage); the other scenarios run on the dev server. Scenarios
// run in interleaved rounds so that ratios survive a noisy machine. Every
// figure written is measured in this run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

const (
	version       = "v0.1.0-bench"
	mount         = "carbon"
	managementKey = "bench-management-key"
	clientID      = "bench-client"
	clientSecret  = "bench-client-secret"
)

var only *string

func main() {
	out := flag.String("out", "BENCHMARKS.md", "where to write the report")
	rounds := flag.Int("rounds", 3, "interleaved rounds of the issuance, revocation and rotation scenarios")
	only = flag.String("only", "", "run only the scenarios whose name contains this, e.g. \"raft\" for the Raft part "+
		"(for development; BENCHMARKS.md comes from a full run)")
	flag.Parse()
	// An interrupted run still stops every Vault it started (each in its
	// own process group, so nothing else would) and removes its files.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %s: stopping every Vault and removing temporary files\n", sig)
		runCleanups()
		os.Exit(130)
	}()
	start := time.Now()
	err := run(*out, *rounds)
	runCleanups()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Printf("bench finished in %s; report in %s\n", time.Since(start).Round(time.Second), *out)
}

var cleanups struct {
	sync.Mutex
	fns []func()
}

// atExit registers f to run when the benchmark ends, however it ends
// (success, error, SIGINT or SIGTERM), and returns a function that runs it
// now instead; f runs at most once.
func atExit(f func()) func() {
	var once sync.Once
	g := func() { once.Do(f) }
	cleanups.Lock()
	cleanups.fns = append(cleanups.fns, g)
	cleanups.Unlock()
	return g
}

// runCleanups runs the registered cleanups, newest first.
func runCleanups() {
	for {
		cleanups.Lock()
		if len(cleanups.fns) == 0 {
			cleanups.Unlock()
			return
		}
		f := cleanups.fns[len(cleanups.fns)-1]
		cleanups.fns = cleanups.fns[:len(cleanups.fns)-1]
		cleanups.Unlock()
		f()
	}
}

// env is everything the scenarios share.
type env struct {
	vaultBin  string
	pluginDir string
	pluginSHA string
	dir       string

	vault     *devvault.Server // the dev server
	cq, cq50  *climatiqtest.Server
	aq        *altruistiqtest.Server
	project   string
	project50 string
	report    *report
}

type scenario struct {
	name string
	run  func() error
}

func selected(list []scenario) []scenario {
	if *only == "" {
		return list
	}
	var kept []scenario
	for _, s := range list {
		if strings.Contains(s.name, *only) {
			kept = append(kept, s)
		}
	}
	return kept
}

func runScenarios(list []scenario) error {
	for _, s := range list {
		step(s.name)
		began := time.Now()
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Printf("    %s took %s\n", s.name, time.Since(began).Round(time.Millisecond))
	}
	return nil
}

func run(out string, rounds int) error {
	root, err := devvault.RepoRoot()
	if err != nil {
		return err
	}
	vaultBin, err := devvault.FindVault(root)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "carbon-bench-")
	if err != nil {
		return err
	}
	defer atExit(func() { os.RemoveAll(dir) })()
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return err
	}
	step("building the plugin")
	_, sha, err := devvault.BuildPlugin(root, pluginDir, version)
	if err != nil {
		return err
	}
	vaultVersion, err := exec.Command(vaultBin, "version").Output()
	if err != nil {
		return fmt.Errorf("%s version: %w", vaultBin, err)
	}
	e := &env{vaultBin: vaultBin, pluginDir: pluginDir, pluginSHA: sha, dir: dir,
		report: newReport(strings.TrimSpace(string(vaultVersion)), rounds)}
	step("timing fsync on the disk the Raft nodes use")
	if e.report.disk, err = diskFsync(dir); err != nil {
		return err
	}

	// Real storage first: a Raft node, then a Raft cluster, each started,
	// measured and stopped before the next. Each runs issuance, revocation,
	// rotation and the storage-write counts; "in-memory storage comparison"
	// runs the same on the dev server.
	if err := runScenarios(selected([]scenario{
		{"raft 1-node", func() error { return e.raftStorage(1, rounds) }},
		{"raft 3-node", func() error { return e.raftStorage(3, rounds) }},
	})); err != nil {
		return err
	}

	dev := selected([]scenario{
		{"footprint (idle)", e.footprintIdle},
		{"in-memory storage comparison", func() error { return e.devStorage(rounds) }},
		{"issuance", func() error { return e.issuance(rounds) }},
		{"storage writes per issuance", e.storageWrites},
		{"altruistiq tokens", e.altruistiqTokens},
		{"mass revocation", e.massRevocation},
		{"static roles at scale", e.staticRoles},
		{"footprint (10,000 leases) and plugin start", e.footprintLoaded},
		{"scale: 100,000 live keys", e.scale},
	})
	if len(dev) > 0 {
		e.report.section("On the dev server")
		e.report.line("Every section from here on runs on one Vault dev server (`vault server -dev`, in-memory storage: a storage " +
			"write costs no I/O), which isolates the plugin's own costs; the Raft tables above are what a production Vault adds.\n")
		if err := e.startDev(); err != nil {
			return err
		}
		if err := runScenarios(dev); err != nil {
			return err
		}
	}
	return os.WriteFile(out, []byte(e.report.String()), 0o644)
}

// startDev starts the fakes and the dev server the dev-server scenarios
// share, stopped when the benchmark ends.
func (e *env) startDev() error {
	e.cq = climatiqtest.NewServer(managementKey)
	atExit(e.cq.Close)
	e.project = e.cq.AddProject("bench").ID
	e.cq50 = climatiqtest.NewServer(managementKey)
	atExit(e.cq50.Close)
	e.cq50.SetLatency(50 * time.Millisecond)
	e.project50 = e.cq50.AddProject("bench-50ms").ID
	e.aq = altruistiqtest.NewServer(clientID, clientSecret)
	atExit(e.aq.Close)

	step("starting a Vault dev server")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var err error
	e.vault, err = devvault.Start(ctx, devvault.Options{
		VaultBin: e.vaultBin, Dir: filepath.Join(e.dir, "vault"), PluginDir: e.pluginDir, LogLevel: "info", Dev: true,
		Telemetry: true,
	})
	if err != nil {
		return err
	}
	atExit(e.vault.KillAll)
	if err := e.vault.RegisterAndEnable(e.pluginSHA, version, mount); err != nil {
		return err
	}
	return e.setup()
}

func (e *env) setup() error {
	cmds := [][]string{
		{"write", mount + "/config/cq", "provider=climatiq", "management_key=" + managementKey,
			"management_url=" + e.cq.ManagementURL(), "api_url=" + e.cq.APIURL()},
		{"write", mount + "/roles/ci", "config=cq", "project_id=" + e.project, "ttl=1h"},
		{"write", mount + "/config/cq50", "provider=climatiq", "management_key=" + managementKey,
			"management_url=" + e.cq50.ManagementURL(), "api_url=" + e.cq50.APIURL()},
		{"write", mount + "/roles/ci50", "config=cq50", "project_id=" + e.project50, "ttl=1h"},
		{"write", mount + "/config/aq", "provider=altruistiq", "client_id=" + clientID, "client_secret=" + clientSecret,
			"token_url=" + e.aq.TokenURL(), "api_url=" + e.aq.APIURL()},
		{"write", mount + "/roles/atq", "config=aq"},
		{"secrets", "enable", "-version=2", "kv"},
	}
	for _, c := range cmds {
		if _, err := e.vault.Vault(c...); err != nil {
			return err
		}
	}
	return enableSSH(e.vault)
}

// enableSSH enables Vault's builtin ssh engine with an OTP role: the
// control every storage's carbon figures are set against.
func enableSSH(s *devvault.Server) error {
	for _, c := range [][]string{
		{"secrets", "enable", "ssh"},
		{"write", "ssh/roles/otp", "key_type=otp", "default_user=bench", "cidr_list=127.0.0.0/8"},
	} {
		if _, err := s.Vault(c...); err != nil {
			return err
		}
	}
	return nil
}

// revokePrefix revokes the dev server's leases synchronously between timed
// batches.
func (e *env) revokePrefix(prefix string) error { return revokePrefix(e.vault, prefix) }

func step(what string) {
	fmt.Printf("==> %s (%s)\n", what, time.Now().Format("15:04:05"))
}

func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				model = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(data), "\n", 2)[0], "MemTotal:"))
	}
	return fmt.Sprintf("%d cores (%s), %s memory, %s/%s, %s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
