/*
** cli_args.h: argument parsing shared by the knit programs (sync-relay,
** sync-agent).  Strict: a number is decimal digits only, in range; an
** address is HOST:PORT or [IPv6]:PORT.
*/
#ifndef KNIT_CLI_ARGS_H
#define KNIT_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* Parses s as a decimal in [min, max] into *out; -1 if it is not one. */
int cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Splits HOST:PORT (or [V6]:PORT) into host (n bytes) and port, which must
** be at least min_port (0 lets the system pick one); -1 if malformed. */
int cli_parse_hostport(const char *s, int min_port, char *host, size_t n, int *port);

#endif
