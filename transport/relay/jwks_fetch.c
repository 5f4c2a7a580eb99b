/*
** jwks_fetch.c: the provider's JWKS fetched over HTTP(S) with libcurl on
** the relay's libuv loop (API in jwks_fetch.h).
**
** Design notes
**   1. The loop never blocks on the network.  curl's multi interface does
**      the I/O: it names the sockets it wants watched (on_socket, one
**      uv_poll_t each, kept with curl_multi_assign) and the time it next
**      needs to act (on_curl_timer, one uv_timer_t); libuv tells it back
**      with curl_multi_socket_action.  Names are resolved by curl's
**      threaded resolver, off the loop.
**   2. One fetch at a time.  A refresh while a fetch is in flight joins it
**      (its callback waits in the list); a refresh within cooldown_ms of
**      the start of the last fetch is answered KNIT_EBUSY at once, so a
**      flood of tokens with made-up kids costs at most one fetch per
**      cooldown.
**   3. Every fetch is bounded: timeout_ms for the whole transfer, connect
**      included (CURLOPT_TIMEOUT_MS), at most KNIT_JWKS_MAX_TEXT bytes of
**      body (more aborts it), http and https only, no redirects.  A
**      provider's JWKS URL is its own address; a redirect elsewhere is a
**      failure, not a place to fetch keys from.
**   4. A failed fetch (network, timeout, HTTP status other than 200, a body
**      that is not a usable JWKS) keeps the previous keys and logs why;
**      only a set that parses replaces them.
**   5. Closing answers the waiting callbacks with KNIT_ECLOSED first, then
**      removes the transfer (curl says REMOVE for its sockets, whose polls
**      are closed), cleans the multi handle up, and frees the fetcher once
**      libuv has reported every handle closed.
**
**     IDLE --refresh(): curl_multi_add_handle--> FETCHING
**       ^                                           |
**       +------ finish(): keys swapped or kept -----+
*/
#include "jwks_fetch.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "knit_errors.h"

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 }; /* proto_server.h's */

typedef struct waiter_s {
    struct waiter_s *next; /* list order */
    knit_jwks_fetch_cb cb; /* called once */
    void *arg;             /* its argument */
} waiter_t;

typedef struct sock_s {
    uv_poll_t poll;         /* watches fd for curl; poll.data = this */
    curl_socket_t fd;       /* curl's socket */
    knit_jwks_fetcher_t *f; /* owner */
} sock_t;

struct knit_jwks_fetcher_s {
    uv_loop_t *loop;                        /* the relay's loop */
    uv_timer_t timer;                       /* curl's timeout (note 1); timer.data = this */
    CURLM *multi;                           /* the multi handle */
    CURL *easy;                             /* the transfer in flight, or NULL */
    char *url;                              /* copied */
    uint64_t cooldown_ms;                   /* note 2 */
    uint64_t timeout_ms;                    /* note 3 */
    void (*log)(void *, int, const char *); /* or NULL */
    void *log_data;                         /* passed to log */
    knit_jwks_t *keys;                      /* the keys now (an empty set at first), owned */
    char *body;                     /* the body being received, KNIT_JWKS_MAX_TEXT + 1 bytes */
    size_t nbody;                   /* its length */
    int toolong;                    /* the body passed KNIT_JWKS_MAX_TEXT */
    char curl_err[CURL_ERROR_SIZE]; /* curl's message for the transfer */
    char last_error[512];           /* why the last fetch failed, "" if it did not */
    uint64_t started_ms;            /* monotonic ms of the last fetch's start */
    int started;                    /* a fetch was ever started */
    uint64_t count;                 /* fetches started */
    waiter_t *head;                 /* callbacks waiting for the fetch in flight */
    waiter_t *tail;                 /* newest */
    int closing;                    /* knit__jwks_fetcher_close was called */
    int open;                       /* libuv handles not yet reported closed */
    void (*close_cb)(void *);       /* called when open reaches 0 after close */
    void *close_data;               /* its argument */
};

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void flog(knit_jwks_fetcher_t *f, int level, const char *fmt, ...)
{
    char line[768];
    va_list ap;
    if (!f->log)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    f->log(f->log_data, level, line);
}

/* ---------------------------------------------------------------------- */
/* Handles                                                                  */

static void maybe_freed(knit_jwks_fetcher_t *f)
{
    void (*cb)(void *);
    void *data;
    if (!f->closing || f->open > 0)
        return;
    cb = f->close_cb;
    data = f->close_data;
    knit_jwks_free(f->keys);
    knit__free(f->body);
    knit__free(f->url);
    knit__free(f);
    curl_global_cleanup();
    if (cb)
        cb(data);
}

static void on_handle_closed(uv_handle_t *h)
{
    knit_jwks_fetcher_t *f;
    if (h->type == UV_POLL) {
        sock_t *s = h->data;
        f = s->f;
        knit__free(s);
    } else {
        f = h->data;
    }
    f->open--;
    maybe_freed(f);
}

static void check_done(knit_jwks_fetcher_t *f);

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_t *s = h->data;
    knit_jwks_fetcher_t *f = s->f;
    int flags = 0, running = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(f->multi, s->fd, flags, &running);
    check_done(f);
}

/* CURLMOPT_SOCKETFUNCTION (note 1). */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    knit_jwks_fetcher_t *f = userp;
    sock_t *s = socketp;
    int ev = 0;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(f->multi, fd, NULL);
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_handle_closed);
        }
        return 0;
    }
    if (!s) {
        if (!(s = knit__calloc(1, sizeof *s)))
            return -1;
        s->fd = fd;
        s->f = f;
        if (uv_poll_init_socket(f->loop, &s->poll, fd) != 0) {
            knit__free(s);
            return -1;
        }
        s->poll.data = s;
        f->open++;
        curl_multi_assign(f->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    knit_jwks_fetcher_t *f = t->data;
    int running = 0;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(f);
}

/* CURLMOPT_TIMERFUNCTION: -1 stops the timer, 0 means "as soon as you
** can", which must not call curl back from inside this callback. */
static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    knit_jwks_fetcher_t *f = userp;
    (void)m;
    if (f->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* CURLOPT_WRITEFUNCTION: keeps at most KNIT_JWKS_MAX_TEXT bytes (note 3). */
static size_t on_body(char *p, size_t size, size_t nmemb, void *userp)
{
    knit_jwks_fetcher_t *f = userp;
    size_t n = size * nmemb;
    if (n > KNIT_JWKS_MAX_TEXT - f->nbody) {
        f->toolong = 1;
        return 0; /* aborts the transfer */
    }
    memcpy(f->body + f->nbody, p, n);
    f->nbody += n;
    return n;
}

/* ---------------------------------------------------------------------- */
/* Fetches                                                                  */

/* Answers every waiting callback (the list is taken first: a callback may
** ask for another refresh). */
static void answer(knit_jwks_fetcher_t *f, int status, const char *why)
{
    waiter_t *w = f->head;
    f->head = f->tail = NULL;
    while (w) {
        waiter_t *next = w->next;
        w->cb(w->arg, status, why);
        knit__free(w);
        w = next;
    }
}

/* The transfer completed with res (note 4). */
static void finish(knit_jwks_fetcher_t *f, CURLcode res)
{
    long http = 0;
    knit_jwks_t *fresh = NULL;
    char why[400] = "";
    int status = 0;

    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &http);
    curl_multi_remove_handle(f->multi, f->easy);
    curl_easy_cleanup(f->easy);
    f->easy = NULL;
    if (f->toolong) {
        status = KNIT_EINVAL;
        snprintf(why, sizeof why, "the answer is longer than %d bytes", KNIT_JWKS_MAX_TEXT);
    } else if (res == CURLE_OPERATION_TIMEDOUT) {
        status = KNIT_ETIMEDOUT;
        snprintf(why, sizeof why, "no answer within %llu ms", (unsigned long long)f->timeout_ms);
    } else if (res != CURLE_OK) {
        status = KNIT_EIO;
        snprintf(why, sizeof why, "%s", f->curl_err[0] ? f->curl_err : curl_easy_strerror(res));
    } else if (http != 200) {
        status = KNIT_EIO;
        snprintf(why, sizeof why, "HTTP status %ld", http);
    } else if ((status = knit_jwks_parse(f->body, f->nbody, &fresh, why, sizeof why)) != 0) {
        if (status != KNIT_ENOMEM)
            status = KNIT_EINVAL;
    }
    if (status == 0) {
        knit_jwks_free(f->keys);
        f->keys = fresh;
        f->last_error[0] = '\0';
        flog(f, LOG_INFO, "provider keys: fetched %zu from %s", fresh->n, f->url);
    } else {
        snprintf(f->last_error, sizeof f->last_error, "fetching %.200s failed: %s", f->url, why);
        flog(f, LOG_WARN, "provider keys: %s; keeping the %zu keys held", f->last_error,
             f->keys->n);
    }
    answer(f, status, f->last_error);
}

static void check_done(knit_jwks_fetcher_t *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left)) != NULL)
        if (m->msg == CURLMSG_DONE && m->easy_handle == f->easy)
            finish(f, m->data.result);
}

/* Starts a transfer (note 3). */
static int start(knit_jwks_fetcher_t *f)
{
    CURL *h = curl_easy_init();
    if (!h)
        return KNIT_ENOMEM;
    f->nbody = 0;
    f->toolong = 0;
    f->curl_err[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, f->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)f->timeout_ms);
    curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sync-relay (knit)");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, f->curl_err);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE, (long)KNIT_JWKS_MAX_TEXT);
    if (curl_multi_add_handle(f->multi, h) != CURLM_OK) {
        curl_easy_cleanup(h);
        return KNIT_ENOMEM;
    }
    f->easy = h;
    f->started = 1;
    f->started_ms = mono_ms();
    f->count++;
    flog(f, LOG_DEBUG, "provider keys: fetching %s", f->url);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* API                                                                      */

int knit__jwks_fetcher_new(uv_loop_t *loop, const knit_jwks_fetch_opts_t *o,
                           knit_jwks_fetcher_t **out) /* see jwks_fetch.h */
{
    knit_jwks_fetcher_t *f;
    *out = NULL;
    if (!loop || !o || !o->url ||
        (strncmp(o->url, "http://", 7) != 0 && strncmp(o->url, "https://", 8) != 0))
        return KNIT_EINVAL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return KNIT_ENOMEM;
    if (!(f = knit__calloc(1, sizeof *f)) || !(f->url = knit__strdup(o->url)) ||
        !(f->body = knit__malloc(KNIT_JWKS_MAX_TEXT + 1)) ||
        !(f->keys = knit__calloc(1, sizeof *f->keys)) || !(f->multi = curl_multi_init())) {
        if (f) {
            knit__free(f->url);
            knit__free(f->body);
            knit__free(f->keys);
        }
        knit__free(f);
        curl_global_cleanup();
        return KNIT_ENOMEM;
    }
    f->loop = loop;
    f->cooldown_ms = o->cooldown_ms;
    f->timeout_ms = o->timeout_ms ? o->timeout_ms : KNIT_JWKS_FETCH_TIMEOUT_MS;
    f->log = o->log;
    f->log_data = o->data;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    f->open = 1;
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    if (strncmp(o->url, "http://", 7) == 0)
        flog(f, LOG_WARN,
             "provider keys from %s: plain http, so anyone on the path can replace them; "
             "use https outside tests",
             o->url);
    start(f);
    *out = f;
    return 0;
}

const knit_jwks_t *knit__jwks_fetcher_keys(const knit_jwks_fetcher_t *f) /* see jwks_fetch.h */
{
    return f->keys;
}

int knit__jwks_fetcher_refresh(knit_jwks_fetcher_t *f, knit_jwks_fetch_cb cb,
                               void *arg) /* see jwks_fetch.h */
{
    waiter_t *w = NULL;
    int rc;
    if (f->closing)
        return KNIT_ECLOSED;
    if (!f->easy && f->started && mono_ms() - f->started_ms < f->cooldown_ms)
        return KNIT_EBUSY; /* note 2 */
    if (cb && !(w = knit__calloc(1, sizeof *w)))
        return KNIT_ENOMEM;
    if (!f->easy && (rc = start(f)) != 0) {
        knit__free(w);
        return rc;
    }
    if (w) {
        w->cb = cb;
        w->arg = arg;
        if (f->tail)
            f->tail->next = w;
        else
            f->head = w;
        f->tail = w;
    }
    return 0;
}

const char *knit__jwks_fetcher_last_error(const knit_jwks_fetcher_t *f) /* see jwks_fetch.h */
{
    return f->last_error;
}

uint64_t knit__jwks_fetcher_count(const knit_jwks_fetcher_t *f) /* see jwks_fetch.h */
{
    return f->count;
}

void knit__jwks_fetcher_close(knit_jwks_fetcher_t *f, void (*cb)(void *data),
                              void *data) /* see jwks_fetch.h */
{
    if (!f || f->closing)
        return;
    f->closing = 1;
    f->close_cb = cb;
    f->close_data = data;
    answer(f, KNIT_ECLOSED, "the relay is shutting down");
    if (f->easy) {
        curl_multi_remove_handle(f->multi, f->easy); /* REMOVEs its sockets (note 5) */
        curl_easy_cleanup(f->easy);
        f->easy = NULL;
    }
    curl_multi_cleanup(f->multi);
    f->multi = NULL;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, on_handle_closed);
}
