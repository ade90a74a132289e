/* The delivery scheduler: knows every queued message's recipients and when
 * each is due, groups recipients by domain, and runs deliveries on the loop. */
#ifndef STSRELAY_SCHEDULER_H
#define STSRELAY_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>

#include "queue/backend.h"
#include "relay/daemon/delivery.h"
#include "relay/daemon/relay.h"

/*
 * How the scheduler starts deliveries: relay/daemon/delivery.h in the
 * daemon (scheduler_delivery_smtp), a stub in the unit tests. start and
 * abort keep delivery_start()'s and delivery_abort()'s contract: done runs
 * exactly once per start that returned 0, later, from the loop (never
 * inside start or abort), with one result per recipient in idx's order.
 */
struct scheduler_delivery {
	/* The context every other call gets, made once by scheduler_new*
	 * (arg is theirs). -1 with err. */
	int (*ctx_new)(struct relay *r, void *arg, void **ctx, char *err, size_t errlen);
	int (*start)(void *ctx, const struct queue_envelope *env, const char *domain,
		     const size_t *idx, size_t n, delivery_done_cb done, void *done_arg,
		     void **handle);
	void (*abort)(void *handle);
	/* Stopping: let idle connections go. */
	void (*close_idle)(void *ctx);
	/* No delivery runs any more (see delivery_ctx_free). */
	void (*ctx_free)(void *ctx);
};

extern const struct scheduler_delivery scheduler_delivery_smtp;

/* Loads every committed message from the spool r->queue (after
 * queue_recover) and delivers through relay/daemon/delivery.h. */
int scheduler_new(struct relay *r, struct scheduler **out);
/* The same over any queue backend (*qb is copied; its queue must outlive
 * the scheduler) and delivery starter (dv_arg goes to dv->ctx_new). The
 * scheduler reads r->loop and r->cfg, never r->queue. On -1, *out may
 * still be set: stop, run the loop, free (as for scheduler_new). */
int scheduler_new_with(struct relay *r, const struct queue_backend *qb,
		       const struct scheduler_delivery *dv, void *dv_arg, struct scheduler **out);
/* A message was committed to the queue (by SMTP or a drop import). */
void scheduler_add(struct scheduler *s, const char *id);
/* The wall clock moved (clock_fake_set_ms() in tests): the next pass is
 * timed against it again. */
void scheduler_clock_moved(struct scheduler *s);
/* True when id is a message the scheduler holds (queued, not deleted). */
bool scheduler_knows(struct scheduler *s, const char *id);
/* Retry now: one message, or every deferred one with id == NULL. 0 / -1 (unknown id). */
int scheduler_flush(struct scheduler *s, const char *id);
/* Delete without notice / bounce to the sender now. 0 / -1 (unknown id). */
int scheduler_delete(struct scheduler *s, const char *id);
int scheduler_bounce(struct scheduler *s, const char *id);
/* For the metrics gauges: messages held, and their recipients not yet
 * final by status (pending: not tried yet or in a delivery now; deferred:
 * waiting for a retry). Walks every recipient: per scrape, not per event. */
void scheduler_counts(const struct scheduler *s, size_t *messages, size_t *pending,
		      size_t *deferred);
/* Graceful stop: start nothing new, let in-flight deliveries finish or
 * requeue them (bounded by a timeout), then call done. */
void scheduler_stop(struct scheduler *s, void (*done)(void *arg), void *arg);
/* After the loop has stopped. */
void scheduler_free(struct scheduler *s);

#endif
