/* config.h: table-driven command-line / environment options.
 *
 * A program describes its options once, as an array of sg_opt_t, each naming a field of its
 * config struct by offset; sg_config_parse() fills the struct and sg_config_help() prints
 * the table. Precedence: --flag > environment variable > default. Nothing is allocated: string
 * fields point into argv, the environment or the default literal, so they stay valid while
 * those do (the whole process, unless the program edits its environment).
 *
 * Types and their field types:
 *   SG_OPT_STRING    const char *  any text, including "" (NULL when no default)
 *   SG_OPT_INT       int64_t       decimal, optional sign
 *   SG_OPT_SIZE      uint64_t      bytes: "512", "64K", "16M", "1G", "2T" (also KB/KiB..., any
 *                                  case; multiples of 1024)
 *   SG_OPT_DURATION  uint64_t      milliseconds: "250ms", "30s", "5m", "1h", "1m30s"; a unit is
 *                                  required except for "0"
 *   SG_OPT_BOOL      bool          --name, --no-name, --name=true|false|1|0|yes|no|on|off
 *                                  (the same words in the environment)
 * min / max bound INT, SIZE (bytes) and DURATION (ms) inclusively; both 0 means unbounded,
 * max = SG_OPT_NO_MAX means a minimum only.
 *
 * Syntax: --name=value or --name value; "--" ends options; -h / --help anywhere makes
 * sg_config_parse() return SG_CONFIG_HELP (the caller prints help and exits 0). Errors name
 * their source and say what was wrong, e.g.
 *   unknown option '--lsten' (see --help)
 *   option '--listen' needs a value
 *   --port: 'abc' is not an integer
 *   SANDGATE_PORT: 70000 is out of range (1..65535)
 * and are written to err (errlen bytes). Every source is checked: a malformed environment
 * value is an error even when a flag overrides it, so a typo there cannot lie in wait. */
#ifndef SANDGATE_CONFIG_H
#define SANDGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sg_opt_type {
    SG_OPT_STRING,
    SG_OPT_INT,
    SG_OPT_SIZE,
    SG_OPT_DURATION,
    SG_OPT_BOOL,
} sg_opt_type_t;

typedef struct sg_opt {
    const char *name;    /* long flag without the dashes: "listen" */
    const char *env;     /* "SANDGATE_LISTEN", or NULL */
    sg_opt_type_t type;
    size_t offset;       /* offsetof(struct your_config, field) */
    const char *def;     /* default in flag syntax ("8080", "64M", "30s", "true"), or NULL */
    int64_t min, max;
    const char *metavar; /* name of the value in --help; NULL: by type */
    const char *help;
} sg_opt_t;

#define SG_CONFIG_HELP 1
/* max for an option with a minimum and no upper bound. */
#define SG_OPT_NO_MAX INT64_MAX

/* Applies defaults, then the environment, then argv[1..argc). Returns 0, SG_CONFIG_HELP, or
 * SG_EINVAL with the message in err. */
int sg_config_parse(const sg_opt_t *opts, size_t n, void *cfg, int argc, char **argv, char *err, size_t errlen);
/* The --help text (malloc'd): usage line, then every option with its env and default. */
char *sg_config_help(const sg_opt_t *opts, size_t n, const char *usage);

/* The value parsers, for callers with their own sources (0 or SG_EINVAL). */
int sg_config_parse_int(const char *s, int64_t *out);
int sg_config_parse_size(const char *s, uint64_t *out);
int sg_config_parse_duration(const char *s, uint64_t *ms);
int sg_config_parse_bool(const char *s, bool *out);

#endif
