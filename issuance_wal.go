package carbon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/keyname"
)

// Issuance is covered by WAL entries that each cover a block of key names,
// not one key: a block is written once, before the first create under it,
// and retired once, after the last issuance under it has finished, so an
// issuance's only write is its inventory entry.
//
// A block covers the names that carry this mount's marker, a nonce that
// starts with the block's prefix, and a time within the block's window,
// created through one connection in one project (or as per-lease projects).
// Its rollback lists that project's keys (or the connection's projects),
// keeps every covered key the inventory or a release record holds, and
// deletes the rest: what issuances cut short by a stop, a failed write or a
// lost answer left upstream.
const walKindIssuanceBlock = "climatiq_issuance_block"

const (
	// blockSpan is how long a block hands out names. It and the longest
	// issuance must fit within walRollbackMinAge, so that the rollback
	// manager never meets a block still in use.
	blockSpan = 2 * time.Minute
	// A name's nonce is the block's prefix and a counter, both base 36.
	blockPrefixLength  = keyname.NonceLength / 2
	blockCounterLength = keyname.NonceLength - blockPrefixLength
	blockCapacity      = 36 * 36 * 36
)

// issuanceBlock is a block's WAL entry.
type issuanceBlock struct {
	// ID tells the block's holder, within this plugin process, apart
	// from a block nobody holds (blocksHeld).
	ID              string `json:"id"`
	Config          string `json:"config"`
	ProjectID       string `json:"project_id,omitempty"`
	ProjectPerLease bool   `json:"project_per_lease,omitempty"`
	Marker          string `json:"marker"`
	NoncePrefix     string `json:"nonce_prefix"`
	// From and Until bound the times (engine clock) the block's names
	// carry.
	From  time.Time `json:"from"`
	Until time.Time `json:"until"`
}

// covers reports whether an upstream name was handed out under the block.
func (blk *issuanceBlock) covers(name string) bool {
	marker, created, ok := parseKeyName(name)
	if !ok || marker != blk.Marker {
		return false
	}
	nonce, _ := keyname.Nonce(name)
	return strings.HasPrefix(nonce, blk.NoncePrefix) &&
		!created.Before(blk.From.Truncate(time.Second)) && !created.After(blk.Until)
}

// blockScope is what one block covers: one connection's project, or its
// per-lease projects.
type blockScope struct {
	config, project string
	perLease        bool
}

// heldBlock is a block this instance hands names from, or whose
// issuances are still in flight.
type heldBlock struct {
	entry    issuanceBlock
	walID    string
	storage  logical.Storage
	opened   time.Time // real time: the span is Vault's time, as the WAL's age is
	next     int       // the next counter
	inFlight int
	closed   bool // no more names; retired when inFlight reaches 0
	// unresolved is set when an issuance under the block failed and could
	// not undo what it created: the entry then stays for the rollback
	// manager instead of being retired.
	unresolved bool
	// retireNow deletes the entry in the closing call instead of off the
	// request path (closeBlocks: Clean, config delete).
	retireNow bool
	// owner is the backend instance that holds the block.
	owner *backend
}

// issuanceBlocks are the blocks of one backend instance.
type issuanceBlocks struct {
	lock sync.Mutex // guards the maps and every heldBlock's counters
	open map[blockScope]*heldBlock
	// next is a block opened ahead, off the request path, once the open
	// one is half spent, so that no issuance under load waits for a WAL
	// write; opening marks a scope whose next block is being written.
	next    map[blockScope]*heldBlock
	opening map[blockScope]bool
}

// blocksHeld lists, for the whole plugin process, the blocks some backend
// instance still holds. A reload of the mount starts a new instance in the
// same process while the old one finishes its requests: a block the old
// instance holds is not the new one's to roll back.
var blocksHeld sync.Map // issuanceBlock.ID -> *heldBlock

// issuanceName is a name handed out for one issuance.
type issuanceName struct {
	name string
	// created is the time the name carries: taken once the block's entry
	// is stored, so a tidy that did not see the entry started before it.
	created time.Time
	block   *heldBlock
}

// takeIssuanceName hands out the next name of the scope's block, opening
// a block (one WAL write) when there is none or it is spent. Call
// finishIssuance once the issuance has ended, whatever its outcome.
func (b *backend) takeIssuanceName(ctx context.Context, s logical.Storage, scope blockScope, marker, rendered string) (*issuanceName, error) {
	b.blocks.lock.Lock()
	defer b.blocks.lock.Unlock()
	for attempt := 1; ; attempt++ {
		blk, err := b.usableBlockLocked(ctx, s, scope, marker, b.now())
		if err != nil {
			return nil, err
		}
		now := b.now()
		if !blk.usable(now, marker) {
			// The block's window passed while its entry was written.
			if attempt < 3 {
				continue
			}
			return nil, fmt.Errorf("writing WAL entry before creating keys: took longer than %s", blockSpan)
		}
		counter := strconv.FormatInt(int64(blk.next), 36)
		nonce := blk.entry.NoncePrefix + strings.Repeat("0", blockCounterLength-len(counter)) + counter
		name, err := keyname.Format(marker, now, nonce, rendered)
		if err != nil {
			return nil, err
		}
		blk.next++
		blk.inFlight++
		return &issuanceName{name: name, created: now, block: blk}, nil
	}
}

// usableBlockLocked returns the scope's open block, or the one opened
// ahead, or a new one; past half its span it has the next one opened.
func (b *backend) usableBlockLocked(ctx context.Context, s logical.Storage, scope blockScope, marker string, now time.Time) (*heldBlock, error) {
	blk := b.blocks.open[scope]
	if blk != nil && !blk.usable(now, marker) {
		b.closeBlockLocked(ctx, scope, blk)
		blk = nil
	}
	if next := b.blocks.next[scope]; blk == nil && next != nil {
		delete(b.blocks.next, scope)
		if next.usable(now, marker) {
			blk = next
		} else {
			b.closeBlockLocked(ctx, scope, next)
		}
	}
	if blk == nil {
		var err error
		if blk, err = b.openBlock(ctx, s, scope, marker, now); err != nil {
			return nil, err
		}
	}
	if b.blocks.open == nil {
		b.blocks.open, b.blocks.next, b.blocks.opening = map[blockScope]*heldBlock{}, map[blockScope]*heldBlock{}, map[blockScope]bool{}
	}
	b.blocks.open[scope] = blk
	if time.Since(blk.opened) > blockSpan/2 && b.blocks.next[scope] == nil && !b.blocks.opening[scope] {
		b.blocks.opening[scope] = true
		go b.openNextBlock(s, scope, marker)
	}
	return blk, nil
}

func (blk *heldBlock) usable(now time.Time, marker string) bool {
	return !blk.closed && blk.next < blockCapacity && blk.entry.Marker == marker &&
		time.Since(blk.opened) < blockSpan && !now.Before(blk.entry.From) && !now.After(blk.entry.Until)
}

func (b *backend) openBlock(ctx context.Context, s logical.Storage, scope blockScope, marker string, now time.Time) (*heldBlock, error) {
	id, err := randomLowerAlnum(16)
	if err != nil {
		return nil, err
	}
	prefix, err := randomLowerAlnum(blockPrefixLength)
	if err != nil {
		return nil, err
	}
	from := now.UTC().Truncate(time.Second)
	entry := issuanceBlock{
		ID: id, Config: scope.config, ProjectID: scope.project, ProjectPerLease: scope.perLease,
		Marker: marker, NoncePrefix: prefix, From: from, Until: from.Add(blockSpan),
	}
	// Registered before the write: a WAL entry that exists is always
	// either held here or free to roll back.
	blk := &heldBlock{entry: entry, storage: s, opened: time.Now(), owner: b}
	blocksHeld.Store(id, blk)
	walID, err := framework.PutWAL(ctx, s, walKindIssuanceBlock, &entry)
	if err != nil {
		blocksHeld.Delete(id)
		return nil, fmt.Errorf("writing WAL entry before creating keys: %w", err)
	}
	blk.walID = walID
	return blk, nil
}

// openNextBlock writes the scope's next block ahead of need.
func (b *backend) openNextBlock(s logical.Storage, scope blockScope, marker string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	next, err := b.openBlock(ctx, s, scope, marker, b.now())
	b.blocks.lock.Lock()
	defer b.blocks.lock.Unlock()
	delete(b.blocks.opening, scope)
	if err != nil {
		b.Logger().Debug("opening the next issuance block ahead failed; the next issuance opens one", "error", err)
		return
	}
	select {
	case <-b.stopBackground:
		// Clean ran meanwhile: nothing will issue under it.
		next.retireNow = true
		b.closeBlockLocked(ctx, scope, next)
	default:
		b.blocks.next[scope] = next
	}
}

// finishIssuance ends one issuance under its block; the block's last one
// after the block closed retires it. resolved is false when the issuance
// may have left something upstream that the mount does not hold.
func (b *backend) finishIssuance(ctx context.Context, n *issuanceName, resolved bool) {
	b.blocks.lock.Lock()
	defer b.blocks.lock.Unlock()
	blk := n.block
	blk.inFlight--
	if !resolved {
		// The entry must now be rolled back: hand out no more names under
		// it, so that it is free to roll back once its issuances end.
		blk.unresolved = true
		if !blk.closed {
			b.closeBlockLocked(ctx, blk.scope(), blk)
			return
		}
	}
	if blk.closed && blk.inFlight == 0 {
		b.retireBlock(ctx, blk)
	}
}

func (blk *heldBlock) scope() blockScope {
	return blockScope{config: blk.entry.Config, project: blk.entry.ProjectID, perLease: blk.entry.ProjectPerLease}
}

// closeBlockLocked stops handing out the block's names; with no issuance
// in flight it is retired at once.
func (b *backend) closeBlockLocked(ctx context.Context, scope blockScope, blk *heldBlock) {
	blk.closed = true
	if b.blocks.open[scope] == blk {
		delete(b.blocks.open, scope)
	}
	if b.blocks.next[scope] == blk {
		delete(b.blocks.next, scope)
	}
	if blk.inFlight == 0 {
		b.retireBlock(ctx, blk)
	}
}

// retireBlock deletes a finished block's WAL entry: every key created
// under it is recorded or was rolled back by its own request. An entry
// with an issuance that could not undo its create is left, no longer
// held, for the rollback manager.
func (b *backend) retireBlock(ctx context.Context, blk *heldBlock) {
	blocksHeld.Delete(blk.entry.ID)
	if blk.unresolved {
		b.Logger().Warn("leaving a WAL entry for the rollback manager: an issuance under it could not undo its key creation", "config", blk.entry.Config)
		return
	}
	if blk.retireNow {
		if err := framework.DeleteWAL(context.WithoutCancel(ctx), blk.storage, blk.walID); err != nil {
			b.Logger().Warn("deleting a spent WAL entry failed; the rollback manager will", "error", err)
		}
		return
	}
	b.retireWAL(ctx, blk.storage, blk.walID)
}

// closeBlocks closes every block this instance holds (of one connection,
// or all with config ""); idle ones are retired at once, busy ones when
// their last issuance ends.
func (b *backend) closeBlocks(ctx context.Context, config string) {
	b.blocks.lock.Lock()
	defer b.blocks.lock.Unlock()
	for _, blocks := range []map[blockScope]*heldBlock{b.blocks.open, b.blocks.next} {
		for scope, blk := range blocks {
			if config == "" || scope.config == config {
				blk.retireNow = true
				b.closeBlockLocked(ctx, scope, blk)
			}
		}
	}
}

// closeSpentBlocks closes the blocks whose span has passed, so that a
// quiet mount holds no block for long: the rollback manager must never
// meet a block still held. Run from the periodic function, which Vault
// calls about once a minute, before it rolls WAL entries back.
func (b *backend) closeSpentBlocks(ctx context.Context) {
	b.blocks.lock.Lock()
	defer b.blocks.lock.Unlock()
	for _, blocks := range []map[blockScope]*heldBlock{b.blocks.open, b.blocks.next} {
		for scope, blk := range blocks {
			if time.Since(blk.opened) >= blockSpan {
				blk.retireNow = true
				b.closeBlockLocked(ctx, scope, blk)
			}
		}
	}
}

// blockRollbackDue reports whether a block's entry may be rolled back: no
// issuance under it can still be in flight. That holds once it is older
// than walRollbackMinAge (blockSpan plus the longest issuance), or when it
// was written before this instance started and no instance of this
// process holds it (its writer has stopped, or was another process, which
// can no longer record anything in this mount).
func (b *backend) blockRollbackDue(blk *issuanceBlock, created, cutoff time.Time) bool {
	if created.Before(cutoff) {
		return true
	}
	_, held := blocksHeld.Load(blk.ID)
	return !held && created.Before(b.startedAt)
}

// giveUp ends a block its holder still has open, for a rollback that came
// early (Vault's immediate rollback, when a mount is disabled or moved):
// with no issuance in flight under it, every one of them has resolved what
// it created, so the entry is spent; the holder hands out no more of its
// names. With issuances in flight the entry stays, and the last of them
// retires it.
func (blk *heldBlock) giveUp() error {
	b := blk.owner
	b.blocks.lock.Lock()
	defer b.blocks.lock.Unlock()
	if blk.inFlight > 0 {
		return errBlockHeld
	}
	blk.closed = true
	for _, blocks := range []map[blockScope]*heldBlock{b.blocks.open, b.blocks.next} {
		if blocks[blk.scope()] == blk {
			delete(blocks, blk.scope())
		}
	}
	// An unresolved block is closed and let go by its last issuance, so
	// one still held here resolved everything.
	blocksHeld.Delete(blk.entry.ID)
	return nil
}

// errBlockHeld keeps a block's entry for a later rollback.
var errBlockHeld = errors.New("the block is still in use by an issuance in flight")

// rollbackIssuanceBlock deletes what the block's issuances created upstream
// and the mount does not hold.
func (b *backend) rollbackIssuanceBlock(ctx context.Context, s logical.Storage, blk *issuanceBlock) error {
	if holder, held := blocksHeld.Load(blk.ID); held {
		return holder.(*heldBlock).giveUp()
	}
	if another, err := b.anotherClustersMarker(ctx, s, blk.Marker); err != nil || another {
		return err
	}
	client, err := b.climatiqClient(ctx, s, blk.Config)
	if err != nil {
		var ce *connectionError
		if errors.As(err, &ce) {
			b.Logger().Warn("cannot roll back key creations: connection no longer exists", "config", blk.Config)
			return nil
		}
		return err
	}
	if blk.ProjectPerLease {
		return b.rollbackBlockProjects(ctx, s, client, blk)
	}
	keys, err := client.ListKeys(ctx, blk.ProjectID)
	if errors.Is(err, climatiq.ErrNotFound) {
		return nil // the project is gone, and its keys with it
	}
	if err != nil {
		return err
	}
	for _, k := range keys {
		if !blk.covers(k.Name) {
			continue
		}
		key := &ownedKey{Kind: keyKindDynamic, Config: blk.Config, ProjectID: blk.ProjectID, KeyID: k.ID, KeyName: k.Name}
		if held, err := b.keyHeld(ctx, s, k.ID); err != nil || held {
			if err != nil {
				return err
			}
			continue
		}
		if err := deleteUpstream(ctx, client, key); err != nil {
			return fmt.Errorf("rolling back key %q: %w", k.Name, err)
		}
		b.logAndEmit(eventKeyRollback, "config", blk.Config, "key_id", k.ID, "key_name", k.Name, "project_id", blk.ProjectID)
	}
	return nil
}

// rollbackBlockProjects deletes the block's per-lease projects that hold
// no key the mount holds.
func (b *backend) rollbackBlockProjects(ctx context.Context, s logical.Storage, client *climatiq.Client, blk *issuanceBlock) error {
	projects, err := client.ListProjects(ctx)
	if err != nil {
		return err
	}
	for _, p := range projects {
		if !blk.covers(p.Name) {
			continue
		}
		held, err := b.projectHeld(ctx, s, client, p.ID)
		if err != nil || held {
			if err != nil {
				return err
			}
			continue
		}
		if err := ignoreNotFound(client.DeleteProject(ctx, p.ID)); err != nil {
			return fmt.Errorf("rolling back project %q: %w", p.Name, err)
		}
		b.logAndEmit(eventKeyRollback, "config", blk.Config, "key_name", p.Name, "project_id", p.ID)
	}
	return nil
}

// projectHeld reports whether a per-lease project holds a key the mount
// holds. The project's own record is its key's.
func (b *backend) projectHeld(ctx context.Context, s logical.Storage, client *climatiq.Client, projectID string) (bool, error) {
	keys, err := client.ListKeys(ctx, projectID)
	if errors.Is(err, climatiq.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		if held, err := b.keyHeld(ctx, s, k.ID); err != nil || held {
			return held, err
		}
	}
	return false, nil
}

// keyHeld reports whether the mount holds a key by its id: in the
// inventory, or released to the operator (never the mount's to delete).
func (b *backend) keyHeld(ctx context.Context, s logical.Storage, id string) (bool, error) {
	if k, err := b.findKey(ctx, s, id); err != nil || k != nil {
		return k != nil, err
	}
	released, err := s.Get(ctx, releasedPath(id))
	return released != nil, err
}
