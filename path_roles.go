package carbon

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	roleStoragePrefix = "roles/"
	// maxTemplateLength bounds key_name_template; names are cut to 64
	// characters anyway.
	maxTemplateLength = 512
)

// roleEntry is the stored form of roles/:name, a dynamic role.
type roleEntry struct {
	Config string        `json:"config"`
	TTL    time.Duration `json:"ttl"`
	MaxTTL time.Duration `json:"max_ttl"`

	// Climatiq
	ProjectID       string `json:"project_id,omitempty"`
	ProjectPerLease bool   `json:"project_per_lease,omitempty"`
	KeyNameTemplate string `json:"key_name_template,omitempty"`
	MaxKeys         int    `json:"max_keys,omitempty"`

	// Altruistiq
	Scopes []string `json:"scopes,omitempty"`
}

// roleProviderFields names the role fields that only one provider uses.
var roleProviderFields = map[string]string{
	"project_id":        providerClimatiq,
	"project_per_lease": providerClimatiq,
	"key_name_template": providerClimatiq,
	"max_keys":          providerClimatiq,
	"scopes":            providerAltruistiq,
}

// maxMaxKeys bounds max_keys: each live key is an inventory entry, and
// docs/storage.md gives every cost bound at 100,000 of them.
const maxMaxKeys = 100_000

func pathRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		collectionPath(roleStoragePrefix, "roles", "dynamic roles", func(ctx context.Context, s logical.Storage, name string) (map[string]any, error) {
			role, err := getRole(ctx, s, name)
			if err != nil || role == nil {
				return nil, err
			}
			return map[string]any{"config": role.Config, "ttl": int64(role.TTL.Seconds()), "max_ttl": int64(role.MaxTTL.Seconds())}, nil
		}),
		{
			Pattern: "roles/" + framework.MatchAllRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationSuffix: "role",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the role. Letters, digits, '.', '_' and '-'.",
					Required:    true,
				},
				"config": {
					Type:        framework.TypeString,
					Description: "Name of the connection (config/<name>) this role issues from. Required on create.",
				},
				"ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "Default lease TTL of issued credentials. Defaults to the mount's default lease TTL.",
				},
				"max_ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "Maximum lifetime of issued credentials, renewals included. Defaults to the mount's max lease TTL.",
					DisplayAttrs: &framework.DisplayAttributes{
						Name: "Max TTL",
					},
				},
				"project_id": {
					Type:        framework.TypeString,
					Description: "Climatiq: the project in which keys are created. Set this or project_per_lease.",
					DisplayAttrs: &framework.DisplayAttributes{
						Name: "Project ID",
					},
				},
				"project_per_lease": {
					Type:        framework.TypeBool,
					Description: "Climatiq: create a fresh project for every lease and delete it, with its key, when the lease ends.",
				},
				"key_name_template": {
					Type: framework.TypeString,
					Description: "Climatiq: template for the name of issued keys (Vault's helper/template syntax; fields .RoleName and .DisplayName). " +
						"Every name starts with a fixed prefix carrying this mount's marker and the creation time, so tidy can recognise the mount's own keys. " +
						"Default: " + defaultKeyNameTemplate,
				},
				"max_keys": {
					Type:        framework.TypeInt,
					Description: "Climatiq: how many live keys the role may have at once. 0 means no cap.",
				},
				"scopes": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Altruistiq: OAuth scopes for tokens of this role. Overrides the connection's scopes.",
				},
			},
			ExistenceCheck:  b.pathRoleExists,
			Operations:      crudOperations(b.pathRoleWrite, b.pathRoleRead, b.pathRoleDelete, "a dynamic role", roleReadResponse),
			HelpSynopsis:    "Manage the dynamic roles that creds/<role> issues from.",
			HelpDescription: strings.TrimSpace(pathRolesHelp),
		},
	}
}

func getRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	return getEntry[roleEntry](ctx, s, roleStoragePrefix+name)
}

// cachedRole is getRole for the issuance path: roles are read from storage
// once and kept until written, deleted or invalidated. Callers must not
// modify the returned entry.
func (b *backend) cachedRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	c := &b.roles
	c.lock.RLock()
	role, ok := c.roles[name]
	generation := c.generation
	c.lock.RUnlock()
	if ok {
		return role, nil
	}
	role, err := getRole(ctx, s, name)
	if err != nil || role == nil {
		return role, err
	}
	c.lock.Lock()
	// A write or delete that forgot roles while this read was under way
	// may have changed what it read: serve it this once, never cache it.
	if generation == c.generation {
		if c.roles == nil {
			c.roles = map[string]*roleEntry{}
		}
		c.roles[name] = role
	}
	c.lock.Unlock()
	return role, nil
}

func (b *backend) forgetRole(name string) {
	c := &b.roles
	c.lock.Lock()
	delete(c.roles, name)
	c.generation++
	c.lock.Unlock()
}

// roleCache holds dynamic roles read for issuance, until a write, delete or
// Invalidate forgets them.
type roleCache struct {
	lock       sync.RWMutex // guards what follows
	roles      map[string]*roleEntry
	generation uint64 // counts forgetRole calls, so a read that raced a write is not cached
}

// rolesUsingConfig names the roles that issue from the given connection.
func rolesUsingConfig(ctx context.Context, s logical.Storage, config string) ([]string, error) {
	names, err := s.List(ctx, roleStoragePrefix)
	if err != nil {
		return nil, err
	}
	var using []string
	for _, name := range names {
		role, err := getRole(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if role != nil && role.Config == config {
			using = append(using, name)
		}
	}
	return using, nil
}

func (b *backend) pathRoleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("name", name) != nil {
		// The handler answers with the 400; an invalid name must not
		// reach storage (a 5000-character key is a storage error).
		return false, nil
	}
	role, err := getRole(ctx, req.Storage, name)
	return role != nil, err
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	role, err := getRole(ctx, req.Storage, name)
	if err != nil || role == nil {
		return nil, err
	}
	data := map[string]any{
		"config":  role.Config,
		"ttl":     int64(role.TTL.Seconds()),
		"max_ttl": int64(role.MaxTTL.Seconds()),
	}
	cfg, err := getConnectionConfig(ctx, req.Storage, role.Config)
	if err != nil {
		return nil, err
	}
	if cfg == nil || cfg.Provider == providerClimatiq {
		data["project_id"] = role.ProjectID
		data["project_per_lease"] = role.ProjectPerLease
		data["key_name_template"] = role.keyNameTemplate()
		data["max_keys"] = role.MaxKeys
	}
	if cfg == nil || cfg.Provider == providerAltruistiq {
		data["scopes"] = nonNil(role.Scopes)
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	role, err := getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		role = new(roleEntry)
	}

	if v, ok := d.GetOk("config"); ok {
		role.Config = strings.TrimSpace(v.(string))
	}
	if role.Config == "" {
		return logical.ErrorResponse("config: is required; name the connection (config/<name>) this role issues from"), nil
	}
	if err := validateName("config", role.Config); err != nil {
		return errorResponse(err)
	}
	cfg, err := getConnectionConfig(ctx, req.Storage, role.Config)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return logical.ErrorResponse("config: connection %q does not exist; create it first with a write to config/%s", role.Config, role.Config), nil
	}

	if err := role.update(d, cfg.Provider, b.System()); err != nil {
		return errorResponse(err)
	}
	if cfg.Provider == providerClimatiq && role.ProjectID != "" && d.Raw["project_id"] != nil {
		client, err := b.climatiqClient(ctx, req.Storage, role.Config)
		if err != nil {
			return nil, err
		}
		if resp := checkProjectVisible(ctx, client, role.Config, role.ProjectID, "check the id or use project_per_lease=true"); resp != nil {
			return resp, nil
		}
	}

	if err := putEntry(ctx, req.Storage, roleStoragePrefix+name, role); err != nil {
		return nil, err
	}
	b.forgetRole(name)
	return roleWarnings(role, b.System()), nil
}

// update applies the request's fields to the role and validates the result
// for the connection's provider.
func (role *roleEntry) update(d *framework.FieldData, provider string, sys logical.SystemView) error {
	if err := rejectForeignFields(d, provider, roleProviderFields); err != nil {
		return err
	}
	if v, ok := d.GetOk("ttl"); ok {
		role.TTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("max_ttl"); ok {
		role.MaxTTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("project_id"); ok {
		role.ProjectID = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("project_per_lease"); ok {
		role.ProjectPerLease = v.(bool)
	}
	if v, ok := d.GetOk("key_name_template"); ok {
		role.KeyNameTemplate = v.(string)
	}
	if v, ok := d.GetOk("max_keys"); ok {
		role.MaxKeys = v.(int)
	}
	if v, ok := d.GetOk("scopes"); ok {
		scopes, err := cleanScopes(v.([]string))
		if err != nil {
			return err
		}
		role.Scopes = scopes
	}

	switch {
	case role.TTL < 0:
		return invalidField("ttl", "must not be negative")
	case role.MaxTTL < 0:
		return invalidField("max_ttl", "must not be negative")
	case role.MaxTTL > 0 && role.TTL > role.MaxTTL:
		return invalidField("ttl", "(%s) must not exceed max_ttl (%s); lower ttl or raise max_ttl", role.TTL, role.MaxTTL)
	case role.MaxTTL == 0 && role.TTL > sys.MaxLeaseTTL():
		return invalidField("ttl", "(%s) exceeds the mount's max lease TTL (%s); lower ttl or tune the mount", role.TTL, sys.MaxLeaseTTL())
	}

	if provider != providerClimatiq {
		return nil
	}
	switch {
	case role.ProjectID != "" && role.ProjectPerLease:
		return invalidField("project_id", "cannot be combined with project_per_lease=true; set one of them")
	case role.ProjectID == "" && !role.ProjectPerLease:
		return invalidField("project_id", "is required for a climatiq role unless project_per_lease=true")
	case role.MaxKeys < 0:
		return invalidField("max_keys", "must not be negative; use 0 for no cap")
	case role.MaxKeys > maxMaxKeys:
		return invalidField("max_keys", "must be at most %d, the inventory size the engine's costs are measured at (docs/storage.md); use 0 for no cap", maxMaxKeys)
	}
	if len(role.KeyNameTemplate) > maxTemplateLength {
		return invalidField("key_name_template", "is %d characters long; use at most %d", len(role.KeyNameTemplate), maxTemplateLength)
	}
	// Rendered with the longest names issuance can bring, so a template
	// that passes here cannot exceed the bounds on a later issuance.
	if _, err := renderKeyName(role.keyNameTemplate(), longestKeyNameData); err != nil {
		return invalidField("key_name_template", "%s; fix the template (see `vault path-help` for the fields)", err)
	}
	return nil
}

func roleWarnings(role *roleEntry, sys logical.SystemView) *logical.Response {
	if role.MaxTTL > sys.MaxLeaseTTL() {
		resp := &logical.Response{}
		resp.AddWarning(fmt.Sprintf("max_ttl (%s) exceeds the mount's max lease TTL (%s); leases will be capped at the mount's", role.MaxTTL, sys.MaxLeaseTTL()))
		return resp
	}
	return nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("name", name); err != nil {
		return errorResponse(err)
	}
	defer b.forgetRole(name)
	return nil, req.Storage.Delete(ctx, roleStoragePrefix+name)
}

func (role *roleEntry) keyNameTemplate() string {
	if role.KeyNameTemplate == "" {
		return defaultKeyNameTemplate
	}
	return role.KeyNameTemplate
}

const pathRolesHelp = `
A dynamic role describes the credentials that creds/<role> issues.

Climatiq roles create an API key per lease, in project_id or (with
project_per_lease=true) in a project of its own, and delete it upstream when
the lease ends. max_keys caps the role's live keys. Key names follow
key_name_template behind a fixed prefix that marks them as this mount's.

Altruistiq roles hand out the connection's OAuth access token for the role's
scopes. The lease never outlives the token; Altruistiq has no revocation
endpoint, so revoking the lease does not end the token early.

ttl and max_ttl default to the mount's lease settings.
`
