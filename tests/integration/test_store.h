/*
** test_store.h: which relay store the integration tests run against.
**
** Unset, every relay a test starts keeps its store in the SQLite file its
** --data names.  KNIT_TEST_STORE=pg (set by tests/pgsuite.cmake for the
** pg.<area>.<case> tests) puts every relay on a real PostgreSQL server
** instead: one throw-away server per test process (pg_fixture.h), started
** on first use and stopped at exit, and one fresh database per --data path,
** so a relay restarted on the same --data finds its state again and two
** relays on different paths share nothing.  The launchers add
** `--store URI` after their other arguments (sync-relay's last --data or
** --store wins), unless the test passed a --store of its own.
**
** Compiled into a test only with pg_fixture.c and knit_relay_pg (the
** launchers see KNIT_TEST_PG); test code, not hardened.
*/
#ifndef KNIT_TEST_STORE_H
#define KNIT_TEST_STORE_H

#include <stdint.h>

#include "digest.h"
#include "knit.h"

/* 1 when KNIT_TEST_STORE=pg, 0 when unset; any other value exits the test
** with a message. */
int ts_pg(void);
/* The URI of data's PostgreSQL database (created on first use, starting the
** server first if need be), valid until exit; NULL when ts_pg() is 0.  Exits
** the test (77 without server binaries, 1 on failure) if it cannot. */
const char *ts_store_uri(const char *data);
/* The --store value a launcher adds for a relay on data with extra
** arguments (NULL-terminated, may be NULL): NULL when none is to be added
** (the SQLite store, or extra has a --store of its own). */
const char *ts_store_arg(const char *data, const char *const *extra);
/* Reads data's PostgreSQL store as relay_store.h's knit_relay_store_digest,
** _seq and _catch_up (all of ns) do.  0 or a knit error. */
int ts_digest(const char *data, const char *ns, knit_digest_t *out /* OUT */);
int ts_seq(const char *data, const char *ns, uint64_t *seq /* OUT */);
int ts_catch_up(const char *data, const char *ns, knit_batch_t **out /* OUT */);

#endif
