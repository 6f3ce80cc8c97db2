package carbon

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// pathKeys serves the inventory: keys/ and keys/:key_id.
func pathKeys(b *backend) []*framework.Path {
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
					Callback:  b.pathKeyRead,
					Responses: keyReadResponse,
					Summary:   "Read what the mount records about one of its keys.",
				},
			},
			HelpSynopsis:    "Read what the mount records about one of its keys.",
			HelpDescription: "Returns key_id, key_name, project_id, config, role, kind (dynamic or static), created and expires (dynamic keys: issue time plus max_ttl). Never the key value.",
		},
	}
}

func (k *ownedKey) responseData() map[string]any {
	return map[string]any{
		"key_id":     k.KeyID,
		"key_name":   k.KeyName,
		"project_id": k.ProjectID,
		"config":     k.Config,
		"role":       k.Role,
		"kind":       k.kind(),
		"created":    formatTime(k.Created),
		"expires":    formatTime(k.Expires),
	}
}

func (b *backend) pathKeysList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	var ids []string
	info := map[string]any{}
	err := walkInventory(ctx, req.Storage, func(k *ownedKey) error {
		ids = append(ids, k.KeyID)
		info[k.KeyID] = k.responseData()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return logical.ListResponseWithInfo(ids, info), nil
}

func (b *backend) pathKeyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	found, err := findInventoryByID(ctx, req.Storage, d.Get("key_id").(string))
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, nil
	}
	return &logical.Response{Data: found.responseData()}, nil
}
