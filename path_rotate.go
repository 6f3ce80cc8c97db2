package carbon

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathRotateRole(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "rotate-role/" + framework.MatchAllRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationVerb:   "rotate",
				OperationSuffix: "static-role",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the static role to rotate.",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathRotateRoleWrite,
					ForwardPerformanceStandby: true,
					Summary:                   "Rotate a static role's key now.",
				},
			},
			HelpSynopsis: "Rotate a static role's key now.",
			HelpDescription: "Creates a new key, makes it the role's key, and deletes the previous key at once or after " +
				"the role's overlap_period. Returns the new key_id and last_rotated. The schedule continues from this rotation.",
		},
	}
}

func (b *backend) pathRotateRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
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
	if role == nil {
		return logical.ErrorResponse("name: no static role %q; create it with a write to static-roles/%s", name, name), nil
	}
	client, err := b.climatiqClient(ctx, req.Storage, role.Config)
	if err != nil {
		return nil, err
	}
	if err := b.rotateStaticRole(ctx, req.Storage, name, role, client, time.Time{}); err != nil {
		b.recordRotationFailure(ctx, req.Storage, name, role, err)
		b.scheduleStaticRole(name, role)
		return nil, err
	}
	b.scheduleStaticRole(name, role)
	return &logical.Response{Data: map[string]any{
		"key_id":       role.KeyID,
		"last_rotated": formatTime(role.LastRotated),
	}}, nil
}
