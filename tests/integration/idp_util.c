/*
** idp_util.c: see idp_util.h.
*/
#include "idp_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "test.h"

void idp_keys(const char *dir, char *jwks, size_t n)
{
    char out[4096];
    const char *key[] = {"/usr/bin/python3", JWT_MINT_PATH, "key", dir, "k1", "rsa", NULL};
    const char *set[] = {"/usr/bin/python3", JWT_MINT_PATH, "jwks", dir, "k1", NULL};
    int rc = su_run(key, 60000, out, sizeof out);
    if (rc == 0)
        rc = su_run(set, 60000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "jwt_mint.py (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    snprintf(jwks, n, "%s/jwks.json", dir);
}

void idp_relay_start(su_relay_t *r, char *keys, size_t nkeys, const char *store, int webhooks,
                     int *http_port)
{
    char jwks[700], whf[700], hl[64];
    snprintf(keys, nkeys, "%s", su_tmpdir());
    idp_keys(keys, jwks, sizeof jwks);
    su_path(whf, sizeof whf, "whsec");
    FILE *f = fopen(whf, "w");
    CHECK(f != NULL);
    fprintf(f, "%s\n", IDP_WHSEC);
    fclose(f);
    chmod(whf, 0600);
    *http_port = su_free_port();
    snprintf(hl, sizeof hl, "127.0.0.1:%d", *http_port);
    const char *with[] = {"--jwks-file",           jwks, "--issuer", IDP_ISS, "--http-listen", hl,
                          "--webhook-secret-file", whf,  NULL};
    const char *without[] = {"--jwks-file", jwks, "--issuer", IDP_ISS, NULL};
    CHECK_OK(su_relay_start(r, 0, store, NULL, webhooks ? with : without));
}

void idp_mint(const char *keys, const char *sub, const char *claims, const char *path)
{
    char out[8192];
    const char *argv[] = {
        "/usr/bin/python3",     JWT_MINT_PATH, "token", keys, "k1", sub, IDP_ISS, "-", "600",
        claims ? claims : "{}", NULL};
    int rc = su_run(argv, 60000, out, sizeof out);
    FILE *f;
    if (rc != 0)
        fprintf(stderr, "jwt_mint.py token (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK((f = fopen(path, "w")) != NULL);
    fputs(out, f);
    fclose(f);
}

void idp_deliver_cmd(int http_port, const char *id, const char *body, char *cmd, size_t n,
                     char *outf, size_t outn)
{
    char bodyf[700];
    FILE *f;
    snprintf(bodyf, sizeof bodyf, "%s/wh-%s.json", su_tmpdir(), id);
    snprintf(outf, outn, "%s/wh-%s.out", su_tmpdir(), id);
    CHECK((f = fopen(bodyf, "w")) != NULL);
    fputs(body, f);
    fclose(f);
    snprintf(cmd, n,
             "ts=$(date +%%s) && "
             "sig=$(/usr/bin/python3 -c 'import base64, hashlib, hmac, sys\n"
             "key = base64.b64decode(sys.argv[1].split(\"_\", 1)[1])\n"
             "msg = (sys.argv[2] + \".\" + sys.argv[3] + \".\").encode() + "
             "open(sys.argv[4], \"rb\").read()\n"
             "print(\"v1,\" + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest())"
             ".decode())' '%s' '%s' \"$ts\" '%s') && "
             "curl -s --max-time 10 -o '%s' -w '%%{http_code} %%{time_total}' -X POST "
             "-H 'content-type: application/json' -H 'svix-id: %s' -H \"svix-timestamp: $ts\" "
             "-H \"svix-signature: $sig\" --data-binary @'%s' "
             "'http://127.0.0.1:%d/v1/webhooks/clerk'",
             IDP_WHSEC, id, bodyf, outf, id, bodyf, http_port);
}

int idp_deliver(int http_port, const char *id, const char *body, char *out, size_t n)
{
    char cmd[4096], outf[700], code[64];
    idp_deliver_cmd(http_port, id, body, cmd, sizeof cmd, outf, sizeof outf);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    CHECK_EQ_INT(su_run(argv, 30000, code, sizeof code), 0);
    FILE *f = fopen(outf, "r");
    size_t k = f ? fread(out, 1, n - 1, f) : 0;
    out[k] = '\0';
    if (f)
        fclose(f);
    return atoi(code);
}

void idp_user_body(char *buf, size_t n, const char *type, const char *id, const char *email,
                   const char *first, uint64_t updated) /* see idp_util.h */
{
    snprintf(buf, n,
             "{\"type\":\"%s\",\"object\":\"event\",\"data\":{\"id\":\"%s\",\"object\":\"user\","
             "\"email_addresses\":[{\"id\":\"idn_second\",\"email_address\":\"other-%s\"},"
             "{\"id\":\"idn_primary\",\"email_address\":\"%s\"}],"
             "\"primary_email_address_id\":\"idn_primary\",\"external_id\":null,"
             "\"first_name\":\"%s\",\"last_name\":\"Doe\",\"image_url\":\"https://img.test/%s\","
             "\"created_at\":1700000000000,\"updated_at\":%llu}}",
             type, id, email, email, first, id, (unsigned long long)updated);
}
