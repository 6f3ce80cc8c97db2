// Package keyname formats and parses the fixed prefix of every upstream
// name (API key or per-lease project) the plugin creates:
//
//	vault-<marker>-<unix seconds>-<nonce>[-<rest>]
//
// The marker is a mount's random id and the time is the creation time, which
// the upstream's lists do not carry. Tidy (inside Vault) and carbon-sweep
// (outside it, after a Vault is lost) both read names with Parse, so the
// package knows nothing of Vault.
package keyname

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

const (
	// MarkerLength and NonceLength are the lengths of the two random parts,
	// drawn from lower-case letters and digits.
	MarkerLength = 8
	NonceLength  = 6
)

var (
	// The time has no leading zero: Format never writes one, and a name
	// that parsed as a time near 1970 would look old enough for any cut-off.
	prefixRegex = regexp.MustCompile(`^vault-([a-z0-9]{8})-([1-9][0-9]{8,11})-([a-z0-9]{6})-`)
	partRegex   = regexp.MustCompile(`^[a-z0-9]+$`)
)

// Format builds a name. rest may be empty; marker and nonce must be valid
// (ValidMarker, and NonceLength lower-case letters or digits).
func Format(marker string, created time.Time, nonce, rest string) (string, error) {
	if !ValidMarker(marker) {
		return "", fmt.Errorf("keyname: marker %q is not %d lower-case letters or digits", marker, MarkerLength)
	}
	if len(nonce) != NonceLength || !partRegex.MatchString(nonce) {
		return "", fmt.Errorf("keyname: nonce %q is not %d lower-case letters or digits", nonce, NonceLength)
	}
	name := fmt.Sprintf("vault-%s-%d-%s", marker, created.Unix(), nonce)
	if rest != "" {
		name += "-" + rest
	}
	return name, nil
}

// Parse reports the marker and creation time a name carries, and ok=false
// for a name the plugin did not create.
func Parse(name string) (marker string, created time.Time, ok bool) {
	// The trailing "-" lets a name without rest match the same pattern.
	m := prefixRegex.FindStringSubmatch(name + "-")
	if m == nil {
		return "", time.Time{}, false
	}
	secs, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return "", time.Time{}, false
	}
	return m[1], time.Unix(secs, 0), true
}

// Nonce returns the nonce a name carries, and ok=false for a name the
// plugin did not create.
func Nonce(name string) (nonce string, ok bool) {
	m := prefixRegex.FindStringSubmatch(name + "-")
	if m == nil {
		return "", false
	}
	return m[3], true
}

// ValidMarker reports whether m has the shape of a mount marker.
func ValidMarker(m string) bool {
	return len(m) == MarkerLength && partRegex.MatchString(m)
}
