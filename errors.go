package carbon

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/altruistiq"
	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiq"
)

// How a handler's failure reaches the caller. Vault answers a Go error from
// a plugin with a 500, unless the error is a logical.HTTPCodedError returned
// as it is (not wrapped): that one crosses the plugin boundary with its
// status (sdk plugin/pb/translation.go).

// inputError is bad input from the caller: handlers turn it into a 400 whose
// message names the field and the fix.
type inputError struct {
	field string
	msg   string
}

func (e *inputError) Error() string { return e.field + ": " + e.msg }

func invalidField(field, format string, args ...any) error {
	return &inputError{field: field, msg: fmt.Sprintf(format, args...)}
}

// errorResponse turns an inputError into a 400 response and passes any
// other error through for Vault to report.
func errorResponse(err error) (*logical.Response, error) {
	var ie *inputError
	if errors.As(err, &ie) {
		return logical.ErrorResponse(ie.Error()), nil
	}
	return nil, err
}

// Statuses the engine answers with beside Vault's own (a request that
// cannot be meant, 400; a method a path does not have, 405), the upstream
// answers it tells apart, and, as Vault's own engines use them, upstream
// failures, where the caller did nothing wrong and a service behind Vault
// failed.
const (
	statusAccepted           = 202
	statusBadRequest         = 400
	statusUnauthorized       = 401
	statusForbidden          = 403
	statusNotFound           = 404
	statusMethodNotAllowed   = 405
	statusTooManyRequests    = 429
	statusBadGateway         = 502
	statusServiceUnavailable = 503
	statusGatewayTimeout     = 504
)

// upstreamError reports an upstream failure with the upstream's status and
// message (the upstream clients' errors carry no secrets) as a 502; a 504
// when the upstream did not answer in time; a 503 when it kept asking to
// wait (429) beyond what the engine waits out for one request. It stays
// an error, so Vault's expiration manager retries a revocation that fails
// this way.
func upstreamError(op string, err error) error {
	status := statusBadGateway
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		status = statusGatewayTimeout
	case rateLimited(err):
		status = statusServiceUnavailable
	}
	return logical.CodedError(status, fmt.Sprintf("%s: %s", op, err))
}

// rateLimited: the upstream kept answering 429 past what the engine waits.
func rateLimited(err error) bool {
	return errors.Is(err, climatiq.ErrRateLimited) || errors.Is(err, altruistiq.ErrRateLimited)
}
