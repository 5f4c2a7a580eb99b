/*
** metrics.c: the relay's metrics and their Prometheus text rendering (API
** in metrics.h).  Counters are plain integers: everything runs on the
** relay's loop thread, so nothing needs to be atomic.
**
** Design notes
**   1. Counters only grow and gauges are exact: a hook that undoes (a
**      connection closing) is called exactly once per hook that did.
**   2. Histograms keep per-bucket counts; the cumulative counts the format
**      wants are summed while rendering, so an observation costs one
**      comparison per bound.
**   3. Every label value comes from a closed table (metrics.h, or the
**      error table of knit_errors.h for reject reasons), never from a peer.
*/
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

/* Latencies, seconds: 50 us .. 10 s. */
static const double LATENCY_LE[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                    0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                    0.5,     1,      2.5,     5,      10};
/* Pushes per group commit. */
static const double PUSHES_LE[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
/* Changes per group commit. */
static const double CHANGES_LE[] = {1, 10, 100, 1000, 10000, 100000, 1000000};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define X_LABEL(name, label) label,
static const char *const TRANSPORT_LABEL[] = {KNIT_METRIC_TRANSPORTS(X_LABEL)};
static const char *const AUTH_LABEL[] = {KNIT_METRIC_AUTH_FAILURES(X_LABEL)};
static const char *const LIMIT_LABEL[] = {KNIT_METRIC_LIMITS(X_LABEL)};
#undef X_LABEL
static const char *const CHECK_LABEL[KNIT_METRIC_NCHECKS] = {"equal", "differ", "fetch", "error"};
#define X_CODE(c) c,
static const int HTTP_CODE[] = {KNIT_METRIC_HTTP_CODES(X_CODE)};
#undef X_CODE

static void hist_init(knit_metric_hist_t *h, const double *le, size_t n)
{
    memset(h, 0, sizeof *h);
    h->le = le;
    h->nle = n;
}

static void hist_observe(knit_metric_hist_t *h, double v)
{
    size_t i = 0;
    while (i < h->nle && v > h->le[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

void knit__metrics_init(knit_relay_metrics_t *m, uint64_t (*now_us)(void *data),
                        void *data) /* see metrics.h */
{
    memset(m, 0, sizeof *m);
    m->now_us = now_us;
    m->clock_data = data;
    hist_init(&m->ack_latency, LATENCY_LE, COUNT(LATENCY_LE));
    hist_init(&m->fanout_latency, LATENCY_LE, COUNT(LATENCY_LE));
    hist_init(&m->group_pushes, PUSHES_LE, COUNT(PUSHES_LE));
    hist_init(&m->group_changes, CHANGES_LE, COUNT(CHANGES_LE));
}

uint64_t knit__metrics_now(const knit_relay_metrics_t *m) /* see metrics.h */
{
    return m && m->now_us ? m->now_us(m->clock_data) : 0;
}

static double since(const knit_relay_metrics_t *m, uint64_t t0)
{
    uint64_t now = knit__metrics_now(m);
    return now > t0 ? (double)(now - t0) / 1e6 : 0.0;
}

void knit__metrics_conn(knit_relay_metrics_t *m, int transport, int delta) /* see metrics.h */
{
    if (!m || transport < 0 || transport >= KNIT_METRIC_NTRANSPORTS)
        return;
    m->conns[transport] += delta;
    if (delta > 0)
        m->conns_total[transport] += (uint64_t)delta;
}

void knit__metrics_http_conn(knit_relay_metrics_t *m, int delta) /* see metrics.h */
{
    if (m)
        m->http_conns += delta;
}

void knit__metrics_session(knit_relay_metrics_t *m, int delta) /* see metrics.h */
{
    if (!m)
        return;
    m->sessions += delta;
    if (delta > 0)
        m->sessions_total += (uint64_t)delta;
}

void knit__metrics_push(knit_relay_metrics_t *m) /* see metrics.h */
{
    if (m)
        m->pushes++;
}

void knit__metrics_answer(knit_relay_metrics_t *m, int code,
                          uint64_t arrived_us) /* see metrics.h */
{
    if (!m)
        return;
    if (code == 0) {
        m->acks++;
        hist_observe(&m->ack_latency, since(m, arrived_us));
    } else if (code < 0 && -code < KNIT_METRIC_NCODES) {
        m->rejects[-code]++;
    } else {
        m->rejects[0]++; /* not an error code: counted as "other" */
    }
}

void knit__metrics_group(knit_relay_metrics_t *m, size_t pushes, size_t changes,
                         int ok) /* see metrics.h */
{
    if (!m)
        return;
    if (!ok) {
        m->group_failed++;
        return;
    }
    hist_observe(&m->group_pushes, (double)pushes);
    hist_observe(&m->group_changes, (double)changes);
}

void knit__metrics_ingest(knit_relay_metrics_t *m, size_t changes,
                          size_t applied) /* see metrics.h */
{
    if (!m)
        return;
    m->changes_ingested += changes;
    m->changes_applied += applied;
}

void knit__metrics_fanout(knit_relay_metrics_t *m, size_t n,
                          uint64_t arrived_us) /* see metrics.h */
{
    if (!m || n == 0)
        return;
    m->fanout_deltas += n;
    hist_observe(&m->fanout_latency, since(m, arrived_us));
}

void knit__metrics_echoes_skipped(knit_relay_metrics_t *m, size_t n) /* see metrics.h */
{
    if (m)
        m->echoes_skipped += n;
}

void knit__metrics_catchup(knit_relay_metrics_t *m, size_t bytes) /* see metrics.h */
{
    if (m)
        m->catchup_bytes += bytes;
}

void knit__metrics_check(knit_relay_metrics_t *m, int kind) /* see metrics.h */
{
    if (m && kind >= 0 && kind < KNIT_METRIC_NCHECKS)
        m->checks[kind]++;
}

void knit__metrics_auth_fail(knit_relay_metrics_t *m, int reason) /* see metrics.h */
{
    if (m && reason >= 0 && reason < KNIT_METRIC_NAUTH)
        m->auth_failures[reason]++;
}

void knit__metrics_limit(knit_relay_metrics_t *m, int limit) /* see metrics.h */
{
    if (m && limit >= 0 && limit < KNIT_METRIC_NLIMITS)
        m->limits[limit]++;
}

void knit__metrics_http(knit_relay_metrics_t *m, int status) /* see metrics.h */
{
    if (!m)
        return;
    for (size_t i = 0; i < COUNT(HTTP_CODE); i++)
        if (HTTP_CODE[i] == status) {
            m->http[i]++;
            return;
        }
}

/* ---------------------------------------------------------------------- */
/* Rendering                                                                */

typedef struct out_s {
    char *p;    /* text, NUL-terminated */
    size_t len; /* bytes before the NUL */
    size_t cap; /* bytes allocated */
    int err;    /* sticky: an allocation failed */
} out_t;

static void put(out_t *o, const char *fmt, ...)
{
    va_list ap;
    int k;
    if (o->err)
        return;
    for (;;) {
        va_start(ap, fmt);
        k = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (k < 0) {
            o->err = KNIT_EINVAL;
            return;
        }
        if ((size_t)k < o->cap - o->len) {
            o->len += (size_t)k;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)k;
        char *q = knit__realloc(o->p, cap);
        if (!q) {
            o->err = KNIT_ENOMEM;
            return;
        }
        o->p = q;
        o->cap = cap;
    }
}

static void head(out_t *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(out_t *o, const char *name, const char *type, const char *help, double v)
{
    head(o, name, type, help);
    put(o, "%s %.17g\n", name, v);
}

static void hist(out_t *o, const char *name, const char *help, const knit_metric_hist_t *h)
{
    uint64_t cum = 0;
    head(o, name, "histogram", help);
    for (size_t i = 0; i < h->nle; i++) {
        cum += h->counts[i];
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    cum += h->counts[h->nle];
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    put(o, "%s_sum %.17g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

/* Reject reasons are error names ("KNIT_EDENIED" -> "EDENIED"). */
static const char *reason_label(int idx)
{
    const char *n = idx == 0 ? "OTHER" : knit_err_name(-idx);
    return strncmp(n, "KNIT_", 5) == 0 ? n + 5 : n;
}

int knit__metrics_render(const knit_relay_metrics_t *m, const knit_relay_metrics_snapshot_t *s,
                         char **out, size_t *n) /* see metrics.h */
{
    out_t o = {NULL, 0, 0, 0};
    *out = NULL;
    *n = 0;
    if (!(o.p = knit__malloc(o.cap = 8192)))
        return KNIT_ENOMEM;
    o.p[0] = '\0';

    head(&o, "knit_relay_connections", "gauge", "Open protocol connections, by transport.");
    for (int t = 0; t < KNIT_METRIC_NTRANSPORTS; t++)
        put(&o, "knit_relay_connections{transport=\"%s\"} %lld\n", TRANSPORT_LABEL[t],
            (long long)m->conns[t]);
    head(&o, "knit_relay_connections_total", "counter",
         "Protocol connections accepted, by transport.");
    for (int t = 0; t < KNIT_METRIC_NTRANSPORTS; t++)
        put(&o, "knit_relay_connections_total{transport=\"%s\"} %llu\n", TRANSPORT_LABEL[t],
            (unsigned long long)m->conns_total[t]);
    scalar(&o, "knit_relay_http_connections", "gauge",
           "Open HTTP connections not upgraded to WebSocket.", (double)m->http_conns);
    scalar(&o, "knit_relay_sessions", "gauge", "Open sessions (connections past WELCOME).",
           (double)m->sessions);
    scalar(&o, "knit_relay_sessions_total", "counter", "Sessions opened (WELCOMEs sent).",
           (double)m->sessions_total);
    scalar(&o, "knit_relay_pushes_total", "counter", "PUSH messages received.", (double)m->pushes);
    scalar(&o, "knit_relay_acks_total", "counter", "PUSHes acknowledged (durable).",
           (double)m->acks);
    head(&o, "knit_relay_rejects_total", "counter", "PUSHes refused with REJECT, by reason.");
    for (int i = 0; i < KNIT_METRIC_NCODES; i++)
        if (m->rejects[i])
            put(&o, "knit_relay_rejects_total{reason=\"%s\"} %llu\n", reason_label(i),
                (unsigned long long)m->rejects[i]);
    scalar(&o, "knit_relay_changes_ingested_total", "counter", "Changes in pushes that committed.",
           (double)m->changes_ingested);
    scalar(&o, "knit_relay_changes_applied_total", "counter",
           "Changes that won their merge and were stored.", (double)m->changes_applied);
    hist(&o, "knit_relay_ack_latency_seconds", "From a PUSH's arrival to its ACK.",
         &m->ack_latency);
    hist(&o, "knit_relay_fanout_latency_seconds",
         "From a PUSH's arrival to its units sent to live subscribers.", &m->fanout_latency);
    scalar(&o, "knit_relay_fanout_deltas_total", "counter", "Live DELTAS messages sent.",
           (double)m->fanout_deltas);
    scalar(&o, "knit_relay_echoes_skipped_total", "counter",
           "Units not sent back to the connection that pushed them (its ACK covers them).",
           (double)m->echoes_skipped);
    scalar(&o, "knit_relay_catchup_bytes_total", "counter", "Bytes of catch-up DELTAS sent.",
           (double)m->catchup_bytes);
    head(&o, "knit_relay_consistency_checks_total", "counter",
         "Consistency checks (CHECK) answered, by result.");
    for (int i = 0; i < KNIT_METRIC_NCHECKS; i++)
        put(&o, "knit_relay_consistency_checks_total{result=\"%s\"} %llu\n", CHECK_LABEL[i],
            (unsigned long long)m->checks[i]);
    head(&o, "knit_relay_auth_failures_total", "counter", "Authentication failures, by reason.");
    for (int i = 0; i < KNIT_METRIC_NAUTH; i++)
        put(&o, "knit_relay_auth_failures_total{reason=\"%s\"} %llu\n", AUTH_LABEL[i],
            (unsigned long long)m->auth_failures[i]);
    head(&o, "knit_relay_limit_hits_total", "counter", "Limits hit, by limit.");
    for (int i = 0; i < KNIT_METRIC_NLIMITS; i++)
        put(&o, "knit_relay_limit_hits_total{limit=\"%s\"} %llu\n", LIMIT_LABEL[i],
            (unsigned long long)m->limits[i]);
    hist(&o, "knit_relay_group_commit_pushes", "Pushes per group commit.", &m->group_pushes);
    hist(&o, "knit_relay_group_commit_changes", "Changes per group commit.", &m->group_changes);
    scalar(&o, "knit_relay_group_commit_failures_total", "counter",
           "Group commits that failed (nothing acknowledged).", (double)m->group_failed);
    head(&o, "knit_relay_http_responses_total", "counter", "HTTP responses, by status code.");
    for (size_t i = 0; i < COUNT(HTTP_CODE); i++)
        put(&o, "knit_relay_http_responses_total{code=\"%d\"} %llu\n", HTTP_CODE[i],
            (unsigned long long)m->http[i]);
    scalar(&o, "knit_relay_store_up", "gauge", "1 if a read of the store succeeds.",
           s->store_ok ? 1.0 : 0.0);
    if (s->store_bytes >= 0)
        scalar(&o, "knit_relay_store_bytes", "gauge", "Size of the store file, bytes.",
               (double)s->store_bytes);
    scalar(&o, "knit_relay_store_damaged_cells_total", "counter",
           "Stored cells catch-up had to skip.", (double)s->damaged);
    scalar(&o, "knit_relay_uptime_seconds", "gauge", "Seconds since the relay started.",
           (double)s->uptime_s);
    if (o.err) {
        knit__free(o.p);
        return o.err;
    }
    *out = o.p;
    *n = o.len;
    return 0;
}
