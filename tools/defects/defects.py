#!/usr/bin/env python3
"""Small defects to put back into a scratch copy, one at a time (run.sh): defects.py NAME DIR, or defects.py list.
Each is an exact text replacement in one file; a pattern that no longer matches says so."""
import sys, pathlib
D = {}
def d(name, f, old, new): D[name] = (f, old, new)

d("renew-no-expiry", "secrets.go", "\tif end.After(key.Expires) {\n", "\tif false && end.After(key.Expires) {\n")
d("expiry-not-written", "inventory.go", "\treturn s.Put(ctx, &logical.StorageEntry{Key: moved.listingPath()})\n}", "\treturn nil\n}")
d("rotation-cuts-overlap", "rotation.go", "Expires: now.Add(role.OverlapPeriod).UTC(),", "Expires: now.UTC(),")
d("tidy-ignores-released", "tidy.go", "\tfor _, id := range released {\n\t\trun.tracked[id] = true\n\t}", "\t_ = released")
d("manual-role-rotated", "rotation.go", "\tif trigger != triggerManual { // the engine's own rotations retry with a back-off\n\t\trole.FailedAttempts++", "\tif true {\n\t\trole.FailedAttempts++")
d("403-is-failure", "backend/climatiq/resolve.go", "\te, ok := mayMeanAbsent(err, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound)", "\te, ok := mayMeanAbsent(err, http.StatusBadRequest, http.StatusNotFound)")
d("revoke-forgets-failed-delete", "secrets.go", "\tif err := deleteUpstreamPersistently(ctx, client, &key); err != nil {\n\t\treturn nil, upstreamError(\"deleting key\", err)\n\t}", "\t_ = deleteUpstreamPersistently(ctx, client, &key)")
d("wal-after-create", "rotation.go",
  "\twalID, err := framework.PutWAL(ctx, s, walKindClimatiqKey, key)\n\tif err != nil {\n\t\treturn fmt.Errorf(\"writing WAL entry before creating key: %w\", err)\n\t}\n\tcreated, err := client.CreateKey(ctx, role.ProjectID, keyName)\n\tif err != nil {\n\t\tb.dropWALAfterRollback(ctx, s, walID, key, err)\n\t\treturn upstreamError(\"creating key\", err)\n\t}\n",
  "\tcreated, err := client.CreateKey(ctx, role.ProjectID, keyName)\n\tif err != nil {\n\t\treturn upstreamError(\"creating key\", err)\n\t}\n\twalID, err := framework.PutWAL(ctx, s, walKindClimatiqKey, key)\n\tif err != nil {\n\t\treturn fmt.Errorf(\"writing WAL entry before creating key: %w\", err)\n\t}\n")
d("wal-retired-before-record", "rotation.go", "\terr = b.recordKey(ctx, s, key, nil)\n\tif err == nil {\n\t\terr = putStaticRole(ctx, s, name, role)\n\t}", "\t_ = framework.DeleteWAL(ctx, s, walID)\n\terr = b.recordKey(ctx, s, key, nil)\n\tif err == nil {\n\t\terr = putStaticRole(ctx, s, name, role)\n\t}")
d("slot-not-released", "path_creds.go", "\t\tdefer b.releaseKeySlot(slot)\n", "\n")
d("listing-not-deleted", "inventory.go", "\t\tif err := s.Delete(ctx, bucketPath(id)+names[i]); err != nil {", "\t\tif err := func() error { _ = names[i]; return nil }(); err != nil {")
d("clean-not-waiting", "rotation.go", "\tb.scheduler.inFlight.Wait()\n\tb.scheduler.lock.Lock()\n\tb.scheduler.queue = nil", "\tb.scheduler.lock.Lock()\n\tb.scheduler.queue = nil")
d("per-lease-dropped-from-lease", "ownedkey.go", "\t\t\"project_per_lease\": k.ProjectPerLease,\n", "")
d("overlap-not-rescheduled", "rotation.go", "\t\tif due := role.dueAt(); !due.IsZero() {\n\t\t\tq.put(names[i], role.Config, due)", "\t\tif due := role.nextRotationAttempt(); !due.IsZero() {\n\t\t\tq.put(names[i], role.Config, due)")
d("tidy-exact-cutoff", "tidy.go", "created.Add(time.Second).After(run.cutoff)", "created.After(run.cutoff)")
d("tidy-ignores-inflight-blocks", "tidy.go", "\tfor _, blk := range run.inFlightBlocks {", "\tfor _, blk := range run.inFlightBlocks[:0] {")
d("tidy-expired-without-lock", "tidy.go", "\tlock := b.keyLock(listed.KeyName)\n\tlock.Lock()\n\tdefer lock.Unlock()\n\tk, err := getKey(ctx, s, listed.KeyID)", "\tk, err := getKey(ctx, s, listed.KeyID)")
d("rollback-ignores-released", "wal.go", "\t\tif released, err := s.Get(ctx, releasedPath(key.KeyID)); err != nil || released != nil {\n\t\t\treturn released != nil, err\n\t\t}", "")
d("adopt-unreleases-first", "path_static_roles.go", "\t\towned := role.ownedKey(name, k.ID, k.Name, now)\n", "\t\tif err := unreleaseKey(ctx, s, k.ID); err != nil {\n\t\t\treturn nil, err\n\t\t}\n\t\towned := role.ownedKey(name, k.ID, k.Name, now)\n")
d("count-before-write", "inventory.go", "\tif err := s.Put(ctx, &logical.StorageEntry{Key: k.listingPath()}); err != nil {\n\t\treturn err\n\t}\n\tb.liveCounts.add(k, 1, slot)", "\tb.liveCounts.add(k, 1, slot)\n\tif err := s.Put(ctx, &logical.StorageEntry{Key: k.listingPath()}); err != nil {\n\t\treturn err\n\t}")
d("forget-before-delete-upstream", "rotation.go", "\t\terr := deleteUpstream(ctx, client, key)\n\t\tif err == nil {\n\t\t\terr = b.forgetKey(ctx, s, key)\n\t\t}", "\t\terr := b.forgetKey(ctx, s, key)\n\t\tif err == nil {\n\t\t\terr = deleteUpstream(ctx, client, key)\n\t\t}")
d("adopt-skips-owner-check", "path_static_roles.go", "\tif owner != nil && (owner.kind() != keyKindStatic || owner.Role != name) {", "\tif owner != nil && owner.kind() != keyKindStatic {")

if __name__ == "__main__":
    if sys.argv[1] == "list":
        print("\n".join(D)); sys.exit(0)
    f, old, new = D[sys.argv[1]]
    p = pathlib.Path(sys.argv[2]) / f
    s = p.read_text()
    n = s.count(old)
    if n != 1:
        sys.exit(f"{sys.argv[1]}: pattern found {n} times in {f}")
    p.write_text(s.replace(old, new))
