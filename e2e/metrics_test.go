package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// prometheusBinary is Debian's prometheus, which CI installs (.ci/run sets
// CARBON_REQUIRE_PROMETHEUS, so there a missing binary fails the test).
func prometheusBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CARBON_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("prometheus is not installed (apt-get install prometheus)")
		}
		t.Skip("prometheus is not installed (apt-get install prometheus); .ci/run installs it")
	}
	return bin
}

// promQuery runs an instant query against Prometheus's HTTP API.
func promQuery(t *testing.T, addr, query string) (values []float64, errText string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, err.Error()
	}
	defer resp.Body.Close()
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return nil, err.Error()
	}
	if answer.Status != "success" {
		return nil, answer.Error
	}
	for _, r := range answer.Data.Result {
		if len(r.Value) == 2 {
			s, _ := r.Value[1].(string)
			v, _ := strconv.ParseFloat(s, 64)
			values = append(values, v)
		}
	}
	return values, ""
}

// TestPrometheusScrapesTheMetricsPath: a real Prometheus scrapes
// carbon/metrics with a Vault token whose policy grants only that read,
// loads the alert rules of docs/monitoring, answers a PromQL query for the
// issuances made, and accepts every query of the Grafana dashboard. The
// path refuses a scrape without a token.
func TestPrometheusScrapesTheMetricsPath(t *testing.T) {
	bin := prometheusBinary(t)
	root, err := devvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}

	anon, err := http.Get("http://" + vault.Addr + "/v1/" + mount + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	anon.Body.Close()
	if anon.StatusCode != http.StatusForbidden {
		t.Fatalf("a scrape without a token answered %d, want 403", anon.StatusCode)
	}
	dir := t.TempDir()
	policy := filepath.Join(dir, "metrics.hcl")
	if err := os.WriteFile(policy, []byte(fmt.Sprintf("path %q {\n  capabilities = [\"read\"]\n}\n", mount+"/metrics")), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "policy", "write", "carbon-metrics", policy)
	token := strings.TrimSpace(cli(t, "token", "create", "-policy=carbon-metrics", "-no-default-policy", "-field=token"))
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}

	writeClimatiqConfig(t, "cq-metrics")
	cli(t, "write", mount+"/roles/metrics", "config=cq-metrics", "project_id="+projectID, "ttl=1h")
	for range 3 {
		cli(t, "read", mount+"/creds/metrics")
	}

	addr, err := devvault.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: carbon
    metrics_path: /v1/%s/metrics
    authorization:
      type: Bearer
      credentials_file: %q
    static_configs:
      - targets: [%q]
`, filepath.Join(root, "docs", "monitoring", "prometheus-alerts.yml"), mount, tokenFile, vault.Addr)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	prom := exec.CommandContext(ctx, bin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	prom.Stdout, prom.Stderr = logFile, logFile
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = prom.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus log:\n%s", tail(string(log), 30))
		}
	}()

	var issued []float64
	eventually(t, 60*time.Second, "Prometheus has scraped the issuances", func() bool {
		issued, _ = promQuery(t, addr, `sum(vault_carbon_issuances_total{role="metrics",outcome="issued"})`)
		return len(issued) == 1 && issued[0] >= 3
	})
	if up, _ := promQuery(t, addr, `up{job="carbon"}`); len(up) != 1 || up[0] != 1 {
		t.Fatalf("up{job=carbon} = %v, want 1", up)
	}

	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "docs", "monitoring", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dashboard); err != nil || len(dashboard.Panels) == 0 {
		t.Fatalf("the Grafana dashboard does not parse: %v", err)
	}
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			if _, errText := promQuery(t, addr, target.Expr); errText != "" {
				t.Errorf("dashboard panel %q: query %q: %s", p.Title, target.Expr, errText)
			}
		}
	}

	resp, err := http.Get("http://" + addr + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if n := strings.Count(string(body), `"type":"alerting"`); n != 6 {
		t.Fatalf("Prometheus loaded %d alerting rules from docs/monitoring, want 6: %s", n, body)
	}
}
