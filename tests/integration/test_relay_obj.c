/*
** test_relay_obj.c: the relay as an object on the test's own libuv loop
** (transport/relay/relay.h), with a real sync client (knit_sync.h) on the
** same loop.  Checks an authentication hook that answers later (from a uv
** timer, 50 ms after it was asked), both accepting and refusing, and that
** one relay serves any number of listeners.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <sqlite3.h>

#include "test.h"

#include "alloc.h"
#include "knit.h"
#include "knit_sync.h"
#include "relay.h"
#include "relay_store.h"

#define HOOK_DELAY_MS 50

typedef struct pending_s {
    uv_timer_t timer;               /* fires HOOK_DELAY_MS after the request */
    const knit_auth_request_t *req; /* the request to answer */
    struct hook_s *hook;            /* owner */
} pending_t;

typedef struct hook_s {
    uv_loop_t *loop;   /* the test's loop */
    int refuse;        /* answer KNIT_EAUTH instead of the built-in check */
    int asked;         /* requests received */
    int answered;      /* requests answered */
    uint64_t first_ms; /* when the first request came (loop time) */
    uint64_t done_ms;  /* when the first answer went (loop time) */
} hook_t;

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_hook_timer(uv_timer_t *t)
{
    pending_t *p = t->data;
    hook_t *hk = p->hook;
    if (!hk->answered)
        hk->done_ms = uv_now(hk->loop);
    hk->answered++;
    if (hk->refuse) {
        knit_auth_result_t res;
        memset(&res, 0, sizeof res);
        res.code = KNIT_EAUTH;
        res.why = "the test's hook says no";
        knit_relay_auth_done(p->req, &res);
    } else {
        knit_relay_auth_default(p->req);
    }
    uv_close((uv_handle_t *)t, on_timer_closed);
}

/* The hook: answers nothing now, everything 50 ms later. */
static int slow_hook(void *data, const knit_auth_request_t *req)
{
    hook_t *hk = data;
    pending_t *p = calloc(1, sizeof *p);
    CHECK(p != NULL);
    if (!hk->asked)
        hk->first_ms = uv_now(hk->loop);
    hk->asked++;
    p->req = req;
    p->hook = hk;
    uv_timer_init(hk->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_hook_timer, HOOK_DELAY_MS, 0);
    return 0;
}

typedef struct world_s {
    uv_loop_t loop;            /* the test's loop */
    char dir[64];              /* temporary directory */
    knit_relay_store_t *store; /* the relay's store */
    knit_relay_t *relay;       /* the relay object */
    int relay_closed;          /* its close callback ran */
    knit_t *k;                 /* the replica */
    knit_sync_t *sync;         /* the client */
    int synced;                /* SYNCED seen */
    int fatal;                 /* a fatal error seen */
    char error[256];           /* its message */
    uv_timer_t deadline;       /* bounds the test */
    int timed_out;             /* the deadline fired */
} world_t;

static void on_sync_event(knit_sync_t *s, const knit_sync_event_t *ev)
{
    world_t *w = knit_sync_data(s);
    int before = w->synced || w->fatal;
    if (ev->type == KNIT_SYNC_EV_SYNCED)
        w->synced = 1;
    if (ev->type == KNIT_SYNC_EV_ERROR && ev->fatal) {
        w->fatal = 1;
        snprintf(w->error, sizeof w->error, "%s", ev->message ? ev->message : "");
    }
    if (!before && (w->synced || w->fatal))
        uv_stop(&w->loop);
}

static void on_deadline(uv_timer_t *t)
{
    world_t *w = t->data;
    w->timed_out = 1;
    uv_stop(&w->loop);
}

static void on_relay_closed(knit_relay_t *r)
{
    world_t *w = knit_relay_data(r);
    w->relay_closed = 1;
}

static void on_sync_closed(knit_sync_t *s)
{
    (void)s;
}

static void quiet_log(void *data, int level, const char *line)
{
    (void)data;
    if (getenv("KNIT_TEST_VERBOSE"))
        fprintf(stderr, "relay [%d] %s\n", level, line);
}

/* A relay with two listeners, the client on the second one, a row written
** before syncing.  Runs until SYNCED, a fatal error or 10 s. */
static void run(world_t *w, hook_t *hk)
{
    char path[128];
    knit_relay_opts_t ro;
    knit_relay_addr_t a1, a2;
    knit_sync_options_t so;

    memset(w, 0, sizeof *w);
    CHECK_OK(uv_loop_init(&w->loop));
    strcpy(w->dir, "/tmp/knit-relayobj-XXXXXX");
    CHECK(mkdtemp(w->dir) != NULL);
    snprintf(path, sizeof path, "%s/relay.db", w->dir);
    CHECK_OK(knit_relay_store_open(path, 0, &w->store));

    hk->loop = &w->loop;
    memset(&ro, 0, sizeof ro);
    ro.cfg.store = w->store;
    ro.cfg.log_level = KNIT_LOG_DEBUG;
    ro.cfg.authenticate = slow_hook;
    ro.cfg.auth_data = hk;
    ro.log = quiet_log;
    ro.data = w;
    CHECK_OK(knit_relay_new(&w->loop, &ro, &w->relay));
    CHECK_OK(knit_relay_listen(w->relay, "127.0.0.1", 0, &a1));
    CHECK_OK(knit_relay_listen(w->relay, "127.0.0.1", 0, &a2));
    CHECK(a1.port > 0 && a2.port > 0 && a1.port != a2.port);
    CHECK_EQ_INT(knit_relay_listen(w->relay, "not-an-ip", 0, NULL), KNIT_EINVAL);

    snprintf(path, sizeof path, "%s/a.db", w->dir);
    CHECK_OK(knit_open(path, NULL, &w->k));
    CHECK_OK(sqlite3_exec(knit_db(w->k),
                          "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT);"
                          "INSERT INTO notes VALUES('n1', 'hello');",
                          NULL, NULL, NULL));
    CHECK_OK(knit_track(w->k, "notes", NULL));

    memset(&so, 0, sizeof so);
    so.host = "127.0.0.1";
    so.port = a2.port;
    so.cred_kind = KNIT_SYNC_ANONYMOUS;
    so.no_watch = 1;
    so.on_event = on_sync_event;
    so.data = w;
    CHECK_OK(knit_sync_start(&w->loop, w->k, &so, &w->sync));

    uv_timer_init(&w->loop, &w->deadline);
    w->deadline.data = w;
    uv_timer_start(&w->deadline, on_deadline, 10000, 0);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* Stops the client and the relay on the loop, and cleans up. */
static void finish(world_t *w)
{
    char cmd[160];
    knit_sync_stop(w->sync, on_sync_closed);
    knit_relay_close(w->relay, on_relay_closed);
    uv_close((uv_handle_t *)&w->deadline, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    CHECK(w->relay_closed);
    CHECK_OK(uv_loop_close(&w->loop));
    knit_close(w->k);
    knit_relay_store_close(w->store);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", w->dir);
    CHECK(system(cmd) == 0);
}

static int count_rows(void *data, const knit_relay_ns_info_t *ns)
{
    *(uint64_t *)data += ns->rows;
    return 0;
}

static void hook_later_accepts(void)
{
    world_t w;
    hook_t hk;
    memset(&hk, 0, sizeof hk);
    run(&w, &hk);
    if (!w.synced)
        fprintf(stderr, "not synced: timed out %d, error %s\n", w.timed_out, w.error);
    CHECK(w.synced);
    CHECK(hk.asked >= 1);
    CHECK_EQ_INT(hk.answered, hk.asked);
    /* The answer came from the timer, not from inside the hook. */
    CHECK(hk.done_ms >= hk.first_ms + HOOK_DELAY_MS);
    /* The row reached the store through the relay on the second listener. */
    {
        knit_sync_status_t st;
        uint64_t rows = 0;
        knit_sync_status(w.sync, &st);
        CHECK(st.acks >= 1);
        CHECK_OK(knit_relay_store_list(w.store, count_rows, &rows));
        CHECK_EQ_INT(rows, 1);
    }
    finish(&w);
}

static void hook_later_refuses(void)
{
    world_t w;
    hook_t hk;
    memset(&hk, 0, sizeof hk);
    hk.refuse = 1;
    run(&w, &hk);
    CHECK(!w.synced);
    CHECK(w.fatal);
    CHECK(strstr(w.error, "the test's hook says no") != NULL);
    CHECK(hk.done_ms >= hk.first_ms + HOOK_DELAY_MS);
    finish(&w);
}

KNIT_TESTS(T(hook_later_accepts), T(hook_later_refuses))
