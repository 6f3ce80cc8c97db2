package carbon

// Typed storage entries: every stored value is a Go type encoded as JSON.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// getEntry reads and decodes a typed storage entry; nil when absent.
func getEntry[T any](ctx context.Context, s logical.Storage, key string) (*T, error) {
	entry, err := s.Get(ctx, key)
	if err != nil || entry == nil {
		return nil, err
	}
	out := new(T)
	if err := entry.DecodeJSON(out); err != nil {
		return nil, fmt.Errorf("decoding %q: %w", key, err)
	}
	return out, nil
}

// putEntry encodes and stores a typed storage entry.
func putEntry(ctx context.Context, s logical.Storage, key string, v any) error {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return err
	}
	return s.Put(ctx, entry)
}

// decodeInto converts generic data (a WAL entry's, a lease's internal data)
// into its typed form.
func decodeInto(data any, out any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}
