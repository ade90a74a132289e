/* The queue as the delivery scheduler sees it: a table of operations (as
 * OpenSMTPD's struct queue_backend) over the spool on disk or an in-memory queue. */
#ifndef STSRELAY_QUEUE_BACKEND_H
#define STSRELAY_QUEUE_BACKEND_H

#include <stddef.h>
#include <sys/types.h>

#include "queue/queue.h"

/*
 * Two implementations: the spool (queue_backend_spool() below, over the
 * functions of queue.h, the daemon's) and queue/ram.h (messages in memory,
 * for the scheduler's unit tests and benchmark). relay/daemon/scheduler.c,
 * relay/daemon/statesave.c and relay/daemon/bounce.c reach the queue
 * through this table only; the listener, pickup and delivery keep using
 * the spool directly.
 *
 * Every operation has the contract of the queue.h function it is named
 * after, return convention and errno included: 0 (or a count), or -1 with
 * errno set by the step that failed. The four batch operations
 * (add_nodirsync, save_state_nodirsync, remove_nodirsync, sync) and
 * read_data (for a DSN's copy of the headers) run in the thread pool
 * (relay/daemon/statesave.c) while the loop may call the others for other
 * ids: an implementation must allow that.
 */
struct queue_backend_ops {
	/* queue_scan: sorted ids of the committed messages, malloc'd. */
	int (*scan)(void *q, char (**ids)[QUEUE_ID_LEN + 1], size_t *n);
	/* queue_load: envelope and recipient states (env is filled, or zeroed
	 * on -1 with err). */
	int (*load)(void *q, const char *id, struct queue_envelope *env, char *err, size_t errlen);
	/* Up to len bytes from the start of the message's data: the count
	 * read (short only at the end of the data or on a read error), or -1
	 * when the data cannot be opened. */
	ssize_t (*read_data)(void *q, const struct queue_envelope *env, void *buf, size_t len);
	/* A whole new message (env's header fields and recipients, all
	 * pending; env->id is ignored), committed and durable on return as
	 * by queue_writer_commit_sync(): 0 with new_id, -1 with errno. */
	int (*add)(void *q, const struct queue_envelope *env, const void *data, size_t len,
		   char new_id[QUEUE_ID_LEN + 1]);
	/* The same, the file fsync'd and renamed into the queue but queue/
	 * not synced (queue_writer_commit()): durable after the next sync. */
	int (*add_nodirsync)(void *q, const struct queue_envelope *env, const void *data,
			     size_t len, char new_id[QUEUE_ID_LEN + 1]);
	int (*save_state)(void *q, const struct queue_envelope *env);
	int (*remove)(void *q, const char *id);
	int (*save_state_nodirsync)(void *q, const struct queue_envelope *env);
	int (*remove_nodirsync)(void *q, const char *id);
	/* queue_sync_queue_dir: makes the batch forms above durable. */
	int (*sync)(void *q);
};

struct queue_backend {
	const struct queue_backend_ops *ops;
	void *q; /* the first argument of every operation; not owned */
};

/* The spool q (opened by the caller, who closes it after every user of the
 * backend is gone). */
struct queue_backend queue_backend_spool(struct queue *q);

#endif
