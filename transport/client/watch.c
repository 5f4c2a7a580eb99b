/*
** watch.c: noticing commits that any connection, in any process, makes to a
** replica, within milliseconds, on a libuv loop.  The sync client uses it
** to push local writes and, as a follower, to tell the application about
** remote changes the leader applied; knit_watch_start() gives it to
** applications that only want change notifications (knit_on_change), and
** `sync-agent watch` prints them.
**
** Design notes
**   1. A file watch on the replica's directory (the database and its -wal
**      and -journal files) wakes knit_poll, which checks PRAGMA
**      data_version, stamps what others wrote and fires the change
**      callback.  The watch fires on the writer's WAL write, which can come
**      just before the commit is visible, so a poll that finds nothing is
**      repeated after 1, 2, 4, 8 and 16 ms.
**   2. A coarse timer (poll_ms) polls as a safety net, for file systems
**      without notifications.
**   3. Sidecar files beside the replica (REPLICA.knit-lock,
**      REPLICA.sync-status) are not the database: a name that continues
**      the replica's with anything but '-' is ignored.
**   4. A poll never waits on the loop for another writer: it runs with a
**      busy timeout of 0, and when an app holds the file in a transaction
**      (KNIT_EBUSY: there are writes to stamp, and the lock is taken) it
**      is tried again every millisecond (after 200 ms of that every 5 ms,
**      after 2 s every 20 ms) until it gets through, while the loop goes
**      on with the connection.  knit_poll finds the same commits again
**      after a failure.
*/
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "watch.h"

#define DEF_POLL_MS 250
#define RECHECKS 5

struct knit_watch_s {
    knit_t *k;                    /* the replica */
    knit_watch_conf_t conf;       /* configuration; path is ours below */
    char *dir;                    /* directory watched, then the replica's basename (owned) */
    const char *base;             /* the basename, inside dir's allocation */
    size_t baselen;               /* its length */
    uv_timer_t poll;              /* note 2 */
    uv_timer_t recheck;           /* note 1 */
    uv_fs_event_t fs;             /* the directory watch */
    int watching;                 /* fs was initialised */
    unsigned rechecks;            /* rechecks since the last watch event */
    uint64_t busy_since;          /* loop time of the first busy poll in a row, 0: none */
    int open_handles;             /* not yet reported closed */
    int closing;                  /* knit_watch_stop was called */
    knit_watch_close_fn close_cb; /* called once everything is closed */
};

static void on_recheck(uv_timer_t *t);

static int check(knit_watch_t *w)
{
    int was = knit_busy_timeout(w->k, 0); /* note 4 */
    int rc = knit_poll(w->k);
    knit_busy_timeout(w->k, was);
    if (rc > 0 && w->conf.changed)
        w->conf.changed(w->conf.data);
    if (rc == KNIT_EBUSY && !w->closing) {
        uint64_t now = uv_now(w->recheck.loop);
        if (!w->busy_since)
            w->busy_since = now;
        uint64_t waited = now - w->busy_since;
        w->rechecks = 0;
        uv_timer_start(&w->recheck, on_recheck, waited < 200 ? 1 : waited < 2000 ? 5 : 20, 0);
    } else {
        w->busy_since = 0;
    }
    return rc;
}

static void on_recheck(uv_timer_t *t)
{
    knit_watch_t *w = t->data;
    int rc = check(w);
    if (rc > 0 || rc == KNIT_EBUSY)
        return; /* done, or tried again in 1 ms */
    if (++w->rechecks < RECHECKS)
        uv_timer_start(&w->recheck, on_recheck, (uint64_t)1 << w->rechecks, 0);
}

static void on_fs(uv_fs_event_t *h, const char *filename, int events, int status)
{
    knit_watch_t *w = h->data;
    (void)events;
    if (status < 0 || w->closing)
        return;
    if (filename && (strncmp(filename, w->base, w->baselen) != 0 ||
                     (filename[w->baselen] != '\0' && filename[w->baselen] != '-')))
        return; /* note 3 */
    int rc = check(w);
    if (rc > 0) {
        uv_timer_stop(&w->recheck);
        return;
    }
    if (rc == KNIT_EBUSY)
        return; /* tried again in 1 ms */
    w->rechecks = 0;
    uv_timer_start(&w->recheck, on_recheck, 1, 0);
}

static void on_poll(uv_timer_t *t)
{
    check(t->data);
}

/* Splits the path into the directory to watch and the basename, both in
** one allocation. */
static int split_path(knit_watch_t *w, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dl = slash ? (slash > path ? (size_t)(slash - path) : 1) : 1, bl = strlen(base);
    if (!(w->dir = knit__malloc(dl + bl + 2)))
        return KNIT_ENOMEM;
    memcpy(w->dir, slash ? path : ".", dl);
    w->dir[dl] = '\0';
    memcpy(w->dir + dl + 1, base, bl + 1);
    w->base = w->dir + dl + 1;
    w->baselen = bl;
    return 0;
}

int knit__watch_start(uv_loop_t *loop, knit_t *k, const knit_watch_conf_t *conf,
                      knit_watch_t **out) /* see watch.h */
{
    knit_watch_t *w;
    const char *path = conf->path ? conf->path : knit_filename(k);
    int rc;
    *out = NULL;
    if (!(w = knit__calloc(1, sizeof *w)))
        return KNIT_ENOMEM;
    w->k = k;
    w->conf = *conf;
    w->conf.path = NULL;
    if (!w->conf.poll_ms)
        w->conf.poll_ms = DEF_POLL_MS;
    uv_timer_init(loop, &w->poll);
    uv_timer_init(loop, &w->recheck);
    w->poll.data = w->recheck.data = w->fs.data = w;
    w->open_handles = 2;
    if (!conf->no_watch && path && *path) {
        if ((rc = split_path(w, path)) == 0 && (rc = uv_fs_event_init(loop, &w->fs)) == 0) {
            w->watching = 1;
            w->open_handles++;
            rc = uv_fs_event_start(&w->fs, on_fs, w->dir, 0);
        }
        if (rc && w->conf.warn) {
            char line[1200];
            snprintf(line, sizeof line, "cannot watch %s (%s): noticing writes by polling only",
                     w->dir ? w->dir : path, rc < 0 ? uv_strerror(rc) : knit_strerror(rc));
            w->conf.warn(w->conf.data, line);
        }
    }
    uv_timer_start(&w->poll, on_poll, w->conf.poll_ms, w->conf.poll_ms);
    *out = w;
    return 0;
}

int knit_watch_start(uv_loop_t *loop, knit_t *k, unsigned poll_ms,
                     knit_watch_t **out) /* see knit_sync.h */
{
    knit_watch_conf_t c;
    if (!loop || !k || !out)
        return KNIT_EINVAL;
    memset(&c, 0, sizeof c);
    c.poll_ms = poll_ms;
    return knit__watch_start(loop, k, &c, out);
}

void knit_watch_check(knit_watch_t *w) /* see knit_sync.h */
{
    int rc;
    if (w && !w->closing && (rc = check(w)) <= 0 && rc != KNIT_EBUSY) {
        w->rechecks = 0;
        uv_timer_start(&w->recheck, on_recheck, 1, 0);
    }
}

void *knit__watch_data(const knit_watch_t *w) /* see watch.h */
{
    return w->conf.data;
}

static void on_closed(uv_handle_t *h)
{
    knit_watch_t *w = h->data;
    if (--w->open_handles > 0)
        return;
    if (w->close_cb)
        w->close_cb(w);
    knit__free(w->dir);
    knit__free(w);
}

void knit_watch_stop(knit_watch_t *w, knit_watch_close_fn cb) /* see knit_sync.h */
{
    if (!w || w->closing)
        return;
    w->closing = 1;
    w->close_cb = cb;
    uv_close((uv_handle_t *)&w->poll, on_closed);
    uv_close((uv_handle_t *)&w->recheck, on_closed);
    if (w->watching)
        uv_close((uv_handle_t *)&w->fs, on_closed);
}
