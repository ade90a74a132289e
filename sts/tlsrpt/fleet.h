/* TLS-RPT for a fleet of relays: each node's session counts merged into
 * Redis exactly once, the fleet's day read back, one sender per report copy. */
#ifndef STSRELAY_TLSRPT_FLEET_H
#define STSRELAY_TLSRPT_FLEET_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "relay/net/redis.h"
#include "sts/tlsrpt/send.h"
#include "sts/tlsrpt/tlsrpt.h"

/*
 * Every node keeps recording its sessions in its own spool (store.c): that
 * file is the truth and never waits for Redis. The merger adds what is new
 * in it to the fleet's sums, so Redis being down, slow or restarted only
 * delays the merge:
 *
 *   stsrelay:tlsrpt:DAY:counts:DOMAIN   hash: group key -> sessions (HINCRBY)
 *   stsrelay:tlsrpt:DAY:cursor:NODE     "INODE:OFFSET" of NODE's session file
 *                                       merged so far
 *   stsrelay:tlsrpt:DAY:nodes / merged  sets: nodes that recorded DAY / that
 *                                       merged all of it (the day is over;
 *                                       also a node without sessions that day)
 *   stsrelay:tlsrpt:seen                hash: node -> when its daemon last
 *                                       merged (every 2 s); a report waits
 *                                       for the nodes seen since its day began
 *   stsrelay:tlsrpt:DAY:domains         set of the policy domains
 *   stsrelay:tlsrpt:DAY:policy:HASH     a policy text the groups name
 *   stsrelay:tlsrpt:DAY:sent            set of "DOMAIN\tRUA" sent by any node
 *   stsrelay:tlsrpt:DAY:claim:DOMAIN\tRUA  the node sending that copy now
 *
 * Exactly once: a merge step reads the lines after the cursor (complete
 * lines only, at most 1 MiB, in the thread pool), sums them per group and
 * sends one script that applies the sums and moves the cursor only if the
 * cursor is still the one the step started from; else nothing is applied
 * and the step starts again from the cursor Redis has. A reply lost on the
 * way (timeout, Redis killed) is therefore harmless: the next step sees
 * the moved cursor, or the old one when Redis lost the write too (its
 * append-only file loses the sums and the cursor together). A Redis that
 * lost everything gets every node's whole day again, from offset 0.
 * All keys expire after tlsrpt_retention plus two days.
 *
 * The ledger (struct tlsrpt_ledger): a copy is MINE after a script found
 * it neither in the sent set nor claimed by another node, and claimed it
 * for 10 minutes; release adds it to the sent set (sent) and drops the claim.
 * Each node's own sent ledger (store.c) is added to the set whenever the
 * connection comes (back) up, so a copy sent while Redis was away is
 * known to the fleet before anyone could claim it again.
 */

struct tlsrpt_fleet;
struct tlsrpt_fleet_prep;

struct tlsrpt_fleet_config {
	uv_loop_t *loop;
	struct redis *redis; /* outlives the fleet */
	const char *spool_dir;
	const char *node;
	uint64_t retention_s;
	/* Merge the recent days in the background every 2 s (the daemon);
	 * without it (commands) a prepare merges the day it needs. */
	bool background;
};

int tlsrpt_fleet_new(const struct tlsrpt_fleet_config *cfg, struct tlsrpt_fleet **out);

/* The ledger for tlsrpt_job_env.ledger; valid while the fleet lives. */
const struct tlsrpt_ledger *tlsrpt_fleet_ledger(struct tlsrpt_fleet *f);

/* Redis connection up or down (the owner passes redis's on_state on):
 * after a reconnect every cursor is read again and the sent ledgers
 * pushed again. */
void tlsrpt_fleet_redis_state(struct tlsrpt_fleet *f, bool up);

enum tlsrpt_fleet_status {
	TLSRPT_FLEET_READY, /* d holds the fleet's sums of the day */
	TLSRPT_FLEET_WAIT,  /* nodes that recorded the day have not merged it all */
	TLSRPT_FLEET_DOWN,  /* Redis cannot be used now */
};

/* d: the fleet's day (the callee owns it) when READY, else NULL; why: the
 * reason otherwise (the nodes waited for, or what failed). */
typedef void (*tlsrpt_fleet_prep_cb)(void *arg, enum tlsrpt_fleet_status st, struct tlsrpt_day *d,
				     const char *why);

/* For a report of day: merges this node's records of the day now, then,
 * with wait_for_nodes, checks that every other node that recorded the day
 * or whose daemon was seen since it began merged all of it (a day not over
 * yet never is: pass false to report the sessions so far; a daemon merges
 * only today and the two days before), then reads the fleet's sums. cb runs exactly once,
 * from the loop, never inside this call (unless cancelled). 0 or -1. */
int tlsrpt_fleet_prepare(struct tlsrpt_fleet *f, const char *day, bool wait_for_nodes,
			 tlsrpt_fleet_prep_cb cb, void *arg, struct tlsrpt_fleet_prep **out);
void tlsrpt_fleet_prepare_cancel(struct tlsrpt_fleet_prep *p);

/* Stops merging; open prepares must have been cancelled or finished.
 * Handles close through the loop. NULL is fine. */
void tlsrpt_fleet_free(struct tlsrpt_fleet *f);

#endif
