/* http_common.c: header lists and status texts shared by the HTTP server and client. */
#include "sandgate/http.h"
#include "sandgate/common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sg_hdrs_init(sg_hdrs_t *h)
{
    memset(h, 0, sizeof(*h));
}

void sg_hdrs_reset(sg_hdrs_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
    }
    h->n = 0;
    h->bytes = 0;
}

void sg_hdrs_free(sg_hdrs_t *h)
{
    sg_hdrs_reset(h);
    free(h->v);
    h->v = NULL;
    h->cap = 0;
}

void sg_hdrs_add(sg_hdrs_t *h, const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->v = sg_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    h->v[h->n].name = sg_xstrndup(name, name_len);
    h->v[h->n].value = sg_xstrndup(value, value_len);
    h->n++;
    h->bytes += name_len + value_len;
}

void sg_hdrs_addz(sg_hdrs_t *h, const char *name, const char *value)
{
    sg_hdrs_add(h, name, strlen(name), value, strlen(value));
}

void sg_hdrs_del(sg_hdrs_t *h, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(h->v[i].name, name) == 0) {
            h->bytes -= strlen(h->v[i].name) + strlen(h->v[i].value);
            free(h->v[i].name);
            free(h->v[i].value);
            continue;
        }
        h->v[j++] = h->v[i];
    }
    h->n = j;
}

void sg_hdrs_set(sg_hdrs_t *h, const char *name, const char *value)
{
    sg_hdrs_del(h, name);
    sg_hdrs_addz(h, name, value);
}

const char *sg_hdrs_get(const sg_hdrs_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->v[i].name, name) == 0) return h->v[i].value;
    return NULL;
}

int sg_hdrs_has_token(const sg_hdrs_t *h, const char *name, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(h->v[i].name, name) != 0) continue;
        const char *p = h->v[i].value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',') p++;
            const char *start = p;
            while (*p && *p != ',') p++;
            const char *end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
            if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0) return 1;
        }
    }
    return 0;
}

const char *sg_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
    }
}
