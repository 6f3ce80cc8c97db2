package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/keyname"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/baseurl"
)

// envManagementKey names the variable the management key is read from.
const envManagementKey = "CLIMATIQ_MANAGEMENT_KEY"

// The plugin's defaults for a connection's request_timeout, max_retries
// and rate_limit, so the sweep paces itself as the plugin would.
const (
	defaultRequestTimeout = 30 * time.Second
	defaultMaxRetries     = 3
	defaultRateLimit      = 0.0
)

// version is set at build time (make build, make release).
var version = "dev"

type options struct {
	managementURL  string
	managementKey  string
	marker         string
	olderThan      time.Duration
	olderThanSet   bool
	delete         bool
	yes            bool
	rateLimit      float64
	requestTimeout time.Duration
	maxRetries     int

	// What a Vault WAL entry covers, as the plugin names it when a
	// connection is deleted with its rollbacks abandoned: exact names, or
	// names of a nonce prefix made in a time window; keep names what the
	// mount still holds.
	names        []string
	noncePrefix  string
	createdFrom  time.Time
	createdUntil time.Time
	keep         []string
}

// narrowed reports whether a filter beyond the marker and age was given.
func (o options) narrowed() bool {
	return len(o.names) > 0 || o.noncePrefix != "" || !o.createdFrom.IsZero() || !o.createdUntil.IsZero()
}

// filters describes the filters given, for the plan's heading.
func (o options) filters() string {
	var parts []string
	if len(o.names) > 0 {
		parts = append(parts, "names "+strings.Join(o.names, ", "))
	}
	if o.noncePrefix != "" {
		parts = append(parts, fmt.Sprintf("nonce prefix %q", o.noncePrefix))
	}
	if !o.createdFrom.IsZero() {
		parts = append(parts, "made from "+o.createdFrom.UTC().Format(time.RFC3339))
	}
	if !o.createdUntil.IsZero() {
		parts = append(parts, "made until "+o.createdUntil.UTC().Format(time.RFC3339))
	}
	if o.olderThanSet {
		parts = append(parts, "older than "+age(o.olderThan))
	}
	if len(o.keep) > 0 {
		parts = append(parts, "keeping "+strings.Join(o.keep, ", "))
	}
	return strings.Join(parts, ", ")
}

// selects reports whether a marked name passes the filters.
func (o options) selects(e entry) bool {
	if len(o.names) > 0 && !slices.Contains(o.names, e.name) {
		return false
	}
	if nonce, _ := keyname.Nonce(e.name); !strings.HasPrefix(nonce, o.noncePrefix) {
		return false
	}
	if (!o.createdFrom.IsZero() && e.created.Before(o.createdFrom)) || (!o.createdUntil.IsZero() && e.created.After(o.createdUntil)) {
		return false
	}
	return !slices.Contains(o.keep, e.name)
}

// errUsage is a usage error already explained on stderr.
var errUsage = errors.New("usage")

const usageText = `Usage: CLIMATIQ_MANAGEMENT_KEY=... carbon-sweep [flags]

Shows, per Vault mount marker, how many Climatiq keys and per-lease projects
carry it and how old they are. With -marker M -older-than D it lists what it
would delete; add -delete to delete them (after typing the marker to confirm,
unless -yes). Keys without a marker are never touched.

-name, -nonce-prefix, -created-from and -created-until narrow a marker's sweep
to what one Vault WAL entry covers (vault delete config/<name>
abandon_rollbacks=true prints the command for each); -keep spares names the
mount still holds. With them, -older-than is optional.

Flags:
`

// parseArgs reads flags and the environment. Problems are written to
// stderr and returned as errUsage.
func parseArgs(args []string, env func(string) string, stdout, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("carbon-sweep", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.managementURL, "management-url", climatiq.DefaultManagementURL, "Climatiq management API base URL (https://, or http:// for a loopback host)")
	fs.StringVar(&o.marker, "marker", "", "the mount marker whose keys to list or delete (8 lower-case letters or digits)")
	fs.Var(ageFlag{&o.olderThan, &o.olderThanSet}, "older-than", "only keys created longer ago than this, e.g. 72h or 7d (required with -delete)")
	fs.BoolVar(&o.delete, "delete", false, "delete the keys and projects listed (default: dry run)")
	fs.BoolVar(&o.yes, "yes", false, "with -delete: do not ask for confirmation")
	fs.Float64Var(&o.rateLimit, "rate-limit", defaultRateLimit, "max requests per second to the management API; 0 means no limit (429s are waited out either way)")
	fs.DurationVar(&o.requestTimeout, "request-timeout", defaultRequestTimeout, "time limit of one request attempt")
	fs.IntVar(&o.maxRetries, "max-retries", defaultMaxRetries, "retries after network errors and 5xx")
	fs.Func("name", "only the key or project of this exact name (repeatable)", func(v string) error { o.names = append(o.names, v); return nil })
	fs.StringVar(&o.noncePrefix, "nonce-prefix", "", "only names whose nonce (the part after the creation time) starts with this")
	fs.Func("created-from", "only names made at or after this time (RFC 3339)", timeFlag(&o.createdFrom))
	fs.Func("created-until", "only names made at or before this time (RFC 3339)", timeFlag(&o.createdUntil))
	fs.Func("keep", "never delete the key or project of this exact name (repeatable)", func(v string) error { o.keep = append(o.keep, v); return nil })
	showVersion := fs.Bool("version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, flag.ErrHelp
		}
		return o, errUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, "carbon-sweep", version)
		return o, flag.ErrHelp
	}
	usage := func(format string, a ...any) (options, error) {
		fmt.Fprintf(stderr, "carbon-sweep: "+format+"\n", a...)
		fmt.Fprintln(stderr, "Run carbon-sweep -h for help.")
		return o, errUsage
	}
	switch {
	case fs.NArg() > 0:
		return usage("unexpected argument %q: everything is a flag", fs.Arg(0))
	case o.marker != "" && !keyname.ValidMarker(o.marker):
		return usage("-marker %q is not a mount marker (%d lower-case letters or digits, as in vault-<marker>-...)", o.marker, keyname.MarkerLength)
	case o.narrowed() && o.marker == "":
		return usage("-name, -nonce-prefix, -created-from and -created-until need -marker")
	case o.delete && (o.marker == "" || (!o.olderThanSet && !o.narrowed())):
		return usage("-delete needs -marker and -older-than (or -name, -nonce-prefix, -created-from or -created-until): the sweep deletes one marker's keys older than a cut-off, or those a filter names")
	case o.yes && !o.delete:
		return usage("-yes only applies with -delete")
	case o.olderThanSet && o.marker == "":
		return usage("-older-than needs -marker")
	case o.rateLimit < 0:
		return usage("-rate-limit must not be negative")
	case o.requestTimeout <= 0:
		return usage("-request-timeout must be positive")
	case o.maxRetries < 0 || o.maxRetries > 10:
		return usage("-max-retries must be between 0 and 10")
	}
	if err := checkURL(o.managementURL); err != nil {
		return usage("-management-url: %v", err)
	}
	o.managementURL = strings.TrimRight(o.managementURL, "/")
	o.managementKey = strings.TrimSpace(env(envManagementKey))
	if o.managementKey == "" {
		return usage("set %s to the Climatiq management key (it is never taken as a flag)", envManagementKey)
	}
	return o, nil
}

// checkURL is the plugin's rule for upstream URLs: https, or http for a
// loopback host; no credentials, query or fragment.
func checkURL(raw string) error {
	_, err := baseurl.Check(raw)
	return err
}

// timeFlag parses an RFC 3339 time into t.
func timeFlag(t *time.Time) func(string) error {
	return func(v string) error {
		parsed, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return fmt.Errorf("%q is not an RFC 3339 time (e.g. 2026-12-03T08:10:00Z)", v)
		}
		*t = parsed
		return nil
	}
}

// ageFlag is a duration that also takes whole days ("7d"), the unit
// operators think of keys' ages in.
type ageFlag struct {
	d   *time.Duration
	set *bool
}

func (a ageFlag) String() string {
	if a.d == nil || *a.d == 0 {
		return "" // no default shown: the flag has none
	}
	return a.d.String()
}

func (a ageFlag) Set(s string) error {
	d, err := parseAge(s)
	if err != nil {
		return err
	}
	*a.d, *a.set = d, true
	return nil
}

func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 36500 {
			return 0, fmt.Errorf("%q is not a whole number of days (e.g. 7d) nor a duration (e.g. 36h)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (e.g. 36h) nor a whole number of days (e.g. 7d)", s)
	}
	return d, nil
}
