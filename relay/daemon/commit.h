/* Group commit: messages that finished DATA during one loop turn are made
 * durable together (one worker job, one directory fsync) before any 250. */
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

/* Number of submissions not yet completed (pending + in flight). */
size_t commit_busy(const struct commit *c);

/* Closes the prepare handle; call once commit_busy() is 0. Frees c from
 * the close callback. */
void commit_close(struct commit *c);

#endif
