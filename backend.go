// Package carbon is a HashiCorp Vault secrets engine for carbon-accounting
// platforms. Vault keeps the long-lived, powerful credentials (a Climatiq
// management key, Altruistiq OAuth client credentials) and hands applications
// short-lived or regularly rotated ones.
//
// This package is the Vault-facing layer: paths, storage, leases and WAL. The
// upstream platforms' HTTP and JSON live in backend/climatiq and
// backend/altruistiq.
package carbon

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Version is the plugin version reported to Vault (`vault plugin register
// -version`, `vault secrets list -detailed`). Release builds set it with
// -ldflags "-X github.com/vault-plugin-carbon/vault-plugin-carbon.Version=v1.2.3".
var Version = "v0.0.0-dev"

// walRollbackMinAge is how old a WAL entry must be before the rollback
// manager undoes it. It must exceed the longest issuance: request_timeout
// times retries plus the 429 budget of the upstream client.
const walRollbackMinAge = 10 * time.Minute

// A failed Initialize is retried after initRetryFirstDelay, doubling up to
// initRetryMaxDelay: quick after a blip, one warning a minute in an outage.
const (
	initRetryFirstDelay = time.Second
	initRetryMaxDelay   = time.Minute
)

type backend struct {
	*framework.Backend

	// connections caches one upstream client per config/:name, so issuance
	// reuses parsed configuration, rate limiters, HTTP connections and
	// OAuth tokens. Entries are dropped on write, delete and Invalidate.
	connectionsLock sync.RWMutex
	connections     map[string]*connection

	// markerLock guards the lazily created mount marker.
	markerLock sync.Mutex
	marker     string

	// staticRoleLocks serialise all changes to one static role and its key;
	// keyLocks the renewals, revocations and tidy's expiry of one leased
	// key; adoptionLocks the adoptions of one upstream key (taken inside the
	// adopting role's lock, never the other way round). One lock per name
	// (locks.go).
	staticRoleLocks namedLocks
	keyLocks        namedLocks
	adoptionLocks   namedLocks

	// scheduler rotates static roles (rotation.go).
	scheduler rotationScheduler

	// A failed Initialize is retried in the background until it succeeds
	// or Clean runs (retryInitialize); initRetryDelay is the first wait,
	// doubled up to initRetryMax.
	initRetryDelay   time.Duration
	initRetryMax     time.Duration
	initRetryLock    sync.Mutex
	stopInitRetry    context.CancelFunc
	initRetryDone    chan struct{}
	initRetryStopped bool

	// metrics are this mount's figures (metrics.go, path_metrics.go).
	metrics *metrics

	// staticKeyChecks: static roles' keys this instance saw upstream
	// (static_key_check.go).
	staticKeyChecks staticKeyChecks

	// lastTidy is when periodic tidy last ran per connection, on this node
	// (guarded by lastTidyLock).
	lastTidyLock sync.Mutex
	lastTidy     map[string]time.Time
	// tidyJobs runs tidy in the background, one run at a time (tidy_job.go).
	tidyJobs tidyJobs

	// The mount's max lease TTL, read at most once a minute.
	mountMaxLock sync.Mutex
	mountMax     time.Duration
	mountMaxRead time.Time

	// What upstream requests say they are (userAgent), asked of Vault once.
	userAgentOnce  sync.Once
	userAgentValue string

	// startedAt is when this instance was made: WAL entries older than it
	// belong to no issuance in flight here.
	startedAt time.Time

	// format gates the mount on its storage format (storage_version.go;
	// Initialize and HandleRequest consult it).
	format formatGate

	// clock is the engine's time: key names, expiries, schedules and tidy
	// ages. Tests replace it to run hours of TTL in milliseconds.
	clock func() time.Time

	// liveCounts counts live keys per role and connection (livecounts.go).
	liveCounts liveCounts
	// legacyInventoryMoved is set once no v0.1 inventory entry is left.
	legacyInventoryMoved atomic.Bool

	// roles caches dynamic roles for issuance (path_roles.go).
	roles roleCache

	// blocks are the WAL entries covering this instance's issuances
	// (issuance_wal.go).
	blocks issuanceBlocks

	// Work taken off the request path: events to send and spent WAL
	// entries to delete. stopBackground ends both workers in Clean.
	events             chan pendingEvent
	spentWAL           chan spentWALEntry
	stopBackground     chan struct{}
	stopBackgroundOnce sync.Once
	backgroundDone     sync.WaitGroup
}

// Factory returns a configured instance of the carbon secrets engine.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	cached := *conf
	if conf.System != nil {
		cached.System = newReplicationStateCache(conf.System)
	}
	if err := b.Setup(ctx, &cached); err != nil {
		return nil, err
	}
	b.backgroundDone.Add(2)
	go func() { defer b.backgroundDone.Done(); b.sendEvents(b.stopBackground) }()
	go func() { defer b.backgroundDone.Done(); b.deleteSpentWAL(b.stopBackground) }()
	return b, nil
}

func newBackend() *backend {
	b := &backend{
		connections: make(map[string]*connection),
		lastTidy:    make(map[string]time.Time),

		events:         make(chan pendingEvent, eventQueueSize),
		spentWAL:       make(chan spentWALEntry, spentWALQueueSize),
		stopBackground: make(chan struct{}),
		clock:          time.Now,
		metrics:        newMetrics(),
		startedAt:      time.Now().Truncate(time.Second),
		scheduler:      rotationScheduler{tick: schedulerTick},
		initRetryDelay: initRetryFirstDelay,
		initRetryMax:   initRetryMaxDelay,
	}
	b.tidyJobs.init()
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			LocalStorage: localStoragePrefixes,
			SealWrapStorage: []string{
				configStoragePrefix,
				roleStoragePrefix,
				staticRoleStoragePrefix,
			},
		},
		Paths: refuseUnknownQueryParameters(framework.PathAppend(
			pathConfig(b),
			pathRoles(b),
			pathCreds(b),
			pathKeys(b),
			pathTidy(b),
			pathStaticRoles(b),
			pathRotateRole(b),
			pathMetrics(b),
		)),
		Secrets: []*framework.Secret{
			secretClimatiqKey(b),
			secretAltruistiqToken(b),
		},
		WALRollback:       b.walRollback,
		WALRollbackMinAge: walRollbackMinAge,
		PeriodicFunc:      b.periodicTidy,
		Invalidate:        b.invalidate,
		Clean:             b.clean,
		RunningVersion:    Version,
	}
	return b
}

func (b *backend) now() time.Time { return b.clock() }

// invalidate drops cached state that another node (or a replicated write)
// has changed underneath this one.
func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case strings.HasPrefix(key, configStoragePrefix):
		b.resetConnection(strings.TrimPrefix(key, configStoragePrefix))
	case strings.HasPrefix(key, keyListPrefix):
		b.resetLiveCounts()
	case strings.HasPrefix(key, roleStoragePrefix):
		b.forgetRole(strings.TrimPrefix(key, roleStoragePrefix))
	case key == markerStorageKey:
		b.markerLock.Lock()
		b.marker = ""
		b.markerLock.Unlock()
	}
}

func (b *backend) clean(ctx context.Context) {
	b.stopInitializeRetries()
	b.stopRotationScheduler()
	b.stopTidy()
	// Idle blocks are retired now (queued for the deleter, which drains
	// its queue before it stops); busy ones by their last issuance.
	b.closeBlocks(ctx, "")
	b.stopBackgroundOnce.Do(func() {
		close(b.stopBackground)
		b.backgroundDone.Wait()
	})
	b.connectionsLock.Lock()
	defer b.connectionsLock.Unlock()
	for name, c := range b.connections {
		c.close()
		delete(b.connections, name)
	}
}

// HandleRequest refuses every request, lease revocation and renewal
// included, while the storage is newer than this binary: Vault keeps a
// refused revocation and retries it, where a misread one could lose a key.
// Rollback (WAL and periodic tidy) is skipped silently, help still works.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	refusal, err := b.storageRefusal(ctx, req.Storage, req.MountPoint)
	switch {
	case req.Operation == logical.HelpOperation:
	case err != nil:
		return nil, err
	case refusal != nil && req.Operation == logical.RollbackOperation:
		return nil, nil
	case refusal != nil:
		return nil, refusal
	}
	if resp, err := answerUnrouted(req); resp != nil || err != nil {
		return resp, err
	}
	// Before the framework parses the fields: its error would quote a
	// mistyped secret (path_config.go).
	if resp := b.refuseMistypedSecrets(req); resp != nil {
		return resp, nil
	}
	if _, ok := ctx.Deadline(); !ok && req.Operation != logical.RollbackOperation {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestDeadline)
		defer cancel()
	}
	return b.Backend.HandleRequest(ctx, req)
}

// requestDeadline bounds a request's own work (its upstream calls, waits
// and inline rollback) inside the CLI's 60 s: Vault keeps its request limit
// to itself and passes a plugin no deadline, so without one a request would
// run on after its caller gave up, who would see only a timeout. Rollback
// (WAL entries, periodic tidy) has no caller waiting and is not bounded.
const requestDeadline = 55 * time.Second

const backendHelp = `
The carbon secrets engine issues credentials for carbon-accounting platforms.

Vault keeps the long-lived, powerful credentials — a Climatiq management API
key, Altruistiq OAuth client credentials — and hands applications what they
need when they need it:

  creds/<role>         a new Climatiq API key with a lease; the key is deleted
                       upstream when the lease is revoked or expires. For an
                       Altruistiq role, a shared OAuth access token whose lease
                       never outlives the token.
  static-creds/<name>  a long-lived Climatiq key that the engine owns and
                       rotates on a schedule (static-roles/<name>).

Configure a connection with config/<name>, then a role with roles/<name>.

Not offered, by the upstreams' design: rotating the Climatiq management key or
the Altruistiq client secret. Both can only be created, rotated and deleted in
the platforms' web interfaces; write the new value to config/<name> instead.
`

// contextUntil is a context cancelled when done is closed.
func contextUntil(done <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

const operationPrefixCarbon = "carbon"
