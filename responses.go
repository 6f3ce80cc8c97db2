package carbon

import (
	"time"

	"github.com/hashicorp/vault/sdk/framework"
)

// The response schemas of reads, for the OpenAPI document: generated
// clients and the Vault UI learn what comes back and of which type.

func okResponse(fields map[string]*framework.FieldSchema) map[int][]framework.Response {
	return map[int][]framework.Response{200: {{Description: "OK", Fields: fields}}}
}

func str(description string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeString, Description: description}
}

func integer(description string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeInt64, Description: description}
}

func boolean(description string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeBool, Description: description}
}

func list(description string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeStringSlice, Description: description}
}

func timestamp(description string) *framework.FieldSchema {
	return str(description + " (RFC 3339)")
}

var configReadResponse = okResponse(map[string]*framework.FieldSchema{
	"provider":           str("climatiq or altruistiq"),
	"api_url":            str("Base URL of the regular API"),
	"verify_connection":  boolean("Whether the last write checked the credentials upstream"),
	"request_timeout":    integer("Timeout of one upstream attempt, in seconds"),
	"max_retries":        integer("Retries after network errors and 5xx"),
	"rate_limit":         {Type: framework.TypeFloat, Description: "Max upstream requests per second; 0 for none"},
	"management_url":     str("Climatiq: management API base URL"),
	"tidy_interval":      integer("Climatiq: periodic tidy interval in seconds; 0 for off"),
	"verify_issued_keys": boolean("Climatiq: whether new keys are checked against api_url"),
	"client_id":          str("Altruistiq: OAuth client id"),
	"token_url":          str("Altruistiq: token endpoint"),
	"auth_style":         str("Altruistiq: params or header"),
	"scopes":             list("Altruistiq: default scopes"),
})

var configDeleteResponse = map[int][]framework.Response{
	204: {{Description: "Deleted"}},
	200: {{Description: "Deleted with abandon_rollbacks=true, giving up rollbacks it could not finish", Fields: map[string]*framework.FieldSchema{
		"abandoned_rollbacks": {Type: framework.TypeSlice, Description: "Each abandoned WAL entry: id, kind, created, covers (the key names it covers) and sweep (the carbon-sweep command that lists them; add -delete to delete them)"},
	}}},
}

var roleReadResponse = okResponse(map[string]*framework.FieldSchema{
	"config":            str("Connection the role issues from"),
	"ttl":               integer("Default lease TTL in seconds; 0 for the mount's"),
	"max_ttl":           integer("Max lease TTL in seconds; 0 for the mount's"),
	"project_id":        str("Climatiq: project of the keys"),
	"project_per_lease": boolean("Climatiq: a project per lease"),
	"key_name_template": str("Climatiq: template of key names"),
	"max_keys":          integer("Climatiq: live keys allowed; 0 for no cap"),
	"scopes":            list("Altruistiq: OAuth scopes"),
})

var staticRoleReadResponse = okResponse(map[string]*framework.FieldSchema{
	"config":                     str("Climatiq connection"),
	"project_id":                 str("Project of the key"),
	"key_id":                     str("Current key id"),
	"key_name":                   str("Current key name"),
	"overlap_period":             integer("Overlap in seconds"),
	"delete_key_on_remove":       boolean("Whether deleting the role deletes its keys"),
	"last_rotated":               timestamp("Last rotation"),
	"next_rotation":              timestamp("Next rotation or retry; empty for manual-only roles"),
	"rotation_period":            integer("Rotation period in seconds"),
	"rotation_schedule":          str("Cron schedule"),
	"rotation_window":            integer("Rotation window in seconds"),
	"disable_automated_rotation": boolean("Manual rotation only"),
	"previous_key_id":            str("Newest replaced key still in its overlap"),
	"previous_key_expires":       timestamp("End of that key's overlap"),
	"previous_keys":              {Type: framework.TypeSlice, Description: "Every replaced key waiting for its end: key_id, expires, and any delete error"},
	"last_rotation_error":        str("Error of the last failed rotation"),
	"last_rotation_error_time":   timestamp("Time of that error"),
})

var staticCredsResponse = okResponse(map[string]*framework.FieldSchema{
	"api_key":         str("The Climatiq API key"),
	"key_id":          str("Key id"),
	"key_name":        str("Key name"),
	"project_id":      str("Project of the key"),
	"last_rotated":    timestamp("Last rotation"),
	"next_rotation":   timestamp("Next rotation, or its retry"),
	"ttl":             integer("Whole seconds until next_rotation"),
	"rotation_period": integer("Whole seconds between rotations"),
	"previous_key_id": str("Newest replaced key still valid"),
})

var credsResponse = okResponse(map[string]*framework.FieldSchema{
	"api_key":      str("Climatiq: the new API key"),
	"key_id":       str("Climatiq: key id"),
	"key_name":     str("Climatiq: key name"),
	"project_id":   str("Climatiq: project of the key"),
	"access_token": str("Altruistiq: the OAuth access token"),
	"token_type":   str("Altruistiq: Bearer"),
	"expires_at":   timestamp("Altruistiq: token expiry"),
})

var keyReadResponse = okResponse(map[string]*framework.FieldSchema{
	"key_id":     str("Upstream key id"),
	"key_name":   str("Upstream key name"),
	"project_id": str("Project of the key"),
	"config":     str("Connection"),
	"role":       str("Role that holds the key"),
	"kind":       str("dynamic or static"),
	"created":    timestamp("Creation"),
	"expires":    timestamp("Dynamic keys: latest end of the lease"),
})

var tidyReportFields = map[string]*framework.FieldSchema{
	"state":           str("running, finished, or interrupted (the plugin stopped while it ran)"),
	"started":         timestamp("Start of the run"),
	"finished":        timestamp("End of the run; empty while it runs"),
	"dry_run":         boolean("Whether nothing was deleted"),
	"config":          str("The connection tidied; empty for all"),
	"min_age":         integer("min_age in seconds"),
	"periodic":        boolean("Whether tidy_interval started the run"),
	"orphans":         list("Marked keys nothing tracks"),
	"orphan_projects": list("Marked per-lease projects nothing tracks"),
	"stale_records":   list("Static keys whose inventory record names a role that does not hold them; the records were forgotten"),
	"expired":         list("Keys of leases past their recorded expiry"),
	"stale_wal":       {Type: framework.TypeSlice, Description: "Stale WAL entries rolled back (in a dry run: that would be), each with id, kind, created and what it covers"},
	"deleted":         integer("Keys and projects deleted"),
	"wal_rolled_back": integer("Stale WAL entries resolved"),
	"errors":          list("Steps that failed, each with its connection and cause"),
	"connections":     {Type: framework.TypeMap, Description: "Per connection: state, outcome (succeeded, failed, cancelled), started, finished, projects_scanned of projects, and its own orphans, orphan_projects, expired, stale_records, stale_wal, deleted, wal_rolled_back and errors"},
}

var tidyResponse = map[int][]framework.Response{
	200: {{Description: "The run ended at once: its report", Fields: tidyReportFields}},
	202: {{Description: "The run goes on in the background: what was started, and its progress so far", Fields: tidyReportFields}},
}

var tidyStatusResponse = okResponse(tidyReportFields)

var rotateRoleResponse = okResponse(map[string]*framework.FieldSchema{
	"key_id":       str("The new key id"),
	"last_rotated": timestamp("Time of this rotation"),
})

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
