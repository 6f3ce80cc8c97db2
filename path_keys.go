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
			Fields: map[string]*framework.FieldSchema{
				"after": {
					Type:        framework.TypeString,
					Description: "List the keys that follow this key id (the last id of the previous page).",
					Query:       true,
				},
				"limit": {
					Type:        framework.TypeInt,
					Description: "At most this many keys; 0 (default) lists them all.",
					Query:       true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback: b.pathKeysList,
					Summary:  "List the upstream keys this mount owns.",
				},
			},
			HelpSynopsis: "List the upstream keys this mount owns.",
			HelpDescription: "Lists the ids of every upstream key this mount owns, dynamic and static, with their details in key_info. Never the key values. " +
				"Large inventories are listed a page at a time: limit=1000, then after=<last id of the page>. The order is stable but not alphabetical.",
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

// pathKeysList reads no entry: a page is built from the listing names
// alone (inventory.go).
func (b *backend) pathKeysList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	limit := d.Get("limit").(int)
	if limit < 0 {
		return logical.ErrorResponse("limit: must not be negative; use 0 to list every key"), nil
	}
	var (
		keys []*ownedKey
		err  error
	)
	if after := d.Get("after").(string); after == "" && limit == 0 && !b.legacyInventoryMoved.Load() {
		err = walkKeys(ctx, req.Storage, func(k *ownedKey) error { keys = append(keys, k); return nil })
	} else {
		keys, err = listKeysPage(ctx, req.Storage, after, limit)
	}
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(keys))
	info := make(map[string]any, len(keys))
	for _, k := range keys {
		ids = append(ids, k.KeyID)
		info[k.KeyID] = k.responseData()
	}
	return logical.ListResponseWithInfo(ids, info), nil
}

func (b *backend) pathKeyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	found, err := b.findKey(ctx, req.Storage, d.Get("key_id").(string))
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, nil
	}
	return &logical.Response{Data: found.responseData()}, nil
}
