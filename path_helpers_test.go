package carbon

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// A LIST of a path that names one role is a 405 pointing at the roles'
// list, not a 400 asking for a name a list never takes.
func TestNamedPathsAreNotListable(t *testing.T) {
	e := newTestEnv(t)
	for path, roles := range map[string]string{"creds/": "vault list roles", "static-creds/": "vault list static-roles", "rotate-role/": "vault list static-roles"} {
		_, err := e.doErr(logical.ListOperation, path, nil)
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) || coded.Code() != 405 || !strings.Contains(err.Error(), "not listable") || !strings.Contains(err.Error(), roles) {
			t.Errorf("LIST %s: %v, want a 405 saying it is not listable and pointing at %q", path, err, roles)
		}
	}
}
