/*
** lp.c: HTTP long-polling sessions as virtual byte streams (API in lp.h).
** A session buffers what the relay writes until the client fetches and
** acknowledges it with GET cursors, and hands what the client POSTs to the
** relay as stream input, so the relay serves it like any other stream.
**
** Design notes
**   1. The output is one buffer of bytes [base, base + olen) of the
**      session's output, and a list of the writes they came from (each a
**      byte range ending at `end`).  Every kept byte belongs to a write
**      not yet acknowledged, so write ends are the only valid cursors
**      besides base: a GET always answers whole frames.
**   2. A write completes (its callback runs with 0) when a GET's cursor
**      reaches its end, not when it is buffered: the engine's queue
**      accounting then measures what the client has not fetched, and its
**      slow-consumer and disconnect rules apply as on TCP.  Past
**      max_unacked bytes writes are refused, and the engine closes.
**   3. At most one GET waits per session (a new one answers the old one
**      empty), and at most one POST (while the user has paused reading).
**      A waiting GET is answered by the write that brings news, or at its
**      deadline in knit__lp_tick().
**   4. Requests are the session's liveness: a session with no waiting
**      request and none for idle_ms is ended (on_end KNIT_ETIMEDOUT).
**   5. Closing is deferred to the next tick, as stream.h requires (no
**      on_close from inside knit_stream_close()): the writes still kept
**      complete with KNIT_ECLOSED, then on_close, then the session is
**      freed.  A closing session is not found by its id any more.
**   6. Session ids are bearer secrets: 128 random bits from the conf's
**      hook, compared in constant time.
**
**     OPEN --DELETE / idle: on_end--> ENDED --knit_stream_close()--> CLOSING
**       |                                                              |
**       +--knit_stream_shutdown(): FIN (GET past the end: 410)         +--tick: on_close, freed
*/
#include "lp.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "cred.h"
#include "frame.h"

typedef struct wrec_s {
    uint64_t end;            /* output offset just past this write (note 1) */
    knit_stream_write_cb cb; /* the user's completion, or NULL */
    void *arg;               /* its argument */
} wrec_t;

typedef struct lps_s {
    knit_stream_t pub;             /* the public part; first */
    knit_lp_t *t;                  /* owner */
    struct lps_s *prev;            /* table's list */
    struct lps_s *next;            /* table's list */
    char sid[KNIT_LP_SID_LEN + 1]; /* the session id, hex */
    char peer[64];                 /* the opening client's address */
    uint8_t *ob;                   /* output bytes [base, base + olen) (note 1) */
    size_t olen;                   /* their count */
    size_t ocap;                   /* bytes allocated in ob */
    uint64_t base;                 /* output offset of ob[0] */
    wrec_t *w;                     /* writes not acknowledged, oldest first */
    size_t nw;                     /* their count */
    size_t wcap;                   /* entries allocated in w */
    knit_lp_answer_cb get_cb;      /* the waiting GET, or NULL (note 3) */
    void *get_arg;                 /* its argument */
    uint64_t get_cursor;           /* its cursor */
    uint64_t get_deadline;         /* when it is answered empty */
    knit_lp_answer_cb post_cb;     /* the POST waiting for reading, or NULL */
    void *post_arg;                /* its argument */
    uint8_t *stash;                /* its bytes */
    size_t nstash;                 /* their count */
    uint64_t last;                 /* mono ms of the last request (note 4) */
    int reading;                   /* the user wants input */
    int ended;                     /* on_end reported */
    int fin;                       /* knit_stream_shutdown called */
    int closing;                   /* knit_stream_close called (note 5) */
} lps_t;

struct knit_lp_s {
    knit_lp_conf_t c; /* the configuration */
    lps_t *ss;        /* sessions */
    size_t nss;       /* count */
};

static void say(knit_lp_answer_cb cb, void *arg, int status, const char *text)
{
    cb(arg, status, (const uint8_t *)text, strlen(text));
}

/* The open session with id sid[0..nsid), or NULL (note 6). */
static lps_t *find(knit_lp_t *t, const char *sid, size_t nsid)
{
    lps_t *hit = NULL;
    if (nsid != KNIT_LP_SID_LEN)
        return NULL;
    for (lps_t *s = t->ss; s; s = s->next)
        if (knit_ct_equal(s->sid, sid, KNIT_LP_SID_LEN) && !s->closing)
            hit = s;
    return hit;
}

static void end(lps_t *s, int code, const char *msg)
{
    if (s->ended || s->closing)
        return;
    s->ended = 1;
    if (s->pub.cb.on_end)
        s->pub.cb.on_end(&s->pub, code, msg);
}

/* ---------------------------------------------------------------------- */
/* Output                                                                   */

/* The end of the last write that fits in KNIT_LP_RESP_MAX bytes after
** offset `from` (a write end or base), at least the first write's. */
static uint64_t answer_end(const lps_t *s, uint64_t from)
{
    uint64_t e = from;
    for (size_t i = 0; i < s->nw; i++) {
        if (s->w[i].end <= from)
            continue;
        if (e > from && s->w[i].end - from > KNIT_LP_RESP_MAX)
            break;
        e = s->w[i].end;
    }
    return e;
}

/* Answers the waiting GET with what lies past its cursor (maybe nothing). */
static void answer_get(lps_t *s, uint64_t now)
{
    knit_lp_answer_cb cb = s->get_cb;
    void *arg = s->get_arg;
    uint64_t from = s->get_cursor, to;
    if (!cb)
        return;
    s->get_cb = NULL;
    s->get_arg = NULL;
    s->last = now;
    to = answer_end(s, from);
    if (to == from && s->fin)
        say(cb, arg, 410, "session ended\n");
    else
        cb(arg, 200, s->ob + (from - s->base), (size_t)(to - from));
}

/* Drops the output before cursor and completes the writes it ends (note 2). */
static void acknowledge(lps_t *s, uint64_t cursor)
{
    size_t k = 0, drop = (size_t)(cursor - s->base);
    while (k < s->nw && s->w[k].end <= cursor)
        k++;
    if (drop) {
        memmove(s->ob, s->ob + drop, s->olen - drop);
        s->olen -= drop;
        s->base = cursor;
    }
    if (!k)
        return;
    /* Copied out first: a completion may write again. */
    wrec_t done[16];
    while (k) {
        size_t m = k < 16 ? k : 16;
        memcpy(done, s->w, m * sizeof *done);
        memmove(s->w, s->w + m, (s->nw - m) * sizeof *s->w);
        s->nw -= m;
        k -= m;
        for (size_t i = 0; i < m; i++)
            if (done[i].cb)
                done[i].cb(&s->pub, done[i].arg, 0);
    }
}

/* 1 if cursor is base or the end of a write still kept. */
static int valid_cursor(const lps_t *s, uint64_t cursor)
{
    if (cursor == s->base)
        return 1;
    for (size_t i = 0; i < s->nw; i++)
        if (s->w[i].end == cursor)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Stream operations                                                        */

static int op_write(knit_stream_t *st, uint8_t *p, size_t n, knit_stream_write_cb cb, void *arg)
{
    lps_t *s = (lps_t *)st;
    size_t off = 0;
    if (s->closing || s->fin) {
        knit__free(p);
        return KNIT_ECLOSED;
    }
    while (off < n) {
        uint32_t len;
        if (n - off < 4 || (len = knit_frame_length(p + off)) > n - off - 4) {
            knit__free(p);
            return KNIT_EINVAL; /* not whole frames (note 1) */
        }
        off += 4 + (size_t)len;
    }
    if (n == 0 || s->olen + n > s->t->c.max_unacked) {
        knit__free(p);
        return n ? KNIT_ETOOBIG : KNIT_EINVAL; /* note 2: the engine closes */
    }
    if (s->olen + n > s->ocap) {
        size_t cap = (s->olen + n) * 2;
        uint8_t *q = knit__realloc(s->ob, cap);
        if (!q) {
            knit__free(p);
            return KNIT_ENOMEM;
        }
        s->ob = q;
        s->ocap = cap;
    }
    if (s->nw == s->wcap) {
        size_t cap = s->wcap ? s->wcap * 2 : 8;
        wrec_t *q = knit__realloc(s->w, cap * sizeof *q);
        if (!q) {
            knit__free(p);
            return KNIT_ENOMEM;
        }
        s->w = q;
        s->wcap = cap;
    }
    memcpy(s->ob + s->olen, p, n);
    s->olen += n;
    knit__free(p);
    s->w[s->nw].end = s->base + s->olen;
    s->w[s->nw].cb = cb;
    s->w[s->nw].arg = arg;
    s->nw++;
    if (s->get_cb)
        answer_get(s, s->last); /* news for the waiting GET (note 3) */
    return 0;
}

static int op_read(knit_stream_t *st, int on)
{
    lps_t *s = (lps_t *)st;
    if (s->closing)
        return 0;
    s->reading = on;
    if (on && s->post_cb) {
        knit_lp_answer_cb cb = s->post_cb;
        void *arg = s->post_arg;
        uint8_t *p = s->stash;
        size_t n = s->nstash;
        s->post_cb = NULL;
        s->post_arg = NULL;
        s->stash = NULL;
        s->nstash = 0;
        if (!s->ended && s->pub.cb.on_read)
            s->pub.cb.on_read(&s->pub, p, n);
        knit__free(p);
        cb(arg, 204, NULL, 0);
    }
    return 0;
}

static int op_shutdown(knit_stream_t *st)
{
    lps_t *s = (lps_t *)st;
    if (s->closing)
        return KNIT_ECLOSED;
    s->fin = 1;
    if (s->get_cb && answer_end(s, s->get_cursor) == s->get_cursor)
        answer_get(s, s->last); /* 410: nothing more will come */
    return 0;
}

static void op_close(knit_stream_t *st)
{
    lps_t *s = (lps_t *)st;
    if (s->closing)
        return;
    s->closing = 1;
    if (s->get_cb) {
        knit_lp_answer_cb cb = s->get_cb;
        s->get_cb = NULL;
        say(cb, s->get_arg, 410, "session ended\n");
    }
    if (s->post_cb) {
        knit_lp_answer_cb cb = s->post_cb;
        s->post_cb = NULL;
        say(cb, s->post_arg, 410, "session ended\n");
    }
}

static int op_peer(knit_stream_t *st, char *buf, size_t n)
{
    lps_t *s = (lps_t *)st;
    snprintf(buf, n, "%s", s->peer);
    return 0;
}

static const knit_stream_ops_t LP_OPS = {op_write, op_read, op_shutdown, op_close, op_peer};

/* Note 5: completes the kept writes with KNIT_ECLOSED, reports on_close,
** frees the session. */
static void destroy(lps_t *s)
{
    knit_lp_t *t = s->t;
    while (s->nw) {
        wrec_t w = s->w[0];
        memmove(s->w, s->w + 1, (s->nw - 1) * sizeof *s->w);
        s->nw--;
        if (w.cb)
            w.cb(&s->pub, w.arg, KNIT_ECLOSED);
    }
    if (s->pub.cb.on_close)
        s->pub.cb.on_close(&s->pub);
    if (s->prev)
        s->prev->next = s->next;
    else
        t->ss = s->next;
    if (s->next)
        s->next->prev = s->prev;
    t->nss--;
    knit__free(s->ob);
    knit__free(s->w);
    knit__free(s->stash);
    knit__free(s);
}

/* ---------------------------------------------------------------------- */
/* API                                                                      */

int knit__lp_new(const knit_lp_conf_t *conf, knit_lp_t **out) /* see lp.h */
{
    knit_lp_t *t;
    *out = NULL;
    if (!conf->random)
        return KNIT_EINVAL;
    if (!(t = knit__calloc(1, sizeof *t)))
        return KNIT_ENOMEM;
    t->c = *conf;
    if (!t->c.wait_ms)
        t->c.wait_ms = KNIT_LP_WAIT_MS;
    if (!t->c.idle_ms)
        t->c.idle_ms = KNIT_LP_IDLE_MS;
    if (!t->c.max_sessions)
        t->c.max_sessions = 1024;
    *out = t;
    return 0;
}

void knit__lp_free(knit_lp_t *t) /* see lp.h */
{
    if (!t)
        return;
    while (t->ss) {
        /* Only sessions whose user never took them are left: no one to
        ** tell. */
        t->ss->closing = 1;
        t->ss->nw = 0;
        t->ss->pub.cb.on_close = NULL;
        destroy(t->ss);
    }
    knit__free(t);
}

int knit__lp_open(knit_lp_t *t, const char *peer, uint64_t now, char sid[KNIT_LP_SID_LEN + 1],
                  knit_stream_t **out) /* see lp.h */
{
    static const char hexd[] = "0123456789abcdef";
    uint8_t raw[KNIT_LP_SID_LEN / 2];
    lps_t *s;
    *out = NULL;
    if (t->nss >= t->c.max_sessions)
        return KNIT_EBUSY;
    if (t->c.random(t->c.data, raw, sizeof raw) != 0)
        return KNIT_EIO;
    if (!(s = knit__calloc(1, sizeof *s)))
        return KNIT_ENOMEM;
    for (size_t i = 0; i < sizeof raw; i++) {
        s->sid[2 * i] = hexd[raw[i] >> 4];
        s->sid[2 * i + 1] = hexd[raw[i] & 15];
    }
    s->sid[KNIT_LP_SID_LEN] = '\0';
    snprintf(s->peer, sizeof s->peer, "%s", peer ? peer : "");
    s->t = t;
    s->last = now;
    s->pub.ops = &LP_OPS;
    s->next = t->ss;
    if (t->ss)
        t->ss->prev = s;
    t->ss = s;
    t->nss++;
    memcpy(sid, s->sid, KNIT_LP_SID_LEN + 1);
    *out = &s->pub;
    return 0;
}

void knit__lp_post(knit_lp_t *t, const char *sid, size_t nsid, const uint8_t *p, size_t n,
                   uint64_t now, knit_lp_answer_cb cb, void *arg) /* see lp.h */
{
    lps_t *s = find(t, sid, nsid);
    size_t off = 0;
    if (!s) {
        say(cb, arg, 404, "no such session\n");
        return;
    }
    s->last = now;
    if (n == 0) {
        say(cb, arg, 400, "no frames in the body\n");
        return;
    }
    while (off < n) {
        uint32_t len;
        if (n - off < 4 || (len = knit_frame_length(p + off)) > n - off - 4) {
            say(cb, arg, 400, "the body is not whole frames\n");
            return;
        }
        if (len > t->c.max_frame) {
            say(cb, arg, 413, "frame too large\n");
            return;
        }
        off += 4 + (size_t)len;
    }
    if (s->ended || s->fin) {
        /* The relay no longer reads (lingering): accepted and dropped, as
        ** a TCP connection discards input after its ERROR. */
        cb(arg, 204, NULL, 0);
        return;
    }
    if (s->reading && !s->post_cb) {
        if (s->pub.cb.on_read)
            s->pub.cb.on_read(&s->pub, p, n);
        cb(arg, 204, NULL, 0);
        return;
    }
    if (s->post_cb) {
        say(cb, arg, 503, "another POST is waiting for this session\n");
        return;
    }
    if (!(s->stash = knit__memdup(p, n))) {
        say(cb, arg, 503, "out of memory\n");
        return;
    }
    s->nstash = n;
    s->post_cb = cb;
    s->post_arg = arg;
}

void knit__lp_get(knit_lp_t *t, const char *sid, size_t nsid, uint64_t cursor, uint64_t now,
                  knit_lp_answer_cb cb, void *arg) /* see lp.h */
{
    lps_t *s = find(t, sid, nsid);
    if (!s) {
        say(cb, arg, 404, "no such session\n");
        return;
    }
    s->last = now;
    if (s->get_cb)
        answer_get(s, now); /* note 3: the newer GET wins */
    if (cursor < s->base || cursor > s->base + s->olen || !valid_cursor(s, cursor)) {
        say(cb, arg, 400, "cursor is not the end of a frame still kept\n");
        return;
    }
    acknowledge(s, cursor);
    if (s->closing) {
        say(cb, arg, 410, "session ended\n"); /* a completion closed it */
        return;
    }
    s->get_cb = cb;
    s->get_arg = arg;
    s->get_cursor = cursor;
    s->get_deadline = now + t->c.wait_ms;
    if (answer_end(s, cursor) > cursor || s->fin)
        answer_get(s, now);
}

void knit__lp_delete(knit_lp_t *t, const char *sid, size_t nsid, knit_lp_answer_cb cb,
                     void *arg) /* see lp.h */
{
    lps_t *s = find(t, sid, nsid);
    if (!s) {
        say(cb, arg, 404, "no such session\n");
        return;
    }
    end(s, KNIT_ECLOSED, NULL);
    /* The user closes it when it sees the end (relay.c does); until then
    ** the id is already gone. */
    if (!s->closing)
        op_close(&s->pub);
    cb(arg, 204, NULL, 0);
}

void knit__lp_cancel(knit_lp_t *t, void *arg) /* see lp.h */
{
    if (!t)
        return;
    for (lps_t *s = t->ss; s; s = s->next) {
        if (s->get_cb && s->get_arg == arg)
            s->get_cb = NULL;
        if (s->post_cb && s->post_arg == arg) {
            /* Dropped: the client saw no 204, so it may send them again,
            ** and "204 means delivered" holds. */
            s->post_cb = NULL;
            knit__free(s->stash);
            s->stash = NULL;
            s->nstash = 0;
        }
    }
}

void knit__lp_tick(knit_lp_t *t, uint64_t now) /* see lp.h */
{
    lps_t *s, *next;
    if (!t)
        return;
    for (s = t->ss; s; s = next) {
        next = s->next;
        if (s->closing) {
            destroy(s);
            continue;
        }
        if (s->get_cb && now >= s->get_deadline)
            answer_get(s, now);
        if (!s->get_cb && !s->post_cb && now >= s->last + t->c.idle_ms)
            end(s, KNIT_ETIMEDOUT, "long-poll session idle");
    }
}

size_t knit__lp_sessions(const knit_lp_t *t) /* see lp.h */
{
    return t ? t->nss : 0;
}
