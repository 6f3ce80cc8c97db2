package carbon

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The inventory records every upstream key this mount owns, so that
// max_keys can be enforced, a WAL rollback can tell a tracked key from a
// stranded one, and tidy can find keys nobody tracks. Each key is one
// storage entry with no value: its name is the record.
//
//	keylist/<bucket>/<listing name>
//
// The listing name carries everything known of the key (id, kind, role,
// config, project, times, key name), so recording a key, and revoking it,
// is one write, and a page of LIST keys/ or a tidy reads no entry.
// Entries are spread over 256 buckets by a hash of the id: a page costs a
// few small storage Lists, a walk (tidy, counting) 256, and finding one id
// one List of its bucket.
//
// A renewal that moves a key's recorded expiry writes the key's entry
// again with the new expiry and leaves the old one: one write, and no
// moment in which the key is recorded twice with different meanings or
// not at all. Readers take an id's latest expiry; revocation removes every
// entry of the id. Live keys per role and per connection are counted in
// memory (livecounts.go).
//
// Format 3 also kept a copy of each record at key/<escaped id>; nothing
// reads it any more, and initialize deletes those entries in the
// background. Mounts written by v0.1 keep their keys at
// inventory/<kind>/<role>/<name>; initialize moves them, and readers fall
// back to that layout until it is done.
const (
	keyListPrefix         = "keylist/"
	legacyInventoryPrefix = "inventory/"
	listBuckets           = 256

	// format3RecordPrefix held format 3's per-key copies of the records.
	format3RecordPrefix = "key/"
)

func bucketOf(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("%02x", h.Sum32()%listBuckets)
}

// listingName encodes what a listing shows. Fields are path-escaped (no
// '/', no ' ') and joined by ' ', which sorts below every escaped
// character, so entries sort by id within a bucket.
func (k *ownedKey) listingName() string {
	perLease := "0"
	if k.ProjectPerLease {
		perLease = "1"
	}
	fields := []string{k.KeyID, k.kind(), k.Role, k.Config, k.ProjectID, perLease,
		unixOrZero(k.Created), unixOrZero(k.Expires), k.KeyName}
	for i, f := range fields {
		fields[i] = url.PathEscape(f)
	}
	return strings.Join(fields, " ")
}

func (k *ownedKey) listingPath() string {
	return bucketPath(k.KeyID) + k.listingName()
}

func bucketPath(id string) string { return keyListPrefix + bucketOf(id) + "/" }

// listingID is the escaped id a listing name starts with.
func listingID(name string) string {
	id, _, _ := strings.Cut(name, " ")
	return id
}

// newest keeps, of two entries of one id, the one with the later expiry.
func newest(a, b *ownedKey) *ownedKey {
	if a == nil || b.Expires.After(a.Expires) {
		return b
	}
	return a
}

func parseListingName(name string) (*ownedKey, bool) {
	fields := strings.Split(name, " ")
	if len(fields) != 9 {
		return nil, false
	}
	for i, f := range fields {
		v, err := url.PathUnescape(f)
		if err != nil {
			return nil, false
		}
		fields[i] = v
	}
	return &ownedKey{
		KeyID: fields[0], Kind: fields[1], Role: fields[2], Config: fields[3], ProjectID: fields[4],
		ProjectPerLease: fields[5] == "1", Created: fromUnix(fields[6]), Expires: fromUnix(fields[7]), KeyName: fields[8],
	}, true
}

func unixOrZero(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.Unix(), 10)
}

func fromUnix(s string) time.Time {
	secs, err := strconv.ParseInt(s, 10, 64)
	if err != nil || secs == 0 {
		return time.Time{}
	}
	return time.Unix(secs, 0).UTC()
}

// keyEntries lists the entries of one key id: one, or more after a
// renewal moved the recorded expiry. Their names are returned with them.
func keyEntries(ctx context.Context, s logical.Storage, id string) ([]*ownedKey, []string, error) {
	if id == "" {
		return nil, nil, nil
	}
	names, err := s.List(ctx, bucketPath(id))
	if err != nil {
		return nil, nil, err
	}
	want := url.PathEscape(id)
	var keys []*ownedKey
	var matched []string
	for _, name := range names {
		if listingID(name) != want {
			continue
		}
		if k, ok := parseListingName(name); ok {
			keys = append(keys, k)
			matched = append(matched, name)
		}
	}
	return keys, matched, nil
}

// getKey reads a key's record by id: its latest entry; nil when the mount
// does not hold it.
func getKey(ctx context.Context, s logical.Storage, id string) (*ownedKey, error) {
	keys, _, err := keyEntries(ctx, s, id)
	if err != nil {
		return nil, err
	}
	var latest *ownedKey
	for _, k := range keys {
		latest = newest(latest, k)
	}
	return latest, nil
}

// recordKey adds a key to the inventory in one write, then to the live
// counts, where it takes the place of its issuance's slot (nil when the
// role has no max_keys). A failed write counts nothing.
func (b *backend) recordKey(ctx context.Context, s logical.Storage, k *ownedKey, slot *keySlot) error {
	k.Kind = k.kind()
	b.liveCounts.building.RLock()
	defer b.liveCounts.building.RUnlock()
	if err := s.Put(ctx, &logical.StorageEntry{Key: k.listingPath()}); err != nil {
		return err
	}
	b.liveCounts.add(k, 1, slot)
	return nil
}

// forgetKey removes a key from the inventory: every entry of its id
// (normally one write). Only its id, role, kind and name need be known. A
// key the inventory no longer holds is forgotten already. The counts move
// once the last entry is gone; a stop in between leaves the key recorded
// with its latest expiry, and the caller's retry (Vault retries a failed
// revocation) finishes the job.
func (b *backend) forgetKey(ctx context.Context, s logical.Storage, k *ownedKey) error {
	b.liveCounts.building.RLock()
	defer b.liveCounts.building.RUnlock()
	found, err := b.forgetEntriesLocked(ctx, s, k.KeyID, func(*ownedKey) bool { return true })
	if err != nil {
		return err
	}
	if b.legacyInventoryMoved.Load() {
		return nil
	}
	// A v0.1 entry not yet moved: counted once by id (walkKeys), so it
	// gives its place back here when no current entry did.
	legacy, err := getLegacyKey(ctx, s, k.kind(), k.Role, k.KeyName)
	if err != nil || legacy == nil {
		return err
	}
	if err := s.Delete(ctx, legacyInventoryPath(k.kind(), k.Role, k.KeyName)); err != nil {
		return err
	}
	if found == 0 {
		b.liveCounts.add(legacy, -1, nil)
	}
	return nil
}

// forgetRoleRecords removes the static entries of id that name the given
// role, and leaves any other's; the counts move once no entry is left.
func (b *backend) forgetRoleRecords(ctx context.Context, s logical.Storage, id, role string) error {
	b.liveCounts.building.RLock()
	defer b.liveCounts.building.RUnlock()
	_, err := b.forgetEntriesLocked(ctx, s, id, func(e *ownedKey) bool {
		return e.kind() == keyKindStatic && e.Role == role
	})
	return err
}

// forgetEntriesLocked deletes the entries of id that match, and moves the
// counts once none is left. It reports how many entries id had. The
// caller holds liveCounts.building for reading.
func (b *backend) forgetEntriesLocked(ctx context.Context, s logical.Storage, id string, match func(*ownedKey) bool) (int, error) {
	entries, names, err := keyEntries(ctx, s, id)
	if err != nil {
		return 0, err
	}
	kept := 0
	for i, e := range entries {
		if !match(e) {
			kept++
			continue
		}
		if err := s.Delete(ctx, bucketPath(id)+names[i]); err != nil {
			return 0, err
		}
	}
	if kept == 0 && len(entries) > 0 {
		b.liveCounts.add(entries[0], -1, nil)
	}
	return len(entries), nil
}

// recordExpiry records a later expiry for a key the inventory holds: one
// write of the key's entry with the new expiry. The entry with the old
// expiry stays until the key is forgotten; readers take the latest.
func recordExpiry(ctx context.Context, s logical.Storage, k *ownedKey, expires time.Time) error {
	moved := *k
	moved.Kind = moved.kind()
	moved.Expires = expires
	return s.Put(ctx, &logical.StorageEntry{Key: moved.listingPath()})
}

// walkKeys calls fn for every key in the inventory, from the listing alone.
func walkKeys(ctx context.Context, s logical.Storage, fn func(*ownedKey) error) error {
	seen := map[string]bool{}
	// The legacy layout first: an entry moved meanwhile is then met again
	// in the new one, never missed.
	err := walkLegacyInventory(ctx, s, func(k *ownedKey) error {
		seen[k.KeyID] = true
		return fn(k)
	})
	if err != nil {
		return err
	}
	for i := range listBuckets {
		names, err := s.List(ctx, fmt.Sprintf("%s%02x/", keyListPrefix, i))
		if err != nil {
			return err
		}
		for _, k := range latestByID(names) {
			if seen[k.KeyID] {
				continue
			}
			if err := fn(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// latestByID parses one bucket's listing names into one key per id (the
// entry with the latest expiry), in the order of the names' ids.
func latestByID(names []string) []*ownedKey {
	sort.Strings(names)
	var keys []*ownedKey
	for _, name := range names {
		k, ok := parseListingName(name)
		if !ok {
			continue
		}
		if n := len(keys); n > 0 && keys[n-1].KeyID == k.KeyID {
			keys[n-1] = newest(keys[n-1], k)
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

// listKeysPage returns up to limit keys after the key id after, in the
// listing's order (by bucket, then id), and whether more follow. limit <= 0
// returns every key.
func listKeysPage(ctx context.Context, s logical.Storage, after string, limit int) ([]*ownedKey, error) {
	var page []*ownedKey
	first := 0
	if after != "" {
		fmt.Sscanf(bucketOf(after), "%02x", &first)
	}
	for i := first; i < listBuckets; i++ {
		names, err := s.List(ctx, fmt.Sprintf("%s%02x/", keyListPrefix, i))
		if err != nil {
			return nil, err
		}
		for _, k := range latestByID(names) {
			if i == first && after != "" && url.PathEscape(k.KeyID) <= url.PathEscape(after) {
				continue
			}
			page = append(page, k)
			if limit > 0 && len(page) == limit {
				return page, nil
			}
		}
	}
	return page, nil
}

// findKey returns the inventory entry of a key id, or nil.
func (b *backend) findKey(ctx context.Context, s logical.Storage, id string) (*ownedKey, error) {
	k, err := getKey(ctx, s, id)
	if err != nil || k != nil || b.legacyInventoryMoved.Load() {
		return k, err
	}
	err = walkLegacyInventory(ctx, s, func(legacy *ownedKey) error {
		if legacy.KeyID == id {
			k = legacy
		}
		return nil
	})
	return k, err
}

// deleteFormat3Records deletes the per-key copies of the records that
// format 3 kept at key/<id>. Nothing reads them; they only take space, so
// they go in the background after an upgrade, and a stop part-way is
// finished by the next start.
func (b *backend) deleteFormat3Records(ctx context.Context, s logical.Storage) {
	ids, err := s.List(ctx, format3RecordPrefix)
	deleted := 0
	for _, id := range ids {
		if err = s.Delete(ctx, format3RecordPrefix+id); err != nil {
			break
		}
		deleted++
	}
	if err != nil && ctx.Err() == nil {
		b.Logger().Warn("deleting the format 3 copies of inventory records failed; the next start retries", "deleted", deleted, "error", err)
	} else if deleted > 0 {
		b.Logger().Info("deleted the format 3 copies of inventory records", "entries", deleted)
	}
}
