/* The control socket spool_dir/control (see relay/daemon/relay.h for the protocol):
 * lets `stsrelay queue ...` and sendmail talk to the running daemon; and
 * public/showq, the queue listing for users who cannot read the spool. */
#ifndef STSRELAY_CONTROL_H
#define STSRELAY_CONTROL_H

#include <stddef.h>

#include "relay/daemon/pickup.h"
#include "relay/daemon/relay.h"

#define CONTROL_REQUEST_MAX 256
#define CONTROL_TIMEOUT_MS 5000

struct control;

/* Binds spool_dir/control (mode 0600) and spool_dir/public/showq (0666, in
 * a 0755 directory; see relay/daemon/relay.h), replacing stale sockets: the caller
 * holds the spool lock. r->sched must be set; wake requests go to p. -1
 * with err when the control socket cannot be made; a failed showq socket is
 * logged and the rest runs. */
int control_start(struct relay *r, struct pickup *p, struct control **out, char *err,
		  size_t errlen);

/* Pure request handling, exposed for tests: executes one request line and
 * writes the reply line (without newline) into reply. */
void control_execute(struct relay *r, struct pickup *p, const char *req, char *reply,
		     size_t replylen);

/* Stops listening, removes both socket files, closes open connections; c
 * is freed once every handle is closed and every listing job is done. */
void control_close(struct control *c);

#endif
