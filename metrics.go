package carbon

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// metrics are one mount's figures, in a registry of its own: the plugin
// process serves every mount of the plugin, so a process-wide registry
// would mix them. Labels are few and bounded: connection and role names
// (operator-made), operations, outcomes and status classes — never an id.
type metrics struct {
	registry *prometheus.Registry

	upstreamRequests *prometheus.CounterVec   // connection, operation, status_class
	upstreamDuration *prometheus.HistogramVec // connection, operation
	upstreamRetries  *prometheus.CounterVec   // connection, operation
	upstreamWaits    *prometheus.CounterVec   // connection, reason
	upstreamWaited   *prometheus.CounterVec   // connection, reason: seconds

	issuances        *prometheus.CounterVec // role, outcome
	revocations      *prometheus.CounterVec // outcome
	rotations        *prometheus.CounterVec // role, trigger, outcome
	rotationLateness *prometheus.GaugeVec   // role
	overlapEnds      *prometheus.CounterVec // role
	tidyRuns         *prometheus.CounterVec // outcome
	tidyOrphans      prometheus.Counter
	tidyDeleted      prometheus.Counter

	liveKeysByRole       *prometheus.GaugeVec // kind, role
	liveKeysByConnection *prometheus.GaugeVec // connection
	walPending           prometheus.Gauge
}

const metricsNamespace = "vault_carbon"

func newMetrics() *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
	}
	m := &metrics{
		registry:         prometheus.NewRegistry(),
		upstreamRequests: counter("upstream_requests_total", "Upstream request attempts, by connection, operation and status class (2xx, 4xx, 429, 5xx, none).", "connection", "operation", "status_class"),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "upstream_request_duration_seconds",
			Help: "Time of one upstream attempt, from sending to the answer's headers.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"connection", "operation"}),
		upstreamRetries:  counter("upstream_retries_total", "Attempts sent again after a network error or 5xx.", "connection", "operation"),
		upstreamWaits:    counter("upstream_waits_total", "Requests that waited before they were sent: at the connection's rate_limit, or for a 429's Retry-After.", "connection", "reason"),
		upstreamWaited:   counter("upstream_wait_seconds_total", "Time requests spent waiting before they were sent.", "connection", "reason"),
		issuances:        counter("issuances_total", "creds/ reads, by role and outcome (issued, refused: 4xx, failed: 5xx).", "role", "outcome"),
		revocations:      counter("revocations_total", "Lease revocations, by outcome (revoked, failed: Vault retries them).", "outcome"),
		rotations:        counter("rotations_total", "Static role rotations, by role, trigger (schedule, manual, heal) and outcome (rotated, failed).", "role", "trigger", "outcome"),
		rotationLateness: gauge("rotation_lateness_seconds", "How long after it was due the last scheduled rotation of a static role ran.", "role"),
		overlapEnds:      counter("overlap_ends_total", "Replaced static keys deleted at the end of their overlap (or at once).", "role"),
		tidyRuns:         counter("tidy_runs_total", "Tidy runs, by outcome (succeeded, failed: a step failed).", "outcome"),
		tidyOrphans: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "tidy_orphans_found_total",
			Help: "Marked keys and per-lease projects tidy found that nothing tracks."}),
		tidyDeleted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "tidy_deleted_total",
			Help: "Keys and projects tidy deleted."}),
		liveKeysByRole:       gauge("live_keys", "Keys the mount holds per role, by kind (dynamic, static), as of the scrape.", "kind", "role"),
		liveKeysByConnection: gauge("live_keys_by_connection", "Keys the mount holds per connection, as of the scrape.", "connection"),
		walPending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "wal_entries_pending",
			Help: "WAL entries in this cluster's storage: issuance blocks open or awaiting rollback, and rotations in flight."}),
	}
	m.registry.MustRegister(m.upstreamRequests, m.upstreamDuration, m.upstreamRetries, m.upstreamWaits, m.upstreamWaited,
		m.issuances, m.revocations, m.rotations, m.rotationLateness, m.overlapEnds, m.tidyRuns, m.tidyOrphans, m.tidyDeleted,
		m.liveKeysByRole, m.liveKeysByConnection, m.walPending)
	return m
}

// connectionObserver counts one connection's upstream requests.
type connectionObserver struct {
	m          *metrics
	connection string
}

func (o connectionObserver) Attempted(operation string, status int, took time.Duration) {
	o.m.upstreamRequests.WithLabelValues(o.connection, operation, statusClass(status)).Inc()
	o.m.upstreamDuration.WithLabelValues(o.connection, operation).Observe(took.Seconds())
}

func (o connectionObserver) Retried(operation string) {
	o.m.upstreamRetries.WithLabelValues(o.connection, operation).Inc()
}

func (o connectionObserver) Waited(reason string, took time.Duration) {
	o.m.upstreamWaits.WithLabelValues(o.connection, reason).Inc()
	o.m.upstreamWaited.WithLabelValues(o.connection, reason).Add(took.Seconds())
}

// statusClass keeps a status's label to a handful of values; 429 is its
// own, the sign of back-pressure.
func statusClass(status int) string {
	switch {
	case status == 0:
		return "none"
	case status == statusTooManyRequests:
		return "429"
	default:
		return strconv.Itoa(status/100) + "xx"
	}
}

// requestOutcome names how a request ended, for the counters.
func requestOutcome(resp *logical.Response, err error, success string) string {
	switch {
	case err != nil:
		var coded logical.HTTPCodedError
		if errors.As(err, &coded) && coded.Code() < 500 {
			return "refused"
		}
		return "failed"
	case resp != nil && resp.IsError():
		return "refused"
	}
	return success
}

// observeEvent counts what a lifecycle event says happened.
func (m *metrics) observeEvent(event string, metadata []string) {
	get := func(name string) string {
		for i := 0; i+1 < len(metadata); i += 2 {
			if metadata[i] == name {
				return metadata[i+1]
			}
		}
		return ""
	}
	number := func(name string) float64 {
		n, _ := strconv.ParseFloat(get(name), 64)
		return n
	}
	switch event {
	case eventStaticRotate:
		trigger := get("trigger")
		m.rotations.WithLabelValues(get("role"), trigger, "rotated").Inc()
		if trigger == "schedule" {
			m.rotationLateness.WithLabelValues(get("role")).Set(number("lateness_ms") / 1000)
		}
	case eventStaticDelete:
		m.overlapEnds.WithLabelValues(get("role")).Inc()
	case eventTidy:
		result := "succeeded"
		if number("errors") > 0 {
			result = "failed"
		}
		m.tidyRuns.WithLabelValues(result).Inc()
		m.tidyOrphans.Add(number("orphans") + number("orphan_projects"))
		m.tidyDeleted.Add(number("deleted"))
	}
}

// gather writes the registry in the Prometheus text format, after setting
// the gauges that are read at the scrape: live keys and pending WAL.
func (b *backend) gatherMetrics(ctx context.Context, s logical.Storage) ([]byte, error) {
	m := b.metrics
	if err := b.ensureLiveCounts(ctx, s); err != nil {
		return nil, err
	}
	byRole, byConfig := b.liveCounts.snapshot()
	m.liveKeysByRole.Reset()
	for key, n := range byRole {
		kind, role, _ := strings.Cut(key, "/") // roleCountKey
		m.liveKeysByRole.WithLabelValues(kind, role).Set(float64(n))
	}
	m.liveKeysByConnection.Reset()
	for config, n := range byConfig {
		m.liveKeysByConnection.WithLabelValues(config).Set(float64(n))
	}
	ids, err := framework.ListWAL(ctx, s)
	if err != nil {
		return nil, err
	}
	m.walPending.Set(float64(len(ids)))

	families, err := m.registry.Gather()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := expfmt.NewEncoder(&out, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// countIssuance counts a creds/ read by its outcome.
func (b *backend) countIssuance(handler framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		resp, err := handler(ctx, req, d)
		result := requestOutcome(resp, err, "issued")
		name, _ := d.Get("role").(string)
		if result == "refused" {
			// Any name can be asked for: only a role's own is a label.
			if role, rerr := getRole(ctx, req.Storage, name); rerr != nil || role == nil {
				name = "unknown"
			}
		}
		b.metrics.issuances.WithLabelValues(name, result).Inc()
		return resp, err
	}
}

// countRevocation counts a lease revocation by its outcome.
func (b *backend) countRevocation(handler framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		resp, err := handler(ctx, req, d)
		b.metrics.revocations.WithLabelValues(requestOutcome(resp, err, "revoked")).Inc()
		return resp, err
	}
}
