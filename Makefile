# ftpgate: build, test, run locally, benchmark. `make help` lists the targets.
#
# Tools that tests and benchmarks need are installed on demand and only when
# missing: Debian packages with apt-get (as root, or through sudo), Go programs
# into ./bin with `go install`. CI runs `.ci/run`, which is `make test`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

GO ?= go
BIN := $(CURDIR)/bin

MINIO_VERSION     := v0.0.0-20260212201848-7aac2a2c5b7c
VERSITYGW_VERSION := v1.8.0
MC_VERSION        := latest
RCLONE_VERSION    := v1.76.0

# Per test binary; -race on 2 cores keeps the whole `make test` under 15 minutes.
TEST_TIMEOUT ?= 10m
TEST_FLAGS   ?=
# Extra flags for `go run ./bench`, e.g. BENCH_FLAGS="-rounds 3 -size 256MiB".
BENCH_FLAGS  ?=

# `make run`: a local MinIO next to the embedded-default server.
MINIO_HOST   ?= 127.0.0.1
MINIO_PORT   ?= 9000
MINIO_DATA   := ftpgate-minio
STATE_DIR    := ftpgate-state
MINIO_ENV    := $(STATE_DIR)/minio.env

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# apt_install installs the Debian packages of the commands in $(1) that are
# missing. Each word is COMMAND or COMMAND:PACKAGE.
define apt_install
	@missing=; for w in $(1); do c=$${w%%:*}; p=$${w#*:}; \
	  command -v "$$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$$c" ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
endef

.PHONY: help build run deps deps-apt deps-bench test lint bench bench-ftp bench-mirror bench-verify bench-perms clean distclean

help: ## list the targets
	@echo "usage: make TARGET [VAR=value]"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "variables: TEST_TIMEOUT=$(TEST_TIMEOUT) TEST_FLAGS=... BENCH_FLAGS=... (e.g. \"-rounds 3\")"

build: ## build bin/ftpgate
	$(GO) build -o bin/ftpgate .

run: build $(BIN)/minio ## start a local MinIO (127.0.0.1:9000, ./ftpgate-minio) and `ftpgate serve` with the embedded default config
	@if [ -e /etc/ftpgate/ftpgate.toml ]; then \
	  echo "make run: /etc/ftpgate/ftpgate.toml exists and would replace the embedded default; move it away or run bin/ftpgate serve yourself" >&2; \
	  exit 2; \
	fi
	@mkdir -p $(STATE_DIR) $(MINIO_DATA)
	@if [ ! -s $(MINIO_ENV) ]; then \
	  umask 077; \
	  printf 'MINIO_ROOT_USER=minioadmin\nMINIO_ROOT_PASSWORD=%s\n' "$$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" > $(MINIO_ENV); \
	  echo "make run: MinIO credentials generated into $(MINIO_ENV)"; \
	fi
	@set -a; . ./$(MINIO_ENV); set +a; \
	$(BIN)/minio server --quiet --address $(MINIO_HOST):$(MINIO_PORT) --console-address $(MINIO_HOST):0 $(MINIO_DATA) \
	  > $(STATE_DIR)/minio.log 2>&1 & minio=$$!; \
	trap 'kill $$minio 2>/dev/null || true; wait $$minio 2>/dev/null || true' EXIT; \
	trap 'exit 130' INT TERM; \
	for i in $$(seq 100); do \
	  if (exec 3<>/dev/tcp/$(MINIO_HOST)/$(MINIO_PORT)) 2>/dev/null; then break; fi; \
	  if ! kill -0 $$minio 2>/dev/null || [ $$i = 100 ]; then echo "make run: MinIO did not start, see $(STATE_DIR)/minio.log" >&2; exit 2; fi; \
	  sleep 0.2; \
	done; \
	echo "make run: MinIO on http://$(MINIO_HOST):$(MINIO_PORT), data in $(MINIO_DATA), credentials in $(MINIO_ENV), log in $(STATE_DIR)/minio.log"; \
	env -u FTPGATE_CONFIG FTPGATE_S3_ENDPOINT=$(MINIO_HOST):$(MINIO_PORT) \
	  FTPGATE_S3_ACCESS_KEY="$$MINIO_ROOT_USER" FTPGATE_S3_SECRET_KEY="$$MINIO_ROOT_PASSWORD" bin/ftpgate serve

deps: deps-apt $(BIN)/minio $(BIN)/versitygw ## install what `make test` needs, when missing: lftp, curl, MinIO and versitygw (a few minutes to build, once)

deps-apt:
	$(call apt_install,lftp curl)

deps-bench: deps-apt $(BIN)/minio $(BIN)/mc $(BIN)/rclone ## install what `make bench` needs, when missing: vsftpd, MinIO, mc, rclone
	$(call apt_install,vsftpd)

$(BIN)/minio:
	GOBIN=$(BIN) $(GO) install github.com/minio/minio@$(MINIO_VERSION)

$(BIN)/versitygw:
	GOBIN=$(BIN) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(BIN)/mc:
	GOBIN=$(BIN) $(GO) install github.com/minio/mc@$(MC_VERSION)

$(BIN)/rclone:
	GOBIN=$(BIN) $(GO) install github.com/rclone/rclone@$(RCLONE_VERSION)

test: deps lint ## deps, gofmt and vet, then all tests with -race (integration tests build the binary themselves)
	PATH="$(BIN):$$PATH" $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

lint: ## gofmt -l (must be empty) and go vet
	@out="$$(gofmt -l . | grep -v '^bin/' || true)"; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: deps-bench ## every benchmark (go run ./bench all); needs root for vsftpd's test user
	$(GO) run ./bench $(BENCH_FLAGS) all

bench-ftp: deps-bench ## FTP benchmark, ftpgate vs vsftpd with lftp (go run ./bench ftp)
	$(GO) run ./bench $(BENCH_FLAGS) ftp

bench-verify: deps-bench ## verify benchmark vs rclone check over 100,000 objects (go run ./bench verify)
	$(GO) run ./bench $(BENCH_FLAGS) verify

bench-mirror: deps-bench ## mirror benchmark vs mc mirror (--watch) and rclone copy (go run ./bench mirror); BENCH_FLAGS=-large adds the 1M-file RSS run
	$(GO) run ./bench $(BENCH_FLAGS) mirror

bench-perms: ## permission normaliser vs find -exec chmod + chgrp -R and a tuned find, 100,000 files (go run ./bench perms); needs root
	$(GO) run ./bench $(BENCH_FLAGS) perms

clean: ## remove bin/ftpgate and test artefacts (keeps bin/minio and all data directories)
	rm -f bin/ftpgate *.test coverage.out coverage.html cover.out *.coverprofile
	rm -rf ftpgate-bench

distclean: clean ## clean, and remove every installed tool in bin/
	rm -rf bin
