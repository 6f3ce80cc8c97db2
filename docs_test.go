package carbon

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// apiDocPath is the API documentation checked against the backend's paths.
const apiDocPath = "docs/api.md"

// TestAPIDocsNameEveryPathAndField keeps docs/api.md and the paths the
// backend declares from drifting apart. Each path pattern is written in
// docs/api.md in a human form (apiDocPathForm: "config/(?P<name>.*)" is
// config/:name, "config/?$" is config/, "tidy$" is tidy) under the mount,
// /carbon/config/:name, in a method table row of an endpoint section
// ("## ..."):
//
//	| `POST` | `/carbon/config/:name` |
//
// The test requires, both ways:
//   - a row for every published operation of every path (GET for read, LIST
//     for list, POST for create and update, DELETE for delete), and a path
//     and operation in the code for every row;
//   - every field of a path under "### Parameters" of a section with a row
//     for that path, as "- `field` `(type: default)`", with the type of its
//     schema, <required> exactly when the schema requires it, and the
//     schema's default where it declares one; and no parameter the path does
//     not have;
//   - every field of an operation's response schema (responses.go) under
//     "### Response fields" of a section with a row for that operation, as
//     "- `field` `(type)`", and no response field the schema does not have.
func TestAPIDocsNameEveryPathAndField(t *testing.T) {
	ctx := context.Background()
	be, err := Factory(ctx, logical.TestBackendConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer be.Cleanup(ctx)
	paths := be.(*backend).Paths

	text, err := os.ReadFile(apiDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, problems := parseAPIDoc(string(text))
	for _, p := range problems {
		t.Error(p)
	}

	// The code's side: each path's human form, its published operations
	// as doc methods, and the response fields of each.
	type codePath struct {
		path      *framework.Path
		methods   map[string]bool
		responses map[string]map[string]*framework.FieldSchema // method -> field -> schema
	}
	code := map[string]*codePath{}
	var forms []string
	for _, p := range paths {
		form, err := apiDocPathForm(p.Pattern)
		if err != nil {
			t.Error(err)
			continue
		}
		if _, dup := code[form]; dup {
			t.Errorf("two path patterns have the same documented form %s; make apiDocPathForm tell them apart", form)
			continue
		}
		cp := &codePath{path: p, methods: map[string]bool{}, responses: map[string]map[string]*framework.FieldSchema{}}
		for op, handler := range p.Operations {
			props := handler.Properties()
			if props.Unpublished {
				continue // answers a 400 naming the missing name (path_helpers.go)
			}
			method, ok := apiDocMethods[op]
			if !ok {
				t.Errorf("path %s: operation %q has no documented HTTP method; add it to apiDocMethods", form, op)
				continue
			}
			cp.methods[method] = true
			for _, responses := range props.Responses {
				for _, r := range responses {
					for name, f := range r.Fields {
						if cp.responses[method] == nil {
							cp.responses[method] = map[string]*framework.FieldSchema{}
						}
						cp.responses[method][name] = f
					}
				}
			}
		}
		code[form] = cp
		forms = append(forms, form)
	}
	sort.Strings(forms)

	// Every row names a path and a method the code has.
	for _, s := range doc {
		for _, r := range s.rows {
			cp, ok := code[r.path]
			switch {
			case !ok:
				t.Errorf("%s:%d: `%s /carbon/%s` names no path the backend declares (the backend's paths: %s)", apiDocPath, r.line, r.method, r.path, strings.Join(forms, ", "))
			case !cp.methods[r.method]:
				t.Errorf("%s:%d: `%s /carbon/%s`: the path has no such published operation (it has %s)", apiDocPath, r.line, r.method, r.path, strings.Join(apiDocSortedKeys(cp.methods), ", "))
			}
		}
	}

	for _, form := range forms {
		cp := code[form]
		// Every published operation has a row.
		for _, method := range apiDocSortedKeys(cp.methods) {
			if len(doc.sectionsWith(method, form)) == 0 {
				t.Errorf("%s has no method table row `| `%s` | `/carbon/%s` |` for operation %s of path %q", apiDocPath, method, form, method, cp.path.Pattern)
			}
		}

		// Every field is a parameter of a section with a row for the path.
		documented := map[string]bool{}
		for _, s := range doc.sectionsWith("", form) {
			for name := range s.params {
				documented[name] = true
			}
		}
		for _, name := range apiDocSortedKeys(cp.path.Fields) {
			if !documented[name] {
				t.Errorf("%s: field %q of path /carbon/%s (%s) is not under \"### Parameters\" of any section with a row for /carbon/%s; document it as \"- `%s` `(%s: ...)` – ...\"",
					apiDocPath, name, form, cp.path.Fields[name].Type, form, name, apiDocType(cp.path.Fields[name].Type))
			}
		}

		// Every response field is listed for its operation.
		for method, fields := range cp.responses {
			listed := map[string]bool{}
			for _, s := range doc.sectionsWith(method, form) {
				for name := range s.responses {
					listed[name] = true
				}
			}
			for _, name := range apiDocSortedKeys(fields) {
				if !listed[name] {
					t.Errorf("%s: response field %q of `%s /carbon/%s` is not under \"### Response fields\" of its section; document it as \"- `%s` `(%s)` – ...\"",
						apiDocPath, name, method, form, name, apiDocType(fields[name].Type))
				}
			}
		}
	}

	// What each section documents belongs to the paths of its rows, with
	// their types and defaults.
	for _, s := range doc {
		if len(s.rows) == 0 {
			continue
		}
		for _, name := range apiDocSortedKeys(s.params) {
			param := s.params[name]
			var schema *framework.FieldSchema
			for _, r := range s.rows {
				if cp := code[r.path]; cp != nil && cp.path.Fields[name] != nil {
					schema = cp.path.Fields[name]
					break
				}
			}
			if schema == nil {
				t.Errorf("%s:%d: parameter %q is not a field of %s", apiDocPath, param.line, name, s.rowPaths())
				continue
			}
			if want := apiDocType(schema.Type); param.typ != want {
				t.Errorf("%s:%d: parameter %q is documented as %s; the code's type %s is written %s", apiDocPath, param.line, name, param.typ, schema.Type, want)
			}
			if schema.Required != (param.def == "<required>") {
				t.Errorf("%s:%d: parameter %q: the schema says required=%v, the doc's default is %s (write <required> exactly for the fields the schema requires)", apiDocPath, param.line, name, schema.Required, param.def)
			}
			if schema.Default != nil {
				if want := apiDocDefault(schema); param.def != want {
					t.Errorf("%s:%d: parameter %q: the documented default is %s; the code's is %s", apiDocPath, param.line, name, param.def, want)
				}
			}
		}
		for _, name := range apiDocSortedKeys(s.responses) {
			field := s.responses[name]
			var schema *framework.FieldSchema
			for _, r := range s.rows {
				if cp := code[r.path]; cp != nil && cp.responses[r.method][name] != nil {
					schema = cp.responses[r.method][name]
					break
				}
			}
			if schema == nil {
				t.Errorf("%s:%d: response field %q is in no response schema of %s (responses.go)", apiDocPath, field.line, name, s.rowPaths())
				continue
			}
			if want := apiDocType(schema.Type); field.typ != want {
				t.Errorf("%s:%d: response field %q is documented as %s; the code's type %s is written %s", apiDocPath, field.line, name, field.typ, schema.Type, want)
			}
		}
	}
}

// apiDocMethods are the HTTP methods under which docs/api.md lists each
// operation.
var apiDocMethods = map[logical.Operation]string{
	logical.ReadOperation:   "GET",
	logical.ListOperation:   "LIST",
	logical.CreateOperation: "POST",
	logical.UpdateOperation: "POST",
	logical.PatchOperation:  "PATCH",
	logical.DeleteOperation: "DELETE",
}

// apiDocPathForm is the human form of a path pattern in docs/api.md: each
// named group (?P<name>...) becomes :name, a trailing "/?" a trailing "/",
// and the end anchor goes. A pattern that keeps any other regular
// expression syntax is an error, so a new kind of pattern gets a defined
// form here rather than an accidental one.
func apiDocPathForm(pattern string) (string, error) {
	var out strings.Builder
	for i := 0; i < len(pattern); {
		if !strings.HasPrefix(pattern[i:], "(?P<") {
			out.WriteByte(pattern[i])
			i++
			continue
		}
		end := strings.IndexByte(pattern[i:], '>')
		if end < 0 {
			return "", fmt.Errorf("path pattern %q: unterminated group name", pattern)
		}
		name := pattern[i+len("(?P<") : i+end]
		depth := 0
		j := i
		for ; j < len(pattern); j++ {
			if pattern[j] == '\\' {
				j++
				continue
			}
			if pattern[j] == '(' {
				depth++
			} else if pattern[j] == ')' {
				if depth--; depth == 0 {
					break
				}
			}
		}
		if j >= len(pattern) {
			return "", fmt.Errorf("path pattern %q: unbalanced group", pattern)
		}
		out.WriteString(":" + name)
		i = j + 1
	}
	form := strings.TrimSuffix(out.String(), "$")
	if strings.HasSuffix(form, "/?") {
		form = strings.TrimSuffix(form, "?")
	}
	if strings.ContainsAny(form, `()[]{}?*+|^$\`) {
		return "", fmt.Errorf("path pattern %q has no documented form (got %q); teach apiDocPathForm in docs_test.go how to write it", pattern, form)
	}
	return form, nil
}

// apiDocType is how docs/api.md writes a field type.
func apiDocType(t framework.FieldType) string {
	switch t {
	case framework.TypeString, framework.TypeLowerCaseString, framework.TypeNameString:
		return "string"
	case framework.TypeInt, framework.TypeInt64:
		return "int"
	case framework.TypeBool:
		return "bool"
	case framework.TypeFloat:
		return "float"
	case framework.TypeDurationSecond, framework.TypeSignedDurationSecond:
		return "duration"
	case framework.TypeStringSlice, framework.TypeCommaStringSlice, framework.TypeCommaIntSlice, framework.TypeSlice:
		return "list"
	case framework.TypeMap, framework.TypeKVPairs:
		return "map"
	}
	return "unknown type " + t.String() + " (teach apiDocType in docs_test.go)"
}

// apiDocDefault is how docs/api.md writes a schema default: durations as
// quoted Go-style durations ("30s", "15m"), strings quoted, the rest as Go
// prints them.
func apiDocDefault(f *framework.FieldSchema) string {
	v := f.DefaultOrZero()
	switch f.Type {
	case framework.TypeDurationSecond, framework.TypeSignedDurationSecond:
		secs, _ := v.(int)
		return strconv.Quote(apiDocSeconds(secs))
	case framework.TypeString, framework.TypeLowerCaseString, framework.TypeNameString:
		s, _ := v.(string)
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func apiDocSeconds(secs int) string {
	switch {
	case secs == 0:
		return "0"
	case secs%3600 == 0:
		return fmt.Sprintf("%dh", secs/3600)
	case secs%60 == 0:
		return fmt.Sprintf("%dm", secs/60)
	}
	return fmt.Sprintf("%ds", secs)
}

type apiDoc []*apiDocSection

type apiDocSection struct {
	title     string
	rows      []apiDocRow
	params    map[string]apiDocEntry
	responses map[string]apiDocEntry
}

type apiDocRow struct {
	method, path string
	line         int
}

type apiDocEntry struct {
	typ, def string
	line     int
}

// sectionsWith are the sections with a row for the path (and method, when
// given).
func (d apiDoc) sectionsWith(method, path string) []*apiDocSection {
	var out []*apiDocSection
	for _, s := range d {
		for _, r := range s.rows {
			if r.path == path && (method == "" || r.method == method) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func (s *apiDocSection) rowPaths() string {
	var out []string
	for _, r := range s.rows {
		out = append(out, r.method+" /carbon/"+r.path)
	}
	return fmt.Sprintf("section %q (%s)", s.title, strings.Join(out, ", "))
}

var (
	apiDocRowRe      = regexp.MustCompile("^\\|\\s*`(GET|LIST|POST|PUT|PATCH|DELETE)`\\s*\\|\\s*`/carbon/([^`]*)`\\s*\\|")
	apiDocParamRe    = regexp.MustCompile("^- `([a-z0-9_]+)` `\\(([a-z]+): (.+)\\)`(\\s|$)")
	apiDocResponseRe = regexp.MustCompile("^- `([a-z0-9_]+)` `\\(([a-z]+)\\)`(\\s|$)")
)

// parseAPIDoc reads the endpoint sections of docs/api.md: "## " starts a
// section, "### Parameters" and "### Response fields" its lists; fenced
// code is skipped. It reports entries it cannot read rather than skip them.
func parseAPIDoc(text string) (apiDoc, []string) {
	var (
		doc      apiDoc
		problems []string
		section  *apiDocSection
		sub      string
		fenced   bool
	)
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		switch {
		case strings.HasPrefix(line, "## "):
			section = &apiDocSection{title: strings.TrimPrefix(line, "## "), params: map[string]apiDocEntry{}, responses: map[string]apiDocEntry{}}
			doc = append(doc, section)
			sub = ""
			continue
		case strings.HasPrefix(line, "### "):
			sub = strings.TrimPrefix(line, "### ")
			continue
		case section == nil:
			continue
		}
		if m := apiDocRowRe.FindStringSubmatch(line); m != nil {
			section.rows = append(section.rows, apiDocRow{method: m[1], path: m[2], line: n})
			continue
		}
		if !strings.HasPrefix(line, "- `") {
			continue
		}
		var (
			list map[string]apiDocEntry
			m    []string
			want string
		)
		switch sub {
		case "Parameters":
			list, m, want = section.params, apiDocParamRe.FindStringSubmatch(line), "- `field` `(type: default)` – description"
		case "Response fields":
			list, m, want = section.responses, apiDocResponseRe.FindStringSubmatch(line), "- `field` `(type)` – description"
		default:
			continue
		}
		if m == nil {
			problems = append(problems, fmt.Sprintf("%s:%d: cannot read this %s entry of section %q; write it as %s", apiDocPath, n, sub, section.title, want))
			continue
		}
		if prev, dup := list[m[1]]; dup {
			problems = append(problems, fmt.Sprintf("%s:%d: %q is listed twice in %s of section %q (first at line %d)", apiDocPath, n, m[1], sub, section.title, prev.line))
			continue
		}
		entry := apiDocEntry{typ: m[2], line: n}
		if sub == "Parameters" {
			entry.def = m[3]
		}
		list[m[1]] = entry
	}
	if fenced {
		problems = append(problems, apiDocPath+": a code fence is not closed")
	}
	return doc, problems
}

func apiDocSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestReadResponsesHaveSchemas(t *testing.T) {
	b := newBackend()
	for _, p := range b.Paths {
		for op, h := range p.Operations {
			po, ok := h.(*framework.PathOperation)
			if !ok || po.Unpublished || (op != logical.ReadOperation && p.Pattern != "tidy$" && !strings.HasPrefix(p.Pattern, "rotate-role/")) {
				continue
			}
			// A raw answer (metrics) has its media type instead of fields.
			if len(po.Responses[200]) == 0 || (len(po.Responses[200][0].Fields) == 0 && po.Responses[200][0].MediaType == "") {
				t.Errorf("%s %s has no response schema", op, p.Pattern)
			}
		}
	}
}
