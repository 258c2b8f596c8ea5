/* image.h: the image registry: which root filesystem an image name means.
 *
 * The local provider builds each sandbox's filesystem from an image. The built-in image `host`
 * exposes only what programs need from this host (/usr, /bin, /lib*, /sbin and a curated /etc
 * without secrets), read-only. `--image NAME=DIR` registers a root filesystem directory under a
 * name; `--image NAME=host` maps a name such as `ubuntu:22.04` to the host image. An image that
 * is not registered is not found: nothing is silently substituted.
 *
 * The registry owns copies of every string; it is built at startup and then read only. */
#ifndef SANDGATE_GATEWAY_IMAGE_H
#define SANDGATE_GATEWAY_IMAGE_H

#include <stddef.h>

typedef struct sg_image {
    char *name;
    char *root; /* absolute directory; "/" for the host image */
    int host;   /* 1: the curated host image (root "/", only the allowed entries) */
} sg_image_t;

typedef struct sg_image_registry sg_image_registry_t;

/* A registry holding the built-in `host` image. */
sg_image_registry_t *sg_image_registry_new(void);
void sg_image_registry_free(sg_image_registry_t *r);

/* Parses and adds one `NAME=DIR` or `NAME=host` spec. DIR must be an existing directory
 * (stored as its real path). Re-registering a name replaces it. 0 or SG_EINVAL with err. */
int sg_image_registry_add(sg_image_registry_t *r, const char *spec, char *err, size_t errlen);

/* NULL when the name is not registered. */
const sg_image_t *sg_image_lookup(const sg_image_registry_t *r, const char *name);

/* The host entries the `host` image exposes (NULL-terminated lists): top-level directories
 * (bound if present, recreated as symlinks where the host has symlinks, e.g. usr-merged /bin)
 * and the /etc entries that hold no secrets. */
extern const char *const sg_image_host_top[];
extern const char *const sg_image_host_etc[];

#endif
