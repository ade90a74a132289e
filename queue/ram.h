/* An in-memory queue behind queue/backend.h, for the scheduler's unit tests
 * and benchmark: the spool's header and state formats, kept in memory. */
#ifndef STSRELAY_QUEUE_RAM_H
#define STSRELAY_QUEUE_RAM_H

#include <stddef.h>

#include "queue/backend.h"

/*
 * Each message is its encoded header (queue_header_encode), its data and
 * its encoded state (queue_state_encode, none until the first save), so a
 * load gives what the spool would give for the same history. Nothing is
 * durable and sync does nothing, but every change is written down in a
 * journal, in order, for tests to read; faults can be injected per
 * operation. Ids look like the spool's (8 hex digits of clock_now(), then
 * 4 more: a counter here) and rise, so they sort by age.
 * Thread-safe (one mutex): the thread pool and the loop may use it at once.
 */

#define QUEUE_RAM_MAX 1000000       /* messages held at most */
#define QUEUE_RAM_JOURNAL_MAX 65536 /* journal bytes kept (the first ones) */

struct queue_ram;

/* -1 (ENOMEM) or 0. */
int queue_ram_new(struct queue_ram **out) __attribute__((warn_unused_result));
/* Frees every message; no user of its backend may be left. NULL is fine. */
void queue_ram_free(struct queue_ram *r);
struct queue_backend queue_ram_backend(struct queue_ram *r);

/* Messages held now. */
size_t queue_ram_count(struct queue_ram *r);

/* The changes so far, one line each: "add ID", "save ID", "remove ID",
 * "sync", a failed one with " failed: REASON" appended (strerror). Copied
 * into buf with a NUL (cut at len - 1); returns the journal's length. */
size_t queue_ram_journal(struct queue_ram *r, char *buf, size_t len);

enum queue_ram_op {
	QUEUE_RAM_ADD,
	QUEUE_RAM_SAVE,   /* save_state and save_state_nodirsync */
	QUEUE_RAM_REMOVE, /* remove and remove_nodirsync */
	QUEUE_RAM_SYNC,
	QUEUE_RAM_NOPS
};

/* The next `count` calls of op fail with err_no, changing nothing. */
void queue_ram_fail(struct queue_ram *r, enum queue_ram_op op, int err_no, unsigned count);

#endif
