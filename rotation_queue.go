package carbon

import (
	"time"

	"github.com/hashicorp/vault/sdk/queue"
)

// rotationQueues holds the static roles by when they are next due, one
// priority queue per connection. A connection at its limit of rotations in
// flight then holds back only its own roles, and the scheduler never pops
// (and pushes back) due roles it cannot start: with one shared queue, every
// freed place re-sorted every due role of a busy connection, and 10,000 due
// roles rotated at a few dozen per second.
//
// The scheduler's lock guards it.
type rotationQueues struct {
	byConfig map[string]*queue.PriorityQueue
	configOf map[string]string // role name → connection whose queue holds it
}

func newRotationQueues() *rotationQueues {
	return &rotationQueues{byConfig: map[string]*queue.PriorityQueue{}, configOf: map[string]string{}}
}

// put (re)places a role in its connection's queue at due.
func (q *rotationQueues) put(name, config string, due time.Time) {
	q.remove(name)
	pq := q.byConfig[config]
	if pq == nil {
		pq = queue.New()
		q.byConfig[config] = pq
	}
	if err := pq.Push(&queue.Item{Key: name, Priority: due.UnixMilli()}); err == nil {
		q.configOf[name] = config
	}
}

// remove takes a role out of the queues, if it is queued.
func (q *rotationQueues) remove(name string) {
	config, ok := q.configOf[name]
	if !ok {
		return
	}
	delete(q.configOf, name)
	pq := q.byConfig[config]
	_, _ = pq.PopByKey(name)
	if pq.Len() == 0 {
		delete(q.byConfig, config)
	}
}

// popDue takes the connection's earliest role if it is due at now.
func (q *rotationQueues) popDue(config string, now time.Time) (string, bool) {
	pq := q.byConfig[config]
	if pq == nil {
		return "", false
	}
	item, err := pq.Pop()
	if err != nil {
		return "", false
	}
	if item.Priority > now.UnixMilli() {
		_ = pq.Push(item)
		return "", false
	}
	delete(q.configOf, item.Key)
	if pq.Len() == 0 {
		delete(q.byConfig, config)
	}
	return item.Key, true
}

// configs lists the connections with queued roles.
func (q *rotationQueues) configs() []string {
	out := make([]string, 0, len(q.byConfig))
	for config := range q.byConfig {
		out = append(out, config)
	}
	return out
}

func (q *rotationQueues) len() int { return len(q.configOf) }
