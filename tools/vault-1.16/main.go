// Command vault builds the real HashiCorp Vault server and CLI that the
// plugin's end-to-end tests, benchmarks and demo run against. This one is Vault 1.16.3, for the compatibility matrix (make compat). It lives in its
// own module so the plugin's go.mod stays small.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
