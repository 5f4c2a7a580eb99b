/*
** pg_fixture.h: a real, throw-away PostgreSQL server for tests.  initdb
** into a fresh directory under /tmp, postgres listening only on a Unix
** socket in that directory (no TCP port to collide on), run as `nobody`
** when the test runs as root (PostgreSQL refuses root).  Stopped (fast
** shutdown, then SIGKILL) and removed at exit, a failed CHECK included;
** processes a test stopped (pgfx_signal_all SIGSTOP) are continued first.
*/
#ifndef KNIT_PG_FIXTURE_H
#define KNIT_PG_FIXTURE_H

#include <sys/types.h>

#define PGFX_SKIP 77 /* CTest SKIP_RETURN_CODE: no PostgreSQL server binaries */

typedef struct pgfx_s {
    char dir[128];      /* the temporary directory (data/, socket, logs) */
    char conninfo[512]; /* libpq key=value string */
    char uri[512];      /* the same as a postgresql:// URI */
    pid_t pid;          /* the postmaster, 0 when stopped */
    char postgres[300]; /* the server binary */
    uid_t uid;          /* the server runs as this user */
    gid_t gid;          /* and group */
    int stopped;        /* pgfx_signal_all(SIGSTOP) without SIGCONT since */
} pgfx_t;

/* Starts a server within 20 s, or exits the test: PGFX_SKIP when the
** binaries are absent, 1 when they fail. */
void pgfx_start(pgfx_t *f);
/* Stops it and removes its directory (also done at exit). */
void pgfx_stop(pgfx_t *f);
/* Restarts the server on the same data directory and socket: a fast
** shutdown (every connection is ended), down_ms milliseconds without a
** server, then a start; returns once it answers (or exits the test). */
void pgfx_restart(pgfx_t *f, unsigned down_ms);
/* Sends sig to every process of the server: the postmaster and its
** children (found through /proc).  Returns how many were signalled. */
int pgfx_signal_all(pgfx_t *f, int sig);

#endif
