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
	if n := strings.Count(out, "lifecycle steps are logged only"); n != 1 {
		t.Fatalf("missing events reported %d times for %d events, want once:\n%s", n, sent, out)
	}
	if n := strings.Count(out, "tidy:"); n != sent {
		t.Fatalf("%d tidy log lines for %d events:\n%s", n, sent, out)
	}
}
