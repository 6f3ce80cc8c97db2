package carbon

// A connection's type: its stored form, how a write changes it, and its
// checks. Its path is in path_config.go; the live client it builds, in
// connection.go.

import (
	"context"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

const (
	configStoragePrefix = "config/"

	providerClimatiq   = "climatiq"
	providerAltruistiq = "altruistiq"

	defaultRequestTimeout = 30 * time.Second
	maxRequestTimeout     = 5 * time.Minute
	defaultMaxRetries     = 3
	maxMaxRetries         = 10
)

// connectionConfig is the stored form of config/:name.
type connectionConfig struct {
	Provider string `json:"provider"`

	// Climatiq
	ManagementKey string        `json:"management_key,omitempty"`
	ManagementURL string        `json:"management_url,omitempty"`
	TidyInterval  time.Duration `json:"tidy_interval,omitempty"`

	// Altruistiq
	ClientID     string   `json:"client_id,omitempty"`
	ClientSecret string   `json:"client_secret,omitempty"`
	TokenURL     string   `json:"token_url,omitempty"`
	AuthStyle    string   `json:"auth_style,omitempty"`
	Scopes       []string `json:"scopes,omitempty"`

	// Both
	// VerifyConnection is what the last write asked: were the credentials
	// checked upstream before they were saved.
	VerifyConnection bool          `json:"verify_connection"`
	VerifyIssuedKeys bool          `json:"verify_issued_keys,omitempty"`
	APIURL           string        `json:"api_url"`
	RequestTimeout   time.Duration `json:"request_timeout"`
	MaxRetries       int           `json:"max_retries"`
	RateLimit        float64       `json:"rate_limit"`
}

// providerFields names the fields that belong to one provider only; setting
// one on the other provider's connection is an error, not silently ignored.
var providerFields = map[string]string{
	"management_key":     providerClimatiq,
	"management_url":     providerClimatiq,
	"tidy_interval":      providerClimatiq,
	"verify_issued_keys": providerClimatiq,
	"client_id":          providerAltruistiq,
	"client_secret":      providerAltruistiq,
	"token_url":          providerAltruistiq,
	"auth_style":         providerAltruistiq,
	"scopes":             providerAltruistiq,
}

// upstreamURL is where the connection's secret is sent.
func (cfg *connectionConfig) upstreamURL() string {
	if cfg.Provider == providerAltruistiq {
		return cfg.TokenURL
	}
	return cfg.ManagementURL
}

func getConnectionConfig(ctx context.Context, s logical.Storage, name string) (*connectionConfig, error) {
	return getEntry[connectionConfig](ctx, s, configStoragePrefix+name)
}

func newConnectionConfig(d *framework.FieldData) (*connectionConfig, error) {
	provider, ok := d.GetOk("provider")
	if !ok || provider.(string) == "" {
		return nil, invalidField("provider", `is required when creating a connection; use "climatiq" or "altruistiq"`)
	}
	cfg := &connectionConfig{
		Provider:       provider.(string),
		RequestTimeout: defaultRequestTimeout,
		MaxRetries:     defaultMaxRetries,
	}
	switch cfg.Provider {
	case providerClimatiq:
		cfg.ManagementURL = climatiq.DefaultManagementURL
		cfg.APIURL = climatiq.DefaultAPIURL
	case providerAltruistiq:
		cfg.TokenURL = altruistiq.DefaultTokenURL
		cfg.APIURL = altruistiq.DefaultAPIURL
		cfg.AuthStyle = altruistiq.AuthStyleParams
	default:
		return nil, invalidField("provider", `%s is not supported; use "climatiq" or "altruistiq"`, quoteForMessage(cfg.Provider))
	}
	return cfg, nil
}

func checkProviderUnchanged(cfg *connectionConfig, d *framework.FieldData) error {
	if p, ok := d.GetOk("provider"); ok && p.(string) != cfg.Provider {
		return invalidField("provider", "cannot change from %q; delete the connection and create it again", cfg.Provider)
	}
	return nil
}

// update applies the request's fields to cfg and validates the result.
func (cfg *connectionConfig) update(d *framework.FieldData) error {
	if err := rejectForeignFields(d, cfg.Provider, providerFields); err != nil {
		return err
	}
	setString := func(field string, dst *string) {
		if v, ok := d.GetOk(field); ok {
			*dst = strings.TrimSpace(v.(string))
		}
	}
	setString("management_key", &cfg.ManagementKey)
	setString("client_id", &cfg.ClientID)
	setString("client_secret", &cfg.ClientSecret)
	setString("auth_style", &cfg.AuthStyle)

	for field, dst := range map[string]*string{
		"management_url": &cfg.ManagementURL,
		"token_url":      &cfg.TokenURL,
		"api_url":        &cfg.APIURL,
	} {
		if v, ok := d.GetOk(field); ok {
			u, err := validateUpstreamURL(field, v.(string))
			if err != nil {
				return err
			}
			*dst = u
		}
	}
	if v, ok := d.GetOk("scopes"); ok {
		scopes, err := cleanScopes(v.([]string))
		if err != nil {
			return err
		}
		cfg.Scopes = scopes
	}
	if v, ok := d.GetOk("request_timeout"); ok {
		cfg.RequestTimeout = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("tidy_interval"); ok {
		cfg.TidyInterval = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("max_retries"); ok {
		cfg.MaxRetries = v.(int)
	}
	if v, ok := d.GetOk("verify_issued_keys"); ok {
		cfg.VerifyIssuedKeys = v.(bool)
	}
	if v, ok := d.GetOk("rate_limit"); ok {
		cfg.RateLimit = v.(float64)
	}
	return cfg.validate()
}

func (cfg *connectionConfig) validate() error {
	switch cfg.Provider {
	case providerClimatiq:
		if cfg.ManagementKey == "" {
			return invalidField("management_key", "is required for a climatiq connection; give the Climatiq management API key")
		}
	case providerAltruistiq:
		if cfg.ClientID == "" {
			return invalidField("client_id", "is required for an altruistiq connection; give the OAuth client ID")
		}
		if cfg.ClientSecret == "" {
			return invalidField("client_secret", "is required for an altruistiq connection; give the OAuth client secret")
		}
		if cfg.AuthStyle != altruistiq.AuthStyleParams && cfg.AuthStyle != altruistiq.AuthStyleHeader {
			return invalidField("auth_style", `%s is not supported; use "params" or "header"`, quoteForMessage(cfg.AuthStyle))
		}
	}
	if cfg.RequestTimeout < time.Second || cfg.RequestTimeout > maxRequestTimeout {
		return invalidField("request_timeout", "must be between 1s and %s", maxRequestTimeout)
	}
	if cfg.TidyInterval != 0 && cfg.TidyInterval < time.Minute {
		return invalidField("tidy_interval", "must be 0 (off) or at least 1m")
	}
	if cfg.MaxRetries < 0 || cfg.MaxRetries > maxMaxRetries {
		return invalidField("max_retries", "must be between 0 and %d", maxMaxRetries)
	}
	// NaN compares false with every bound, so it is named on its own.
	if math.IsNaN(cfg.RateLimit) || cfg.RateLimit < 0 || cfg.RateLimit > 10000 {
		return invalidField("rate_limit", "must be between 0 (no limit) and 10000 requests per second")
	}
	return nil
}

// upstreamAccountMayChange reports whether a rewrite could point the
// connection at another Climatiq account.
func (cfg *connectionConfig) upstreamAccountMayChange(before *connectionConfig) bool {
	return cfg.ManagementKey != before.ManagementKey || cfg.ManagementURL != before.ManagementURL
}

// cleanScopes trims and drops empty scopes, and refuses one that is no
// OAuth scope token (RFC 6749, section 3.3: printable ASCII without space,
// quote or backslash): "read write" given as one item would be sent as two
// scopes, or refused by the token endpoint with a message that names none.
func cleanScopes(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !scopeToken.MatchString(s) {
			return nil, invalidField("scopes", "%s is not one OAuth scope (a scope has no spaces, quotes or backslashes); give each scope as its own item, e.g. scopes=read,write", quoteForMessage(s))
		}
		out = append(out, s)
	}
	return out, nil
}

var scopeToken = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`)
