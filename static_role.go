package carbon

// A static role's type: its storage, the keys it holds and its schedule
// arithmetic. Its paths are in path_static_roles.go, its rotation in
// rotation.go.

import (
	"context"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"
)

// staticRole is the stored form of static-roles/:name: one Vault-owned
// Climatiq key and its rotation state. It holds the key value, so its
// storage is seal-wrapped.
type staticRole struct {
	Config    string `json:"config"`
	ProjectID string `json:"project_id"`

	automatedrotationutil.AutomatedRotationParams
	OverlapPeriod     time.Duration `json:"overlap_period"`
	DeleteKeyOnRemove bool          `json:"delete_key_on_remove"`

	KeyID        string    `json:"key_id"`
	KeyName      string    `json:"key_name"`
	KeyValue     string    `json:"key_value"`
	LastRotated  time.Time `json:"last_rotated"`
	NextRotation time.Time `json:"next_rotation"`

	// PreviousKeys are replaced keys still in their overlap, or whose
	// delete failed and is retried; each is deleted at its own time.
	PreviousKeys []previousKey `json:"previous_keys,omitempty"`
	// The single previous key of storage written by v0.1. Read into
	// PreviousKeys on load; written as the newest previous key so that a
	// downgraded plugin still sees (and deletes on time) the latest one.
	LegacyPreviousKeyID   string    `json:"previous_key_id,omitempty"`
	LegacyPreviousKeyName string    `json:"previous_key_name,omitempty"`
	LegacyPreviousExpires time.Time `json:"previous_expires,omitzero"`

	// Failure state of rotations; RetryAt backs off scheduled retries.
	LastError      string    `json:"last_error,omitempty"`
	LastErrorTime  time.Time `json:"last_error_time,omitempty"`
	FailedAttempts int       `json:"failed_attempts,omitempty"`
	RetryAt        time.Time `json:"retry_at,omitempty"`
}

// previousKey is a replaced key that stays valid until Expires.
type previousKey struct {
	KeyID   string    `json:"key_id"`
	KeyName string    `json:"key_name"`
	Expires time.Time `json:"expires"`
	// A failed delete is retried from DeleteRetryAt.
	DeleteAttempts  int       `json:"delete_attempts,omitempty"`
	DeleteRetryAt   time.Time `json:"delete_retry_at,omitzero"`
	LastDeleteError string    `json:"last_delete_error,omitempty"`
}

// deleteDue is when the key is next to be deleted.
func (pk previousKey) deleteDue() time.Time {
	if pk.DeleteRetryAt.After(pk.Expires) {
		return pk.DeleteRetryAt
	}
	return pk.Expires
}

// clone copies the role, its previous keys included.
func (role *staticRole) clone() *staticRole {
	c := *role
	c.PreviousKeys = append([]previousKey(nil), role.PreviousKeys...)
	return &c
}

// holds reports whether the key id is the role's current or a previous
// key; a nil role holds nothing.
func (role *staticRole) holds(keyID string) bool {
	return role.holdsKeyThat(func(id, _ string) bool { return id == keyID })
}

// isOwnKey reports whether the key name is the role's current or a
// previous key's.
func (role *staticRole) isOwnKey(keyName string) bool {
	return role.holdsKeyThat(func(_, name string) bool { return name == keyName })
}

// holdsKeyThat reports whether the role's current key or one of its
// previous keys matches; a nil role holds nothing.
func (role *staticRole) holdsKeyThat(match func(id, name string) bool) bool {
	if role == nil {
		return false
	}
	if match(role.KeyID, role.KeyName) {
		return true
	}
	for _, pk := range role.PreviousKeys {
		if match(pk.KeyID, pk.KeyName) {
			return true
		}
	}
	return false
}

func getStaticRole(ctx context.Context, s logical.Storage, name string) (*staticRole, error) {
	role, err := getEntry[staticRole](ctx, s, staticRoleStoragePrefix+name)
	if err != nil || role == nil {
		return role, err
	}
	if id := role.LegacyPreviousKeyID; id != "" && !slices.ContainsFunc(role.PreviousKeys, func(pk previousKey) bool { return pk.KeyID == id }) {
		role.PreviousKeys = append(role.PreviousKeys, previousKey{KeyID: id, KeyName: role.LegacyPreviousKeyName, Expires: role.LegacyPreviousExpires})
	}
	role.LegacyPreviousKeyID, role.LegacyPreviousKeyName, role.LegacyPreviousExpires = "", "", time.Time{}
	return role, nil
}

func putStaticRole(ctx context.Context, s logical.Storage, name string, role *staticRole) error {
	stored := *role
	if n := len(role.PreviousKeys); n > 0 {
		newest := role.PreviousKeys[n-1]
		stored.LegacyPreviousKeyID, stored.LegacyPreviousKeyName, stored.LegacyPreviousExpires = newest.KeyID, newest.KeyName, newest.Expires
	}
	return putEntry(ctx, s, staticRoleStoragePrefix+name, &stored)
}

// ownedKeys are the role's keys, previous ones first.
func (role *staticRole) ownedKeys(name string) []*ownedKey {
	var keys []*ownedKey
	for _, pk := range role.PreviousKeys {
		keys = append(keys, role.ownedKey(name, pk.KeyID, pk.KeyName, time.Time{}))
	}
	if role.KeyID != "" {
		keys = append(keys, role.ownedKey(name, role.KeyID, role.KeyName, role.LastRotated))
	}
	return keys
}

// ownedKey describes one of the role's keys as the mount records it.
func (role *staticRole) ownedKey(name, keyID, keyName string, created time.Time) *ownedKey {
	return &ownedKey{
		KeyID:     keyID,
		KeyName:   keyName,
		ProjectID: role.ProjectID,
		Config:    role.Config,
		Role:      name,
		Kind:      keyKindStatic,
		Created:   created.UTC(),
	}
}

// deleteFailed records a failed (or impossible) delete of the key and
// when to try again.
func (pk *previousKey) deleteFailed(now time.Time, err error) {
	pk.DeleteAttempts++
	pk.DeleteRetryAt = now.Add(backoff(pk.DeleteAttempts)).UTC()
	pk.LastDeleteError = err.Error()
}

// backoff is the wait before attempt n+1 after n failures.
func backoff(failures int) time.Duration {
	return min(rotationBackoffMin<<min(failures-1, 10), rotationBackoffMax)
}

func (role *staticRole) clearRotationFailure() {
	role.LastError, role.LastErrorTime, role.FailedAttempts, role.RetryAt = "", time.Time{}, 0, time.Time{}
}

// nextRotationAttempt is when the role will next be rotated on its own: a
// retry after a failed scheduled rotation, else the next scheduled time;
// zero for manual-only roles.
func (role *staticRole) nextRotationAttempt() time.Time {
	switch {
	case role.DisableAutomatedRotation:
		return time.Time{}
	case !role.RetryAt.IsZero():
		return role.RetryAt
	}
	return role.NextRotation
}

// dueAt is when the scheduler must next look at the role: the end of an
// overlap (or the retry of a failed delete), or the next rotation attempt.
func (role *staticRole) dueAt() time.Time {
	due := role.nextRotationAttempt()
	for _, pk := range role.PreviousKeys {
		if d := pk.deleteDue(); due.IsZero() || d.Before(due) {
			due = d
		}
	}
	return due
}

// nextRotationAfter computes the next scheduled rotation after t.
func (role *staticRole) nextRotationAfter(t time.Time) time.Time {
	switch {
	case role.DisableAutomatedRotation:
		return time.Time{}
	case role.RotationSchedule != "":
		sched, err := rotation.DefaultScheduler.Parse(role.RotationSchedule)
		if err != nil {
			return time.Time{} // validated on write
		}
		return sched.Next(t)
	default:
		return t.Add(role.RotationPeriod)
	}
}

// shortestRotationGap is the shortest time between two rotations: the
// period, or for a schedule the shortest gap among its next occurrences
// (uneven schedules such as "0 0,1 * * *" have short and long gaps).
func (role *staticRole) shortestRotationGap(now time.Time) time.Duration {
	if role.RotationSchedule == "" || role.DisableAutomatedRotation {
		return role.RotationPeriod
	}
	const occurrences = 32
	var shortest time.Duration
	prev := role.nextRotationAfter(now)
	for i := 0; i < occurrences && !prev.IsZero(); i++ {
		next := role.nextRotationAfter(prev)
		if gap := next.Sub(prev); !next.IsZero() && (shortest == 0 || gap < shortest) {
			shortest = gap
		}
		prev = next
	}
	return shortest
}

// rotationInterval is the time between rotations: the period, or for a
// schedule the gap between its next two times after now.
func (role *staticRole) rotationInterval(now time.Time) time.Duration {
	if role.RotationSchedule == "" || role.DisableAutomatedRotation {
		return role.RotationPeriod
	}
	first := role.nextRotationAfter(now)
	if first.IsZero() {
		return 0
	}
	return role.nextRotationAfter(first).Sub(first)
}
