/* An app outside knit's tree: it finds libknit through its installed CMake
** package or pkg-config, includes only installed headers, and uses the
** replica API end to end. */
#include <stdio.h>
#include <string.h>

#include <knit.h>

int main(int argc, char **argv)
{
    knit_t *k = NULL;
    char *v = NULL;
    knit_digest_t d;
    if (argc != 2) {
        fprintf(stderr, "usage: consumer REPLICA\n");
        return 2;
    }
    int rc = knit_open(argv[1], NULL, &k);
    if (!rc)
        rc = knit_setting_set(k, "consumer", "hello");
    if (!rc)
        rc = knit_setting_get(k, "consumer", &v);
    if (!rc)
        rc = knit_digest(k, NULL, &d);
    if (rc || !v || strcmp(v, "hello") != 0) {
        fprintf(stderr, "consumer: %s: %s\n", knit_err_name(rc), k ? knit_errmsg(k) : "");
        return 1;
    }
    knit_free(v);
    knit_close(k);
    printf("consumer ok (knit %s)\n", KNIT_VERSION_STRING);
    return 0;
}
