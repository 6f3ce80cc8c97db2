package carbon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

func TestConfigCRUD(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", map[string]any{"rate_limit": 50.0, "request_timeout": "10s"})
	e.writeAltruistiqConfig("aq", map[string]any{"scopes": "read,write", "auth_style": "params"})

	tests := []struct {
		name string
		want map[string]any
	}{
		{"cq", map[string]any{
			"provider": "climatiq", "management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL(),
			"request_timeout": int64(10), "max_retries": 1, "rate_limit": 50.0, "tidy_interval": int64(0),
			"verify_connection": true, "verify_issued_keys": false,
		}},
		{"aq", map[string]any{
			"provider": "altruistiq", "client_id": testClientID, "token_url": e.altruistiq.TokenURL(),
			"api_url": e.altruistiq.APIURL(), "auth_style": "params", "scopes": []string{"read", "write"},
			"request_timeout": int64(30), "max_retries": 3, "rate_limit": 0.0, "verify_connection": true,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.mustOK(logical.ReadOperation, "config/"+tc.name, nil)
			if !reflect.DeepEqual(resp.Data, tc.want) {
				t.Fatalf("read config/%s:\n got %#v\nwant %#v", tc.name, resp.Data, tc.want)
			}
			assertNoSecrets(t, fmt.Sprint(resp.Data))
		})
	}

	list := e.mustOK(logical.ListOperation, "config/", nil)
	if got := list.Data["keys"]; !reflect.DeepEqual(got, []string{"aq", "cq"}) {
		t.Fatalf("list = %v", got)
	}

	// Update keeps what the request does not mention.
	e.mustOK(logical.UpdateOperation, "config/cq", map[string]any{"max_retries": 5})
	resp := e.mustOK(logical.ReadOperation, "config/cq", nil)
	if resp.Data["max_retries"] != 5 || resp.Data["rate_limit"] != 50.0 {
		t.Fatalf("update did not merge: %v", resp.Data)
	}

	e.mustOK(logical.DeleteOperation, "config/aq", nil)
	if resp := e.do(logical.ReadOperation, "config/aq", nil); resp != nil {
		t.Fatalf("deleted config still readable: %v", resp.Data)
	}
}

func TestConfigVerifyConnection(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name  string
		data  map[string]any
		field string
	}{
		{"wrong management key", map[string]any{
			"provider": "climatiq", "management_key": "wrong", "management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL(),
		}, "401"},
		{"wrong client secret", map[string]any{
			"provider": "altruistiq", "client_id": testClientID, "client_secret": "wrong", "token_url": e.altruistiq.TokenURL(), "api_url": e.altruistiq.APIURL(),
		}, "401"},
		{"header auth on a body-credentials host", map[string]any{
			"provider": "altruistiq", "client_id": testClientID, "client_secret": testClientSecret, "auth_style": "header",
			"token_url": e.altruistiq.TokenURL(), "api_url": e.altruistiq.APIURL(),
		}, "verify_connection"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.mustFail(logical.CreateOperation, "config/bad", tc.data, tc.field)
			resp := e.do(logical.CreateOperation, "config/bad", tc.data)
			if msg := resp.Error().Error(); strings.Contains(msg, "wrong") || strings.Contains(msg, testClientSecret) {
				t.Fatalf("error echoes a secret: %q", msg)
			}
			if e.do(logical.ReadOperation, "config/bad", nil) != nil {
				t.Fatal("a config that failed verification was stored")
			}
		})
	}

	// verify_connection=false stores it anyway.
	data := tests[0].data
	data["verify_connection"] = false
	e.mustOK(logical.CreateOperation, "config/unchecked", data)

	// PACT-style hosts take HTTP Basic.
	e.mustOK(logical.CreateOperation, "config/pact", map[string]any{
		"provider": "altruistiq", "client_id": testClientID, "client_secret": testClientSecret, "auth_style": "header",
		"token_url": e.altruistiq.PACTTokenURL(), "api_url": e.altruistiq.APIURL(),
	})
}

func TestConfigValidation(t *testing.T) {
	e := newTestEnv(t)
	cq := func(extra map[string]any) map[string]any {
		d := map[string]any{"provider": "climatiq", "management_key": testManagementKey,
			"management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL()}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	tests := []struct {
		name  string
		path  string
		data  map[string]any
		field string
	}{
		{"missing provider", "config/x", map[string]any{"management_key": "k"}, "provider"},
		{"unknown provider", "config/x", map[string]any{"provider": "watttime"}, "provider"},
		{"missing management key", "config/x", map[string]any{"provider": "climatiq"}, "management_key"},
		{"missing client id", "config/x", map[string]any{"provider": "altruistiq", "client_secret": "s"}, "client_id"},
		{"missing client secret", "config/x", map[string]any{"provider": "altruistiq", "client_id": "i"}, "client_secret"},
		{"altruistiq field on climatiq", "config/x", cq(map[string]any{"client_secret": "s"}), "client_secret"},
		{"climatiq field on altruistiq", "config/x", map[string]any{"provider": "altruistiq", "client_id": "i", "client_secret": "s", "management_key": "k"}, "management_key"},
		{"http to remote host", "config/x", cq(map[string]any{"management_url": "http://example.com/m"}), "management_url"},
		{"ftp scheme", "config/x", cq(map[string]any{"api_url": "ftp://127.0.0.1/"}), "api_url"},
		{"relative url", "config/x", cq(map[string]any{"api_url": "/just/a/path"}), "api_url"},
		{"credentials in url", "config/x", cq(map[string]any{"api_url": "https://user:pw@example.com"}), "api_url"},
		{"bad auth style", "config/x", map[string]any{"provider": "altruistiq", "client_id": "i", "client_secret": "s", "auth_style": "digest"}, "auth_style"},
		{"timeout too small", "config/x", cq(map[string]any{"request_timeout": "0s"}), "request_timeout"},
		{"timeout too large", "config/x", cq(map[string]any{"request_timeout": "1h"}), "request_timeout"},
		{"negative retries", "config/x", cq(map[string]any{"max_retries": -1}), "max_retries"},
		{"negative rate limit", "config/x", cq(map[string]any{"rate_limit": -2.5}), "rate_limit"},
		{"rate limit not a number", "config/x", cq(map[string]any{"rate_limit": "NaN"}), "rate_limit: must be between"},
		{"tidy interval too short", "config/x", cq(map[string]any{"tidy_interval": "10s"}), "tidy_interval"},
		{"tidy interval beyond ten years", "config/x", cq(map[string]any{"tidy_interval": "87601h"}), "tidy_interval: must be at most 87600h"},
		{"scope with a space", "config/x", map[string]any{"provider": "altruistiq", "client_id": "i", "client_secret": "s", "scopes": "read write"}, "scopes: \"read write\" is not one OAuth scope"},
		{"invalid name", "config/bad name!", cq(nil), "name"},
		{"nested name", "config/a/b", cq(nil), "name"},
		{"empty name", "config/", cq(nil), "name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.mustFail(logical.UpdateOperation, tc.path, tc.data, tc.field)
		})
	}

	// The provider of an existing connection cannot change.
	e.writeClimatiqConfig("cq", nil)
	e.mustFail(logical.UpdateOperation, "config/cq", map[string]any{"provider": "altruistiq"}, "provider")
}

func TestConfigDeleteRefusedWhileInUse(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustFail(logical.DeleteOperation, "config/cq", nil, "ci")

	resp := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	e.mustOK(logical.DeleteOperation, "roles/ci", nil)
	// The live key still needs the connection to be revoked.
	e.mustFail(logical.DeleteOperation, "config/cq", nil, "live keys")
	if _, err := e.revoke(resp.Secret); err != nil {
		t.Fatal(err)
	}
	e.mustOK(logical.DeleteOperation, "config/cq", nil)
}

// TestConfigMistypedSecret: a secret written with the wrong JSON type is
// refused with a 400 that names the field and the fix, and no answer,
// existence-check error or log line carries the value. The framework's own
// parse error quotes it, so the check runs before the framework parses.
func TestConfigMistypedSecret(t *testing.T) {
	const marker = "MISTYPED-S3CR3T-9"
	values := []struct {
		name  string
		value any
		text  []string // what the value would show as
		got   string
	}{
		{"array", []any{marker, "second"}, []string{marker, "second"}, "an array"},
		{"object", map[string]any{"key": marker}, []string{marker}, "an object"},
		{"number", json.Number("31415926535"), []string{"31415926535"}, "a number"},
		{"go number", 27182818284, []string{"27182818284"}, "a number"},
		{"float", 1.6180339887, []string{"1.6180339887"}, "a number"},
		{"bool", true, []string{"true"}, "a boolean"},
	}
	for _, field := range []string{"management_key", "client_secret"} {
		for _, v := range values {
			for _, existing := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/existing=%v", field, v.name, existing)
				t.Run(name, func(t *testing.T) {
					e := newTestEnv(t)
					data := map[string]any{"provider": "climatiq", "management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL()}
					if field == "client_secret" {
						data = map[string]any{"provider": "altruistiq", "client_id": testClientID, "token_url": e.altruistiq.TokenURL(), "api_url": e.altruistiq.APIURL()}
					}
					if existing {
						if field == "client_secret" {
							e.writeAltruistiqConfig("x", nil)
						} else {
							e.writeClimatiqConfig("x", nil)
						}
					}
					data[field] = v.value
					req := &logical.Request{Operation: logical.UpdateOperation, Path: "config/x", Data: data, Storage: e.storage}
					checked, exists, err := e.b.HandleExistenceCheck(context.Background(), req)
					if err != nil || !checked || exists != existing {
						t.Fatalf("existence check: %v %v %v; want checked, exists=%v and no error (Vault logs it at ERROR)", checked, exists, err, existing)
					}
					if !reflect.DeepEqual(req.Data[field], v.value) {
						t.Fatal("the existence check changed the request's data")
					}
					if !exists {
						req.Operation = logical.CreateOperation
					}
					resp, err := e.b.HandleRequest(context.Background(), req)
					if status := statusOf(resp, err); status != http.StatusBadRequest {
						t.Fatalf("status %d (%v, %v), want 400", status, resp, err)
					}
					msg := resp.Error().Error()
					if !strings.Contains(msg, field+": must be a JSON string, not "+v.got) {
						t.Fatalf("message %q does not name %s and what it got", msg, field)
					}
					for _, text := range append(v.text, fmt.Sprint(v.value)) {
						if strings.Contains(msg, text) {
							t.Fatalf("the value %q shows in the answer %q", text, msg)
						}
					}
					// Nothing changed: a new connection is not created, an
					// existing one keeps its secret.
					cfg, err := getConnectionConfig(context.Background(), e.storage, "x")
					switch {
					case err != nil:
						t.Fatal(err)
					case !existing && cfg != nil:
						t.Fatal("the connection was created")
					case existing && cfg.ManagementKey != testManagementKey && cfg.ClientSecret != testClientSecret:
						t.Fatalf("the stored secret changed: %+v", cfg)
					}
				})
			}
		}
	}
}

// TestConfigDeleteResolvesPendingRollbacksOrNamesWhatItAbandons: a delete
// rolls back the connection's pending WAL entries at once when the
// upstream answers; when it does not, the delete is refused with the
// cause, and abandon_rollbacks=true deletes the connection anyway, naming
// each entry's key names and the carbon-sweep command for them (sparing
// the connection's released keys), with no secret in the answer.
func TestConfigDeleteResolvesPendingRollbacksOrNamesWhatItAbandons(t *testing.T) {
	strand := func(e *testEnv, name string) climatiq.APIKey {
		k := e.climatiq.AddKey(e.projectID, name)
		if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey,
			&ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: k.Name}); err != nil {
			t.Fatal(err)
		}
		return k
	}
	t.Run("upstream answers: rolled back, then deleted", func(t *testing.T) {
		e := newTestEnv(t)
		e.writeClimatiqConfig("cq", nil)
		stranded := strand(e, "vault-abcdefgh-1700000000-nonce1-ci")
		if resp := e.mustOK(logical.DeleteOperation, "config/cq", nil); resp != nil {
			t.Fatalf("delete answered %v, want nothing", resp.Data)
		}
		if e.upstreamHas(stranded.ID) {
			t.Fatal("the stranded key survived the delete's rollback")
		}
	})
	t.Run("upstream gone: refused, then abandoned with a sweep command", func(t *testing.T) {
		e := newTestEnv(t)
		e.writeClimatiqConfig("cq", nil)
		stranded := strand(e, "vault-abcdefgh-1700000000-nonce1-ci")
		if err := releaseKey(context.Background(), e.storage, &ownedKey{Config: "cq", KeyID: "key_released", KeyName: "vault-abcdefgh-1700000000-rel000-app"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		e.climatiq.FailNext(1000, http.StatusServiceUnavailable)
		e.mustFail(logical.DeleteOperation, "config/cq", nil, "abandon_rollbacks=true")
		e.mustFail(logical.UpdateOperation, "config/cq", map[string]any{"abandon_rollbacks": true}, "abandon_rollbacks: only applies to deleting")

		resp := e.mustOK(logical.DeleteOperation, "config/cq", map[string]any{"abandon_rollbacks": true})
		list, _ := resp.Data["abandoned_rollbacks"].([]map[string]any)
		if len(list) != 1 || len(resp.Warnings) != 1 {
			t.Fatalf("abandoning delete answered %v (warnings %v), want one abandoned rollback and a warning", resp.Data, resp.Warnings)
		}
		sweep := list[0]["sweep"].(string)
		for _, want := range []string{"carbon-sweep", "-marker", "-name " + stranded.Name, "-keep vault-abcdefgh-1700000000-rel000-app", "-management-url " + e.climatiq.ManagementURL()} {
			if !strings.Contains(sweep, want) {
				t.Errorf("sweep command %q lacks %q", sweep, want)
			}
		}
		if !strings.Contains(list[0]["covers"].(string), stranded.Name) || strings.Contains(fmt.Sprint(resp.Data, resp.Warnings), testManagementKey) {
			t.Fatalf("abandoned rollback %v: want it to name %s and never the management key", list[0], stranded.Name)
		}
		if cfg, _ := getConnectionConfig(context.Background(), e.storage, "cq"); cfg != nil {
			t.Fatal("the connection survived its abandoning delete")
		}
		if ids, _ := framework.ListWAL(context.Background(), e.storage); len(ids) != 0 {
			t.Fatalf("%d WAL entries left after they were abandoned", len(ids))
		}
	})
}

// TestRepointCheckSeesEveryRoleWhenOneIsDeletedMidway: a role deleted while
// the re-point check reads the roles is skipped, not taken for the end of
// the list: the projects of the roles after it still hold the change back.
func TestRepointCheckSeesEveryRoleWhenOneIsDeletedMidway(t *testing.T) {
	s := newHookStorage()
	e := newTestEnvWithStorage(t, s)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("a-gone", map[string]any{"config": "cq", "project_id": e.projectID})
	e.writeRole("b-stays", map[string]any{"config": "cq", "project_id": e.projectID})
	other := climatiqtest.NewServer("other-account-key")
	t.Cleanup(other.Close)
	other.AddProject("elsewhere")

	s.setHook(func(op, key string) error {
		if op == "get" && key == roleStoragePrefix+"a-gone" {
			_ = s.Storage.Delete(context.Background(), key) // deleted between the list and the read
		}
		return nil
	})
	e.mustFail(logical.UpdateOperation, "config/cq", map[string]any{"management_url": other.ManagementURL(),
		"api_url": other.APIURL(), "management_key": "other-account-key"}, "cannot see project")
}

func TestConfigDeleteKeepsAPendingRollbackRecoverable(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	stranded := e.climatiq.AddKey(e.projectID, "vault-abcdefgh-1700000000-nonce1-ci")
	if _, err := framework.PutWAL(context.Background(), e.storage, walKindClimatiqKey,
		&ownedKey{Config: "cq", Role: "ci", ProjectID: e.projectID, KeyName: stranded.Name}); err != nil {
		t.Fatal(err)
	}
	e.climatiq.FailNext(100, http.StatusServiceUnavailable) // the rollback the delete tries fails
	e.mustFail(logical.DeleteOperation, "config/cq", nil, "awaiting rollback that could not be resolved now")
	e.climatiq.FailNext(0, 0)

	runRollbackManager(t, e)
	if e.upstreamHas(stranded.ID) {
		t.Fatal("the stranded key survived its rollback")
	}
	e.mustOK(logical.DeleteOperation, "config/cq", nil)
}

func TestConfigDeleteNamesTheStaticRolesUsingIt(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.mustOK(logical.CreateOperation, "static-roles/app", map[string]any{"config": "cq", "project_id": e.projectID, "rotation_period": "1h"})
	resp := e.do(logical.DeleteOperation, "config/cq", nil)
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "static roles app") || strings.Contains(resp.Error().Error(), "lease") {
		t.Fatalf("config delete with a static role: %v", resp)
	}
}

func TestRepointingAConnectionToAnotherAccountIsRefused(t *testing.T) {
	e := newTestEnv(t)
	e.writeClimatiqConfig("cq", nil)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	e.mustOK(logical.ReadOperation, "creds/ci", nil)

	other := climatiqtest.NewServer("other-account-key")
	t.Cleanup(other.Close)
	other.AddProject("elsewhere")
	tests := []struct {
		name  string
		data  map[string]any
		field string
	}{
		{"another host without the key", map[string]any{"management_url": other.ManagementURL(), "verify_connection": false}, "management_key"},
		{"another account", map[string]any{"management_url": other.ManagementURL(), "api_url": other.APIURL(), "management_key": "other-account-key"}, "cannot see project"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.mustFail(logical.UpdateOperation, "config/cq", tc.data, tc.field)
			if st := other.Stats(); tc.field == "management_key" && st.Requests != 0 {
				t.Fatalf("the stored key was sent to the other host (%d requests)", st.Requests)
			}
		})
	}
	// A new key for the same account (rotated in the dashboard) is fine.
	e.climatiq.AddManagementKey("rotated-key")
	e.mustOK(logical.UpdateOperation, "config/cq", map[string]any{"management_key": "rotated-key"})
}

// Found by the state machine (I2): config/<name> is re-pointed to another
// account while a lease holds a key in the first; the revoke deletes the id
// in the new account (404, counted as gone) and the key is stranded where
// no tidy looks. The write should be refused while the connection holds keys.
func TestRepointingWithALiveLeaseStrandsNoKey(t *testing.T) {
	e, _ := regressEnv(t)
	e.writeRole("ci", map[string]any{"config": "cq", "project_id": e.projectID})
	lease := e.mustOK(logical.ReadOperation, "creds/ci", nil)
	keyID := lease.Data["key_id"].(string)

	other := climatiqtest.NewServer(testManagementKey)
	t.Cleanup(other.Close)
	status, _, _ := vaultStatusOf(e, logical.UpdateOperation, "config/cq", map[string]any{
		"management_url": other.ManagementURL(), "api_url": other.APIURL(),
	})
	if status != 0 {
		return // refused while in use: nothing can be stranded
	}
	if _, err := e.revoke(lease.Secret); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, found := e.climatiq.Key(keyID); found {
		t.Fatalf("re-pointing config/cq with a live lease was accepted, and revoking the lease left key %s upstream in the first account", keyID)
	}
}

func TestConnectionChecksSayWhatFailed(t *testing.T) {
	e := newTestEnv(t)
	closed := "http://127.0.0.1:1" // nothing listens on port 1
	// Not the management API: a web page, a redirect, no such route, an
	// upstream failing.
	impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/html/"):
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>Welcome</body></html>"))
		case strings.HasPrefix(r.URL.Path, "/moved/"):
			http.Redirect(w, r, "https://elsewhere.example/management/v1/project?token=x", http.StatusTemporaryRedirect)
		case strings.HasPrefix(r.URL.Path, "/down/"):
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer impostor.Close()
	tests := []struct {
		name string
		data map[string]any
		want string
	}{
		{"unreachable host", map[string]any{"management_url": closed + "/management/v1-preview1"}, "could not reach climatiq at " + closed},
		{"refused credentials", map[string]any{"management_key": "not-the-key"}, "climatiq refused the credentials"},
		{"a web page", map[string]any{"management_url": impostor.URL + "/html"}, "verify_connection: " + impostor.URL + "/html answered, but not as the climatiq API does"},
		{"a redirect", map[string]any{"management_url": impostor.URL + "/moved"}, "was redirected (climatiq: check management key: 307 Temporary Redirect: redirected to https://elsewhere.example/management/v1/project); set management_url"},
		{"no such route", map[string]any{"management_url": impostor.URL + "/nowhere"}, "verify_connection: no such route at " + impostor.URL + "/nowhere"},
		{"upstream down", map[string]any{"management_url": impostor.URL + "/down"}, "verify_connection: climatiq at " + impostor.URL + "/down failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := map[string]any{"provider": "climatiq", "management_key": testManagementKey,
				"management_url": e.climatiq.ManagementURL(), "api_url": e.climatiq.APIURL(), "max_retries": 0}
			for k, v := range tc.data {
				data[k] = v
			}
			resp := e.do(logical.CreateOperation, "config/check", data)
			if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", resp, tc.want)
			}
		})
	}
}
