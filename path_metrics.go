package carbon

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathMetrics(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "metrics$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationSuffix: "metrics",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathMetricsRead,
					Responses: map[int][]framework.Response{200: {{
						Description: "The mount's metrics in the Prometheus text exposition format (text/plain; version=0.0.4)",
						MediaType:   metricsContentType,
					}}},
					Summary: "Read this mount's metrics, for Prometheus.",
				},
			},
			HelpSynopsis:    "Read this mount's metrics, for Prometheus.",
			HelpDescription: pathMetricsHelp,
		},
	}
}

const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// pathMetricsRead answers the mount's figures as Prometheus scrapes them.
// It is an ordinary authenticated path: a scraper needs a token whose
// policy grants read on it. Not forwarded from a performance standby:
// each node's plugin process has its own figures.
func (b *backend) pathMetricsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	body, err := b.gatherMetrics(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: metricsContentType,
		logical.HTTPRawBody:     body,
		logical.HTTPStatusCode:  200,
	}}, nil
}

const pathMetricsHelp = `Returns this mount's metrics in the Prometheus text format, names
prefixed vault_carbon_: upstream requests by connection, operation and status
class, their latency, retries and waits (rate_limit, Retry-After); issuances,
revocations and their outcomes; static role rotations, their lateness and
failures; overlap ends; tidy runs, orphans found and deleted; live keys per
role and per connection; WAL entries pending. Scrape it with a Vault token
(Authorization: Bearer) whose policy grants read on <mount>/metrics. Each
node answers with its own plugin process's figures (a standby forwards the
request to the active node; a performance standby answers itself).`
