// Package climatiq is a client for Climatiq's management API (projects and
// API keys) and for the cheap check that a regular API key works. It knows
// HTTP and JSON and nothing of Vault.
package climatiq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-retryablehttp"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

const (
	DefaultManagementURL = "https://preview.api.climatiq.io/management/v1-preview1"
	DefaultAPIURL        = "https://api.climatiq.io"

	defaultTimeout     = 30 * time.Second
	defaultRetryBudget = 2 * time.Minute
	retryWaitMin       = 100 * time.Millisecond
	retryWaitMax       = 10 * time.Second

	// Response bodies are bounded: key lists carry every key of a project,
	// everything else is small.
	maxListBody  = 8 << 20
	maxOtherBody = 1 << 20

	userAgent = "vault-plugin-carbon"
)

// Options configure a Client.
type Options struct {
	ManagementURL string        // base for management calls
	APIURL        string        // base for regular-key calls
	ManagementKey string        // bearer token for management calls
	Timeout       time.Duration // per attempt; 0 means 30s
	MaxRetries    int           // retries after network errors and 5xx; 429 does not count
	RateLimit     float64       // max requests per second, retries included; 0 means no limit
	RetryBudget   time.Duration // overall time spent waiting out 429s; 0 means 2m
	Logger        hclog.Logger  // optional; never sees keys or bodies
	Transport     http.RoundTripper
}

// Project is a Climatiq project.
type Project struct {
	ID    string `json:"id"`
	Name  string `json:"project_name"`
	Owner struct {
		ID string `json:"id"`
	} `json:"owner"`
}

// APIKey is a regular Climatiq API key. Key carries its value.
type APIKey struct {
	ID      string `json:"id"`
	Name    string `json:"key_name"`
	Key     string `json:"key"`
	Project struct {
		ID string `json:"id"`
	} `json:"project"`
}

// ProjectID is the id of the project the key belongs to.
func (k APIKey) ProjectID() string { return k.Project.ID }

// Client talks to one Climatiq account with one management key.
type Client struct {
	managementURL string
	apiURL        string
	managementKey string
	retryBudget   time.Duration
	timeout       time.Duration
	logger        hclog.Logger
	gate          *upstream.Gate
	transport     http.RoundTripper

	// idempotent retries network errors and 5xx; create retries only what
	// proves the request was not acted on (see retryCreate).
	idempotent *retryablehttp.Client
	create     *retryablehttp.Client
}

// New returns a Client. It checks the options but makes no request.
func New(o Options) (*Client, error) {
	if o.ManagementKey == "" {
		return nil, errors.New("climatiq: management key is required")
	}
	mgmt, err := baseURL("management URL", o.ManagementURL)
	if err != nil {
		return nil, err
	}
	api, err := baseURL("API URL", o.APIURL)
	if err != nil {
		return nil, err
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
	if o.Transport == nil {
		o.Transport = cleanhttp.DefaultPooledTransport()
	}
	g := upstream.NewGate(o.RateLimit)
	httpClient := &http.Client{
		Transport: &upstream.Transport{Base: o.Transport, Gate: g},
		Timeout:   o.Timeout,
	}
	newRetryClient := func(policy retryablehttp.CheckRetry) *retryablehttp.Client {
		return &retryablehttp.Client{
			HTTPClient:   httpClient,
			RetryWaitMin: retryWaitMin,
			RetryWaitMax: retryWaitMax,
			RetryMax:     o.MaxRetries,
			CheckRetry:   policy,
			Backoff:      retryablehttp.DefaultBackoff,
			ErrorHandler: retryablehttp.PassthroughErrorHandler,
		}
	}
	return &Client{
		managementURL: mgmt,
		apiURL:        api,
		managementKey: o.ManagementKey,
		retryBudget:   o.RetryBudget,
		timeout:       o.Timeout,
		logger:        o.Logger,
		gate:          g,
		transport:     o.Transport,
		idempotent:    newRetryClient(retryIdempotent),
		create:        newRetryClient(retryCreate),
	}, nil
}

func baseURL(what, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("climatiq: %s %q is not an absolute http(s) URL", what, raw)
	}
	return strings.TrimRight(raw, "/"), nil
}

// Close releases idle connections.
func (c *Client) Close() {
	if t, ok := c.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// ListProjects lists the projects visible to the management key.
func (c *Client) ListProjects(ctx context.Context) ([]Project, error) {
	var out []Project
	err := c.management(ctx, "list projects", http.MethodGet, "/project", nil, &out, maxListBody)
	return out, err
}

// CreateProject creates a project.
func (c *Client) CreateProject(ctx context.Context, name string) (Project, error) {
	var out Project
	err := c.management(ctx, "create project", http.MethodPost, "/project", map[string]string{"project_name": name}, &out, maxOtherBody)
	return out, err
}

// RenameProject renames a project.
func (c *Client) RenameProject(ctx context.Context, id, name string) (Project, error) {
	var out Project
	err := c.management(ctx, "rename project", http.MethodPatch, "/project/"+url.PathEscape(id), map[string]string{"project_name": name}, &out, maxOtherBody)
	return out, err
}

// DeleteProject deletes a project and, upstream, all of its keys.
func (c *Client) DeleteProject(ctx context.Context, id string) error {
	return c.management(ctx, "delete project", http.MethodDelete, "/project/"+url.PathEscape(id), nil, nil, maxOtherBody)
}

// ListKeys lists a project's API keys, values included.
func (c *Client) ListKeys(ctx context.Context, projectID string) ([]APIKey, error) {
	var out []APIKey
	err := c.management(ctx, "list keys", http.MethodGet, "/project/"+url.PathEscape(projectID)+"/api-key", nil, &out, maxListBody)
	return out, err
}

// CreateKey creates an API key in a project. The create is not idempotent
// upstream, so it is retried only when the request provably was not acted
// on; callers give keys unique names so a lost answer can be resolved by a
// lookup.
func (c *Client) CreateKey(ctx context.Context, projectID, name string) (APIKey, error) {
	var out APIKey
	err := c.management(ctx, "create key", http.MethodPost, "/project/"+url.PathEscape(projectID)+"/api-key", map[string]string{"key_name": name}, &out, maxOtherBody)
	return out, err
}

// RenameKey renames an API key.
func (c *Client) RenameKey(ctx context.Context, keyID, name string) (APIKey, error) {
	var out APIKey
	err := c.management(ctx, "rename key", http.MethodPatch, "/api-key/"+url.PathEscape(keyID), map[string]string{"key_name": name}, &out, maxOtherBody)
	return out, err
}

// DeleteKey deletes an API key. A key that does not exist gives ErrNotFound.
func (c *Client) DeleteKey(ctx context.Context, keyID string) error {
	return c.management(ctx, "delete key", http.MethodDelete, "/api-key/"+url.PathEscape(keyID), nil, nil, maxOtherBody)
}

// CheckManagementKey proves the management key works with one cheap call.
func (c *Client) CheckManagementKey(ctx context.Context) error {
	_, err := c.ListProjects(ctx)
	return err
}

// CheckKey proves a regular API key works against the regular API.
func (c *Client) CheckKey(ctx context.Context, apiKey string) error {
	return c.do(ctx, "check key", http.MethodGet, c.apiURL+"/data/v1/unit-types", apiKey, nil, nil, maxListBody)
}

func (c *Client) management(ctx context.Context, op, method, path string, body, out any, limit int64) error {
	return c.do(ctx, op, method, c.managementURL+path, c.managementKey, body, out, limit)
}

// do sends one logical request. Network errors and 5xx are retried by
// go-retryablehttp within MaxRetries; a 429 is waited out here, outside that
// count, until the retry budget is spent.
func (c *Client) do(ctx context.Context, op, method, target, bearer string, body, out any, limit int64) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	client := c.idempotent
	if method == http.MethodPost {
		client = c.create
	}
	budgetEnd := time.Now().Add(c.retryBudget)
	for {
		req, err := retryablehttp.NewRequestWithContext(ctx, method, target, bytesOrNil(payload))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", userAgent)
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}

		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			c.logger.Debug("request failed", "op", op, "method", method, "path", logPath(target), "error", err)
			if ctx.Err() == nil && isTimeout(err) {
				return fmt.Errorf("climatiq: %s: no answer within the request timeout (%s): %w", op, c.timeout, err)
			}
			return fmt.Errorf("climatiq: %s: %w", op, err)
		}
		c.logger.Trace("request", "op", op, "method", method, "path", logPath(target), "status", resp.StatusCode, "duration", time.Since(start))

		if resp.StatusCode == http.StatusTooManyRequests {
			wait := upstream.RetryAfter(resp.Header, time.Now())
			drain(resp)
			c.gate.BackOff(wait)
			if time.Now().Add(wait).After(budgetEnd) {
				return &Error{Op: op, StatusCode: resp.StatusCode, Message: "rate limited; retry budget spent", RetryAfter: wait}
			}
			c.logger.Debug("rate limited; waiting", "op", op, "retry_after", wait)
			select {
			case <-ctx.Done():
				return fmt.Errorf("climatiq: %s: %w", op, ctx.Err())
			case <-time.After(wait):
			}
			continue
		}
		c.gate.Recover()
		return decodeResponse(op, resp, out, limit)
	}
}

func bytesOrNil(b []byte) any {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

func decodeResponse(op string, resp *http.Response, out any, limit int64) error {
	defer drain(resp)
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("climatiq: %s: reading response: %w", op, err)
	}
	if int64(len(data)) > limit {
		return &Error{Op: op, StatusCode: resp.StatusCode, Message: fmt.Sprintf("response larger than %d bytes", limit)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return newError(op, resp.StatusCode, resp.Header, data)
	}
	if out == nil {
		return nil
	}
	if err := decodeJSON(data, out); err != nil {
		return &Error{Op: op, StatusCode: resp.StatusCode, Message: "invalid JSON in response"}
	}
	return nil
}

// isTimeout reports whether a request died waiting for the upstream.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// drain reads a little of what is left so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// logPath keeps only the path of a URL for logs.
func logPath(target string) string {
	if u, err := url.Parse(target); err == nil {
		return u.Path
	}
	return ""
}
