/*
** health.c: the sync client's health figures (see health.h).
*/
#include "health.h"

#include <stdio.h>
#include <string.h>

#include "knit_errors.h"

/* Bucket of ms: ms itself below 16; above, 4 per power of two, by the two
** bits after the leading one. */
static size_t bucket(uint64_t ms)
{
    if (ms < 16)
        return (size_t)ms;
    unsigned e = 63 - (unsigned)__builtin_clzll(ms); /* 2^e <= ms, e >= 4 */
    size_t b = 16 + (size_t)(e - 4) * 4 + (size_t)((ms >> (e - 2)) & 3);
    return b < KNIT_HEALTH_BUCKETS ? b : KNIT_HEALTH_BUCKETS - 1;
}

/* The largest ms of bucket b. */
static uint64_t upper(size_t b)
{
    if (b < 16)
        return b;
    unsigned e = (unsigned)((b - 16) / 4) + 4, sub = (unsigned)((b - 16) % 4);
    return (UINT64_C(1) << e) + ((uint64_t)(sub + 1) << (e - 2)) - 1;
}

void knit__health_latency(knit_health_t *h, uint64_t ms)
{
    h->lat[bucket(ms)]++;
    h->nlat++;
    h->lat_sum_ms += ms;
}

uint64_t knit__health_quantile(const knit_health_t *h, double q)
{
    if (!h->nlat)
        return 0;
    /* The smallest bucket whose running count reaches ceil(q * n). */
    uint64_t want = (uint64_t)(q * (double)h->nlat);
    if ((double)want < q * (double)h->nlat)
        want++;
    if (want == 0)
        want = 1;
    uint64_t run = 0;
    for (size_t b = 0; b < KNIT_HEALTH_BUCKETS; b++)
        if ((run += h->lat[b]) >= want)
            return upper(b);
    return upper(KNIT_HEALTH_BUCKETS - 1);
}

void knit__health_error(knit_health_t *h, int code)
{
    h->errors++;
    for (size_t i = 0; i < h->nkinds; i++)
        if (h->kind[i] == code) {
            h->nkind[i]++;
            return;
        }
    if (h->nkinds < KNIT_HEALTH_KINDS) {
        h->kind[h->nkinds] = code;
        h->nkind[h->nkinds++] = 1;
    } else {
        h->other++;
    }
}

void knit__health_kinds(const knit_health_t *h, char *buf, size_t n)
{
    size_t order[KNIT_HEALTH_KINDS], len = 0;
    for (size_t i = 0; i < h->nkinds; i++)
        order[i] = i;
    for (size_t i = 1; i < h->nkinds; i++) /* a handful: insertion sort */
        for (size_t j = i; j > 0 && h->nkind[order[j]] > h->nkind[order[j - 1]]; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    buf[0] = '\0';
    for (size_t i = 0; i < h->nkinds && len < n; i++) {
        const char *name = knit_err_name(h->kind[order[i]]);
        int w = snprintf(buf + len, n - len, "%s%s %llu", i ? ", " : "",
                         strncmp(name, "KNIT_", 5) == 0 ? name + 5 : name,
                         (unsigned long long)h->nkind[order[i]]);
        len += w > 0 ? (size_t)w : 0;
    }
    if (h->other && len < n)
        snprintf(buf + len, n - len, "%sother %llu", len ? ", " : "", (unsigned long long)h->other);
    if (!buf[0])
        snprintf(buf, n, "-");
}
