/* The MTA-STS policy cache of a fleet: struct sts_shared over Redis, so a
 * policy is fetched once per fleet and id, and a failure is seen by all. */
#ifndef STSRELAY_STS_FLEET_H
#define STSRELAY_STS_FLEET_H

#include <stdint.h>

#include "relay/net/redis.h"
#include "sts/fetch.h"

/*
 * Keys (all with the prefix STS_FLEET_PREFIX):
 *   sts:policy:DOMAIN      the whole fetched policy in the policy cache's
 *                          file format (sts/cache.h: domain, id, fetched_at,
 *                          expires_at, the body), expiring with the policy;
 *   sts:lock:DOMAIN        NODE while that node fetches (SET NX PX: the fetch
 *                          timeout plus 5 s), so concurrent misses on several
 *                          nodes make one fetch;
 *   sts:fail:DOMAIN:ID     "TYPE\tDETAIL" of a failed fetch, for 5 minutes
 *                          (the negative cache of RFC 8461 §5.1 / DESIGN).
 *
 * acquire: GET the policy and the failure; a policy with the id, newer than
 * asked and not expired is a HIT; a failure is FAILED; else SET the lock:
 * taken -> look once more (the holder may have published and let go just
 * before), then FETCH; held by another node -> look again every 200 ms until
 * its policy or failure appears, or the lock is gone (that node died: try
 * to take it), or the lock time has passed (-> FETCH). Redis down, slow
 * (no reply within the client's timeout) or refusing: FETCH at once, so a
 * delivery never waits on the fleet longer than that timeout.
 * publish: SET the policy (or the failure) and drop the lock if it is ours,
 * in one script; fire and forget (Redis down: the next node fetches).
 */

#define STS_FLEET_PREFIX "stsrelay:"

struct sts_fleet;

/* redis must outlive the fleet; node is the name written into locks
 * (copied); fetch_timeout_ms is the fetcher's (sts_fetch_timeout). 0 or -1. */
int sts_fleet_new(uv_loop_t *loop, struct redis *redis, const char *node, uint64_t fetch_timeout_ms,
		  struct sts_fleet **out);

/* The table for sts_engine_config.shared; valid while the fleet lives. */
const struct sts_shared *sts_fleet_shared(struct sts_fleet *f);

/* Every acquire still open must have been cancelled (free the engine
 * first). Timers close through the loop. NULL is fine. */
void sts_fleet_free(struct sts_fleet *f);

#endif
