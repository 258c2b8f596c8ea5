/* runner.h: sandgate-execd's command engine (no HTTP in here).
 *
 * What it owns: every child process execd starts (POST /command, /session/{id}/run), their
 * pipes and timers, the per-command records behind /command/status and /command/{id}/logs,
 * the background log files, and the bash sessions. The HTTP layer turns the callbacks below
 * into OpenSandbox events (reference opensandbox-protocol.md 2.3-2.10).
 *
 * Processes. `bash -c <command>` (`sh -c` when PATH has no bash; cfg.shell overrides both) via
 * uv_spawn with UV_PROCESS_DETACHED, so each command is the leader of its own session and
 * process group (pgid = pid) and kill(-pid) reaches its grandchildren. stdin is /dev/null,
 * stdout/stderr are two pipes read as data arrives. libuv resets all signal dispositions to
 * SIG_DFL and empties the signal mask in the child; sg_runner_open sets SIGPIPE to SIG_IGN in
 * the agent (a dead HTTP peer must not kill it). uid/gid: libuv's setuid/setgid with
 * supplementary groups cleared; with uid but no gid the user's primary gid comes from the
 * passwd database (a blocking getpwuid_r, like Go's os/user), and an unknown uid is a start
 * error. The environment is the agent's environ, then cfg.extra_env, then req->envs, each
 * replacing same-named keys.
 *
 * Output, per command, through the callbacks (all optional, all on the loop thread):
 *   on_chunk  exactly the bytes read from a pipe, with the byte offset of the chunk in its
 *             stream and in the combined stream (both streams in read order). Concatenating
 *             the chunks of one stream reproduces the command's output byte for byte.
 *   on_line   OpenSandbox lines: split on '\n' and '\r', "\r\n" is one terminator even across
 *             reads, the terminator is not included, a blank line is the text "\n", and an
 *             unterminated tail is flushed at completion. Each stream has its own splitter;
 *             lines come out in read order. A line longer than cfg.max_line is emitted in pieces
 *             of at most max_line bytes (a terminator right after a piece ends it without an
 *             extra blank line), so memory per stream is bounded by max_line. A piece ends
 *             before a UTF-8 sequence the cut would split (up to 3 bytes move to the next
 *             piece). Text is raw bytes: escaping and U+FFFD for invalid UTF-8 (as Go's
 *             encoding/json does) are the HTTP layer's job.
 *   For one read, on_chunk comes first, then the lines it completed.
 *   on_done   exactly once, after the process exited AND both pipes hit EOF (C.4). If
 *             grandchildren keep the pipes open, completion waits at most cfg.eof_grace_ms
 *             after the shell's exit; the pipes then stay open and are drained into the log
 *             file only (no callbacks) until EOF, expiry or sg_runner_close, so a `server &`
 *             left behind does not die of SIGPIPE (as with Go's output files).
 *   Exit code: a normal exit N reports N with error "exit status N" (no error for 0); a death
 *   by signal reports exit_code -1 and term_signal = n, error "signal: killed" /
 *   "signal: terminated" / ... with Go's names. (The shell convention 128+n is the other
 *   common choice; sg_run_result_t carries term_signal so a caller can compute it.)
 *   Callbacks may call any sg_runner_* function except sg_runner_close.
 *   A consumer that cannot keep up holds the output (sg_runner_hold): the pipes stop being
 *   read and the child blocks on its writes, as behind a shell pipe.
 *
 * Timeout (req->timeout_ms, 0 = none): SIGKILL to the whole group; on_done has timed_out=1,
 * "signal: killed". Interrupt: SIGTERM to the group, SIGKILL after cfg.kill_grace_ms if the
 * leader is still alive; an interrupted or timed-out command's group gets a final SIGKILL at
 * completion so grandchildren do not outlive it.
 *
 * Signal (sg_runner_signal, the POST /command/{id}/signal extension): one kill(-pgid, n) to a
 * command still running, foreground or background, nothing else (no escalation, no final
 * SIGKILL: the command decides what the signal means). The record keeps the last signal sent
 * (status/result `signalled`); if the command dies of it, exit_code/term_signal/error come
 * from the wait status as for any signal death ("signal: terminated", ...).
 *
 * Records: one per command (foreground and background), in a table bounded by
 * cfg.max_records. Finished records expire cfg.record_ttl_ms after completion (one uv_timer_t
 * for all of them via sg_tlist, expiry order = finish order); when the table is full the oldest
 * finished record is evicted; with every record running, start fails with SG_ETOOBIG.
 * Expiry removes the log file.
 *
 * Log file (background commands, and foreground ones started with req->keep_log):
 * <cfg.log_dir>/<id>.output gets stdout+stderr bytes in read order,
 * capped at cfg.log_cap bytes: past the cap bytes are dropped and the record says
 * log_truncated (the first log_cap bytes stay, cursors never move backwards). Writes are
 * uv_fs_write with one write in flight and at most cfg.log_buf bytes waiting in memory; when
 * that buffer is full the engine stops reading the command's pipes (the child blocks on its
 * write) until the disk catches up. The file is opened synchronously at start (one open(2)).
 * sg_runner_log_read serves [cursor, end) from the file (uv_fs_read) plus the bytes not yet
 * written, so a reader never misses bytes that are only in memory. Byte k of the log is byte k
 * of the combined stream (on_chunk's combined_off) up to the cap. A foreground command's log
 * is written whatever its consumer does: a held consumer (sg_runner_hold) stops the pipes, so
 * nothing new reaches the log either, and log backpressure pauses the pipes as for background.
 * Which stream each log byte came from is kept as the list of offsets where the stream
 * switches (sg_runner_log_stream), at most cfg.log_index_max switches per command.
 * Followers: sg_runner_log_wait wakes a reader once when the log grows, the command completes,
 * the log fails or the record goes away; readers never slow the command down.
 *
 * Sessions (2.10): a session is an id, a directory and two state files in cfg.log_dir
 * (sg-sess-<id>.env holding `export -p`, sg-sess-<id>.cwd holding `pwd`). Each run is a
 * fresh `bash --noprofile --norc -c <script>` that merges stderr into stdout (exec 2>&1),
 * sources the env file, cds to the saved cwd (unless the run gives a cwd), evals the command
 * and, from an EXIT trap, rewrites both state files. So exported env and cwd persist, an
 * `unset` persists too (runs after the first start from an empty environment and rebuild it
 * from the file), and no markers ever appear in the output. All output is reported as
 * SG_RUN_STDOUT. One run at a time per session. Limits: a command that replaces the EXIT trap
 * or is killed by a signal does not save its state.
 *
 * Session runs have no record (status/logs know only command ids) and, like commands, keep
 * draining pipes a grandchild holds after completion, until EOF or close.
 *
 * Blocking calls on the loop thread, all single short syscalls: the log file open(2) at start,
 * unlink(2) at expiry, stat(2) of cwd and of PATH entries, getpwuid_r for uid without gid,
 * mkdir for session create, access(2) and unlink(2) of session state files. Log data never
 * goes through a blocking write or read.
 *
 * Lifecycle: sg_runner_open -> start/interrupt/signal/status/log_read/session_* ->
 * sg_runner_close(cb): SIGKILL to every group still alive (draining ones included), no more
 * per-command callbacks, pending log reads complete with SG_ECLOSED, the engine is freed
 * after cb returns and leaves no handle or request on the loop. Log and state files are left
 * on disk (only expiry and session delete remove files). */
#ifndef SANDGATE_EXECD_RUNNER_H
#define SANDGATE_EXECD_RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sandgate/common.h"

#define SG_RUN_ID_LEN  32 /* command ids: 32 lowercase hex chars */
#define SG_RUN_SID_LEN 36 /* session ids: 8-4-4-4-12 hex, like Go's uuid.String() */
#define SG_RUN_SIG_MAX 64 /* highest signal number Linux has (SIGRTMAX, _NSIG - 1) */

typedef struct sg_runner sg_runner_t;

typedef struct sg_runner_cfg {
    const char *log_dir;    /* background logs and session state; NULL = $TMPDIR or /tmp */
    const char *shell;      /* NULL = bash from PATH, else sh from PATH; else this path, run "-c" */
    size_t max_line;        /* 64 KiB */
    uint64_t log_cap;       /* 64 MiB, per command */
    size_t log_buf;         /* 256 KiB of log bytes waiting for the disk, per command */
    size_t log_index_max;   /* 16384 stream switches remembered per logged command */
    uint64_t eof_grace_ms;  /* 100: wait for pipe EOF after the shell exited */
    uint64_t kill_grace_ms; /* 3000: SIGTERM -> SIGKILL on interrupt */
    uint64_t record_ttl_ms; /* 1 h */
    size_t max_records;     /* 1024 */
    size_t max_sessions;    /* 256 */
    uint64_t session_timeout_ms; /* 24 h: default run timeout in a session */
    /* Merged over the agent's environ before a request's envs (the EXECD_ENVS file's
     * KEY=VALUE lines, parsed by the caller); copied by sg_runner_open. */
    const struct sg_run_env *extra_env;
    size_t n_extra_env;
} sg_runner_cfg_t;
/* Zero fields take the defaults above. */

typedef enum { SG_RUN_STDOUT = 1, SG_RUN_STDERR = 2 } sg_run_stream_t;

typedef struct sg_run_result {
    const char *id;      /* command id, or the session id for a session run */
    int exit_code;       /* N, or -1 for a signal death */
    int term_signal;     /* 0, or the signal that killed the process */
    const char *error;   /* "" for exit 0, "exit status N", "signal: killed", ... */
    int timed_out;       /* the timeout fired */
    int interrupted;     /* sg_runner_interrupt / session delete asked for it */
    int signalled;       /* last signal sg_runner_signal sent, 0 = none */
    uint64_t started_ns; /* wall clock (CLOCK_REALTIME), for RFC3339Nano */
    uint64_t finished_ns;
    uint64_t exec_ms; /* monotonic, start to completion */
} sg_run_result_t;

typedef struct sg_run_cbs {
    void (*on_chunk)(void *ud, sg_run_stream_t s, const char *data, size_t len, uint64_t stream_off,
                     uint64_t combined_off);
    void (*on_line)(void *ud, sg_run_stream_t s, const char *text, size_t len);
    void (*on_done)(void *ud, const sg_run_result_t *res);
    void *ud;
} sg_run_cbs_t;

typedef struct sg_run_env {
    const char *key;
    const char *value;
} sg_run_env_t;

typedef struct sg_run_req {
    const char *command; /* required, non-empty */
    const char *cwd;     /* NULL = the agent's cwd; must be an existing directory */
    int background;
    int keep_log;         /* foreground: also write the log file, as background does */
    uint64_t timeout_ms;  /* 0 = none */
    int has_uid, has_gid; /* gid requires uid */
    uint32_t uid, gid;
    const sg_run_env_t *envs;
    size_t n_envs;
} sg_run_req_t;

/* Errors come back as a negative code and a message meant for the HTTP response body. */
typedef struct sg_run_err {
    int code;
    char msg[512];
} sg_run_err_t;

int sg_runner_open(uv_loop_t *loop, const sg_runner_cfg_t *cfg, sg_runner_t **out);
void sg_runner_close(sg_runner_t *r, void (*cb)(void *ud), void *ud);

/* Starts a command; id_out gets its id (NUL-terminated).
 *  0            started; callbacks follow from the loop.
 *  SG_EINVAL    validation error, nothing created. msg e.g. "invalid request, validation error
 *               working directory does not exist: /x", "uid is required when gid is provided".
 *  SG_ETOOBIG   the record table is full of running commands.
 *  SG_ECLOSED   the engine is closing.
 *  other < 0 with id_out ""  the background log file could not be created ("error running
 *               commands open ...", Go's 500 RUNTIME_ERROR before any event); nothing created.
 *  other < 0 with id_out set  start failure (missing shell, bad uid, spawn error): a
 *               finished record exists (exit_code 255, error = msg, like Go's background
 *               start failure); msg is Go-like, e.g. "fork/exec /no/sh: no such file or
 *               directory" or `exec: "sh": executable file not found in $PATH`. No callbacks. */
int sg_runner_start(sg_runner_t *r, const sg_run_req_t *req, const sg_run_cbs_t *cbs,
                    char id_out[SG_RUN_ID_LEN + 1], sg_run_err_t *err);

/* DELETE /command?id=: SIGTERM then SIGKILL (commands), or kill the run and delete the session
 * (session ids). done (optional) is called once the command completed (after its on_done), or
 * before this returns for a session with no run in progress. Errors (no callback):
 *   SG_ENOTFOUND "error interruptting code context. no such session"
 *   SG_EINVAL    "error interruptting code context. command session <id> is not running" */
int sg_runner_interrupt(sg_runner_t *r, const char *id, void (*done)(void *ud), void *ud,
                        sg_run_err_t *err);
/* Drops every pending interrupt `done` registered with this ud (e.g. its HTTP request went
 * away). */
void sg_runner_forget(sg_runner_t *r, void *ud);

/* POST /command/{id}/signal: kill(-pgid, signo) for a running command (foreground or
 * background; session ids are not commands). Errors (nothing sent):
 *   SG_EINVAL    "invalid signal <n> (1..64)"
 *   SG_ENOTFOUND "command not found: <id>"
 *   UV_ESRCH     "command <id> is not running" (finished, or its whole group is gone)
 *   other < 0    kill(2)'s error, e.g. UV_EPERM. */
int sg_runner_signal(sg_runner_t *r, const char *id, int signo, sg_run_err_t *err);
/* A signal's number from "SIGTERM", "TERM", "term" (case-insensitive, SIG optional; Linux
 * names, SIGIOT/SIGPOLL aliases too) or a decimal "15" in 1..SG_RUN_SIG_MAX; SG_EINVAL for
 * anything else. */
int sg_runner_signum(const char *name);

/* Consumer backpressure (a slow HTTP client): hold = 1 stops reading the pipes of every running
 * command (or session run) whose callbacks carry ud, hold = 0 resumes. The child then blocks on
 * its pipe writes, as with a shell pipe, and nothing is lost. Combined with the log backpressure:
 * the pipes are read only when neither wants a pause. Callbacks already under way finish, so up
 * to one read (64 KiB) per pipe can still arrive after a hold. While held: timeouts, interrupt
 * and signals still reach the group; a command that exits with data in its pipes completes
 * (on_done) once the reader drained it, except that the hold no longer applies once an
 * interrupted or timed-out command's leader exited (its group is dead; what is left in the
 * pipes is read at once, so completion and a waiting interrupt are not delayed by the reader).
 * The EOF grace after the shell's exit only ends while the pipes are read, so a grandchild that
 * keeps writing delays completion for as long as the consumer holds at each grace expiry (no
 * byte the shell wrote is cut off). The hold ends with completion. A consumer that goes away
 * must release its hold (or the command blocks until its timeout). Returns the number of
 * commands affected (0: none running with that ud, nothing to do). */
int sg_runner_hold(sg_runner_t *r, void *ud, int hold);

typedef struct sg_run_status {
    char id[SG_RUN_ID_LEN + 1];
    const char *content; /* command text; valid until control returns to the loop */
    int running;
    int background;
    int has_exit; /* exit_code and error are meaningful */
    int exit_code;
    int term_signal;
    int signalled;                    /* last signal sg_runner_signal sent, 0 = none */
    const char *error;                /* "" when none; same lifetime as content */
    uint64_t started_ns, finished_ns; /* finished_ns 0 while running */
    uint64_t log_size;                /* bytes accepted into the log */
    int log_truncated;                /* the cap dropped bytes */
    int has_log;                      /* background, or foreground with keep_log */
    int log_failed;                   /* a write failed: the log stops at log_size */
    int start_failed;                 /* never ran: error is the start error */
    uint64_t exec_ms;                 /* as on_done's, once finished */
} sg_run_status_t;

/* GET /command/status/{id}. SG_ENOTFOUND "command not found: <id>". */
int sg_runner_status(sg_runner_t *r, const char *id, sg_run_status_t *out, sg_run_err_t *err);

/* GET /command/{id}/logs?cursor=N: up to max bytes from byte offset cursor. cb is called once
 * from the loop (never from inside this call) with the bytes and the next cursor (cursor + len;
 * a cursor at or past the end gives len 0 and echoes the cursor). A short answer just means
 * "ask again". Errors (no callback): SG_ENOTFOUND "command not found: <id>", SG_EINVAL
 * "command <id> is not running in background" (the command has no log). cb err: 0, SG_ECLOSED
 * (engine closed), or a uv read error. */
typedef void (*sg_run_log_cb)(void *ud, int err, const char *data, size_t len,
                              uint64_t next_cursor);
int sg_runner_log_read(sg_runner_t *r, const char *id, uint64_t cursor, size_t max,
                       sg_run_log_cb cb, void *ud, sg_run_err_t *err);
/* The stream log byte `off` came from and its offset in that stream; *run_end is the log
 * offset where the stream next switches (UINT64_MAX: not known yet). Returns 0, 1 when it is
 * not known (no byte logged yet, or past cfg.log_index_max switches), SG_ENOTFOUND. */
int sg_runner_log_stream(sg_runner_t *r, const char *id, uint64_t off, sg_run_stream_t *st,
                         uint64_t *stream_off, uint64_t *run_end);
/* Following a log: returns 1 if there is something to do now (log_size > have, or the command
 * completed), else 0 and cb(ud) is called once from the loop when the log grows, the command
 * completes, the log fails or the record goes away (never after sg_runner_close). Errors:
 * SG_ENOTFOUND, SG_EINVAL (no log). sg_runner_log_unwait drops every wait registered with ud. */
int sg_runner_log_wait(sg_runner_t *r, const char *id, uint64_t have, void (*cb)(void *ud),
                       void *ud, sg_run_err_t *err);
void sg_runner_log_unwait(sg_runner_t *r, void *ud);

/* A line splitter with the engine's rules (on_line above), one per stream, for readers that
 * rebuild line events from log bytes. */
typedef void (*sg_run_line_fn)(void *ud, sg_run_stream_t s, const char *text, size_t len);
typedef struct sg_run_split sg_run_split_t;
sg_run_split_t *sg_run_split_new(size_t max_line, sg_run_line_fn emit, void *ud);
void sg_run_split_feed(sg_run_split_t *p, sg_run_stream_t s, const char *data, size_t n);
void sg_run_split_flush(sg_run_split_t *p); /* emits unterminated tails */
void sg_run_split_free(sg_run_split_t *p);

/* Path of a command's log file ("" if none). */
const char *sg_runner_log_path(sg_runner_t *r, const char *id);

/* POST /session: cwd optional, created (mkdir -p) if missing. */
int sg_runner_session_create(sg_runner_t *r, const char *cwd, char sid_out[SG_RUN_SID_LEN + 1],
                             sg_run_err_t *err);
/* POST /session/{id}/run: timeout_ms 0 = cfg.session_timeout_ms. Output comes as SG_RUN_STDOUT
 * (stderr merged); on_done as for commands, res->id = the session id. Errors: SG_ENOTFOUND
 * "context not found", SG_EINVAL (empty command, bad cwd), UV_EBUSY "session <id> is busy",
 * other < 0 start failure (no callbacks). */
int sg_runner_session_run(sg_runner_t *r, const char *sid, const char *command, const char *cwd,
                          uint64_t timeout_ms, const sg_run_cbs_t *cbs, sg_run_err_t *err);
/* DELETE /session/{id}: SIGKILL to a current run (its on_done still comes) and removes the
 * state files. SG_ENOTFOUND "session <id> not found". */
int sg_runner_session_delete(sg_runner_t *r, const char *sid, sg_run_err_t *err);

/* Counters for /metrics and tests. */
typedef struct sg_runner_stats {
    size_t live;    /* command objects alive: running, draining or closing */
    size_t records; /* entries in the record table */
    size_t sessions;
    uint64_t read_pauses;      /* times a command's pipes were paused for log backpressure */
    uint64_t out_holds;        /* times a consumer held a command's output (sg_runner_hold) */
    uint64_t expired, evicted; /* records removed by TTL / by the table bound */
    uint64_t log_bytes;        /* bytes accepted into log files */
} sg_runner_stats_t;
void sg_runner_get_stats(const sg_runner_t *r, sg_runner_stats_t *out);

/* Go's text for a signal ("killed", "terminated", ...). */
const char *sg_runner_signame(int sig);

#endif
