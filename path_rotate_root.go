package carbon

import (
	"github.com/hashicorp/vault/sdk/logical"
)

// rotateRootNotOffered answers the habit of other engines' rotate-root
// (routed in path_helpers.go) with why it is not offered here and what to do
// instead, rather than a bare 404: Climatiq's management API cannot create,
// rotate or delete management keys, and Altruistiq client secrets are
// managed only in its web interface.
func rotateRootNotOffered(req *logical.Request, name string) *logical.Response {
	if validateName("name", name) != nil {
		name = "<name>"
	}
	return logical.ErrorResponse("rotate-root: not offered: Climatiq management keys can only be created and rotated in the Climatiq dashboard, "+
		"and Altruistiq client secrets in the Altruistiq web interface; rotate the credential there, then write the new value: "+
		"vault write %sconfig/%s management_key=... (or client_secret=...)", req.MountPoint, name)
}
