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
// stranded one, and tidy can find keys nobody tracks. Its layout is chosen
// so that no operation's cost grows with the number of live keys:
//
//	key/<escaped id>                   the full record: read by id in one Get
//	keylist/<bucket>/<listing name>    no value: the listing name carries
//	                                   what a listing or tidy needs (id,
//	                                   kind, role, config, project, times,
//	                                   key name), so pages need no reads
//
// Listing entries are spread over 256 buckets by a hash of the id, so a
// page of LIST keys/ costs a few small storage Lists, and a walk (tidy,
// counting) costs 256 of them. Live keys per role and per connection are
// counted in memory (livecounts.go).
//
// Mounts written by v0.1 keep their keys at inventory/<kind>/<role>/<name>;
// initialize moves them to this layout, and readers fall back to it until
// that is done.
const (
	keyRecordPrefix       = "key/"
	keyListPrefix         = "keylist/"
	legacyInventoryPrefix = "inventory/"
	listBuckets           = 256
)

func keyRecordPath(id string) string { return keyRecordPrefix + url.PathEscape(id) }

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
	return keyListPrefix + bucketOf(k.KeyID) + "/" + k.listingName()
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

// getKey reads a key's record by id; nil when the mount does not hold it.
func getKey(ctx context.Context, s logical.Storage, id string) (*ownedKey, error) {
	if id == "" {
		return nil, nil
	}
	return getEntry[ownedKey](ctx, s, keyRecordPath(id))
}

// recordKey adds a key to the inventory: its record, its listing entry
// and the live counts, where it takes the place of its issuance's slot
// (nil when the role has no max_keys).
func (b *backend) recordKey(ctx context.Context, s logical.Storage, k *ownedKey, slot *keySlot) error {
	k.Kind = k.kind()
	b.liveCounts.RLock()
	defer b.liveCounts.RUnlock()
	if err := putEntry(ctx, s, keyRecordPath(k.KeyID), k); err != nil {
		return err
	}
	if err := s.Put(ctx, &logical.StorageEntry{Key: k.listingPath()}); err != nil {
		return err
	}
	b.liveCounts.add(k, 1, slot)
	return nil
}

// forgetKey removes a key from the inventory. Only its id, role, kind and
// name need be known: the record says the rest. A key the inventory no
// longer holds is forgotten already.
func (b *backend) forgetKey(ctx context.Context, s logical.Storage, k *ownedKey) error {
	b.liveCounts.RLock()
	defer b.liveCounts.RUnlock()
	record, err := getKey(ctx, s, k.KeyID)
	if err != nil {
		return err
	}
	if record != nil {
		if err := s.Delete(ctx, record.listingPath()); err != nil {
			return err
		}
		if err := s.Delete(ctx, keyRecordPath(record.KeyID)); err != nil {
			return err
		}
		b.liveCounts.add(record, -1, nil)
	}
	if !b.legacyInventoryMoved.Load() {
		return s.Delete(ctx, legacyInventoryPath(k.kind(), k.Role, k.KeyName))
	}
	return nil
}

// updateKeyExpiry moves a key's recorded expiry: its record and listing
// entry (the listing carries the expiry, for tidy).
func updateKeyExpiry(ctx context.Context, s logical.Storage, k *ownedKey, expires time.Time) error {
	oldListing := k.listingPath()
	k.Expires = expires
	if err := putEntry(ctx, s, keyRecordPath(k.KeyID), k); err != nil {
		return err
	}
	if err := s.Put(ctx, &logical.StorageEntry{Key: k.listingPath()}); err != nil {
		return err
	}
	return s.Delete(ctx, oldListing)
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
		for _, name := range names {
			k, ok := parseListingName(name)
			if !ok || seen[k.KeyID] {
				continue
			}
			if err := fn(k); err != nil {
				return err
			}
		}
	}
	return nil
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
	afterName := url.PathEscape(after) + " \U0010FFFF"
	for i := first; i < listBuckets; i++ {
		names, err := s.List(ctx, fmt.Sprintf("%s%02x/", keyListPrefix, i))
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, name := range names {
			if i == first && after != "" && name <= afterName {
				continue
			}
			if k, ok := parseListingName(name); ok {
				page = append(page, k)
				if limit > 0 && len(page) == limit {
					return page, nil
				}
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
