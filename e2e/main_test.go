// Package e2e tests the plugin inside a real Vault server, registered by
// sha256 and driven through the real vault CLI and HTTP API, against
// in-process fake upstreams on 127.0.0.1.
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

const (
	pluginVersion    = "v0.1.0-e2e"
	mount            = "carbon"
	managementKey    = "e2e-management-key-s3cr3t"
	atqClientID      = "e2e-client"
	atqClientSecret  = "e2e-client-s3cr3t"
	wrongManagement  = "e2e-wrong-management-key"
	vaultStartBudget = 3 * time.Minute
)

var (
	vault          *devvault.Server
	climatiqFake   *climatiqtest.Server
	altruistiqFake *altruistiqtest.Server
	projectID      string

	// What a test needs to start a Vault server of its own.
	vaultBin, pluginDir, pluginSHA, workDir string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	root, err := devvault.RepoRoot()
	if err != nil {
		return 0, err
	}
	vaultBin, err = devvault.FindVault(root)
	if err != nil {
		return 0, err
	}
	workDir, err = os.MkdirTemp("", "carbon-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(workDir)
	pluginDir = filepath.Join(workDir, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return 0, err
	}
	_, pluginSHA, err = devvault.BuildPlugin(root, pluginDir, pluginVersion)
	if err != nil {
		return 0, err
	}

	climatiqFake = climatiqtest.NewServer(managementKey)
	defer climatiqFake.Close()
	projectID = climatiqFake.AddProject("e2e").ID
	altruistiqFake = altruistiqtest.NewServer(atqClientID, atqClientSecret)
	defer altruistiqFake.Close()

	ctx, cancel := context.WithTimeout(context.Background(), vaultStartBudget)
	defer cancel()
	vault, err = devvault.Start(ctx, devvault.Options{
		VaultBin:  vaultBin,
		Dir:       filepath.Join(workDir, "vault"),
		PluginDir: pluginDir,
		LogLevel:  "debug",
	})
	if err != nil {
		return 0, err
	}
	defer vault.KillAll()
	if err := vault.RegisterAndEnable(pluginSHA, pluginVersion, mount); err != nil {
		return 0, err
	}
	code := m.Run()
	reportFeatures(vault.LogPath)
	if code != 0 {
		if log, err := os.ReadFile(vault.LogPath); err == nil {
			fmt.Fprintf(os.Stderr, "---- vault server log (last 60 lines) ----\n%s\n", tail(string(log), 60))
		}
	}
	return code, nil
}

// startVault starts another Vault server with the plugin registered and
// enabled at mount, stopped when the test ends.
func startVault(t *testing.T, name, logLevel string) *devvault.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), vaultStartBudget)
	defer cancel()
	s, err := devvault.Start(ctx, devvault.Options{
		VaultBin:  vaultBin,
		Dir:       serverDir(t, name),
		PluginDir: pluginDir,
		LogLevel:  logLevel,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.KillAll)
	if err := s.RegisterAndEnable(pluginSHA, pluginVersion, mount); err != nil {
		t.Fatal(err)
	}
	return s
}

// serverDir is a fresh directory for one Vault server of a test, so a test
// run again in the same process (go test -count=2) never meets the storage
// its previous run initialised.
func serverDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp(workDir, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// reportFeatures prints one line per optional Vault feature the engine uses,
// saying whether this Vault provided it; make compat collects these lines.
func reportFeatures(logPath string) {
	log, err := os.ReadFile(logPath)
	if err != nil {
		return
	}
	events := "available"
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "lifecycle steps are logged only") {
			_, msg, _ := strings.Cut(line, "vault-plugin-carbon: ")
			events = "unavailable: " + strings.TrimSpace(msg)
			break
		}
	}
	fmt.Printf("E2E-FEATURE events %s\n", events)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cli runs the vault CLI and fails the test on error.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := vault.Vault(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cliJSON runs the vault CLI (the caller passes -format=json where the
// subcommand takes it) and decodes its answer.
func cliJSON(t *testing.T, args ...string) *api.Secret {
	t.Helper()
	out := cli(t, args...)
	secret := new(api.Secret)
	// Numbers keep their JSON text, so tests can tell 5 from 5.0.
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(secret); err != nil {
		t.Fatalf("decoding `vault %s`: %v\n%s", strings.Join(args, " "), err, out)
	}
	return secret
}

// eventually polls cond until it holds or the bound passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeClimatiqConfig(t *testing.T, name string, extra ...string) {
	t.Helper()
	args := append([]string{"write", mount + "/config/" + name,
		"provider=climatiq",
		"management_key=" + managementKey,
		"management_url=" + climatiqFake.ManagementURL(),
		"api_url=" + climatiqFake.APIURL(),
	}, extra...)
	cli(t, args...)
}

func writeAltruistiqConfig(t *testing.T, name string, extra ...string) {
	t.Helper()
	args := append([]string{"write", mount + "/config/" + name,
		"provider=altruistiq",
		"client_id=" + atqClientID,
		"client_secret=" + atqClientSecret,
		"token_url=" + altruistiqFake.TokenURL(),
		"api_url=" + altruistiqFake.APIURL(),
	}, extra...)
	cli(t, args...)
}
