/* The delivery scheduler: knows every queued message's recipients and when
 * each is due, groups recipients by domain, and runs deliveries on the loop. */
#ifndef STSRELAY_SCHEDULER_H
#define STSRELAY_SCHEDULER_H

#include <stdbool.h>

#include "relay/daemon/relay.h"

/* Loads every committed message from the spool (after queue_recover). */
int scheduler_new(struct relay *r, struct scheduler **out);
/* A message was committed to the queue (by SMTP or a drop import). */
void scheduler_add(struct scheduler *s, const char *id);
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
