package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/internal/devvault"
)

// raftStorage starts Vault with integrated storage (Raft) on disk — one
// node, or a cluster of nodes on 127.0.0.1 joined with retry_join —,
// registers the plugin, runs the storage scenarios on the active node, and
// stops every node and removes its data, also on error.
func (e *env) raftStorage(nodes, rounds int) error {
	dir, err := os.MkdirTemp(e.dir, fmt.Sprintf("raft-%d-", nodes))
	if err != nil {
		return err
	}
	defer atExit(func() { os.RemoveAll(dir) })()
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	start := func(raft *devvault.RaftOptions) (*devvault.Server, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s, err := devvault.Start(ctx, devvault.Options{
			VaultBin: e.vaultBin, Dir: filepath.Join(dir, raft.NodeID), PluginDir: e.pluginDir, LogLevel: "info",
			Raft: raft, Telemetry: true,
		})
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", raft.NodeID, err)
		}
		stops = append(stops, atExit(s.KillAll))
		return s, nil
	}
	step(fmt.Sprintf("starting Vault with Raft storage, %d node(s)", nodes))
	began := time.Now()
	first, err := start(&devvault.RaftOptions{NodeID: "node1"})
	if err != nil {
		return err
	}
	servers := []*devvault.Server{first}
	for i := 2; i <= nodes; i++ {
		s, err := start(&devvault.RaftOptions{
			NodeID: fmt.Sprintf("node%d", i), JoinAddr: first.Addr, UnsealKey: first.UnsealKey, Token: first.Token,
		})
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	leader, err := waitRaftReady(servers, 3*time.Minute)
	if err != nil {
		return err
	}
	ready := time.Since(began)
	if err := leader.RegisterAndEnable(e.pluginSHA, version, mount); err != nil {
		return err
	}
	if err := enableSSH(leader); err != nil {
		return err
	}
	title := "Raft, 1 node"
	about := "One Vault node with integrated storage (Raft) on disk: every storage write is a Raft log entry " +
		"fsync'd before the write returns."
	if nodes > 1 {
		title = fmt.Sprintf("Raft, %d-node cluster", nodes)
		about = fmt.Sprintf("%d Vault nodes with integrated storage (Raft) on disk, on 127.0.0.1 with their own API and cluster ports, "+
			"joined with `retry_join`, initialised with one key share, every node unsealed, all %d voters; requests go to the active "+
			"node (the Raft leader, %s). A write returns once a quorum (the leader and one follower) has the entry on disk; "+
			"all nodes share this machine's disk and cores.", nodes, nodes, leaderName(servers, leader))
	}
	about += fmt.Sprintf(" Servers started, unsealed and ready in %s.", ready.Round(100*time.Millisecond))
	return e.storageScenario(leader, title, about, nodes, rounds)
}

func leaderName(servers []*devvault.Server, leader *devvault.Server) string {
	for i, s := range servers {
		if s == leader {
			return fmt.Sprintf("node%d", i+1)
		}
	}
	return "?"
}

// waitRaftReady waits until the Raft configuration lists every server as a
// voter (autopilot promotes a joined node once it is stable) and one of them
// is the active node, and returns the active node.
func waitRaftReady(servers []*devvault.Server, limit time.Duration) (*devvault.Server, error) {
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		if leader, why := raftReady(servers); leader != nil {
			return leader, nil
		} else {
			last = why
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil, fmt.Errorf("raft not ready within %s: %s", limit, last)
}

func raftReady(servers []*devvault.Server) (*devvault.Server, string) {
	var leader *devvault.Server
	for _, s := range servers {
		l, err := s.Client.Sys().Leader()
		if err != nil {
			return nil, fmt.Sprintf("sys/leader on %s: %v", s.Addr, err)
		}
		if l.IsSelf {
			leader = s
		}
	}
	if leader == nil {
		return nil, "no active node yet"
	}
	cfg, err := leader.Client.Logical().Read("sys/storage/raft/configuration")
	if err != nil || cfg == nil {
		return nil, fmt.Sprintf("sys/storage/raft/configuration: %v", err)
	}
	conf, _ := cfg.Data["config"].(map[string]any)
	list, _ := conf["servers"].([]any)
	voters := 0
	for _, srv := range list {
		if v, _ := srv.(map[string]any)["voter"].(bool); v {
			voters++
		}
	}
	if voters != len(servers) {
		return nil, fmt.Sprintf("%d of %d servers are voters", voters, len(servers))
	}
	return leader, ""
}

// diskFsync times 200 fsync'd 4 KiB appends in dir, the cost under every
// Raft write, and describes the file system.
func diskFsync(dir string) (string, error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	var took []time.Duration
	for range 200 {
		if _, err := f.Write(block); err != nil {
			return "", err
		}
		t := time.Now()
		if err := f.Sync(); err != nil {
			return "", err
		}
		took = append(took, time.Since(t))
	}
	return fmt.Sprintf("Raft data under %s (%s); a 4 KiB append + fsync there takes p50 %s, p99 %s (200 timed)",
		filepath.Dir(dir), fsType(dir), ms(percentile(took, 50)), ms(percentile(took, 99))), nil
}

// fsType names the file system holding dir, from /proc/self/mounts.
func fsType(dir string) string {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "file system unknown"
	}
	best, kind, dev := "", "unknown", ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if (dir == f[1] || strings.HasPrefix(dir, strings.TrimSuffix(f[1], "/")+"/")) && len(f[1]) > len(best) {
			best, dev, kind = f[1], f[0], f[2]
		}
	}
	return fmt.Sprintf("%s on %s, mounted at %s", kind, dev, best)
}
