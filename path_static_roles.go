package carbon

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
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

// staticRole is the stored form of static-roles/:name: one Vault-owned
// Climatiq key and its rotation state. It holds the key value, so its
// storage is seal-wrapped.
type staticRole struct {
	Config    string `json:"config"`
	ProjectID string `json:"project_id"`

	automatedrotationutil.AutomatedRotationParams
	OverlapPeriod     time.Duration `json:"overlap_period"`
	DeleteKeyOnRemove bool          `json:"delete_key_on_remove"`

	KeyID        string    `json:"key_id"`
	KeyName      string    `json:"key_name"`
	KeyValue     string    `json:"key_value"`
	LastRotated  time.Time `json:"last_rotated"`
	NextRotation time.Time `json:"next_rotation"`

	// The key replaced by the last rotation, valid until PreviousExpires.
	PreviousKeyID   string    `json:"previous_key_id,omitempty"`
	PreviousKeyName string    `json:"previous_key_name,omitempty"`
	PreviousExpires time.Time `json:"previous_expires,omitempty"`

	// Failure state of scheduled work; RetryAt backs off retries.
	LastError      string    `json:"last_error,omitempty"`
	LastErrorTime  time.Time `json:"last_error_time,omitempty"`
	FailedAttempts int       `json:"failed_attempts,omitempty"`
	RetryAt        time.Time `json:"retry_at,omitempty"`
}

func pathStaticRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		collectionPath(staticRoleStoragePrefix, "static-roles", "static roles"),
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
					Type:        framework.TypeString,
					Description: "Adopt this existing key of the project instead of creating one. Only on create.",
				},
				"rotation_period": {
					Type:        framework.TypeDurationSecond,
					Description: "Rotate the key this long after the last rotation (at least 5s). Mutually exclusive with rotation_schedule.",
				},
				"rotation_schedule": {
					Type:        framework.TypeString,
					Description: "Cron schedule (UTC, 5 fields) on which to rotate the key. Mutually exclusive with rotation_period.",
				},
				"rotation_window": {
					Type:        framework.TypeDurationSecond,
					Description: "With rotation_schedule: how long after a scheduled time the rotation may still run (at least 1h). A rotation missed by more waits for the next scheduled time.",
				},
				"disable_automated_rotation": {
					Type:        framework.TypeBool,
					Description: "Rotate only on request (rotate-role/<name>), never on a schedule.",
				},
				"overlap_period": {
					Type:        framework.TypeDurationSecond,
					Description: "How long the previous key stays valid after a rotation, so running applications can switch over. 0 (default) deletes it at once.",
				},
				"delete_key_on_remove": {
					Type:        framework.TypeBool,
					Default:     true,
					Description: "Delete the key upstream when the role is deleted.",
				},
			},
			ExistenceCheck:  b.pathStaticRoleExists,
			Operations:      crudOperations(b.pathStaticRoleWrite, b.pathStaticRoleRead, b.pathStaticRoleDelete, "a static role"),
			HelpSynopsis:    "Manage static roles: one Vault-owned Climatiq key, rotated on a schedule.",
			HelpDescription: strings.TrimSpace(pathStaticRolesHelp),
		},
		{
			Pattern: "static-creds/?$",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: requireNameOperation("name", "static-creds/<name>"),
			},
			HelpSynopsis:    "Read static credentials: read static-creds/<name>.",
			HelpDescription: "Read static-creds/<name> for the current key of a static role.",
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
					Callback: b.pathStaticCredsRead,
					Summary:  "Read the current key of a static role.",
				},
			},
			HelpSynopsis:    "Read the current key of a static role.",
			HelpDescription: strings.TrimSpace(pathStaticCredsHelp),
		},
	}
}

func getStaticRole(ctx context.Context, s logical.Storage, name string) (*staticRole, error) {
	return getEntry[staticRole](ctx, s, staticRoleStoragePrefix+name)
}

func putStaticRole(ctx context.Context, s logical.Storage, name string, role *staticRole) error {
	return putEntry(ctx, s, staticRoleStoragePrefix+name, role)
}

// staticRoleLock serialises everything that changes one static role's key:
// scheduled and manual rotation, writes and deletes.
func (b *backend) staticRoleLock(name string) *locksutil.LockEntry {
	return locksutil.LockForKey(b.roleLocks, "static-roles/"+name)
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
		"next_rotation":        formatTime(role.nextScheduledRotation()),
	}
	role.PopulateSetAutomatedRotationData(data)
	delete(data, "rotation_policy")
	if role.RotationPeriod != 0 {
		data["rotation_period"] = int64(role.RotationPeriod.Seconds())
	}
	if role.RotationSchedule != "" {
		data["rotation_window"] = int64(role.RotationWindow.Seconds())
	}
	if role.PreviousKeyID != "" {
		data["previous_key_id"] = role.PreviousKeyID
		data["previous_key_expires"] = formatTime(role.PreviousExpires)
	}
	if role.LastError != "" {
		data["last_rotation_error"] = role.LastError
		data["last_rotation_error_time"] = formatTime(role.LastErrorTime)
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathStaticRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	lock := b.staticRoleLock(name)
	lock.Lock()
	defer lock.Unlock()

	role, err := getStaticRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	create := role == nil
	if create {
		role = &staticRole{DeleteKeyOnRemove: true}
	}
	if err := role.update(d, create, b.now()); err != nil {
		return errorResponse(err)
	}
	client, err := b.climatiqClient(ctx, req.Storage, role.Config)
	if ce, ok := err.(*connectionError); ok {
		if ce.missing {
			return logical.ErrorResponse("config: %s; create it first with a write to config/%s", ce, role.Config), nil
		}
		return logical.ErrorResponse("config: %s; static roles hold Climatiq keys", ce), nil
	}
	if err != nil {
		return nil, err
	}

	if !create {
		role.NextRotation = role.nextRotationAfter(role.LastRotated)
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
	} else if err := b.replaceStaticKey(ctx, req.Storage, name, role, client); err != nil {
		return nil, err
	}
	b.scheduleStaticRole(name, role)
	return nil, nil
}

// update applies the request's fields and validates them.
func (role *staticRole) update(d *framework.FieldData, create bool, now time.Time) error {
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

	params := role.AutomatedRotationParams
	if err := params.ParseAutomatedRotationFields(d); err != nil {
		return invalidField(rotationFieldOf(err), "%s", err)
	}
	role.AutomatedRotationParams = params
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
		if err := rotation.DefaultScheduler.ValidateRotationWindow(int(role.RotationWindow.Seconds())); err != nil {
			return invalidField("rotation_window", "%s", err)
		}
	}
	if interval := role.rotationInterval(now); interval > 0 && role.OverlapPeriod >= interval {
		return invalidField("overlap_period", "(%s) must be shorter than the time between rotations (%s)", role.OverlapPeriod, interval)
	}
	return nil
}

// rotationFieldOf names the field a rotation-parameter error is about.
func rotationFieldOf(err error) string {
	msg := err.Error()
	for _, field := range []string{"rotation_window", "rotation_schedule", "rotation_period"} {
		if strings.Contains(msg, field) {
			return field
		}
	}
	return "rotation_schedule"
}

// adoptKey makes an existing upstream key the role's key. The key's value
// comes from the project's key list.
func (b *backend) adoptKey(ctx context.Context, s logical.Storage, name string, role *staticRole, client *climatiq.Client, keyID string) (*logical.Response, error) {
	keys, err := client.ListKeys(ctx, role.ProjectID)
	if err != nil {
		return logical.ErrorResponse("project_id: could not list the keys of project %q: %s", role.ProjectID, err), nil
	}
	for _, k := range keys {
		if k.ID != keyID {
			continue
		}
		now := b.now()
		role.KeyID, role.KeyName, role.KeyValue = k.ID, k.Name, k.Key
		role.LastRotated = now
		role.NextRotation = role.nextRotationAfter(now)
		if err := putInventory(ctx, s, role.ownedKey(name, k.ID, k.Name, now)); err != nil {
			return nil, err
		}
		return nil, putStaticRole(ctx, s, name, role)
	}
	return logical.ErrorResponse("key_id: project %q has no key %q; check the id, or omit key_id to create a new key", role.ProjectID, keyID), nil
}

func (b *backend) pathStaticRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	lock := b.staticRoleLock(name)
	lock.Lock()
	defer lock.Unlock()

	role, err := getStaticRole(ctx, req.Storage, name)
	if err != nil || role == nil {
		return nil, err
	}
	keys := role.ownedKeys(name)
	if role.DeleteKeyOnRemove {
		client, err := b.climatiqClient(ctx, req.Storage, role.Config)
		if _, ok := err.(*connectionError); ok {
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
	}
	for _, k := range keys {
		if err := deleteInventory(ctx, req.Storage, k); err != nil {
			return nil, err
		}
	}
	if err := req.Storage.Delete(ctx, staticRoleStoragePrefix+name); err != nil {
		return nil, err
	}
	b.unscheduleStaticRole(name)
	b.Logger().Info("deleted static role", "role", name, "key_id", role.KeyID, "key_deleted", role.DeleteKeyOnRemove)
	return nil, nil
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
		return logical.ErrorResponse("name: no static role %q; create it with a write to static-roles/%s", name, name), nil
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
	// data has rotation_period and an integer ttl.
	if next := role.nextScheduledRotation(); !next.IsZero() {
		ttl := int64(next.Sub(now).Seconds())
		if ttl < 0 {
			ttl = 0
		}
		data["next_rotation"] = formatTime(next)
		data["ttl"] = ttl
		data["rotation_period"] = int64(role.rotationInterval(now).Seconds())
	}
	if role.PreviousKeyID != "" {
		data["previous_key_id"] = role.PreviousKeyID
	}
	return &logical.Response{Data: data}, nil
}

// ownedKeys are the role's keys, previous first.
func (role *staticRole) ownedKeys(name string) []*ownedKey {
	var keys []*ownedKey
	if role.PreviousKeyID != "" {
		keys = append(keys, role.ownedKey(name, role.PreviousKeyID, role.PreviousKeyName, time.Time{}))
	}
	if role.KeyID != "" {
		keys = append(keys, role.ownedKey(name, role.KeyID, role.KeyName, role.LastRotated))
	}
	return keys
}

// ownedKey describes one of the role's keys as the mount records it.
func (role *staticRole) ownedKey(name, keyID, keyName string, created time.Time) *ownedKey {
	return &ownedKey{
		KeyID:     keyID,
		KeyName:   keyName,
		ProjectID: role.ProjectID,
		Config:    role.Config,
		Role:      name,
		Kind:      keyKindStatic,
		Created:   created.UTC(),
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
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
