package carbon

import (
	"context"
	"errors"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Lifecycle events. Each is logged and sent as a Vault event (carbon/<name>)
// with ids only: never a key value, a token or a secret.
const (
	eventKeyIssue     = "key-issue"
	eventKeyRenew     = "key-renew"
	eventKeyRevoke    = "key-revoke"
	eventKeyRollback  = "key-rollback"
	eventStaticRotate = "static-rotate"
	eventStaticDelete = "static-key-delete"
	eventTidy         = "tidy"
)

// observe records one lifecycle step: an info log line and a Vault event.
// metadata is alternating names and values, all ids and names.
func (b *backend) observe(ctx context.Context, event string, metadata ...string) {
	args := make([]any, len(metadata))
	for i, m := range metadata {
		args[i] = m
	}
	b.Logger().Info(event, args...)
	if err := logical.SendEvent(ctx, b, "carbon/"+event, metadata...); err != nil && !errors.Is(err, framework.ErrNoEvents) {
		b.Logger().Debug("sending event failed", "event", event, "error", err)
	}
}
