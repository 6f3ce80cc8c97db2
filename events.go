package carbon

import (
	"context"
	"errors"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Lifecycle events. Each is sent as a Vault event (carbon/<name>) with ids
// only, never a key value, a token or a secret; all but the per-lease ones
// are logged too.
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

// perLeaseEvents happen once per lease. As Vault's database engine does
// for its creds, they are sent as events and not logged: Vault's audit log
// records each request already, and go-plugin ships every plugin log line
// to Vault over stderr, where it is parsed before Vault's level drops it,
// so a line per lease costs each issuance its encoding and parsing (about
// 90 µs of CPU on the bench machine, a tenth of the plugin's share) even
// at info. Everything else logs at info.
var perLeaseEvents = map[string]bool{eventKeyIssue: true, eventKeyRenew: true, eventKeyRevoke: true}

type pendingEvent struct {
	name     string
	metadata []string
}

// logAndEmit records one lifecycle step: a Vault event sent off the request
// path (each send is a round trip to Vault) and, unless it is a per-lease
// step, a structured log line.
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
	b.metrics.observeEvent(event, metadata)
	if !perLeaseEvents[event] {
		args := make([]any, len(metadata))
		for i, m := range metadata {
			args[i] = m
		}
		b.Logger().Info(event, args...)
	}
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
				b.Logger().Info("Vault events are not available to this mount; steps other than issue, renew and revoke are logged only", "error", err)
			} else {
				b.Logger().Info("sending Vault events failed; steps other than issue, renew and revoke are logged only, further send errors are not reported", "event", ev.name, "error", err)
			}
		}
	}
}
