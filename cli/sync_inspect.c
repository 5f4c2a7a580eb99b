/*
** sync_inspect.c: main for sync-inspect, the tool for looking inside knit's
** replicas and wire data when debugging sync.
**
** This file only dispatches: it handles the global options (--help,
** --version) and hands the rest of the command line to the command named
** first.  The commands, their one-line summaries and this table all come
** from INSPECT_COMMANDS in inspect_util.h, so a new command is one line
** there plus its own file.
*/
#include <stdio.h>
#include <string.h>

#include "inspect_util.h"
#include "knit.h"

typedef struct inspect_cmd_s {
    const char *name;                  /* as typed on the command line */
    const char *summary;               /* one line for --help */
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
} inspect_cmd_t;

#define INSPECT_ROW(name, summary) {#name, summary, cmd_##name},
static const inspect_cmd_t commands[] = {INSPECT_COMMANDS(INSPECT_ROW)};
#undef INSPECT_ROW

static void usage(FILE *f)
{
    size_t i;
    fputs("usage: sync-inspect COMMAND [OPTIONS] [ARGS]\n"
          "       sync-inspect COMMAND --help\n"
          "       sync-inspect --help | --version\n"
          "\n"
          "Look inside knit replicas and wire data when debugging sync.\n"
          "\n"
          "Commands:\n",
          f);
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\n"
          "Results go to standard output; with --json, a command prints exactly one\n"
          "JSON document there.  Errors go to standard error as\n"
          "\"sync-inspect: COMMAND: message\".\n"
          "\n"
          "Exit status:\n"
          "  0  success\n"
          "  1  success, and the command found something (a difference, a problem)\n"
          "  2  usage error, unreadable or malformed input, or any other error\n",
          f);
}

int main(int argc, char **argv)
{
    size_t i;
    const char *name;
    if (argc < 2) {
        usage(stderr);
        return INSPECT_EXIT_ERROR;
    }
    name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        /* "sync-inspect help decode" is "sync-inspect decode --help". */
        if (strcmp(name, "help") == 0 && argc > 2) {
            char *sub[3] = {argv[2], (char *)"--help", NULL};
            for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
                if (strcmp(argv[2], commands[i].name) == 0)
                    return commands[i].run(2, sub);
            return inspect_usage_err(NULL, "unknown command '%s'", argv[2]);
        }
        usage(stdout);
        return fflush(stdout) == 0 ? INSPECT_EXIT_OK : INSPECT_EXIT_ERROR;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("sync-inspect %s\n", KNIT_VERSION_STRING);
        return fflush(stdout) == 0 ? INSPECT_EXIT_OK : INSPECT_EXIT_ERROR;
    }
    for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    if (name[0] == '-')
        return inspect_usage_err(NULL, "unknown option '%s'", name);
    return inspect_usage_err(NULL, "unknown command '%s'", name);
}
