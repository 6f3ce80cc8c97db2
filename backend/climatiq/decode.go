package climatiq

import (
	"bytes"
	"encoding/json"
	"errors"
)

// opaqueID decodes an id that should be a JSON string but is accepted as a
// number too, keeping its exact text: ids are opaque and never parsed.
type opaqueID string

func (id *opaqueID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*id = opaqueID(s)
	case bytes.Equal(b, []byte("null")):
		*id = ""
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return errors.New("id is neither a string nor a number")
		}
		*id = opaqueID(n)
	}
	return nil
}

// UnmarshalJSON accepts ids as strings or numbers and ignores unknown fields.
func (p *Project) UnmarshalJSON(b []byte) error {
	var w struct {
		ID    opaqueID `json:"id"`
		Name  string   `json:"project_name"`
		Owner struct {
			ID opaqueID `json:"id"`
		} `json:"owner"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	p.ID, p.Name, p.Owner.ID = string(w.ID), w.Name, string(w.Owner.ID)
	return nil
}

// UnmarshalJSON accepts ids as strings or numbers and ignores unknown fields.
func (k *APIKey) UnmarshalJSON(b []byte) error {
	var w struct {
		ID      opaqueID `json:"id"`
		Name    string   `json:"key_name"`
		Key     string   `json:"key"`
		Project struct {
			ID opaqueID `json:"id"`
		} `json:"project"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	k.ID, k.Name, k.Key, k.Project.ID = string(w.ID), w.Name, w.Key, string(w.Project.ID)
	return nil
}

// decodeJSON decodes a success body; an empty body decodes to nothing.
func decodeJSON(data []byte, out any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("empty body")
	}
	return json.Unmarshal(data, out)
}
