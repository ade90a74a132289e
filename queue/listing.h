/* The queue listing (`queue list`, mailq, sendmail -bp): one JSON document
 * built from the spool, by the command itself or by the daemon for users who
 * cannot read the spool, and the Postfix-like table printed from it. */
#ifndef STSRELAY_LISTING_H
#define STSRELAY_LISTING_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "queue/queue.h"

#define LISTING_MAX (64 * 1024 * 1024) /* largest document a client accepts */

/* One message in the `queue list --json` shape: id, sender, size,
 * queued_at, recipients [address, status, attempts, next_try, last_error];
 * unless public, also submitter and client (who submitted it, from where),
 * which Postfix's mailq does not show to other users. NULL: out of memory. */
json_t *listing_message(const struct queue_envelope *env, bool public);

/* The whole listing: {"messages": [...], "maildrop": N} (N: drop files not
 * yet picked up; 0 when maildrop/ cannot be read), plus "errors": ["ID:
 * reason", ...] for queue files that could not be read (the rest is still
 * listed). Reads every queue file: blocking disk I/O, run it off the loop.
 * NULL with err when the queue cannot be listed at all (a message
 * delivered while the listing runs is simply left out). */
json_t *listing_build(struct queue *q, bool public, char *err, size_t errlen);

/* Prints doc (as listing_build makes it, possibly received from the daemon)
 * as the mailq table, or "Mail queue is empty". -1 when doc has not that
 * shape or the output fails. */
int listing_print_table(FILE *out, const json_t *doc);

#endif
