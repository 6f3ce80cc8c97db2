package carbon

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// syncBuffer is a log sink the event sender goroutine and the test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// A Vault without events (the test config has no event sender, as older
// Vaults give none) is reported once, not per event, and the engine goes on.
func TestNoEventsReportedOnce(t *testing.T) {
	var logs syncBuffer
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	raw, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b := raw.(*backend)
	defer b.clean(context.Background())

	const sent = 5
	for i := 0; i < sent; i++ {
		b.logAndEmit(eventTidy, "config", "cq")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(b.events) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the last send's outcome is logged after it leaves the queue
	out := logs.String()
	if n := strings.Count(out, "are logged only"); n != 1 {
		t.Fatalf("missing events reported %d times for %d events, want once:\n%s", n, sent, out)
	}
	if n := strings.Count(out, "tidy:"); n != sent {
		t.Fatalf("%d tidy log lines for %d events:\n%s", n, sent, out)
	}
}

// recordingSender is an event sender that keeps the types it was sent.
type recordingSender struct {
	mu    sync.Mutex
	types []string
}

func (r *recordingSender) SendEvent(_ context.Context, eventType logical.EventType, _ *logical.EventData) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.types = append(r.types, string(eventType))
	return nil
}

func (r *recordingSender) sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.types...)
}

// Every step is sent as a Vault event; the per-lease ones (issue, renew,
// revoke) are not logged, even at trace, the others log at info.
func TestPerLeaseStepsAreEventsNotLogLines(t *testing.T) {
	for _, tc := range []struct {
		event  string
		logged bool
	}{
		{eventKeyIssue, false},
		{eventKeyRenew, false},
		{eventKeyRevoke, false},
		{eventKeyRollback, true},
		{eventStaticRotate, true},
		{eventStaticDelete, true},
		{eventTidy, true},
	} {
		t.Run(tc.event, func(t *testing.T) {
			var logs syncBuffer
			events := &recordingSender{}
			conf := logical.TestBackendConfig()
			conf.StorageView = &logical.InmemStorage{}
			conf.EventsSender = events
			conf.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
			raw, err := Factory(context.Background(), conf)
			if err != nil {
				t.Fatal(err)
			}
			b := raw.(*backend)
			defer b.clean(context.Background())

			b.logAndEmit(tc.event, "config", "cq", "key_id", "key_1")
			for deadline := time.Now().Add(5 * time.Second); len(events.sent()) == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if got := events.sent(); len(got) != 1 || got[0] != "carbon/"+tc.event {
				t.Fatalf("events sent: %v, want [carbon/%s]", got, tc.event)
			}
			if logged := strings.Contains(logs.String(), tc.event); logged != tc.logged {
				t.Fatalf("logged=%v, want %v; log:\n%s", logged, tc.logged, logs.String())
			}
		})
	}
}

func TestEventsCarryNoEmptyFields(t *testing.T) {
	b := newBackend()
	b.Backend.Setup(context.Background(), &logical.BackendConfig{System: logical.TestSystemView(), Logger: testLogger()})
	b.logAndEmit(eventStaticRotate, "role", "app", "previous_key_id", "", "trigger", "manual", "lateness_ms", "")
	ev := <-b.events
	for i := 1; i < len(ev.metadata); i += 2 {
		if ev.metadata[i] == "" {
			t.Fatalf("event carries empty field %q: %v", ev.metadata[i-1], ev.metadata)
		}
	}
	if len(ev.metadata) != 4 {
		t.Fatalf("metadata %v, want role and trigger only", ev.metadata)
	}
}
