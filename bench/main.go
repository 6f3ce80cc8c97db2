// Command bench measures the carbon secrets engine inside a real Vault dev
// server against in-process fake upstreams on 127.0.0.1, next to Vault's
// built-in ssh (OTP) and kv-v2 engines, and writes BENCHMARKS.md.
//
//	go run ./bench -out BENCHMARKS.md
//
// Scenarios run in interleaved rounds so that ratios survive a noisy
// machine. Every figure written is measured in this run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
	rounds := flag.Int("rounds", 3, "interleaved rounds of the issuance scenarios")
	only = flag.String("only", "", "run only the scenarios whose name contains this (for development; BENCHMARKS.md comes from a full run)")
	flag.Parse()
	start := time.Now()
	if err := run(*out, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Printf("bench finished in %s; report in %s\n", time.Since(start).Round(time.Second), *out)
}

// env is everything the scenarios share.
type env struct {
	vault     *devvault.Server
	cq, cq50  *climatiqtest.Server
	aq        *altruistiqtest.Server
	project   string
	project50 string
	report    *report
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
	defer os.RemoveAll(dir)
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return err
	}
	step("building the plugin")
	_, sha, err := devvault.BuildPlugin(root, pluginDir, version)
	if err != nil {
		return err
	}

	e := &env{report: newReport()}
	e.cq = climatiqtest.NewServer(managementKey)
	defer e.cq.Close()
	e.project = e.cq.AddProject("bench").ID
	e.cq50 = climatiqtest.NewServer(managementKey)
	defer e.cq50.Close()
	e.cq50.SetLatency(50 * time.Millisecond)
	e.project50 = e.cq50.AddProject("bench-50ms").ID
	e.aq = altruistiqtest.NewServer(clientID, clientSecret)
	defer e.aq.Close()

	step("starting a Vault dev server")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.vault, err = devvault.Start(ctx, devvault.Options{
		VaultBin: vaultBin, Dir: filepath.Join(dir, "vault"), PluginDir: pluginDir, LogLevel: "info", Dev: true,
	})
	if err != nil {
		return err
	}
	defer e.vault.KillAll()
	if err := e.vault.RegisterAndEnable(sha, version, mount); err != nil {
		return err
	}
	vaultVersion, _ := e.vault.Vault("version")
	e.report.header(strings.TrimSpace(vaultVersion), rounds)
	if err := e.setup(); err != nil {
		return err
	}

	scenarios := []struct {
		name string
		run  func() error
	}{
		{"footprint (idle)", e.footprintIdle},
		{"issuance", func() error { return e.issuance(rounds) }},
		{"storage writes per issuance", e.storageWrites},
		{"altruistiq tokens", e.altruistiqTokens},
		{"mass revocation", e.massRevocation},
		{"static roles at scale", e.staticRoles},
		{"footprint (10,000 leases) and plugin start", e.footprintLoaded},
		{"scale: 100,000 live keys", e.scale},
	}
	if *only != "" {
		kept := scenarios[:0]
		for _, s := range scenarios {
			if strings.Contains(s.name, *only) {
				kept = append(kept, s)
			}
		}
		scenarios = kept
	}
	for _, s := range scenarios {
		step(s.name)
		began := time.Now()
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Printf("    %s took %s\n", s.name, time.Since(began).Round(time.Millisecond))
	}
	return os.WriteFile(out, []byte(e.report.String()), 0o644)
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
		{"secrets", "enable", "ssh"},
		{"write", "ssh/roles/otp", "key_type=otp", "default_user=bench", "cidr_list=127.0.0.0/8"},
		{"secrets", "enable", "-version=2", "kv"},
	}
	for _, c := range cmds {
		if _, err := e.vault.Vault(c...); err != nil {
			return err
		}
	}
	return nil
}

// revokePrefix revokes leases synchronously between timed batches.
func (e *env) revokePrefix(prefix string) error {
	_, err := e.vault.Vault("lease", "revoke", "-sync", "-prefix", prefix)
	return err
}

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
