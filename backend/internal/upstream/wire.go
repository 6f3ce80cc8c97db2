package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-retryablehttp"
)

const (
	defaultTimeout = 30 * time.Second
	// defaultRetryBudget ends a request that keeps being rate-limited
	// inside the CLI's 60 s: Vault passes plugins no request deadline.
	defaultRetryBudget = 50 * time.Second
	// maxIdleConnsPerHost is how many kept-alive connections a client
	// keeps per upstream host (see NewWire).
	maxIdleConnsPerHost = 64
	// UserAgent is what a request says it is when its client was given
	// no Options.UserAgent.
	UserAgent = "vault-plugin-carbon"
)

// Options are what both clients' options have in common.
type Options struct {
	Platform    string        // the client, as errors name it: "climatiq"
	Timeout     time.Duration // per attempt; 0 means 30s
	MaxRetries  int           // retries after network errors and 5xx; 429s do not count
	RateLimit   float64       // max requests per second, retries included; 0 means no limit
	RetryBudget time.Duration // overall time spent waiting out 429s; 0 means 50s
	Logger      hclog.Logger  // optional; never sees secrets or bodies
	Transport   http.RoundTripper
	UserAgent   string   // what every attempt says it is; "" means UserAgent
	Observer    Observer // optional; told of every attempt, retry and wait
}

// Wire is the path every request of one client takes, outermost first:
//
//	Send              waits out 429s (Retry-After) outside MaxRetries
//	retryablehttp     Idempotent or Create: retries up to MaxRetries
//	attemptTransport  paces each attempt at the gate, then times it out
//	Options.Transport
type Wire struct {
	platform   string
	maxRetries int
	timeout    time.Duration
	budget     time.Duration
	logger     hclog.Logger
	gate       *Gate
	base       http.RoundTripper
	observer   Observer

	// Idempotent retries network errors and 5xx; Create retries only what
	// proves the upstream did not act on the request.
	Idempotent *retryablehttp.Client
	Create     *retryablehttp.Client
}

// NewWire checks the options, fills in their defaults and builds the wire.
func NewWire(o Options) (*Wire, error) {
	if o.MaxRetries < 0 {
		return nil, fmt.Errorf("%s: max retries must not be negative, got %d", o.Platform, o.MaxRetries)
	}
	if o.RateLimit < 0 || math.IsNaN(o.RateLimit) || math.IsInf(o.RateLimit, 0) {
		return nil, fmt.Errorf("%s: rate limit must be a non-negative number, got %v", o.Platform, o.RateLimit)
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.RetryBudget <= 0 {
		o.RetryBudget = defaultRetryBudget
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.UserAgent == "" {
		o.UserAgent = UserAgent
	}
	if o.Observer == nil {
		o.Observer = noObserver{}
	}
	if o.Transport == nil {
		t := cleanhttp.DefaultPooledTransport()
		// A client talks to one or two hosts. cleanhttp keeps
		// GOMAXPROCS+1 idle connections per host: under more concurrent
		// issuances than that, every answer beyond it closes its
		// connection and the next request dials (and, on https, shakes
		// hands) again. Keep enough for Vault's concurrency.
		t.MaxIdleConnsPerHost = maxIdleConnsPerHost
		t.MaxIdleConns = 2 * maxIdleConnsPerHost
		o.Transport = t
	}
	w := &Wire{
		platform:   o.Platform,
		maxRetries: o.MaxRetries,
		timeout:    o.Timeout,
		budget:     o.RetryBudget,
		logger:     o.Logger,
		gate:       NewGate(o.RateLimit),
		base:       o.Transport,
		observer:   o.Observer,
	}
	httpClient := &http.Client{
		// No http.Client.Timeout: it would also run while a request queues
		// at the rate limiter. attemptTransport starts the clock after it.
		Transport:     &attemptTransport{base: o.Transport, gate: w.gate, timeout: o.Timeout, userAgent: o.UserAgent, observer: o.Observer},
		CheckRedirect: NoRedirects,
	}
	w.Idempotent = w.newRetryClient(httpClient, o.MaxRetries, retryIdempotent)
	w.Create = w.newRetryClient(httpClient, o.MaxRetries, retryCreate)
	return w, nil
}

func (w *Wire) newRetryClient(httpClient *http.Client, maxRetries int, policy retryablehttp.CheckRetry) *retryablehttp.Client {
	logger, observer := w.logger, w.observer
	return &retryablehttp.Client{
		HTTPClient:   httpClient,
		RetryWaitMin: retryWaitMin,
		RetryWaitMax: retryWaitMax,
		RetryMax:     maxRetries,
		CheckRetry:   policy,
		Backoff:      backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, attempt int) {
			if attempt > 0 {
				observer.Retried(operationOf(req.Context()))
				logger.Debug("retrying request", "method", req.Method, "path", req.URL.Path, "attempt", attempt+1)
			}
		},
		ResponseLogHook: func(_ retryablehttp.Logger, resp *http.Response) {
			if resp.Request != nil { // a test transport may leave it out
				logger.Trace("response", "method", resp.Request.Method, "path", resp.Request.URL.Path, "status", resp.StatusCode)
			}
		},
	}
}

// NoRedirects makes a 3xx an error answer. The upstreams do not redirect;
// following one would turn a create into a GET, or send a credential to
// another host.
func NoRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close releases idle connections. Requests in flight are left to finish.
func (w *Wire) Close() {
	if t, ok := w.base.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// Logger is the client's logger.
func (w *Wire) Logger() hclog.Logger { return w.logger }

// MaxRetries is how often a failed request may be tried again.
func (w *Wire) MaxRetries() int { return w.maxRetries }

// Failed words a request that got no answer: it names the request timeout
// when the upstream was too slow, rather than the caller's ctx or the
// client's own rate limit.
func (w *Wire) Failed(ctx context.Context, op string, err error) error {
	if ctx.Err() == nil && !errors.Is(err, errLimiterDeadline) && isTimeout(err) {
		return fmt.Errorf("%s: %s: no answer within the request timeout (%s): %w", w.platform, op, w.timeout, err)
	}
	return fmt.Errorf("%s: %s: %w", w.platform, op, err)
}

// RoundTripper sends requests the way Send does, through Idempotent, for
// clients whose requests another library makes (oauth2). A 429 that is
// given up on is the answer; a ctx that ends during a wait, the error.
func (w *Wire) RoundTripper() http.RoundTripper {
	return wireTransport{w: w, retrying: &retryablehttp.RoundTripper{Client: w.Idempotent}}
}

type wireTransport struct {
	w        *Wire
	retrying *retryablehttp.RoundTripper
}

func (t wireTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The body is kept so that the request can be sent again.
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	ctx := req.Context()
	resp, err := t.w.Send(ctx, func() (*http.Response, error) {
		attempt := req.Clone(ctx)
		if body != nil {
			attempt.Body = io.NopCloser(bytes.NewReader(body))
			attempt.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			attempt.ContentLength = int64(len(body))
		}
		return t.retrying.RoundTrip(attempt)
	}, "method", req.Method, "path", req.URL.Path)
	var rateLimited *RateLimitedError
	if errors.As(err, &rateLimited) {
		if rateLimited.Cause != nil {
			return nil, rateLimited.Cause
		}
		return rateLimited.Last, nil
	}
	return resp, err
}

// CheckURL checks that raw is an absolute http(s) URL without a fragment;
// a base, which paths are appended to, must not have a query either.
// Whether plain http is acceptable is the caller's policy.
func CheckURL(platform, what, raw string, base bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.Fragment != "" {
		return urlError(platform, what, raw, base)
	}
	if base && u.RawQuery != "" {
		return urlError(platform, what, raw, base)
	}
	return nil
}

func urlError(platform, what, raw string, base bool) error {
	kind := "URL"
	if base {
		kind = "base URL"
	}
	return fmt.Errorf("%s: %s %q is not an absolute http(s) %s", platform, what, raw, kind)
}
