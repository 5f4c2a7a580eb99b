/*
** test.h: knit's small test harness.
**
** A test program lists its cases with KNIT_TESTS; run with no argument it
** runs them all, with a case name it runs that one (CTest registers each case
** on its own, see tests/CMakeLists.txt).  CHECK failures print file, line,
** the expression and, in property tests, the seed that reproduces them.
**
** Property tests: knit_test_seed() is KNIT_SEED from the environment or a
** fresh one; knit_test_cases(n) is n scaled by KNIT_CASES_SCALE (default 1).
*/
#ifndef KNIT_TEST_H
#define KNIT_TEST_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct knit_test_case_s {
    const char *name; /* case name, as given on the command line */
    void (*fn)(void); /* the test */
} knit_test_case_t;

/* Seed of the property case now running, printed with any failure. */
static uint64_t knit_test_current_seed;
static int knit_test_has_seed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            if (knit_test_has_seed)                                                                \
                fprintf(stderr, "  reproduce with KNIT_SEED=%" PRIu64 "\n",                        \
                        knit_test_current_seed);                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, va_, vb_);                                                             \
            if (knit_test_has_seed)                                                                \
                fprintf(stderr, "  reproduce with KNIT_SEED=%" PRIu64 "\n",                        \
                        knit_test_current_seed);                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_EQ_INT((expr), 0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,        \
                    __LINE__, #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* splitmix64: small, fast, good enough to drive property tests. */
typedef struct knit_rng_s {
    uint64_t s; /* state */
} knit_rng_t;

static inline uint64_t knit_rng_next(knit_rng_t *r)
{
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}
/* Uniform in [0, n). */
static inline uint64_t knit_rng_below(knit_rng_t *r, uint64_t n)
{
    return n ? knit_rng_next(r) % n : 0;
}

/* The base seed for this run: KNIT_SEED, or time and pid.  Printed once. */
static inline uint64_t knit_test_seed(void)
{
    static uint64_t seed;
    static int have;
    if (!have) {
        const char *e = getenv("KNIT_SEED");
        seed = e ? strtoull(e, NULL, 0)
                 : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)clock();
        have = 1;
        fprintf(stderr, "seed: KNIT_SEED=%" PRIu64 "\n", seed);
    }
    return seed;
}

/* Marks the start of one property case; failures then print its seed. */
static inline void knit_test_case_seed(uint64_t seed)
{
    knit_test_current_seed = seed;
    knit_test_has_seed = 1;
}

/* n cases, scaled by KNIT_CASES_SCALE (e.g. 10 for a long run). */
static inline long knit_test_cases(long n)
{
    const char *e = getenv("KNIT_CASES_SCALE");
    double k = e ? atof(e) : 1.0;
    long r = (long)(n * (k > 0 ? k : 1.0));
    return r > 0 ? r : 1;
}

#define KNIT_TESTS(...)                                                                            \
    static const knit_test_case_t knit_test_table_[] = {__VA_ARGS__};                              \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        size_t i, n = sizeof knit_test_table_ / sizeof knit_test_table_[0];                        \
        int ran = 0;                                                                               \
        setvbuf(stdout, NULL, _IONBF, 0);                                                          \
        for (i = 0; i < n; i++) {                                                                  \
            if (argc > 1 && strcmp(argv[1], knit_test_table_[i].name) != 0)                        \
                continue;                                                                          \
            knit_test_has_seed = 0;                                                                \
            knit_test_table_[i].fn();                                                              \
            printf("ok %s\n", knit_test_table_[i].name);                                           \
            ran++;                                                                                 \
        }                                                                                          \
        if (!ran) {                                                                                \
            fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "");                        \
            return 2;                                                                              \
        }                                                                                          \
        return 0;                                                                                  \
    }

#define T(name)                                                                                    \
    {                                                                                              \
#name, name                                                                                \
    }

#endif
