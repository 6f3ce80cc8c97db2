package carbon

import (
	"context"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// pathRotateRoot answers the habit of other engines' rotate-root with why
// it is not offered here and what to do instead, rather than a bare 404.
func pathRotateRoot(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "rotate-root/?" + framework.MatchAllRegex("name"),
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "Name of the connection."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRotateRootWrite, Unpublished: true},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathRotateRootWrite, Unpublished: true},
			},
			HelpSynopsis:    "Not offered: the upstreams do not let Vault rotate their root credentials.",
			HelpDescription: strings.TrimSpace(pathRotateRootHelp),
		},
	}
}

func (b *backend) pathRotateRootWrite(_ context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if name == "" || validateName("name", name) != nil {
		name = "<name>"
	}
	return logical.ErrorResponse("rotate-root: not offered: Climatiq management keys can only be created and rotated in the Climatiq dashboard, "+
		"and Altruistiq client secrets in the Altruistiq web interface; rotate the credential there, then write the new value: "+
		"vault write %sconfig/%s management_key=... (or client_secret=...)", req.MountPoint, name), nil
}

const pathRotateRootHelp = `
Other secrets engines rotate their root credential at rotate-root. This one
cannot: Climatiq's management API cannot create, rotate or delete management
keys, and Altruistiq client secrets are managed only in its web interface.
Rotate the credential there and write the new value to config/<name>; every
request answers 400 saying so.
`
