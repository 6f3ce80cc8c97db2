package upstream

import (
	"strings"
	"unicode/utf8"
)

// MaxMessageLength bounds, in characters, an upstream message carried in
// an error.
const MaxMessageLength = 300

// Redactor cleans what an upstream says before it goes into an error that
// Vault shows and logs: an upstream may echo a credential it was sent.
type Redactor []string

// NewRedactor redacts the given secrets; empty ones are skipped, as they
// would match everywhere.
func NewRedactor(secrets ...string) Redactor {
	var r Redactor
	for _, s := range secrets {
		if s != "" {
			r = append(r, s)
		}
	}
	return r
}

// With returns a Redactor for more secrets, redacted before r's.
func (r Redactor) With(secrets ...string) Redactor {
	return append(NewRedactor(secrets...), r...)
}

// Clean keeps a message to one printable line of at most MaxMessageLength
// characters, without secrets. It cuts between characters, never inside
// one.
func (r Redactor) Clean(s string) string {
	for _, secret := range r {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	// strings.Map also turns invalid UTF-8 into U+FFFD.
	s = strings.TrimSpace(strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, s))
	if utf8.RuneCountInString(s) <= MaxMessageLength {
		return s
	}
	return string([]rune(s)[:MaxMessageLength-3]) + "..."
}
