package carbon

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	texttemplate "text/template"
	"text/template/parse"
	"time"

	"github.com/hashicorp/go-secure-stdlib/base62"
	uuid "github.com/hashicorp/go-uuid"
)

// key_name_template runs on every issuance, so its cost is bounded while it
// renders, whatever an operator writes: a check of the result comes too late
// (print and a variable growing tenfold per step reach gigabytes within a
// few hundred characters). The text is bounded by maxTemplateLength
// (path_roles.go); every value a function returns, text/template's builtins
// included, by maxTemplateValue, so variables cannot grow; the output by
// maxTemplateOutput, so values cannot be repeated into a huge name; range,
// template, define and block are refused.
//
// The sdk's helper/template renders into an unbounded buffer, so the
// template runs here on text/template with the sdk's functions.
const (
	maxTemplateValue  = 1024
	maxTemplateOutput = 4096
)

var errTemplateOutputTooLarge = fmt.Errorf("renders more than %d bytes; key names keep %d characters, so render less (truncate long values, repeat them less)",
	maxTemplateOutput, maxRenderedNameLength)

func boundedValue(function, s string) (string, error) {
	if len(s) > maxTemplateValue {
		return "", valueTooLarge(function)
	}
	return s, nil
}

func valueTooLarge(function string) error {
	return fmt.Errorf("%s would produce more than %d bytes; key names keep %d characters, so truncate values first (e.g. .DisplayName | truncate 24)",
		function, maxTemplateValue, maxRenderedNameLength)
}

// templateFuncs are the sdk helper/template functions, and bounded versions
// of the text/template builtins that can grow a value (a function of the
// same name replaces a builtin).
var templateFuncs = texttemplate.FuncMap{
	"random": func(n int) (string, error) {
		if n < 0 || n > maxTemplateValue {
			return "", fmt.Errorf("random %d: use a length between 0 and %d", n, maxTemplateValue)
		}
		return base62.Random(n)
	},
	"truncate": func(maxLen int, s string) (string, error) {
		if maxLen <= 0 {
			return "", fmt.Errorf("max length must be > 0 but was %d", maxLen)
		}
		return s[:min(len(s), maxLen)], nil
	},
	"truncate_sha256": func(maxLen int, s string) (string, error) {
		const hashLen = 8
		if maxLen <= hashLen {
			return "", fmt.Errorf("max length must be > %d but was %d", hashLen, maxLen)
		}
		if len(s) <= maxLen {
			return s, nil
		}
		cut := maxLen - hashLen
		return s[:cut] + hashSHA256(s[cut:])[:hashLen], nil
	},
	"uppercase": func(s string) (string, error) { return boundedValue("uppercase", strings.ToUpper(s)) },
	"lowercase": func(s string) (string, error) { return boundedValue("lowercase", strings.ToLower(s)) },
	"replace": func(find, replacement, s string) (string, error) {
		n := strings.Count(s, find) // for "", one more than the runes
		if len(s)+n*(len(replacement)-len(find)) > maxTemplateValue {
			return "", valueTooLarge("replace")
		}
		return strings.ReplaceAll(s, find, replacement), nil
	},
	"sha256": hashSHA256,
	"base64": func(s string) (string, error) {
		if base64.StdEncoding.EncodedLen(len(s)) > maxTemplateValue {
			return "", valueTooLarge("base64")
		}
		return base64.StdEncoding.EncodeToString([]byte(s)), nil
	},
	"unix_time":        func() string { return strconv.FormatInt(time.Now().Unix(), 10) },
	"unix_time_millis": func() string { return strconv.FormatInt(time.Now().UnixMilli(), 10) },
	"timestamp":        func(layout string) (string, error) { return boundedValue("timestamp", time.Now().Format(layout)) },
	"uuid":             uuid.GenerateUUID,

	// Their arguments are bounded values, so the transient result is too.
	"print":   func(args ...any) (string, error) { return boundedValue("print", fmt.Sprint(args...)) },
	"println": func(args ...any) (string, error) { return boundedValue("println", fmt.Sprintln(args...)) },
	"printf": func(format string, args ...any) (string, error) {
		if err := checkFormatBounded(format); err != nil {
			return "", err
		}
		return boundedValue("printf", fmt.Sprintf(format, args...))
	},
	"html": func(args ...any) (string, error) { return boundedValue("html", texttemplate.HTMLEscaper(args...)) },
	"js":   func(args ...any) (string, error) { return boundedValue("js", texttemplate.JSEscaper(args...)) },
	"urlquery": func(args ...any) (string, error) {
		return boundedValue("urlquery", texttemplate.URLQueryEscaper(args...))
	},
}

// longestKeyNameData is what a role write renders its template with: the
// longest role name, and a display name as long as Vault's usual ones get.
var longestKeyNameData = keyNameData{
	RoleName:    strings.Repeat("r", maxNameLength),
	DisplayName: strings.Repeat("d", 256),
}

func hashSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// checkFormatBounded refuses printf widths and precisions past
// maxTemplateValue: fmt pads each to up to a megabyte before printf could
// look at its result.
func checkFormatBounded(format string) error {
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
	verb:
		for i++; i < len(format); i++ {
			switch c := format[i]; {
			case c == '*':
				return errors.New("a width or precision from an argument (*) is not allowed; write the number in the format")
			case c == '[': // an argument index, not a width
				for i < len(format) && format[i] != ']' {
					i++
				}
			case c >= '0' && c <= '9':
				n := 0
				for ; i < len(format) && format[i] >= '0' && format[i] <= '9'; i++ {
					if n = n*10 + int(format[i]-'0'); n > maxTemplateValue {
						return fmt.Errorf("a width or precision above %d is not allowed (key names keep %d characters); use a smaller one", maxTemplateValue, maxRenderedNameLength)
					}
				}
				i--
			case strings.IndexByte("+-# .", c) < 0:
				break verb // the verb, or the second % of %%
			}
		}
	}
	return nil
}

// boundedWriter is the rendered output; it fails once it would pass
// maxTemplateOutput, which stops text/template at that write.
type boundedWriter struct{ strings.Builder }

func (w *boundedWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > maxTemplateOutput {
		return 0, errTemplateOutputTooLarge
	}
	return w.Builder.Write(p)
}

// parsedTemplates caches parsed key name templates by their text: parsing
// on every issuance is wasted work. It holds at most maxParsedTemplates.
var (
	parsedTemplates      sync.Map // string -> *texttemplate.Template
	parsedTemplatesCount atomic.Int64
)

const maxParsedTemplates = 1024

func parseKeyNameTemplate(tmpl string) (*texttemplate.Template, error) {
	if cached, ok := parsedTemplates.Load(tmpl); ok {
		return cached.(*texttemplate.Template), nil
	}
	if tmpl == "" {
		return nil, errors.New("missing template")
	}
	parsed, err := texttemplate.New("key_name_template").Funcs(templateFuncs).Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("unable to parse template: %w", err)
	}
	if err := checkTemplateBounded(parsed); err != nil {
		return nil, err
	}
	if parsedTemplatesCount.Add(1) <= maxParsedTemplates {
		parsedTemplates.Store(tmpl, parsed)
	}
	return parsed, nil
}

// executeKeyNameTemplate renders into a boundedWriter, so no template,
// however it combines its values, holds more than maxTemplateOutput bytes
// of output.
func executeKeyNameTemplate(t *texttemplate.Template, data keyNameData) (string, error) {
	var w boundedWriter
	if err := t.Execute(&w, data); err != nil {
		return "", fmt.Errorf("unable to apply template: %w", err)
	}
	return w.String(), nil
}

// checkTemplateBounded refuses the constructs whose cost a template's
// length does not bound. Go's text/template has ranged over integers since
// Go 1.22, so `{{ range 1000000000 }}` alone would run for minutes.
func checkTemplateBounded(t *texttemplate.Template) error {
	if len(t.Templates()) > 1 {
		return errors.New("define and block are not allowed")
	}
	if t.Tree == nil {
		return nil
	}
	return checkNodesBounded(t.Tree.Root)
}

func checkNodesBounded(node parse.Node) error {
	switch n := node.(type) {
	case *parse.RangeNode:
		return errors.New("range is not allowed")
	case *parse.TemplateNode:
		return errors.New("template is not allowed")
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, child := range n.Nodes {
			if err := checkNodesBounded(child); err != nil {
				return err
			}
		}
	case *parse.IfNode:
		return checkBranchBounded(&n.BranchNode)
	case *parse.WithNode:
		return checkBranchBounded(&n.BranchNode)
	}
	return nil
}

func checkBranchBounded(n *parse.BranchNode) error {
	if err := checkNodesBounded(n.List); err != nil {
		return err
	}
	return checkNodesBounded(n.ElseList)
}
