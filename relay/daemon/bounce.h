/* Bounces: a DSN (RFC 3464, composed by smtp/dsn.h) about failed recipients of
 * a queued message, queued itself with a null sender and no bounce of its own. */
#ifndef STSRELAY_BOUNCE_H
#define STSRELAY_BOUNCE_H

#include <stddef.h>

#include "queue/backend.h"
#include "queue/queue.h"
#include "smtp/dsn.h"

/* True when a failure of env may produce a DSN: never for a null sender
 * (a bounce) or a message flagged QUEUE_F_NOBOUNCE (bounces, TLS-RPT
 * reports), so bounces can never loop. */
int bounce_wanted(const struct queue_envelope *env);

/* Composes the failure DSN for rcpts[0..n) of env (original headers read
 * from the queued message) and commits it durably (file + directory fsync)
 * to the queue as a new message from <> to env->sender with
 * QUEUE_F_NOBOUNCE. Blocking file I/O: runs on the caller's thread.
 * Returns 1 with new_id set, 0 when no DSN is wanted (see bounce_wanted),
 * -1 on failure (logged with env->id). bounce_enqueue works on the spool
 * q, bounce_enqueue_backend on any queue backend; bounce_enqueue_nodirsync
 * leaves the queue directory unsynced (the backend's add_nodirsync), for
 * a batch that syncs it once (relay/daemon/statesave.c). */
int bounce_enqueue(struct queue *q, const char *hostname, const struct queue_envelope *env,
		   const struct smtp_dsn_rcpt *rcpts, size_t n, char new_id[QUEUE_ID_LEN + 1]);
int bounce_enqueue_backend(const struct queue_backend *qb, const char *hostname,
			   const struct queue_envelope *env, const struct smtp_dsn_rcpt *rcpts,
			   size_t n, char new_id[QUEUE_ID_LEN + 1]);
int bounce_enqueue_nodirsync(const struct queue_backend *qb, const char *hostname,
			     const struct queue_envelope *env, const struct smtp_dsn_rcpt *rcpts,
			     size_t n, char new_id[QUEUE_ID_LEN + 1]);

#endif
