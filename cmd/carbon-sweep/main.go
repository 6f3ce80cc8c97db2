// Command carbon-sweep is the break-glass tool for a lost Vault: when a
// cluster and its storage are gone, every Climatiq key it issued stays
// alive upstream, and only the names tell whose they were. Every name the
// plugin creates starts with vault-<mount marker>-<unix time>-<nonce>.
//
// carbon-sweep lists the projects and keys the management key can see and
// shows, per marker, how many keys and per-lease projects exist and how old
// they are. With -marker M -older-than D -delete it deletes that marker's
// keys and projects created before the cut-off, after a confirmation
// prompt (unless -yes). Without -delete it only shows what it would delete.
//
// The management key comes from $CLIMATIQ_MANAGEMENT_KEY, never a flag:
// flags end up in shell history and process listings.
//
// Exit status: 0 done, 1 an upstream error or an aborted confirmation,
// 2 a usage error.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr, time.Now())
	stop()
	os.Exit(code)
}
