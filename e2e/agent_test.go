package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVaultAgentRendersRotatedAndDynamicKeys runs a real Vault Agent with
// token-file auto-auth and two templates: the static key is re-rendered
// after a scheduled rotation (the agent re-reads when ttl runs out), and
// the dynamic key's lease is renewed by the agent rather than replaced.
func TestVaultAgentRendersRotatedAndDynamicKeys(t *testing.T) {
	writeClimatiqConfig(t, "cq-agent")
	cli(t, "write", mount+"/static-roles/agent", "config=cq-agent", "project_id="+projectID, "rotation_period=8s")
	cli(t, "write", mount+"/roles/agent-dyn", "config=cq-agent", "project_id="+projectID, "ttl=6s", "max_ttl=2m")

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(vault.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	staticOut, dynamicOut := filepath.Join(dir, "static.txt"), filepath.Join(dir, "dynamic.txt")
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
  sink "file" {
    config = {
      path = %q
    }
  }
}
template {
  contents    = "{{ with secret \"%s/static-creds/agent\" }}{{ .Data.api_key }}{{ end }}"
  destination = %q
}
template {
  contents    = "{{ with secret \"%s/creds/agent-dyn\" }}{{ .Data.api_key }}{{ end }}"
  destination = %q
}
`, vault.Addr, tokenFile, filepath.Join(dir, "sink"), mount, staticOut, mount, dynamicOut)
	configFile := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agentLog, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer agentLog.Close()
	agent := exec.CommandContext(ctx, vault.Binary(), "agent", "-config="+configFile)
	agent.Stdout, agent.Stderr = agentLog, agentLog
	agent.Env = append(os.Environ(), "VAULT_ADDR=http://"+vault.Addr)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
		if t.Failed() {
			if log, err := os.ReadFile(agentLog.Name()); err == nil {
				t.Logf("agent log:\n%s", tail(string(log), 40))
			}
		}
	}()

	read := func(path string) string {
		b, _ := os.ReadFile(path)
		return strings.TrimSpace(string(b))
	}
	var firstStatic, firstDynamic string
	eventually(t, 30*time.Second, "agent renders both templates", func() bool {
		firstStatic, firstDynamic = read(staticOut), read(dynamicOut)
		return firstStatic != "" && firstDynamic != ""
	})
	if k, ok := climatiqFake.KeyByValue(firstStatic); !ok || !keyWorks(t, firstStatic) {
		t.Fatalf("rendered static key is not live upstream (%v)", k)
	}
	dyn, ok := climatiqFake.KeyByValue(firstDynamic)
	if !ok {
		t.Fatal("rendered dynamic key is not live upstream")
	}

	eventually(t, 30*time.Second, "agent re-renders the static key after a rotation", func() bool {
		current := read(staticOut)
		return current != firstStatic && current != ""
	})
	rendered := read(staticOut)
	if _, id, _, _ := staticCreds(t, "agent"); id == "" {
		t.Fatal("no current static key")
	} else if k, ok := climatiqFake.KeyByValue(rendered); !ok || k.ID != id {
		// A rotation may have happened again since; the rendered key must
		// at least be live.
		if !ok {
			t.Fatal("re-rendered static key is not live upstream")
		}
	}

	// Well past the 6s lease TTL, the agent has renewed the lease: the
	// same key is still rendered and still live upstream.
	time.Sleep(14 * time.Second)
	if read(dynamicOut) != firstDynamic {
		t.Fatal("the agent replaced the dynamic key instead of renewing its lease")
	}
	if _, ok := climatiqFake.Key(dyn.ID); !ok {
		t.Fatal("the dynamic key was deleted: the agent did not renew its lease")
	}

	_ = agent.Process.Kill()
	_ = agent.Wait()
	cli(t, "lease", "revoke", "-sync", "-prefix", mount+"/creds/agent-dyn")
	cli(t, "delete", mount+"/static-roles/agent")
}
