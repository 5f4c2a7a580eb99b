/*
** sync_util.h: helpers for the sync integration tests and the sync
** benchmark: child processes (the real sync-relay and sync-agent) with
** every wait bounded, a temporary directory removed at exit, and small
** SQLite helpers for writing and comparing replicas with plain
** connections.  Test code: failures are reported, not hidden, but nothing
** here is hardened.
**
** Every child started here is registered; at exit (including a failed
** CHECK, which calls exit) each one still running is killed with SIGKILL
** and reaped, and the temporary directory is removed.
*/
#ifndef KNIT_SYNC_UTIL_H
#define KNIT_SYNC_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <sys/types.h>

#include "knit.h"

/* A child process. */
typedef struct su_proc_s {
    pid_t pid;     /* 0 when not running */
    char log[512]; /* its stderr (and stdout, unless captured) goes here */
} su_proc_t;

/* A running relay. */
typedef struct su_relay_s {
    su_proc_t p;      /* the process */
    int port;         /* its port */
    char data[512];   /* its store */
    char secret[512]; /* its JWT secret file */
} su_relay_t;

/* Milliseconds on a monotonic clock. */
uint64_t su_now_ms(void);
/* Sleeps ms milliseconds. */
void su_sleep_ms(unsigned ms);

/* Makes a fresh directory under /tmp (removed at exit) and returns it. */
const char *su_tmpdir(void);
/* dir/name into buf. */
char *su_path(char *buf, size_t n, const char *name);

/* Starts argv (argv[0] a path) with stdout and stderr appended to log;
** with out_fd, stdout goes to a pipe whose read end is stored there. 0 or -1. */
int su_spawn(su_proc_t *p, const char *const *argv, const char *log, int *out_fd);
/* Waits up to timeout_ms for the child to exit: 0 and *status, or -1. */
int su_wait(su_proc_t *p, int timeout_ms, int *status);
/* Sends sig, then waits up to timeout_ms (then SIGKILL).  0 or -1. */
int su_kill(su_proc_t *p, int sig, int timeout_ms, int *status);
/* Runs argv to completion within timeout_ms, stdout+stderr into out (NUL-
** terminated, truncated to n - 1).  Returns the exit code, or -1 on a
** timeout or a signal. */
int su_run(const char *const *argv, int timeout_ms, char *out, size_t n);

/* Writes a 48-byte random JWT secret into dir/name (mode 0600). */
int su_write_secret(const char *path);
/* Writes an HS256 token for sub, signed with the key in secret_path, to
** token_path.  0 or -1. */
int su_write_token(const char *secret_path, const char *sub, const char *token_path);

/* Starts sync-relay on 127.0.0.1:port (0: ephemeral) with the given store
** and secret file, plus extra (NULL-terminated, may be NULL) arguments;
** waits for its "listening on" line.  0 or -1.  Under KNIT_TEST_STORE=pg
** the store is data's PostgreSQL database (test_store.h). */
int su_relay_start(su_relay_t *r, int port, const char *data, const char *secret,
                   const char *const *extra);
/* Starts `sync-agent run replica --relay 127.0.0.1:port --token-file token`
** plus extra arguments (NULL-terminated, may be NULL). */
int su_agent_start(su_proc_t *p, const char *replica, int port, const char *token, const char *log,
                   const char *const *extra);

/* A plain SQLite connection with a 10 s busy timeout. */
sqlite3 *su_db(const char *path);
/* Runs SQL (printf-style); aborts the test on failure. */
void su_exec(sqlite3 *db, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The first column of the first row as an integer (printf-style SQL);
** -1 when there is no row. */
int64_t su_int(sqlite3 *db, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The whole table as text, rows in key order (`SELECT * ... ORDER BY
** order_by`), one line per row; a malloc'd string. */
char *su_dump(sqlite3 *db, const char *table, const char *order_by);
/* Replica digest of namespace ns (read-only knit_open) as 64 hex digits. */
int su_replica_digest(const char *path, const char *ns, char out[65]);
/* The relay store at data, read-only: the digest of ns as 64 hex digits,
** ns's sequence, and every cell of ns (a batch for knit_batch_free).  Read
** from data's PostgreSQL database instead under KNIT_TEST_STORE=pg
** (test_store.h).  0 or a knit error. */
int su_relay_digest(const char *data, const char *ns, char out[65]);
int su_relay_seq(const char *data, const char *ns, uint64_t *seq /* OUT */);
int su_relay_catch_up(const char *data, const char *ns, knit_batch_t **out /* OUT */);

/* Polls pred(arg) every few milliseconds until it returns non-zero (1) or
** timeout_ms pass (0). */
int su_wait_until(int (*pred)(void *arg), void *arg, int timeout_ms);

/* Scales a count by KNIT_SYNC_SCALE (default 1). */
long su_scale(long n);
/* Creates the replica path with schema (SQL) and tracks table with
** `sync-agent track`; aborts the test on failure. */
void su_make_replica(const char *path, const char *schema, const char *table);
/* A free loopback TCP port (bound, then released: good enough for tests). */
int su_free_port(void);

/* Files the tests read back (logs, outputs), at most their first 64 KiB:
** 1 if the file at path holds needle (0 if it cannot be read); how many
** times it does; and its first 4 KiB printed to stderr under a header, for
** a failure's context. */
int su_file_has(const char *path, const char *needle);
int su_count_in_file(const char *path, const char *needle);
void su_print_file(const char *path);

#endif
