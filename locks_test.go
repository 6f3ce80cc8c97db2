package carbon

import (
	"fmt"
	"testing"
	"time"
)

// TestNamedLocksShareNothingBetweenNames: a name's lock held does not hold
// any other name (a striped set would, for names in one stripe), the same
// name waits, and nothing is kept once no one holds or waits.
func TestNamedLocksShareNothingBetweenNames(t *testing.T) {
	var set namedLocks
	held := set.forName("slow")
	held.Lock()
	for i := range 1000 { // enough names to fill every stripe of a 256-lock set many times
		other := set.forName(fmt.Sprintf("role-%d", i))
		done := make(chan struct{})
		go func() { other.Lock(); defer other.Unlock(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("role-%d waited for the lock of another name", i)
		}
	}
	same := set.forName("slow")
	acquired := make(chan struct{})
	go func() { same.Lock(); close(acquired); same.Unlock() }()
	select {
	case <-acquired:
		t.Fatal("a second holder took a lock that is held")
	case <-time.After(50 * time.Millisecond):
	}
	held.Unlock()
	<-acquired
	for deadline := time.Now().Add(time.Second); ; time.Sleep(time.Millisecond) {
		set.mu.Lock()
		n := len(set.locks)
		set.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d locks kept with no one holding them", n)
		}
	}
}
