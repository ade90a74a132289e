/* The daemon's daily TLS-RPT run: at tlsrpt_send_at UTC plus a per-day
 * spread of up to an hour, send the previous UTC day; retry for 24 hours; prune. */
#ifndef STSRELAY_TLSRPT_DAEMON_H
#define STSRELAY_TLSRPT_DAEMON_H

#include <stdint.h>

#include "relay/daemon/relay.h"

struct tlsrpt_daemon;

/* Starts the schedule on r->loop (own resolver and HTTPS client; report
 * mail goes to r->queue and is handed to r->sched with scheduler_add). A
 * day whose run was missed (daemon down) is sent at start-up if its 24-hour
 * window is still open; the sent ledger makes that safe after a restart.
 * Loads the DKIM key when dkim_* are all set, else logs an error: without
 * it no report mail is sent (mailto: ruas are skipped, RFC 8460 §3), https:
 * ruas still get reports. 0, or -1 (logged: bad DKIM key, no memory). */
int tlsrpt_daemon_start(struct relay *r, struct tlsrpt_daemon **out);

/* Sends day now (a control request, say); -1 if a run is in progress. */
int tlsrpt_daemon_send_now(struct tlsrpt_daemon *d, const char *day);

/* Stops: a run in progress is cancelled (its sent copies stay recorded),
 * handles are closed, then done(arg) runs and d is freed. NULL d: done at once. */
void tlsrpt_daemon_stop(struct tlsrpt_daemon *d, void (*done)(void *arg), void *arg);

/* Pure parts, for tests. When the run for the day starting at day_start is
 * due: the next day at send_at_min, plus a spread in [0, 3600) derived from
 * hostname and day (stable across restarts, different between relays). */
int64_t tlsrpt_due_time(int64_t day_start, unsigned send_at_min, const char *hostname);
/* Wait before retry number `failures` (1, 2, ...): 60 s doubling, at most 1 h. */
int64_t tlsrpt_retry_delay(unsigned failures);

#endif
