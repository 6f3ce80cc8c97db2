package carbon

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

const (
	staticRoleStoragePrefix = "static-roles/"

	// minRotationPeriod keeps the scheduler sane; short periods exist for
	// tests, operators use hours or days.
	minRotationPeriod = 5 * time.Second
)

func pathStaticRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		collectionPath(staticRoleStoragePrefix, "static-roles", "static roles", func(ctx context.Context, s logical.Storage, name string) (map[string]any, error) {
			role, err := getStaticRole(ctx, s, name)
			if err != nil || role == nil {
				return nil, err
			}
			return map[string]any{"config": role.Config, "key_id": role.KeyID, "next_rotation": formatTime(role.nextRotationAttempt())}, nil
		}),
		{
			Pattern: "static-roles/" + framework.MatchAllRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationSuffix: "static-role",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the static role.",
					Required:    true,
				},
				"config": {
					Type:        framework.TypeString,
					Description: "Name of the Climatiq connection (config/<name>). Required on create; cannot change.",
				},
				"project_id": {
					Type:        framework.TypeString,
					Description: "Climatiq project that holds the key. Required on create; cannot change.",
				},
				"key_id": {
					Type: framework.TypeString,
					Description: "Adopt this existing key of the project instead of creating one. Only on create, and only a key " +
						"this mount does not already own (a leased key or another static role's key is refused).",
				},
				"rotation_period": {
					Type:        framework.TypeDurationSecond,
					Description: "Rotate the key this long after the last rotation (at least 5s). Mutually exclusive with rotation_schedule: to switch a role from a schedule to a period, set rotation_schedule=\"\" in the same write.",
				},
				"rotation_schedule": {
					Type:        framework.TypeString,
					Description: "Cron schedule (UTC, 5 fields) on which to rotate the key. Mutually exclusive with rotation_period: to switch a role from a period to a schedule, set rotation_period=0 in the same write.",
				},
				"rotation_window": {
					Type:        framework.TypeDurationSecond,
					Description: "With rotation_schedule: how long after a scheduled time the rotation, and its retries after failures, may still run (at least 1h; 0, the default, means no limit). A rotation missed by more waits for the next scheduled time.",
				},
				"disable_automated_rotation": {
					Type:        framework.TypeBool,
					Description: "Rotate only on request (rotate-role/<name>), never on a schedule.",
				},
				"overlap_period": {
					Type:        framework.TypeDurationSecond,
					Description: "How long a replaced key stays valid after a rotation, so running applications can switch over. 0 (default) deletes it at once. A later rotation never cuts it short (unless rotate-role is called with delete_previous_keys=true).",
				},
				"delete_key_on_remove": {
					Type:        framework.TypeBool,
					Default:     true,
					Description: "Delete the key upstream when the role is deleted. With false, the key (and any key still in its overlap) is released: left upstream, and never deleted by this mount again, tidy included.",
				},
			},
			ExistenceCheck:  b.pathStaticRoleExists,
			Operations:      crudOperations(b.lockingStaticRole(b.pathStaticRoleWrite), b.pathStaticRoleRead, b.lockingStaticRole(b.pathStaticRoleDelete), "a static role", staticRoleReadResponse),
			HelpSynopsis:    "Manage static roles: one Vault-owned Climatiq key, rotated on a schedule.",
			HelpDescription: strings.TrimSpace(pathStaticRolesHelp),
		},
		{
			Pattern: "static-creds/" + framework.MatchAllRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationVerb:   "request",
				OperationSuffix: "static-role-credentials",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the static role.",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathStaticCredsRead,
					Responses: staticCredsResponse,
					Summary:   "Read the current key of a static role.",
				},
			},
			HelpSynopsis:    "Read the current key of a static role.",
			HelpDescription: strings.TrimSpace(pathStaticCredsHelp),
		},
	}
}

// staticRoleLock serialises everything that changes one static role's key:
// scheduled and manual rotation, writes and deletes.
func (b *backend) staticRoleLock(name string) *nameLock {
	return b.staticRoleLocks.forName(name)
}

// lockingStaticRole wraps a handler that changes a static role's key: it
// validates the name from the path and holds the role's lock, so the change
// never interleaves with a rotation, a write or a delete of the same role.
func (b *backend) lockingStaticRole(handler func(context.Context, *logical.Request, *framework.FieldData, string) (*logical.Response, error)) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		name := d.Get("name").(string)
		if err := validateName("name", name); err != nil {
			return errorResponse(err)
		}
		lock := b.staticRoleLock(name)
		lock.Lock()
		defer lock.Unlock()
		return handler(ctx, req, d, name)
	}
}

func (b *backend) pathStaticRoleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("name", name) != nil {
		// The handler answers with the 400; an invalid name must not
		// reach storage (a 5000-character key is a storage error).
		return false, nil
	}
	role, err := getStaticRole(ctx, req.Storage, name)
	return role != nil, err
}

func (b *backend) pathStaticRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	role, err := getStaticRole(ctx, req.Storage, name)
	if err != nil || role == nil {
		return nil, err
	}
	data := map[string]any{
		"config":               role.Config,
		"project_id":           role.ProjectID,
		"key_id":               role.KeyID,
		"key_name":             role.KeyName,
		"overlap_period":       int64(role.OverlapPeriod.Seconds()),
		"delete_key_on_remove": role.DeleteKeyOnRemove,
		"last_rotated":         formatTime(role.LastRotated),
		"next_rotation":        formatTime(role.nextRotationAttempt()),
	}
	role.PopulateSetAutomatedRotationData(data)
	delete(data, "rotation_policy")
	if role.RotationPeriod != 0 {
		data["rotation_period"] = int64(role.RotationPeriod.Seconds())
	}
	if role.RotationSchedule != "" {
		data["rotation_window"] = int64(role.RotationWindow.Seconds())
	}
	if n := len(role.PreviousKeys); n > 0 {
		newest := role.PreviousKeys[n-1]
		data["previous_key_id"] = newest.KeyID
		data["previous_key_expires"] = formatTime(newest.Expires)
		previous := make([]map[string]any, 0, n)
		for _, pk := range role.PreviousKeys {
			entry := map[string]any{"key_id": pk.KeyID, "expires": formatTime(pk.Expires)}
			if pk.LastDeleteError != "" {
				entry["last_delete_error"] = pk.LastDeleteError
				entry["delete_retry_at"] = formatTime(pk.DeleteRetryAt)
			}
			previous = append(previous, entry)
		}
		data["previous_keys"] = previous
	}
	if role.LastError != "" {
		data["last_rotation_error"] = role.LastError
		data["last_rotation_error_time"] = formatTime(role.LastErrorTime)
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathStaticRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	role, err := getStaticRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	create := role == nil
	if create {
		role = &staticRole{DeleteKeyOnRemove: true}
	}
	if err := role.update(d, b.now()); err != nil {
		return errorResponse(err)
	}
	client, err := b.climatiqClient(ctx, req.Storage, role.Config)
	var ce *connectionError
	if errors.As(err, &ce) {
		if ce.notClimatiq {
			return logical.ErrorResponse("config: %s; static roles hold Climatiq keys", ce), nil
		}
		return logical.ErrorResponse("config: %s; create it first with a write to config/%s", ce, role.Config), nil
	}
	if err != nil {
		return nil, err
	}

	if !create {
		role.NextRotation = role.nextRotationAfter(role.LastRotated)
		if !role.RetryAt.IsZero() && (role.NextRotation.IsZero() || role.NextRotation.After(b.now())) {
			// A retry is of a rotation due under the old settings; under
			// the new ones none is due yet. The error stays on show.
			role.FailedAttempts, role.RetryAt = 0, time.Time{}
		}
		if err := putStaticRole(ctx, req.Storage, name, role); err != nil {
			return nil, err
		}
		b.scheduleStaticRole(name, role)
		return nil, nil
	}

	if keyID, ok := d.GetOk("key_id"); ok && keyID.(string) != "" {
		if resp, err := b.adoptKey(ctx, req.Storage, name, role, client, keyID.(string)); resp != nil || err != nil {
			return resp, err
		}
	} else {
		if resp := checkProjectVisible(ctx, client, role.Config, role.ProjectID, staticProjectFix); resp != nil {
			return resp, nil
		}
		if err := b.replaceStaticKey(ctx, req.Storage, name, role, client); err != nil {
			return nil, err
		}
	}
	b.scheduleStaticRole(name, role)
	return nil, nil
}

// update applies the request's fields and validates them. A role without
// a connection is being created: every stored role has one.
func (role *staticRole) update(d *framework.FieldData, now time.Time) error {
	create := role.Config == ""
	for _, field := range []string{"config", "project_id", "key_id"} {
		if v, ok := d.GetOk(field); ok && !create {
			current := map[string]string{"config": role.Config, "project_id": role.ProjectID, "key_id": role.KeyID}[field]
			if v.(string) != current {
				return invalidField(field, "cannot change on an existing static role; delete the role and create it again")
			}
		}
	}
	if create {
		role.Config = strings.TrimSpace(d.Get("config").(string))
		role.ProjectID = strings.TrimSpace(d.Get("project_id").(string))
		if role.Config == "" {
			return invalidField("config", "is required; name the climatiq connection (config/<name>)")
		}
		if err := validateName("config", role.Config); err != nil {
			return err
		}
		if role.ProjectID == "" {
			return invalidField("project_id", "is required; give the Climatiq project that holds the key")
		}
	}

	if err := role.applyRotationFields(d); err != nil {
		return err
	}
	if v, ok := d.GetOk("overlap_period"); ok {
		role.OverlapPeriod = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("delete_key_on_remove"); ok {
		role.DeleteKeyOnRemove = v.(bool)
	}

	switch {
	case role.RotationPeriod < 0:
		return invalidField("rotation_period", "must not be negative")
	case role.RotationPeriod > 0 && role.RotationPeriod < minRotationPeriod:
		return invalidField("rotation_period", "must be at least %s", minRotationPeriod)
	case role.RotationSchedule == "" && role.RotationPeriod == 0 && !role.DisableAutomatedRotation:
		return invalidField("rotation_period", "or rotation_schedule is required (or disable_automated_rotation=true for manual rotation only)")
	case role.RotationWindow < 0:
		return invalidField("rotation_window", "must not be negative")
	case role.OverlapPeriod < 0:
		return invalidField("overlap_period", "must not be negative")
	}
	if role.RotationWindow > 0 {
		// The SDK's message starts with the field's name, which
		// invalidField already gives.
		if err := rotation.DefaultScheduler.ValidateRotationWindow(int(role.RotationWindow.Seconds())); err != nil {
			return invalidField("rotation_window", "%s; set a longer window, or rotation_window=0 for none", strings.TrimPrefix(err.Error(), "rotation_window "))
		}
	}
	if gap := role.shortestRotationGap(now); gap > 0 && role.OverlapPeriod >= gap {
		return invalidField("overlap_period", "(%s) must be shorter than the shortest time between rotations (%s)", role.OverlapPeriod, gap)
	}
	if role.DisableAutomatedRotation {
		// A manual-only role never retries by itself.
		role.FailedAttempts, role.RetryAt = 0, time.Time{}
	}
	return nil
}

// applyRotationFields merges the request's rotation fields into the stored
// policy and checks the result, not only the request: a period and a
// schedule never both stand, and a window needs a schedule.
func (role *staticRole) applyRotationFields(d *framework.FieldData) error {
	period, periodSet := d.GetOk("rotation_period")
	schedule, scheduleSet := d.GetOk("rotation_schedule")
	if periodSet {
		role.RotationPeriod = time.Duration(period.(int)) * time.Second
	}
	if scheduleSet {
		role.RotationSchedule = strings.TrimSpace(schedule.(string))
		if role.RotationSchedule != "" {
			sched, err := rotation.DefaultScheduler.Parse(role.RotationSchedule)
			if err != nil {
				return invalidField("rotation_schedule", "%s is not a valid cron schedule (5 fields, UTC): %s", quoteForMessage(role.RotationSchedule), err)
			}
			// The cron library gives up (zero time) after five years
			// without a match: a day that does not exist, as 30 February.
			if sched.Next(time.Now()).IsZero() {
				return invalidField("rotation_schedule", "%s never fires: no date matches it (a day the month does not have?); fix the day and month fields", quoteForMessage(role.RotationSchedule))
			}
		}
	}
	if v, ok := d.GetOk("rotation_window"); ok {
		role.RotationWindow = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("disable_automated_rotation"); ok {
		role.DisableAutomatedRotation = v.(bool)
		// As the SDK's automated-rotation fields: manual-only and a
		// schedule in one write cannot both be meant.
		if role.DisableAutomatedRotation && ((periodSet && role.RotationPeriod != 0) || (scheduleSet && role.RotationSchedule != "")) {
			return invalidField("disable_automated_rotation", "cannot be true in a write that sets rotation_period or rotation_schedule; drop those for manual rotation only, or drop disable_automated_rotation")
		}
	}
	if role.RotationPeriod != 0 && role.RotationSchedule != "" {
		if periodSet && !scheduleSet {
			return invalidField("rotation_period", "cannot be set while the role rotates on rotation_schedule %s; to switch, set rotation_schedule=\"\" in the same write", quoteForMessage(role.RotationSchedule))
		}
		if scheduleSet && !periodSet {
			return invalidField("rotation_schedule", "cannot be set while the role rotates every rotation_period (%s); to switch, set rotation_period=0 in the same write", role.RotationPeriod)
		}
		return invalidField("rotation_period", "and rotation_schedule are mutually exclusive; set one of them")
	}
	if role.RotationWindow != 0 && role.RotationSchedule == "" {
		return invalidField("rotation_window", "applies only with rotation_schedule; set rotation_schedule or rotation_window=0")
	}
	return nil
}

// adoptKey makes an existing upstream key the role's key. The key's value
// comes from the project's key list.
//
// A key the mount already owns (a lease's, or another static role's) is
// refused: this role's next rotation would delete it under its holder. A
// released key may be adopted again; it is then no longer released.
func (b *backend) adoptKey(ctx context.Context, s logical.Storage, name string, role *staticRole, client *climatiq.Client, keyID string) (*logical.Response, error) {
	lock := b.adoptionLocks.forName(keyID)
	lock.Lock()
	defer lock.Unlock()
	owner, err := b.findKey(ctx, s, keyID)
	if err != nil {
		return nil, err
	}
	if owner != nil && owner.kind() == keyKindStatic && owner.Role != name {
		// Another role's record of a key that role does not hold is what a
		// stop or failed write leaves of a delete or adoption: only an
		// adoption (under this lock) makes a role hold an existing key.
		if owner, err = b.unlessStale(ctx, s, owner); err != nil {
			return nil, err
		}
	}
	for _, pk := range role.PreviousKeys {
		if pk.KeyID == keyID {
			return logical.ErrorResponse("key_id: key %q is this role's previous key, deleted when its overlap ends; adopt another key, or omit key_id to create a new one", keyID), nil
		}
	}
	// An entry of this very role is an adoption that failed after its
	// first write (or the role's current key): writing the role again
	// finishes it.
	if owner != nil && (owner.kind() != keyKindStatic || owner.Role != name) {
		return logical.ErrorResponse("key_id: key %q is already owned by this mount (%s role %q); adopt only a key this mount does not hold, or omit key_id to create a new key",
			keyID, owner.kind(), owner.Role), nil
	}
	if resp := checkProjectVisible(ctx, client, role.Config, role.ProjectID, staticProjectFix); resp != nil {
		return resp, nil
	}
	keys, err := client.ListKeys(ctx, role.ProjectID)
	if err != nil {
		return nil, upstreamError("listing the project's keys", err)
	}
	for _, k := range keys {
		if k.ID != keyID {
			continue
		}
		now := b.now()
		role.KeyID, role.KeyName, role.KeyValue = k.ID, k.Name, k.Key
		role.LastRotated = now
		role.NextRotation = role.nextRotationAfter(now)
		// The inventory first, so that no other role can adopt the key
		// once this one may hold it; then the role; the release record
		// last, so there is no moment in which tidy could take the key for
		// an orphan (tidy reads release records before roles).
		owned := role.ownedKey(name, k.ID, k.Name, now)
		if err := b.recordKey(ctx, s, owned, nil); err != nil {
			return nil, err
		}
		if err := putStaticRole(ctx, s, name, role); err != nil {
			if forgetErr := b.forgetKey(ctx, s, owned); forgetErr != nil {
				b.Logger().Warn("adoption failed and its inventory entry stays; writing the role again resolves it", "role", name, "key_id", k.ID, "error", forgetErr)
			}
			return nil, err
		}
		return nil, unreleaseKey(ctx, s, k.ID)
	}
	return logical.ErrorResponse("key_id: project %q has no key %q; check the id, or omit key_id to create a new key", role.ProjectID, keyID), nil
}

// unlessStale returns the static key record, or nil after forgetting it
// when the role it names does not hold the key.
func (b *backend) unlessStale(ctx context.Context, s logical.Storage, record *ownedKey) (*ownedKey, error) {
	role, err := getStaticRole(ctx, s, record.Role)
	if err != nil || role.holds(record.KeyID) {
		return record, err
	}
	return nil, b.forgetRoleRecords(ctx, s, record.KeyID, record.Role)
}

func (b *backend) pathStaticRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	role, err := getStaticRole(ctx, req.Storage, name)
	if err != nil || role == nil {
		return nil, err
	}
	keys := role.ownedKeys(name)
	if role.DeleteKeyOnRemove {
		client, err := b.climatiqClient(ctx, req.Storage, role.Config)
		if errors.As(err, new(*connectionError)) {
			return logical.ErrorResponse("config: connection %q no longer exists, so the key cannot be deleted; recreate it, or set delete_key_on_remove=false", role.Config), nil
		}
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if err := deleteUpstream(ctx, client, k); err != nil {
				return nil, upstreamError("deleting the static role's key", err)
			}
		}
	} else {
		// Recorded before the role goes, so there is no moment in which
		// tidy could take the keys for orphans.
		for _, k := range keys {
			if err := releaseKey(ctx, req.Storage, k, b.now()); err != nil {
				return nil, err
			}
		}
	}
	// The role goes in one write; its keys' inventory entries follow.
	// Entries left by a stop or a failed write in between name a role that
	// no longer holds the key, and tidy forgets them.
	if err := req.Storage.Delete(ctx, staticRoleStoragePrefix+name); err != nil {
		return nil, err
	}
	b.unscheduleStaticRole(name)
	for _, k := range keys {
		if err := b.forgetRoleRecords(ctx, req.Storage, k.KeyID, name); err != nil {
			b.Logger().Warn("forgetting a deleted static role's key in the inventory failed; tidy will", "role", name, "key_id", k.KeyID, "error", err)
		}
	}
	b.Logger().Info("deleted static role", "role", name, "key_id", role.KeyID, "keys_deleted", role.DeleteKeyOnRemove)
	return nil, nil
}

// staticProjectFix ends the 400 for a static role's project_id that its
// connection cannot see: a static key always lives in a named project.
const staticProjectFix = "check the id, or create the project upstream first (a static role's key lives in a named project; project_per_lease is for dynamic roles)"

// noStaticRole answers a static-role path (static-creds/, rotate-role/)
// asked for a name that is no static role. A dynamic role of that name is
// pointed at creds/, where its keys are issued, one per lease.
func (b *backend) noStaticRole(ctx context.Context, req *logical.Request, name, path string) (*logical.Response, error) {
	if role, err := b.cachedRole(ctx, req.Storage, name); err == nil && role != nil {
		return logical.ErrorResponse("name: %q is a dynamic role, whose keys are issued per lease and never rotated, so it has no %s/; read a key with vault read %screds/%s", name, path, req.MountPoint, name), nil
	}
	return logical.ErrorResponse("name: no static role %q; create it with a write to static-roles/%s", name, name), nil
}

func (b *backend) pathStaticCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	role, err := getStaticRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return b.noStaticRole(ctx, req, name, "static-creds")
	}
	if role, err = b.checkBeforeServing(ctx, req, name, role); err != nil || role == nil {
		return nil, err
	}
	now := b.now()
	data := map[string]any{
		"api_key":      role.KeyValue,
		"key_id":       role.KeyID,
		"key_name":     role.KeyName,
		"project_id":   role.ProjectID,
		"last_rotated": formatTime(role.LastRotated),
	}
	// Vault Agent re-reads a lease-less secret after ttl+1s only when the
	// data has rotation_period and an integer ttl. While a failed rotation
	// backs off, ttl counts down to the retry, so Agent does not re-read
	// every second in between.
	if next := role.nextRotationAttempt(); !next.IsZero() {
		ttl := max(int64(next.Sub(now).Seconds()), 0)
		data["next_rotation"] = formatTime(next)
		data["ttl"] = ttl
		data["rotation_period"] = int64(role.rotationInterval(now).Seconds())
	}
	if n := len(role.PreviousKeys); n > 0 {
		data["previous_key_id"] = role.PreviousKeys[n-1].KeyID
	}
	return &logical.Response{Data: data}, nil
}

const pathStaticRolesHelp = `
A static role owns one long-lived Climatiq key and rotates it under a policy:
rotation_period (a duration) or rotation_schedule (cron, UTC) with an optional
rotation_window, or disable_automated_rotation=true for manual rotation only
(rotate-role/<name>). The field names follow Vault's automated-rotation
fields; the schedule runs inside this plugin, so it works on Vault Community
Edition.

On create the role makes a new key in project_id, or adopts the existing key
key_id. After each rotation the previous key stays valid for overlap_period,
then is deleted. Deleting the role deletes its key upstream unless
delete_key_on_remove=false.

Reading the role shows last_rotated, next_rotation and the last rotation
error with its time, if any.
`

const pathStaticCredsHelp = `
Returns the static role's current key: api_key, key_id, key_name,
project_id, last_rotated, next_rotation, ttl (whole seconds until the next
rotation) and rotation_period (whole seconds), and during an overlap
previous_key_id. The response carries no lease: Vault Agent re-reads it when
ttl runs out, because the data has rotation_period and an integer ttl.
`
