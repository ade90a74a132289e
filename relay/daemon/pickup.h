/* Pickup of local submissions: watches spool maildrop/ (uv_fs_event plus a
 * periodic rescan as a safety net) and imports complete drop files in the
 * thread pool, so a large drop file never stalls the loop. */
#ifndef STSRELAY_PICKUP_H
#define STSRELAY_PICKUP_H

#include "relay/daemon/relay.h"

#define PICKUP_RESCAN_MS 5000
#define PICKUP_BATCH 100 /* imports per scan; a new scan takes the rest */

struct pickup;

/* Starts watching and schedules an immediate scan. r->queue and r->sched
 * must be set. */
int pickup_start(struct relay *r, struct pickup **out);
/* Asks for a scan soon (the control socket's "wake"). */
void pickup_wake(struct pickup *p);
/* Closes the handles and cancels a job not yet started; a running import
 * is waited for (the loop keeps running until it ends; its message is
 * logged, and scheduled at the next start). p is freed by whichever
 * callback comes last. */
void pickup_close(struct pickup *p);

#endif
