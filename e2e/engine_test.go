package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// keyWorks asks the fake's regular API whether an issued key is accepted.
func keyWorks(t *testing.T, apiKey string) bool {
	t.Helper()
	c, err := climatiq.New(climatiq.Options{
		ManagementURL: climatiqFake.ManagementURL(), APIURL: climatiqFake.APIURL(), ManagementKey: "unused",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.CheckKey(context.Background(), apiKey) == nil
}

func TestPluginRegisteredWithVersion(t *testing.T) {
	out := cli(t, "secrets", "list", "-detailed")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, mount+"/") {
			if !strings.Contains(line, pluginVersion) || !strings.Contains(line, "carbon") {
				t.Fatalf("mount line lacks plugin name or version %s: %s", pluginVersion, line)
			}
			return
		}
	}
	t.Fatalf("mount %s/ not listed:\n%s", mount, out)
}

func TestClimatiqIssueUseRevoke(t *testing.T) {
	writeClimatiqConfig(t, "cq-life")
	cli(t, "write", mount+"/roles/life", "config=cq-life", "project_id="+projectID, "ttl=1h", "max_ttl=2h")

	secret := cliJSON(t, "read", "-format=json", mount+"/creds/life")
	apiKey, _ := secret.Data["api_key"].(string)
	keyID, _ := secret.Data["key_id"].(string)
	if apiKey == "" || keyID == "" || secret.LeaseID == "" || !secret.Renewable || secret.LeaseDuration != 3600 {
		t.Fatalf("creds answer incomplete: %+v", secret)
	}
	if !keyWorks(t, apiKey) {
		t.Fatal("issued key is refused by the regular API")
	}

	cli(t, "lease", "revoke", "-sync", secret.LeaseID)
	if _, ok := climatiqFake.Key(keyID); ok {
		t.Fatal("key still exists upstream after revoke")
	}
	if keyWorks(t, apiKey) {
		t.Fatal("revoked key still works")
	}
}

func TestClimatiqShortLeaseExpires(t *testing.T) {
	writeClimatiqConfig(t, "cq-short")
	cli(t, "write", mount+"/roles/short", "config=cq-short", "project_id="+projectID, "ttl=2s", "max_ttl=2s")
	secret := cliJSON(t, "read", "-format=json", mount+"/creds/short")
	keyID := secret.Data["key_id"].(string)
	if _, ok := climatiqFake.Key(keyID); !ok {
		t.Fatal("key not created upstream")
	}
	eventually(t, 20*time.Second, "expired lease's key deleted upstream", func() bool {
		_, ok := climatiqFake.Key(keyID)
		return !ok
	})
}

func TestClimatiqRenewStopsAtMaxTTL(t *testing.T) {
	writeClimatiqConfig(t, "cq-renew")
	cli(t, "write", mount+"/roles/renew", "config=cq-renew", "project_id="+projectID, "ttl=20s", "max_ttl=30s")
	issued := time.Now()
	secret := cliJSON(t, "read", "-format=json", mount+"/creds/renew")

	renewed := cliJSON(t, "lease", "renew", "-format=json", "-increment=20s", secret.LeaseID)
	if renewed.LeaseDuration < 18 || renewed.LeaseDuration > 20 {
		t.Fatalf("first renew granted %ds, want 20s", renewed.LeaseDuration)
	}
	time.Sleep(12 * time.Second)
	// 12s into a 30s max_ttl: asking for 20s more must grant at most the ~18s left.
	renewed = cliJSON(t, "lease", "renew", "-format=json", "-increment=20s", secret.LeaseID)
	// What is left of max_ttl, measured: a loaded machine renews late.
	left := 30 - int(time.Since(issued).Seconds())
	if renewed.LeaseDuration > 18 || renewed.LeaseDuration < left-2 {
		t.Fatalf("renew past max_ttl granted %ds, want at most the %ds left of max_ttl (and at most 18s)", renewed.LeaseDuration, left)
	}
	// Vault says the TTL was capped; the engine must not say it again.
	capped := 0
	for _, w := range renewed.Warnings {
		if strings.Contains(w, "max_ttl") {
			capped++
		}
	}
	if capped != 1 {
		t.Fatalf("renew past max_ttl warned %d times of the cap, want once: %q", capped, renewed.Warnings)
	}
	cli(t, "lease", "revoke", "-sync", secret.LeaseID)
}

func TestAltruistiqTokenWorks(t *testing.T) {
	writeAltruistiqConfig(t, "aq", "scopes=read")
	cli(t, "write", mount+"/roles/atq-export", "config=aq", "ttl=1h")

	first := cliJSON(t, "read", "-format=json", mount+"/creds/atq-export")
	token, _ := first.Data["access_token"].(string)
	expiresAt, err := time.Parse(time.RFC3339, first.Data["expires_at"].(string))
	if err != nil || token == "" || first.Data["token_type"] != "Bearer" {
		t.Fatalf("token answer incomplete: %+v (%v)", first.Data, err)
	}
	if first.Renewable || time.Now().Add(time.Duration(first.LeaseDuration)*time.Second).After(expiresAt.Add(time.Second)) {
		t.Fatalf("lease (%ds, renewable=%v) outlives the token (expires %s)", first.LeaseDuration, first.Renewable, expiresAt)
	}
	c, err := altruistiq.New(altruistiq.Options{
		TokenURL: altruistiq.DefaultTokenURL, APIURL: altruistiqFake.APIURL(), ClientID: "unused", ClientSecret: "unused",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.CheckToken(context.Background(), token); err != nil {
		t.Fatalf("issued token refused by the API: %v", err)
	}

	second := cliJSON(t, "read", "-format=json", mount+"/creds/atq-export")
	if second.Data["access_token"] != token {
		t.Fatal("a second read fetched a new token instead of sharing the cached one")
	}
	// Rewriting the connection drops the cached token.
	writeAltruistiqConfig(t, "aq", "scopes=read")
	third := cliJSON(t, "read", "-format=json", mount+"/creds/atq-export")
	if third.Data["access_token"] == token {
		t.Fatal("rewriting the connection kept serving the old token")
	}
	cli(t, "lease", "revoke", "-sync", first.LeaseID)
}

func TestConfigReadShowsNoSecret(t *testing.T) {
	writeClimatiqConfig(t, "cq-read")
	writeAltruistiqConfig(t, "aq-read")
	for _, name := range []string{"cq-read", "aq-read"} {
		secret := cliJSON(t, "read", "-format=json", mount+"/config/"+name)
		raw, _ := json.Marshal(secret.Data)
		for _, s := range []string{managementKey, atqClientSecret} {
			if strings.Contains(string(raw), s) {
				t.Fatalf("config/%s read returns a secret: %s", name, raw)
			}
		}
		if _, ok := secret.Data["provider"]; !ok {
			t.Fatalf("config/%s read lacks its settings: %s", name, raw)
		}
	}
}

func TestWrongManagementKeyRefused(t *testing.T) {
	out, err := vault.Vault("write", mount+"/config/cq-wrong",
		"provider=climatiq", "management_key="+wrongManagement,
		"management_url="+climatiqFake.ManagementURL(), "api_url="+climatiqFake.APIURL())
	if err == nil {
		t.Fatalf("config with a wrong management key was accepted: %s", out)
	}
	msg := err.Error()
	if !strings.Contains(msg, "Code: 400") || !strings.Contains(msg, "401") || !strings.Contains(msg, "verify_connection") {
		t.Fatalf("refusal lacks the 400, the upstream 401 or the field: %s", msg)
	}
	if strings.Contains(msg, wrongManagement) {
		t.Fatalf("refusal echoes the key: %s", msg)
	}
}

func TestPathHelpAndOpenAPI(t *testing.T) {
	help := cli(t, "path-help", mount+"/config/x")
	for _, want := range []string{"management_key", "verify_connection", "rate_limit", "rotate"} {
		if !strings.Contains(help, want) {
			t.Errorf("path-help for config lacks %q", want)
		}
	}
	spec, err := vault.Client.Logical().Read("sys/internal/specs/openapi")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(spec.Data["paths"])
	for _, p := range []string{"/" + mount + "/config/{name}", "/" + mount + "/roles/{name}", "/" + mount + "/creds/{role}"} {
		if !strings.Contains(string(raw), `"`+p+`"`) {
			t.Errorf("OpenAPI document lacks %s", p)
		}
	}
	// Paths without their name have no operations to show.
	for _, p := range []string{"/" + mount + "/creds", "/" + mount + "/static-creds", "/" + mount + "/rotate-root/{name}"} {
		if strings.Contains(string(raw), `"`+p+`"`) {
			t.Errorf("OpenAPI document shows %s, which has no operations", p)
		}
	}
	// Reads and issuance carry response schemas.
	schemas, _ := json.Marshal(spec.Data["components"])
	for _, want := range []string{"CarbonGenerateCredentialsResponse", "access_token", "CarbonRequestStaticRoleCredentialsResponse", "rotation_period"} {
		if !strings.Contains(string(schemas), want) {
			t.Errorf("OpenAPI components lack %s (response schemas of reads)", want)
		}
	}
	out, err := vault.Vault("write", "-f", mount+"/rotate-root/anything")
	if err == nil || !strings.Contains(err.Error()+out, "Code: 400") || !strings.Contains(err.Error(), "config/") {
		t.Errorf("rotate-root: %v %s, want a 400 saying to write config/", err, out)
	}
}

// TestRevokePrefixUnderTransientFailures: 60 leases revoked by one
// `vault lease revoke -sync -prefix` while 30 % of the upstream's answers
// are 503s (and the connection allows one retry per request): the command
// succeeds and every key is gone upstream, none left to Vault's later retry.
func TestRevokePrefixUnderTransientFailures(t *testing.T) {
	writeClimatiqConfig(t, "cq-flaky", "max_retries=1")
	cli(t, "write", mount+"/roles/flaky", "config=cq-flaky", "project_id="+projectID, "ttl=1h")
	var ids []string
	for range 60 {
		ids = append(ids, cliJSON(t, "read", "-format=json", mount+"/creds/flaky").Data["key_id"].(string))
	}
	climatiqFake.SetFailureRate(0.3)
	defer climatiqFake.SetFailureRate(0)
	failuresBefore := climatiqFake.Stats().Failures
	began := time.Now()
	cli(t, "lease", "revoke", "-sync", "-prefix", mount+"/creds/flaky")
	t.Logf("60 leases revoked in %s; the upstream failed %d requests meanwhile", time.Since(began).Round(time.Millisecond), climatiqFake.Stats().Failures-failuresBefore)
	for _, id := range ids {
		if _, ok := climatiqFake.Key(id); ok {
			t.Errorf("key %s is still upstream after the revoke command succeeded", id)
		}
	}
}

// TestUpstreamRequestsSayWhoCalls: through a real Vault, the upstream sees
// a User-Agent in the SDK's plugin form, naming Vault's version and this
// plugin's release.
func TestUpstreamRequestsSayWhoCalls(t *testing.T) {
	writeClimatiqConfig(t, "cq-agent")
	cli(t, "write", mount+"/roles/agent", "config=cq-agent", "project_id="+projectID, "ttl=1h")
	lease := cliJSON(t, "read", "-format=json", mount+"/creds/agent").LeaseID
	ua := climatiqFake.LastUserAgent()
	cli(t, "lease", "revoke", "-sync", lease)
	version := strings.Trim(strings.Fields(cli(t, "version"))[1], "v,") // "Vault v1.21.0, built …"
	for _, want := range []string{"Vault/", version, "(+https://www.vaultproject.io/; vault-plugin-carbon/" + pluginVersion + ";"} {
		if !strings.Contains(ua, want) {
			t.Fatalf("upstream saw User-Agent %q, want it to contain %q", ua, want)
		}
	}
}

// TestUpstreamWaitsEndBeforeTheCallerGivesUp: Vault does not pass its
// request deadline to a plugin, so the engine bounds its own waits. A
// rate_limit that would hold an issuance for hours answers a 504 naming
// rate_limit at once; a 429 asking to wait 100000 s is waited out only up
// to its 30 s cap, inside the CLI's 60 s, and the issuance succeeds.
func TestUpstreamWaitsEndBeforeTheCallerGivesUp(t *testing.T) {
	writeClimatiqConfig(t, "cq-paced", "rate_limit=0.0001") // verify_connection takes the one request allowed
	cli(t, "write", mount+"/roles/paced", "config=cq-paced", "project_id="+projectID, "ttl=1h")
	began := time.Now()
	_, err := vault.Vault("read", "-format=json", mount+"/creds/paced")
	if err == nil || !strings.Contains(err.Error(), "504") || !strings.Contains(err.Error(), "rate_limit") || time.Since(began) > 10*time.Second {
		t.Fatalf("issuance held by rate_limit=0.0001: after %s: %v; want a 504 naming rate_limit at once", time.Since(began), err)
	}

	writeClimatiqConfig(t, "cq-retry-after")
	cli(t, "write", mount+"/roles/retry-after", "config=cq-retry-after", "project_id="+projectID, "ttl=1h")
	climatiqFake.SetRetryAfter(100000 * time.Second)
	defer climatiqFake.SetRetryAfter(0)
	climatiqFake.FailNext(1, http.StatusTooManyRequests)
	began = time.Now()
	lease := cliJSON(t, "read", "-format=json", mount+"/creds/retry-after").LeaseID
	if took := time.Since(began); took > 45*time.Second {
		t.Fatalf("issuance after a 429 with Retry-After: 100000 took %s, want the 30 s cap", took)
	}
	cli(t, "lease", "revoke", "-sync", lease)
}

// TestUpstreamThatKeepsRateLimitingIsA503: an upstream that answers every
// request with 429 and Retry-After: 100000 ends a config write's check and
// an issuance, each after one capped wait, in a 503 that names the upstream
// and the wait it asked for, well inside the CLI's 60 s.
func TestUpstreamThatKeepsRateLimitingIsA503(t *testing.T) {
	writeClimatiqConfig(t, "cq-throttled")
	cli(t, "write", mount+"/roles/throttled", "config=cq-throttled", "project_id="+projectID, "ttl=1h")
	climatiqFake.SetRetryAfter(100000 * time.Second)
	climatiqFake.FailNext(1000, http.StatusTooManyRequests)
	defer func() {
		climatiqFake.FailNext(0, 0)
		climatiqFake.SetRetryAfter(0)
	}()

	requests := map[string][]string{ // run at once: each waits out one capped Retry-After
		"issuance":     {"read", "-format=json", mount + "/creds/throttled"},
		"config write": {"write", mount + "/config/cq-throttled-2", "provider=climatiq", "management_key=" + managementKey, "management_url=" + climatiqFake.ManagementURL(), "api_url=" + climatiqFake.APIURL()},
	}
	type outcome struct {
		what string
		err  error
		took time.Duration
	}
	done := make(chan outcome, len(requests))
	for what, args := range requests {
		go func() {
			began := time.Now()
			_, err := vault.Vault(args...)
			done <- outcome{what, err, time.Since(began)}
		}()
	}
	for range requests {
		o := <-done
		if o.err == nil {
			t.Fatalf("%s against an upstream that only rate-limits succeeded", o.what)
		}
		msg := o.err.Error()
		for _, want := range []string{"Code: 503", "climatiq", "Retry-After: 100000", "try again later"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: the answer lacks %q: %s", o.what, want, msg)
			}
		}
		if o.took > 45*time.Second {
			t.Errorf("%s took %s, want one capped wait (30 s) and an answer inside the CLI's 60 s", o.what, o.took)
		}
	}
}

// TestUpstreamAnsweringHTMLIsNamedAsSuch: a management_url or token_url
// that answers 200 with a web page (a portal, a proxy's login page) is not
// saved as verified; the 400 says the URL answered, but not as the API
// does, and carries no secret.
func TestUpstreamAnsweringHTMLIsNamedAsSuch(t *testing.T) {
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<!doctype html><html><body><h1>Sign in</h1></body></html>")
	}))
	defer page.Close()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"climatiq management_url", []string{"provider=climatiq", "management_key=" + managementKey, "management_url=" + page.URL + "/management", "api_url=" + page.URL},
			"answered, but not as the climatiq API does"},
		{"altruistiq token_url", []string{"provider=altruistiq", "client_id=" + atqClientID, "client_secret=" + atqClientSecret, "token_url=" + page.URL + "/oauth/token", "api_url=" + page.URL},
			"answered, but not as the altruistiq API does"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("%s/config/html-%d", mount, i)
			_, err := vault.Vault(append([]string{"write", path}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), "Code: 400") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("a web page as the upstream: %v; want a 400 saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), managementKey) || strings.Contains(err.Error(), atqClientSecret) {
				t.Fatalf("the refusal carries a secret: %v", err)
			}
			if _, err := vault.Vault("read", path); err == nil {
				t.Fatal("the connection was saved")
			}
		})
	}
}
