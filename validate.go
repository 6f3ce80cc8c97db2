package carbon

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-secure-stdlib/parseutil"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/baseurl"
)

// maxNameLength bounds config and role names: they become storage keys and
// parts of upstream key names.
const maxNameLength = 128

var nameRegex = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// validateName checks a config or role name taken from the request path.
func validateName(field, name string) error {
	switch {
	case name == "":
		return invalidField(field, "is required in the path")
	case len(name) > maxNameLength:
		return invalidField(field, "is %d characters long; use at most %d", len(name), maxNameLength)
	case !nameRegex.MatchString(name):
		return invalidField(field, "%s is not valid; use letters, digits, '.', '_' or '-', starting and ending with a letter or digit", quoteForMessage(name))
	case strings.Contains(name, ".."):
		// Vault's storage refuses keys with "..": caught here as a 400
		// instead of a storage error's 500.
		return invalidField(field, "%s must not contain \"..\"; use single dots", quoteForMessage(name))
	}
	return nil
}

// quoteForMessage quotes user input for an error message: control characters
// are escaped and long values cut, so a message stays one readable line.
func quoteForMessage(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}

// validateUpstreamURL applies the https-or-loopback rule (backend/baseurl)
// to a URL field.
func validateUpstreamURL(field, raw string) (string, error) {
	u, err := baseurl.Check(raw)
	if err != nil {
		return "", invalidField(field, "%s", err)
	}
	return u, nil
}

// rejectForeignFields fails when the request sets a field that belongs to
// another provider than the one of the connection being written or used.
func rejectForeignFields(d *framework.FieldData, provider string, owners map[string]string) error {
	fields := make([]string, 0, len(owners))
	for field := range owners {
		fields = append(fields, field)
	}
	sort.Strings(fields)
	for _, field := range fields {
		if _, set := d.Raw[field]; set && owners[field] != provider {
			return invalidField(field, "applies only to provider %q; remove it when the connection's provider is %q", owners[field], provider)
		}
	}
	return nil
}

// refuseUnknownFields wraps a write handler: a field the path does not have
// is a 400 naming it and the nearest real field. A misspelt ttl or
// request_timeout would otherwise be ignored without a word (the sdk warns
// only when a handler returns a response, and these writes return none).
func refuseUnknownFields(handler framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		if err := checkKnownFields(d); err != nil {
			return errorResponse(err)
		}
		if err := checkDurations(d); err != nil {
			return errorResponse(err)
		}
		return handler(ctx, req, d)
	}
}

// maxDuration bounds every duration field: ten years is beyond any lease,
// rotation, overlap or tidy interval an operator can mean, and far inside
// what time.Duration holds.
const maxDuration = 10 * 365 * 24 * time.Hour

// checkDurations refuses a duration field that is not a whole number of
// seconds (the framework would round 1.5 or 1500ms down to 1s without a
// word) or is beyond maxDuration. A value that does not parse is left to
// the framework, whose 400 names the field.
func checkDurations(d *framework.FieldData) error {
	fields := make([]string, 0, len(d.Raw))
	for field := range d.Raw {
		fields = append(fields, field)
	}
	sort.Strings(fields)
	for _, field := range fields {
		if schema, ok := d.Schema[field]; !ok || schema.Type != framework.TypeDurationSecond {
			continue
		}
		dur, err := parseutil.ParseDurationSecond(d.Raw[field])
		switch {
		case err != nil:
		case dur%time.Second != 0 || fractionalNumber(d.Raw[field]):
			return invalidField(field, "%s is not a whole number of seconds; give whole seconds (%s=%d) or a duration such as 1m30s", quoteForMessage(fmt.Sprint(d.Raw[field])), field, int64(dur.Round(time.Second)/time.Second))
		case dur > maxDuration:
			return invalidField(field, "must be at most 87600h (ten years)")
		}
	}
	return nil
}

// fractionalNumber reports whether a raw value is a number of seconds with
// a fraction, which the SDK's duration parsing drops (1.5 becomes 1s).
func fractionalNumber(raw any) bool {
	var f float64
	switch v := raw.(type) {
	case float64:
		f = v
	case float32:
		f = float64(v)
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return false
		}
	default:
		return false
	}
	return f != math.Trunc(f)
}

// refuseUnknownQueryParameters has every read and list of paths refuse a
// parameter its path does not have, as writes do: a misspelt limit or
// after would otherwise be ignored with at most a warning.
func refuseUnknownQueryParameters(paths []*framework.Path) []*framework.Path {
	for _, p := range paths {
		for op, handler := range p.Operations {
			if po, ok := handler.(*framework.PathOperation); ok && (op == logical.ReadOperation || op == logical.ListOperation || op == logical.DeleteOperation) {
				po.Callback = refuseUnknownFields(po.Callback)
			}
		}
	}
	return paths
}

func checkKnownFields(d *framework.FieldData) error {
	var unknown []string
	for field := range d.Raw {
		if _, ok := d.Schema[field]; !ok {
			unknown = append(unknown, field)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	field := unknown[0]
	hint := ""
	if nearest := nearestField(field, d.Schema); nearest != "" {
		hint = fmt.Sprintf("; did you mean %s?", nearest)
	}
	return invalidField(quoteForMessage(field), "is not a field of this path%s (vault path-help lists them)", hint)
}

// nearestField is the schema field closest to a misspelt one, within a
// third of its length in edits; "" when none is that close.
func nearestField(field string, schema map[string]*framework.FieldSchema) string {
	best, bestDistance := "", len(field)/3+1
	for candidate := range schema {
		if d := editDistance(field, candidate); d < bestDistance || (d == bestDistance && best != "" && candidate < best) {
			best, bestDistance = candidate, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short ASCII names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
