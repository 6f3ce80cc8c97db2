// Command carbon-dev runs a real Vault server on 127.0.0.1 with the plugin
// registered by sha256 and fake Climatiq and Altruistiq upstreams.
//
//	-mode=demo  walks through a key's life (issue, use, revoke, gone) and exits
//	-mode=dev   configures the mount and stays up for you to try commands
//
// Everything it starts listens on 127.0.0.1 and is stopped when it exits.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

const (
	version       = "v0.1.0-dev"
	mount         = "carbon"
	managementKey = "demo-management-key"
	clientID      = "demo-client"
	clientSecret  = "demo-client-secret"
)

func main() {
	mode := flag.String("mode", "demo", "demo (scripted walk-through, then exit) or dev (stay up)")
	flag.Parse()
	if err := run(*mode); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(mode string) error {
	if mode != "demo" && mode != "dev" {
		return fmt.Errorf("-mode must be demo or dev, not %q", mode)
	}
	root, err := devvault.RepoRoot()
	if err != nil {
		return err
	}
	vaultBin, err := devvault.FindVault(root)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "carbon-"+mode+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("Build the plugin and compute its sha256")
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return err
	}
	_, sha, err := devvault.BuildPlugin(root, pluginDir, version)
	if err != nil {
		return err
	}
	fmt.Printf("plugin %s sha256 %s\n", version, sha)

	step("Start fake upstreams on 127.0.0.1")
	cq := climatiqtest.NewServer(managementKey)
	defer cq.Close()
	project := cq.AddProject("demo")
	aq := altruistiqtest.NewServer(clientID, clientSecret)
	defer aq.Close()
	fmt.Printf("Climatiq fake:   %s (project %s)\nAltruistiq fake: %s\n", cq.URL(), project.ID, aq.URL())

	step("Start Vault (file storage, 127.0.0.1), init and unseal")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vault, err := devvault.Start(ctx, devvault.Options{
		VaultBin: vaultBin, Dir: filepath.Join(dir, "vault"), PluginDir: pluginDir,
	})
	if err != nil {
		return err
	}
	defer vault.KillAll()
	fmt.Printf("%s listening on http://%s\n", strings.TrimSpace(mustVault(vault, "version")), vault.Addr)

	sh := func(args ...string) (string, error) {
		fmt.Printf("\n$ vault %s\n", shownCommand(args))
		out, err := vault.Vault(args...)
		fmt.Print(out)
		return out, err
	}
	for _, cmd := range [][]string{
		{"plugin", "register", "-sha256=" + sha, "-version=" + version, "-command=vault-plugin-carbon", "secret", devvault.PluginName},
		{"secrets", "enable", "-path=" + mount, "-plugin-version=" + version, devvault.PluginName},
		// Key ids, names and projects in clear in the audit log, so audit
		// entries can be matched to keys/ and to the upstream.
		{"secrets", "tune", "-audit-non-hmac-response-keys=key_id", "-audit-non-hmac-response-keys=key_name",
			"-audit-non-hmac-response-keys=project_id", mount + "/"},
		{"write", mount + "/config/climatiq", "provider=climatiq", "management_key=" + managementKey,
			"management_url=" + cq.ManagementURL(), "api_url=" + cq.APIURL()},
		{"write", mount + "/roles/ci", "config=climatiq", "project_id=" + project.ID, "ttl=1h", "max_ttl=24h"},
		{"write", mount + "/config/altruistiq", "provider=altruistiq", "client_id=" + clientID, "client_secret=" + clientSecret,
			"token_url=" + aq.TokenURL(), "api_url=" + aq.APIURL()},
		{"write", mount + "/roles/atq-export", "config=altruistiq"},
	} {
		if _, err := sh(cmd...); err != nil {
			return err
		}
	}

	if mode == "dev" {
		return stayUp(vault)
	}
	return demo(sh, cq)
}

func demo(sh func(...string) (string, error), cq *climatiqtest.Server) error {
	step("Issue a Climatiq key")
	out, err := sh("read", "-format=json", mount+"/creds/ci")
	if err != nil {
		return err
	}
	var secret struct {
		LeaseID string `json:"lease_id"`
		Data    struct {
			APIKey string `json:"api_key"`
			KeyID  string `json:"key_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &secret); err != nil {
		return err
	}

	step("Use the key against Climatiq's regular API")
	if status := useKey(cq.APIURL(), secret.Data.APIKey); status != http.StatusOK {
		return fmt.Errorf("the issued key was refused: HTTP %d", status)
	}
	fmt.Printf("upstream has key %s: %v\n", secret.Data.KeyID, hasKey(cq, secret.Data.KeyID))

	step("Revoke the lease")
	if _, err := sh("lease", "revoke", "-sync", secret.LeaseID); err != nil {
		return err
	}

	step("The key is gone upstream")
	if status := useKey(cq.APIURL(), secret.Data.APIKey); status != http.StatusUnauthorized {
		return fmt.Errorf("the revoked key still answers HTTP %d", status)
	}
	present := hasKey(cq, secret.Data.KeyID)
	fmt.Printf("upstream has key %s: %v\n", secret.Data.KeyID, present)
	if present {
		return fmt.Errorf("key %s still exists upstream", secret.Data.KeyID)
	}

	step("An Altruistiq access token")
	if _, err := sh("read", mount+"/creds/atq-export"); err != nil {
		return err
	}
	fmt.Println("\nDemo finished: key issued, used, revoked and gone upstream. Stopping Vault and the fakes.")
	return nil
}

// useKey calls the cheap key check of Climatiq's regular API and prints it
// the way curl would be read.
func useKey(apiURL, key string) int {
	req, _ := http.NewRequest(http.MethodGet, apiURL+"/data/v1/unit-types", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	fmt.Printf("\n$ curl -H 'Authorization: Bearer <api_key>' %s/data/v1/unit-types\n", apiURL)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println(err)
		return 0
	}
	resp.Body.Close()
	fmt.Printf("HTTP %d %s\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	return resp.StatusCode
}

func hasKey(cq *climatiqtest.Server, id string) bool {
	_, ok := cq.Key(id)
	return ok
}

// secretArgs are the arguments whose values the printed commands hide: the
// upstream credentials, which nothing on the screen or in a terminal log
// should hold.
var secretArgs = []string{"management_key=", "client_secret="}

// shownCommand is a vault command as printed, secret values hidden.
func shownCommand(args []string) string {
	shown := make([]string, len(args))
	for i, arg := range args {
		shown[i] = arg
		for _, prefix := range secretArgs {
			if strings.HasPrefix(arg, prefix) {
				shown[i] = prefix + "<hidden>"
			}
		}
	}
	return strings.Join(shown, " ")
}

func stayUp(vault *devvault.Server) error {
	step("Ready")
	fmt.Printf(`Try, in another shell:

  export VAULT_ADDR=http://%s VAULT_TOKEN=%s
  vault read %s/creds/ci
  vault read %s/creds/atq-export
  vault path-help %s/roles/x

Press Ctrl-C to stop Vault and the fakes.
`, vault.Addr, vault.Token, mount, mount, mount)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	fmt.Println("\nStopping.")
	return nil
}

func mustVault(v *devvault.Server, args ...string) string {
	out, err := v.Vault(args...)
	if err != nil {
		return "(unknown version)"
	}
	return out
}

func step(title string) {
	fmt.Printf("\n==> %s\n", title)
}
