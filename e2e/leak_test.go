package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/leakcheck"
)

// TestNoSecretInLogs runs the whole flow on a Vault server at trace log
// level with a file audit device, then searches the server log (which
// carries the plugin's log) and the audit log for every secret involved:
// the management key, the client secret, every issued key and token, in
// every form a leak could take (see secretForms). Vault HMACs secrets in
// the audit log by default; the test keeps it so.
func TestNoSecretInLogs(t *testing.T) {
	s := startVault(t, "leak", "trace")
	auditLog := filepath.Join(filepath.Dir(s.LogPath), "audit.log")
	run := func(args ...string) string {
		t.Helper()
		out, err := s.Vault(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	read := func(args ...string) *api.Secret {
		t.Helper()
		out := run(args...)
		secret := new(api.Secret)
		if err := json.Unmarshal([]byte(out), secret); err != nil {
			t.Fatalf("decoding: %v", err)
		}
		return secret
	}
	secrets := []string{managementKey, atqClientSecret}
	keep := func(v any) {
		if str, ok := v.(string); ok && str != "" {
			secrets = append(secrets, str)
		}
	}

	run("audit", "enable", "file", "file_path="+auditLog)
	run("write", mount+"/config/cq", "provider=climatiq", "management_key="+managementKey,
		"management_url="+climatiqFake.ManagementURL(), "api_url="+climatiqFake.APIURL())
	run("write", mount+"/config/aq", "provider=altruistiq", "client_id="+atqClientID, "client_secret="+atqClientSecret,
		"token_url="+altruistiqFake.TokenURL(), "api_url="+altruistiqFake.APIURL())
	if _, err := s.Vault("write", mount+"/config/wrong", "provider=climatiq", "management_key="+wrongManagement,
		"management_url="+climatiqFake.ManagementURL(), "api_url="+climatiqFake.APIURL()); err == nil {
		t.Fatal("a wrong management key was accepted")
	}
	secrets = append(secrets, wrongManagement)
	run("write", mount+"/roles/ci", "config=cq", "project_id="+projectID, "ttl=1h", "max_ttl=2h")
	run("write", mount+"/roles/isolated", "config=cq", "project_per_lease=true")
	run("write", mount+"/roles/export", "config=aq")

	var leases []string
	for _, role := range []string{"ci", "ci", "isolated"} {
		c := read("read", "-format=json", mount+"/creds/"+role)
		keep(c.Data["api_key"])
		leases = append(leases, c.LeaseID)
	}
	token := read("read", "-format=json", mount+"/creds/export")
	keep(token.Data["access_token"])
	run("lease", "renew", leases[0])
	run("list", mount+"/keys")

	run("write", mount+"/static-roles/app", "config=cq", "project_id="+projectID, "rotation_period=1h", "overlap_period=1m")
	keep(read("read", "-format=json", mount+"/static-creds/app").Data["api_key"])
	run("write", "-f", mount+"/rotate-role/app")
	keep(read("read", "-format=json", mount+"/static-creds/app").Data["api_key"])
	run("read", mount+"/static-roles/app")
	run("write", mount+"/tidy", "dry_run=true")

	for _, lease := range leases {
		run("lease", "revoke", "-sync", lease)
	}
	run("lease", "revoke", "-sync", token.LeaseID)
	run("delete", mount+"/static-roles/app")
	s.Stop() // flush everything to the logs

	if len(secrets) < 9 {
		t.Fatalf("collected only %d secrets; the flow did not run", len(secrets))
	}
	var forms secretForms
	forms.add(secrets...)
	forms.addBasic(atqClientID, atqClientSecret)
	texts := readLogs(t, s, auditLog)
	if log := texts[serverLog]; !strings.Contains(log, "static-rotate") {
		t.Fatalf("the plugin's log lines are missing from %s", s.LogPath)
	}
	leaks := scanForLeaks(t, texts, forms)
	fmt.Printf("LEAK-TEST secrets=%d forms=%d files=%d leaks=%d\n", len(secrets), len(forms), len(texts), leaks)
}

// Credentials of TestNoEchoedSecretInLogs: characters that every escaping
// changes, so each form differs from the others.
const (
	echoClientID      = "e2e-echo-client"
	echoClientSecret  = `ATQ-SECRET-REFLECT-7 /+&"<é>=%?`
	echoWrongSecret   = `wrong-ATQ-s3cr3t /+&"<é>=%?`
	echoManagementKey = `CQ-MGMT-REFLECT-7/+&"<é>=%?`
	echoWrongKey      = `wrong-CQ-MGMT/+&"<é>=%?`
	typedKey          = `TYPED-MGMT-s3cr3t/+&"<é>`
	typedSecret       = `TYPED-ATQ-s3cr3t/+&"<é>`
)

// TestNoEchoedSecretInLogs drives a real Vault, through the CLI and the
// HTTP API, against fake upstreams that echo each request in their error
// answers (the Authorization header, the body, the request as JSON):
// Altruistiq with both auth styles, and Climatiq. Each refused credential
// check must answer 400 and each refused issuance 502; a secret written
// with the wrong JSON type must answer 400. No answer, Vault or plugin log
// line, or audit entry may carry any credential in any form: literal,
// query- or path-escaped, JSON-escaped, base64 (std/url, padded/raw) of
// the secret or of the Basic id:secret pair.
func TestNoEchoedSecretInLogs(t *testing.T) {
	aq := altruistiqtest.NewServer(echoClientID, echoClientSecret)
	defer aq.Close()
	aq.SetEchoRequest(true)
	cq := climatiqtest.NewServer(echoManagementKey)
	defer cq.Close()
	cq.SetEchoRequest(true)
	project := cq.AddProject("echo").ID

	s := startVault(t, "echo", "trace")
	auditLog := filepath.Join(filepath.Dir(s.LogPath), "audit.log")
	var answers []string // everything the caller saw
	vaultCLI := func(args ...string) (string, error) {
		out, err := s.Vault(args...)
		answers = append(answers, out)
		if err != nil {
			answers = append(answers, err.Error())
		}
		return out, err
	}
	mustCLI := func(args ...string) {
		t.Helper()
		if _, err := vaultCLI(args...); err != nil {
			t.Fatal(err)
		}
	}
	// refused runs a CLI command that must fail with status, and with a
	// message showing the upstream's echo arrived and was cut out.
	refused := func(status int, echoed string, args ...string) {
		t.Helper()
		_, err := vaultCLI(args...)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("Code: %d", status)) {
			t.Fatalf("vault %s: want a %d, got %v", args[0], status, err)
		}
		if !strings.Contains(err.Error(), echoed) {
			t.Fatalf("vault %s: the answer does not show the echo %s: %v", args[0], echoed, err)
		}
	}
	const withheld = "message withheld: it echoed a credential"

	mustCLI("audit", "enable", "file", "file_path="+auditLog)

	atq := func(name, tokenURL, style, secret string, extra ...string) []string {
		return append([]string{"write", mount + "/config/" + name, "provider=altruistiq", "client_id=" + echoClientID,
			"client_secret=" + secret, "token_url=" + tokenURL, "api_url=" + aq.APIURL(), "auth_style=" + style, "max_retries=0"}, extra...)
	}
	for _, style := range []struct{ name, tokenURL string }{{"params", aq.TokenURL()}, {"header", aq.PACTTokenURL()}} {
		conn := "aq-" + style.name
		// A wrong secret: the verification's 401 echoes it.
		refused(http.StatusBadRequest, withheld, atq(conn, style.tokenURL, style.name, echoWrongSecret)...)
		// The right one: saved, then echoed when issuance is refused.
		mustCLI(atq(conn, style.tokenURL, style.name, echoClientSecret)...)
		mustCLI("write", mount+"/roles/"+conn, "config="+conn)
		aq.FailNext(1, http.StatusUnauthorized)
		refused(http.StatusBadGateway, withheld, "read", mount+"/creds/"+conn)
	}

	cqConfig := func(name, key string) []string {
		return []string{"write", mount + "/config/" + name, "provider=climatiq", "management_key=" + key,
			"management_url=" + cq.ManagementURL(), "api_url=" + cq.APIURL(), "max_retries=0"}
	}
	refused(http.StatusBadRequest, "Bearer [redacted]", cqConfig("cq-echo", echoWrongKey)...)
	mustCLI(cqConfig("cq-echo", echoManagementKey)...)
	mustCLI("write", mount+"/roles/cq-echo", "config=cq-echo", "project_id="+project)
	cq.FailNext(1, http.StatusForbidden)
	refused(http.StatusBadGateway, "Bearer [redacted]", "read", mount+"/creds/cq-echo")

	// Secrets of the wrong JSON type, through the HTTP API (the CLI sends
	// strings only): on create, and on update of an existing connection.
	typed := []struct {
		path, field string
		data        map[string]any
	}{
		{"config/typed-cq", "management_key", map[string]any{"provider": "climatiq", "management_key": []any{typedKey, "second"},
			"management_url": cq.ManagementURL(), "api_url": cq.APIURL()}},
		{"config/typed-aq", "client_secret", map[string]any{"provider": "altruistiq", "client_id": echoClientID,
			"client_secret": map[string]any{"value": typedSecret}, "token_url": aq.TokenURL(), "api_url": aq.APIURL()}},
		{"config/cq-echo", "management_key", map[string]any{"management_key": map[string]any{"key": typedKey}}},
		{"config/aq-params", "client_secret", map[string]any{"client_secret": []any{typedSecret}}},
	}
	for _, tc := range typed {
		_, err := s.Client.Logical().Write(mount+"/"+tc.path, tc.data)
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
			t.Fatalf("write %s with a mistyped %s: want a 400, got %v", tc.path, tc.field, err)
		}
		msg := strings.Join(re.Errors, "; ")
		answers = append(answers, msg)
		if !strings.Contains(msg, tc.field+": must be a JSON string") {
			t.Fatalf("write %s: the 400 does not name %s and the fix: %s", tc.path, tc.field, msg)
		}
	}
	// The connections kept their secrets: issuance still reaches the
	// upstreams with them.
	mustCLI("read", mount+"/creds/aq-params")
	mustCLI("read", mount+"/creds/cq-echo")
	s.Stop() // flush everything to the logs

	var forms secretForms
	forms.add(echoClientSecret, echoWrongSecret, echoManagementKey, echoWrongKey, typedKey, typedSecret)
	for _, secret := range []string{echoClientSecret, echoWrongSecret, typedSecret} {
		forms.addBasic(echoClientID, secret)
	}
	texts := readLogs(t, s, auditLog)
	texts["answers to the caller"] = strings.Join(answers, "\n")
	if strings.Contains(texts[serverLog], "error converting input") {
		t.Error("the Vault log carries the framework's parse error of a mistyped secret")
	}
	// A 502's error goes into the audit entry unhashed (a 400's message is
	// HMAC'd with the response data).
	if !strings.Contains(texts[auditLogName], withheld) {
		t.Fatal("the audit log lacks the refused issuances' errors")
	}
	leaks := scanForLeaks(t, texts, forms)
	fmt.Printf("ECHO-LEAK-TEST forms=%d texts=%d leaks=%d\n", len(forms), len(texts), leaks)
}

const (
	serverLog    = "vault server and plugin log"
	auditLogName = "audit log"
)

// readLogs reads the server log (which carries the plugin's) and the
// audit log; neither may be empty.
func readLogs(t *testing.T, s *devvault.Server, auditLog string) map[string]string {
	t.Helper()
	texts := map[string]string{}
	for what, path := range map[string]string{serverLog: s.LogPath, auditLogName: auditLog} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("%s is empty", what)
		}
		texts[what] = string(data)
	}
	return texts
}

// secretForms are the forms of the secrets a test must not leak
// (internal/leakcheck): literal, query- and path-escaped, JSON-escaped,
// base64 std/url, padded and raw; for client secrets also the base64 of
// the Basic pair id:secret.
type secretForms []leakcheck.Form

func (f *secretForms) add(secrets ...string) {
	for _, s := range secrets {
		f.named(s, leakcheck.Encodings(s))
	}
}

func (f *secretForms) addBasic(id, secret string) {
	f.named(secret, leakcheck.BasicEncodings(id, secret))
}

// named keeps forms under a name that identifies the secret without
// showing it.
func (f *secretForms) named(secret string, forms []leakcheck.Form) {
	for _, form := range forms {
		*f = append(*f, leakcheck.Form{
			Name: fmt.Sprintf("%s of a secret of %d characters starting %q", form.Name, len(secret), secret[:4]),
			Text: form.Text,
		})
	}
}

// scanForLeaks reports every form found in every text and returns how many
// it found.
func scanForLeaks(t *testing.T, texts map[string]string, forms secretForms) int {
	t.Helper()
	leaks := 0
	for what, text := range texts {
		for _, name := range leakcheck.Find(text, forms) {
			leaks++
			t.Errorf("%s carries the %s", what, name)
		}
	}
	return leaks
}
