package carbon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

const (
	// minAltruistiqLease is the shortest lease a new Altruistiq read gets
	// (for tokens that live at least twice as long): a shared token is
	// replaced once less than this remains.
	minAltruistiqLease = 5 * time.Minute
)

// issuedKeyWait bounds how long verify_issued_keys waits for a new Climatiq
// key to be accepted by the regular API (a variable for tests).
var issuedKeyWait = 15 * time.Second

func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{
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
					Callback:  b.countIssuance(b.pathCredsRead),
					Responses: credsResponse,
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
		if static, err := getStaticRole(ctx, req.Storage, roleName); err == nil && static != nil {
			return logical.ErrorResponse("role: %q is a static role; read its key with vault read %sstatic-creds/%s", roleName, req.MountPoint, roleName), nil
		}
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
// the inventory and returns it leased. The WAL entry covers a block of
// names (issuance_wal.go), written once for many issuances, so the
// request's one storage write is the key's inventory entry. A role with
// max_keys takes a slot first (livecounts.go).
func (b *backend) issueClimatiqKey(ctx context.Context, req *logical.Request, roleName string, role *roleEntry, conn *connection) (*logical.Response, error) {
	var slot *keySlot
	if role.MaxKeys > 0 {
		var taken int
		var err error
		slot, taken, err = b.takeKeySlot(ctx, req.Storage, keyKindDynamic, roleName, role.MaxKeys)
		if err != nil {
			return nil, err
		}
		if slot == nil {
			return logical.ErrorResponse("max_keys: role %q already has %d live keys or keys being issued (max_keys=%d); revoke a lease or raise max_keys", roleName, taken, role.MaxKeys), nil
		}
		// Recording the key ends the slot; any other way out gives it back.
		defer b.releaseKeySlot(slot)
	}

	marker, err := b.mountMarker(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	rendered, err := renderKeyName(role.keyNameTemplate(), keyNameData{RoleName: roleName, DisplayName: req.DisplayName})
	if err != nil {
		return logical.ErrorResponse("key_name_template: %s; fix the role's template", err), nil
	}
	scope := blockScope{config: role.Config, project: role.ProjectID, perLease: role.ProjectPerLease}
	if role.ProjectPerLease {
		scope.project = ""
	}
	issuance, err := b.takeIssuanceName(ctx, req.Storage, scope, marker, rendered)
	if err != nil {
		return nil, err
	}
	now := issuance.created
	resolved := true
	defer func() { b.finishIssuance(ctx, issuance, resolved) }()
	keyName := issuance.name

	key := &ownedKey{
		Kind:            keyKindDynamic,
		Config:          role.Config,
		Role:            roleName,
		ProjectID:       role.ProjectID,
		ProjectPerLease: role.ProjectPerLease,
		KeyName:         keyName,
	}
	client := conn.climatiq
	if role.ProjectPerLease {
		project, err := client.CreateProject(ctx, keyName)
		if err != nil {
			resolved = b.rollbackNow(ctx, req.Storage, key, err)
			return b.issuanceRefused(req, roleName, role, key, "creating project", err)
		}
		key.ProjectID = project.ID
	}
	created, err := client.CreateKey(ctx, key.ProjectID, keyName)
	if err != nil {
		resolved = b.rollbackNow(ctx, req.Storage, key, err)
		return b.issuanceRefused(req, roleName, role, key, "creating key", err)
	}
	key.KeyID = created.ID

	// The lease is capped at the expiry the inventory records, so tidy
	// can never take a live lease's key for an expired one. A renewal
	// moves the record only if max_ttl was raised since (secrets.go).
	maxTTL := role.MaxTTL
	if mountMax := b.mountMaxTTL(); maxTTL == 0 || maxTTL > mountMax {
		maxTTL = mountMax
	}
	key.Created, key.Expires = now.UTC().Truncate(time.Second), now.Add(maxTTL).UTC().Truncate(time.Second)
	if err := b.recordKey(ctx, req.Storage, key, slot); err != nil {
		resolved = b.rollbackNow(ctx, req.Storage, key, nil)
		return nil, fmt.Errorf("recording key in inventory: %w", err)
	}
	b.logAndEmit(eventKeyIssue, "role", roleName, "config", role.Config, "key_id", key.KeyID, "key_name", keyName, "project_id", key.ProjectID)
	resp := b.Secret(secretTypeClimatiqKey).Response(map[string]any{
		"api_key":    created.Key,
		"key_id":     key.KeyID,
		"key_name":   keyName,
		"project_id": key.ProjectID,
	}, key.leaseData())
	resp.Secret.TTL = role.TTL
	resp.Secret.MaxTTL = maxTTL
	if conn.config.VerifyIssuedKeys && !b.waitUntilKeyWorks(ctx, conn, created.Key) {
		resp.AddWarning(fmt.Sprintf("verify_issued_keys: the regular API (%s) did not accept the new key within %s; it may take a little longer to work", conn.config.APIURL, issuedKeyWait))
	}
	return resp, nil
}

// waitUntilKeyWorks calls the regular API with a new key until it is
// accepted or issuedKeyWait passes, for upstreams where a new key takes a
// moment to work.
func (b *backend) waitUntilKeyWorks(ctx context.Context, conn *connection, apiKey string) bool {
	ctx, cancel := context.WithTimeout(ctx, issuedKeyWait)
	defer cancel()
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if conn.climatiq.CheckKey(ctx, apiKey) == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// issuanceRefused answers a failed upstream create. What the role asked for
// and the upstream refused is the role's mistake, a 400 naming the field to
// fix: a project that is gone (404), or a name the upstream will not take
// (400; the only input of a create is the name). Anything else is the
// upstream's failure.
func (b *backend) issuanceRefused(req *logical.Request, roleName string, role *roleEntry, key *ownedKey, op string, err error) (*logical.Response, error) {
	var upstream *climatiq.Error
	switch {
	case errors.Is(err, climatiq.ErrNotFound) && !role.ProjectPerLease:
		return logical.ErrorResponse("project_id: project %q of role %q no longer exists upstream; point the role at an existing project (vault write %sroles/%s project_id=...)",
			key.ProjectID, roleName, req.MountPoint, roleName), nil
	case errors.As(err, &upstream) && upstream.StatusCode == statusBadRequest:
		return logical.ErrorResponse("key_name_template: the upstream refused the key name %q (%s); shorten the role's key_name_template (vault write %sroles/%s key_name_template=...)",
			key.KeyName, upstream.Message, req.MountPoint, roleName), nil
	}
	return nil, upstreamError(op, err)
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
	if role.TTL > ttl {
		resp.AddWarning(fmt.Sprintf("ttl: the lease ends with the access token, in %s, before the role's ttl (%s); read again for a new token and lease", ttl, role.TTL))
	}
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
