package acceptance

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// Modes, chosen by $CARBON_ACCEPTANCE. `make test` leaves it unset, so a
// developer's real credentials never reach the real services from there.
const (
	modeVar   = "CARBON_ACCEPTANCE"
	modeReal  = "real"  // make acceptance: the services the variables name
	modeFakes = "fakes" // the default: in-process fakes on 127.0.0.1
	reportVar = "CARBON_ACCEPTANCE_REPORT"
)

// The variables the real mode reads. The fakes mode sets them itself, so
// both modes take the same path from here on.
const (
	envCQKey        = "CLIMATIQ_MANAGEMENT_KEY"
	envCQURL        = "CLIMATIQ_MANAGEMENT_URL"
	envCQAPIURL     = "CLIMATIQ_API_URL"
	envCQProject    = "CLIMATIQ_PROJECT_ID"
	envAQID         = "ALTRUISTIQ_CLIENT_ID"
	envAQSecret     = "ALTRUISTIQ_CLIENT_SECRET"
	envAQTokenURL   = "ALTRUISTIQ_TOKEN_URL"
	envAQAPIURL     = "ALTRUISTIQ_API_URL"
	envAQAuthStyle  = "ALTRUISTIQ_AUTH_STYLE"
	pluginVersion   = "v0.1.0-acceptance"
	mount           = "carbon"
	fakeNameLimit   = 200 // the fake refuses longer names, so the probe has a limit to find
	vaultStartLimit = 3 * time.Minute
)

const needed = `acceptance: the suite needs credentials for at least one service:
  Climatiq:   CLIMATIQ_MANAGEMENT_KEY (required)
              CLIMATIQ_MANAGEMENT_URL (default ` + climatiq.DefaultManagementURL + `)
              CLIMATIQ_API_URL        (default ` + climatiq.DefaultAPIURL + `)
              CLIMATIQ_PROJECT_ID     (optional: a project to issue keys in; else a marked project is created and deleted)
  Altruistiq: ALTRUISTIQ_CLIENT_ID and ALTRUISTIQ_CLIENT_SECRET (required)
              ALTRUISTIQ_TOKEN_URL    (default ` + altruistiq.DefaultTokenURL + `)
              ALTRUISTIQ_API_URL      (default ` + altruistiq.DefaultAPIURL + `)
              ALTRUISTIQ_AUTH_STYLE   (params or header; default params)
  (make acceptance CARBON_ACCEPTANCE_FAKES=1 runs it against in-process fakes instead.)`

// climatiqTarget and altruistiqTarget are what one run talks to.
type climatiqTarget struct {
	managementKey, managementURL, apiURL, projectID string
}

type altruistiqTarget struct {
	clientID, clientSecret, tokenURL, apiURL, authStyle string
}

type fakes struct {
	climatiq   *climatiqtest.Server
	altruistiq *altruistiqtest.Server
}

var (
	mode      string
	vault     *devvault.Server
	cqTarget  *climatiqTarget   // nil: no Climatiq credentials
	aqTarget  *altruistiqTarget // nil: no Altruistiq credentials
	fake      *fakes            // nil in the real mode
	skipNotes []string          // why a part will not run
	ledger    = newLedger()
	report    = newReport()
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("acceptance: skipped in -short mode")
		os.Exit(0)
	}
	mode = os.Getenv(modeVar)
	switch mode {
	case "":
		mode = modeFakes
	case modeReal, modeFakes:
	default:
		fmt.Fprintf(os.Stderr, "acceptance: %s=%q: use %q or %q\n", modeVar, mode, modeReal, modeFakes)
		os.Exit(2)
	}
	if mode == modeFakes {
		f := startFakes()
		defer f.climatiq.Close()
		defer f.altruistiq.Close()
		fake = f
	}
	cqTarget, aqTarget, skipNotes = targetsFromEnv(os.Getenv)
	if cqTarget == nil && aqTarget == nil {
		fmt.Println(needed)
		for _, n := range skipNotes {
			fmt.Println("acceptance:", n)
		}
		fmt.Println("acceptance: SKIPPED: no credentials given; nothing was run, nothing was created")
		os.Exit(0)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "acceptance setup:", err)
		code = 1
	}
	os.Exit(code)
}

// startFakes starts the in-process fakes and points the variables at
// them; any real credentials in the environment are dropped first.
func startFakes() *fakes {
	for _, v := range []string{envCQKey, envCQURL, envCQAPIURL, envCQProject, envAQID, envAQSecret, envAQTokenURL, envAQAPIURL, envAQAuthStyle} {
		os.Unsetenv(v)
	}
	f := &fakes{
		climatiq:   climatiqtest.NewServer("acceptance-fake-management-key"),
		altruistiq: altruistiqtest.NewServer("acceptance-fake-client", "acceptance-fake-secret"),
	}
	f.climatiq.SetMaxNameLength(fakeNameLimit)
	os.Setenv(envCQKey, "acceptance-fake-management-key")
	os.Setenv(envCQURL, f.climatiq.ManagementURL())
	os.Setenv(envCQAPIURL, f.climatiq.APIURL())
	os.Setenv(envAQID, "acceptance-fake-client")
	os.Setenv(envAQSecret, "acceptance-fake-secret")
	os.Setenv(envAQTokenURL, f.altruistiq.TokenURL())
	os.Setenv(envAQAPIURL, f.altruistiq.APIURL())
	return f
}

// targetsFromEnv reads the variables. A service whose required variables
// are all unset is skipped; one with only some of them is skipped with a
// note naming the missing one.
func targetsFromEnv(getenv func(string) string) (*climatiqTarget, *altruistiqTarget, []string) {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var cq *climatiqTarget
	var aq *altruistiqTarget
	var notes []string
	if key := get(envCQKey, ""); key != "" {
		cq = &climatiqTarget{
			managementKey: key,
			managementURL: get(envCQURL, climatiq.DefaultManagementURL),
			apiURL:        get(envCQAPIURL, climatiq.DefaultAPIURL),
			projectID:     get(envCQProject, ""),
		}
	} else {
		notes = append(notes, "Climatiq part skipped: "+envCQKey+" is not set")
	}
	id, secret := get(envAQID, ""), get(envAQSecret, "")
	switch {
	case id != "" && secret != "":
		aq = &altruistiqTarget{
			clientID:     id,
			clientSecret: secret,
			tokenURL:     get(envAQTokenURL, altruistiq.DefaultTokenURL),
			apiURL:       get(envAQAPIURL, altruistiq.DefaultAPIURL),
			authStyle:    get(envAQAuthStyle, altruistiq.AuthStyleParams),
		}
	case id != "":
		notes = append(notes, "Altruistiq part skipped: "+envAQSecret+" is not set")
	case secret != "":
		notes = append(notes, "Altruistiq part skipped: "+envAQID+" is not set")
	default:
		notes = append(notes, "Altruistiq part skipped: "+envAQID+" and "+envAQSecret+" are not set")
	}
	return cq, aq, notes
}

func run(m *testing.M) (int, error) {
	root, err := devvault.RepoRoot()
	if err != nil {
		return 0, err
	}
	vaultBin, err := devvault.FindVault(root)
	if err != nil {
		return 0, err
	}
	workDir, err := os.MkdirTemp("", "carbon-acceptance-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(workDir)
	pluginDir := filepath.Join(workDir, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return 0, err
	}
	_, sha, err := devvault.BuildPlugin(root, pluginDir, pluginVersion)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), vaultStartLimit)
	defer cancel()
	vault, err = devvault.Start(ctx, devvault.Options{VaultBin: vaultBin, Dir: filepath.Join(workDir, "vault"), PluginDir: pluginDir})
	if err != nil {
		return 0, err
	}
	defer vault.KillAll()
	if err := vault.RegisterAndEnable(sha, pluginVersion, mount); err != nil {
		return 0, err
	}

	fmt.Printf("acceptance: mode %s; Climatiq %s; Altruistiq %s\n", mode, describeCQ(), describeAQ())
	for _, n := range skipNotes {
		fmt.Println("acceptance:", n)
	}
	code := m.Run()

	// Whatever the steps left behind, marked with this run's markers, goes.
	if cqTarget != nil {
		sweepLeftovers()
	}
	ledger.print(os.Stdout)
	path := os.Getenv(reportVar)
	if path == "" {
		path = filepath.Join(os.TempDir(), "carbon-acceptance-report.md")
	}
	if err := report.write(path, mode); err != nil {
		fmt.Fprintln(os.Stderr, "acceptance: writing the report:", err)
		code = 1
	} else {
		fmt.Println("acceptance: report of what the services answered written to", path)
	}
	if code != 0 {
		if log, err := os.ReadFile(vault.LogPath); err == nil {
			fmt.Fprintf(os.Stderr, "---- vault server log (last 40 lines) ----\n%s\n", tail(string(log), 40))
		}
	}
	return code, nil
}

func describeCQ() string {
	if cqTarget == nil {
		return "not configured"
	}
	project := "a marked project created for the run"
	if cqTarget.projectID != "" {
		project = "project " + cqTarget.projectID
	}
	return cqTarget.managementURL + " (" + project + ")"
}

func describeAQ() string {
	if aqTarget == nil {
		return "not configured"
	}
	return aqTarget.tokenURL
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
