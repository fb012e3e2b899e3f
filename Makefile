# sluice - one plain, non-recursive Makefile.
#   make                 build build/release/sluice
#   make SANITIZER=address,undefined|thread   build into build/<sanitizer>/
#   make test            deps, unit tests under ASan+UBSan, integration (workers = 1),
#                        integration-workers (workers = 4), tsan; prints its duration
#                        (budget TEST_BUDGET_MINUTES, 25)
#   make unit            unit tests only
#   make integration     integration tests, ASan+UBSan build, workers = 1
#   make integration-workers  the same suite with workers = 4
#   make tsan            unit tests, the stress test and multi-worker integration
#                        tests under ThreadSanitizer (build/thread/sluice)
#   make demo            port check, deps, build, cluster, sluice in front; prints the
#                        psql line (DEMO_PORT, DEMO_METRICS_PORT, CLUSTER_PORT: see
#                        scripts/demo.sh)
#   make bench           pgbench through sluice and pgbouncer, sluice's read/write
#                        split against its own split off, and read_your_writes = user
#                        against off under a 90/10 mix, and the result cache (cached
#                        select-only TPS against PostgreSQL directly; what cache = memory
#                        costs a workload it does not cache) -> docs/benchmarks.md
#                        (env: bench/run.sh's header; BENCH_RYW_ONLY=1, BENCH_CACHE_ONLY=1
#                        one part alone)
#   make bench-classify  what classifying a statement for the router costs, cold and
#                        cached (bench/classify_bench.c, release objects)
#   make chaos           the chaos suite (tests/integration/test_chaos*.py): 50
#                        clients doing verified work while the primary is killed -9
#                        (also at a COMMIT), connections are cut mid-message and
#                        mid-COPY, latency and blackholes (also in the kernel, where
#                        network namespaces can be made), replicas killed, blackholed
#                        and promoted, a DNS answer changes, sluice reloads and restarts;
#                        CHAOS_SECONDS (600) each; make integration runs a short
#                        sample (12 s each of the first three, 3 s of the COMMIT
#                        kill); counts -> CHAOS_REPORT (docs/reliability.md)
#   make soak            SOAK_SECONDS (3600) of steady mixed load on the release build:
#                        slopes of RSS, fds and server connections (tests/integration/
#                        test_soak.py; not in make test); figures -> SOAK_REPORT
#   make abuse           abusive clients (slowloris, garbage, 1 GB lengths, non-readers,
#                        churn, cancel storms) and the live fuzzer at full scale (also
#                        run by make chaos); counts -> ABUSE_REPORT
#   make test-jobs-slow  refresh jobs' every-minute schedule on two instances, watched
#                        for over two minutes (tests/integration/test_jobs.py; not in make test)
#   make test-cluster-script  scripts/cluster.sh's first start killed after each of
#                        its ten steps, then started again (make test: three of them)
#   make fuzz            each libFuzzer target for FUZZ_SECONDS (60)
#   make lint            clang-format check + cppcheck + lint-structure
#   make man             the man pages sluice(1) and sluice.ini(5) from docs/ with pandoc
#                        -> build/man/ (docs/man/)
#   make install         the release binary, man pages, docs and systemd units under
#                        DESTDIR/PREFIX (/usr/local): BINDIR, MANDIR, DOCDIR, SYSTEMDUNITDIR
#   make deb             the Debian package (debian/, dpkg-buildpackage) -> build/deb/
#   make deb-test        make deb, then install it with apt-get, check the units, run the
#                        installed binary as the unit would, purge it (root; about 3 min;
#                        not in make test; docs/packaging.md)
#   make lint-structure  function and file sizes (scripts/check_sizes.py) and the
#                        layers of src/ (scripts/check_layers.py, scripts/layers.txt)

CC        ?= cc
SANITIZER ?=
PKGS      := libssl libcrypto hiredis libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# libev and libpg_query ship no .pc file on Debian 12.
LIBS      := $(PKG_LIBS) -lev -lpg_query -lpthread -lm

WARN      := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes \
             -Wmissing-prototypes -Wformat=2
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(WARN) $(PKG_CFLAGS) -Isrc

comma := ,
ifeq ($(SANITIZER),)
BUILD     := build/release
OPT       := -O2
else
BUILD     := build/$(subst $(comma),-,$(SANITIZER))
OPT       := -O1 -fno-omit-frame-pointer -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -DSLUICE_STRICT
endif

CFLAGS    ?=
LDFLAGS   ?=
ALL_CFLAGS := $(BASE_CFLAGS) $(OPT) $(CFLAGS)
ALL_LDFLAGS := $(OPT) $(LDFLAGS)

SRCS      := $(wildcard src/*.c)
OBJS      := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
LIB_OBJS  := $(filter-out $(BUILD)/obj/main.o,$(OBJS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_SECONDS ?= 60

TEST_SAN  := address,undefined
# The builds make test (and its parts) runs compile this many files at once.
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST    := /usr/bin/python3 -m pytest

.PHONY: all clean test unit integration integration-workers demo demo-stop bench fuzz lint \
        lint-structure deps tsan bench-classify chaos abuse soak test-jobs-slow man install deb deb-test \
        test-cluster-script
all: $(BUILD)/sluice

$(BUILD)/sluice: $(OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $(OBJS) $(LIBS)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB_OBJS) $(LIBS) -lcmocka

-include $(OBJS:.o=.d)

deps:
	@sh scripts/deps.sh

# Unit tests always run under ASan+UBSan.
unit:
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) SANITIZER=$(TEST_SAN) unit-bins
	@$(MAKE) --no-print-directory SANITIZER=$(TEST_SAN) unit-run

.PHONY: unit-run unit-bins
unit-bins: $(UNIT_BINS)
unit-run: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# Integration tests drive the sanitized binary, so a crash or a sanitizer
# report fails the run. SLUICE_TEST_WORKERS puts `workers = N` into every
# pooler config the tests write: integration runs the suite on one event
# loop, integration-workers on 4 worker threads. test_idle_memory.py measures
# the release build (sanitizers inflate memory), so both build it too.
INTEGRATION_RUN = SLUICE_BIN=$(CURDIR)/build/address-undefined/sluice $(PYTEST) -x -q --durations=15 tests/integration

.PHONY: integration-bins
integration-bins:
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) SANITIZER=$(TEST_SAN) all
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) SANITIZER= all

# The stress test runs STRESS_SECONDS here (two of its 10-second windows,
# as under ThreadSanitizer; `make integration STRESS_SECONDS=60` for its
# own default minute): every client must still complete a query in each
# window. The live fuzzer sends LIVE_FUZZ_MUTATIONS mutations of each
# corpus file (make abuse: 30). So make test stays within its budget.
STRESS_SECONDS ?= 20
LIVE_FUZZ_MUTATIONS ?= 2

integration: integration-bins
	SLUICE_TEST_WORKERS=1 SLUICE_STRESS_SECONDS=$(STRESS_SECONDS) \
	  LIVE_FUZZ_MUTATIONS=$(LIVE_FUZZ_MUTATIONS) $(INTEGRATION_RUN)

# test_stress.py sets workers = 4 itself: the run above already ran it as it
# would run here (and tsan runs it again), so it is left out to save a minute;
# test_cluster_script.py starts no pooler, so one run of it is enough; the
# chaos sample (a minute) runs once, above (make chaos: CHAOS_WORKERS), and
# so do the abusive clients (test_abuse.py, 2 minutes) and the live fuzzer
# (test_live_fuzz.py, 20 s), and the memory tests of distinct application_names
# and statements (workers change nothing there): make test stays within its budget. The status
# page (rendered on the metrics loop) and the index advisor (worker 0's
# loop) do the same with any number of workers: once, above, too. All of
# them pass with 4 workers: run them so after changing what they test.
# The chaos proxy's own tests and the commit-outcome cases it drives
# (test_chaos_proxy.py: one connection's relay at a time), the kernel
# blackhole's keepalive and tcp_user_timeout tests (test_chaos_net.py: the
# kernel's timers, the same with any number of workers), the memory of an
# idle client (test_idle_memory.py: a client's record, not the workers')
# and of distinct SET values (test_set_memory.py, as its appname case
# above) are the same with any number of workers: once, above, too.
# Malformed input and the wire protocol's relaying (test_bad_input.py,
# test_protocol.py) are each connection's, parsed and relayed on the loop
# its client and server share: the same code with any number of workers.
# The security review (test_security.py: logins, the console's users,
# secrets, TLS) is decided before a client reaches a worker's pools, and
# sluice --check, the man pages and systemd's notifications (test_check.py,
# test_man.py, test_notify.py) are the main thread's: once. The timeouts
# (test_timeouts.py) are each worker's janitor's, for its own clients and
# servers: the same code on every worker, and a minute of fixed waits; the
# cross-worker part (a waiting client served or timed out while servers are
# released on other workers) is test_stress.py's (4 workers, above) and
# test_limits.py's (make tsan). The serverless upstream's backoff and
# cold start are the pool's (under its lock) and its names are resolved on
# the DNS threads (test_serverless.py). Once, above, too: make test stays
# within its budget. The result cache's key, rules, writes and edge cases
# (test_cache_key.py, test_cache_writes.py, test_cache_edges.py: what one
# client is answered) and its logical-decoding consumer (one connection
# per database on worker 0's loop, test_cache_logical.py) too;
# test_cache.py, whose stale-read hunts race clients on several workers,
# runs here as well. The insights store's bound under 50,000 distinct
# queries (one connection: one worker records them all) runs once, above.
integration-workers: integration-bins
	SLUICE_TEST_WORKERS=4 $(INTEGRATION_RUN) --ignore=tests/integration/test_stress.py \
	  --ignore=tests/integration/test_cluster_script.py --ignore=tests/integration/test_chaos.py \
	  --ignore=tests/integration/test_chaos_pooler.py --ignore=tests/integration/test_chaos_replicas.py \
	  --deselect=tests/integration/test_set_memory.py::test_distinct_appnames_and_statements_keep_memory_flat \
	  --deselect=tests/integration/test_set_memory.py::test_distinct_sets_keep_memory_flat \
	  --ignore=tests/integration/test_chaos_proxy.py --ignore=tests/integration/test_idle_memory.py \
	  --ignore=tests/integration/test_chaos_net.py --ignore=tests/integration/test_bad_input.py \
	  --ignore=tests/integration/test_protocol.py \
	  --ignore=tests/integration/test_abuse.py --ignore=tests/integration/test_live_fuzz.py \
	  --ignore=tests/integration/test_page.py --ignore=tests/integration/test_insights_advice.py \
	  --ignore=tests/integration/test_security.py --ignore=tests/integration/test_check.py \
	  --ignore=tests/integration/test_man.py --ignore=tests/integration/test_notify.py \
	  --ignore=tests/integration/test_timeouts.py --ignore=tests/integration/test_serverless.py \
	  --ignore=tests/integration/test_cache_key.py --ignore=tests/integration/test_cache_writes.py \
	  --ignore=tests/integration/test_cache_edges.py --ignore=tests/integration/test_cache_logical.py \
	  --deselect=tests/integration/test_insights.py::test_memory_bound_under_50000_distinct_queries

# The chaos suite at length (issue 17; not part of make test): each scenario
# for CHAOS_SECONDS under CHAOS_CLIENTS clients, sluice on CHAOS_WORKERS
# workers; every scenario's counts are appended to CHAOS_REPORT (JSON lines).
# CHAOS_ALL=1 runs the scenarios make integration skips (test_chaos_pooler.py
# but its COMMIT kill, and test_chaos_replicas.py, on a cluster of its own).
CHAOS_SECONDS ?= 600
CHAOS_CLIENTS ?= 50
CHAOS_WORKERS ?= 1
CHAOS_REPORT ?= $(CURDIR)/build/chaos-report.jsonl
chaos: integration-bins
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_CLIENTS=$(CHAOS_CLIENTS) CHAOS_REPORT=$(CHAOS_REPORT) \
	  CHAOS_ALL=1 SLUICE_TEST_WORKERS=$(CHAOS_WORKERS) \
	  SLUICE_BIN=$(CURDIR)/build/address-undefined/sluice \
	  $(PYTEST) -x -q -rA tests/integration/test_chaos_proxy.py tests/integration/test_chaos.py \
	  tests/integration/test_chaos_pooler.py tests/integration/test_chaos_net.py \
	  tests/integration/test_chaos_replicas.py
	$(MAKE) --no-print-directory abuse

# The soak (issue 17 item 4; not part of make test): SOAK_SECONDS of steady
# mixed load (SOAK_CLIENTS clients, SOAK_RATE operations a second) on the
# release build, RSS, fds and server connections sampled every 10 s; their
# slopes and the level after the load -> SOAK_REPORT (docs/reliability.md).
SOAK_SECONDS ?= 3600
SOAK_CLIENTS ?= 20
SOAK_RATE ?= 400
SOAK_REPORT ?= $(CURDIR)/build/soak-report.jsonl
soak: integration-bins
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_CLIENTS=$(SOAK_CLIENTS) SOAK_RATE=$(SOAK_RATE) \
	  SOAK_REPORT=$(SOAK_REPORT) SLUICE_TEST_WORKERS=$(CHAOS_WORKERS) \
	  SLUICE_BIN=$(CURDIR)/build/address-undefined/sluice \
	  $(PYTEST) -x -q -s tests/integration/test_soak.py

# Abusive clients and the live fuzzer at full scale (issue 17 item 3; make
# integration runs them smaller): 10,000 slowloris connections, 1,000 that
# send garbage, churn at 5,000 connections a second, cancels at 2,000 a
# second, 20 s of abuse each; 30 mutations per corpus input and state.
# Counts -> ABUSE_REPORT (docs/reliability.md).
ABUSE_REPORT ?= $(CURDIR)/build/abuse-report.jsonl
abuse: integration-bins
	ABUSE_SLOWLORIS=10000 ABUSE_GARBAGE=1000 ABUSE_CHURN_RATE=5000 ABUSE_CANCEL_RATE=2000 \
	  ABUSE_SECONDS=20 LIVE_FUZZ_MUTATIONS=30 ABUSE_REPORT=$(ABUSE_REPORT) \
	  SLUICE_TEST_WORKERS=$(CHAOS_WORKERS) SLUICE_BIN=$(CURDIR)/build/address-undefined/sluice \
	  $(PYTEST) -x -q -s tests/integration/test_abuse.py tests/integration/test_live_fuzz.py

# A job scheduled every minute on two sluice instances of one primary, for
# over two minutes: each minute's run happens exactly once (issue 14). Slow,
# so make integration skips it.
test-jobs-slow: integration-bins
	SLUICE_JOBS_SLOW=1 $(INTEGRATION_RUN)/test_jobs.py -k every_minute

# scripts/cluster.sh's first start killed after every one of its steps
# (make integration kills three of them: test_cluster_script.py).
test-cluster-script: integration-bins
	CLUSTER_SCRIPT_ALL_STEPS=1 $(INTEGRATION_RUN)/test_cluster_script.py

# ThreadSanitizer: the unit tests, then the stress test (2,000 clients, pool
# of 10, 4 workers, TSAN_STRESS_SECONDS) and the integration tests that
# exercise what the workers share (pools, cancels, the admin console, reload,
# limits, signals, metrics), all with workers = 4 against build/thread/sluice.
# Any "WARNING: ThreadSanitizer" in a pooler's log fails its test
# (sluice_fixture.Sluice.stop); TSan's exit code 66 fails a unit test.
TSAN_STRESS_SECONDS ?= 20
TSAN_STRESS_CLIENTS ?= 2000
# Of test_cache.py, what races clients on several workers or instances:
# the stale-read hunts, single-flight and the Redis tier's shared parts.
TSAN_TESTS := test_stress.py test_cancel.py test_peers.py test_limits.py test_admin.py test_reload.py \
              test_restart.py test_signals.py test_metrics.py test_smoke.py \
              test_server_lifecycle.py test_cache.py::test_stale_read_hunt \
              test_cache.py::test_single_flight_concurrent_misses_share_one_execution \
              test_cache.py::test_redis_stale_read_hunt_two_instances \
              test_cache.py::test_redis_tier_shared_by_two_instances \
              test_cache.py::test_redis_killed_mid_load_bypasses_without_errors
TSAN_OPTIONS ?= second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp

tsan:
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) SANITIZER=thread all unit-bins
	@TSAN_OPTIONS="$(TSAN_OPTIONS)" $(MAKE) --no-print-directory SANITIZER=thread unit-run
	TSAN_OPTIONS="$(TSAN_OPTIONS)" SLUICE_TEST_WORKERS=4 SLUICE_STRESS_SECONDS=$(TSAN_STRESS_SECONDS) \
	  SLUICE_STRESS_CLIENTS=$(TSAN_STRESS_CLIENTS) SLUICE_BIN=$(CURDIR)/build/thread/sluice \
	  $(PYTEST) -x -q $(addprefix tests/integration/,$(TSAN_TESTS))

# make test should take at most TEST_BUDGET_MINUTES on a 2-core machine
# (README); a run that took longer says so at the end.
TEST_BUDGET_MINUTES ?= 25

test: deps
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory unit && \
	$(MAKE) --no-print-directory integration && \
	$(MAKE) --no-print-directory integration-workers && \
	$(MAKE) --no-print-directory tsan; \
	rc=$$?; s=$$(($$(date +%s) - start)); \
	echo "make test: $$((s / 60)) min $$((s % 60)) s (budget $(TEST_BUDGET_MINUTES) min)"; \
	if [ $$s -gt $$(($(TEST_BUDGET_MINUTES) * 60)) ]; then \
	  echo "make test: over the $(TEST_BUDGET_MINUTES)-minute budget: see the slowest tests" \
	    "with --durations=20, and README's Tests section" >&2; \
	fi; \
	exit $$rc

# The ports first (scripts/demo.sh check): a taken one fails at once, before
# deps and the build, with the process holding it and the variable moving it.
demo:
	@sh scripts/demo.sh check
	@$(MAKE) --no-print-directory deps all
	@sh scripts/demo.sh start

demo-stop:
	@sh scripts/demo.sh stop

# The benchmark's read/write split part runs the classification benchmark too.
bench: deps all $(BUILD)/bench/classify_bench $(BUILD)/bench/null_server
	@sh bench/run.sh

# The classifier alone, against this build's objects (release unless
# SANITIZER is set): no database needed.
CLASSIFY_BENCH_OBJS := $(BUILD)/obj/classify_rw.o $(BUILD)/obj/classify_rw_fn.o $(BUILD)/obj/sql_shape.o

$(BUILD)/bench/classify_bench: bench/classify_bench.c $(CLASSIFY_BENCH_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(CLASSIFY_BENCH_OBJS) -lpg_query -lpthread -lm

# The result cache's ceiling: a server that answers every query at once.
$(BUILD)/bench/null_server: bench/null_server.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $<

bench-classify: $(BUILD)/bench/classify_bench
	$(BUILD)/bench/classify_bench

fuzz:
	@mkdir -p build/fuzz
	@set -e; for f in $(FUZZ_SRCS); do \
	  n=$$(basename $$f .c); \
	  clang $(BASE_CFLAGS) -O1 -fsanitize=fuzzer,address,undefined -o build/fuzz/$$n $$f \
	    $(filter-out src/main.c,$(SRCS)) $(LIBS); \
	  mkdir -p build/fuzz/corpus-$$n; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus-$$n \
	    $$( [ -d tests/fuzz/corpus/$$n ] && echo tests/fuzz/corpus/$$n ); \
	done

lint: lint-structure
	clang-format --dry-run --Werror src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c tests/tools/*.c tests/tools/*.h bench/*.c
	cppcheck --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	  --suppress=missingIncludeSystem -q -Isrc src bench

# No function over 120 lines or file over 1,200 in src/*.c, and no #include
# going up the layers of scripts/layers.txt or round a cycle within one. Both
# scripts run (and report) even if the first fails.
lint-structure:
	@rc=0; \
	/usr/bin/python3 scripts/check_sizes.py || rc=1; \
	/usr/bin/python3 scripts/check_layers.py || rc=1; \
	exit $$rc

# The man pages, from docs/ (pandoc, a Debian package): sluice(1) from
# docs/man/sluice.1.md, sluice.ini(5) from docs/configuration.md between a
# head and a foot, its headings one level up. docs/man/man.lua turns tables
# into lists (a man page is 80 columns wide) and links into their text.
VERSION   := $(shell sed -n 's/^\#define SLUICE_VERSION "\(.*\)"/\1/p' src/version.h)
PANDOC    ?= pandoc
MAN_PAGES := build/man/sluice.1 build/man/sluice.ini.5
MAN_FLAGS := -s -f markdown -t man --lua-filter=docs/man/man.lua

man: $(MAN_PAGES)

build/man/sluice.1: docs/man/sluice.1.md docs/man/man.lua src/version.h
	@mkdir -p $(dir $@)
	sed 's/@VERSION@/$(VERSION)/' $< | $(PANDOC) $(MAN_FLAGS) -o $@

build/man/sluice.ini.5: docs/man/sluice.ini.5.head.md docs/configuration.md \
                        docs/man/sluice.ini.5.foot.md docs/man/man.lua src/version.h
	@mkdir -p $(dir $@)
	{ cat docs/man/sluice.ini.5.head.md; sed '1{/^# /d}' docs/configuration.md; \
	  cat docs/man/sluice.ini.5.foot.md; } | sed 's/@VERSION@/$(VERSION)/' | \
	  $(PANDOC) $(MAN_FLAGS) --shift-heading-level-by=-1 -o $@

# make install: the binary of this build (release unless SANITIZER is set),
# the man pages, the documentation with the example configs, and the systemd
# units with BINDIR's path to sluice. debian/rules runs it with PREFIX=/usr.
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
DOCDIR    ?= $(PREFIX)/share/doc/sluice
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system

install: all man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR)/grafana $(DESTDIR)$(SYSTEMDUNITDIR)
	install -m 0755 $(BUILD)/sluice $(DESTDIR)$(BINDIR)/sluice
	install -m 0644 build/man/sluice.1 $(DESTDIR)$(MANDIR)/man1/sluice.1
	install -m 0644 build/man/sluice.ini.5 $(DESTDIR)$(MANDIR)/man5/sluice.ini.5
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 docs/grafana/* $(DESTDIR)$(DOCDIR)/grafana/
	install -m 0644 etc/sluice.ini etc/userlist.txt $(DESTDIR)$(DOCDIR)/examples/
	for u in sluice.service sluice@.service; do \
	  sed 's|/usr/bin/sluice|$(BINDIR)/sluice|g' etc/systemd/$$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u && \
	  chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
	done

# make deb: dpkg-buildpackage in a copy of the tree under build/deb/ (it
# writes the packages next to the tree it builds, and cleans that tree), so
# the .deb lands in build/deb/. debian/changelog's version must be
# src/version.h's.
DEB_DIR   := build/deb
DEB_BUILD_OPTIONS ?= parallel=2
export DEB_BUILD_OPTIONS

deb:
	@v=$$(dpkg-parsechangelog -S Version); if [ "$$v" != "$(VERSION)" ]; then \
	  echo "make deb: debian/changelog says $$v, src/version.h $(VERSION)" >&2; exit 1; fi
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/sluice-$(VERSION)
	tar --exclude=./build --exclude=./.git --exclude=__pycache__ --exclude=.pytest_cache -cf - . | \
	  tar -C $(DEB_DIR)/sluice-$(VERSION) -xf -
	cd $(DEB_DIR)/sluice-$(VERSION) && dpkg-buildpackage -b --no-sign
	rm -rf $(DEB_DIR)/sluice-$(VERSION)
	@ls -l $(DEB_DIR)/*.deb

# The package on this machine (root, Debian 12): apt-get install, the units
# checked with systemd-analyze verify, the installed binary started the way
# sluice.service starts it (user sluice, the packaged config, NOTIFY_SOCKET),
# the admin console, reload, logrotate and stop, then apt-get purge; the
# machine is left as it was (tests/package/test_deb.py).
deb-test: deb
	$(PYTEST) -x -q -p no:cacheprovider tests/package/test_deb.py

clean:
	rm -rf build
