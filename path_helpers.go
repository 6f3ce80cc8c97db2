package carbon

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// collectionPath is the LIST path of a named collection (config/, roles/,
// static-roles/). Its key_info (vault list -detailed) shows what info says
// of each item. Writes, reads and deletes on it lack the item name; they get
// a 400 naming the missing field instead of Vault's bare "unsupported
// operation".
func collectionPath(prefix, suffix, what string, info func(ctx context.Context, s logical.Storage, name string) (map[string]any, error)) *framework.Path {
	hint := prefix + "<name>"
	return &framework.Path{
		Pattern: prefix + "?$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefixCarbon,
			OperationSuffix: suffix,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ListOperation: &framework.PathOperation{
				Callback: func(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
					names, err := req.Storage.List(ctx, prefix)
					if err != nil {
						return nil, err
					}
					// Collections of connections and roles are small; one
					// read each is the price of key_info.
					keyInfo := make(map[string]any, len(names))
					for _, name := range names {
						if keyInfo[name], err = info(ctx, req.Storage, name); err != nil {
							return nil, err
						}
					}
					return logical.ListResponseWithInfo(names, keyInfo), nil
				},
				Summary: "List the " + what + ".",
			},
			logical.UpdateOperation: requireNameOperation("name", hint),
			logical.ReadOperation:   requireNameOperation("name", hint),
			logical.DeleteOperation: requireNameOperation("name", hint),
		},
		HelpSynopsis:    "List the " + what + ".",
		HelpDescription: "Lists the names of the " + what + " configured under " + hint + "; vault list -detailed shows a summary of each.",
	}
}

// crudOperations are the operations of a named item: writes (create and
// update share one handler, and refuse unknown fields) and deletes are
// forwarded from performance standbys, since they write storage.
func crudOperations(write, read, del framework.OperationFunc, what string, readResponse map[int][]framework.Response) map[logical.Operation]framework.OperationHandler {
	return map[logical.Operation]framework.OperationHandler{
		logical.CreateOperation: &framework.PathOperation{Callback: refuseUnknownFields(write), ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true, Summary: "Create " + what + "."},
		logical.UpdateOperation: &framework.PathOperation{Callback: refuseUnknownFields(write), ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true, Summary: "Update " + what + "."},
		logical.ReadOperation:   &framework.PathOperation{Callback: read, Summary: "Read " + what + ".", Responses: readResponse},
		logical.DeleteOperation: &framework.PathOperation{Callback: del, ForwardPerformanceStandby: true, ForwardPerformanceSecondary: true, Summary: "Delete " + what + "."},
	}
}

// withDeleteResponse documents what a delete may answer.
func withDeleteResponse(ops map[logical.Operation]framework.OperationHandler, responses map[int][]framework.Response) map[logical.Operation]framework.OperationHandler {
	ops[logical.DeleteOperation].(*framework.PathOperation).Responses = responses
	return ops
}

// requireNameOperation answers an operation on a path that lacks the item
// name with a 400 naming the field. It is left out of the OpenAPI document.
func requireNameOperation(field, pathHint string) *framework.PathOperation {
	return &framework.PathOperation{
		Callback: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
			return logical.ErrorResponse("%s: is required in the path; use %s", field, pathHint), nil
		},
		Unpublished: true,
	}
}

// pathsNeedingAName are the paths whose requests need an item name: without
// it (creds, creds/) they get a 400 naming the field. They are answered
// by answerUnrouted, ahead of the framework's routing (HandleRequest in
// storage_version.go), so the OpenAPI document does not
// list name-less paths that have no operations. rotate-root, which other
// engines offer, is answered here too: it is never offered (see its text).
// A LIST of one of them is a 405 pointing at the roles' list.
var pathsNeedingAName = map[string]struct{ field, hint, roles string }{
	"creds":        {"role", "creds/<role>", "roles"},
	"static-creds": {"name", "static-creds/<name>", "static-roles"},
	"rotate-role":  {"name", "rotate-role/<name>", "static-roles"},
}

// answerUnrouted answers name-less requests and rotate-root, which have no
// framework path; nil for every other request.
func answerUnrouted(req *logical.Request) (*logical.Response, error) {
	if req.Operation == logical.HelpOperation {
		return nil, nil
	}
	path := strings.TrimSuffix(req.Path, "/")
	if p, ok := pathsNeedingAName[path]; ok {
		if req.Operation == logical.ListOperation {
			return nil, logical.CodedError(statusMethodNotAllowed, fmt.Sprintf("%s/ is not listable: %s names one role; list the roles with vault list %s%s", path, p.hint, req.MountPoint, p.roles))
		}
		return logical.ErrorResponse("%s: is required in the path; use %s", p.field, p.hint), nil
	}
	if path == "rotate-root" || strings.HasPrefix(path, "rotate-root/") {
		return rotateRootNotOffered(req, strings.TrimPrefix(strings.TrimPrefix(path, "rotate-root"), "/")), nil
	}
	return nil, nil
}

// rotateRootNotOffered answers the habit of other engines' rotate-root
// (routed by answerUnrouted) with why it is not offered here and what to do
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
