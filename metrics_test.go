package carbon

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// scrape reads metrics as Prometheus does and returns each sample by its
// name and sorted labels, e.g. `vault_carbon_issuances_total{outcome="issued",role="ci"}`.
func scrape(t *testing.T, e *testEnv) map[string]float64 {
	t.Helper()
	resp := e.mustOK(logical.ReadOperation, "metrics", nil)
	if ct := resp.Data[logical.HTTPContentType]; ct != metricsContentType || resp.Data[logical.HTTPStatusCode] != 200 {
		t.Fatalf("metrics answered %v, %v; want 200 %s", resp.Data[logical.HTTPStatusCode], ct, metricsContentType)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(resp.Data[logical.HTTPRawBody].([]byte)))
	if err != nil {
		t.Fatalf("the metrics do not parse as the Prometheus text format: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestMetricsCountWhatTheMountDoes: the metrics path counts issuances by
// outcome (an unknown role under one bounded label), revocations,
// rotations, tidy runs and upstream attempts per connection and
// operation, shows live keys per role and connection and pending WAL
// entries, and another mount's figures are its own.
func TestMetricsCountWhatTheMountDoes(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "24h"})
	first := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	e.mustOK(logical.ReadOperation, "creds/ci", nil)
	e.mustFail(logical.ReadOperation, "creds/no-such-role", nil, "")
	if _, err := e.revoke(first.Secret); err != nil {
		t.Fatal(err)
	}
	e.mustOK(logical.UpdateOperation, "rotate-role/app", nil)
	e.mustOK(logical.UpdateOperation, "tidy", nil)

	got := scrape(t, e)
	want := map[string]float64{
		`vault_carbon_issuances_total{outcome="issued",role="ci"}`:                                        2,
		`vault_carbon_issuances_total{outcome="refused",role="unknown"}`:                                  1,
		`vault_carbon_revocations_total{outcome="revoked"}`:                                               1,
		`vault_carbon_rotations_total{outcome="rotated",role="app",trigger="manual"}`:                     1,
		`vault_carbon_tidy_runs_total{outcome="succeeded"}`:                                               1,
		`vault_carbon_live_keys{kind="dynamic",role="ci"}`:                                                1,
		`vault_carbon_live_keys{kind="static",role="app"}`:                                                1,
		`vault_carbon_live_keys_by_connection{connection="cq"}`:                                           2,
		`vault_carbon_upstream_requests_total{connection="cq",operation="create key",status_class="2xx"}`: 4, // 2 issued, the static role's first key and its rotation
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["vault_carbon_wal_entries_pending"]; !ok {
		t.Error("no vault_carbon_wal_entries_pending")
	}
	if got[`vault_carbon_upstream_request_duration_seconds{connection="cq",operation="create key"}_count`] != 4 {
		t.Errorf("the create latency histogram counts %v attempts, want 4", got[`vault_carbon_upstream_request_duration_seconds{connection="cq",operation="create key"}_count`])
	}
	for k := range got {
		if strings.Contains(k, "key_") || strings.Contains(k, "prj_") {
			t.Errorf("an id in a label: %s", k)
		}
	}

	other := newTestEnv(t)
	for k, v := range scrape(t, other) {
		if strings.HasPrefix(k, "vault_carbon_issuances_total") && v != 0 {
			t.Fatalf("another mount shows this one's issuances: %s = %v", k, v)
		}
	}
}
