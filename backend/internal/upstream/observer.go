package upstream

import (
	"context"
	"time"
)

// Observer hears what a wire does, for metrics. Its methods are called on
// the request path, concurrently: they must be cheap and must not block.
type Observer interface {
	// Attempted: one attempt of operation got status back after took;
	// status 0 is no answer (a network error or timeout).
	Attempted(operation string, status int, took time.Duration)
	// Retried: an attempt of operation is sent again (a network error or
	// 5xx, within MaxRetries).
	Retried(operation string)
	// Waited: a request waited before it was sent, at the connection's
	// rate limit (WaitRateLimit) or for a 429's Retry-After (WaitRetryAfter).
	Waited(reason string, took time.Duration)
}

// The reasons an Observer is told a request waited.
const (
	WaitRateLimit  = "rate_limit"
	WaitRetryAfter = "retry_after"
)

type noObserver struct{}

func (noObserver) Attempted(string, int, time.Duration) {}
func (noObserver) Retried(string)                       {}
func (noObserver) Waited(string, time.Duration)         {}

type operationKey struct{}

// WithOperation names the operation a request's attempts belong to, for
// the Observer ("create key", "fetch token").
func WithOperation(ctx context.Context, operation string) context.Context {
	return context.WithValue(ctx, operationKey{}, operation)
}

// operationOf is the operation named by WithOperation, or "other".
func operationOf(ctx context.Context) string {
	if op, ok := ctx.Value(operationKey{}).(string); ok {
		return op
	}
	return "other"
}
