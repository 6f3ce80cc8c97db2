package carbon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathTidy(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tidy$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationVerb:   "tidy",
			},
			Fields: map[string]*framework.FieldSchema{
				"dry_run": {
					Type:        framework.TypeBool,
					Description: "Report what would be deleted without deleting anything.",
				},
				"config": {
					Type:        framework.TypeString,
					Description: "Tidy only this Climatiq connection. Default: every Climatiq connection (Altruistiq connections have no keys to tidy).",
				},
				"min_age": {
					Type:        framework.TypeDurationSecond,
					Default:     int(defaultTidyMinAge.Seconds()),
					Description: "Leave keys and WAL entries younger than this alone, so issuance in flight is never raced. Default 15m.",
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  refuseUnknownFields(b.pathTidyWrite),
					Responses:                 tidyResponse,
					ForwardPerformanceStandby: true,
					Summary:                   "Find and delete upstream keys this mount created but no longer tracks.",
				},
			},
			HelpSynopsis:    "Find and delete upstream keys this mount created but no longer tracks.",
			HelpDescription: strings.TrimSpace(pathTidyHelp),
		},
		{
			Pattern: "tidy-status$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefixCarbon,
				OperationSuffix: "tidy-status",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:                  b.pathTidyStatusRead,
					Responses:                 tidyStatusResponse,
					ForwardPerformanceStandby: true, // the run goes on on the active node
					Summary:                   "Read the report of the last tidy, manual or periodic.",
				},
			},
			HelpSynopsis:    "Read the report of the last tidy, manual or periodic.",
			HelpDescription: "Returns what the last tidy run on this mount found and did: started, finished, dry_run, config, min_age (seconds), orphans, orphan_projects, expired, deleted, wal_rolled_back and errors (each naming its connection and cause).",
		},
	}
}

func (b *backend) pathTidyStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if run := b.runningTidy(); run != nil {
		return &logical.Response{Data: run.snapshot().data()}, nil
	}
	report, err := getEntry[tidyReport](ctx, req.Storage, tidyStatusStorageKey)
	if err != nil || report == nil {
		return nil, err
	}
	switch report.State {
	case "": // written before runs had states
		report.State = tidyFinished
	case tidyRunning: // and no instance runs it: the plugin stopped midway
		report.State = tidyInterrupted
	}
	return &logical.Response{Data: report.data()}, nil
}

// tidyAnswerWait is how long a tidy request waits for its run: one that
// ends by then is answered with its report, as a short run always was;
// a longer one with what was started (202), and tidy-status follows it.
const tidyAnswerWait = 2 * time.Second

func (b *backend) pathTidyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	opts := tidyOptions{dryRun: d.Get("dry_run").(bool), minAge: time.Duration(d.Get("min_age").(int)) * time.Second}
	if opts.minAge < 0 {
		return logical.ErrorResponse("min_age: must not be negative"), nil
	}
	if only := strings.TrimSpace(d.Get("config").(string)); only != "" {
		if err := validateName("config", only); err != nil {
			return errorResponse(err)
		}
		cfg, err := getConnectionConfig(ctx, req.Storage, only)
		if err != nil {
			return nil, err
		}
		if cfg == nil || cfg.Provider != providerClimatiq {
			return logical.ErrorResponse("config: %q is not a climatiq connection; tidy looks after Climatiq keys", only), nil
		}
		opts.configs = []string{only}
	}
	run, running := b.startTidy(req.Storage, opts)
	switch {
	case running != nil:
		r := running.snapshot()
		what := "every connection"
		if r.Config != "" {
			what = "config " + r.Config
		}
		return logical.ErrorResponse("tidy: a tidy of %s started at %s is still running; read %stidy-status for its progress and start this one once it has finished",
			what, formatTime(r.Started), req.MountPoint), nil
	case run == nil:
		return nil, logical.CodedError(statusServiceUnavailable, "tidy: the plugin is stopping; try again once the mount is back")
	}
	select {
	case <-run.done:
		return &logical.Response{Data: run.final.data()}, nil
	case <-time.After(tidyAnswerWait):
	case <-ctx.Done():
	}
	resp := &logical.Response{Data: run.snapshot().data()}
	resp.AddWarning(fmt.Sprintf("tidy is still running in the background; read %stidy-status for its progress and each connection's outcome", req.MountPoint))
	return logical.RespondWithStatusCode(resp, req, statusAccepted)
}

const pathTidyHelp = `
Finds upstream keys that carry this mount's marker (every key name the mount
creates starts with it) but that the mount no longer tracks, and reports them
(orphans, orphan_projects) or, unless dry_run=true, deletes them (deleted).
Keys younger than min_age are left alone, so issuance in flight is never raced;
keys without the marker are never touched.

Tidy also rolls back WAL entries older than min_age at once, and deletes keys
whose inventory entry outlived its lease's max_ttl by more than an hour
(expired): the sign of a Vault crash between the plugin's answer and the lease
being stored.

When a Vault cluster and its storage are lost, tidy cannot run: carbon-sweep
(cmd/carbon-sweep, in the release archives) lists and deletes a lost mount's
keys by its marker and their age, from outside Vault.
`
