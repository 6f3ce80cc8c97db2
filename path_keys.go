package carbon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	secretTypeClimatiqKey     = "climatiq_key"
	secretTypeAltruistiqToken = "altruistiq_token"
)

func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "creds/?$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: requireNameOperation("role", "creds/<role>"),
			},
			HelpSynopsis:    "Issue credentials: read creds/<role>.",
			HelpDescription: "Read creds/<role> to issue credentials from a dynamic role.",
		},
		{
			Pattern: "creds/" + framework.MatchAllRegex("role"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationVerb:   "generate",
				OperationSuffix: "credentials",
			},
			Fields: map[string]*framework.FieldSchema{
				"role": {
					Type:        framework.TypeString,
					Description: "Name of the dynamic role (roles/<name>) to issue from.",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathCredsRead,
					// Issuance writes storage (WAL, inventory), which only
					// the active node may do.
					ForwardPerformanceStandby: true,
					Summary:                   "Issue a Climatiq API key or an Altruistiq access token.",
				},
			},
			HelpSynopsis:    "Issue credentials from a dynamic role.",
			HelpDescription: strings.TrimSpace(pathCredsHelp),
		},
	}
}

func pathInventory(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "keys/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationSuffix: "keys",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathKeysList,
					Summary:  "List the upstream keys this mount owns.",
				},
			},
			HelpSynopsis:    "List the upstream keys this mount owns.",
			HelpDescription: "Lists the ids of every upstream key this mount owns, dynamic and static, with their details in key_info. Never the key values.",
		},
		{
			Pattern: "keys/" + framework.MatchAllRegex("key_id"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationSuffix: "key",
			},
			Fields: map[string]*framework.FieldSchema{
				"key_id": {
					Type:        framework.TypeString,
					Description: "Upstream id of the key.",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathKeyRead,
					Summary:  "Read what the mount records about one of its keys.",
				},
			},
			HelpSynopsis:    "Read what the mount records about one of its keys.",
			HelpDescription: "Returns key_id, key_name, project_id, config, role, kind (dynamic or static), created and expires (dynamic keys: issue time plus max_ttl). Never the key value.",
		},
	}
}

func (e *inventoryEntry) responseData() map[string]any {
	return map[string]any{
		"key_id":     e.KeyID,
		"key_name":   e.KeyName,
		"project_id": e.ProjectID,
		"config":     e.Config,
		"role":       e.Role,
		"kind":       e.Kind,
		"created":    formatTime(e.Created),
		"expires":    formatTime(e.Expires),
	}
}

func (b *backend) pathKeysList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	var ids []string
	info := map[string]any{}
	err := walkInventory(ctx, req.Storage, func(e *inventoryEntry) error {
		ids = append(ids, e.KeyID)
		info[e.KeyID] = e.responseData()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return logical.ListResponseWithInfo(ids, info), nil
}

// pathKeyRead walks the inventory: it is keyed by role and name, and reads
// by id are rare administrative look-ups.
func (b *backend) pathKeyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id := d.Get("key_id").(string)
	var found *inventoryEntry
	errFound := errors.New("found")
	err := walkInventory(ctx, req.Storage, func(e *inventoryEntry) error {
		if e.KeyID == id {
			found = e
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, err
	}
	if found == nil {
		return nil, nil
	}
	return &logical.Response{Data: found.responseData()}, nil
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	roleName := d.Get("role").(string)
	if err := validateName("role", roleName); err != nil {
		return errorResponse(err)
	}
	role, err := b.cachedRole(ctx, req.Storage, roleName)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role: no role %q; create it with a write to roles/%s", roleName, roleName), nil
	}
	conn, err := b.connection(ctx, req.Storage, role.Config)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return logical.ErrorResponse("config: connection %q of role %q does not exist; recreate it or re-point the role", role.Config, roleName), nil
	}
	if conn.climatiq != nil {
		return b.issueClimatiqKey(ctx, req, roleName, role, conn)
	}
	return b.issueAltruistiqToken(ctx, roleName, role, conn)
}

// issueClimatiqKey creates a key upstream under a WAL entry, records it in
// the inventory and returns it leased. The request makes two storage writes:
// the WAL entry and the inventory entry. Once the inventory holds the key
// the WAL entry is spent; it is deleted off the request path.
func (b *backend) issueClimatiqKey(ctx context.Context, req *logical.Request, roleName string, role *roleEntry, conn *connection) (*logical.Response, error) {
	if role.MaxKeys > 0 {
		// Only capped roles pay for serialising issuance: the count and
		// the create must not interleave with another issuance.
		lock := locksutil.LockForKey(b.roleLocks, roleName)
		lock.Lock()
		defer lock.Unlock()
		live, err := countInventory(ctx, req.Storage, keyKindDynamic, roleName)
		if err != nil {
			return nil, err
		}
		if live >= role.MaxKeys {
			return logical.ErrorResponse("max_keys: role %q already has %d live keys (max_keys=%d); revoke a lease or raise max_keys", roleName, live, role.MaxKeys), nil
		}
	}

	marker, err := b.mountMarker(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	rendered, err := renderKeyName(role.keyNameTemplate(), keyNameData{RoleName: roleName, DisplayName: req.DisplayName})
	if err != nil {
		return logical.ErrorResponse("key_name_template: %s; fix the role's template", err), nil
	}
	now := time.Now()
	keyName, err := newKeyName(marker, now, rendered)
	if err != nil {
		return nil, err
	}

	w := &climatiqKeyWAL{
		Config:          role.Config,
		Role:            roleName,
		ProjectID:       role.ProjectID,
		ProjectPerLease: role.ProjectPerLease,
		KeyName:         keyName,
	}
	walID, err := framework.PutWAL(ctx, req.Storage, walKindClimatiqKey, w)
	if err != nil {
		return nil, fmt.Errorf("writing WAL entry before creating key: %w", err)
	}

	client := conn.climatiq
	if role.ProjectPerLease {
		project, err := client.CreateProject(ctx, keyName)
		if err != nil {
			b.rollbackNow(ctx, req.Storage, walID, w)
			return nil, upstreamError("creating project", err)
		}
		w.ProjectID = project.ID
	}
	key, err := client.CreateKey(ctx, w.ProjectID, keyName)
	if err != nil {
		b.rollbackNow(ctx, req.Storage, walID, w)
		return nil, upstreamError("creating key", err)
	}
	w.KeyID = key.ID

	maxTTL := role.MaxTTL
	if mountMax := b.mountMaxTTL(); maxTTL == 0 || maxTTL > mountMax {
		maxTTL = mountMax
	}
	inv := &inventoryEntry{
		KeyID:           key.ID,
		KeyName:         keyName,
		ProjectID:       w.ProjectID,
		ProjectPerLease: role.ProjectPerLease,
		Config:          role.Config,
		Role:            roleName,
		Kind:            keyKindDynamic,
		Created:         now.UTC(),
		Expires:         now.Add(maxTTL).UTC(),
	}
	if err := putInventory(ctx, req.Storage, inv); err != nil {
		b.rollbackNow(ctx, req.Storage, walID, w)
		return nil, fmt.Errorf("recording key in inventory: %w", err)
	}
	b.retireWAL(ctx, req.Storage, walID)
	b.observe(ctx, eventKeyIssue, "role", roleName, "config", role.Config, "key_id", key.ID, "key_name", keyName, "project_id", w.ProjectID)
	resp := b.Secret(secretTypeClimatiqKey).Response(map[string]any{
		"api_key":    key.Key,
		"key_id":     key.ID,
		"key_name":   keyName,
		"project_id": w.ProjectID,
	}, map[string]any{
		"config":            role.Config,
		"role":              roleName,
		"key_id":            key.ID,
		"key_name":          keyName,
		"project_id":        w.ProjectID,
		"project_per_lease": role.ProjectPerLease,
	})
	resp.Secret.TTL = role.TTL
	resp.Secret.MaxTTL = role.MaxTTL
	return resp, nil
}

func (b *backend) issueAltruistiqToken(ctx context.Context, roleName string, role *roleEntry, conn *connection) (*logical.Response, error) {
	token, err := conn.altruistiq.Token(ctx, role.Scopes)
	if err != nil {
		return nil, upstreamError("fetching access token", err)
	}
	// The lease must never outlive the token it carries.
	ttl := time.Until(token.Expiry).Truncate(time.Second)
	if ttl < time.Second {
		return nil, errors.New("fetching access token: the upstream returned a token that expires in under a second")
	}
	for _, limit := range []time.Duration{role.TTL, role.MaxTTL} {
		if limit > 0 && limit < ttl {
			ttl = limit
		}
	}
	resp := b.Secret(secretTypeAltruistiqToken).Response(map[string]any{
		"access_token": token.AccessToken,
		"token_type":   token.TokenType,
		"expires_at":   token.Expiry.UTC().Format(time.RFC3339),
	}, map[string]any{
		"config": role.Config,
		"role":   roleName,
	})
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = ttl
	return resp, nil
}

// mountMaxTTL is the mount's max lease TTL, for the inventory's expiry
// estimate. For an external plugin every SystemView call is a round trip to
// Vault, so issuance reuses the value for a minute; a mount tuned meanwhile
// only moves tidy's expiry estimate, never a lease.
func (b *backend) mountMaxTTL() time.Duration {
	b.mountMaxLock.Lock()
	defer b.mountMaxLock.Unlock()
	if time.Since(b.mountMaxRead) > time.Minute {
		b.mountMax, b.mountMaxRead = b.System().MaxLeaseTTL(), time.Now()
	}
	return b.mountMax
}

func secretClimatiqKey(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTypeClimatiqKey,
		Fields: map[string]*framework.FieldSchema{
			"api_key":    {Type: framework.TypeString, Description: "The Climatiq API key."},
			"key_id":     {Type: framework.TypeString, Description: "Upstream id of the key."},
			"key_name":   {Type: framework.TypeString, Description: "Upstream name of the key."},
			"project_id": {Type: framework.TypeString, Description: "Project the key belongs to."},
		},
		Renew:  b.renewClimatiqKey,
		Revoke: b.revokeClimatiqKey,
	}
}

func (b *backend) renewClimatiqKey(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	roleName, _ := req.Secret.InternalData["role"].(string)
	role, err := getRole(ctx, req.Storage, roleName)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role: %q no longer exists, so its leases cannot be renewed; read new credentials from another role", roleName), nil
	}
	ttl, warnings, err := framework.CalculateTTL(b.System(), req.Secret.Increment, role.TTL, 0, role.MaxTTL, 0, req.Secret.IssueTime)
	if err != nil {
		return nil, err
	}
	b.observe(ctx, eventKeyRenew, "role", roleName, "key_id", fmt.Sprint(req.Secret.InternalData["key_id"]), "ttl", ttl.String())
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = role.MaxTTL
	for _, w := range warnings {
		resp.AddWarning(w)
	}
	return resp, nil
}

// revokeClimatiqKey deletes the key upstream (with its project for
// project_per_lease roles). A key that is already gone counts as revoked.
// Any other failure is returned so Vault's expiration manager retries.
func (b *backend) revokeClimatiqKey(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	var lease struct {
		Config          string `json:"config"`
		Role            string `json:"role"`
		KeyID           string `json:"key_id"`
		KeyName         string `json:"key_name"`
		ProjectID       string `json:"project_id"`
		ProjectPerLease bool   `json:"project_per_lease"`
	}
	if err := decodeWAL(req.Secret.InternalData, &lease); err != nil {
		return nil, err
	}
	if lease.KeyID == "" {
		return nil, errors.New("lease carries no key_id")
	}
	conn, err := b.connection(ctx, req.Storage, lease.Config)
	if err != nil {
		return nil, err
	}
	if conn == nil || conn.climatiq == nil {
		return nil, fmt.Errorf("connection %q no longer exists: recreate it so the key can be deleted upstream, or revoke the lease with -force and delete key %q by hand", lease.Config, lease.KeyID)
	}
	if lease.ProjectPerLease {
		err = ignoreNotFound(conn.climatiq.DeleteProject(ctx, lease.ProjectID))
	} else {
		err = ignoreNotFound(conn.climatiq.DeleteKey(ctx, lease.KeyID))
	}
	if err != nil {
		return nil, upstreamError("deleting key", err)
	}
	if err := deleteInventory(ctx, req.Storage, keyKindDynamic, lease.Role, lease.KeyName); err != nil {
		return nil, err
	}
	b.observe(ctx, eventKeyRevoke, "role", lease.Role, "config", lease.Config, "key_id", lease.KeyID, "project_id", lease.ProjectID)
	return nil, nil
}

func secretAltruistiqToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTypeAltruistiqToken,
		Fields: map[string]*framework.FieldSchema{
			"access_token": {Type: framework.TypeString, Description: "The OAuth access token."},
			"token_type":   {Type: framework.TypeString, Description: "Token type, Bearer."},
			"expires_at":   {Type: framework.TypeString, Description: "When the token expires (RFC 3339)."},
		},
		// Altruistiq has no revocation endpoint: the token expires on its
		// own, and the lease never outlives it.
		Revoke: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
			return nil, nil
		},
	}
}

// upstreamError reports an upstream failure with the upstream's status and
// message (the upstream clients' errors carry no secrets). Vault answers it
// with a 500: the caller did nothing wrong, and Vault's expiration manager
// retries a revocation that fails this way.
func upstreamError(op string, err error) error {
	return fmt.Errorf("%s: %w", op, err)
}

const pathCredsHelp = `
Reading creds/<role> issues credentials from a dynamic role.

Climatiq roles return a new API key (api_key, key_id, key_name, project_id)
with a renewable lease capped by the role's max_ttl. When the lease is
revoked or expires, the key is deleted upstream; a key already deleted
upstream counts as revoked.

Altruistiq roles return an OAuth access token (access_token, token_type,
expires_at). Tokens are shared between reads until shortly before they
expire; the lease ends no later than the token and is not renewable.
`
