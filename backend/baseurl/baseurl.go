// Package baseurl checks an upstream base URL the way the plugin and
// carbon-sweep both require: https, except loopback hosts (127.0.0.0/8, ::1,
// localhost) which may use http for local development and tests. It knows
// nothing of Vault.
package baseurl

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Check returns raw without a trailing slash, or an error saying what is
// wrong and how to fix it. Credentials in the URL are refused: they would
// be stored and shown as a non-secret field.
func Check(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("%s is not an absolute URL; use https://host/path", quote(raw))
	case u.User != nil:
		return "", errors.New("must not carry credentials; give them in their own field")
	case u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("must not have a query or fragment; give the base URL only")
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		return "", errors.New("http:// is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost); use https://")
	case u.Scheme != "https" && u.Scheme != "http":
		return "", fmt.Errorf("scheme %s is not supported; use https://", quote(u.Scheme))
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %s is out of range; use a port from 1 to 65535, or none for the scheme's", quote(port))
		}
	}
	// A dot segment, escaped or not, would have requests go somewhere
	// other than the path as written, or be refused as no such route.
	for _, segment := range strings.Split(u.EscapedPath(), "/") {
		if unescaped, err := url.PathUnescape(segment); err == nil && (unescaped == "." || unescaped == "..") {
			return "", fmt.Errorf("has a %s path segment; give the base URL's path without . or .. segments", quote(segment))
		}
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// IsLoopbackHost reports whether host is localhost or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// quote keeps user input in a message to one bounded line.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
