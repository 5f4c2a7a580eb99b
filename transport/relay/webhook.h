/*
** webhook.h: signed webhook deliveries as Svix sends them for Clerk
** (the "Standard Webhooks" scheme), without I/O: the check of a
** delivery's signature and timestamp, before its body is believed.
**
** A delivery carries three headers, svix-id, svix-timestamp and
** svix-signature (or webhook-id, webhook-timestamp, webhook-signature).
** The signed content is id "." timestamp "." body; the signature is
** HMAC-SHA256 under the secret, the base64 bytes after "whsec_".  The
** signature header is a space-separated list of "v1,<base64>"; any one
** that matches passes (a provider rotating its secret sends two).
*/
#ifndef KNIT_RELAY_WEBHOOK_H
#define KNIT_RELAY_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "relay_store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_WEBHOOK_TOLERANCE_S 300 /* a timestamp further from now is refused */

/* The key of a "whsec_..." secret into key[0..64), its length into *n;
** KNIT_EINVAL when the secret is not "whsec_" and base64 of 16..64 bytes. */
int knit_webhook_secret(const char *secret, uint8_t key[64], size_t *n /* OUT */);

/* 0 if sigs holds a v1 signature of id "." ts "." body[0..n) under key
** and ts (decimal seconds) is within KNIT_WEBHOOK_TOLERANCE_S of now_ms;
** else KNIT_EAUTH with a static reason in *why.  Signatures are compared
** in constant time. */
int knit_webhook_verify(const uint8_t *key, size_t keylen, const char *id, const char *ts,
                        const char *sigs, const void *body, size_t n, uint64_t now_ms,
                        const char **why /* OUT */);

/* One delivery to POST /v1/webhooks/clerk, handled against the store:
** signature and timestamp (above), then the body as JSON {"type",
** "data": {"id", "updated_at"}}, then, once per delivery id (a retry is
** answered 200 and changes nothing):
**   user.deleted   the account user:<data.id> is erased with the anonymous
**                  namespaces it claimed (knit_relay_store_erase_account);
**   user.created, user.updated
**                  recorded if newer than what was recorded for that user
**                  (data.updated_at), ignored as stale otherwise;
**   other events   recorded.
** Returns the HTTP status (200 after the effect is durable; 400 for a body
** that is not such JSON, 401 for a bad signature or timestamp, 503 when the
** store fails, so the provider retries) with a one-line reason in msg. */
int knit__webhook_deliver(knit_relay_store_t *s, const uint8_t *key, size_t keylen, const char *id,
                          const char *ts, const char *sigs, const void *body, size_t n,
                          uint64_t now_ms, char *msg, size_t msgn);

#ifdef __cplusplus
}
#endif
#endif
