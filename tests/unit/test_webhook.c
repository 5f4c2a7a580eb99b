/*
** test_webhook.c: Svix webhook signatures (webhook.h) against the official
** vector of the Svix libraries, with the clock injected; a wrong
** signature, a changed body, a bad and a stale timestamp are refused, and
** a rotated-secret list passes when any entry matches.
*/
#include <string.h>

#include "knit_errors.h"
#include "test.h"
#include "webhook.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define TS "1614265330"
#define BODY "{\"test\": 2432232314}"
#define SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
#define NOW_MS UINT64_C(1614265330000)

static uint8_t key[64];
static size_t keylen;

static int check(const char *ts, const char *sigs, const char *body, uint64_t now, const char **why)
{
    return knit_webhook_verify(key, keylen, ID, ts, sigs, body, strlen(body), now, why);
}

static void official_vector(void)
{
    const char *why = NULL;
    CHECK_OK(knit_webhook_secret(SECRET, key, &keylen));
    CHECK_EQ_INT(keylen, 24);
    CHECK_OK(check(TS, SIG, BODY, NOW_MS, &why));
    CHECK_OK(check(TS, SIG, BODY, NOW_MS + 299000, &why)); /* inside the tolerance */
    /* Two entries (a rotated secret), the good one second. */
    CHECK_OK(check(TS, "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/rnsa3ODOAKVNhJLY= " SIG, BODY, NOW_MS, &why));
}

static void refusals(void)
{
    const char *why = NULL;
    CHECK_OK(knit_webhook_secret(SECRET, key, &keylen));
    /* A wrong signature, one bit of the body, another version tag. */
    CHECK_EQ_INT(check(TS, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=", BODY, NOW_MS, &why),
                 KNIT_EAUTH);
    CHECK(strcmp(why, "bad webhook signature") == 0);
    CHECK_EQ_INT(check(TS, SIG, "{\"test\": 2432232315}", NOW_MS, &why), KNIT_EAUTH);
    CHECK_EQ_INT(check(TS, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY, NOW_MS, &why),
                 KNIT_EAUTH);
    CHECK_EQ_INT(check(TS, "", BODY, NOW_MS, &why), KNIT_EAUTH);
    /* A bad timestamp, a stale one, one from the future. */
    CHECK_EQ_INT(check("16142653x0", SIG, BODY, NOW_MS, &why), KNIT_EAUTH);
    CHECK(strcmp(why, "bad webhook timestamp") == 0);
    CHECK_EQ_INT(check(TS, SIG, BODY, NOW_MS + 301000, &why), KNIT_EAUTH);
    CHECK(strstr(why, "too far") != NULL);
    CHECK_EQ_INT(check(TS, SIG, BODY, NOW_MS - 301000, &why), KNIT_EAUTH);
    /* The timestamp is signed: another one with the same signature fails. */
    CHECK_EQ_INT(check("1614265331", SIG, BODY, NOW_MS, &why), KNIT_EAUTH);
    CHECK(strcmp(why, "bad webhook signature") == 0);
    /* Secrets that are not whsec_ and base64. */
    CHECK_EQ_INT(knit_webhook_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &keylen),
                 KNIT_EINVAL);
    CHECK_EQ_INT(knit_webhook_secret("whsec_MfKQ9r8GKYqrTwjU*D8ILPZIo2LaLaSw", key, &keylen),
                 KNIT_EINVAL);
    CHECK_EQ_INT(knit_webhook_secret("whsec_", key, &keylen), KNIT_EINVAL);
}

KNIT_TESTS(T(official_vector), T(refusals))
