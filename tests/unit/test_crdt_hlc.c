/*
** test_crdt_hlc.c: the hybrid logical clock (crdt/hlc.h).
**
** Checks each design note of hlc.h on hand-picked edge cases (the wall clock
** stepping back, equal walls, counter and millisecond overflow, remote stamps
** from the future) and then, as a property, that a random mix of ticks and
** receives under a wandering wall clock never issues a stamp twice.
*/
#include <time.h>

#include "hlc.h"
#include "test.h"

static uint64_t tick(uint64_t *clock, uint64_t wall)
{
    uint64_t h = 0;

    CHECK_OK(knit_hlc_tick(clock, wall, &h));
    CHECK(h == *clock);
    return h;
}

static void wall_backwards(void)
{
    uint64_t c = 0;

    CHECK(tick(&c, 1000) == knit_hlc_make(1000, 0));
    /* The wall clock steps back a second: the clock keeps counting on. */
    CHECK(tick(&c, 0) == knit_hlc_make(1000, 1));
    CHECK(tick(&c, 999) == knit_hlc_make(1000, 2));
    /* It catches up: back to the wall time with the counter reset. */
    CHECK(tick(&c, 1001) == knit_hlc_make(1001, 0));
}

static void equal_walls(void)
{
    uint64_t c = 0, prev = 0;
    unsigned i;

    for (i = 0; i < 1000; i++) {
        uint64_t h = tick(&c, 5000);
        CHECK(h > prev);
        CHECK_EQ_INT(knit_hlc_ms(h), 5000);
        CHECK_EQ_INT(knit_hlc_counter(h), i);
        prev = h;
    }
}

static void counter_overflow(void)
{
    uint64_t c = knit_hlc_make(1000, 0xfffe);

    CHECK(tick(&c, 1000) == knit_hlc_make(1000, 0xffff));
    /* Past 0xffff the clock borrows the next millisecond (note 2). */
    CHECK(tick(&c, 1000) == knit_hlc_make(1001, 0));
    CHECK(tick(&c, 3) == knit_hlc_make(1001, 1));
}

static void ms_overflow(void)
{
    uint64_t c = UINT64_MAX, h = 7;

    CHECK_EQ_INT(knit_hlc_tick(&c, 5, &h), KNIT_EOVERFLOW);
    CHECK(c == UINT64_MAX && h == 7);
    c = 0;
    CHECK_EQ_INT(knit_hlc_tick(&c, KNIT_HLC_MAX_MS + 1, &h), KNIT_EOVERFLOW);
    CHECK(c == 0);
    CHECK(tick(&c, KNIT_HLC_MAX_MS) == knit_hlc_make(KNIT_HLC_MAX_MS, 0));
}

static void recv_drift(void)
{
    uint64_t c = knit_hlc_make(1000, 3), r;

    /* Exactly at the limit is accepted and later ticks pass it. */
    r = knit_hlc_make(1000 + 300, 9);
    CHECK_OK(knit_hlc_recv(&c, r, 1000, 300));
    CHECK(c == r);
    CHECK(tick(&c, 1000) == r + 1);
    /* One millisecond beyond the limit is refused and changes nothing. */
    r = knit_hlc_make(1000 + 301 + 300, 0);
    c = knit_hlc_make(1000, 3);
    CHECK_EQ_INT(knit_hlc_recv(&c, r, 1300, 300), KNIT_ECLOCKSKEW);
    CHECK(c == knit_hlc_make(1000, 3));
    CHECK(tick(&c, 1000) == knit_hlc_make(1000, 4));
    /* An older remote stamp leaves the clock where it is. */
    CHECK_OK(knit_hlc_recv(&c, knit_hlc_make(10, 10), 1000, 300));
    CHECK(c == knit_hlc_make(1000, 4));
    /* wall + drift must not wrap around. */
    CHECK_OK(knit_hlc_recv(&c, UINT64_MAX - 1, 1, UINT64_MAX));
    CHECK(c == UINT64_MAX - 1);
    CHECK_EQ_INT(knit_hlc_recv(&c, UINT64_MAX, 1, 0), KNIT_ECLOCKSKEW);
    CHECK(c == UINT64_MAX - 1);
}

static void format_known(void)
{
    char buf[KNIT_HLC_FMT_LEN];
    size_t n;

    n = knit_hlc_format(knit_hlc_make(1795237306123, 42), buf, sizeof buf);
    CHECK_STR(buf, "2026-11-21T05:01:46.123Z#42");
    CHECK_EQ_INT(n, strlen(buf));
    knit_hlc_format(0, buf, sizeof buf);
    CHECK_STR(buf, "1970-01-01T00:00:00.000Z#0");
    knit_hlc_format(knit_hlc_make(951868799999, 65535), buf, sizeof buf);
    CHECK_STR(buf, "2000-02-29T23:59:59.999Z#65535");
    knit_hlc_format(knit_hlc_make(4107542400000, 1), buf, sizeof buf);
    CHECK_STR(buf, "2100-03-01T00:00:00.000Z#1");
    knit_hlc_format(knit_hlc_make(946684799000, 7), buf, sizeof buf);
    CHECK_STR(buf, "1999-12-31T23:59:59.000Z#7");
    CHECK_EQ_INT(knit_hlc_format(0, buf, KNIT_HLC_FMT_LEN - 1), 0);
}

/* The date arithmetic against the C library's, over the whole 48-bit range. */
static void format_vs_gmtime(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        uint64_t ms = knit_rng_next(&r) >> (16 + knit_rng_below(&r, 20));
        uint64_t h = knit_hlc_make(ms, (unsigned)knit_rng_below(&r, 65536));
        time_t t = (time_t)(ms / 1000);
        struct tm tm;
        char want[64], got[KNIT_HLC_FMT_LEN];

        knit_test_case_seed(seed + (uint64_t)i);
        CHECK(gmtime_r(&t, &tm) != NULL);
        snprintf(want, sizeof want, "%04lld-%02d-%02dT%02d:%02d:%02d.%03uZ#%u",
                 (long long)tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, (unsigned)(ms % 1000), knit_hlc_counter(h));
        knit_hlc_format(h, got, sizeof got);
        CHECK_STR(got, want);
    }
}

/* Property: two replicas ticking and exchanging stamps under wandering
** clocks issue strictly increasing stamps, and each never goes backwards. */
static void monotonic_property(void)
{
    uint64_t seed = knit_test_seed();
    long i, n = knit_test_cases(10000);

    for (i = 0; i < n; i++) {
        knit_rng_t r = {seed ^ (UINT64_C(0x5151) + (uint64_t)i)};
        uint64_t c[2] = {0, 0}, last[2] = {0, 0}, wall = 1000000;
        int k;

        knit_test_case_seed(seed ^ (UINT64_C(0x5151) + (uint64_t)i));
        for (k = 0; k < 50; k++) {
            int who = (int)knit_rng_below(&r, 2);
            uint64_t before = c[who], w = wall + knit_rng_below(&r, 40) - 20, h;
            wall += knit_rng_below(&r, 3);
            if (knit_rng_below(&r, 3) == 0) {
                int rc = knit_hlc_recv(&c[who], c[!who], w, 10);
                CHECK(rc == 0 || rc == KNIT_ECLOCKSKEW);
                CHECK(c[who] >= before);
                if (rc == 0)
                    CHECK(c[who] >= c[!who]);
                else
                    CHECK(c[who] == before);
            } else {
                CHECK_OK(knit_hlc_tick(&c[who], w, &h));
                CHECK(h > before && h > last[who]);
                CHECK(knit_hlc_ms(h) >= w);
                last[who] = h;
            }
        }
    }
}

KNIT_TESTS(T(wall_backwards), T(equal_walls), T(counter_overflow), T(ms_overflow), T(recv_drift),
           T(format_known), T(format_vs_gmtime), T(monotonic_property))
