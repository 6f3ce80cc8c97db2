package main

import (
	"strings"
	"testing"
)

// The commands make dev and make demo print never show the upstream
// credentials they write.
func TestPrintedCommandsHideSecrets(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		secret string
	}{
		{[]string{"write", "carbon/config/climatiq", "provider=climatiq", "management_key=" + managementKey, "management_url=http://127.0.0.1:1/m"}, managementKey},
		{[]string{"write", "carbon/config/altruistiq", "provider=altruistiq", "client_id=" + clientID, "client_secret=" + clientSecret}, clientSecret},
	} {
		shown := shownCommand(tc.args)
		if strings.Contains(shown, tc.secret) {
			t.Errorf("printed command %q shows the secret", shown)
		}
		if !strings.Contains(shown, "=<hidden>") || !strings.Contains(shown, tc.args[2]) {
			t.Errorf("printed command %q lost its shape", shown)
		}
	}
}
