package carbon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// TestUpstreamFailureStatusSaysWhatFailed: an upstream failure reaches the
// caller as 504 when the upstream did not answer in time, 503 when it kept
// rate-limiting past the engine's wait, and 502 otherwise, with the
// operation and the upstream's own words in the message.
func TestUpstreamFailureStatusSaysWhatFailed(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"no answer in time", fmt.Errorf("climatiq: create key: %w", context.DeadlineExceeded), statusGatewayTimeout},
		{"climatiq kept rate-limiting", fmt.Errorf("climatiq: create key: rate limited (gave up): %w", climatiq.ErrRateLimited), statusServiceUnavailable},
		{"altruistiq kept rate-limiting", fmt.Errorf("altruistiq: token: %w", altruistiq.ErrRateLimited), statusServiceUnavailable},
		{"upstream refused", fmt.Errorf("climatiq: create key: %w", climatiq.ErrNotFound), statusBadGateway},
		{"anything else", errors.New("climatiq: create key: garbage JSON"), statusBadGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := upstreamError("creating key", tc.err)
			var coded logical.HTTPCodedError
			if !errors.As(err, &coded) || coded.Code() != tc.want {
				t.Fatalf("upstreamError(%v) = %v, want a coded %d", tc.err, err, tc.want)
			}
			if want := "creating key: " + tc.err.Error(); err.Error() != want {
				t.Fatalf("message %q, want %q", err.Error(), want)
			}
		})
	}
}

func TestUpstreamFailuresAreNot500(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"max_retries": 0, "request_timeout": "1s"})
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	tests := []struct {
		name   string
		inject func()
		want   int
	}{
		{"401", func() { e.climatiq.FailNext(1, http.StatusUnauthorized) }, statusBadGateway},
		{"403", func() { e.climatiq.FailNext(1, http.StatusForbidden) }, statusBadGateway},
		{"503", func() { e.climatiq.FailNext(1, http.StatusServiceUnavailable) }, statusBadGateway},
		{"timeout", func() { e.climatiq.SetLatency(2 * time.Second) }, statusGatewayTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.inject()
			defer e.climatiq.SetLatency(0)
			_, err := e.doErr(logical.ReadOperation, "creds/ci", nil)
			coded, ok := err.(logical.HTTPCodedError)
			if !ok || coded.Code() != tc.want {
				t.Fatalf("error %T %v, want a coded %d", err, err, tc.want)
			}
		})
	}
}
