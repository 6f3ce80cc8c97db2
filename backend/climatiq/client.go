// Package climatiq is a client for Climatiq's management API (projects and
// API keys) and for the cheap check that a regular API key works. It knows
// HTTP and JSON and nothing of Vault.
package climatiq

import (
	"context"
	"errors"
	"fmt"
	"math"
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
	// DefaultManagementURL is the base of the management API. It is a
	// preview whose version is part of the path, so callers keep it in
	// configuration.
	DefaultManagementURL = "https://preview.api.climatiq.io/management/v1-preview1"
	// DefaultAPIURL is the base of the regular API.
	DefaultAPIURL = "https://api.climatiq.io"

	defaultTimeout     = 30 * time.Second
	defaultRetryBudget = 2 * time.Minute
	retryWaitMin       = 100 * time.Millisecond
	retryWaitMax       = 10 * time.Second

	// Response bodies are bounded: key lists carry every key of a project,
	// everything else is small.
	maxListBody  = 8 << 20
	maxOtherBody = 1 << 20
	maxErrorBody = 64 << 10

	userAgent = "vault-plugin-carbon"
)

// Options configure a Client.
type Options struct {
	ManagementURL string        // required; base for management calls
	APIURL        string        // required; base for regular-key calls
	ManagementKey string        // required; bearer token for management calls
	Timeout       time.Duration // per attempt; 0 means 30s
	MaxRetries    int           // retries after network errors and 5xx; 429s do not count
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

// Client talks to one Climatiq account with one management key. It is safe
// for concurrent use.
type Client struct {
	managementURL string
	apiURL        string
	managementKey string
	timeout       time.Duration
	retryBudget   time.Duration
	logger        hclog.Logger
	gate          *upstream.Gate
	transport     http.RoundTripper

	// idempotent retries network errors and 5xx; create retries only what
	// proves the upstream did not act on the request (see retryCreate).
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
	if o.MaxRetries < 0 {
		return nil, fmt.Errorf("climatiq: max retries must not be negative, got %d", o.MaxRetries)
	}
	if o.RateLimit < 0 || math.IsNaN(o.RateLimit) || math.IsInf(o.RateLimit, 0) {
		return nil, fmt.Errorf("climatiq: rate limit must be a non-negative number, got %v", o.RateLimit)
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

	gate := upstream.NewGate(o.RateLimit)
	httpClient := &http.Client{
		// No http.Client.Timeout: it would also run while a request queues
		// at the rate limiter. attemptTransport starts the clock after it.
		Transport: &attemptTransport{base: o.Transport, gate: gate, timeout: o.Timeout},
		// Climatiq does not redirect; following one would turn a create
		// into a GET (or send the key elsewhere), so a 3xx is an error.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	logger := o.Logger
	newRetryClient := func(policy retryablehttp.CheckRetry) *retryablehttp.Client {
		return &retryablehttp.Client{
			HTTPClient:   httpClient,
			RetryWaitMin: retryWaitMin,
			RetryWaitMax: retryWaitMax,
			RetryMax:     o.MaxRetries,
			CheckRetry:   policy,
			Backoff:      backoff,
			ErrorHandler: retryablehttp.PassthroughErrorHandler,
			RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, attempt int) {
				if attempt > 0 {
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
	return &Client{
		managementURL: mgmt,
		apiURL:        api,
		managementKey: o.ManagementKey,
		timeout:       o.Timeout,
		retryBudget:   o.RetryBudget,
		logger:        logger,
		gate:          gate,
		transport:     o.Transport,
		idempotent:    newRetryClient(retryIdempotent),
		create:        newRetryClient(retryCreate),
	}, nil
}

// baseURL checks that raw is an absolute http(s) URL that paths can be
// appended to. Whether plain http is acceptable is the caller's policy.
func baseURL(what, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("climatiq: %s %q is not an absolute http(s) base URL", what, raw)
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
	const op = "list projects"
	var out []Project
	if err := c.management(ctx, op, http.MethodGet, "/project", nil, &out, maxListBody); err != nil {
		return nil, err
	}
	for _, p := range out {
		if p.ID == "" {
			return nil, invalidResponse(op, "a project without an id")
		}
	}
	return out, nil
}

// CreateProject creates a project. Like CreateKey it is retried only when
// the upstream provably did not act on it.
func (c *Client) CreateProject(ctx context.Context, name string) (Project, error) {
	const op = "create project"
	var out Project
	if err := c.management(ctx, op, http.MethodPost, "/project", map[string]string{"project_name": name}, &out, maxOtherBody); err != nil {
		return Project{}, err
	}
	if out.ID == "" {
		return Project{}, invalidResponse(op, "the project has no id")
	}
	return out, nil
}

// RenameProject renames a project.
func (c *Client) RenameProject(ctx context.Context, id, name string) (Project, error) {
	const op = "rename project"
	if id == "" {
		return Project{}, missingID(op, "project")
	}
	var out Project
	err := c.management(ctx, op, http.MethodPatch, "/project/"+url.PathEscape(id), map[string]string{"project_name": name}, &out, maxOtherBody)
	if err != nil {
		return Project{}, err
	}
	return out, nil
}

// DeleteProject deletes a project and, upstream, all of its keys.
func (c *Client) DeleteProject(ctx context.Context, id string) error {
	const op = "delete project"
	if id == "" {
		return missingID(op, "project")
	}
	return c.management(ctx, op, http.MethodDelete, "/project/"+url.PathEscape(id), nil, nil, maxOtherBody)
}

// ListKeys lists a project's API keys, values included.
func (c *Client) ListKeys(ctx context.Context, projectID string) ([]APIKey, error) {
	const op = "list keys"
	if projectID == "" {
		return nil, missingID(op, "project")
	}
	var out []APIKey
	if err := c.management(ctx, op, http.MethodGet, "/project/"+url.PathEscape(projectID)+"/api-key", nil, &out, maxListBody); err != nil {
		return nil, err
	}
	for _, k := range out {
		if k.ID == "" {
			return nil, invalidResponse(op, "a key without an id")
		}
	}
	return out, nil
}

// CreateKey creates an API key in a project. The create is not idempotent
// upstream, so it is retried only when the request provably was not acted
// on; callers give keys unique names so a lost answer can be resolved by a
// lookup.
func (c *Client) CreateKey(ctx context.Context, projectID, name string) (APIKey, error) {
	const op = "create key"
	if projectID == "" {
		return APIKey{}, missingID(op, "project")
	}
	var out APIKey
	err := c.management(ctx, op, http.MethodPost, "/project/"+url.PathEscape(projectID)+"/api-key", map[string]string{"key_name": name}, &out, maxOtherBody)
	if err != nil {
		return APIKey{}, err
	}
	if out.ID == "" || out.Key == "" {
		return APIKey{}, invalidResponse(op, "the key has no id or no value")
	}
	return out, nil
}

// RenameKey renames an API key.
func (c *Client) RenameKey(ctx context.Context, keyID, name string) (APIKey, error) {
	const op = "rename key"
	if keyID == "" {
		return APIKey{}, missingID(op, "key")
	}
	var out APIKey
	if err := c.management(ctx, op, http.MethodPatch, "/api-key/"+url.PathEscape(keyID), map[string]string{"key_name": name}, &out, maxOtherBody); err != nil {
		return APIKey{}, err
	}
	return out, nil
}

// DeleteKey deletes an API key. A key that does not exist gives ErrNotFound.
func (c *Client) DeleteKey(ctx context.Context, keyID string) error {
	const op = "delete key"
	if keyID == "" {
		return missingID(op, "key")
	}
	return c.management(ctx, op, http.MethodDelete, "/api-key/"+url.PathEscape(keyID), nil, nil, maxOtherBody)
}

// CheckManagementKey proves the management key works with one cheap call.
func (c *Client) CheckManagementKey(ctx context.Context) error {
	return c.management(ctx, "check management key", http.MethodGet, "/project", nil, nil, maxListBody)
}

// CheckKey proves a regular API key works against the regular API.
func (c *Client) CheckKey(ctx context.Context, apiKey string) error {
	const op = "check key"
	if apiKey == "" {
		return fmt.Errorf("climatiq: %s: empty API key", op)
	}
	return c.do(ctx, op, http.MethodGet, c.apiURL+"/data/v1/unit-types", apiKey, nil, nil, maxListBody)
}

func (c *Client) management(ctx context.Context, op, method, path string, body, out any, limit int64) error {
	return c.do(ctx, op, method, c.managementURL+path, c.managementKey, body, out, limit)
}

func missingID(op, what string) error {
	return fmt.Errorf("climatiq: %s: empty %s id", op, what)
}
