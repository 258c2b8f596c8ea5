/* api_parse.c: validation of what clients send to the lifecycle API, as the reference server
 * judges it: schema errors (wrong JSON types, missing fields, timeout < 60, pageSize > 200)
 * are FastAPI's 422 `{"detail":[...]}`; semantic ones are 400 `{"code","message"}` with the
 * reference's codes. No I/O here: everything is unit-tested directly. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "sandgate/common.h"

void sg_api_err_init(sg_api_err_t *e)
{
    memset(e, 0, sizeof(*e));
}

void sg_api_err_free(sg_api_err_t *e)
{
    json_decref(e->detail);
    e->detail = NULL;
}

void sg_api_err_set(sg_api_err_t *e, int status, const char *code, const char *fmt, ...)
{
    if (e->status) return;
    e->status = status;
    snprintf(e->code, sizeof(e->code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

void sg_api_err_422(sg_api_err_t *e, const char *type, json_t *loc, const char *msg, json_t *input)
{
    if (!e->detail) e->detail = json_array();
    json_t *item = json_object();
    json_object_set_new(item, "type", json_string(type));
    json_object_set_new(item, "loc", loc);
    json_object_set_new(item, "msg", json_string(msg));
    json_object_set_new(item, "input", input ? input : json_null());
    json_array_append_new(e->detail, item);
}

int sg_api_err_status(const sg_api_err_t *e)
{
    if (e->detail && json_array_size(e->detail)) return 422;
    return e->status;
}

json_t *sg_api_err_json(const sg_api_err_t *e)
{
    if (e->detail && json_array_size(e->detail)) return json_pack("{s:O}", "detail", e->detail);
    return json_pack("{s:s,s:s}", "code", e->code[0] ? e->code : "GENERAL::UNKNOWN_ERROR",
                     "message", e->message[0] ? e->message : "An unexpected error occurred.");
}

/* --- resource quantities */

/* A non-negative decimal with an optional fraction, scaled by 10^scale; the rest in *end. */
static int decimal(const char *s, int scale, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    int any = 0, frac = -1;
    const char *p = s;
    for (; *p; p++) {
        if (*p == '.' && frac < 0) {
            frac = 0;
            continue;
        }
        if (!isdigit((unsigned char)*p)) break;
        any = 1;
        if (frac >= 0) {
            if (frac >= scale) continue; /* finer than the unit: dropped */
            frac++;
        }
        if (v > (UINT64_MAX - 9) / 10) return SG_EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (!any) return SG_EINVAL;
    for (int i = frac < 0 ? 0 : frac; i < scale; i++) {
        if (v > UINT64_MAX / 10) return SG_EINVAL;
        v *= 10;
    }
    *out = v;
    *end = p;
    return 0;
}

int sg_api_parse_cpu(const char *s, uint64_t *millis)
{
    const char *end;
    uint64_t v;
    if (s[strspn(s, "0123456789")] == 'm' && s[0] != 'm') {
        if (decimal(s, 0, &v, &end) < 0 || strcmp(end, "m") != 0) return SG_EINVAL;
    } else if (decimal(s, 3, &v, &end) < 0 || *end) {
        return SG_EINVAL;
    }
    if (v == 0) return SG_EINVAL;
    *millis = v;
    return 0;
}

int sg_api_parse_memory(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"B", 1},
        {"Ki", 1ull << 10},
        {"Mi", 1ull << 20},
        {"Gi", 1ull << 30},
        {"Ti", 1ull << 40},
        {"K", 1000ull},
        {"M", 1000000ull},
        {"G", 1000000000ull},
        {"T", 1000000000000ull},
        /* docker's lowercase units are binary */
        {"k", 1ull << 10},
        {"m", 1ull << 20},
        {"g", 1ull << 30},
        {"t", 1ull << 40},
    };
    const char *end;
    uint64_t v;
    /* Fractions to three places ("1.5Gi"), computed in thousandths. */
    if (decimal(s, 3, &v, &end) < 0) return SG_EINVAL;
    for (size_t i = 0; i < SG_ARRAY_SIZE(units); i++) {
        if (strcmp(end, units[i].suffix) != 0) continue;
        if (v > UINT64_MAX / units[i].mul) return SG_EINVAL;
        uint64_t b = v * units[i].mul / 1000;
        if (b == 0) return SG_EINVAL;
        *bytes = b;
        return 0;
    }
    return SG_EINVAL;
}

/* --- create request */

static json_t *loc1(const char *a)
{
    return json_pack("[s,s]", "body", a);
}

static json_t *loc2(const char *a, const char *b)
{
    return json_pack("[s,s,s]", "body", a, b);
}

static const char *type_msg(const char *type)
{
    if (strcmp(type, "string_type") == 0) return "Input should be a valid string";
    if (strcmp(type, "int_type") == 0) return "Input should be a valid integer";
    if (strcmp(type, "bool_type") == 0) return "Input should be a valid boolean";
    if (strcmp(type, "dict_type") == 0) return "Input should be a valid dictionary";
    if (strcmp(type, "list_type") == 0) return "Input should be a valid list";
    if (strcmp(type, "model_type") == 0)
        return "Input should be a valid dictionary or object to extract fields from";
    return "Input is not valid";
}

static void bad_type(sg_api_err_t *e, const char *type, json_t *loc, const json_t *v)
{
    sg_api_err_422(e, type, loc, type_msg(type), json_incref((json_t *)v));
}

/* A map of string values (nulls allowed when nulls != 0). Returns the object or NULL. */
static json_t *string_map(const json_t *body, const char *key, int nulls, sg_api_err_t *e)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_object(v)) {
        bad_type(e, "dict_type", loc1(key), v);
        return NULL;
    }
    const char *k;
    json_t *m;
    int ok = 1;
    json_object_foreach(v, k, m)
    {
        if (json_is_string(m) || (nulls && json_is_null(m))) continue;
        bad_type(e, "string_type", loc2(key, k), m);
        ok = 0;
    }
    return ok ? v : NULL;
}

static int path_clean(const char *p)
{
    /* No "." / ".." components and no empty ones: the prefix check works on what it sees. */
    const char *s = p;
    while (*s) {
        while (*s == '/')
            s++;
        const char *c = s;
        while (*s && *s != '/')
            s++;
        size_t n = (size_t)(s - c);
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) return 0;
    }
    return strstr(p, "//") == NULL;
}

static int under_prefix(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    while (n > 1 && prefix[n - 1] == '/')
        n--;
    if (n == 1 && prefix[0] == '/') return 1;
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static int dns_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-') return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
            return 0;
    return 1;
}

static void parse_volumes(const json_t *body, const sg_api_config_t *cfg, sg_api_create_t *out,
                          sg_api_err_t *e)
{
    json_t *vols = json_object_get(body, "volumes");
    if (!vols || json_is_null(vols)) return;
    if (!json_is_array(vols)) {
        bad_type(e, "list_type", loc1("volumes"), vols);
        return;
    }
    size_t n = json_array_size(vols);
    if (n > 64) {
        sg_api_err_set(e, 400, "VOLUME::TOO_MANY_VOLUMES", "at most 64 volumes, got %zu", n);
        return;
    }
    out->volumes = sg_xcalloc(n ? n : 1, sizeof(sg_volume_t));
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(vols, i);
        json_t *loc = json_pack("[s,s,I]", "body", "volumes", (json_int_t)i);
        if (!json_is_object(v)) {
            bad_type(e, "model_type", loc, v);
            continue;
        }
        static const char *const strs[] = {"name", "mountPath"};
        const char *sv[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            json_t *f = json_object_get(v, strs[k]);
            json_t *l = json_deep_copy(loc);
            json_array_append_new(l, json_string(strs[k]));
            if (!f)
                sg_api_err_422(e, "missing", l, "Field required", json_incref(v));
            else if (!json_is_string(f))
                bad_type(e, "string_type", l, f);
            else {
                sv[k] = json_string_value(f);
                json_decref(l);
            }
        }
        json_t *ro = json_object_get(v, "readOnly"), *sub = json_object_get(v, "subPath");
        if (ro && !json_is_null(ro) && !json_is_boolean(ro)) {
            json_t *l = json_deep_copy(loc);
            json_array_append_new(l, json_string("readOnly"));
            bad_type(e, "bool_type", l, ro);
        }
        if (sub && !json_is_null(sub) && !json_is_string(sub)) {
            json_t *l = json_deep_copy(loc);
            json_array_append_new(l, json_string("subPath"));
            bad_type(e, "string_type", l, sub);
            sub = NULL;
        }
        json_t *host = json_object_get(v, "host");
        int backends = 0;
        static const char *const kinds[] = {"host", "pvc", "ossfs"};
        for (int k = 0; k < 3; k++) {
            json_t *b = json_object_get(v, kinds[k]);
            if (b && !json_is_null(b)) backends++;
        }
        json_decref(loc);
        if (!sv[0] || !sv[1]) continue;
        if (!dns_label(sv[0])) {
            sg_api_err_set(e, 400, "VOLUME::INVALID_VOLUME_NAME",
                           "volume name '%s' must be a DNS label (1..63 of [a-z0-9-])", sv[0]);
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (out->volumes[j].name && strcmp(out->volumes[j].name, sv[0]) == 0)
                sg_api_err_set(e, 400, "VOLUME::DUPLICATE_VOLUME_NAME",
                               "volume name '%s' is used twice", sv[0]);
        if (sv[1][0] != '/' || !path_clean(sv[1])) {
            sg_api_err_set(e, 400, "VOLUME::INVALID_MOUNT_PATH",
                           "volume '%s': mountPath '%s' must be an absolute path without . or ..",
                           sv[0], sv[1]);
            continue;
        }
        const char *subp = sub && json_is_string(sub) ? json_string_value(sub) : NULL;
        if (subp && (subp[0] == '/' || !path_clean(subp))) {
            sg_api_err_set(e, 400, "VOLUME::INVALID_SUB_PATH",
                           "volume '%s': subPath '%s' must be a relative path without . or ..",
                           sv[0], subp);
            continue;
        }
        if (backends != 1) {
            sg_api_err_set(e, 400, "VOLUME::INVALID_VOLUME_BACKEND",
                           "volume '%s' needs exactly one of host, pvc or ossfs", sv[0]);
            continue;
        }
        if (!host || json_is_null(host)) {
            sg_api_err_set(e, 400, "VOLUME::UNSUPPORTED_VOLUME_BACKEND",
                           "volume '%s': only host volumes are supported", sv[0]);
            continue;
        }
        json_t *hp = json_is_object(host) ? json_object_get(host, "path") : NULL;
        if (!hp || !json_is_string(hp)) {
            sg_api_err_422(
                e, hp ? "string_type" : "missing",
                json_pack("[s,s,I,s,s]", "body", "volumes", (json_int_t)i, "host", "path"),
                hp ? type_msg("string_type") : "Field required", json_incref(hp ? hp : host));
            continue;
        }
        const char *path = json_string_value(hp);
        if (path[0] != '/' || !path_clean(path)) {
            sg_api_err_set(e, 400, "VOLUME::INVALID_HOST_PATH",
                           "volume '%s': host path '%s' must be an absolute path without . or ..",
                           sv[0], path);
            continue;
        }
        int allowed = 0;
        for (size_t j = 0; j < cfg->n_host_prefixes; j++)
            if (under_prefix(path, cfg->host_prefixes[j])) allowed = 1;
        if (!allowed) {
            sg_api_err_set(e, 400, "VOLUME::HOST_PATH_NOT_ALLOWED",
                           "volume '%s': host path '%s' is not under an allowed prefix "
                           "(--allow-host-volumes)",
                           sv[0], path);
            continue;
        }
        sg_volume_t *vol = &out->volumes[out->n_volumes++];
        vol->name = sv[0];
        vol->mount_path = sv[1];
        vol->host_path = path;
        vol->sub_path = subp;
        vol->read_only = ro && json_is_true(ro);
    }
}

static void parse_resources(const json_t *body, sg_api_create_t *out, sg_api_err_t *e)
{
    json_t *rl = json_object_get(body, "resourceLimits");
    if (!rl) {
        sg_api_err_422(e, "missing", loc1("resourceLimits"), "Field required",
                       json_incref((json_t *)body));
        return;
    }
    json_t *m = string_map(body, "resourceLimits", 0, e);
    if (!m) {
        if (json_is_null(rl)) bad_type(e, "dict_type", loc1("resourceLimits"), rl);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        const char *s = json_string_value(v);
        if (strcmp(k, "cpu") == 0) {
            if (sg_api_parse_cpu(s, &out->cpu_millis) < 0)
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "resourceLimits.cpu '%s' is not a CPU quantity (\"500m\", \"2\")",
                               s);
        } else if (strcmp(k, "memory") == 0) {
            if (sg_api_parse_memory(s, &out->memory_bytes) < 0)
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "resourceLimits.memory '%s' is not a memory quantity (\"512Mi\", "
                               "\"2Gi\")",
                               s);
        } else if (strcmp(k, "pids") == 0) {
            char *end;
            errno = 0;
            unsigned long long p = strtoull(s, &end, 10);
            if (!*s || *end || errno || p == 0 || !isdigit((unsigned char)s[0]))
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "resourceLimits.pids '%s' is not a positive integer", s);
            else
                out->pids = p;
        } else if (strcmp(k, "gpu") == 0 || strcmp(k, "nvidia.com/gpu") == 0) {
            if (strcmp(s, "0") != 0)
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "resourceLimits.%s: GPUs are not supported by this server", k);
        }
        /* Other keys (ephemeral-storage, ...) are accepted and not enforced. */
    }
}

static void parse_network(const json_t *body, sg_api_create_t *out, sg_api_err_t *e)
{
    json_t *np = json_object_get(body, "networkPolicy");
    json_t *cp = json_object_get(body, "credentialProxy");
    if (cp && !json_is_null(cp)) {
        json_t *en = json_is_object(cp) ? json_object_get(cp, "enabled") : NULL;
        if (!json_is_object(cp))
            bad_type(e, "model_type", loc1("credentialProxy"), cp);
        else if (en && !json_is_boolean(en))
            bad_type(e, "bool_type", loc2("credentialProxy", "enabled"), en);
        else if (en && json_is_true(en)) {
            if (!np || json_is_null(np))
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "credentialProxy.enabled requires networkPolicy");
            else
                sg_api_err_set(e, 400, "SANDBOX::API_NOT_SUPPORTED",
                               "credentialProxy is not supported by this server");
        }
    }
    if (!np || json_is_null(np)) return;
    if (!json_is_object(np)) {
        bad_type(e, "model_type", loc1("networkPolicy"), np);
        return;
    }
    json_t *da = json_object_get(np, "defaultAction");
    const char *action = "deny";
    if (da && !json_is_null(da)) {
        if (!json_is_string(da) || (strcmp(json_string_value(da), "allow") != 0 &&
                                    strcmp(json_string_value(da), "deny") != 0)) {
            sg_api_err_422(e, "literal_error", loc2("networkPolicy", "defaultAction"),
                           "Input should be 'allow' or 'deny'", json_incref(da));
            return;
        }
        action = json_string_value(da);
    }
    json_t *eg = json_object_get(np, "egress");
    if (eg && !json_is_null(eg)) {
        if (!json_is_array(eg)) {
            bad_type(e, "list_type", loc2("networkPolicy", "egress"), eg);
            return;
        }
        if (json_array_size(eg))
            sg_api_err_set(e, 400, "SANDBOX::API_NOT_SUPPORTED",
                           "networkPolicy.egress rules are not supported: use defaultAction "
                           "allow (host network) or deny (no network)");
    }
    out->network_allow = strcmp(action, "allow") == 0;
}

void sg_api_create_free(sg_api_create_t *c)
{
    json_decref(c->env);
    free(c->volumes);
    memset(c, 0, sizeof(*c));
}

int sg_api_parse_create(const json_t *body, const sg_api_config_t *cfg, sg_api_create_t *out,
                        sg_api_err_t *e)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(body)) {
        sg_api_err_422(e, "model_attributes_type", json_pack("[s]", "body"), type_msg("model_type"),
                       json_incref((json_t *)body));
        return 422;
    }

    /* image xor snapshotId (blank snapshotId = absent) */
    json_t *image = json_object_get(body, "image");
    json_t *snap = json_object_get(body, "snapshotId");
    int has_image = image && !json_is_null(image);
    int has_snap = 0;
    if (snap && !json_is_null(snap)) {
        if (!json_is_string(snap))
            bad_type(e, "string_type", loc1("snapshotId"), snap);
        else
            has_snap =
                strspn(json_string_value(snap), " \t\r\n") != strlen(json_string_value(snap));
    }
    if (has_image == has_snap) {
        sg_api_err_422(e, "value_error", json_pack("[s]", "body"),
                       has_image ? "Value error, exactly one of image or snapshotId may be set"
                                 : "Value error, one of image or snapshotId is required",
                       json_incref((json_t *)body));
    } else if (has_snap) {
        sg_api_err_set(e, 400, "SANDBOX::API_NOT_SUPPORTED",
                       "snapshots are not supported by this server");
    }
    if (has_image) {
        if (!json_is_object(image)) {
            bad_type(e, "model_type", loc1("image"), image);
        } else {
            json_t *uri = json_object_get(image, "uri");
            if (!uri)
                sg_api_err_422(e, "missing", loc2("image", "uri"), "Field required",
                               json_incref(image));
            else if (!json_is_string(uri))
                bad_type(e, "string_type", loc2("image", "uri"), uri);
            else if (!*json_string_value(uri))
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER", "image.uri must not be empty");
            else
                out->image = json_string_value(uri);
            json_t *auth = json_object_get(image, "auth");
            if (auth && !json_is_null(auth) && !json_is_object(auth))
                bad_type(e, "model_type", loc2("image", "auth"), auth);
        }
    }

    json_t *ep = json_object_get(body, "entrypoint");
    if (!ep || json_is_null(ep)) {
        if (has_image)
            sg_api_err_422(e, "value_error", json_pack("[s]", "body"),
                           "Value error, entrypoint is required when image is set",
                           json_incref((json_t *)body));
    } else if (!json_is_array(ep)) {
        bad_type(e, "list_type", loc1("entrypoint"), ep);
    } else {
        size_t i;
        json_t *a;
        int ok = 1;
        json_array_foreach(ep, i, a)
        {
            if (json_is_string(a)) continue;
            bad_type(e, "string_type", json_pack("[s,s,I]", "body", "entrypoint", (json_int_t)i),
                     a);
            ok = 0;
        }
        if (ok && json_array_size(ep) == 0)
            sg_api_err_set(e, 400, "SANDBOX::INVALID_ENTRYPOINT",
                           "entrypoint must name a program (an empty list was given)");
        else if (ok && json_string_length(json_array_get(ep, 0)) == 0)
            sg_api_err_set(e, 400, "SANDBOX::INVALID_ENTRYPOINT",
                           "entrypoint[0] must name a program (it is empty)");
        if (ok) out->entrypoint = ep;
    }

    json_t *to = json_object_get(body, "timeout");
    if (to && !json_is_null(to)) {
        double d = json_is_real(to) ? json_real_value(to) : 0;
        int integral = json_is_integer(to) ||
                       (json_is_real(to) && d == (double)(int64_t)d && d > -9e15 && d < 9e15);
        if (!integral) {
            sg_api_err_422(e, "int_type", loc1("timeout"), type_msg("int_type"), json_incref(to));
        } else {
            int64_t t = json_is_integer(to) ? (int64_t)json_integer_value(to) : (int64_t)d;
            if (t < 60) {
                json_t *loc = loc1("timeout");
                sg_api_err_422(e, "greater_than_equal", loc,
                               "Input should be greater than or equal to 60", json_incref(to));
                json_object_set_new(json_array_get(e->detail, json_array_size(e->detail) - 1),
                                    "ctx", json_pack("{s:i}", "ge", 60));
            } else if (cfg->max_timeout_s && (uint64_t)t > cfg->max_timeout_s) {
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "timeout %lld s exceeds the server's maximum of %llu s",
                               (long long)t, (unsigned long long)cfg->max_timeout_s);
            } else if (t > 10LL * 365 * 86400) {
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "timeout %lld s is more than ten years", (long long)t);
            } else {
                out->timeout_s = t;
            }
        }
    }

    parse_resources(body, out, e);

    json_t *env = string_map(body, "env", 1, e);
    out->env = json_object();
    if (env) {
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v)
        {
            if (!*k || strchr(k, '=')) {
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "env name '%s' must be non-empty and contain no '='", k);
                continue;
            }
            if (json_is_string(v)) json_object_set(out->env, k, v);
        }
    }

    json_t *meta = string_map(body, "metadata", 0, e);
    if (meta) {
        const char *k;
        json_t *v;
        char msg[256];
        json_object_foreach(meta, k, v)
        {
            if (sg_sbx_label_check(k, json_string_value(v), msg, sizeof(msg)) < 0)
                sg_api_err_set(e, 400, "INVALID_METADATA_LABEL", "%s", msg);
        }
        out->metadata = meta;
    }

    json_t *plat = json_object_get(body, "platform");
    if (plat && !json_is_null(plat)) {
        if (!json_is_object(plat)) {
            bad_type(e, "model_type", loc1("platform"), plat);
        } else {
            static const char *const fields[2][3] = {{"os", "linux", "windows"},
                                                     {"arch", "amd64", "arm64"}};
            int ok = 1;
            for (int i = 0; i < 2; i++) {
                json_t *f = json_object_get(plat, fields[i][0]);
                const char *s = json_is_string(f) ? json_string_value(f) : NULL;
                if (!f) {
                    sg_api_err_422(e, "missing", loc2("platform", fields[i][0]), "Field required",
                                   json_incref(plat));
                    ok = 0;
                } else if (!s || (strcmp(s, fields[i][1]) != 0 && strcmp(s, fields[i][2]) != 0)) {
                    char m[96];
                    snprintf(m, sizeof(m), "Input should be '%s' or '%s'", fields[i][1],
                             fields[i][2]);
                    sg_api_err_422(e, "literal_error", loc2("platform", fields[i][0]), m,
                                   json_incref(f));
                    ok = 0;
                }
            }
            if (ok && strcmp(json_string_value(json_object_get(plat, "os")), "linux") != 0)
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "platform.os 'windows' is not supported: sandboxes run Linux");
            if (ok) out->platform = plat;
        }
    }

    json_t *sa = json_object_get(body, "secureAccess");
    if (sa && !json_is_null(sa) && !json_is_boolean(sa))
        bad_type(e, "bool_type", loc1("secureAccess"), sa);
    else if (sa && json_is_true(sa))
        sg_api_err_set(e, 400, "SANDBOX::API_NOT_SUPPORTED",
                       "secureAccess is only available behind a Kubernetes gateway");

    parse_network(body, out, e);
    parse_volumes(body, cfg, out, e);

    json_t *ext = string_map(body, "extensions", 0, e);
    if (ext) {
        json_t *r = json_object_get(ext, "access.renew.extend.seconds");
        if (r) {
            const char *s = json_string_value(r);
            char *end;
            errno = 0;
            long v = strtol(s, &end, 10);
            if (!*s || *end || errno || !isdigit((unsigned char)s[0]) || v < 300 || v > 86400)
                sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER",
                               "extensions['access.renew.extend.seconds'] must be an integer in "
                               "300..86400, got '%s'",
                               s);
        }
        if (json_object_get(ext, "poolRef"))
            sg_api_err_set(e, 400, "SANDBOX::UNSUPPORTED_POOL_REF",
                           "extensions.poolRef is only supported on Kubernetes");
    }

    int st = sg_api_err_status(e);
    if (st) sg_api_create_free(out);
    return st;
}

/* --- query strings */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes [p, end) into out (len bytes with the NUL); '+' -> ' ', bad escapes kept as is. */
static int url_decode(const char *p, const char *end, char *out, size_t len)
{
    size_t n = 0;
    while (p < end) {
        int c = (unsigned char)*p++;
        if (c == '+')
            c = ' ';
        else if (c == '%' && end - p >= 2 && hexval(p[0]) >= 0 && hexval(p[1]) >= 0) {
            c = hexval(p[0]) * 16 + hexval(p[1]);
            p += 2;
        }
        if (n + 1 >= len) return SG_ETOOBIG;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

int sg_api_query_next(const char **q, char *name, size_t nlen, char *value, size_t vlen)
{
    const char *p = *q;
    while (*p == '&')
        p++;
    if (!*p) {
        *q = p;
        return 0;
    }
    const char *end = strchr(p, '&');
    if (!end) end = p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    *q = end;
    int r = url_decode(p, eq ? eq : end, name, nlen);
    if (r == 0) r = url_decode(eq ? eq + 1 : end, end, value, vlen);
    return r < 0 ? r : 1;
}

/* urllib.parse.parse_qsl(v, keep_blank_values=True, strict_parsing=True) into an object. */
static int parse_qsl_strict(const char *v, json_t *out)
{
    const char *p = v;
    for (;;) {
        const char *end = strchr(p, '&');
        if (!end) end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq) return SG_EINVAL; /* "bad query field" (also empty fields) */
        char k[256], val[256];
        if (url_decode(p, eq, k, sizeof(k)) < 0 || url_decode(eq + 1, end, val, sizeof(val)) < 0)
            return SG_EINVAL;
        json_object_set_new(out, k, json_string(val));
        if (!*end) return 0;
        p = end + 1;
    }
}

static void int_param(sg_api_err_t *e, const char *name, const char *v, int64_t lo, int64_t hi,
                      int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    const char *s = v;
    while (*s == ' ')
        s++;
    if (!*s || *end || errno) {
        sg_api_err_422(e, "int_parsing", json_pack("[s,s]", "query", name),
                       "Input should be a valid integer, unable to parse string as an integer",
                       json_string(v));
        return;
    }
    if (x < lo || x > hi) {
        char msg[96];
        snprintf(msg, sizeof(msg), "Input should be %s %lld",
                 x < lo ? "greater than or equal to" : "less than or equal to",
                 (long long)(x < lo ? lo : hi));
        sg_api_err_422(e, x < lo ? "greater_than_equal" : "less_than_equal",
                       json_pack("[s,s]", "query", name), msg, json_string(v));
        json_object_set_new(
            json_array_get(e->detail, json_array_size(e->detail) - 1), "ctx",
            json_pack("{s:I}", x < lo ? "ge" : "le", (json_int_t)(x < lo ? lo : hi)));
        return;
    }
    *out = x;
}

int sg_api_parse_list_query(const char *query, sg_sbx_filter_t *f, sg_api_err_t *e)
{
    memset(f, 0, sizeof(*f));
    f->page = 1;
    f->page_size = 20;
    char name[64], value[2048];
    const char *q = query;
    int r;
    while ((r = sg_api_query_next(&q, name, sizeof(name), value, sizeof(value))) != 0) {
        if (r < 0) {
            sg_api_err_set(e, 400, "SANDBOX::INVALID_PARAMETER", "a query parameter is too long");
            break;
        }
        if (strcmp(name, "state") == 0) {
            int st = sg_sbx_state_parse(value);
            /* An unknown state matches nothing, as the reference's string compare. */
            f->states |= st >= 0 ? 1u << st : 1u << SG_SBX_NSTATES;
        } else if (strcmp(name, "metadata") == 0) {
            if (!*value) continue;
            json_t *m = json_object();
            if (parse_qsl_strict(value, m) < 0) {
                json_decref(m);
                sg_api_err_set(e, 400, "INVALID_METADATA_FORMAT",
                               "metadata filter must be k=v pairs joined by '&' (URL-encoded as "
                               "one parameter), got '%s'",
                               value);
                continue;
            }
            if (!f->metadata)
                f->metadata = m;
            else {
                json_object_update(f->metadata, m);
                json_decref(m);
            }
        } else if (strcmp(name, "page") == 0) {
            int_param(e, "page", value, 1, INT32_MAX, &f->page);
        } else if (strcmp(name, "pageSize") == 0) {
            int_param(e, "pageSize", value, 1, 200, &f->page_size);
        }
    }
    return sg_api_err_status(e);
}
