package carbon

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	texttemplate "text/template"
	"text/template/parse"

	"github.com/hashicorp/go-secure-stdlib/base62"
	"github.com/hashicorp/vault/sdk/helper/template"
)

// key_name_template runs on every issuance, so its cost must be bounded
// whatever an operator writes: every value a template function returns is
// at most maxTemplateValue bytes, and the constructs that loop or recurse
// (range, template, define, block) are refused. The template text itself
// is bounded by maxTemplateLength (path_roles.go).
const maxTemplateValue = 1024

var errTemplateValueTooLarge = fmt.Errorf("a template function would produce more than %d bytes", maxTemplateValue)

// boundedTemplateFuncs replace the sdk's functions that can grow a value.
var boundedTemplateFuncs = map[string]any{
	"random": func(n int) (string, error) {
		if n < 0 || n > maxTemplateValue {
			return "", fmt.Errorf("random %d: use a length between 0 and %d", n, maxTemplateValue)
		}
		return base62.Random(n)
	},
	"replace": func(find, replacement, s string) (string, error) {
		n := strings.Count(s, find) // for "", one more than the runes
		if len(s)+n*(len(replacement)-len(find)) > maxTemplateValue {
			return "", errTemplateValueTooLarge
		}
		return strings.ReplaceAll(s, find, replacement), nil
	},
	"base64": func(s string) (string, error) {
		if base64.StdEncoding.EncodedLen(len(s)) > maxTemplateValue {
			return "", errTemplateValueTooLarge
		}
		return base64.StdEncoding.EncodeToString([]byte(s)), nil
	},
}

// templateFuncNames are every function a key name template may call: the
// sdk's, with the bounded ones above standing in for theirs.
var templateFuncNames = []string{
	"random", "truncate", "truncate_sha256", "uppercase", "lowercase", "replace",
	"sha256", "base64", "unix_time", "unix_time_millis", "timestamp", "uuid",
}

// longestKeyNameData is what a role write renders its template with: the
// longest role name, and a display name as long as Vault's usual ones get.
var longestKeyNameData = keyNameData{
	RoleName:    strings.Repeat("r", maxNameLength),
	DisplayName: strings.Repeat("d", 256),
}

// parsedTemplates caches parsed key name templates by their text: parsing
// on every issuance is wasted work. It holds at most maxParsedTemplates.
var (
	parsedTemplates      sync.Map // string -> template.StringTemplate
	parsedTemplatesCount atomic.Int64
)

const maxParsedTemplates = 1024

func parseKeyNameTemplate(tmpl string) (template.StringTemplate, error) {
	if cached, ok := parsedTemplates.Load(tmpl); ok {
		return cached.(template.StringTemplate), nil
	}
	if err := checkTemplateBounded(tmpl); err != nil {
		return template.StringTemplate{}, err
	}
	opts := []template.Opt{template.Template(tmpl)}
	for name, f := range boundedTemplateFuncs {
		opts = append(opts, template.Function(name, f))
	}
	parsed, err := template.NewTemplate(opts...)
	if err != nil {
		return template.StringTemplate{}, err
	}
	if parsedTemplatesCount.Add(1) <= maxParsedTemplates {
		parsedTemplates.Store(tmpl, parsed)
	}
	return parsed, nil
}

// checkTemplateBounded refuses the constructs whose cost a template's
// length does not bound. Go's text/template has ranged over integers since
// Go 1.22, so `{{ range 1000000000 }}` alone would run for minutes.
func checkTemplateBounded(tmpl string) error {
	funcs := texttemplate.FuncMap{}
	for _, name := range templateFuncNames {
		funcs[name] = func(...any) string { return "" }
	}
	t, err := texttemplate.New("key_name_template").Funcs(funcs).Parse(tmpl)
	if err != nil {
		return fmt.Errorf("unable to parse template: %w", err)
	}
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
