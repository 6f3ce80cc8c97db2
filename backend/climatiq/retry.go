package climatiq

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// retryIdempotent retries GET, PATCH and DELETE after network errors and
// 5xx (but 501). A 429 is handed back to Client.do, which waits it out
// without counting it against MaxRetries.
func retryIdempotent(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if errors.Is(err, errLimiterDeadline) {
		return false, nil
	}
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		return false, nil
	}
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

// retryCreate retries a POST only when the upstream provably did not act on
// it: the connection was never made, or the answer was 503 Service
// Unavailable. A timeout or another 5xx may follow a create that happened;
// retrying it could create the key twice. 429s go back to Client.do.
func retryCreate(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		var opErr *net.OpError
		return errors.As(err, &opErr) && opErr.Op == "dial", nil
	}
	return resp.StatusCode == http.StatusServiceUnavailable, nil
}

// backoff waits a 503's Retry-After (capped like a 429's), else backs off
// exponentially with jitter, so the requests of a mass revocation that
// failed together do not retry together.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
		return upstream.RetryAfter(resp.Header, time.Now())
	}
	// Passing no response keeps retryablehttp from reading an uncapped
	// Retry-After itself.
	wait := retryablehttp.DefaultBackoff(minWait, maxWait, attempt, nil)
	return wait/2 + rand.N(wait/2+1)
}
