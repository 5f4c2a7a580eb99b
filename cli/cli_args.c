/*
** cli_args.c: argument parsing shared by the knit programs (see cli_args.h).
*/
#include "cli_args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;
    /* strtoull accepts signs and leading blanks; a flag's value should not. */
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_hostport(const char *s, int min_port, char *host, size_t n, int *port)
{
    const char *colon = strrchr(s, ':');
    uint64_t p;
    size_t hl;
    if (!colon || cli_parse_u64(colon + 1, (uint64_t)min_port, 65535, &p))
        return -1;
    hl = (size_t)(colon - s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl == 0 || hl >= n)
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}
