# The README's two commands: `make demo` and `make test`. Both run as root
# on Debian and install what they need (hack/setup.sh).
GO      ?= go
BIN     := bin/cleanroom
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build setup demo demo-go test unit integration lint fuzz clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cleanroom

setup:
	./hack/setup.sh

demo: setup build
	BIN=$(BIN) ./hack/demo.sh

# The Go example: modules fetched through the recording proxy.
demo-go: setup build
	BIN=$(BIN) ./hack/demo-go.sh

test: setup build lint unit integration

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit and sandbox tests with the race detector. Tests that need root and
# containerd run here too: under CI=true a missing prerequisite fails.
unit:
	$(GO) test -race -count=1 -timeout 15m ./cmd/... ./runner/... ./sandbox/... ./internal/...

# End-to-end tests through the built CLI.
integration: build
	CLEANROOM_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 20m ./integration/...

# Each fuzz target for a bounded time; the corpus lives in testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./runner/pipeline/

clean:
	rm -rf bin
