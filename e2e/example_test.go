package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// exampleLine is one line the Go example printed, and when.
type exampleLine struct {
	at    time.Time
	event string // issued, works, renewed, "renewal stopped"
	keyID string
}

// TestGoClientExample builds examples/go and runs it against the e2e Vault:
// the official client's LifetimeWatcher renews the lease, Vault stops
// renewing at max_ttl, the example switches to a fresh key then, and the old
// key is deleted upstream within seconds of its lease's end.
func TestGoClientExample(t *testing.T) {
	const ttl, maxTTL = 2 * time.Second, 6 * time.Second
	writeClimatiqConfig(t, "cq-example")
	cli(t, "write", mount+"/roles/go-example", "config=cq-example", "project_id="+projectID,
		"ttl="+ttl.String(), "max_ttl="+maxTTL.String())

	root, err := devvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "example")
	build := exec.Command("go", "build", "-o", bin, "./examples/go")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building examples/go: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*maxTTL+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-role", "go-example", "-sets", "2", "-api-url", climatiqFake.APIURL())
	cmd.Env = vault.Env()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []exampleLine
	// When the first key disappears upstream, watched while the example runs.
	firstGone := make(chan time.Time, 1)
	firstAliveAtSwitch := false
	issuedCount := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		text := sc.Text()
		t.Log(text)
		line := exampleLine{at: time.Now()}
		for _, f := range strings.Fields(text) {
			if id, ok := strings.CutPrefix(f, "key_id="); ok {
				line.keyID = id
			}
		}
		line.event, _, _ = strings.Cut(text, " key_id=")
		lines = append(lines, line)
		if line.event != "issued" {
			continue
		}
		issuedCount++
		switch issuedCount {
		case 1:
			go func(id string) {
				for ctx.Err() == nil {
					if _, ok := climatiqFake.Key(id); !ok {
						firstGone <- time.Now()
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}(line.keyID)
		case 2:
			_, firstAliveAtSwitch = climatiqFake.Key(lines[0].keyID)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("example failed: %v\n%s", err, stderr.String())
	}

	var issued []exampleLine
	renewals := map[string]int{}
	works := map[string]bool{}
	var stopped []exampleLine
	for _, l := range lines {
		switch l.event {
		case "issued":
			issued = append(issued, l)
		case "renewed":
			renewals[l.keyID]++
		case "works":
			works[l.keyID] = true
		case "renewal stopped":
			stopped = append(stopped, l)
		}
	}
	if len(issued) != 2 || len(stopped) != 2 {
		t.Fatalf("want two keys, each run until renewal stopped; got %d issued, %d stopped", len(issued), len(stopped))
	}
	first, second := issued[0], issued[1]
	if first.keyID == second.keyID || !works[first.keyID] || !works[second.keyID] {
		t.Fatalf("keys %s and %s: want two different working keys (works: %v)", first.keyID, second.keyID, works)
	}
	// A 2s lease is renewed about every 1.3s while the 6s max_ttl runs.
	if renewals[first.keyID] < 2 {
		t.Fatalf("first key renewed %d times, want at least 2", renewals[first.keyID])
	}
	// The watcher gives up within its grace period (10-20% of the lease,
	// up to four times that) before max_ttl: the switch comes just before it.
	switchAfter := second.at.Sub(first.at)
	if switchAfter < maxTTL-2*time.Second || switchAfter > maxTTL+time.Second {
		t.Fatalf("switched to a fresh key %s after the first, want about max_ttl (%s)", switchAfter, maxTTL)
	}
	// No gap: the application had its fresh key while the old one still worked.
	if !firstAliveAtSwitch {
		t.Fatal("the first key was gone upstream before the example switched to a fresh one")
	}
	leaseEnd := first.at.Add(maxTTL)
	var gone time.Time
	select {
	case gone = <-firstGone:
	case <-time.After(max(time.Until(leaseEnd)+5*time.Second, 100*time.Millisecond)):
		t.Fatal("the first key is still upstream 5s after its lease ended")
	}
	d := gone.Sub(leaseEnd)
	t.Logf("first key deleted upstream %s after its lease ended", d)
	if d < -time.Second || d > 5*time.Second {
		t.Fatalf("the first key was deleted upstream %s after its lease's end, want within seconds of it", d)
	}
}
