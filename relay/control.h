/* The control socket spool_dir/control (see relay/relay.h for the protocol):
 * lets `stsrelay queue ...` and sendmail talk to the running daemon. */
#ifndef STSRELAY_CONTROL_H
#define STSRELAY_CONTROL_H

#include <stddef.h>

#include "relay/pickup.h"
#include "relay/relay.h"

#define CONTROL_REQUEST_MAX 256
#define CONTROL_TIMEOUT_MS 5000

struct control;

/* Binds spool_dir/control (mode 0600, a stale socket is replaced) and
 * listens. r->sched must be set; wake requests go to p. -1 with err. */
int control_start(struct relay *r, struct pickup *p, struct control **out, char *err,
		  size_t errlen);

/* Pure request handling, exposed for tests: executes one request line and
 * writes the reply line (without newline) into reply. */
void control_execute(struct relay *r, struct pickup *p, const char *req, char *reply,
		     size_t replylen);

/* Stops listening, removes the socket file, closes open connections; c is
 * freed once every handle is closed. */
void control_close(struct control *c);

#endif
