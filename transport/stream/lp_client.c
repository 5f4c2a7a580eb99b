/*
** lp_client.c: the HTTP long-polling client stream (API in lp_client.h).
** libcurl does the HTTP; this file turns the stream operations into the
** requests of docs/PROTOCOL.md section 1.3 and their answers back into
** stream callbacks, and drives curl's multi interface from the libuv loop
** (curl_multi_socket_action, told about sockets through one uv_poll_t
** each and about time through one uv_timer_t).
**
** Design notes
**   1. Bytes are handed to on_read only from a GET that completed with 200
**      and whose body is whole frames, never while the answer is still
**      arriving.  A GET cut halfway (curl reports a short body against its
**      Content-Length), timed out or answered 5xx is sent again with the
**      same cursor, and the relay answers the same bytes (a cursor
**      acknowledges only what is before it): nothing is lost, nothing is
**      handed over twice.  The cursor moves only by the length of a body
**      delivered.
**   2. Exactly one GET is in flight while the session is open and reading
**      is on; the next one starts when its answer was delivered.  With
**      reading off, a completed answer is held, and no GET is sent, until
**      reading is on again.
**   3. Output is one byte queue from the first byte not yet acknowledged
**      by a 204.  One POST at a time carries a prefix of it made of whole
**      frames, at most POST_MAX bytes (or one larger frame); a write's
**      completion runs once a 204 covered its last byte.  A POST whose
**      answer is lost may or may not have been delivered, and HELLO or
**      SUBSCRIBE must not be repeated, so such a failure ends input
**      (KNIT_EIO) and the engine starts a new session; only a 503 (the
**      relay took nothing) is retried.
**   4. Closing withdraws every request, then sends DELETE for a session
**      the relay has not ended, bounded by DELETE_MS; completions of
**      queued writes (KNIT_ECLOSED) and then on_close run once libcurl is
**      cleaned up and every libuv handle (the timers and one poll per
**      socket) reported closed.  No callback ever runs inside a libcurl
**      callback, so the user may close the stream from any of them.
**
**     OPENING --201: open_done()--> OPEN --410/404/failure: end()--> ENDED
**        |                           |                                |
**        +-- other answer: FAILED    +--- knit_stream_close(): DELETE, teardown()
**        +------ knit_stream_close() from any state --> on_close --> freed
*/
#include "lp_client.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define POST_MAX (1024u * 1024)                         /* bytes of one POST body (note 3) */
#define GET_MAX (17u * 1024 * 1024 + 64)                /* bytes of one GET answer we accept */
#define SMALL_MAX 4096                                  /* bytes of other answers we keep */
#define DELETE_MS 2000                                  /* bound of the DELETE at close */
#define POST_503_RETRIES 50                             /* 503s in a row, 100 ms apart */
#define DEF_CAFILE "/etc/ssl/certs/ca-certificates.crt" /* the system bundle */

enum { R_OPEN, R_POST, R_GET, R_DELETE };
enum { S_OPENING, S_OPEN, S_FAILED };

typedef struct lpc_s lpc_t;

typedef struct req_s {
    lpc_t *l;                  /* the stream */
    CURL *easy;                /* curl's handle; CURLOPT_PRIVATE = this */
    int kind;                  /* R_* */
    struct curl_slist *hdrs;   /* request headers */
    uint8_t *body;             /* the answer's body so far */
    size_t n;                  /* its length */
    size_t cap;                /* bytes allocated */
    size_t max;                /* longest body kept */
    int too_big;               /* the body was longer than max */
    char err[CURL_ERROR_SIZE]; /* curl's message */
    long verify;               /* https: CURLINFO_SSL_VERIFYRESULT once done (-1: none) */
} req_t;

typedef struct sock_s {
    uv_poll_t poll;      /* watches fd; poll.data = this */
    lpc_t *l;            /* the stream */
    curl_socket_t fd;    /* curl's socket */
    struct sock_s *next; /* the stream's list */
} sock_t;

typedef struct wr_s {
    knit_stream_write_cb cb; /* completion */
    void *arg;               /* its argument */
    uint64_t end;            /* output offset just past the write's last byte */
    struct wr_s *next;       /* queue order */
} wr_t;

struct lpc_s {
    knit_stream_t pub;              /* the public part; first */
    uv_loop_t *loop;                /* the loop */
    CURLM *multi;                   /* curl's multi handle (NULL after teardown) */
    uv_timer_t timer;               /* curl's timeout */
    uv_timer_t get_timer;           /* delay before a GET is sent again */
    uv_timer_t post_timer;          /* delay before a 503'd POST is sent again */
    int handles;                    /* libuv handles not yet reported closed */
    sock_t *socks;                  /* one per socket curl watches */
    char *base;                     /* "scheme://name:port/path" */
    char *ca_file;                  /* https: the CA file */
    struct curl_slist *connect_to;  /* https with server_name: where to connect */
    int tls;                        /* https */
    char peer[300];                 /* "host:port" */
    char name[256];                 /* https: the name the certificate must carry */
    knit_lp_client_conf_t conf;     /* timeouts (strings not kept) */
    int state;                      /* S_* */
    char sid[33];                   /* the session id */
    req_t *open, *get, *post, *del; /* requests in flight */
    uint64_t cursor;                /* the next GET's cursor (note 1) */
    unsigned get_fails;             /* GETs failed in a row */
    char get_err[200];              /* the last GET failure */
    int reading;                    /* reading is on (note 2) */
    uint8_t *held;                  /* an answer held while reading is off */
    size_t nheld;                   /* its length */
    uint8_t *ob;                    /* output not acknowledged (note 3) */
    size_t on, ocap;                /* its length, bytes allocated */
    uint64_t obase;                 /* output offset of ob[0] */
    size_t posting;                 /* bytes of ob in the POST in flight */
    unsigned post_503;              /* 503s in a row */
    wr_t *wq, *wq_tail;             /* writes waiting for their 204 */
    int shut;                       /* knit_stream_shutdown() was called */
    int gone;                       /* the relay ended or forgot the session: no DELETE */
    int ended;                      /* on_end was reported */
    int closing;                    /* knit_stream_close() was called */
    int dying;                      /* teardown() ran */
};

static void start_get(lpc_t *l);
static void kick_post(lpc_t *l);
static void teardown(lpc_t *l);

/* ---------------------------------------------------------------------- */
/* URLs                                                                     */

int knit_lp_url_parse(const char *url, int *tls, char *host, size_t hn, int *port, char *path,
                      size_t pn) /* see lp_client.h */
{
    const char *p, *h, *he, *slash;
    long pv;
    if (!url)
        return KNIT_EINVAL;
    if (strncmp(url, "http://", 7) == 0) {
        *tls = 0;
        p = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        *tls = 1;
        p = url + 8;
    } else {
        return KNIT_EINVAL;
    }
    slash = strchr(p, '/');
    if (!slash)
        slash = p + strlen(p);
    if (*p == '[') {
        h = p + 1;
        if (!(he = memchr(h, ']', (size_t)(slash - h))))
            return KNIT_EINVAL;
        p = he + 1;
    } else {
        h = p;
        he = memchr(p, ':', (size_t)(slash - p));
        if (!he)
            he = slash;
        p = he;
    }
    if (he == h || (size_t)(he - h) >= hn)
        return KNIT_EINVAL;
    for (const char *c = h; c < he; c++)
        if (*c <= ' ' || *c > '~' || *c == '@' || *c == '?' || *c == '#' || *c == '/' ||
            (*c == ':' && url[*tls ? 8 : 7] != '['))
            return KNIT_EINVAL;
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = '\0';
    if (p < slash) {
        char *end;
        if (*p != ':' || p + 1 == slash)
            return KNIT_EINVAL;
        pv = strtol(p + 1, &end, 10);
        if (end != slash || pv < 1 || pv > 65535 || p[1] < '0' || p[1] > '9')
            return KNIT_EINVAL;
        *port = (int)pv;
    } else {
        *port = *tls ? 443 : 80;
    }
    if (!*slash)
        slash = KNIT_LP_DEFAULT_PATH;
    if (strlen(slash) >= pn || strlen(slash) > 1024)
        return KNIT_EINVAL;
    for (const char *c = slash; *c; c++)
        if (*c <= ' ' || *c > '~' || *c == '?' || *c == '#')
            return KNIT_EINVAL;
    snprintf(path, pn, "%s", slash);
    /* No trailing slash: the session URLs add "/<sid>". */
    {
        size_t k = strlen(path);
        while (k > 1 && path[k - 1] == '/')
            path[--k] = '\0';
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* libcurl on libuv                                                         */

static void maybe_free(lpc_t *l)
{
    wr_t *w;
    if (!l->dying || l->handles > 0)
        return;
    /* Note 4: completions first, then on_close. */
    while ((w = l->wq) != NULL) {
        l->wq = w->next;
        if (w->cb)
            w->cb(&l->pub, w->arg, KNIT_ECLOSED);
        knit__free(w);
    }
    if (l->pub.cb.on_close)
        l->pub.cb.on_close(&l->pub);
    knit__free(l->held);
    knit__free(l->ob);
    knit__free(l->base);
    knit__free(l->ca_file);
    curl_slist_free_all(l->connect_to);
    knit__free(l);
}

static void on_handle_closed(uv_handle_t *h)
{
    lpc_t *l = h->data;
    l->handles--;
    maybe_free(l);
}

static void on_sock_closed(uv_handle_t *h)
{
    sock_t *k = h->data;
    lpc_t *l = k->l;
    knit__free(k);
    l->handles--;
    maybe_free(l);
}

static void sock_drop(lpc_t *l, sock_t *k)
{
    sock_t **pp = &l->socks;
    while (*pp && *pp != k)
        pp = &(*pp)->next;
    if (*pp)
        *pp = k->next;
    uv_poll_stop(&k->poll);
    uv_close((uv_handle_t *)&k->poll, on_sock_closed);
}

static void process(lpc_t *l);

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_t *k = h->data;
    lpc_t *l = k->l;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    if (l->dying)
        return;
    curl_multi_socket_action(l->multi, k->fd, flags, &running);
    process(l);
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    lpc_t *l = userp;
    sock_t *k = socketp;
    int events = 0;
    (void)e;
    if (what == CURL_POLL_REMOVE || l->dying) {
        /* During teardown curl is cleaning up: only let go. */
        if (k) {
            if (!l->dying)
                curl_multi_assign(l->multi, s, NULL);
            sock_drop(l, k);
        }
        return 0;
    }
    if (!k) {
        if (!(k = knit__calloc(1, sizeof *k)))
            return -1;
        if (uv_poll_init_socket(l->loop, &k->poll, s) != 0) {
            knit__free(k);
            return -1;
        }
        k->poll.data = k;
        k->l = l;
        k->fd = s;
        k->next = l->socks;
        l->socks = k;
        l->handles++;
        curl_multi_assign(l->multi, s, k);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&k->poll, events, on_poll);
    return 0;
}

static void on_curl_timer(uv_timer_t *t)
{
    lpc_t *l = t->data;
    int running;
    if (l->dying)
        return;
    curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    process(l);
}

static int on_timer_change(CURLM *m, long timeout_ms, void *userp)
{
    lpc_t *l = userp;
    (void)m;
    if (l->dying)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&l->timer);
    else
        uv_timer_start(&l->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Requests                                                                 */

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    req_t *r = arg;
    size_t n = size * nmemb;
    if (r->n + n > r->max) {
        r->too_big = 1;
        return 0; /* curl ends the transfer (CURLE_WRITE_ERROR) */
    }
    if (r->n + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        uint8_t *b;
        while (cap < r->n + n)
            cap *= 2;
        if (cap > r->max)
            cap = r->max;
        if (!(b = knit__realloc(r->body, cap)))
            return 0;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->n, p, n);
    r->n += n;
    return n;
}

static void req_free(req_t *r)
{
    if (!r)
        return;
    if (r->easy) {
        if (r->l->multi)
            curl_multi_remove_handle(r->l->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->hdrs);
    knit__free(r->body);
    knit__free(r);
}

/* Starts one request to url; post (n bytes, copied) is the body of a POST,
** NULL for other methods.  NULL when it could not be started. */
static req_t *req_start(lpc_t *l, int kind, const char *url, uint64_t timeout_ms,
                        const uint8_t *post, size_t n)
{
    req_t *r = knit__calloc(1, sizeof *r);
    CURL *e;
    if (!r)
        return NULL;
    r->l = l;
    r->kind = kind;
    r->max = kind == R_GET ? GET_MAX : SMALL_MAX;
    if (!(e = r->easy = curl_easy_init()))
        goto fail;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->err);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)l->conf.connect_ms);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "knit-lp/1");
    if (l->tls) {
        curl_easy_setopt(e, CURLOPT_CAINFO, l->ca_file);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        if (l->connect_to)
            curl_easy_setopt(e, CURLOPT_CONNECT_TO, l->connect_to);
    }
    /* No "Expect: 100-continue": the relay answers the whole request. */
    if (!(r->hdrs = curl_slist_append(NULL, "Expect:")))
        goto fail;
    if (kind == R_POST || kind == R_OPEN) {
        struct curl_slist *h = curl_slist_append(r->hdrs, "Content-Type: application/octet-stream");
        if (!h)
            goto fail;
        r->hdrs = h;
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, n ? (const char *)post : "");
    } else if (kind == R_DELETE) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    if (curl_multi_add_handle(l->multi, e) != CURLM_OK)
        goto fail;
    return r;
fail:
    if (r->easy)
        curl_easy_cleanup(r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->hdrs);
    knit__free(r);
    return NULL;
}

/* The session's URL, with suffix (e.g. "?cursor=5") into buf. */
static const char *sess_url(lpc_t *l, char *buf, size_t n, const char *suffix)
{
    snprintf(buf, n, "%s/%s%s", l->base, l->sid, suffix ? suffix : "");
    return buf;
}

/* What a curl failure or an HTTP status means, as text into msg. */
static void describe(const req_t *r, CURLcode res, long status, char *msg, size_t n)
{
    if (res != CURLE_OK)
        snprintf(msg, n, "%.200s", r->err[0] ? r->err : curl_easy_strerror(res));
    else
        snprintf(msg, n, "relay answered %ld", status);
}

/* The code a failed TLS setup gets: KNIT_ETLS for curl's certificate and
** handshake failures, else 0. */
static int tls_code(CURLcode res)
{
    switch (res) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return KNIT_ETLS;
    default:
        return 0;
    }
}

/* A refused certificate in the words the TLS stream uses (tls.c), so
** knits:// and https:// say the same thing: which check failed, then
** curl's own text.  The verify result is OpenSSL's X509_V_ERR_* number
** (only that backend's codes are known here; another backend gets curl's
** text alone).  curl checks the name itself, before it asks OpenSSL for
** the chain's result: a name refused leaves the result at the value curl
** starts from (1, !X509_V_OK; 0 if OpenSSL had already answered "ok"). */
static void tls_words(const lpc_t *l, const req_t *r, CURLcode res, char *msg, size_t n)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    const char *curl_text = r->err[0] ? r->err : curl_easy_strerror(res);
    const char *what = NULL;
    char name_words[300];
    if (res == CURLE_PEER_FAILED_VERIFICATION && r->verify >= 0 && v && v->ssl_version &&
        strncmp(v->ssl_version, "OpenSSL", 7) == 0) {
        snprintf(name_words, sizeof name_words, "certificate is not for %s", l->name);
        switch (r->verify) {
        case 0:  /* curl's host name check, the chain verified */
        case 1:  /* curl's host name check, made first (see above) */
        case 62: /* X509_V_ERR_HOSTNAME_MISMATCH */
        case 64: /* X509_V_ERR_IP_ADDRESS_MISMATCH */
            what = name_words;
            break;
        case 9:  /* X509_V_ERR_CERT_NOT_YET_VALID */
        case 10: /* X509_V_ERR_CERT_HAS_EXPIRED */
            what = "certificate expired or not yet valid";
            break;
        case 2:  /* X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT */
        case 18: /* X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT */
        case 19: /* X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN */
        case 20: /* X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY */
        case 21: /* X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE */
        case 27: /* X509_V_ERR_CERT_UNTRUSTED */
            what = "certificate not trusted (no chain to a trusted CA)";
            break;
        default:
            break;
        }
    }
    if (what)
        snprintf(msg, n, "TLS: %.100s; curl: %.150s", what, curl_text);
    else
        snprintf(msg, n, "TLS: %.200s", curl_text);
}

/* 1 if p[0..n) is whole frames (4-byte big-endian length, then that many
** bytes, length at least 1). */
static int whole_frames(const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        uint32_t len;
        if (n - off < 4)
            return 0;
        len = (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 | (uint32_t)p[off + 2] << 8 |
              p[off + 3];
        if (len == 0 || len > n - off - 4)
            return 0;
        off += 4 + (size_t)len;
    }
    return 1;
}

/* ---------------------------------------------------------------------- */
/* The session                                                              */

static void end(lpc_t *l, int code, const char *msg)
{
    if (l->ended || l->closing)
        return;
    l->ended = 1;
    uv_timer_stop(&l->get_timer);
    uv_timer_stop(&l->post_timer);
    if (l->pub.cb.on_end)
        l->pub.cb.on_end(&l->pub, code, msg);
}

static void fail_open(lpc_t *l, int code, const char *msg)
{
    l->state = S_FAILED;
    if (l->pub.cb.on_open)
        l->pub.cb.on_open(&l->pub, code, msg);
}

static int is_hex32(const uint8_t *p, size_t n)
{
    if (n != 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

static void open_done(lpc_t *l, req_t *r, CURLcode res, long status)
{
    char msg[300], what[240];
    size_t n = r->n;
    describe(r, res, status, what, sizeof what);
    /* A body of the id, perhaps with a line end. */
    while (n && (r->body[n - 1] == '\n' || r->body[n - 1] == '\r'))
        n--;
    if (res == CURLE_OK && status == 201 && is_hex32(r->body, n)) {
        memcpy(l->sid, r->body, 32);
        l->sid[32] = '\0';
        l->state = S_OPEN;
        if (l->pub.cb.on_open)
            l->pub.cb.on_open(&l->pub, 0, NULL);
        if (l->closing || l->ended)
            return;
        start_get(l);
        kick_post(l);
        return;
    }
    if (res == CURLE_WEIRD_SERVER_REPLY || res == CURLE_UNSUPPORTED_PROTOCOL) {
        snprintf(msg, sizeof msg,
                 "no HTTP answer at %.120s: is this port the relay's --http-listen (with TLS: "
                 "https://)?",
                 l->base);
        fail_open(l, KNIT_EPROTO, msg);
    } else if (res != CURLE_OK) {
        int tc = tls_code(res);
        if (tc)
            tls_words(l, r, res, msg, sizeof msg);
        else
            snprintf(msg, sizeof msg, "%s", what);
        fail_open(l, tc ? tc : KNIT_EIO, msg);
    } else if (status == 201) {
        fail_open(l, KNIT_EPROTO, "the relay's answer to POST /v1/lp is not a session id");
    } else if (status >= 500 || status == 408 || status == 429) {
        snprintf(msg, sizeof msg, "%s to the long-poll open%s", what,
                 status == 503 ? " (busy: --max-conns sessions open)" : "");
        fail_open(l, KNIT_EIO, msg);
    } else {
        snprintf(msg, sizeof msg,
                 "%.100s to POST %.120s: is --http-listen that port (its long-polling is "
                 "at " KNIT_LP_DEFAULT_PATH ")?",
                 what, l->base);
        fail_open(l, KNIT_EPROTO, msg);
    }
}

static void deliver(lpc_t *l, const uint8_t *p, size_t n)
{
    l->cursor += n;
    if (n && l->pub.cb.on_read)
        l->pub.cb.on_read(&l->pub, p, n);
}

static void on_get_timer(uv_timer_t *t)
{
    start_get(t->data);
}

static void get_done(lpc_t *l, req_t *r, CURLcode res, long status)
{
    char msg[300], what[240];
    if (res == CURLE_OK && status == 200) {
        if (!whole_frames(r->body, r->n)) {
            end(l, KNIT_EPROTO, "a long-poll answer that is not whole frames");
            return;
        }
        l->get_fails = 0;
        if (!l->reading) {
            /* Note 2: held, and no GET, until reading is on again. */
            l->held = r->body;
            l->nheld = r->n;
            r->body = NULL;
            return;
        }
        deliver(l, r->body, r->n);
        if (!l->closing && !l->ended)
            start_get(l);
        return;
    }
    describe(r, res, status, what, sizeof what);
    if (res == CURLE_OK && status == 410) {
        l->gone = 1;
        end(l, KNIT_ECLOSED, NULL); /* the relay ended the session, all read */
        return;
    }
    if (res == CURLE_OK && status == 404) {
        l->gone = 1;
        end(l, KNIT_ECLOSED, "the relay has closed the long-poll session (404)");
        return;
    }
    if (r->too_big || (res == CURLE_OK && status == 400)) {
        snprintf(msg, sizeof msg, "long-poll GET with cursor %llu: %s",
                 (unsigned long long)l->cursor, r->too_big ? "answer too long" : what);
        end(l, KNIT_EPROTO, msg);
        return;
    }
    /* Note 1: the same cursor again, after a short delay. */
    snprintf(l->get_err, sizeof l->get_err, "%.190s", what);
    if (++l->get_fails > l->conf.get_retries) {
        snprintf(msg, sizeof msg, "long-poll GET failed %u times in a row: %s", l->get_fails,
                 l->get_err);
        end(l, KNIT_EIO, msg);
        return;
    }
    uv_timer_start(&l->get_timer, on_get_timer,
                   l->get_fails >= 5 ? 1000 : (uint64_t)50 << l->get_fails, 0);
}

static void on_post_timer(uv_timer_t *t)
{
    kick_post(t->data);
}

static void post_done(lpc_t *l, req_t *r, CURLcode res, long status)
{
    char msg[300], what[240];
    size_t done;
    describe(r, res, status, what, sizeof what);
    if (res == CURLE_OK && status == 204) {
        done = l->posting;
        memmove(l->ob, l->ob + done, l->on - done);
        l->on -= done;
        l->obase += done;
        l->posting = 0;
        l->post_503 = 0;
        while (l->wq && l->wq->end <= l->obase) {
            wr_t *w = l->wq;
            l->wq = w->next;
            if (!l->wq)
                l->wq_tail = NULL;
            if (w->cb)
                w->cb(&l->pub, w->arg, 0);
            knit__free(w);
            if (l->closing)
                return;
        }
        kick_post(l);
        return;
    }
    l->posting = 0;
    if (res == CURLE_OK && status == 503 && ++l->post_503 <= POST_503_RETRIES) {
        uv_timer_start(&l->post_timer, on_post_timer, 100, 0); /* nothing was taken */
        return;
    }
    if (res == CURLE_OK && status == 404) {
        l->gone = 1;
        end(l, KNIT_ECLOSED, "the relay has closed the long-poll session (404)");
        return;
    }
    if (res == CURLE_OK && (status == 400 || status == 413)) {
        snprintf(msg, sizeof msg, "long-poll POST refused: %s", what);
        end(l, KNIT_EPROTO, msg);
        return;
    }
    /* Note 3: delivered or not, nobody knows: end this session. */
    snprintf(msg, sizeof msg, "long-poll POST failed (%s); ending the session", what);
    end(l, KNIT_EIO, msg);
}

/* Dispatches what curl finished (never inside a curl callback, note 4). */
static void process(lpc_t *l)
{
    CURLMsg *m;
    int left;
    while (!l->dying && (m = curl_multi_info_read(l->multi, &left)) != NULL) {
        req_t *r = NULL;
        CURLcode res;
        long status = 0;
        if (m->msg != CURLMSG_DONE)
            continue;
        res = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        if (!l->tls || curl_easy_getinfo(m->easy_handle, CURLINFO_SSL_VERIFYRESULT, &r->verify))
            r->verify = -1;
        curl_multi_remove_handle(l->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
        switch (r->kind) {
        case R_OPEN:
            l->open = NULL;
            if (!l->closing)
                open_done(l, r, res, status);
            break;
        case R_GET:
            l->get = NULL;
            if (!l->closing && !l->ended)
                get_done(l, r, res, status);
            break;
        case R_POST:
            l->post = NULL;
            if (!l->closing && !l->ended)
                post_done(l, r, res, status);
            break;
        case R_DELETE:
            l->del = NULL;
            if (l->closing)
                teardown(l);
            break;
        }
        req_free(r);
    }
}

static void start_get(lpc_t *l)
{
    char url[1400], suffix[40];
    if (l->get || l->closing || l->ended || l->state != S_OPEN || !l->reading || l->held)
        return;
    snprintf(suffix, sizeof suffix, "?cursor=%llu", (unsigned long long)l->cursor);
    if (!(l->get =
              req_start(l, R_GET, sess_url(l, url, sizeof url, suffix), l->conf.get_ms, NULL, 0)))
        end(l, KNIT_ENOMEM, "cannot start a long-poll GET");
}

/* Sends the next POST if none is in flight (note 3); a shut-down stream
** with nothing left to send ends the session with DELETE. */
static void kick_post(lpc_t *l)
{
    char url[1400];
    size_t take = 0;
    if (l->post || l->closing || l->ended || l->state != S_OPEN ||
        uv_is_active((uv_handle_t *)&l->post_timer))
        return;
    if (!l->on) {
        if (l->shut && !l->del && !l->gone) {
            l->gone = 1; /* DELETE sent: the session ends */
            l->del = req_start(l, R_DELETE, sess_url(l, url, sizeof url, NULL), l->conf.request_ms,
                               NULL, 0);
        }
        return;
    }
    while (take < l->on) {
        const uint8_t *f = l->ob + take;
        size_t len = 4 + ((size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3]);
        if (take && take + len > POST_MAX)
            break;
        take += len;
    }
    l->posting = take;
    if (!(l->post = req_start(l, R_POST, sess_url(l, url, sizeof url, NULL), l->conf.request_ms,
                              l->ob, take))) {
        l->posting = 0;
        end(l, KNIT_ENOMEM, "cannot start a long-poll POST");
    }
}

/* ---------------------------------------------------------------------- */
/* Stream operations                                                        */

static int op_write(knit_stream_t *st, uint8_t *p, size_t n, knit_stream_write_cb cb, void *arg)
{
    lpc_t *l = (lpc_t *)st;
    wr_t *w = NULL;
    if (l->closing || l->ended || l->shut || l->state != S_OPEN) {
        knit__free(p);
        return KNIT_ECLOSED;
    }
    if (!n || !whole_frames(p, n)) {
        knit__free(p);
        return KNIT_EINVAL; /* writes hold whole frames (lp_client.h) */
    }
    if (l->on + n > l->ocap) {
        size_t cap = l->ocap ? l->ocap : 4096;
        uint8_t *b;
        while (cap < l->on + n)
            cap *= 2;
        if (!(b = knit__realloc(l->ob, cap))) {
            knit__free(p);
            return KNIT_ENOMEM;
        }
        l->ob = b;
        l->ocap = cap;
    }
    if (!(w = knit__calloc(1, sizeof *w))) {
        knit__free(p);
        return KNIT_ENOMEM;
    }
    memcpy(l->ob + l->on, p, n);
    l->on += n;
    knit__free(p);
    w->cb = cb;
    w->arg = arg;
    w->end = l->obase + l->on;
    if (l->wq_tail)
        l->wq_tail->next = w;
    else
        l->wq = w;
    l->wq_tail = w;
    kick_post(l);
    return 0;
}

static int op_read(knit_stream_t *st, int on)
{
    lpc_t *l = (lpc_t *)st;
    if (l->closing)
        return 0;
    l->reading = on;
    if (!on || l->ended)
        return 0;
    if (l->held) {
        uint8_t *p = l->held;
        size_t n = l->nheld;
        l->held = NULL;
        l->nheld = 0;
        deliver(l, p, n);
        knit__free(p);
    }
    start_get(l);
    return 0;
}

static int op_shutdown(knit_stream_t *st)
{
    lpc_t *l = (lpc_t *)st;
    if (l->closing)
        return KNIT_ECLOSED;
    l->shut = 1;
    kick_post(l);
    return 0;
}

/* Note 4: everything of curl goes, then the libuv handles. */
static void teardown(lpc_t *l)
{
    sock_t *k;
    if (l->dying)
        return;
    req_free(l->open);
    req_free(l->get);
    req_free(l->post);
    req_free(l->del);
    l->open = l->get = l->post = l->del = NULL;
    l->dying = 1;
    curl_multi_cleanup(l->multi);
    l->multi = NULL;
    while ((k = l->socks) != NULL)
        sock_drop(l, k);
    uv_close((uv_handle_t *)&l->timer, on_handle_closed);
    uv_close((uv_handle_t *)&l->get_timer, on_handle_closed);
    uv_close((uv_handle_t *)&l->post_timer, on_handle_closed);
}

static void op_close(knit_stream_t *st)
{
    lpc_t *l = (lpc_t *)st;
    char url[1400];
    if (l->closing)
        return;
    l->closing = 1;
    uv_timer_stop(&l->get_timer);
    uv_timer_stop(&l->post_timer);
    req_free(l->open);
    req_free(l->get);
    req_free(l->post);
    l->open = l->get = l->post = NULL;
    if (l->del)
        return; /* the DELETE of a shutdown finishes the close */
    if (l->state == S_OPEN && !l->gone &&
        (l->del = req_start(l, R_DELETE, sess_url(l, url, sizeof url, NULL), DELETE_MS, NULL, 0)))
        return; /* teardown when it is answered */
    /* Not from inside this call (stream.h): the handles close first. */
    teardown(l);
}

static int op_peer(knit_stream_t *st, char *buf, size_t n)
{
    lpc_t *l = (lpc_t *)st;
    snprintf(buf, n, "%s", l->peer);
    return 0;
}

static const knit_stream_ops_t LP_OPS = {op_write, op_read, op_shutdown, op_close, op_peer};

int knit_lp_client(uv_loop_t *loop, const knit_lp_client_conf_t *conf, const knit_stream_cbs_t *cb,
                   void *data, knit_stream_t **out) /* see lp_client.h */
{
    char host[256], path[1100], url[1600];
    const char *name;
    int tls, port;
    lpc_t *l;

    *out = NULL;
    if (!loop || !conf || !cb ||
        knit_lp_url_parse(conf->url, &tls, host, sizeof host, &port, path, sizeof path) != 0)
        return KNIT_EINVAL;
    /* Since 7.84 this is thread-safe and counted; libcurl needs it once. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return KNIT_EIO;
    if (!(l = knit__calloc(1, sizeof *l)))
        return KNIT_ENOMEM;
    l->loop = loop;
    l->conf = *conf;
    l->conf.url = l->conf.ca_file = l->conf.server_name = NULL;
    if (!l->conf.connect_ms)
        l->conf.connect_ms = 10000;
    if (!l->conf.request_ms)
        l->conf.request_ms = 30000;
    if (!l->conf.get_ms)
        l->conf.get_ms = 30000;
    if (!l->conf.get_retries)
        l->conf.get_retries = 5;
    l->tls = tls;
    l->reading = 1;
    name = tls && conf->server_name && *conf->server_name ? conf->server_name : host;
    snprintf(url, sizeof url, strchr(name, ':') ? "%s://[%s]:%d%s" : "%s://%s:%d%s",
             tls ? "https" : "http", name, port, path);
    snprintf(l->peer, sizeof l->peer, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->base = knit__strdup(url);
    l->ca_file = knit__strdup(tls && conf->ca_file ? conf->ca_file : DEF_CAFILE);
    if (tls && name != host) {
        char ct[600];
        snprintf(ct, sizeof ct, strchr(host, ':') ? "%s:%d:[%s]:%d" : "%s:%d:%s:%d", name, port,
                 host, port);
        l->connect_to = curl_slist_append(NULL, ct);
    }
    l->multi = curl_multi_init();
    if (!l->base || !l->ca_file || !l->multi || (tls && name != host && !l->connect_to)) {
        if (l->multi)
            curl_multi_cleanup(l->multi);
        curl_slist_free_all(l->connect_to);
        knit__free(l->base);
        knit__free(l->ca_file);
        knit__free(l);
        return KNIT_ENOMEM;
    }
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    uv_timer_init(loop, &l->timer);
    uv_timer_init(loop, &l->get_timer);
    uv_timer_init(loop, &l->post_timer);
    l->timer.data = l->get_timer.data = l->post_timer.data = l;
    l->handles = 3;
    l->pub.ops = &LP_OPS;
    l->pub.cb = *cb;
    l->pub.data = data;
    if (!(l->open = req_start(l, R_OPEN, l->base, l->conf.request_ms, NULL, 0))) {
        /* Closed through the usual path, so the handles are closed too;
        ** the caller gets nothing to close. */
        l->pub.cb.on_close = NULL;
        l->closing = 1;
        teardown(l);
        return KNIT_ENOMEM;
    }
    *out = &l->pub;
    return 0;
}
