package carbon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

func pathConfig(b *backend) []*framework.Path {
	return []*framework.Path{
		collectionPath(configStoragePrefix, "connections", "connections", func(ctx context.Context, s logical.Storage, name string) (map[string]any, error) {
			cfg, err := getConnectionConfig(ctx, s, name)
			if err != nil || cfg == nil {
				return nil, err
			}
			return map[string]any{"provider": cfg.Provider, "url": cfg.upstreamURL()}, nil
		}),
		{
			Pattern: "config/" + framework.MatchAllRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationSuffix: "connection",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the connection. Letters, digits, '.', '_' and '-'.",
					Required:    true,
				},
				"provider": {
					Type:          framework.TypeString,
					Description:   `Upstream platform: "climatiq" or "altruistiq". Required on create; cannot be changed later.`,
					AllowedValues: []any{providerClimatiq, providerAltruistiq},
				},
				"management_key": {
					Type:         framework.TypeString,
					Description:  "Climatiq management API key. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Name: "Management key", Sensitive: true},
				},
				"management_url": {
					Type:         framework.TypeString,
					Description:  fmt.Sprintf("Climatiq management API base URL. Defaults to %s.", climatiq.DefaultManagementURL),
					DisplayAttrs: &framework.DisplayAttributes{Name: "Management URL"},
				},
				"tidy_interval": {
					Type:        framework.TypeDurationSecond,
					Description: "Climatiq: run tidy for this connection this often (at least 1m). 0 (default) turns periodic tidy off. Reads return it in whole seconds.",
				},
				"api_url": {
					Type: framework.TypeString,
					Description: fmt.Sprintf("Base URL of the platform's regular API. Altruistiq: verify_connection checks a fresh access token against it. "+
						"Climatiq: verify_issued_keys checks each new key against it. Defaults to %s (climatiq) or %s (altruistiq).",
						climatiq.DefaultAPIURL, altruistiq.DefaultAPIURL),
					DisplayAttrs: &framework.DisplayAttributes{Name: "API URL"},
				},
				"client_id": {
					Type:         framework.TypeString,
					Description:  "Altruistiq OAuth client ID.",
					DisplayAttrs: &framework.DisplayAttributes{Name: "Client ID"},
				},
				"client_secret": {
					Type:         framework.TypeString,
					Description:  "Altruistiq OAuth client secret. Write-only: never returned.",
					DisplayAttrs: &framework.DisplayAttributes{Name: "Client secret", Sensitive: true},
				},
				"token_url": {
					Type:         framework.TypeString,
					Description:  fmt.Sprintf("Altruistiq OAuth token endpoint. Defaults to %s.", altruistiq.DefaultTokenURL),
					DisplayAttrs: &framework.DisplayAttributes{Name: "Token URL"},
				},
				"auth_style": {
					Type:          framework.TypeString,
					Description:   `How client credentials reach the token endpoint: "params" (form body, the default; Altruistiq) or "header" (HTTP Basic; PACT-style hosts).`,
					AllowedValues: []any{altruistiq.AuthStyleParams, altruistiq.AuthStyleHeader},
				},
				"scopes": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Altruistiq OAuth scopes requested by default. Roles may override them.",
				},
				"verify_issued_keys": {
					Type: framework.TypeBool,
					Description: "Climatiq: before returning a new key, call the regular API (api_url) with it until it is accepted, for up to " +
						issuedKeyWait.String() + "; if it is still refused then, the key is returned with a warning. Default false.",
				},
				"abandon_rollbacks": {
					Type: framework.TypeBool,
					Description: "Delete only: when WAL entries of interrupted key creations through this connection cannot be rolled back (its upstream is gone), drop them and delete the connection anyway. " +
						"The answer names the key names each entry covers and the carbon-sweep command that deletes them from outside Vault.",
				},
				"verify_connection": {
					Type:        framework.TypeBool,
					Default:     true,
					Description: "Check the credentials against the upstream before saving. The write fails with the upstream's status and message when they do not work.",
				},
				"request_timeout": {
					Type:        framework.TypeDurationSecond,
					Default:     int(defaultRequestTimeout.Seconds()),
					Description: "Timeout of one upstream HTTP request attempt. Between 1s and 5m. Reads return it in whole seconds.",
				},
				"max_retries": {
					Type:        framework.TypeInt,
					Default:     defaultMaxRetries,
					Description: "Retries of an upstream request after a network error or a 5xx answer (0-10). 429 answers are waited out instead and do not count.",
				},
				"rate_limit": {
					Type:        framework.TypeFloat,
					Default:     0.0,
					Description: "Maximum upstream requests per second from this mount for this connection, shared by issuance and revocation. 0 means no client-side limit.",
				},
			},
			ExistenceCheck:  b.pathConfigExists,
			Operations:      withDeleteResponse(crudOperations(b.pathConfigWrite, b.pathConfigRead, b.pathConfigDelete, "a connection", configReadResponse), configDeleteResponse),
			HelpSynopsis:    "Configure a connection to Climatiq or Altruistiq.",
			HelpDescription: strings.TrimSpace(pathConfigHelp),
		},
	}
}

func (b *backend) pathConfigExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("name", name) != nil {
		// The handler answers with the 400; an invalid name must not
		// reach storage (a 5000-character key is a storage error).
		return false, nil
	}
	cfg, err := getConnectionConfig(ctx, req.Storage, name)
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	cfg, err := getConnectionConfig(ctx, req.Storage, name)
	if err != nil || cfg == nil {
		return nil, err
	}
	data := map[string]any{
		"provider":          cfg.Provider,
		"api_url":           cfg.APIURL,
		"verify_connection": cfg.VerifyConnection,
		"request_timeout":   int64(cfg.RequestTimeout.Seconds()),
		"max_retries":       cfg.MaxRetries,
		"rate_limit":        cfg.RateLimit,
	}
	switch cfg.Provider {
	case providerClimatiq:
		data["management_url"] = cfg.ManagementURL
		data["tidy_interval"] = int64(cfg.TidyInterval.Seconds())
		data["verify_issued_keys"] = cfg.VerifyIssuedKeys
	case providerAltruistiq:
		data["client_id"] = cfg.ClientID
		data["token_url"] = cfg.TokenURL
		data["auth_style"] = cfg.AuthStyle
		data["scopes"] = nonNil(cfg.Scopes)
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	if _, given := d.Raw["abandon_rollbacks"]; given {
		return logical.ErrorResponse("abandon_rollbacks: only applies to deleting the connection (vault delete %sconfig/%s abandon_rollbacks=true)", req.MountPoint, name), nil
	}
	cfg, err := getConnectionConfig(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	var before *connectionConfig
	if cfg == nil {
		cfg, err = newConnectionConfig(d)
	} else {
		stored := *cfg
		before = &stored
		err = checkProviderUnchanged(cfg, d)
	}
	if err == nil {
		err = cfg.update(d)
	}
	if err == nil && before != nil {
		err = checkSecretFollowsURL(before, cfg, d)
	}
	if err != nil {
		return errorResponse(err)
	}
	if before != nil && cfg.Provider == providerClimatiq && cfg.upstreamAccountMayChange(before) {
		if resp, err := b.checkKeysStayReachable(ctx, req.Storage, name, cfg); resp != nil || err != nil {
			return resp, err
		}
	}

	cfg.VerifyConnection = d.Get("verify_connection").(bool)
	if cfg.VerifyConnection {
		if resp, err := b.verifyConnection(ctx, name, cfg); resp != nil || err != nil {
			return resp, err
		}
	}

	if err := putEntry(ctx, req.Storage, configStoragePrefix+name, cfg); err != nil {
		return nil, err
	}
	// A rewritten connection must not keep serving the old credentials or
	// tokens fetched with them.
	b.resetConnection(name)
	return nil, nil
}

// A secret field (a string field marked Sensitive: management_key,
// client_secret) written with another JSON type never reaches the
// framework: its parse error quotes the value ("expected type 'string', got
// unconvertible type '[]interface {}', value: '[...]'"), and that error
// would go to the caller, to Vault's log at ERROR (from the existence
// check) and to the audit log, whose error field Vault does not HMAC. The
// framework also turns a number or a boolean into a string silently, and
// would send it upstream as the credential. HandleExistenceCheck runs the
// check without such fields; HandleRequest (storage_version.go) answers
// with the 400 of mistypedSecrets, which names the field and the fix, never
// the value.

// HandleExistenceCheck is the framework's, minus mistyped secret fields,
// which the request itself is then refused for.
func (b *backend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (bool, bool, error) {
	if mistyped := b.mistypedSecrets(req); len(mistyped) > 0 {
		data := req.Data
		req.Data = maps.Clone(data)
		for _, m := range mistyped {
			delete(req.Data, m.field)
		}
		defer func() { req.Data = data }()
	}
	return b.Backend.HandleExistenceCheck(ctx, req)
}

// refuseMistypedSecrets answers a request that carries a secret field of
// the wrong JSON type with a 400, and any other with nil.
func (b *backend) refuseMistypedSecrets(req *logical.Request) *logical.Response {
	mistyped := b.mistypedSecrets(req)
	if len(mistyped) == 0 {
		return nil
	}
	msgs := make([]string, len(mistyped))
	for i, m := range mistyped {
		msgs[i] = fmt.Sprintf("%s: must be a JSON string, not %s; send the secret as one string (the value is not repeated here: the field is write-only)", m.field, m.got)
	}
	return logical.ErrorResponse(strings.Join(msgs, "; "))
}

type mistypedSecret struct {
	field, got string // got: the JSON type sent, "an array"
}

// mistypedSecrets lists, by name, the secret fields of req's path whose
// value is neither a string nor null.
func (b *backend) mistypedSecrets(req *logical.Request) []mistypedSecret {
	if req.Operation == logical.HelpOperation || len(req.Data) == 0 {
		return nil
	}
	path := b.Route(req.Path)
	if path == nil {
		return nil
	}
	var out []mistypedSecret
	for _, name := range slices.Sorted(maps.Keys(path.Fields)) {
		field := path.Fields[name]
		if field.Type != framework.TypeString || field.DisplayAttrs == nil || !field.DisplayAttrs.Sensitive {
			continue
		}
		if got := jsonTypeUnlessString(req.Data[name]); got != "" {
			out = append(out, mistypedSecret{field: name, got: got})
		}
	}
	return out
}

// jsonTypeUnlessString names the JSON type of a decoded request value, or
// returns "" for a string or null.
func jsonTypeUnlessString(v any) string {
	if v == nil {
		return ""
	}
	if _, ok := v.(json.Number); ok { // a string kind, but a JSON number
		return "a number"
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.String:
		return ""
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another type"
}

// checkSecretFollowsURL refuses a write that points an upstream URL
// elsewhere without writing the secret again: the stored secret must never
// follow a URL to a host it was not written for.
func checkSecretFollowsURL(before, after *connectionConfig, d *framework.FieldData) error {
	secret := "management_key"
	if after.Provider == providerAltruistiq {
		secret = "client_secret"
	}
	if _, written := d.Raw[secret]; written {
		return nil
	}
	for _, u := range []struct{ field, before, after string }{
		{"management_url", before.ManagementURL, after.ManagementURL},
		{"token_url", before.TokenURL, after.TokenURL},
		{"api_url", before.APIURL, after.APIURL},
	} {
		if u.before != u.after {
			return invalidField(secret, "must be written again in the same request when %s changes, so the stored secret is never sent to a host it was not written for", u.field)
		}
	}
	return nil
}

// checkKeysStayReachable refuses to re-point a connection whose keys,
// roles or static roles live in projects the new credentials cannot see:
// revocations would answer 404 and strand the keys in the old account. A
// new management key of the same account (the usual rotation in the
// dashboard) sees the same projects and passes.
func (b *backend) checkKeysStayReachable(ctx context.Context, s logical.Storage, name string, cfg *connectionConfig) (*logical.Response, error) {
	projects, err := projectsInUse(ctx, s, name)
	if err != nil {
		return nil, err
	}
	// A pending rollback deletes what an interrupted creation made, in the
	// account it was made in: its project must stay visible, and a
	// per-lease project, known by its name alone, must stay in reach.
	b.closeBlocks(ctx, name)
	b.deleteQueuedSpentWAL(ctx)
	perLease := 0
	err = forEachPendingWAL(ctx, s, name, func(_ pendingWAL, covered *ownedKey) {
		if covered.ProjectPerLease {
			perLease++
		} else if covered.ProjectID != "" {
			projects[covered.ProjectID] = true
		}
	})
	if err != nil {
		return nil, err
	}
	if perLease > 0 {
		return logical.ErrorResponse("management_key: connection %q has %d per-lease project creations awaiting rollback in its current account; Vault resolves them within %s (or run tidy after a restart of the mount); re-point the connection after that",
			name, perLease, walRollbackMinAge+time.Minute), nil
	}
	if len(projects) == 0 {
		return nil, nil
	}
	conn, err := newConnection(b, name, cfg)
	if err != nil {
		return logical.ErrorResponse("management_key: %s", err), nil
	}
	defer conn.close()
	visible, err := conn.climatiq.ListProjects(ctx)
	if err != nil {
		return logical.ErrorResponse("management_key: could not confirm that the new credentials reach the projects this connection's keys live in: %s", err), nil
	}
	for _, p := range visible {
		delete(projects, p.ID)
	}
	if len(projects) > 0 {
		missing := slices.Sorted(maps.Keys(projects))
		return logical.ErrorResponse("management_key: the new credentials cannot see project(s) %s, which hold this connection's keys or roles; "+
			"a connection must stay on the account its keys live in: revoke the keys and remove the roles first, or create a new connection for the other account",
			strings.Join(missing, ", ")), nil
	}
	return nil, nil
}

// projectsInUse are the projects that hold the connection's live keys or
// that its roles and static roles name.
func projectsInUse(ctx context.Context, s logical.Storage, config string) (map[string]bool, error) {
	projects := map[string]bool{}
	err := walkKeys(ctx, s, func(k *ownedKey) error {
		if k.Config == config && k.ProjectID != "" {
			projects[k.ProjectID] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, prefix := range []string{roleStoragePrefix, staticRoleStoragePrefix} {
		names, err := s.List(ctx, prefix)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			var role struct {
				Config    string `json:"config"`
				ProjectID string `json:"project_id"`
			}
			entry, err := s.Get(ctx, prefix+n)
			if err != nil {
				return nil, err
			}
			if entry == nil {
				continue // deleted since the list: its projects are no longer in use
			}
			if err := entry.DecodeJSON(&role); err != nil {
				return nil, err
			}
			if role.Config == config && role.ProjectID != "" {
				projects[role.ProjectID] = true
			}
		}
	}
	return projects, nil
}

// verifyConnection returns a 400 carrying the upstream's status and message
// when the connection's credentials do not work, and nil when they do. An
// upstream that could not be reached is reported as such: the credentials
// were never tried. One that kept rate-limiting the check is a 503: the
// credentials may be fine, the upstream asked to wait too long.
func (b *backend) verifyConnection(ctx context.Context, name string, cfg *connectionConfig) (*logical.Response, error) {
	conn, err := newConnection(b, name, cfg)
	if err != nil {
		return logical.ErrorResponse("verify_connection: %s", err), nil
	}
	defer conn.close()
	err = conn.verify(ctx)
	if err == nil {
		return nil, nil
	}
	if rateLimited(err) {
		return nil, upstreamError("verify_connection", err)
	}
	return verifyFailure(cfg, err), nil
}

// verifyFailure words a failed check by what the upstream answered.
func verifyFailure(cfg *connectionConfig, err error) *logical.Response {
	const orSkip = "or write with verify_connection=false to save without checking"
	status, answered := upstreamStatus(err)
	field, at := urlField(cfg.Provider), cfg.upstreamURL()
	var aqErr *altruistiq.Error
	if errors.As(err, &aqErr) && aqErr.FromAPI() {
		field, at = "api_url", cfg.APIURL
	}
	switch {
	case !answered:
		return logical.ErrorResponse("verify_connection: could not reach %s at %s: %s; check %s and the network between Vault and it, %s",
			cfg.Provider, at, err, field, orSkip)
	case status >= 200 && status <= 299:
		return logical.ErrorResponse("verify_connection: %s answered, but not as the %s API does (%s); check %s, %s", at, cfg.Provider, err, field, orSkip)
	case status >= 300 && status <= 399:
		return logical.ErrorResponse("verify_connection: %s was redirected (%s); set %s to the URL the API is served at (the engine follows no redirects), %s", at, err, field, orSkip)
	case status == statusNotFound || status == statusMethodNotAllowed:
		return logical.ErrorResponse("verify_connection: no such route at %s (%s); check that %s is the %s API's base URL, %s", at, err, field, cfg.Provider, orSkip)
	case status == statusBadRequest || status == statusUnauthorized || status == statusForbidden:
		return logical.ErrorResponse("verify_connection: %s refused the credentials: %s; check %s, %s", cfg.Provider, err, credentialFields(cfg.Provider), orSkip)
	default:
		return logical.ErrorResponse("verify_connection: %s at %s failed: %s; try again later, %s", cfg.Provider, at, err, orSkip)
	}
}

// upstreamStatus is the status of the upstream answer an error reports;
// false when no answer came (the upstream could not be reached).
func upstreamStatus(err error) (int, bool) {
	var cqErr *climatiq.Error
	var aqErr *altruistiq.Error
	switch {
	case errors.As(err, &cqErr):
		return cqErr.StatusCode, true
	case errors.As(err, &aqErr) && aqErr.StatusCode != 0:
		return aqErr.StatusCode, true
	}
	return 0, false
}

func urlField(provider string) string {
	if provider == providerClimatiq {
		return "management_url"
	}
	return "token_url"
}

func credentialFields(provider string) string {
	if provider == providerClimatiq {
		return "management_key and management_url"
	}
	return "client_id, client_secret, token_url and auth_style"
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	// Refuse while anything still needs the credentials: a role could not
	// issue, and a live key could not be revoked upstream.
	roles, err := rolesUsingConfig(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(roles) > 0 {
		return logical.ErrorResponse("name: connection %q is used by roles %s; delete or re-point them first", name, strings.Join(roles, ", ")), nil
	}
	static, err := staticRolesUsingConfig(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(static) > 0 {
		return logical.ErrorResponse("name: connection %q holds the keys of static roles %s; delete them first (vault delete %sstatic-roles/%s), which deletes their keys unless delete_key_on_remove=false",
			name, strings.Join(static, ", "), req.MountPoint, static[0]), nil
	}
	live, err := b.liveKeysOfConfig(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if live > 0 {
		return logical.ErrorResponse("name: connection %q still owns %d live keys; revoke their leases first (vault lease revoke -prefix %screds/)", name, live, req.MountPoint), nil
	}
	// A pending WAL entry's rollback needs the connection to delete what
	// the interrupted issuance may have created: resolve them now, or, when
	// the operator gives them up, name what they cover.
	abandoned, resp, err := b.resolvePendingRollbacks(ctx, req, name, d.Get("abandon_rollbacks").(bool))
	if resp != nil || err != nil {
		return resp, err
	}
	if err := req.Storage.Delete(ctx, configStoragePrefix+name); err != nil {
		return nil, err
	}
	b.resetConnection(name)
	return abandonedResponse(req, name, abandoned), nil
}

// staticRolesUsingConfig names the static roles whose keys live through
// the given connection.
func staticRolesUsingConfig(ctx context.Context, s logical.Storage, config string) ([]string, error) {
	names, err := s.List(ctx, staticRoleStoragePrefix)
	if err != nil {
		return nil, err
	}
	var using []string
	for _, name := range names {
		role, err := getStaticRole(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if role != nil && role.Config == config {
			using = append(using, name)
		}
	}
	return using, nil
}

const pathConfigHelp = `
A connection holds the credentials Vault uses upstream.

For provider=climatiq: management_key (write-only), management_url and api_url.
Climatiq management keys cannot be created or rotated through any API, so this
engine offers no rotate-root: rotate the key in the Climatiq dashboard and
write the new value here.

For provider=altruistiq: client_id, client_secret (write-only), token_url,
api_url, auth_style and scopes. Client secrets are managed only in the
Altruistiq web interface; Vault stores them and exchanges them for tokens.

URLs must use https://, except loopback hosts (127.0.0.0/8, ::1, localhost).
With verify_connection=true (the default) the write fails with the upstream's
status and message when the credentials do not work. Secrets are never
returned by a read.
`
