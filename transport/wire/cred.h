/*
** cred.h: credential names and encodings that the sync client and the relay
** share, without I/O.
**
** A session is opened by one of two credentials (the relay's checks are in
** transport/relay/auth.h): an anonymous id and secret the client made, which
** opens "anon:<id>", or a JWT whose "sub" opens "user:<sub>".  This header
** holds what both sides must agree on: which ids, subjects and secrets are
** acceptable, how principal names are spelled, and base64url, which the
** client uses to make anonymous secrets and the relay to read tokens.
**
** Ownership: inputs are read during the call only; outputs go to buffers the
** caller provides.
*/
#ifndef KNIT_CRED_H
#define KNIT_CRED_H

#include <stddef.h>
#include <stdint.h>

#include "knit_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_JWT_MAX_SUB 128     /* longest "sub", bytes */
#define KNIT_ANON_ID_MAX 64      /* longest anonymous id */
#define KNIT_ANON_SECRET_MIN 16  /* shortest anonymous secret, bytes */
#define KNIT_ANON_SECRET_MAX 256 /* longest anonymous secret, bytes */
#define KNIT_PRINCIPAL_MAX 160   /* buffer that any principal name fits */

/* 1 if s is an acceptable "sub": 1..KNIT_JWT_MAX_SUB bytes of
** [A-Za-z0-9._@|+-] (no ':' or '/', so "user:<sub>" names one namespace). */
KNIT_EXTERN int knit_auth_sub_ok(const char *s);
/* 1 if id is an acceptable anonymous id: 1..KNIT_ANON_ID_MAX of [A-Za-z0-9_-]. */
KNIT_EXTERN int knit_anon_id_ok(const char *id);
/* 1 if secret has an acceptable length (KNIT_ANON_SECRET_MIN..MAX bytes). */
KNIT_EXTERN int knit_anon_secret_ok(const char *secret);

/* Principal names: "anon:<id>" and "user:<sub>" into buf[0..n); KNIT_EINVAL
** if the id/sub is not acceptable or buf too small. */
KNIT_EXTERN int knit_auth_anon_principal(const char *id, char *buf, size_t n);
KNIT_EXTERN int knit_auth_user_principal(const char *sub, char *buf, size_t n);

/* Constant-time equality of a[0..n) and b[0..n): 1 equal, 0 not. */
KNIT_EXTERN int knit_ct_equal(const void *a, const void *b, size_t n);

/* base64url without padding; strict decode (KNIT_ECORRUPT for padding,
** stray characters or non-zero spare bits); out must hold (n * 3) / 4
** bytes; *outn gets the count. */
KNIT_EXTERN int knit_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *outn);
/* Encodes into out (holds (n * 4 + 2) / 3 + 1 bytes, NUL-terminated);
** returns the length. */
KNIT_EXTERN size_t knit_b64url_encode(const uint8_t *in, size_t n, char *out);

#ifdef __cplusplus
}
#endif
#endif
