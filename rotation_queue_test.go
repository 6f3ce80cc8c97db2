package carbon

import (
	"slices"
	"testing"
	"time"
)

func TestRotationQueues(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	type put struct {
		name, config string
		due          int
	}
	tests := []struct {
		name    string
		puts    []put
		remove  []string
		popFrom string
		now     int
		want    []string // roles popped from popFrom at now, in order
		left    int
	}{
		{"due roles come out earliest first", []put{{"b", "cq", 2}, {"a", "cq", 1}, {"c", "cq", 9}}, nil, "cq", 5, []string{"a", "b"}, 1},
		{"nothing is due yet", []put{{"a", "cq", 10}}, nil, "cq", 5, nil, 1},
		{"another connection's roles stay", []put{{"a", "cq", 1}, {"x", "other", 1}}, nil, "cq", 5, []string{"a"}, 1},
		{"a put again moves the role", []put{{"a", "cq", 1}, {"a", "cq", 10}}, nil, "cq", 5, nil, 1},
		{"a role moved to another connection leaves the first", []put{{"a", "cq", 1}, {"a", "other", 1}}, nil, "cq", 5, nil, 1},
		{"removed roles never come out", []put{{"a", "cq", 1}, {"b", "cq", 2}}, []string{"a", "missing"}, "cq", 5, []string{"b"}, 0},
		{"an unknown connection pops nothing", []put{{"a", "cq", 1}}, nil, "none", 5, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newRotationQueues()
			for _, p := range tc.puts {
				q.put(p.name, p.config, at(p.due))
			}
			for _, name := range tc.remove {
				q.remove(name)
			}
			var got []string
			for {
				name, ok := q.popDue(tc.popFrom, at(tc.now))
				if !ok {
					break
				}
				got = append(got, name)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("popped %v, want %v", got, tc.want)
			}
			if q.len() != tc.left {
				t.Fatalf("%d roles left, want %d", q.len(), tc.left)
			}
			for _, config := range q.configs() {
				if q.byConfig[config].Len() == 0 {
					t.Fatalf("connection %q keeps an empty queue", config)
				}
			}
		})
	}
}
