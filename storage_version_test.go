package carbon

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestStorageFormatVersion(t *testing.T) {
	tests := []struct {
		name    string
		stored  *storageFormat // nil: no entry (a v0.1.x mount, or a new one)
		refused bool
	}{
		{name: "new or v0.1 mount", stored: nil},
		{name: "same format, other build", stored: &storageFormat{Version: storageFormatVersion, WrittenBy: "v0.1.9"}},
		{name: "older format", stored: &storageFormat{Version: 1, WrittenBy: "v0.1.0"}},
		{name: "newer format", stored: &storageFormat{Version: storageFormatVersion + 1, WrittenBy: "v9.9.9"}, refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newTestEnv(t)
			if tt.stored != nil {
				if err := putEntry(ctx, e.storage, formatStorageKey, tt.stored); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.b.Initialize(ctx, &logical.InitializationRequest{Storage: e.storage}); err != nil {
				t.Fatalf("Initialize: %v", err)
			}
			after, err := getEntry[storageFormat](ctx, e.storage, formatStorageKey)
			if err != nil {
				t.Fatal(err)
			}
			e.b.scheduler.lock.Lock()
			schedulerStarted := e.b.scheduler.queue != nil
			e.b.scheduler.lock.Unlock()

			if !tt.refused {
				if after == nil || *after != (storageFormat{Version: storageFormatVersion, WrittenBy: Version}) {
					t.Fatalf("format entry after Initialize = %+v, want version %d by %s", after, storageFormatVersion, Version)
				}
				if !schedulerStarted {
					t.Fatal("rotation scheduler not started")
				}
				e.mustOK(logical.ListOperation, "static-roles/", nil)
				return
			}

			if *after != *tt.stored {
				t.Fatalf("a refusing binary rewrote the format entry: %+v", after)
			}
			if schedulerStarted {
				t.Fatal("rotation scheduler started on a storage format this binary cannot read")
			}
			requests := []*logical.Request{
				{Operation: logical.ListOperation, Path: "static-roles/"},
				{Operation: logical.ReadOperation, Path: "static-creds/app"},
				{Operation: logical.UpdateOperation, Path: "tidy"},
				{Operation: logical.CreateOperation, Path: "config/x", Data: map[string]any{"provider": "climatiq"}},
				{Operation: logical.RevokeOperation, Secret: &logical.Secret{InternalData: map[string]any{"secret_type": secretTypeClimatiqKey}}},
			}
			for _, req := range requests {
				req.Storage, req.MountPoint = e.storage, "carbon/"
				_, err := e.b.HandleRequest(ctx, req)
				if err == nil {
					t.Fatalf("%s %s served from a newer storage format", req.Operation, req.Path)
				}
				for _, want := range []string{fmt.Sprintf("format %d", storageFormatVersion+1), "v9.9.9", "vault secrets tune -plugin-version=v9.9.9 carbon/", "sys/plugins/reload/backend mounts=carbon/"} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("%s %s: refusal %q does not say %q", req.Operation, req.Path, err, want)
					}
				}
				if coded, ok := err.(logical.HTTPCodedError); !ok || coded.Code() != 503 {
					t.Fatalf("refusal is %T, want a 503", err)
				}
			}
			// Vault's rollback manager (WAL rollback, periodic tidy) is
			// skipped without an error every minute.
			if resp, err := e.b.HandleRequest(ctx, &logical.Request{Operation: logical.RollbackOperation, Storage: e.storage}); err != nil || resp != nil {
				t.Fatalf("rollback on a refused mount: %v %v", resp, err)
			}
			if keys, _ := e.storage.List(ctx, "wal/"); len(keys) != 0 {
				t.Fatalf("unexpected WAL entries: %v", keys)
			}
		})
	}
}
