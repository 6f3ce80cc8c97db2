package carbon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// The leased secret types that creds/<role> returns, with what Vault's
// expiration manager calls on them: renew and revoke.
const (
	secretTypeClimatiqKey     = "climatiq_key"
	secretTypeAltruistiqToken = "altruistiq_token"
)

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
		Revoke: b.countRevocation(b.revokeClimatiqKey),
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
	// Vault's expiration manager caps the answer the same way and says so in
	// a warning of its own; adding this call's would print it twice.
	ttl, _, err := framework.CalculateTTL(b.System(), req.Secret.Increment, role.TTL, 0, role.MaxTTL, 0, req.Secret.IssueTime)
	if err != nil {
		return nil, err
	}
	if err := b.extendRecordedExpiry(ctx, req.Storage, req.Secret.InternalData, ttl); err != nil {
		return nil, err
	}
	b.logAndEmit(eventKeyRenew, "role", roleName, "key_id", fmt.Sprint(req.Secret.InternalData["key_id"]), "ttl", ttl.String())
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = role.MaxTTL
	return resp, nil
}

// expirySlack is how far a renewed lease may end past the recorded expiry
// before the record is moved. Tidy deletes a key only an hour past its
// recorded expiry (expiredGrace), so a few seconds of rounding between the
// engine's expiry and Vault's issue time cost no write.
const expirySlack = time.Minute

// extendRecordedExpiry keeps the inventory's expiry of a renewed key at or
// after the lease's new end, before Vault learns of that end: tidy deletes
// keys whose recorded expiry has passed. Issuance records the lease's
// max_ttl, so a renewal writes nothing unless max_ttl was raised since;
// then it writes the key's entry once with the new expiry (and the lease's
// internal data carries it, for the next renewal). It never moves the
// record earlier (a renewal whose answer Vault lost must not shorten it).
func (b *backend) extendRecordedExpiry(ctx context.Context, s logical.Storage, leaseData map[string]any, ttl time.Duration) error {
	var lease ownedKey
	if err := decodeInto(leaseData, &lease); err != nil {
		return err
	}
	end := b.now().Add(ttl).UTC().Truncate(time.Second)
	if !lease.Expires.IsZero() && !end.After(lease.Expires.Add(expirySlack)) {
		return nil // the common case: no storage call at all
	}
	lock := b.keyLock(lease.KeyName)
	lock.Lock()
	defer lock.Unlock()
	key, err := getKey(ctx, s, lease.KeyID)
	if err != nil {
		return err
	}
	if key == nil && !b.legacyInventoryMoved.Load() {
		if key, err = getLegacyKey(ctx, s, keyKindDynamic, lease.Role, lease.KeyName); err != nil || key == nil {
			return err
		}
		if err := moveLegacyKey(ctx, s, key); err != nil {
			return err
		}
	}
	if key == nil {
		return nil // not held: revoked or rolled back meanwhile
	}
	if end.After(key.Expires) {
		if err := recordExpiry(ctx, s, key, end); err != nil {
			return err
		}
		key.Expires = end
	}
	leaseData["created"], leaseData["expires"] = key.Created, key.Expires
	return nil
}

// keyLock serialises the inventory writes of one lease's renew and revoke,
// so a renewal never writes back the entry a revocation just removed.
func (b *backend) keyLock(keyName string) *nameLock {
	return b.keyLocks.forName(keyName)
}

// revokeClimatiqKey deletes the key upstream (with its project for
// project_per_lease roles). A key that is already gone counts as revoked.
// Any other failure is returned so Vault's expiration manager retries.
func (b *backend) revokeClimatiqKey(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	var key ownedKey
	if err := decodeInto(req.Secret.InternalData, &key); err != nil {
		return nil, err
	}
	if key.KeyID == "" {
		return nil, errors.New("lease carries no key_id")
	}
	key.Kind = keyKindDynamic
	client, err := b.climatiqClient(ctx, req.Storage, key.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: recreate it so the key can be deleted upstream, or revoke the lease with -force and delete key %q by hand", err, key.KeyID)
	}
	if err := deleteUpstreamPersistently(ctx, client, &key); err != nil {
		return nil, upstreamError("deleting key", err)
	}
	lock := b.keyLock(key.KeyName)
	lock.Lock()
	err = b.forgetKey(ctx, req.Storage, &key)
	lock.Unlock()
	if err != nil {
		return nil, err
	}
	b.logAndEmit(eventKeyRevoke, "role", key.Role, "config", key.Config, "key_id", key.KeyID, "project_id", key.ProjectID)
	return nil, nil
}

// revokeRetryFor bounds how long a revocation keeps trying a delete that
// failed in a way that may pass (an upstream 5xx or 429, or no answer), on
// top of the client's own max_retries. A delete is idempotent, and giving
// up early costs more: Vault retries a failed revocation only 13–28 s
// later, and `vault lease revoke -sync -prefix` stops at the first failed
// lease. It stays well inside Vault's 90 s request limit.
var revokeRetryFor = 30 * time.Second

// deleteUpstreamPersistently is deleteUpstream retried, with the client's
// backoff, until it succeeds, fails for good, or revokeRetryFor (or the
// request's deadline) has passed.
func deleteUpstreamPersistently(ctx context.Context, client *climatiq.Client, key *ownedKey) error {
	retryCtx, cancel := context.WithTimeout(ctx, revokeRetryFor)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := deleteUpstream(ctx, client, key)
		if err == nil || !mayPass(err) || client.Pause(retryCtx, attempt) != nil {
			return err
		}
	}
}

// mayPass reports whether an upstream failure may pass on its own: no
// answer came, or the upstream was overloaded or failing (429, 5xx).
func mayPass(err error) bool {
	status, answered := upstreamStatus(err)
	return !answered || status == statusTooManyRequests || status >= 500
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
