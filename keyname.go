package carbon

import (
	"context"
	"crypto/rand"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/keyname"
)

// Every upstream key (and per-lease project) this mount creates is named
//
//	vault-<marker>-<unix seconds>-<nonce>-<rendered key_name_template>
//
// The prefix cannot be removed by a template: tidy uses the marker to find
// this mount's keys and the time to spare keys still being issued (the
// upstream key list carries no creation time), and the nonce makes every
// name unique so that a WAL rollback can find a key by name when the
// create's answer was lost.
const (
	markerStorageKey = "marker"
	markerLength     = keyname.MarkerLength
	nonceLength      = keyname.NonceLength

	// maxRenderedNameLength bounds the template's part of a key name.
	maxRenderedNameLength = 64

	defaultKeyNameTemplate = `{{ .RoleName | truncate 24 }}-{{ .DisplayName | truncate 24 }}`
)

var (
	unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)
)

// keyNameData is what key_name_template can refer to.
type keyNameData struct {
	RoleName    string
	DisplayName string
}

func renderKeyName(tmpl string, data keyNameData) (string, error) {
	t, err := parseKeyNameTemplate(tmpl)
	if err != nil {
		return "", err
	}
	name, err := executeKeyNameTemplate(t, data)
	if err != nil {
		return "", err
	}
	// Display names come from auth methods (e.g. "oidc-alice@example.com"):
	// keep key names to characters every upstream accepts.
	name = strings.Trim(unsafeNameChars.ReplaceAllString(name, "-"), "-")
	if len(name) > maxRenderedNameLength {
		name = name[:maxRenderedNameLength]
	}
	return name, nil
}

// newKeyName builds the full, unique upstream name for a new key.
func newKeyName(marker string, now time.Time, rendered string) (string, error) {
	nonce, err := randomLowerAlnum(nonceLength)
	if err != nil {
		return "", err
	}
	return keyname.Format(marker, now, nonce, rendered)
}

// parseKeyName reports the mount marker and creation time carried by a key
// name, and ok=false for names this engine did not create.
func parseKeyName(name string) (marker string, created time.Time, ok bool) {
	return keyname.Parse(name)
}

// mountMarker returns this mount's marker, generating and storing it on
// first use. It is random rather than derived from the mount path so that
// two mounts on one Climatiq account never claim each other's keys.
func (b *backend) mountMarker(ctx context.Context, s logical.Storage) (string, error) {
	b.markerLock.Lock()
	defer b.markerLock.Unlock()
	if b.marker != "" {
		return b.marker, nil
	}
	entry, err := s.Get(ctx, markerStorageKey)
	if err != nil {
		return "", err
	}
	foreign := false
	if entry != nil {
		if foreign, err = b.markerIsForeign(ctx, s); err != nil {
			return "", err
		}
	}
	if entry != nil && !foreign {
		b.marker = string(entry.Value)
		return b.marker, nil
	}
	marker, err := randomLowerAlnum(markerLength)
	if err != nil {
		return "", err
	}
	// The marker first: were the cluster recorded and the marker's write
	// then failed, a copy of the primary's marker would read as this
	// cluster's. A marker whose cluster write failed reads as foreign and is
	// replaced: no key was named with it.
	if err := s.Put(ctx, &logical.StorageEntry{Key: markerStorageKey, Value: []byte(marker)}); err != nil {
		return "", err
	}
	if err := b.recordMarkerCluster(ctx, s); err != nil {
		return "", err
	}
	if foreign {
		b.Logger().Info("this performance secondary names its keys with its own marker; the primary's, copied here before the marker was local storage, is left to the primary",
			"marker", marker, "primary_marker", string(entry.Value))
	}
	b.marker = marker
	return marker, nil
}

func randomLowerAlnum(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	for i, c := range buf {
		// 256 is not a multiple of 36; the slight bias is harmless for
		// uniqueness tokens.
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf), nil
}

// sanitizeName keeps a role name usable inside a key name.
func sanitizeName(name string) string {
	return strings.Trim(unsafeNameChars.ReplaceAllString(name, "-"), "-")
}
