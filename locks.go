package carbon

import "sync"

// namedLocks hands out one mutex per name, kept only while someone holds
// or waits for it. Unrelated names never share a lock: with a striped set
// (locksutil) a static role whose rotation waits on a slow upstream would
// also hold up every role that hashes to its stripe, on any connection.
type namedLocks struct {
	mu    sync.Mutex
	locks map[string]*namedLock
}

type namedLock struct {
	sync.Mutex
	users int // holders and waiters; guarded by namedLocks.mu
}

// nameLock is one name's lock, as Lock and Unlock see it.
type nameLock struct {
	set  *namedLocks
	name string
	held *namedLock
}

// forName returns the lock of name; take it with Lock, give it back with
// Unlock.
func (n *namedLocks) forName(name string) *nameLock { return &nameLock{set: n, name: name} }

func (l *nameLock) Lock() {
	n := l.set
	n.mu.Lock()
	if n.locks == nil {
		n.locks = map[string]*namedLock{}
	}
	entry := n.locks[l.name]
	if entry == nil {
		entry = &namedLock{}
		n.locks[l.name] = entry
	}
	entry.users++
	n.mu.Unlock()
	entry.Lock()
	l.held = entry
}

func (l *nameLock) Unlock() {
	entry, n := l.held, l.set
	l.held = nil
	entry.Unlock()
	n.mu.Lock()
	if entry.users--; entry.users == 0 {
		delete(n.locks, l.name)
	}
	n.mu.Unlock()
}
