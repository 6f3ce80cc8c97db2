// Command example is an application that takes its Climatiq API key from
// Vault's carbon secrets engine with the official Go client
// (github.com/hashicorp/vault/api):
//
//   - it reads carbon/creds/<role> and gets a key with a lease;
//   - a LifetimeWatcher renews the lease while the application runs;
//   - when Vault stops renewing (the role's max_ttl is reached), it reads a
//     fresh key before the old one's lease ends; Vault then revokes the old
//     lease, and the engine deletes the old key upstream;
//   - on SIGINT/SIGTERM it revokes its lease, so the key does not outlive it.
//
// It prints what happens, with key ids and never key values:
//
//	VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=... go run ./examples/go -role ci
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

func main() {
	mount := flag.String("mount", "carbon", "path of the carbon secrets engine")
	role := flag.String("role", "", "dynamic role to read credentials from (required)")
	sets := flag.Int("sets", 0, "stop after this many credential sets have run out (0: run until interrupted)")
	apiURL := flag.String("api-url", "", "if set, check each new key against this Climatiq API base (GET /data/v1/unit-types)")
	flag.Parse()
	if *role == "" {
		flag.Usage()
		os.Exit(2)
	}
	log.SetFlags(0)

	// VAULT_ADDR, VAULT_TOKEN and the other VAULT_* variables configure the client.
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	path := *mount + "/creds/" + *role
	for n := 1; *sets == 0 || n <= *sets; n++ {
		if err := runOneKey(ctx, client, path, *apiURL); err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			log.Fatal(err)
		}
	}
}

// runOneKey reads one key and keeps its lease alive until Vault will not
// renew it any more, or the application stops.
func runOneKey(ctx context.Context, client *api.Client, path, apiURL string) error {
	secret, err := client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if secret == nil || secret.LeaseID == "" {
		return fmt.Errorf("%s returned no leased secret", path)
	}
	keyID, _ := secret.Data["key_id"].(string)
	apiKey, _ := secret.Data["api_key"].(string)
	fmt.Printf("issued key_id=%s lease_duration=%ds lease_id=%s\n", keyID, secret.LeaseDuration, secret.LeaseID)
	if apiURL != "" {
		if err := checkKey(ctx, apiURL, apiKey); err != nil {
			return fmt.Errorf("key %s: %w", keyID, err)
		}
		fmt.Printf("works key_id=%s\n", keyID)
	}

	watcher, err := client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		return err
	}
	go watcher.Start()
	defer watcher.Stop()
	for {
		select {
		case renewal := <-watcher.RenewCh():
			fmt.Printf("renewed key_id=%s lease_duration=%ds\n", keyID, renewal.Secret.LeaseDuration)
		case err := <-watcher.DoneCh():
			// nil: the lease reached max_ttl and cannot be renewed further;
			// otherwise renewal failed. Either way the key's lease is about
			// to end: take a fresh key now, before it does.
			reason := "max_ttl reached"
			if err != nil {
				reason = err.Error()
			}
			fmt.Printf("renewal stopped key_id=%s reason=%q: reading fresh credentials\n", keyID, reason)
			return nil
		case <-ctx.Done():
			// Leaving: the key should not outlive the application.
			revokeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := client.Sys().RevokeWithContext(revokeCtx, secret.LeaseID); err != nil {
				log.Printf("revoking lease %s: %v", secret.LeaseID, err)
			} else {
				fmt.Printf("revoked key_id=%s\n", keyID)
			}
			return ctx.Err()
		}
	}
}

// checkKey stands for the application's real work: one cheap call to the
// Climatiq API with the key.
func checkKey(ctx context.Context, apiURL, apiKey string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/data/v1/unit-types", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("climatiq answered %s", resp.Status)
	}
	return nil
}
