// Package climatiq is a client for Climatiq's management API (projects and
// API keys) and for the cheap check that a regular API key works. It knows
// HTTP and JSON and nothing of Vault.
package climatiq

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

const (
	// DefaultManagementURL is the base of the management API. It is a
	// preview whose version is part of the path, so callers keep it in
	// configuration.
	DefaultManagementURL = "https://preview.api.climatiq.io/management/v1-preview1"
	// DefaultAPIURL is the base of the regular API.
	DefaultAPIURL = "https://api.climatiq.io"

	platform = "climatiq"

	// Response bodies are bounded: key lists carry every key of a project,
	// everything else is small.
	maxListBody  = 8 << 20
	maxOtherBody = 1 << 20
)

// Options configure a Client.
type Options struct {
	ManagementURL string        // required; base for management calls
	APIURL        string        // required; base for regular-key calls
	ManagementKey string        // required; bearer token for management calls
	Timeout       time.Duration // per attempt; 0 means 30s
	MaxRetries    int           // retries after network errors and 5xx; 429s do not count
	RateLimit     float64       // max requests per second, retries included; 0 means no limit
	RetryBudget   time.Duration // overall time spent waiting out 429s; 0 means 50s
	Logger        hclog.Logger  // optional; never sees keys or bodies
	Transport     http.RoundTripper
	UserAgent     string   // what every request says it is; "" means "vault-plugin-carbon"
	Observer      Observer // optional; told of every attempt, retry and wait, for metrics
}

// Observer hears what the client's requests do, for metrics.
type Observer = upstream.Observer

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
	// redact knows the management key in every form an upstream may echo
	// it in.
	redact upstream.Redactor
	wire   *upstream.Wire
}

// New returns a Client. It checks the options but makes no request.
func New(o Options) (*Client, error) {
	if o.ManagementKey == "" {
		return nil, errors.New("climatiq: management key is required")
	}
	if err := upstream.CheckURL(platform, "management URL", o.ManagementURL, true); err != nil {
		return nil, err
	}
	if err := upstream.CheckURL(platform, "API URL", o.APIURL, true); err != nil {
		return nil, err
	}
	wire, err := upstream.NewWire(upstream.Options{
		Platform:    platform,
		Timeout:     o.Timeout,
		MaxRetries:  o.MaxRetries,
		RateLimit:   o.RateLimit,
		RetryBudget: o.RetryBudget,
		Logger:      o.Logger,
		Transport:   o.Transport,
		UserAgent:   o.UserAgent,
		Observer:    o.Observer,
	})
	if err != nil {
		return nil, err
	}
	return &Client{
		managementURL: strings.TrimRight(o.ManagementURL, "/"),
		apiURL:        strings.TrimRight(o.APIURL, "/"),
		managementKey: o.ManagementKey,
		redact:        upstream.NewRedactor(o.ManagementKey),
		wire:          wire,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.wire.Close() }

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

// CreateProject creates a project whose name is unique; a create that
// fails ambiguously is resolved by name (see createUnique).
func (c *Client) CreateProject(ctx context.Context, name string) (Project, error) {
	return createUnique(ctx, c, uniqueCreate[Project]{
		name:   name,
		post:   func(ctx context.Context) (Project, error) { return c.postProject(ctx, name) },
		list:   c.ListProjects,
		nameOf: func(p Project) string { return p.Name },
		remove: func(ctx context.Context, p Project) error { return c.DeleteProject(ctx, p.ID) },
	})
}

func (c *Client) postProject(ctx context.Context, name string) (Project, error) {
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

// DeleteProject deletes a project and, upstream, all of its keys. A
// project that is gone gives an error matching ErrNotFound: also when the
// delete is answered 400 or 403, if the project list confirms it gone.
func (c *Client) DeleteProject(ctx context.Context, id string) error {
	const op = "delete project"
	if id == "" {
		return missingID(op, "project")
	}
	err := c.management(ctx, op, http.MethodDelete, "/project/"+url.PathEscape(id), nil, nil, maxOtherBody)
	e, ok := mayMeanAbsent(err, http.StatusBadRequest, http.StatusForbidden)
	if !ok {
		return err
	}
	listed, listErr := c.projectListed(ctx, id)
	return confirmAbsence(e, listed, listErr)
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

// CreateKey creates an API key in a project. Its name must be unique (the
// caller puts a nonce in it): a create that fails ambiguously is resolved
// by looking the key up by name (see createUnique).
func (c *Client) CreateKey(ctx context.Context, projectID, name string) (APIKey, error) {
	if projectID == "" {
		return APIKey{}, missingID("create key", "project")
	}
	return createUnique(ctx, c, uniqueCreate[APIKey]{
		name:   name,
		post:   func(ctx context.Context) (APIKey, error) { return c.postKey(ctx, projectID, name) },
		list:   func(ctx context.Context) ([]APIKey, error) { return c.ListKeys(ctx, projectID) },
		nameOf: func(k APIKey) string { return k.Name },
		remove: func(ctx context.Context, k APIKey) error { return c.DeleteKey(ctx, k.ID) },
	})
}

func (c *Client) postKey(ctx context.Context, projectID, name string) (APIKey, error) {
	const op = "create key"
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

// Pause waits before trying a failed request again by hand (attempt counts
// from 0), with the client's own jittered exponential backoff; it returns
// early with ctx's error.
func (c *Client) Pause(ctx context.Context, attempt int) error { return c.wire.Pause(ctx, attempt) }

// CheckManagementKey proves the management key works with one cheap call,
// answered as the management API documents it (a JSON list of projects):
// any other 2xx, such as a web page, is not the API at all.
func (c *Client) CheckManagementKey(ctx context.Context) error {
	var projects []Project
	return c.management(ctx, "check management key", http.MethodGet, "/project", nil, &projects, maxListBody)
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
