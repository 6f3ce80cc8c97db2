// Package altruistiq exchanges Altruistiq OAuth client credentials for access
// tokens (RFC 6749 §4.4 client-credentials grant), caches them per scope set,
// and checks tokens against the public API. It knows HTTP and OAuth and
// nothing of Vault.
package altruistiq

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

const (
	// DefaultTokenURL is Altruistiq's OAuth token endpoint.
	DefaultTokenURL = "https://app.altruistiq.com/api/public/v1/oauth2/token"
	// DefaultAPIURL is the base of Altruistiq's public API.
	DefaultAPIURL = "https://app.altruistiq.com/api/public/v1"

	// AuthStyleParams sends the client credentials in the form body, as
	// Altruistiq expects; AuthStyleHeader sends them as HTTP Basic, as
	// PACT-style hosts expect.
	AuthStyleParams = "params"
	AuthStyleHeader = "header"

	defaultEarlyExpiry = 30 * time.Second
	// defaultLifetime is assumed for tokens that come without expires_in
	// (or with 0). Such a token might live for ever, but the leases that
	// carry it must end, and a token cached for ever would never show a
	// rotated secret failing.
	defaultLifetime = 5 * time.Minute
	platform        = "altruistiq"
	opToken         = "token"
	opCheckToken    = "check token"
)

// Options configure a Client.
type Options struct {
	TokenURL, APIURL       string        // required
	ClientID, ClientSecret string        // required
	AuthStyle              string        // AuthStyleParams (default) or AuthStyleHeader
	Scopes                 []string      // default scopes
	Timeout                time.Duration // per attempt; 0 means 30s
	MaxRetries             int           // retries after network errors and 5xx; 429s do not count
	RateLimit              float64       // max requests per second, retries included; 0 means no limit
	EarlyExpiry            time.Duration // a cached token is replaced this long before it expires; 0 means 30s
	Logger                 hclog.Logger  // optional; never sees secrets or tokens
	Transport              http.RoundTripper
	UserAgent              string   // what every request says it is; "" means "vault-plugin-carbon"
	Observer               Observer // optional; told of every attempt, retry and wait, for metrics
}

// Observer hears what the client's requests do, for metrics.
type Observer = upstream.Observer

// Token is an access token. Expiry is never zero: a token that came without
// expires_in is given a lifetime of 5 minutes.
type Token struct {
	AccessToken string
	TokenType   string
	Expiry      time.Time
}

// Client holds one set of client credentials and the tokens fetched with
// them, one per scope set. It is safe for concurrent use.
type Client struct {
	apiURL      string
	earlyExpiry time.Duration
	scopes      []string // default, normalised
	logger      hclog.Logger
	wire        *upstream.Wire
	redact      upstream.Redactor
	credentials credentials

	// httpClient sends API calls; oauthCtx carries tokenHTTPClient into
	// oauth2, whose token sources keep the context they were created with.
	httpClient *http.Client
	oauthCtx   context.Context

	mu      sync.Mutex
	sources map[string]oauth2.TokenSource // by normalised scope set

	warnedShortLifetime atomic.Bool // the warning would repeat on every request
}

// New returns a Client. It checks the options but makes no request.
func New(o Options) (*Client, error) {
	if o.ClientID == "" || o.ClientSecret == "" {
		return nil, errors.New("altruistiq: client id and client secret are required")
	}
	if err := upstream.CheckURL(platform, "token URL", o.TokenURL, false); err != nil {
		return nil, err
	}
	if err := upstream.CheckURL(platform, "API URL", o.APIURL, false); err != nil {
		return nil, err
	}
	authStyle := oauth2.AuthStyleInParams
	switch o.AuthStyle {
	case "", AuthStyleParams:
	case AuthStyleHeader:
		authStyle = oauth2.AuthStyleInHeader
	default:
		return nil, fmt.Errorf("altruistiq: auth style %q is not %q or %q", o.AuthStyle, AuthStyleParams, AuthStyleHeader)
	}
	if o.EarlyExpiry <= 0 {
		o.EarlyExpiry = defaultEarlyExpiry
	}
	// The retry budget for 429s is the wire's default: waiting them out
	// (rather than counting them as failures) keeps a burst of issuance
	// from failing as a whole.
	wire, err := upstream.NewWire(upstream.Options{Platform: platform, Timeout: o.Timeout, MaxRetries: o.MaxRetries,
		RateLimit: o.RateLimit, Logger: o.Logger, Transport: o.Transport, UserAgent: o.UserAgent, Observer: o.Observer})
	if err != nil {
		return nil, err
	}
	paced := wire.RoundTripper()
	tokenHTTPClient := &http.Client{Transport: tokenResponseCheck{next: paced}, CheckRedirect: upstream.NoRedirects}

	// Both auth styles' wire forms: the form body's escaped values and
	// the Basic header's base64 of the pair.
	redact := upstream.NewRedactor(o.ClientSecret).WithBasicAuth(o.ClientID, o.ClientSecret)
	if len(o.ClientID) >= minRedactedIDLength {
		redact = redact.With(o.ClientID)
	}
	return &Client{
		apiURL:      strings.TrimRight(o.APIURL, "/"),
		earlyExpiry: o.EarlyExpiry,
		scopes:      normaliseScopes(o.Scopes),
		logger:      wire.Logger(),
		wire:        wire,
		redact:      redact,
		credentials: credentials{
			clientID:     o.ClientID,
			clientSecret: o.ClientSecret,
			tokenURL:     o.TokenURL,
			authStyle:    authStyle,
		},
		httpClient: &http.Client{Transport: paced, CheckRedirect: upstream.NoRedirects},
		oauthCtx:   context.WithValue(context.Background(), oauth2.HTTPClient, tokenHTTPClient),
		sources:    map[string]oauth2.TokenSource{},
	}, nil
}

// Close releases idle connections. Requests in flight are left to finish.
func (c *Client) Close() { c.wire.Close() }

// Token returns a shared access token for the scope set (nil or empty: the
// default scopes). A token is reused until EarlyExpiry before it expires,
// and concurrent callers share one upstream fetch. When ctx ends first,
// Token returns its error; the fetch goes on and its token is cached.
func (c *Client) Token(ctx context.Context, scopes []string) (Token, error) {
	return c.await(ctx, c.source(scopes).Token)
}

// Verify proves the client credentials work: it always fetches a new token
// for the default scopes (a cached one would prove nothing about the
// current secret) and caches it.
func (c *Client) Verify(ctx context.Context) error {
	key, scopes := c.scopeSet(nil)
	f := c.newFetcher(scopes)
	_, err := c.await(ctx, func() (*oauth2.Token, error) {
		tok, err := f.Token()
		if err == nil {
			src := oauth2.ReuseTokenSourceWithExpiry(tok, f, c.earlyExpiry)
			c.mu.Lock()
			c.sources[key] = src
			c.mu.Unlock()
		}
		return tok, err
	})
	return err
}

// CheckToken proves an access token works against the public API with one
// cheap call, GET {APIURL}/organization/.
func (c *Client) CheckToken(ctx context.Context, accessToken string) error {
	if accessToken == "" {
		return fmt.Errorf("altruistiq: %s: empty access token", opCheckToken)
	}
	req, err := http.NewRequestWithContext(upstream.WithOperation(ctx, opCheckToken), http.MethodGet, c.apiURL+"/organization/", nil)
	if err != nil {
		return fmt.Errorf("altruistiq: %s: %w", opCheckToken, err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return c.wire.Failed(ctx, opCheckToken, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		upstream.Drain(resp)
		return nil
	}
	body := upstream.ReadErrorBody(resp)
	if redirected := upstream.Redirected(resp.StatusCode, resp.Header); redirected != "" {
		return &Error{Op: opCheckToken, StatusCode: resp.StatusCode, Message: c.redact.With(accessToken).Clean(redirected)}
	}
	return &Error{Op: opCheckToken, StatusCode: resp.StatusCode, Message: errorMessage(body, c.redact.With(accessToken).Clean)}
}

// await runs fetch, which may outlive ctx: oauth2 token sources keep the
// context they were created with, and a fetch shared with other callers
// must not fail because one of them gave up.
func (c *Client) await(ctx context.Context, fetch func() (*oauth2.Token, error)) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, fmt.Errorf("altruistiq: %s: %w", opToken, err)
	}
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := fetch()
		done <- result{tok, err}
	}()
	select {
	case <-ctx.Done():
		return Token{}, fmt.Errorf("altruistiq: %s: %w", opToken, ctx.Err())
	case r := <-done:
		if r.err != nil {
			return Token{}, c.tokenError(r.err)
		}
		return Token{AccessToken: r.tok.AccessToken, TokenType: r.tok.Type(), Expiry: r.tok.Expiry}, nil
	}
}

// source returns the cached token source of a scope set.
func (c *Client) source(scopes []string) oauth2.TokenSource {
	key, normalised := c.scopeSet(scopes)
	c.mu.Lock()
	defer c.mu.Unlock()
	if src, ok := c.sources[key]; ok {
		return src
	}
	src := oauth2.ReuseTokenSourceWithExpiry(nil, c.newFetcher(normalised), c.earlyExpiry)
	c.sources[key] = src
	return src
}

// scopeSet normalises scopes, falling back to the default ones, and
// returns the cache key of the set.
func (c *Client) scopeSet(scopes []string) (string, []string) {
	normalised := normaliseScopes(scopes)
	if len(normalised) == 0 {
		normalised = c.scopes
	}
	return strings.Join(normalised, " "), normalised
}

// normaliseScopes sorts and deduplicates scopes, so that the same set in
// another order shares a token. A space-separated entry is several scopes,
// as on the wire.
func normaliseScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		out = append(out, strings.Fields(s)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// credentials are what every token request of the client sends.
type credentials struct {
	clientID, clientSecret, tokenURL string
	authStyle                        oauth2.AuthStyle
}

func (c *Client) newFetcher(scopes []string) *fetcher {
	config := &clientcredentials.Config{
		ClientID:     c.credentials.clientID,
		ClientSecret: c.credentials.clientSecret,
		TokenURL:     c.credentials.tokenURL,
		Scopes:       scopes,
		AuthStyle:    c.credentials.authStyle,
	}
	return &fetcher{config: config, ctx: upstream.WithOperation(c.oauthCtx, opToken), earlyExpiry: c.earlyExpiry, logger: c.logger, warned: &c.warnedShortLifetime}
}

// fetcher fetches a new token on every call; the caching is
// oauth2.ReuseTokenSourceWithExpiry's around it. (clientcredentials'
// own TokenSource would add a second cache with oauth2's fixed 10s early
// expiry, handing back tokens the outer cache already considers expired.)
type fetcher struct {
	config      *clientcredentials.Config
	ctx         context.Context
	earlyExpiry time.Duration
	logger      hclog.Logger
	warned      *atomic.Bool
}

func (f *fetcher) Token() (*oauth2.Token, error) {
	start := time.Now()
	tok, err := f.config.Token(f.ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case tok.ExpiresIn > 0:
		// Counted from the request, not from oauth2's parsing of the
		// answer, so that the expiry is never later than the upstream's.
		tok.Expiry = start.Add(time.Duration(tok.ExpiresIn) * time.Second)
	case tok.Expiry.IsZero():
		tok.Expiry = start.Add(defaultLifetime)
	}
	if !tok.Expiry.After(time.Now()) {
		return nil, &Error{Op: opToken, StatusCode: http.StatusOK, Message: "invalid token response: the token has already expired"}
	}
	lifetime := tok.Expiry.Sub(start).Round(time.Second)
	if lifetime <= f.earlyExpiry && f.warned.CompareAndSwap(false, true) {
		f.logger.Warn("token lifetime is not longer than the early expiry; every request will fetch a new token",
			"lifetime", lifetime, "early_expiry", f.earlyExpiry)
	}
	f.logger.Debug("fetched access token", "scopes", strings.Join(f.config.Scopes, " "), "lifetime", lifetime)
	return tok, nil
}

// tokenError maps what a token fetch returns to an error that carries the
// upstream's status and a brief message, and never a body, secret or
// token. The token endpoint receives nothing but the credentials, so all
// that passes of its answer is the brief message (upstream.Redactor.Brief):
// one that echoes them in any form is withheld whole.
func (c *Client) tokenError(err error) error {
	var aqErr *Error
	if errors.As(err, &aqErr) {
		return aqErr
	}
	var retrieveErr *oauth2.RetrieveError
	if errors.As(err, &retrieveErr) && retrieveErr.Response != nil {
		msg := errorMessage(retrieveErr.Body, c.redact.Brief)
		if redirected := upstream.Redirected(retrieveErr.Response.StatusCode, retrieveErr.Response.Header); redirected != "" {
			msg = c.redact.Brief(redirected)
		}
		if msg == "" {
			// Form-encoded error answers are parsed by oauth2 only.
			msg = joinMessage(c.redact.Brief(retrieveErr.ErrorDescription), c.redact.Brief(retrieveErr.ErrorCode))
		}
		return &Error{Op: opToken, StatusCode: retrieveErr.Response.StatusCode, Message: msg}
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		// Token fetches run without the caller's deadline, so a timeout
		// here is the upstream's.
		return c.wire.Failed(context.Background(), opToken, err)
	}
	// What is left are oauth2's parse errors, which quote the body.
	c.logger.Debug("unusable token response")
	return &Error{Op: opToken, StatusCode: http.StatusOK, Message: "invalid token response"}
}
