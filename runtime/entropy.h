/*
** entropy.h: the one source of randomness of knit: site ids of replicas
** and of the relay, anonymous credentials, WebSocket masking seeds,
** long-poll session ids.  It reads the kernel's CSPRNG (getrandom(2),
** which blocks only until the pool is first seeded at boot).  Not
** installed.
*/
#ifndef KNIT_ENTROPY_H
#define KNIT_ENTROPY_H

#include <stddef.h>

/* Fills buf[0..n) with random bytes: 0, or KNIT_EIO if the kernel gives
** none. */
int knit__random(void *buf, size_t n);

#endif
