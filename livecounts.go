package carbon

import (
	"context"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// liveCounts counts the live keys per role and per connection, in memory:
// built by one walk of the inventory the first time an instance needs them,
// then moved by every key recorded or forgotten.
//
// A role with max_keys takes a slot for each issuance before it creates
// anything upstream; the count it checks is its recorded keys plus the
// slots in flight, so max_keys is exact without holding a lock across the
// upstream call, and a capped role issues as concurrently as any other.
type liveCounts struct {
	// building is held for writing while the counts are built from
	// storage, and for reading by every write that records or forgets a
	// key: no key recorded or forgotten meanwhile is counted twice or
	// missed, and recorders do not wait for each other.
	building sync.RWMutex
	mu       sync.Mutex // guards the maps and built
	built    bool
	byRole   map[string]int
	byConfig map[string]int
	slots    map[string]int // issuances in flight per capped role
}

// keySlot is one place of a capped role taken by an issuance in flight.
// Recording the key turns it into a counted key; release gives it back if
// the issuance fails. Either happens once.
type keySlot struct {
	role string // roleCountKey
	done bool   // guarded by liveCounts.mu
}

func roleCountKey(kind, role string) string { return kind + "/" + role }

// add moves the counts by delta for k and, in the same step, ends the slot
// k was issued under, so the role's count never shows the key twice or not
// at all. Called with building held for reading.
func (c *liveCounts) add(k *ownedKey, delta int, slot *keySlot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endSlot(slot)
	if !c.built {
		return
	}
	c.byRole[roleCountKey(k.kind(), k.Role)] += delta
	c.byConfig[k.Config] += delta
}

// endSlot is called with mu held.
func (c *liveCounts) endSlot(slot *keySlot) {
	if slot == nil || slot.done {
		return
	}
	slot.done = true
	if c.slots[slot.role]--; c.slots[slot.role] <= 0 {
		delete(c.slots, slot.role)
	}
}

// release gives back a slot whose issuance created no key.
func (b *backend) releaseKeySlot(slot *keySlot) {
	b.liveCounts.mu.Lock()
	defer b.liveCounts.mu.Unlock()
	b.liveCounts.endSlot(slot)
}

// takeKeySlot takes one of a capped role's max_keys places. When none is
// free it returns nil and how many keys the role holds or is being issued.
func (b *backend) takeKeySlot(ctx context.Context, s logical.Storage, kind, role string, maxKeys int) (*keySlot, int, error) {
	c := &b.liveCounts
	key := roleCountKey(kind, role)
	for {
		if err := b.ensureLiveCounts(ctx, s); err != nil {
			return nil, 0, err
		}
		c.mu.Lock()
		if !c.built {
			// Another node changed the inventory meanwhile: count again.
			c.mu.Unlock()
			continue
		}
		taken := c.byRole[key] + c.slots[key]
		if taken >= maxKeys {
			c.mu.Unlock()
			return nil, taken, nil
		}
		if c.slots == nil {
			c.slots = map[string]int{}
		}
		c.slots[key]++
		c.mu.Unlock()
		return &keySlot{role: key}, taken, nil
	}
}

// ensureLiveCounts counts the inventory once per plugin instance.
func (b *backend) ensureLiveCounts(ctx context.Context, s logical.Storage) error {
	c := &b.liveCounts
	c.mu.Lock()
	built := c.built
	c.mu.Unlock()
	if built {
		return nil
	}
	c.building.Lock()
	defer c.building.Unlock()
	if c.built {
		return nil
	}
	byRole, byConfig := map[string]int{}, map[string]int{}
	err := walkKeys(ctx, s, func(k *ownedKey) error {
		byRole[roleCountKey(k.kind(), k.Role)]++
		byConfig[k.Config]++
		return nil
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.byRole, c.byConfig, c.built = byRole, byConfig, true
	c.mu.Unlock()
	return nil
}

// liveKeysOfConfig is how many live keys were issued through a connection.
func (b *backend) liveKeysOfConfig(ctx context.Context, s logical.Storage, config string) (int, error) {
	if err := b.ensureLiveCounts(ctx, s); err != nil {
		return 0, err
	}
	b.liveCounts.mu.Lock()
	defer b.liveCounts.mu.Unlock()
	return b.liveCounts.byConfig[config], nil
}

// resetLiveCounts drops the counts, to be rebuilt: another node changed
// the inventory. Slots in flight stay: their keys are not recorded yet.
func (b *backend) resetLiveCounts() {
	b.liveCounts.building.Lock()
	defer b.liveCounts.building.Unlock()
	b.liveCounts.mu.Lock()
	b.liveCounts.built = false
	b.liveCounts.mu.Unlock()
}

// snapshot copies the counts: per role (as "<kind>/<role>") and per
// connection. Call after ensureLiveCounts.
func (c *liveCounts) snapshot() (byRole, byConfig map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byRole, byConfig = make(map[string]int, len(c.byRole)), make(map[string]int, len(c.byConfig))
	for k, n := range c.byRole {
		if n > 0 {
			byRole[k] = n
		}
	}
	for k, n := range c.byConfig {
		if n > 0 {
			byConfig[k] = n
		}
	}
	return byRole, byConfig
}
