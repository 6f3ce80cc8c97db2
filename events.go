package carbon

import (
	"context"
	"errors"

	hclog "github.com/hashicorp/go-hclog"
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

	// eventQueueSize bounds the events waiting to be sent; beyond it they
	// are dropped (Vault events are best-effort).
	eventQueueSize = 4096
)

// routineEvents happen once per lease; they are logged at debug level so a
// busy mount does not flood the server log. Everything else logs at info.
var routineEvents = map[string]bool{eventKeyIssue: true, eventKeyRenew: true, eventKeyRevoke: true}

type pendingEvent struct {
	name     string
	metadata []string
}

// logAndEmit records one lifecycle step: a structured log line, and a Vault
// event sent off the request path (each send is a round trip to Vault).
// metadata is alternating names and values, all ids and names.
func (b *backend) logAndEmit(event string, metadata ...string) {
	// Pairs without a value are left out of the log line and the event.
	kept := metadata[:0:0]
	for i := 0; i+1 < len(metadata); i += 2 {
		if metadata[i+1] != "" {
			kept = append(kept, metadata[i], metadata[i+1])
		}
	}
	metadata = kept
	args := make([]any, len(metadata))
	for i, m := range metadata {
		args[i] = m
	}
	level := hclog.Info
	if routineEvents[event] {
		level = hclog.Debug
	}
	b.Logger().Log(level, event, args...)
	select {
	case b.events <- pendingEvent{name: event, metadata: metadata}:
	default:
		b.Logger().Debug("event queue full; dropping event", "event", event)
	}
}

// sendEvents delivers queued events until the backend is cleaned up. A
// Vault without events (older releases, or events disabled) answers every
// send with an error: that is said once, and the engine carries on with its
// log lines alone.
func (b *backend) sendEvents(done <-chan struct{}) {
	reported := false
	for {
		select {
		case <-done:
			return
		case ev := <-b.events:
			err := logical.SendEvent(context.Background(), b, "carbon/"+ev.name, ev.metadata...)
			if err == nil || reported {
				continue
			}
			reported = true
			if errors.Is(err, framework.ErrNoEvents) {
				b.Logger().Info("Vault events are not available to this mount; lifecycle steps are logged only", "error", err)
			} else {
				b.Logger().Info("sending Vault events failed; lifecycle steps are logged only, further send errors are not reported", "event", ev.name, "error", err)
			}
		}
	}
}
