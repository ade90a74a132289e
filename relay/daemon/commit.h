/* A message file's life off the loop thread: made ahead in the thread pool
 * (commit_take_writer), and once its DATA is in, made durable together with
 * the others of the same loop turn (one worker job, one directory fsync)
 * before any 250. */
#ifndef STSRELAY_COMMIT_H
#define STSRELAY_COMMIT_H

#include <uv.h>

#include "queue/queue.h"

struct commit;

/* Called on the loop thread once w is durable (status 0) or failed
 * (status -1; err_no holds the errno seen, 0 if unknown). The message is
 * then in queue/ only when status == 0. */
typedef void (*commit_done_cb)(void *arg, int status, int err_no);

int commit_new(uv_loop_t *loop, struct queue *q, struct commit **out);

/* Queues w for the next batch. Ownership of w stays with the caller, who
 * must not touch w until done runs; done runs exactly once, from a later
 * loop callback (never from inside commit_submit). -1: out of memory,
 * nothing queued, done will not run. */
int commit_submit(struct commit *c, struct queue_writer *w, commit_done_cb done, void *arg);

/* Waiting for a new message file (embedded in the waiter). */
struct commit_wait {
	struct commit_wait *next; /* the commit's list of waiters */
	/* From a loop callback: w is a new writer (the waiter's), or NULL with
	 * the errno of the failure to make one. */
	void (*ready)(struct commit_wait *wt, struct queue_writer *w, int err_no);
};

/* A new message's writer. Creating a file costs the file system an inode
 * allocation, at times hundreds of microseconds of kernel time (ext4
 * without a journal scans past recently deleted inodes), so files are made
 * in the thread pool: a few spare, and as many more as there are waiters.
 * 0: *out is a new writer, the caller's. 1: none is ready; wt is queued and
 * wt->ready runs later (from inside this call only if libuv refuses the
 * job, which it does for a NULL callback alone). wt must stay valid
 * until it has run or commit_cancel_wait() took it back. */
int commit_take_writer(struct commit *c, struct commit_wait *wt, struct queue_writer **out)
	__attribute__((warn_unused_result));
/* Takes wt out of the waiters; nothing if it is not waiting. */
void commit_cancel_wait(struct commit *c, struct commit_wait *wt);

/* Number of submissions not yet completed (pending + in flight). */
size_t commit_busy(const struct commit *c);

/* Closes the prepare handle and frees the spare writers (their nameless
 * files go with them); call once commit_busy() is 0 and nobody waits for a
 * writer. Frees c once the close and any job making files have ended. */
void commit_close(struct commit *c);

#endif
