/*
** pg_fixture.h: a real, throw-away PostgreSQL server for tests.  initdb
** into a fresh directory under /tmp, postgres listening only on a Unix
** socket in that directory (no TCP port to collide on), run as `nobody`
** when the test runs as root (PostgreSQL refuses root).  Stopped (fast
** shutdown, then SIGKILL) and removed at exit, a failed CHECK included.
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
} pgfx_t;

/* Starts a server within 20 s, or exits the test: PGFX_SKIP when the
** binaries are absent, 1 when they fail. */
void pgfx_start(pgfx_t *f);
/* Stops it and removes its directory (also done at exit). */
void pgfx_stop(pgfx_t *f);

#endif
