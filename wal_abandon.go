package carbon

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// abandonedRollback is a WAL entry dropped with its connection: what it
// covers, and the command that finds (and, with -delete, deletes) what it
// may have created, from outside Vault.
type abandonedRollback struct {
	staleWALEntry
	Sweep string `json:"sweep"`
}

// resolvePendingRollbacks rolls back, at once, the WAL entries whose
// rollback needs the connection about to be deleted: an upstream that is
// back resolves them, so the delete need not wait for the rollback
// manager. Entries it cannot resolve refuse the delete with the cause,
// unless abandon says to drop them: then they are returned, to be named in
// the answer. A non-nil response ends the delete.
func (b *backend) resolvePendingRollbacks(ctx context.Context, req *logical.Request, name string, abandon bool) ([]abandonedRollback, *logical.Response, error) {
	b.closeBlocks(ctx, name)
	b.deleteQueuedSpentWAL(ctx)
	var pending []pendingWAL
	if err := forEachPendingWAL(ctx, req.Storage, name, func(p pendingWAL, _ *ownedKey) { pending = append(pending, p) }); err != nil {
		return nil, nil, err
	}
	var left []pendingWAL
	var lastErr error
	for _, p := range pending {
		err := b.walRollback(ctx, req, p.entry.Kind, p.entry.Data)
		if errors.Is(err, errBlockHeld) {
			// Never abandoned: an issuance under it is still running.
			return nil, logical.ErrorResponse("name: an issuance through connection %q is still in flight; try again in a moment", name), nil
		}
		if err != nil {
			left, lastErr = append(left, p), err
			continue
		}
		if err := framework.DeleteWAL(ctx, req.Storage, p.id); err != nil {
			return nil, nil, err
		}
	}
	if len(left) == 0 {
		return nil, nil, nil
	}
	if !abandon {
		return nil, logical.ErrorResponse("name: connection %q has %d key creations awaiting rollback that could not be resolved now (%s); "+
			"Vault's rollback manager retries them about once a minute. If the upstream is gone for good, delete with abandon_rollbacks=true: "+
			"the entries are dropped, and the answer names the key names they cover with the carbon-sweep command that deletes them from outside Vault",
			name, len(left), lastErr), nil
	}
	cfg, err := getConnectionConfig(ctx, req.Storage, name)
	if err != nil {
		return nil, nil, err
	}
	marker, err := b.mountMarker(ctx, req.Storage)
	if err != nil {
		return nil, nil, err
	}
	keep, err := releasedNamesOf(ctx, req.Storage, name)
	if err != nil {
		return nil, nil, err
	}
	abandoned := make([]abandonedRollback, 0, len(left))
	for _, p := range left {
		a := abandonedRollback{staleWALEntry: describeWAL(p.id, p.entry), Sweep: sweepCommand(cfg.ManagementURL, marker, p.entry, keep)}
		// Logged before the entry goes: a stop between the delete and the
		// answer must not lose what it covered.
		b.Logger().Warn("abandoning a rollback with its connection; what it covers may be left upstream",
			"config", name, "wal_id", a.ID, "covers", a.Covers, "sweep", a.Sweep)
		if err := framework.DeleteWAL(ctx, req.Storage, p.id); err != nil {
			return nil, nil, err
		}
		abandoned = append(abandoned, a)
	}
	return abandoned, nil, nil
}

// releasedNamesOf are the names of the connection's released keys: the
// mount let them go on purpose, so a sweep must spare them.
func releasedNamesOf(ctx context.Context, s logical.Storage, config string) ([]string, error) {
	ids, err := releasedKeyIDs(ctx, s)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, id := range ids {
		k, err := getEntry[releasedKey](ctx, s, releasedPath(id))
		if err != nil {
			return nil, err
		}
		if k != nil && k.Config == config && k.KeyName != "" {
			names = append(names, k.KeyName)
		}
	}
	return names, nil
}

// sweepCommand is the carbon-sweep dry run that lists what one WAL entry
// covers; -delete deletes it. carbon-sweep reads the management key from
// CLIMATIQ_MANAGEMENT_KEY: it never appears in an answer.
func sweepCommand(managementURL, marker string, entry *framework.WALEntry, keep []string) string {
	args := []string{"carbon-sweep", "-management-url", shellQuote(managementURL), "-marker", marker}
	var blk issuanceBlock
	var key ownedKey
	switch {
	case entry.Kind == walKindIssuanceBlock && decodeInto(entry.Data, &blk) == nil:
		args = append(args, "-nonce-prefix", shellQuote(blk.NoncePrefix),
			"-created-from", blk.From.UTC().Truncate(time.Second).Format(time.RFC3339),
			"-created-until", blk.Until.UTC().Truncate(time.Second).Format(time.RFC3339))
	case decodeInto(entry.Data, &key) == nil:
		args = append(args, "-name", shellQuote(key.KeyName))
	}
	for _, name := range keep {
		args = append(args, "-keep", shellQuote(name))
	}
	return strings.Join(args, " ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9._:/=+@%-]+$`)

// shellQuote quotes a word for a POSIX shell unless it needs none.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// abandonedResponse answers a connection delete: nothing, or the
// rollbacks it abandoned and how to finish them.
func abandonedResponse(req *logical.Request, name string, abandoned []abandonedRollback) *logical.Response {
	if len(abandoned) == 0 {
		return nil
	}
	list := make([]map[string]any, 0, len(abandoned))
	for _, a := range abandoned {
		list = append(list, map[string]any{"id": a.ID, "kind": a.Kind, "created": formatTime(a.Created), "covers": a.Covers, "sweep": a.Sweep})
	}
	resp := &logical.Response{Data: map[string]any{"abandoned_rollbacks": list}}
	resp.AddWarning(fmt.Sprintf("connection %q was deleted with %d rollbacks it could not finish; the keys they cover may still exist upstream: "+
		"run each abandoned_rollbacks[].sweep, with CLIMATIQ_MANAGEMENT_KEY set to the connection's management key, to list them, and again with -delete to delete them (%sconfig/%s is gone, so neither Vault nor tidy can)",
		name, len(abandoned), req.MountPoint, name))
	return resp
}
