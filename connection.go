package carbon

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/helper/useragent"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// connection is the live form of a config/:name entry: the parsed
// configuration and the upstream client built from it. It is cached on the
// backend so that issuance does not re-read storage or rebuild HTTP clients,
// rate limiters and token caches on every request. Exactly one client is set,
// the one of config.Provider.
type connection struct {
	config     *connectionConfig
	climatiq   *climatiq.Client
	altruistiq *altruistiq.Client
}

// userAgent is what upstream requests say they are, in the SDK's plugin
// form with Vault's and this plugin's versions ("Vault/v1.21.0
// (+https://www.vaultproject.io/; vault-plugin-carbon/v0.2.0; go1.26.8)"),
// so an upstream's logs show which release called. Vault is asked once
// per backend; without an answer, the plugin's name and version.
func (b *backend) userAgent() string {
	b.userAgentOnce.Do(func() {
		name := "vault-plugin-carbon/" + Version
		b.userAgentValue = name
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if env, err := b.System().PluginEnv(ctx); err == nil {
			if ua := useragent.PluginString(env, name); ua != "" {
				b.userAgentValue = ua
			}
		}
	})
	return b.userAgentValue
}

func newConnection(b *backend, name string, cfg *connectionConfig) (*connection, error) {
	logger := b.Logger().Named(cfg.Provider).With("config", name)
	c := &connection{config: cfg}
	var err error
	switch cfg.Provider {
	case providerClimatiq:
		c.climatiq, err = climatiq.New(climatiq.Options{
			ManagementURL: cfg.ManagementURL,
			APIURL:        cfg.APIURL,
			ManagementKey: cfg.ManagementKey,
			Timeout:       cfg.RequestTimeout,
			MaxRetries:    cfg.MaxRetries,
			RateLimit:     cfg.RateLimit,
			Logger:        logger,
			UserAgent:     b.userAgent(),
			Observer:      connectionObserver{m: b.metrics, connection: name},
		})
	case providerAltruistiq:
		c.altruistiq, err = altruistiq.New(altruistiq.Options{
			TokenURL:     cfg.TokenURL,
			APIURL:       cfg.APIURL,
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			AuthStyle:    cfg.AuthStyle,
			Scopes:       cfg.Scopes,
			Timeout:      cfg.RequestTimeout,
			MaxRetries:   cfg.MaxRetries,
			RateLimit:    cfg.RateLimit,
			// Tokens are shared between reads; one is replaced this long
			// before it expires, so a new lease is never shorter.
			EarlyExpiry: minAltruistiqLease,
			Logger:      logger,
			UserAgent:   b.userAgent(),
			Observer:    connectionObserver{m: b.metrics, connection: name},
		})
	default:
		err = fmt.Errorf("unknown provider %q", cfg.Provider)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// verify proves that the connection's credentials work upstream.
func (c *connection) verify(ctx context.Context) error {
	if c.climatiq != nil {
		return c.climatiq.CheckManagementKey(ctx)
	}
	return c.altruistiq.Verify(ctx)
}

func (c *connection) close() {
	if c.climatiq != nil {
		c.climatiq.Close()
	}
	if c.altruistiq != nil {
		c.altruistiq.Close()
	}
}

// connection returns the cached connection for config/:name, building it from
// storage on first use. It returns nil, nil when the config does not exist.
func (b *backend) connection(ctx context.Context, s logical.Storage, name string) (*connection, error) {
	b.connectionsLock.RLock()
	c, ok := b.connections[name]
	b.connectionsLock.RUnlock()
	if ok {
		return c, nil
	}

	b.connectionsLock.Lock()
	defer b.connectionsLock.Unlock()
	if c, ok := b.connections[name]; ok {
		return c, nil
	}
	cfg, err := getConnectionConfig(ctx, s, name)
	if err != nil || cfg == nil {
		return nil, err
	}
	c, err = newConnection(b, name, cfg)
	if err != nil {
		return nil, fmt.Errorf("config %q: %w", name, err)
	}
	b.connections[name] = c
	return c, nil
}

// connectionError says why config/:name cannot serve a Climatiq call. Path
// handlers answer it with a 400 where the caller named the connection.
type connectionError struct {
	name        string
	notClimatiq bool // it exists, for another provider; false: it does not exist
}

func (e *connectionError) Error() string {
	if e.notClimatiq {
		return fmt.Sprintf("connection %q is not a climatiq connection", e.name)
	}
	return fmt.Sprintf("connection %q does not exist", e.name)
}

// climatiqClient is the one way to the Climatiq client of config/:name. It
// fails with a *connectionError when the connection is missing or belongs
// to another provider.
func (b *backend) climatiqClient(ctx context.Context, s logical.Storage, name string) (*climatiq.Client, error) {
	conn, err := b.connection(ctx, s, name)
	switch {
	case err != nil:
		return nil, err
	case conn == nil:
		return nil, &connectionError{name: name}
	case conn.climatiq == nil:
		return nil, &connectionError{name: name, notClimatiq: true}
	}
	return conn.climatiq, nil
}

// resetConnection drops a cached connection, and with it its HTTP
// connections, rate limiter and cached OAuth tokens.
func (b *backend) resetConnection(name string) {
	b.connectionsLock.Lock()
	defer b.connectionsLock.Unlock()
	if c, ok := b.connections[name]; ok {
		c.close()
		delete(b.connections, name)
	}
}

// checkProjectVisible catches a mistyped project_id at write time rather
// than at the first issuance or rotation: a 400 naming the field when the
// connection cannot see the project (ending with otherwise, the fix the
// role's kind offers), nil when it can.
func checkProjectVisible(ctx context.Context, client *climatiq.Client, config, projectID, otherwise string) *logical.Response {
	projects, err := client.ListProjects(ctx)
	if err != nil {
		return logical.ErrorResponse("project_id: could not confirm project %q through connection %q: %s", projectID, config, err)
	}
	for _, p := range projects {
		if p.ID == projectID {
			return nil
		}
	}
	return logical.ErrorResponse("project_id: no project %q is visible to connection %q; %s", projectID, config, otherwise)
}
