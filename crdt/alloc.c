/*
** alloc.c: allocation wrapper with a fault-injection seam for tests.
*/
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

/* Fault injection.  Plain (non-atomic) counters: tests that arm the seam are
** single-threaded, and when disarmed the only cost is one compare. */
static long fail_countdown; /* 0 = off; otherwise allocations until failure */
static int fail_sticky;     /* keep failing after the first injected failure */
static long alloc_count;    /* allocations since the last knit__alloc_fail_at */

static int should_fail(void)
{
    alloc_count++;
    if (fail_countdown == 0)
        return 0;
    if (fail_countdown > 1) {
        fail_countdown--;
        return 0;
    }
    if (!fail_sticky)
        fail_countdown = 0;
    return 1;
}

long knit__alloc_fail_at(long nth, int sticky)
{
    long n = alloc_count;
    fail_countdown = nth < 0 ? 0 : nth;
    fail_sticky = sticky;
    alloc_count = 0;
    return n;
}

void *knit__malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n ? n : 1);
}

void *knit__calloc(size_t count, size_t size)
{
    return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *knit__realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n ? n : 1);
}

void knit__free(void *p)
{
    free(p);
}

void *knit__memdup(const void *p, size_t n)
{
    void *q = knit__malloc(n);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

char *knit__strdup(const char *s)
{
    return knit__memdup(s, strlen(s) + 1);
}
