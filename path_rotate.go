package carbon

import (
	"context"

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
				"delete_previous_keys": {
					Type: framework.TypeBool,
					Description: "Delete the replaced key and every key still in its overlap at once, instead of at the end of their overlap_period " +
						"(for a leaked key). The only way to cut a promised overlap short.",
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    refuseUnknownFields(b.lockingStaticRole(b.pathRotateRoleWrite)),
					Responses:                   rotateRoleResponse,
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true, // static roles are the primary's
					Summary:                     "Rotate a static role's key now.",
				},
			},
			HelpSynopsis: "Rotate a static role's key now.",
			HelpDescription: "Creates a new key, makes it the role's key, and deletes the replaced key at once or after " +
				"the role's overlap_period; keys already in their overlap keep their own end. With delete_previous_keys=true " +
				"every replaced key is deleted at once. Returns the new key_id and last_rotated. The schedule continues from this rotation. " +
				"A failed rotation on request is reported to the caller and not retried by itself.",
		},
	}
}

// maxPreviousKeys bounds the keys in their overlap that rotations on
// request can pile up; scheduled rotations cannot exceed it, since an
// overlap is shorter than the shortest gap between them.
const maxPreviousKeys = 8

func (b *backend) pathRotateRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData, name string) (*logical.Response, error) {
	role, err := getStaticRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return b.noStaticRole(ctx, req, name, "rotate-role")
	}
	client, err := b.climatiqClient(ctx, req.Storage, role.Config)
	if err != nil {
		return nil, err
	}
	deletePrevious := d.Get("delete_previous_keys").(bool)
	if n := len(role.PreviousKeys); n >= maxPreviousKeys && !deletePrevious {
		return logical.ErrorResponse("name: static role %q already has %d replaced keys waiting for the end of their overlap (the next at %s); rotate again after that, or with delete_previous_keys=true to delete them now",
			name, n, formatTime(role.PreviousKeys[0].deleteDue())), nil
	}
	if err := b.rotateStaticRole(ctx, req.Storage, rotationInput{name: name, role: role, client: client, trigger: triggerManual, deletePrevious: deletePrevious}); err != nil {
		b.recordRotationFailure(ctx, req.Storage, name, role, err, triggerManual)
		b.scheduleStaticRole(name, role)
		return nil, err
	}
	b.scheduleStaticRole(name, role)
	return &logical.Response{Data: map[string]any{
		"key_id":       role.KeyID,
		"last_rotated": formatTime(role.LastRotated),
	}}, nil
}
