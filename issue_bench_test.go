package carbon

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// BenchmarkIssueClimatiqKey measures the plugin's own cost of one issuance
// (in-process, in-memory storage, zero-latency fake upstream), without
// Vault's request handling, gRPC or lease storage. Profile it with
//
//	go test -run XXX -bench IssueClimatiqKey -cpuprofile cpu.out && go tool pprof -top cpu.out
func BenchmarkIssueClimatiqKey(b *testing.B) {
	e := newTestEnv(b)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	req := &logical.Request{Operation: logical.ReadOperation, Path: "creds/ci", Storage: e.storage, DisplayName: "token-bench"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := e.b.HandleRequest(context.Background(), req)
		if err != nil || resp.IsError() {
			b.Fatal(err, resp.Error())
		}
	}
}
