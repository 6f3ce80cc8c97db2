package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-carbon/vault-plugin-carbon/backend/climatiqtest"
)

const (
	scaleKeys   = 100_000
	scaleRounds = 3  // interleaved issuance rounds per measurement
	scaleRoles  = 20 // keys spread over 20 roles and projects: a project's key list is one upstream answer
)

// scaleFigures is one measurement of every operation whose cost must not
// grow with the live keys.
type scaleFigures struct {
	issueCapped, issueUncapped  time.Duration // p50, c=1
	sshOTP                      time.Duration // p50, c=1: Vault's own issuance, the control
	tputCapped, tputUncapped    float64       // c=16
	keyRead, roleRead, page1000 time.Duration // p50
	pagedList, oneList          time.Duration // every page of 1,000 in turn; one LIST without limit
	configDelete, tidy          time.Duration
	rssMB, rssAfterOneList      float64 // steady state; after the LIST without limit
	listed                      int
}

// scale fills the mount to scaleKeys live keys through the plugin's own
// creds/ path (the keys and their leases are real; nothing is written to
// storage behind the plugin's back) and measures each operation at ~0 keys
// and at scaleKeys in the same run.
func (e *env) scale() error {
	fake := climatiqtest.NewServer(managementKey)
	defer fake.Close()
	c := e.client()
	cmds := [][]string{{"write", mount + "/config/cqscale", "provider=climatiq", "management_key=" + managementKey,
		"management_url=" + fake.ManagementURL(), "api_url=" + fake.APIURL()}}
	for i := range scaleRoles {
		project := fake.AddProject(fmt.Sprintf("scale-%02d", i)).ID
		cmds = append(cmds, []string{"write", fmt.Sprintf("%s/roles/scale%02d", mount, i), "config=cqscale", "project_id=" + project,
			"ttl=24h", fmt.Sprintf("max_keys=%d", scaleKeys)})
	}
	// The issuance figures come from two roles of their own, so the keys
	// they issue and revoke never touch the filled roles.
	cmds = append(cmds,
		[]string{"write", mount + "/roles/capped", "config=cqscale", "project_id=" + fake.AddProject("capped").ID, "ttl=24h",
			fmt.Sprintf("max_keys=%d", scaleKeys)},
		[]string{"write", mount + "/roles/uncapped", "config=cqscale", "project_id=" + fake.AddProject("uncapped").ID, "ttl=24h"})
	for _, cmd := range cmds {
		if _, err := e.vault.Vault(cmd...); err != nil {
			return err
		}
	}
	// One live key, so the ~0 measurement has an id to read and a
	// connection with a live key to refuse deleting.
	if _, err := c.Logical().Read(mount + "/creds/scale00"); err != nil {
		return err
	}

	empty, err := e.measureScale(c)
	if err != nil {
		return err
	}
	fillStart := time.Now()
	var first, last batch
	per := scaleKeys / 10
	for chunk := range 10 {
		b := runBatch(per, 32, func() error {
			_, err := c.Logical().Read(fmt.Sprintf("%s/creds/scale%02d", mount, rand.IntN(scaleRoles)))
			return err
		})
		if b.errors > 0 {
			return fmt.Errorf("filling to %d keys: %d errors, first: %v", scaleKeys, b.errors, b.firstErr)
		}
		switch chunk {
		case 0:
			first = b
		case 9:
			last = b
		}
		fmt.Printf("    %d live keys\n", (chunk+1)*per)
	}
	fillTime := time.Since(fillStart)
	full, err := e.measureScale(c)
	if err != nil {
		return err
	}

	r := e.report
	r.section("6. Scale: 100,000 live keys")
	r.line("The mount is filled to %d live keys by %d issuances through `creds/` at concurrency 32 (real keys on the fake upstream, "+
		"real Vault leases), spread over %d roles with `max_keys` set, in %s. Every figure is measured twice in this run: with ~0 keys "+
		"(one) and with %d. Issuance is measured on two roles of their own (`capped`, with `max_keys`, and `uncapped`) in %d "+
		"interleaved rounds whose order alternates: 200 issuances at c=1 (latencies pooled) and 1,600 at c=16 (throughput: median "+
		"of the rounds), revoked after each batch, untimed. The same rounds time Vault's ssh OTP engine as a control.\n",
		scaleKeys+1, scaleKeys, scaleRoles, fillTime.Round(time.Second), scaleKeys+1, scaleRounds)
	r.line("| operation | ~0 keys | %d keys | ratio |\n|---|---|---|---|", scaleKeys)
	row := func(name string, a, b time.Duration) {
		r.line("| %s | %s | %s | %.2f× |", name, ms(a), ms(b), float64(b)/float64(a))
	}
	row("issuance p50, role with max_keys, c=1", empty.issueCapped, full.issueCapped)
	row("issuance p50, role without max_keys, c=1", empty.issueUncapped, full.issueUncapped)
	row("control: Vault's own ssh OTP issuance p50, c=1 (no plugin code)", empty.sshOTP, full.sshOTP)
	r.line("| issuance throughput, role with max_keys, c=16 | %.0f /s | %.0f /s | %.2f× |", empty.tputCapped, full.tputCapped, empty.tputCapped/full.tputCapped)
	r.line("| issuance throughput, role without max_keys, c=16 | %.0f /s | %.0f /s | %.2f× |", empty.tputUncapped, full.tputUncapped, empty.tputUncapped/full.tputUncapped)
	row("read `keys/:key_id` p50", empty.keyRead, full.keyRead)
	row("read `roles/:name` p50 (for comparison)", empty.roleRead, full.roleRead)
	row("`LIST keys/ limit=1000` page p50", empty.page1000, full.page1000)
	row(fmt.Sprintf("full listing, pages of 1,000 (%d then %d keys)", empty.listed, full.listed), empty.pagedList, full.pagedList)
	row("one `LIST keys/` without limit (every key_info in one answer)", empty.oneList, full.oneList)
	row("config delete refused for live keys", empty.configDelete, full.configDelete)
	row("`tidy dry_run=true config=cqscale`", empty.tidy, full.tidy)
	r.line("| plugin RSS, steady | %.1f MiB | %.1f MiB | |", empty.rssMB, full.rssMB)
	r.line("| plugin RSS right after the LIST without limit | %.1f MiB | %.1f MiB | |", empty.rssAfterOneList, full.rssAfterOneList)
	r.line("| fill throughput, c=32 (first 10,000 / last 10,000) | %.0f /s | %.0f /s | %.2f× |\n", first.throughput(), last.throughput(), first.throughput()/last.throughput())

	within := func(a, b time.Duration, f float64) bool { return float64(b) <= f*float64(a) }
	r.target("issuance p50 with max_keys at 100k ≤ 1.2× empty", within(empty.issueCapped, full.issueCapped, 1.2),
		fmt.Sprintf("%.2f×", float64(full.issueCapped)/float64(empty.issueCapped)))
	r.target("issuance p50 without max_keys at 100k ≤ 1.2× empty", within(empty.issueUncapped, full.issueUncapped, 1.2),
		fmt.Sprintf("%.2f×", float64(full.issueUncapped)/float64(empty.issueUncapped)))
	r.target("issuance throughput c=16 at 100k ≥ 1/1.2 of empty (with max_keys)", full.tputCapped*1.2 >= empty.tputCapped,
		fmt.Sprintf("%.2f×", empty.tputCapped/full.tputCapped))
	r.target("issuance throughput c=16 at 100k ≥ 1/1.2 of empty (without max_keys)", full.tputUncapped*1.2 >= empty.tputUncapped,
		fmt.Sprintf("%.2f×", empty.tputUncapped/full.tputUncapped))
	r.target("keys/:key_id read at 100k ≤ 2× a role read", within(full.roleRead, full.keyRead, 2),
		fmt.Sprintf("%s vs %s", ms(full.keyRead), ms(full.roleRead)))
	r.target("a LIST page of 1,000 at 100k ≤ 100 ms", full.page1000 <= 100*time.Millisecond, ms(full.page1000))
	r.target("the full listing (pages of 1,000) at 100k ≤ 5 s", full.pagedList <= 5*time.Second, ms(full.pagedList))
	r.target("tidy of 100k keys ≤ 60 s", full.tidy <= 60*time.Second, ms(full.tidy))
	r.target("plugin RSS at 100k ≤ 64 MiB (steady)", full.rssMB <= 64, fmt.Sprintf("%.1f MiB", full.rssMB))
	r.line("\nConfig delete is measured where only the live-key check refuses it (a connection with one live key and no role); " +
		"its figure is the HTTP round trip of a refused delete. The LIST without limit holds every key_info in memory at once " +
		"(about 300 bytes a key as JSON, encoded again by Vault and the client): read large inventories by pages.\n")
	return nil
}

func (e *env) measureScale(c *api.Client) (scaleFigures, error) {
	var f scaleFigures
	read := func(path string) func() error {
		return func() error { _, err := c.Logical().Read(path); return err }
	}
	timed := func(n, conc int, op func() error) (batch, error) {
		b := runBatch(n, conc, op)
		if b.errors > 0 {
			return b, b.firstErr
		}
		return b, nil
	}
	// Issuance on two roles kept for the measurement (one capped, one not),
	// in interleaved rounds whose order alternates, so neither pays alone
	// for what the machine or Vault was still doing; latencies are pooled,
	// throughput is the median of the rounds. The measured keys are revoked
	// after each batch (not timed), so the mount holds what was filled.
	var capped, uncapped, ssh []time.Duration
	var tputCapped, tputUncapped []float64
	for round := range scaleRounds {
		order := []string{"capped", "uncapped"}
		if round%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, role := range order {
			b, err := timed(200, 1, read(mount+"/creds/"+role))
			if err != nil {
				return f, err
			}
			b16, err := timed(1600, 16, read(mount+"/creds/"+role))
			if err != nil {
				return f, err
			}
			if role == "capped" {
				capped, tputCapped = append(capped, b.latencies...), append(tputCapped, b16.throughput())
			} else {
				uncapped, tputUncapped = append(uncapped, b.latencies...), append(tputUncapped, b16.throughput())
			}
			if err := e.revokePrefix(mount + "/creds/" + role); err != nil {
				return f, err
			}
		}
		// Control: Vault's own leased issuance, which no plugin code
		// touches, shows what Vault's growing lease count and the machine
		// add.
		otp := issueOTP(nil)
		b, err := timed(200, 1, func() error { return otp(c) })
		if err != nil {
			return f, err
		}
		ssh = append(ssh, b.latencies...)
		if err := e.revokePrefix("ssh/creds/otp"); err != nil {
			return f, err
		}
	}
	f.issueCapped, f.issueUncapped, f.sshOTP = percentile(capped, 50), percentile(uncapped, 50), percentile(ssh, 50)
	f.tputCapped, f.tputUncapped = median(tputCapped), median(tputUncapped)
	page, err := c.Logical().ReadWithData(mount+"/keys", map[string][]string{"list": {"true"}, "limit": {"1"}})
	if err != nil || page == nil {
		return f, fmt.Errorf("listing a key: %v", err)
	}
	keyID := page.Data["keys"].([]any)[0].(string)
	b, err := timed(200, 1, read(mount+"/keys/"+keyID))
	if err != nil {
		return f, err
	}
	f.keyRead = percentile(b.latencies, 50)
	if b, err = timed(200, 1, read(mount+"/roles/scale00")); err != nil {
		return f, err
	}
	f.roleRead = percentile(b.latencies, 50)

	pid, err := pluginPID()
	if err != nil {
		return f, err
	}
	if f.rssMB, err = rssMB(pid); err != nil {
		return f, err
	}
	// The full listing, a page of 1,000 at a time, as large lists are read.
	var ids []any
	start := time.Now()
	for after := ""; ; {
		page, err := c.Logical().ReadWithData(mount+"/keys", map[string][]string{"list": {"true"}, "limit": {"1000"}, "after": {after}})
		if err != nil {
			return f, err
		}
		if page == nil || len(page.Data["keys"].([]any)) == 0 {
			break
		}
		keys := page.Data["keys"].([]any)
		ids = append(ids, keys...)
		after = keys[len(keys)-1].(string)
	}
	f.pagedList = time.Since(start)
	f.listed = len(ids)
	b, err = timed(20, 1, func() error {
		after := ids[rand.IntN(len(ids))].(string)
		_, err := c.Logical().ReadWithData(mount+"/keys", map[string][]string{"list": {"true"}, "limit": {"1000"}, "after": {after}})
		return err
	})
	if err != nil {
		return f, err
	}
	f.page1000 = percentile(b.latencies, 50)

	// A connection with live keys and no roles: only the live-key check
	// stands between it and deletion.
	if _, err := e.vault.Vault("write", mount+"/config/cqdel", "provider=climatiq", "management_key="+managementKey,
		"management_url="+e.cq.ManagementURL(), "api_url="+e.cq.APIURL()); err != nil {
		return f, err
	}
	if _, err := e.vault.Vault("write", mount+"/roles/deltmp", "config=cqdel", "project_id="+e.project); err != nil {
		return f, err
	}
	if _, err := c.Logical().Read(mount + "/creds/deltmp"); err != nil {
		return f, err
	}
	if _, err := e.vault.Vault("delete", mount+"/roles/deltmp"); err != nil {
		return f, err
	}
	// Refused deletes are errors to runBatch, which times successes only.
	var refusals []time.Duration
	for range 50 {
		start := time.Now()
		if _, err := c.Logical().Delete(mount + "/config/cqdel"); err == nil {
			return f, fmt.Errorf("deleting a connection with a live key was not refused")
		}
		refusals = append(refusals, time.Since(start))
	}
	f.configDelete = percentile(refusals, 50)
	if err := e.revokePrefix(mount + "/creds/deltmp"); err != nil {
		return f, err
	}
	if _, err := e.vault.Vault("delete", mount+"/config/cqdel"); err != nil {
		return f, err
	}

	start = time.Now()
	if _, err := c.Logical().Write(mount+"/tidy", map[string]any{"dry_run": true, "config": "cqscale"}); err != nil {
		return f, err
	}
	f.tidy = time.Since(start)

	// One LIST without limit: every key and its key_info in one answer.
	start = time.Now()
	if _, err := c.Logical().List(mount + "/keys"); err != nil {
		return f, err
	}
	f.oneList = time.Since(start)
	f.rssAfterOneList, err = rssMB(pid)
	return f, err
}
