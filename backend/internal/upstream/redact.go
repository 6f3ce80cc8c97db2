package upstream

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	// MaxMessageLength bounds, in characters, an upstream message carried
	// in an error.
	MaxMessageLength = 300
	// MaxBriefLength bounds, in characters, what Brief keeps of a message.
	MaxBriefLength = 120

	redacted = "[redacted]"
	// Withheld replaces a whole message that Brief found echoing a
	// credential.
	Withheld = "(message withheld: it echoed a credential)"

	// minDerivedLength keeps a short encoding of a short secret (a few
	// characters of base64, say) from being redacted out of ordinary
	// words. The literal secret is always redacted.
	minDerivedLength = 6
)

// Redactor cleans what an upstream says before it goes into an error that
// Vault shows and logs. An upstream may echo a credential in the form it
// was sent (a Basic or Bearer header, a form body) or in another one (a
// JSON or Go-quoted rendering of the request), so every secret is redacted
// in each of those forms:
//
//   - the literal, query-escaped (url.QueryEscape: form bodies and RFC 6749
//     §2.3.1 Basic credentials), path-escaped (url.PathEscape), JSON-escaped
//     (with and without HTML escaping) and Go-quoted (%q);
//   - base64, standard and URL alphabets, padded and raw, of the secret and
//     of its query-escaped form, also query- and path-escaped;
//   - the stretch of base64 that the secret determines inside the base64 of
//     any longer text, whatever comes before it: base64 of "id:secret" in a
//     Basic header, of a request body or of a whole header block.
//
// A Redactor is safe for concurrent use.
type Redactor struct {
	terms []string // longest first: a form that holds another goes first
}

// NewRedactor redacts the given secrets in every form; empty ones are
// skipped, as they would match everywhere.
func NewRedactor(secrets ...string) Redactor {
	return Redactor{}.With(secrets...)
}

// With returns a Redactor for more secrets, in every form.
func (r Redactor) With(secrets ...string) Redactor {
	var terms []string
	for _, s := range secrets {
		terms = append(terms, forms(s)...)
	}
	return r.add(terms)
}

// WithBasicAuth returns a Redactor that also knows the HTTP Basic
// credentials user:password, as sent in an Authorization header: base64 of
// the pair as it is and of the pair form-encoded (RFC 6749 §2.3.1, which
// golang.org/x/oauth2 follows), so that an echoed header is redacted whole.
// The password is redacted in every form too.
func (r Redactor) WithBasicAuth(user, password string) Redactor {
	if password == "" {
		return r
	}
	var terms []string
	for _, pair := range []string{user + ":" + password, url.QueryEscape(user) + ":" + url.QueryEscape(password)} {
		for _, enc := range base64Encodings {
			b := enc.EncodeToString([]byte(pair))
			terms = append(terms, b, url.QueryEscape(b), url.PathEscape(b))
		}
	}
	return r.With(password).add(terms)
}

func (r Redactor) add(terms []string) Redactor {
	all := slices.Concat(r.terms, terms)
	all = slices.DeleteFunc(all, func(s string) bool { return s == "" })
	// Equal forms end up next to each other, for Compact.
	slices.SortFunc(all, func(a, b string) int { return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b)) })
	return Redactor{terms: slices.Compact(all)}
}

// Len is the number of forms r redacts.
func (r Redactor) Len() int { return len(r.terms) }

// Clean keeps a message to one printable line of at most MaxMessageLength
// characters, without secrets in any of their forms. It cuts between
// characters, never inside one.
func (r Redactor) Clean(s string) string {
	s, _ = r.redact(s)
	return oneLine(s, MaxMessageLength)
}

// Brief is Clean for answers that should say little, such as those of an
// OAuth token endpoint, which receives nothing but credentials: a message
// that echoed a credential in any form is withheld whole (what is left of
// an echo may hold the credential in a form nobody foresaw), and any other
// is cut to MaxBriefLength characters.
func (r Redactor) Brief(s string) string {
	s, found := r.redact(s)
	if found {
		return Withheld
	}
	return oneLine(s, MaxBriefLength)
}

// redact replaces every form of every secret and reports whether it found
// any.
func (r Redactor) redact(s string) (string, bool) {
	found := false
	for _, term := range r.terms {
		if strings.Contains(s, term) {
			s = strings.ReplaceAll(s, term, redacted)
			found = true
		}
	}
	return s, found
}

// oneLine turns control characters into spaces, trims, and cuts s to max
// characters with an ellipsis.
func oneLine(s string, max int) string {
	// strings.Map also turns invalid UTF-8 into U+FFFD.
	s = strings.TrimSpace(strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, s))
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max-3]) + "..."
}

var base64Encodings = []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding}

// forms are the ways secret may appear in an echo (see Redactor).
func forms(secret string) []string {
	if secret == "" {
		return nil
	}
	out := []string{secret}
	derived := []string{url.QueryEscape(secret), url.PathEscape(secret), jsonEscape(secret, true), jsonEscape(secret, false), unquote(strconv.Quote(secret))}
	for _, plain := range []string{secret, url.QueryEscape(secret)} {
		var encoded []string
		for _, enc := range base64Encodings {
			encoded = append(encoded, enc.EncodeToString([]byte(plain)))
		}
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			encoded = append(encoded, base64Cores(enc, plain)...)
		}
		for _, b := range encoded {
			derived = append(derived, b, url.QueryEscape(b), url.PathEscape(b))
		}
	}
	for _, d := range derived {
		if len(d) >= minDerivedLength {
			out = append(out, d)
		}
	}
	return out
}

// base64Cores are, for each of the three offsets the secret can start at
// within a base64 group, the characters that depend on the secret's bytes
// alone: they appear in the base64 of any text holding the secret at such
// an offset. Only the first and last character or two, which mix in the
// neighbouring bytes, are left out.
func base64Cores(enc *base64.Encoding, secret string) []string {
	var cores []string
	for offset := range 3 {
		text := enc.EncodeToString(append(make([]byte, offset), secret...))
		// Character i carries bits [6i, 6i+6) of the text; the secret's
		// are [8·offset, 8·(offset+len)).
		start := (8*offset + 5) / 6
		end := 8 * (offset + len(secret)) / 6
		if end > start {
			cores = append(cores, text[start:end])
		}
	}
	return cores
}

// jsonEscape is secret as it appears inside a JSON string.
func jsonEscape(secret string, escapeHTML bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(secret) // a string always encodes
	return unquote(strings.TrimSuffix(b.String(), "\n"))
}

func unquote(quoted string) string {
	return strings.TrimSuffix(strings.TrimPrefix(quoted, `"`), `"`)
}
