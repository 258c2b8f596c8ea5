/* image.c: the image registry (a small array, name -> root directory). */
#include "image.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sandgate/common.h"

const char *const sg_image_host_top[] = {"/usr",   "/bin",   "/sbin",   "/lib",
                                         "/lib32", "/lib64", "/libx32", NULL};

/* Name service, dynamic linker, TLS roots, time zone and shell defaults: what ordinary
 * programs read. Never shadow/gshadow, ssh keys, sudoers, machine-id or credentials. */
const char *const sg_image_host_etc[] = {"passwd",
                                         "group",
                                         "hosts",
                                         "resolv.conf",
                                         "nsswitch.conf",
                                         "host.conf",
                                         "gai.conf",
                                         "ld.so.cache",
                                         "ld.so.conf",
                                         "ld.so.conf.d",
                                         "alternatives",
                                         "ssl",
                                         "ca-certificates",
                                         "ca-certificates.conf",
                                         "pki",
                                         "localtime",
                                         "timezone",
                                         "protocols",
                                         "services",
                                         "mime.types",
                                         "os-release",
                                         "lsb-release",
                                         "debian_version",
                                         "profile",
                                         "bash.bashrc",
                                         "inputrc",
                                         "terminfo",
                                         "magic",
                                         NULL};

struct sg_image_registry {
    sg_image_t *v;
    size_t n;
};

static void image_set(sg_image_registry_t *r, const char *name, size_t name_len, const char *root,
                      int host)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strlen(r->v[i].name) == name_len && memcmp(r->v[i].name, name, name_len) == 0) {
            free(r->v[i].root);
            r->v[i].root = sg_xstrdup(root);
            r->v[i].host = host;
            return;
        }
    }
    r->v = sg_xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
    r->v[r->n].name = sg_xstrndup(name, name_len);
    r->v[r->n].root = sg_xstrdup(root);
    r->v[r->n].host = host;
    r->n++;
}

sg_image_registry_t *sg_image_registry_new(void)
{
    sg_image_registry_t *r = sg_xcalloc(1, sizeof(*r));
    image_set(r, "host", 4, "/", 1);
    return r;
}

void sg_image_registry_free(sg_image_registry_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].name);
        free(r->v[i].root);
    }
    free(r->v);
    free(r);
}

int sg_image_registry_add(sg_image_registry_t *r, const char *spec, char *err, size_t errlen)
{
    const char *eq = spec ? strchr(spec, '=') : NULL;
    if (!eq || eq == spec || !eq[1]) {
        snprintf(err, errlen, "--image wants NAME=DIR or NAME=host, got '%s'", spec ? spec : "");
        return SG_EINVAL;
    }
    size_t nlen = (size_t)(eq - spec);
    if (nlen > 255) {
        snprintf(err, errlen, "--image: name longer than 255 bytes");
        return SG_EINVAL;
    }
    for (size_t i = 0; i < nlen; i++) {
        unsigned char c = (unsigned char)spec[i];
        if (c <= ' ' || c == 0x7f) {
            snprintf(err, errlen, "--image: name '%.*s' has a space or control character",
                     (int)nlen, spec);
            return SG_EINVAL;
        }
    }
    const char *dir = eq + 1;
    if (strcmp(dir, "host") == 0) {
        image_set(r, spec, nlen, "/", 1);
        return 0;
    }
    char real[PATH_MAX];
    struct stat st;
    if (dir[0] != '/' || !realpath(dir, real) || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "--image %.*s: '%s' is not an existing absolute directory", (int)nlen,
                 spec, dir);
        return SG_EINVAL;
    }
    if (strcmp(real, "/") == 0) {
        /* The whole host root would expose /root, /home and our data dir. */
        snprintf(err, errlen, "--image %.*s: '/' is not allowed; use NAME=host", (int)nlen, spec);
        return SG_EINVAL;
    }
    image_set(r, spec, nlen, real, 0);
    return 0;
}

const sg_image_t *sg_image_lookup(const sg_image_registry_t *r, const char *name)
{
    if (!r || !name) return NULL;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i].name, name) == 0) return &r->v[i];
    return NULL;
}
