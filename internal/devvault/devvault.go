// Package devvault runs a real Vault server on 127.0.0.1 with this plugin
// registered by sha256, the way an operator installs it. End-to-end tests,
// the demo and the benchmark share it.
package devvault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// PluginName is the name the plugin is registered under in the catalog.
const PluginName = "carbon"

// FindVault returns the vault binary to use: $VAULT_BIN, then `vault` on
// PATH, then <root>/bin/vault (built by `make vault`).
func FindVault(root string) (string, error) {
	if bin := os.Getenv("VAULT_BIN"); bin != "" {
		return bin, nil
	}
	if bin, err := exec.LookPath("vault"); err == nil {
		return bin, nil
	}
	bin := filepath.Join(root, "bin", "vault")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no vault binary: set VAULT_BIN, put vault on PATH, or run `make vault` to build %s", bin)
	}
	return bin, nil
}

// RepoRoot walks up from the working directory to the plugin's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(data, []byte("module github.com/vault-plugin-carbon/vault-plugin-carbon\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (go.mod)")
		}
		dir = parent
	}
}

// BuildPlugin compiles the plugin with the given version into dir and
// returns the binary's path and sha256.
func BuildPlugin(root, dir, version string) (string, string, error) {
	return BuildPluginAs(root, dir, "vault-plugin-carbon", version)
}

// BuildPluginAs compiles the plugin source tree at root into dir/command,
// so that several versions can sit in one plugin directory.
func BuildPluginAs(root, dir, command, version string) (string, string, error) {
	out := filepath.Join(dir, command)
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/vault-plugin-carbon/vault-plugin-carbon.Version="+version,
		"-o", out, "./cmd/vault-plugin-carbon")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building plugin: %v\n%s", err, msg)
	}
	sum, err := FileSHA256(out)
	return out, sum, err
}

// FileSHA256 returns the hex sha256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Options configure a Server.
type Options struct {
	VaultBin  string
	Dir       string // holds config, file storage and the log; reused across restarts
	PluginDir string
	LogLevel  string // default "info"
	// Addr is the listener address; empty picks a free 127.0.0.1 port.
	Addr string

	// Raft, when set, uses integrated storage instead of file storage.
	Raft *RaftOptions

	// Dev runs `vault server -dev` (in-memory storage, unsealed, root
	// token "root") instead of a configured server.
	Dev bool

	// Telemetry exposes Vault's metrics in Prometheus format at
	// sys/metrics?format=prometheus (retained for an hour, metric names
	// without the host name), for counting storage operations.
	Telemetry bool
}

// RaftOptions make the server a node of an integrated-storage (Raft)
// cluster on 127.0.0.1.
type RaftOptions struct {
	NodeID string
	// JoinAddr is the API address of a node to join; empty for the node
	// that initialises the cluster.
	JoinAddr string
	// UnsealKey and Token of the cluster, for joining nodes.
	UnsealKey, Token string
}

// Server is a running Vault server with file storage, initialised with one
// unseal key.
type Server struct {
	Addr      string
	Token     string
	UnsealKey string
	LogPath   string
	Client    *api.Client

	opts        Options
	clusterAddr string
	cmd         *exec.Cmd
	done        chan struct{}
}

// Start writes the server configuration and starts Vault, then initialises
// and unseals it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.Addr == "" {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		opts.Addr = addr
	}
	s := &Server{Addr: opts.Addr, LogPath: filepath.Join(opts.Dir, "vault.log"), opts: opts}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	if !opts.Dev {
		if err := s.writeConfig(); err != nil {
			return nil, err
		}
	} else if opts.Telemetry {
		// A dev server takes configuration files too; this one holds only
		// the telemetry stanza.
		if err := os.WriteFile(filepath.Join(opts.Dir, "telemetry.hcl"), []byte(s.telemetryConfig()), 0o600); err != nil {
			return nil, err
		}
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) writeConfig() error {
	dataDir := filepath.Join(s.opts.Dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	storage := fmt.Sprintf("storage \"file\" {\n  path = %q\n}\n", dataDir)
	cluster := ""
	if r := s.opts.Raft; r != nil {
		clusterAddr, err := FreeAddr()
		if err != nil {
			return err
		}
		join := ""
		if r.JoinAddr != "" {
			join = fmt.Sprintf("  retry_join {\n    leader_api_addr = \"http://%s\"\n  }\n", r.JoinAddr)
		}
		storage = fmt.Sprintf("storage \"raft\" {\n  path = %q\n  node_id = %q\n  performance_multiplier = 1\n%s}\n", dataDir, r.NodeID, join)
		cluster = fmt.Sprintf("cluster_addr = \"https://%s\"\n", clusterAddr)
		s.clusterAddr = clusterAddr
	}
	listenerCluster := ""
	if s.clusterAddr != "" {
		listenerCluster = fmt.Sprintf("  cluster_address = %q\n", s.clusterAddr)
	}
	cfg := fmt.Sprintf(`%s
listener "tcp" {
  address     = %q
%s  tls_disable = true
}
plugin_directory = %q
api_addr         = "http://%s"
%sdisable_mlock    = true
log_level        = %q
%s`, storage, s.Addr, listenerCluster, s.opts.PluginDir, s.Addr, cluster, s.opts.LogLevel, s.telemetryConfig())
	return os.WriteFile(filepath.Join(s.opts.Dir, "vault.hcl"), []byte(cfg), 0o600)
}

// telemetryConfig is the server configuration's telemetry stanza, empty
// unless Options.Telemetry is set.
func (s *Server) telemetryConfig() string {
	if !s.opts.Telemetry {
		return ""
	}
	return "telemetry {\n  prometheus_retention_time = \"1h\"\n  disable_hostname          = true\n}\n"
}

// start launches the server process and waits until it is unsealed.
func (s *Server) start(ctx context.Context) error {
	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	args := []string{"server", "-config", filepath.Join(s.opts.Dir, "vault.hcl")}
	if s.opts.Dev {
		args = []string{"server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=" + s.Addr,
			"-dev-plugin-dir=" + s.opts.PluginDir, "-log-level=" + s.opts.LogLevel}
		if s.opts.Telemetry {
			args = append(args, "-config", filepath.Join(s.opts.Dir, "telemetry.hcl"))
		}
	}
	cmd := exec.Command(s.opts.VaultBin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "VAULT_LOG_FORMAT=standard")
	// Own process group, so Kill takes plugin processes down too when asked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(s.done)
	}()

	client, err := api.NewClient(&api.Config{Address: "http://" + s.Addr, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	s.Client = client
	if err := s.waitListening(ctx); err != nil {
		s.Kill()
		return err
	}
	if s.opts.Dev {
		s.Token = "root"
		s.Client.SetToken(s.Token)
		return nil
	}
	if err := s.initAndUnseal(ctx); err != nil {
		// The caller gets no server to stop: stop it here.
		s.KillAll()
		return err
	}
	return nil
}

func (s *Server) waitListening(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.Client.Sys().SealStatusWithContext(ctx); err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("vault exited during start; see %s, which ends:\n%s", s.LogPath, logTail(s.LogPath, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault did not listen on %s within 60s; see %s", s.Addr, s.LogPath)
		}
	}
}

func (s *Server) initAndUnseal(ctx context.Context) error {
	sys := s.Client.Sys()
	if r := s.opts.Raft; r != nil && r.JoinAddr != "" && s.UnsealKey == "" {
		// A joining node: retry_join fetches the cluster's seal
		// configuration; unseal with the cluster's key once it has.
		s.UnsealKey, s.Token = r.UnsealKey, r.Token
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, err := sys.UnsealWithContext(ctx, s.UnsealKey)
			if err == nil && !st.Sealed {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s did not join and unseal within 60s: %v", r.NodeID, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		s.Client.SetToken(s.Token)
		return nil
	}
	inited, err := sys.InitStatusWithContext(ctx)
	if err != nil {
		return err
	}
	if !inited {
		resp, err := sys.InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		if err != nil {
			return fmt.Errorf("vault operator init: %w", err)
		}
		s.UnsealKey, s.Token = resp.KeysB64[0], resp.RootToken
	}
	if _, err := sys.UnsealWithContext(ctx, s.UnsealKey); err != nil {
		return fmt.Errorf("vault operator unseal: %w", err)
	}
	s.Client.SetToken(s.Token)
	// The active node is ready once it answers an authenticated request.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.Client.Sys().ListMountsWithContext(ctx); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("vault not ready after unseal: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// PID is the vault server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Binary is the vault binary the server runs, for other vault commands
// such as `vault agent`.
func (s *Server) Binary() string { return s.opts.VaultBin }

// Env is the environment for running the vault CLI against this server.
func (s *Server) Env() []string {
	return append(os.Environ(), "VAULT_ADDR=http://"+s.Addr, "VAULT_TOKEN="+s.Token, "VAULT_FORMAT=")
}

// Vault runs the real vault CLI against the server and returns its stdout.
// A failing command returns an error carrying its stderr.
func (s *Server) Vault(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.opts.VaultBin, args...)
	cmd.Env = s.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("vault %s: %v: %s", redactArgs(args), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// redactArgs keeps the command words of a CLI call and hides key=value
// arguments, which may carry secrets.
func redactArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if k, _, ok := strings.Cut(a, "="); ok {
			a = k + "=..."
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// RegisterAndEnable registers the plugin binary by sha256 and version and
// enables it at mount, as an operator does.
func (s *Server) RegisterAndEnable(sha, version, mount string) error {
	if _, err := s.Vault("plugin", "register", "-sha256="+sha, "-version="+version,
		"-command=vault-plugin-carbon", "secret", PluginName); err != nil {
		return err
	}
	_, err := s.Vault("secrets", "enable", "-path="+mount, "-plugin-version="+version, PluginName)
	return err
}

// Stop ends the server with SIGTERM and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.Kill()
	}
}

// Kill ends the server with SIGKILL, as a crash would. Plugin processes
// Vault started are left running, as they are after a real crash.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// KillAll ends the server and every plugin process it started.
func (s *Server) KillAll() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// Restart starts the server again on the same address and storage.
func (s *Server) Restart(ctx context.Context) error {
	return s.start(ctx)
}

// logTail is the last n lines of a log, for an error that names the log
// of a server whose directory may be gone by the time someone reads it.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreeAddr returns a free 127.0.0.1 TCP address.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
