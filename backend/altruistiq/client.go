// Package altruistiq exchanges Altruistiq OAuth client credentials for access
// tokens (RFC 6749 §4.4) and checks tokens against the public API. It knows
// HTTP and OAuth and nothing of Vault.
package altruistiq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

const (
	DefaultTokenURL = "https://app.altruistiq.com/api/public/v1/oauth2/token"
	DefaultAPIURL   = "https://app.altruistiq.com/api/public/v1"

	// AuthStyleParams sends the client credentials in the form body, as
	// Altruistiq expects; AuthStyleHeader sends them as HTTP Basic, as
	// PACT-style hosts expect.
	AuthStyleParams = "params"
	AuthStyleHeader = "header"

	defaultTimeout     = 30 * time.Second
	defaultEarlyExpiry = 30 * time.Second
	// defaultLifetime applies to tokens that arrive without expires_in:
	// without it they would be cached, and leased, forever.
	defaultLifetime = 5 * time.Minute
)

// Options configure a Client.
type Options struct {
	TokenURL, APIURL       string
	ClientID, ClientSecret string
	AuthStyle              string   // AuthStyleParams (default) or AuthStyleHeader
	Scopes                 []string // default scopes
	Timeout                time.Duration
	MaxRetries             int     // network errors and 5xx
	RateLimit              float64 // requests per second; 0 = no limit
	EarlyExpiry            time.Duration
	Logger                 hclog.Logger
	Transport              http.RoundTripper
}

// Token is an access token.
type Token struct {
	AccessToken string
	TokenType   string
	Expiry      time.Time
}

// Sentinels for errors.Is.
var (
	ErrUnauthorized = errors.New("altruistiq: unauthorized")
	ErrForbidden    = errors.New("altruistiq: forbidden")
	ErrNotFound     = errors.New("altruistiq: not found")
	ErrRateLimited  = errors.New("altruistiq: rate limited")
)

// Error is an upstream answer that was not a success: status and message,
// never a secret, a token or a raw body.
type Error struct {
	Op         string
	StatusCode int
	Message    string
}

func (e *Error) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("altruistiq: %s: %s", e.Op, e.Message)
	}
	s := fmt.Sprintf("altruistiq: %s: %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" && e.Message != http.StatusText(e.StatusCode) {
		s += ": " + e.Message
	}
	return s
}

// Is matches the sentinel for the error's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// Client holds the token caches of one set of client credentials.
type Client struct {
	opts       Options
	httpClient *http.Client
	// oauthCtx carries the retrying HTTP client into oauth2, whose token
	// sources keep the context they were created with.
	oauthCtx context.Context
	logger   hclog.Logger

	mu      sync.Mutex
	sources map[string]oauth2.TokenSource // by sorted, space-joined scopes
}

// New returns a Client; it makes no request.
func New(o Options) (*Client, error) {
	if o.ClientID == "" || o.ClientSecret == "" {
		return nil, errors.New("altruistiq: client id and secret are required")
	}
	for what, raw := range map[string]string{"token URL": o.TokenURL, "API URL": o.APIURL} {
		if u, err := url.Parse(raw); err != nil || u.Host == "" {
			return nil, fmt.Errorf("altruistiq: %s %q is not an absolute URL", what, raw)
		}
	}
	switch o.AuthStyle {
	case "":
		o.AuthStyle = AuthStyleParams
	case AuthStyleParams, AuthStyleHeader:
	default:
		return nil, fmt.Errorf("altruistiq: auth style %q is not %q or %q", o.AuthStyle, AuthStyleParams, AuthStyleHeader)
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.EarlyExpiry <= 0 {
		o.EarlyExpiry = defaultEarlyExpiry
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Transport == nil {
		o.Transport = cleanhttp.DefaultPooledTransport()
	}
	retrying := &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport: &upstream.Transport{Base: o.Transport, Gate: upstream.NewGate(o.RateLimit)},
			Timeout:   o.Timeout,
		},
		RetryWaitMin: 100 * time.Millisecond,
		RetryWaitMax: 10 * time.Second,
		RetryMax:     o.MaxRetries,
		CheckRetry:   retryablehttp.DefaultRetryPolicy,
		Backoff:      retryablehttp.DefaultBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	httpClient := retrying.StandardClient()
	return &Client{
		opts:       o,
		httpClient: httpClient,
		oauthCtx:   context.WithValue(context.Background(), oauth2.HTTPClient, httpClient),
		logger:     o.Logger,
		sources:    map[string]oauth2.TokenSource{},
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() {
	if t, ok := c.opts.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// Token returns the shared access token for a scope set (empty: the
// default scopes). A token is reused until EarlyExpiry before it expires,
// and concurrent callers wait for one upstream fetch.
func (c *Client) Token(ctx context.Context, scopes []string) (Token, error) {
	src := c.source(scopes)
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := src.Token()
		done <- result{tok, err}
	}()
	select {
	case <-ctx.Done():
		return Token{}, fmt.Errorf("altruistiq: token: %w", ctx.Err())
	case r := <-done:
		if r.err != nil {
			return Token{}, tokenError(r.err)
		}
		tokenType := r.tok.TokenType
		if tokenType == "" || strings.EqualFold(tokenType, "bearer") {
			tokenType = "Bearer"
		}
		return Token{AccessToken: r.tok.AccessToken, TokenType: tokenType, Expiry: r.tok.Expiry}, nil
	}
}

// Verify proves the client credentials work by fetching a token for the
// default scopes.
func (c *Client) Verify(ctx context.Context) error {
	_, err := c.Token(ctx, nil)
	return err
}

// CheckToken proves an access token works against the public API.
func (c *Client) CheckToken(ctx context.Context, accessToken string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.opts.APIURL, "/")+"/organization/", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("altruistiq: check token: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &Error{Op: "check token", StatusCode: resp.StatusCode, Message: messageOf(body, resp.StatusCode)}
	}
	return nil
}

func (c *Client) source(scopes []string) oauth2.TokenSource {
	if len(scopes) == 0 {
		scopes = c.opts.Scopes
	}
	sorted := append([]string(nil), scopes...)
	sort.Strings(sorted)
	key := strings.Join(sorted, " ")

	c.mu.Lock()
	defer c.mu.Unlock()
	if src, ok := c.sources[key]; ok {
		return src
	}
	style := oauth2.AuthStyleInParams
	if c.opts.AuthStyle == AuthStyleHeader {
		style = oauth2.AuthStyleInHeader
	}
	cfg := &clientcredentials.Config{
		ClientID:     c.opts.ClientID,
		ClientSecret: c.opts.ClientSecret,
		TokenURL:     c.opts.TokenURL,
		Scopes:       sorted,
		AuthStyle:    style,
	}
	src := oauth2.ReuseTokenSourceWithExpiry(nil, boundedLifetime{cfg.TokenSource(c.oauthCtx)}, c.opts.EarlyExpiry)
	c.sources[key] = src
	return src
}

// boundedLifetime gives tokens without expires_in a finite lifetime.
type boundedLifetime struct{ src oauth2.TokenSource }

func (b boundedLifetime) Token() (*oauth2.Token, error) {
	tok, err := b.src.Token()
	if err == nil && tok.Expiry.IsZero() {
		tok.Expiry = time.Now().Add(defaultLifetime)
	}
	return tok, err
}

// tokenError maps oauth2's errors to *Error without echoing bodies.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		msg := messageOf(re.Body, re.Response.StatusCode)
		if re.ErrorDescription != "" {
			msg = upstream.CleanMessage(re.ErrorDescription)
		}
		return &Error{Op: "token", StatusCode: re.Response.StatusCode, Message: msg}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("altruistiq: token: %w", err)
	}
	// oauth2 reports unparsable or incomplete token answers as plain errors.
	return &Error{Op: "token", Message: "invalid token response from the token endpoint"}
}

// messageOf extracts the message of an error body: Altruistiq answers
// {"status": "Unauthorized"}, RFC 6749 endpoints {error, error_description}.
func messageOf(body []byte, status int) string {
	var payload struct {
		Status           string `json:"status"`
		Message          string `json:"message"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(body, &payload) == nil {
		for _, m := range []string{payload.ErrorDescription, payload.Message, payload.Error, payload.Status} {
			if m = upstream.CleanMessage(m); m != "" {
				return m
			}
		}
	}
	return http.StatusText(status)
}
