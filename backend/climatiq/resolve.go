package climatiq

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/internal/upstream"
)

// The documents leave two upstream behaviours open, and the client
// assumes the worst of both:
//
//   - A missing id may be answered 400 or 403 rather than 404. A delete so
//     answered is resolved by listing: an id that is not listed is gone,
//     whatever the status said.
//   - A create may commit upstream and still be answered 5xx, time out or
//     lose its connection. Such a create is resolved by looking the new
//     resource up by its name, which callers make unique.

// mayMeanAbsent reports whether an error answer may stand for an id that
// does not exist.
func mayMeanAbsent(err error, statuses ...int) (*Error, bool) {
	var e *Error
	if !errors.As(err, &e) || !slices.Contains(statuses, e.StatusCode) {
		return nil, false
	}
	return e, true
}

// confirmAbsence settles an answer that may mean a missing id: listed says
// whether the id is still listed upstream. When the listing fails, the
// answer stands as it came.
func confirmAbsence(e *Error, listed bool, listErr error) error {
	switch {
	case listErr != nil:
	case listed:
		e.absence = confirmedPresent
	default:
		e.absence = confirmedAbsent
	}
	return e
}

// DeleteProjectKey deletes a key of a project. A key that is gone gives an
// error matching ErrNotFound, which callers treat as deleted: when the
// delete is answered 400, 403 or 404, the project's key list decides
// whether the key is gone (and a project that is gone has no keys). A key
// still listed gives the upstream's error, which then never matches
// ErrNotFound.
func (c *Client) DeleteProjectKey(ctx context.Context, projectID, keyID string) error {
	if projectID == "" {
		return missingID("delete key", "project")
	}
	err := c.DeleteKey(ctx, keyID)
	e, ok := mayMeanAbsent(err, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound)
	if !ok {
		return err
	}
	listed, listErr := c.keyListed(ctx, projectID, keyID)
	return confirmAbsence(e, listed, listErr)
}

// keyListed reports whether a project lists a key.
func (c *Client) keyListed(ctx context.Context, projectID, keyID string) (bool, error) {
	keys, err := c.ListKeys(ctx, projectID)
	if err == nil {
		return slices.ContainsFunc(keys, func(k APIKey) bool { return k.ID == keyID }), nil
	}
	if errors.Is(err, ErrNotFound) {
		return false, nil // the project is gone, and its keys with it
	}
	if _, ok := mayMeanAbsent(err, http.StatusBadRequest, http.StatusForbidden); !ok {
		return false, err
	}
	// The project itself may be missing, answered like a missing id.
	projectListed, projectErr := c.projectListed(ctx, projectID)
	switch {
	case projectErr != nil:
		return false, projectErr
	case !projectListed:
		return false, nil
	}
	return false, err // the project is there but will not show its keys
}

// projectListed reports whether the management key sees a project.
func (c *Client) projectListed(ctx context.Context, projectID string) (bool, error) {
	projects, err := c.ListProjects(ctx)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(projects, func(p Project) bool { return p.ID == projectID }), nil
}

// named is what createUnique needs of a created resource.
type named interface{ Project | APIKey }

// uniqueCreate describes one kind of create for createUnique.
type uniqueCreate[T named] struct {
	name   string
	post   func(context.Context) (T, error)
	list   func(context.Context) ([]T, error)
	nameOf func(T) string
	remove func(context.Context, T) error
}

// createUnique creates a resource whose name is unique (callers put a
// nonce in it) and never leaves two of it. A POST is retried by the wire
// only when it never left (upstream.NeverSent); any other failure after it
// was sent may follow a create that committed, and retrying blindly could
// create it twice. So after such an ambiguous failure the resource is
// looked up by name: found, it is the answer, and copies made by earlier
// attempts are deleted, keeping exactly one; not found, the POST is tried
// again while MaxRetries allows. If the lookup fails, the create's error
// is returned and the caller's own recovery (WAL rollback, tidy) finds the
// resource by name later; so it does for a create that commits only after
// a lookup missed it.
func createUnique[T named](ctx context.Context, c *Client, u uniqueCreate[T]) (T, error) {
	var zero T
	for attempt := 0; ; attempt++ {
		created, err := u.post(ctx)
		if err == nil || !c.ambiguous(ctx, err) {
			return created, err
		}
		all, listErr := u.list(ctx)
		if listErr != nil {
			c.wire.Logger().Debug("create failed and the lookup by name too", "error", listErr)
			return zero, err
		}
		var found []T
		for _, r := range all {
			if u.nameOf(r) == u.name {
				found = append(found, r)
			}
		}
		if len(found) > 0 {
			for _, extra := range found[1:] {
				if err := u.remove(ctx, extra); err != nil && !errors.Is(err, ErrNotFound) {
					// The copy keeps the name, so tidy can still find it.
					c.wire.Logger().Warn("could not delete a duplicate left by a retried create", "error", err)
				}
			}
			return found[0], nil
		}
		if attempt >= c.wire.MaxRetries() || c.wire.Pause(ctx, attempt) != nil {
			return zero, err
		}
	}
}

// ambiguous reports whether a create's failure leaves open whether the
// upstream acted on it: a 5xx, or a failure after the request was sent.
// The caller's ctx being done is not: then nobody waits for the answer.
func (c *Client) ambiguous(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode >= http.StatusInternalServerError
	}
	return !upstream.NeverSent(err)
}
