package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// TestVaultProxyCachesAndRenews runs a real Vault Proxy with the README's
// cache and api_proxy settings (token-file auth instead of AppRole):
// repeated reads of creds/ return the cached key while the proxy renews its
// lease past the lease TTL, and a fresh key once max_ttl has passed.
func TestVaultProxyCachesAndRenews(t *testing.T) {
	const ttl, maxTTL = 2 * time.Second, 8 * time.Second
	writeClimatiqConfig(t, "cq-proxy")
	cli(t, "write", mount+"/roles/proxy", "config=cq-proxy", "project_id="+projectID,
		"ttl="+ttl.String(), "max_ttl="+maxTTL.String())

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(vault.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, err := devvault.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`
vault {
  address = "http://%s"
}
auto_auth {
  method "token_file" {
    config = {
      token_file_path = %q
    }
  }
}
api_proxy {
  use_auto_auth_token = true
}
cache {
}
listener "tcp" {
  address     = %q
  tls_disable = true
}
`, vault.Addr, tokenFile, addr)
	configFile := filepath.Join(dir, "proxy.hcl")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proxyLog, err := os.Create(filepath.Join(dir, "proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxyLog.Close()
	proxy := exec.CommandContext(ctx, vault.Binary(), "proxy", "-config="+configFile)
	proxy.Stdout, proxy.Stderr = proxyLog, proxyLog
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = proxy.Process.Kill()
		_ = proxy.Wait()
		if t.Failed() {
			if log, err := os.ReadFile(proxyLog.Name()); err == nil {
				t.Logf("proxy log:\n%s", tail(string(log), 40))
			}
		}
	}()

	// The application's client: no token of its own, the proxy adds it.
	client, err := api.NewClient(&api.Config{Address: "http://" + addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	client.ClearToken()
	read := func() (keyID string, err error) {
		s, err := client.Logical().Read(mount + "/creds/proxy")
		if err != nil || s == nil {
			return "", fmt.Errorf("read through the proxy: %v", err)
		}
		return s.Data["key_id"].(string), nil
	}
	var first string
	eventually(t, 30*time.Second, "the proxy answers", func() bool {
		first, err = read()
		return err == nil
	})
	issuedAt := time.Now()

	// Past the 2s lease TTL: still the cached key, kept alive by the proxy.
	time.Sleep(2*ttl + 500*time.Millisecond)
	if again, err := read(); err != nil || again != first {
		t.Fatalf("second read through the proxy: key %s (%v), want the cached %s", again, err, first)
	}
	if _, ok := climatiqFake.Key(first); !ok {
		t.Fatal("the cached key was deleted upstream: the proxy did not renew its lease")
	}

	// After max_ttl the lease ends, the proxy evicts it and the next read
	// issues a fresh key.
	time.Sleep(time.Until(issuedAt.Add(maxTTL + time.Second)))
	eventually(t, 10*time.Second, "a fresh key through the proxy after max_ttl", func() bool {
		next, err := read()
		return err == nil && next != first
	})
	eventually(t, 5*time.Second, "the first key deleted upstream", func() bool {
		_, ok := climatiqFake.Key(first)
		return !ok
	})
	cli(t, "lease", "revoke", "-sync", "-prefix", mount+"/creds/proxy")
}
