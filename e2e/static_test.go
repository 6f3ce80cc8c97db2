package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// staticCreds reads static-creds/<name> through the CLI.
func staticCreds(t *testing.T, name string) (key, keyID string, ttl int64, data map[string]any) {
	t.Helper()
	s := cliJSON(t, "read", "-format=json", mount+"/static-creds/"+name)
	ttlNum, ok := s.Data["ttl"].(json.Number)
	if !ok {
		t.Fatalf("static-creds ttl is %T, want a whole number: %v", s.Data["ttl"], s.Data)
	}
	ttl, err := ttlNum.Int64()
	if err != nil {
		t.Fatalf("static-creds ttl %q is not a whole number", ttlNum)
	}
	if _, ok := s.Data["rotation_period"].(json.Number); !ok {
		t.Fatalf("static-creds lacks a whole-number rotation_period: %v", s.Data)
	}
	return s.Data["api_key"].(string), s.Data["key_id"].(string), ttl, s.Data
}

func TestStaticRoleRotatesOnItsOwn(t *testing.T) {
	writeClimatiqConfig(t, "cq-static")
	cli(t, "write", mount+"/static-roles/auto", "config=cq-static", "project_id="+projectID, "rotation_period=6s")

	key, keyID, ttl1, _ := staticCreds(t, "auto")
	if !keyWorks(t, key) || ttl1 > 6 {
		t.Fatalf("static key works=%v ttl=%d", keyWorks(t, key), ttl1)
	}
	time.Sleep(2 * time.Second)
	_, sameID, ttl2, _ := staticCreds(t, "auto")
	if sameID == keyID && ttl2 >= ttl1 {
		t.Fatalf("ttl did not count down: %d then %d", ttl1, ttl2)
	}

	var newID string
	eventually(t, 15*time.Second, "scheduled rotation", func() bool {
		_, newID, _, _ = staticCreds(t, "auto")
		return newID != keyID
	})
	if _, ok := climatiqFake.Key(keyID); ok {
		t.Fatal("old key still exists upstream after the rotation")
	}
	if keyWorks(t, key) {
		t.Fatal("old key still works after the rotation")
	}
	cli(t, "delete", mount+"/static-roles/auto")
	if _, ok := climatiqFake.Key(newID); ok {
		t.Fatal("deleting the role left its key upstream")
	}
}

func TestRotateRoleNow(t *testing.T) {
	writeClimatiqConfig(t, "cq-rotate")
	cli(t, "write", mount+"/static-roles/manual", "config=cq-rotate", "project_id="+projectID, "rotation_period=1h")
	_, oldID, ttl, _ := staticCreds(t, "manual")
	if ttl < 3500 {
		t.Fatalf("ttl = %d, want about 3600", ttl)
	}
	out := cliJSON(t, "write", "-format=json", "-f", mount+"/rotate-role/manual")
	newID, _ := out.Data["key_id"].(string)
	if newID == "" || newID == oldID || out.Data["last_rotated"] == "" {
		t.Fatalf("rotate-role answered %v", out.Data)
	}
	if _, ok := climatiqFake.Key(oldID); ok {
		t.Fatal("old key still exists upstream")
	}
	if _, id, ttl, _ := staticCreds(t, "manual"); id != newID || ttl < 3500 {
		t.Fatalf("static-creds after rotate-role: id %s ttl %d", id, ttl)
	}
	cli(t, "delete", mount+"/static-roles/manual")
}

// TestOverlapSurvivesRestart stops Vault during an overlap: after the
// restart the old key is still deleted when the overlap ends, and the
// schedule resumes.
func TestOverlapSurvivesRestart(t *testing.T) {
	writeClimatiqConfig(t, "cq-restart")
	cli(t, "write", mount+"/static-roles/restart", "config=cq-restart", "project_id="+projectID,
		"rotation_period=30s", "overlap_period=12s")
	_, firstID, _, _ := staticCreds(t, "restart")
	cli(t, "write", "-f", mount+"/rotate-role/restart")
	_, secondID, _, data := staticCreds(t, "restart")
	if data["previous_key_id"] != firstID {
		t.Fatalf("no overlap running: %v", data)
	}
	overlapEnd := time.Now().Add(12 * time.Second)
	nextRotation := time.Now().Add(30 * time.Second)

	vault.Stop()
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), vaultStartBudget)
	defer cancel()
	if err := vault.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := climatiqFake.Key(firstID); !ok && time.Now().Before(overlapEnd.Add(-time.Second)) {
		t.Fatal("old key deleted before its overlap ended")
	}
	eventually(t, time.Until(overlapEnd)+6*time.Second, "old key deleted when the overlap ends", func() bool {
		_, ok := climatiqFake.Key(firstID)
		return !ok
	})
	if _, ok := climatiqFake.Key(secondID); !ok {
		t.Fatal("current key lost across the restart")
	}
	eventually(t, time.Until(nextRotation)+8*time.Second, "schedule resumed after the restart", func() bool {
		s, err := vault.Client.Logical().Read(mount + "/static-creds/restart")
		return err == nil && s != nil && s.Data["key_id"] != secondID
	})
	cli(t, "delete", mount+"/static-roles/restart")
}
