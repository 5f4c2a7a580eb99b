/*
** watch.h: noticing commits to a replica by any process (watch.c), shared
** by the sync client (client.c) and knit_watch_start() (knit_sync.h).
** Not installed.
*/
#ifndef KNIT_WATCH_H
#define KNIT_WATCH_H

#include "knit_sync.h"

typedef struct knit_watch_conf_s {
    const char *path;                           /* file to watch [knit_filename(k)] */
    int no_watch;                               /* 1: polling only */
    unsigned poll_ms;                           /* safety poll [250] */
    void (*changed)(void *data);                /* knit_poll found a change (after the callback) */
    void (*warn)(void *data, const char *line); /* cannot watch: polling only */
    void *data;                                 /* for both */
} knit_watch_conf_t;

int knit__watch_start(uv_loop_t *loop, knit_t *k, const knit_watch_conf_t *conf,
                      knit_watch_t **out /* OUT */);

/* conf.data of w (for its close callback). */
void *knit__watch_data(const knit_watch_t *w);

#endif
