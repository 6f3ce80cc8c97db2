// Package acceptance runs the engine's whole life against the real Climatiq
// and Altruistiq services, through a real Vault server and CLI, when an
// operator supplies credentials (make acceptance); `make test` runs the same
// suite against the in-process fakes. See main_test.go for the variables.
package acceptance
