# vault-plugin-carbon
#
#   make demo    build everything, run a real Vault with the plugin and fake upstreams, show a key's life
#   make test    unit tests and end-to-end tests against a real Vault server and CLI
#   make dev     a local Vault with the plugin registered and fake upstreams, left up to try commands
#   make acceptance  the engine's whole life against the real services (credentials from the environment;
#                without them it says which it needs and skips); CARBON_ACCEPTANCE_FAKES=1 runs it on the fakes
#   make compat  the end-to-end suites against every Vault version of the matrix; writes COMPATIBILITY.md

GO        ?= go
VERSION   ?= v0.1.0-dev
MODULE    := github.com/vault-plugin-carbon/vault-plugin-carbon
# main.version is carbon-sweep's; the plugin has no such symbol and ignores it.
LDFLAGS   := -s -w -X $(MODULE).Version=$(VERSION) -X main.version=$(VERSION)
PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
TEST_TIMEOUT ?= 30m

# The real Vault binary: $VAULT_BIN, else `vault` on PATH, else bin/vault
# built from tools/vault (about 10 minutes the first time, then cached).
VAULT_BIN ?= $(or $(shell command -v vault 2>/dev/null),$(CURDIR)/bin/vault)
export VAULT_BIN

# The Vault versions of `make compat`: the oldest supported line and each
# LTS and recent line, at the newest patch release that builds from its Go
# module (tools/vault*/go.mod pins each). No 1.20.x release builds from its
# module (see COMPATIBILITY.md). Not part of `make test`.
COMPAT_VAULTS ?= 1.16.3 1.19.5 1.21.0

.PHONY: all build check test test-unit test-e2e acceptance demo dev vault fmt vet release clean bench soak compat race

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/vault-plugin-carbon ./cmd/vault-plugin-carbon
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/carbon-sweep ./cmd/carbon-sweep

vault:
	@if [ -x "$(VAULT_BIN)" ]; then \
		echo "vault: using $(VAULT_BIN) ($$($(VAULT_BIN) version))"; \
	else \
		echo "vault: building $(VAULT_BIN) from tools/vault (first time takes about 10 minutes)"; \
		cd tools/vault && $(GO) build -trimpath -ldflags "-s -w" -o "$(VAULT_BIN)" . ; \
	fi

test: vault
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-unit:
	$(GO) test -count=1 -short ./...

test-e2e: vault
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./e2e/...

# The test binary runs on its own, so a run without credentials prints its
# "SKIPPED" line and no pass count. The report lands in bin/.
ACCEPTANCE_REPORT ?= $(CURDIR)/bin/acceptance-report.md
acceptance: vault
	@mkdir -p bin
	@$(GO) test -c -o bin/acceptance.test ./acceptance
	@CARBON_ACCEPTANCE=$(if $(CARBON_ACCEPTANCE_FAKES),fakes,real) CARBON_ACCEPTANCE_REPORT=$(ACCEPTANCE_REPORT) \
		./bin/acceptance.test -test.v -test.count=1 -test.timeout=30m

demo: vault
	$(GO) run ./cmd/carbon-dev -mode=demo

dev: vault
	$(GO) run ./cmd/carbon-dev -mode=dev

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

# The checks CI runs besides the tests: gofmt, go vet, staticcheck (pinned,
# installed with go install), and go.mod and go.sum tidy.
STATICCHECK_VERSION ?= v0.6.1
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt: not formatted:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@[ -x $(STATICCHECK) ] || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff
	$(MAKE) race

# The root package's unit tests under the race detector. The state machine
# draws 60 sequences (a tenth of make test's), concurrent requests included:
# the detector makes each step several times slower.
race:
	CARBON_SM_CHECKS=60 $(GO) test -race -short -count=1 .

release:
	@rm -rf dist && mkdir -p dist
	@for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		for cmd in vault-plugin-carbon carbon-sweep; do \
			out=dist/$${cmd}_$(VERSION)_$${os}_$${arch}; \
			echo "building $$out"; \
			CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/$$cmd || exit 1; \
		done; \
	done
	cd dist && sha256sum vault-plugin-carbon_* carbon-sweep_* > SHA256SUMS && cat SHA256SUMS

clean:
	rm -rf dist bin/vault-plugin-carbon bin/carbon-sweep bin/acceptance.test bin/acceptance-report.md

# One Vault per version, run one after another (each build takes about ten
# minutes on two cores), cached in bin/. Some plugin modules these releases
# pin are missing from the checksum database; go.sum records their hashes.
# -checklinkname=0 lets old dependencies that reach into the runtime with
# go:linkname still link with a newer Go.
compat: $(addprefix bin/vault-,$(COMPAT_VAULTS))
	$(GO) run ./internal/compat -out COMPATIBILITY.md $(COMPAT_VAULTS)

bin/vault-%:
	@dir=$$(dirname $$(grep -l '^require github.com/hashicorp/vault v$*$$' tools/vault*/go.mod | head -1) 2>/dev/null); \
	if [ -z "$$dir" ] || [ "$$dir" = . ]; then echo "no tools/vault*/go.mod requires github.com/hashicorp/vault v$*"; exit 1; fi; \
	echo "vault $*: building from $$dir (about 10 minutes)"; \
	cd $$dir && GONOSUMDB='github.com/hashicorp/vault-plugin-*' $(GO) build -trimpath -ldflags "-s -w -checklinkname=0" -o $(CURDIR)/bin/vault-$* .

# Benchmarks against real Vault servers on 127.0.0.1: integrated storage
# (Raft) on disk, one node and a three-node cluster, then a dev server;
# writes BENCHMARKS.md (about 20 minutes on 2 cores; not part of `make test`).
# BENCH_FLAGS="-only raft -out /tmp/raft.md" runs the Raft part alone;
# -rounds sets the interleaved rounds (default 3).
BENCH_FLAGS ?=
bench: vault
	$(GO) run ./bench -out BENCHMARKS.md $(BENCH_FLAGS)

# Model-based state-machine test (statemachine_test.go) looping fresh seeds
# until SOAK ends; prints sequences and steps run, and the first failure.
SOAK ?= 20m
soak:
	CARBON_SM_FAULTS=$(or $(CARBON_SM_FAULTS),all) CARBON_SM_DURATION=$(SOAK) $(GO) test -run TestStateMachine -count=1 -timeout 0 -v . 2>&1 | grep --line-buffered -v '\[rapid\] draw' | grep --line-buffered -E 'state machine|soak round|\[rapid\]|traceback \(|I[1-5]:|FAIL|^ok|PASS'
