/* Pickup of local submissions: watches spool maildrop/ (uv_fs_event plus a
 * periodic rescan as a safety net) and imports complete drop files. */
#ifndef STSRELAY_PICKUP_H
#define STSRELAY_PICKUP_H

#include "relay/relay.h"

#define PICKUP_RESCAN_MS 5000
#define PICKUP_BATCH 100          /* imports per loop turn; the rest follow */

struct pickup;

/* Starts watching and schedules an immediate scan. r->queue and r->sched
 * must be set. */
int pickup_start(struct relay *r, struct pickup **out);
/* Asks for a scan soon (the control socket's "wake"). */
void pickup_wake(struct pickup *p);
/* Closes the handles; p is freed from the last close callback. */
void pickup_close(struct pickup *p);

#endif
