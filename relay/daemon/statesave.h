/* Recipient-state persistence off the loop: state saves and removals asked for
 * during one loop turn run as one batch in the thread pool; done on the loop. */
#ifndef STSRELAY_STATESAVE_H
#define STSRELAY_STATESAVE_H

#include <stddef.h>
#include <uv.h>

#include "queue/backend.h"
#include "queue/queue.h"
#include "smtp/dsn.h"

/*
 * Each request is one save_state_nodirsync or remove_nodirsync of the
 * queue backend (queue/backend.h; on the spool queue_save_state_nodirsync()
 * and queue_remove_nodirsync()), run in a libuv worker; requests made in
 * the same loop turn share one worker job (the uv_prepare_t of
 * relay/daemon/commit.c), which ends with one sync of queue/ (on the spool
 * queue_sync_queue_dir()). The done
 * callback runs on the loop after that fsync (status 0: durable, exactly
 * as queue_save_state/queue_remove promise; a failed directory fsync fails
 * every request of the batch), exactly once, never from inside the
 * submitting call.
 *
 * The caller must never have two requests for the same id outstanding:
 * queue_save_state uses the fixed temp name tmp/ID.state, and a removal
 * racing a save could leave an orphan state file. relay/daemon/scheduler.c keeps
 * at most one per message and coalesces the rest.
 *
 * A batch may also hold DSNs (statesave_bounce): the worker commits them
 * first, then syncs queue/ once for all of them, and only then runs the
 * saves and removals. So a DSN is durable before any save submitted after
 * it (in its batch or a later one) is: a crash can repeat a bounce, never
 * lose one.
 */

struct statesave;

typedef void (*statesave_done_cb)(void *arg, int status, int err_no);
/* rc 1: the DSN new_id is queued and durable (or in doubt after a failed
 * directory sync, logged: it is in queue/ and will go out); 0: no DSN is
 * wanted (bounce_wanted()); -1: none was queued (logged). */
typedef void (*statesave_bounce_cb)(void *arg, int rc, const char *new_id);

/* On the spool q. */
int statesave_new(uv_loop_t *loop, struct queue *q, struct statesave **out);
/* On any queue backend (*qb is copied; its queue must outlive ss). */
int statesave_new_backend(uv_loop_t *loop, const struct queue_backend *qb, struct statesave **out);

/* Saves a snapshot of env's recipient states (copied now: env may change
 * right after). -1: out of memory, nothing queued, done will not run. */
int statesave_save(struct statesave *ss, const struct queue_envelope *env, statesave_done_cb done,
		   void *arg);
/* Removes message id and its state. -1 as above. */
int statesave_remove(struct statesave *ss, const char *id, statesave_done_cb done, void *arg);

/* Composes and queues the failure DSN for rcpts[0..n) of env (the
 * original headers read from env's data) with bounce_enqueue_nodirsync()
 * of relay/daemon/bounce.h, in the worker. env's header fields, rcpts and
 * hostname are copied now. -1 as above. */
int statesave_bounce(struct statesave *ss, const char *hostname, const struct queue_envelope *env,
		     const struct smtp_dsn_rcpt *rcpts, size_t n, statesave_bounce_cb done,
		     void *arg);

/* Requests not yet completed (waiting + running). */
size_t statesave_busy(const struct statesave *ss);

/* Closes the prepare handle; call when no batch is running (normally once
 * statesave_busy() is 0; requests still waiting are dropped without their
 * callback). Frees ss from the close callback. */
void statesave_close(struct statesave *ss);

#endif
