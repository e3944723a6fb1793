# The README's two commands: `make demo` and `make test`. Both run as root
# on Debian and install what they need (hack/setup.sh).
GO      ?= go
BIN     := bin/cleanroom
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build setup demo demo-go demo-agent demo-services test unit integration gitlab-runner sigstore lint fuzz clean bench

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cleanroom

setup:
	./hack/setup.sh

demo: setup build
	BIN=$(BIN) ./hack/demo.sh

# The Go example: modules fetched through the recording proxy.
demo-go: setup build
	BIN=$(BIN) ./hack/demo-go.sh

# A self-hosted agent takes a signed push webhook, builds, posts commit
# statuses to the loopback forge, signs and serves the provenance, which is
# then verified (hack/demo-agent.sh).
demo-agent: setup build
	BIN=$(BIN) ./hack/demo-agent.sh

# A step queries a real Redis running beside it (hack/demo-services.sh).
demo-services: setup build
	BIN=$(BIN) ./hack/demo-services.sh

test: setup build lint unit integration sigstore

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit and sandbox tests with the race detector. Tests that need root and
# containerd run here too: under CI=true a missing prerequisite fails.
unit:
	$(GO) test -race -count=1 -timeout 15m ./cmd/... ./runner/... ./sandbox/... ./sign/... ./internal/...

# End-to-end tests through the built CLI, the attack suite (which writes
# docs/attack-suite.md) and the fault tests; then the attack suite again
# with every step under gVisor (hack/setup.sh installs runsc; a run that
# cannot use it fails). The GitLab tests also drive
# the real gitlab-runner when its binary sits beside the checkout
# (GITLAB_RUNNER_XZ, an xz-compressed linux/amd64 build); without it they
# say SKIP.
GITLAB_RUNNER_XZ  ?= ../shared/tools/gitlab-runner-19.4.0-linux-amd64.xz
GITLAB_RUNNER_BIN ?= $(CURDIR)/bin/gitlab-runner-19.4.0

integration: build gitlab-runner
	@if [ -x "$(GITLAB_RUNNER_BIN)" ]; then \
		echo "integration: real gitlab-runner $(GITLAB_RUNNER_BIN)"; \
		export GITLAB_RUNNER_BIN="$(GITLAB_RUNNER_BIN)"; \
	else \
		echo "SKIP: the real gitlab-runner tests: $(GITLAB_RUNNER_XZ) not found (only the contract harness runs)"; \
	fi; \
	CLEANROOM_BIN=$(CURDIR)/$(BIN) CLEANROOM_ATTACK_REPORT=$(CURDIR)/docs/attack-suite.md \
		$(GO) test -count=1 -timeout 30m ./integration/...
	CLEANROOM_BIN=$(CURDIR)/$(BIN) CLEANROOM_TEST_RUNTIME=runsc \
		$(GO) test -count=1 -timeout 15m ./integration/attack/

# Decompress the real gitlab-runner (when present) into bin/, once.
gitlab-runner:
	@if [ -f "$(GITLAB_RUNNER_XZ)" ] && [ ! -x "$(GITLAB_RUNNER_BIN)" ]; then \
		mkdir -p "$$(dirname "$(GITLAB_RUNNER_BIN)")" && \
		xz -dc "$(GITLAB_RUNNER_XZ)" > "$(GITLAB_RUNNER_BIN).tmp" && \
		chmod 0755 "$(GITLAB_RUNNER_BIN).tmp" && mv "$(GITLAB_RUNNER_BIN).tmp" "$(GITLAB_RUNNER_BIN)"; \
	fi

# Signing end to end in a module of its own (keeps Fulcio, the timestamp
# authority and Rekor out of the product's module graph): real Fulcio and TSA
# in-process, real Rekor v2 and the real cosign CLI (built once, cached).
sigstore:
	cd integration/sigstore && $(GO) vet ./... && ./run.sh

# Each fuzz target for a bounded time; the corpus lives in testdata/fuzz.
FUZZTIME ?= 30s
FUZZ_TARGETS := runner/pipeline:FuzzParse runner/pipeline:FuzzParseFields \
	sandbox/egress:FuzzParseRule sandbox/egress:FuzzNormalizeHost \
	sandbox/egress:FuzzParseClientHello sandbox/egress:FuzzProxyRequest \
	agent/source:FuzzExtractTarball agent/webhook:FuzzParse
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) ./$$pkg/ || exit 1; \
	done

# cleanroom against its baselines (ctr, runc, squid, sha256sum), as ratios
# measured in the same run; writes docs/benchmarks.md (bench/run.sh).
bench:
	./bench/run.sh

clean:
	rm -rf bin
