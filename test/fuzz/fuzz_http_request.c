/* fuzz_http_request: arbitrary bytes through the same parsing and connection code real clients
 * hit. One server (unix socket) lives for the whole run; each input is written by a fresh
 * client connection that then half-closes and reads until the server closes. The input is
 * done when the client saw EOF and the server holds no connection: a hang here (a connection
 * the server never finishes) is a finding, caught by libFuzzer's -timeout.
 *
 * The handler exercises every body mode (stream, read_all, none) and both response kinds. */
#include "sandgate/common.h"
#include "sandgate/http_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uv_loop_t *loop;
static sg_http_server_t *srv;
static char sock_path[128];

typedef struct {
    uv_pipe_t pipe;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    char *data;
    size_t len;
    int done;
    char rbuf[65536];
} client_t;

static void echo_body(sg_http_req_t *req, const char *p, size_t n, void *ud)
{
    (void)ud;
    if (!p) sg_http_resp_end(req);
    else if (sg_http_resp_write_copy(req, p, n) == 1) sg_http_req_pause_body(req);
}

static void echo_drain(sg_http_req_t *req) { sg_http_req_resume_body(req); }
static void any_abort(sg_http_req_t *req) { sg_http_req_release(req); }

static void sink_body(sg_http_req_t *req, const char *p, size_t n, void *ud)
{
    (void)n;
    (void)ud;
    if (!p) sg_http_respond(req, 200, NULL, "ok", 2);
}

static void all_done(sg_http_req_t *req, int err, const char *b, size_t n, void *ud)
{
    (void)ud;
    if (err == SG_ETOOBIG) return;
    if (err < 0) sg_http_req_release(req);
    else sg_http_respond(req, 200, NULL, b, n);
}

static void handler(sg_http_req_t *req, void *data)
{
    (void)data;
    const char *p = sg_http_req_path(req);
    char v[16];
    sg_http_req_on_abort(req, any_abort);
    if (strncmp(p, "/echo", 5) == 0) {
        sg_http_req_on_drain(req, echo_drain);
        sg_http_resp_start(req, 200, NULL);
        sg_http_req_read_body(req, echo_body, NULL);
    } else if (strncmp(p, "/sink", 5) == 0) {
        sg_http_req_read_body(req, sink_body, NULL);
    } else if (strncmp(p, "/all", 4) == 0) {
        sg_http_req_read_all(req, 64, all_done, NULL);
    } else if (strncmp(p, "/stream", 7) == 0) {
        int n = sg_http_req_query_param(req, "n", v, sizeof(v)) > 0 ? atoi(v) % 100000 : 10;
        sg_http_resp_start(req, 200, NULL);
        for (int i = 0; i < n; i += 1000) sg_http_resp_write_copy(req, "0123456789", 10);
        sg_http_resp_end(req);
    } else if (strncmp(p, "/err", 4) == 0) {
        sg_http_respond_error(req, 422, "x", sg_http_req_query(req));
    } else {
        sg_http_respond(req, 200, NULL, sg_http_req_url(req), strlen(sg_http_req_url(req)));
    }
}

static void on_closed(uv_handle_t *h)
{
    client_t *c = h->data;
    c->done = 1;
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    client_t *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n < 0) uv_close((uv_handle_t *)s, on_closed);
}

static void on_shutdown(uv_shutdown_t *r, int status) { (void)r; (void)status; }
static void on_write(uv_write_t *r, int status) { (void)r; (void)status; }

static void on_connect(uv_connect_t *r, int status)
{
    client_t *c = r->data;
    if (status < 0) {
        uv_close((uv_handle_t *)&c->pipe, on_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    uv_buf_t b = uv_buf_init(c->data, (unsigned)c->len);
    if (c->len) uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, on_shutdown);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    loop = uv_default_loop();
    sg_http_server_config_t cfg;
    sg_http_server_config_init(&cfg);
    cfg.handler = handler;
    cfg.limits.max_header_bytes = 2048;
    cfg.limits.max_header_count = 16;
    cfg.limits.max_url_bytes = 512;
    cfg.limits.max_body_bytes = 100000;
    cfg.limits.write_high_water = 4096;
    cfg.limits.max_connections = 4;
    if (sg_http_server_new(loop, &cfg, &srv) < 0) abort();
    snprintf(sock_path, sizeof(sock_path), "unix:/tmp/sg-fuzz-http-%d.sock", (int)getpid());
    char err[256];
    if (sg_http_server_listen(srv, sock_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    client_t *c = calloc(1, sizeof(*c));
    c->data = malloc(size ? size : 1);
    memcpy(c->data, data, size);
    c->len = size;
    uv_pipe_init(loop, &c->pipe, 0);
    c->pipe.data = c;
    c->creq.data = c;
    uv_pipe_connect(&c->creq, &c->pipe, sock_path + 5, on_connect);
    while (!c->done || sg_http_server_connections(srv) != 0) uv_run(loop, UV_RUN_ONCE);
    free(c->data);
    free(c);
    return 0;
}
