package carbon

import (
	"context"
	"errors"
	"fmt"
	"testing"

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
