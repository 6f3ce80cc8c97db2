package carbon

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// A static role restored from a Raft snapshot can point at a key that was
// rotated away, and so deleted upstream, after the snapshot was taken: it
// would serve a dead key until its next rotation. Vault reloads every mount
// after a restore, so each start checks, once, that every static role's key
// still exists upstream, and rotates a role whose key is gone. Until a
// role's check has passed, a static-creds read checks it first.
type staticKeyChecks struct {
	mu       sync.Mutex
	verified map[string]string // role -> key id found upstream (or made) by this instance
	done     chan struct{}     // closed when the start's check has ended; nil before it starts
}

// started notes that the start's check runs, and returns its end.
func (c *staticKeyChecks) started() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = make(chan struct{})
	return c.done
}

// ended is closed once the start's check has ended; nil when none runs.
func (c *staticKeyChecks) ended() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

func (c *staticKeyChecks) isVerified(name, keyID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verified[name] == keyID
}

func (c *staticKeyChecks) markVerified(name, keyID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verified == nil {
		c.verified = map[string]string{}
	}
	c.verified[name] = keyID
}

// staticKeyCheckTimeout bounds one start's check of every static role.
const staticKeyCheckTimeout = 10 * time.Minute

// checkStaticKeys checks every static role's key once, one key list per
// project, and heals those whose key is gone. A role whose project cannot
// be listed now stays unchecked: its next static-creds read checks it.
func (b *backend) checkStaticKeys(ctx context.Context, s logical.Storage) {
	ctx, cancel := context.WithTimeout(ctx, staticKeyCheckTimeout)
	defer cancel()
	names, err := s.List(ctx, staticRoleStoragePrefix)
	if err != nil {
		b.Logger().Warn("checking static roles' keys upstream failed; each is checked at its next read", "error", err)
		return
	}
	roles, err := loadStaticRoles(ctx, s, names)
	if err != nil {
		b.Logger().Warn("checking static roles' keys upstream failed; each is checked at its next read", "error", err)
		return
	}
	listed := map[[2]string]map[string]bool{} // (config, project) -> key ids upstream; nil when it could not be listed
	for i, role := range roles {
		if role == nil || role.KeyID == "" {
			continue
		}
		scope := [2]string{role.Config, role.ProjectID}
		present, seen := listed[scope]
		if !seen {
			present = b.upstreamKeyIDs(ctx, s, role.Config, role.ProjectID)
			listed[scope] = present
		}
		switch {
		case present == nil:
			continue // left for the read
		case present[role.KeyID]:
			b.staticKeyChecks.markVerified(names[i], role.KeyID)
		default:
			b.healStaticRole(ctx, s, names[i], role.KeyID)
		}
	}
}

// upstreamKeyIDs lists a project's key ids; nil when the list failed, and
// empty when the project is gone (its keys went with it).
func (b *backend) upstreamKeyIDs(ctx context.Context, s logical.Storage, config, project string) map[string]bool {
	client, err := b.climatiqClient(ctx, s, config)
	if err != nil {
		return nil
	}
	keys, err := client.ListKeys(ctx, project)
	if errors.Is(err, climatiq.ErrNotFound) {
		return map[string]bool{}
	}
	if err != nil {
		b.Logger().Warn("checking static roles' keys upstream failed; each is checked at its next read", "config", config, "project_id", project, "error", err)
		return nil
	}
	ids := make(map[string]bool, len(keys))
	for _, k := range keys {
		ids[k.ID] = true
	}
	return ids
}

// healStaticRole rotates a role whose key deadKeyID is gone upstream,
// under the role's lock, unless a rotation got there first.
func (b *backend) healStaticRole(ctx context.Context, s logical.Storage, name, deadKeyID string) {
	lock := b.staticRoleLock(name)
	lock.Lock()
	defer lock.Unlock()
	role, err := getStaticRole(ctx, s, name)
	if err != nil || role == nil || role.KeyID != deadKeyID {
		return // deleted or rotated meanwhile
	}
	b.Logger().Warn("a static role's key is gone upstream (a snapshot restore, or a delete outside Vault); rotating it now",
		"role", name, "key_id", deadKeyID)
	client, err := b.climatiqClient(ctx, s, role.Config)
	if err == nil {
		err = b.rotateStaticRole(ctx, s, rotationInput{name: name, role: role, client: client, trigger: triggerHeal})
	}
	if err != nil {
		// Retried as a scheduled rotation is, with its back-off.
		b.recordRotationFailure(ctx, s, name, role, err, triggerHeal)
	} else {
		b.staticKeyChecks.markVerified(name, role.KeyID)
	}
	b.scheduleStaticRole(name, role)
}

// checkBeforeServing checks, for a static-creds read, a role whose key
// this instance has not yet seen upstream, and heals it when the key is
// gone. Where this node may not rotate, the read is sent on to one that
// may (ErrReadOnly: Vault forwards it). It returns the role to serve.
func (b *backend) checkBeforeServing(ctx context.Context, req *logical.Request, name string, role *staticRole) (*staticRole, error) {
	if role.KeyID == "" || b.staticKeyChecks.isVerified(name, role.KeyID) {
		return role, nil
	}
	present := b.upstreamKeyIDs(ctx, req.Storage, role.Config, role.ProjectID)
	switch {
	case present == nil:
		return role, nil // cannot tell now: serve what is stored
	case present[role.KeyID]:
		b.staticKeyChecks.markVerified(name, role.KeyID)
		return role, nil
	case !b.WriteSafeReplicationState():
		return nil, logical.ErrReadOnly
	}
	b.healStaticRole(ctx, req.Storage, name, role.KeyID)
	return getStaticRole(ctx, req.Storage, name)
}
