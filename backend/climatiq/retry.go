package climatiq

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/hashicorp/go-retryablehttp"
)

// retryIdempotent retries GET, PATCH and DELETE after network errors and
// 5xx. A 429 is handed back to Client.do, which waits it out without
// counting it against MaxRetries.
func retryIdempotent(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
		return false, nil
	}
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

// retryCreate retries a POST only when the upstream provably did not act on
// it: the connection was never made, or the answer was 503 Service
// Unavailable. A timeout or another 5xx may follow a create that happened;
// retrying it could create the key twice.
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
