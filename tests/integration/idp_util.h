/*
** idp_util.h: an identity provider for integration tests, Clerk-shaped:
** RSA keys and a JWKS made with Debian's python3-jwt (jwt_mint.py), tokens
** minted with them, and webhooks signed as Svix signs Clerk's (Python's own
** hmac), POSTed with curl.  The test target must define JWT_MINT_PATH.
*/
#ifndef KNIT_IDP_UTIL_H
#define KNIT_IDP_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "sync_util.h"

#define IDP_ISS "https://clerk.knit.test"
#define IDP_WHSEC "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* Makes key k1 and its JWKS in dir; jwks gets the JWKS file's path. */
void idp_keys(const char *dir, char *jwks, size_t n);
/* Makes key k1 and its JWKS in the test's directory (keys = that dir),
** then starts sync-relay on store with --jwks-file and --issuer, plus
** --http-listen and --webhook-secret-file when webhooks (*http_port then
** says where).  Exits the test on failure. */
void idp_relay_start(su_relay_t *r, char *keys, size_t nkeys, const char *store, int webhooks,
                     int *http_port);
/* A token for sub with extra claims (a JSON object, NULL: none), valid
** for 10 minutes, written to path. */
void idp_mint(const char *keys, const char *sub, const char *claims, const char *path);
/* The shell command that POSTs body as delivery id to the relay's Clerk
** webhook, signed now; curl writes "<status> <seconds>" to stdout and the
** answer's body to outf. */
void idp_deliver_cmd(int http_port, const char *id, const char *body, char *cmd, size_t n,
                     char *outf, size_t outn);
/* Runs it: the HTTP status, the answer's body in out. */
int idp_deliver(int http_port, const char *id, const char *body, char *out, size_t n);
/* A Clerk user.* event body (type "user.created" / "user.updated") for
** provider id `id`: the primary email is the second entry of
** email_addresses, named by primary_email_address_id (the first is a
** secondary "other-<email>" that must not be taken). */
void idp_user_body(char *buf, size_t n, const char *type, const char *id, const char *email,
                   const char *first, uint64_t updated);

#endif
