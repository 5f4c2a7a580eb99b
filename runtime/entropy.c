/*
** entropy.c: see entropy.h.
*/
#include "entropy.h"

#include <errno.h>
#include <sys/random.h>

#include "knit_errors.h"

int knit__random(void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom((char *)buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return KNIT_EIO;
        got += (size_t)r;
    }
    return 0;
}
