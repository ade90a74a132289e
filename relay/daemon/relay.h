/* The daemon's shared context: one libuv loop, the configuration, the
 * spool, and the delivery scheduler. Owned by relay/daemon/lifecycle.c. */
#ifndef STSRELAY_RELAY_H
#define STSRELAY_RELAY_H

#include <uv.h>

#include "queue/queue.h"
#include "relay/core/authfile.h"
#include "relay/core/config.h"

struct scheduler;
struct tlsrpt_daemon;
struct redis;
struct sts_shared;
struct sts_fleet;
struct tlsrpt_fleet;
struct tls_policy;

struct relay {
	uv_loop_t *loop;
	struct config cfg;
	struct tls_policy *tls_policy; /* cfg.tls_policy_file's table; NULL: none */
	char config_path[CONFIG_PATH_MAX];
	struct queue *queue;
	struct scheduler *sched;
	struct tlsrpt_daemon *tlsrpt; /* daily TLS-RPT run; NULL until started */
	/* The fleet (redis_url set; all NULL otherwise): the connection, the
	 * shared policy cache (sts_shared is its table for the MTA-STS
	 * engine) and the shared TLS-RPT counts and ledger. */
	struct redis *redis;
	struct sts_fleet *sts_fleet;
	const struct sts_shared *sts_shared;
	struct tlsrpt_fleet *tlsrpt_fleet;
	int stopping; /* SIGTERM seen: accept nothing new */
	/* relayhost_auth_file as read at start and at the last good SIGHUP
	 * (set = false without one); wiped at exit. */
	struct authfile_cred relayhost_auth;
};

/* Control socket (spool_dir/control, mode 0600): one request line, one reply
 * line. Requests: "flush", "flush ID", "delete ID", "bounce ID", "wake",
 * "queued ID" (a message put straight into queue/ by a command, e.g.
 * `tlsrpt send`: schedule it), "tlsrpt-send DAY" (the daily run, now).
 * Replies: "ok" or "error REASON". The queue commands use it when the daemon
 * runs and fall back to editing the spool when it does not. */
#define RELAY_CONTROL_SOCKET "control"

/* The public endpoint spool_dir/public/showq (directory 0755, socket 0666):
 * any local user may connect, send "list", and get the queue listing
 * (queue/listing.h, without submitter and client) followed by EOF, or
 * "error REASON". Nothing else is accepted there: it is how `mailq` works
 * for users who cannot read the spool, as Postfix's showq service. */
#define RELAY_PUBLIC_DIR "public"
#define RELAY_SHOWQ_SOCKET "public/showq"

/* The start of the reason in "error REASON" when the id names no queued
 * message; `stsrelay queue` turns it into exit code 67 (EX_NOUSER). */
#define RELAY_CONTROL_NO_SUCH "no such message"

/* The group that may create files in maildrop/ (Postfix's postdrop group):
 * the stsrelay binary is installed set-group-ID to it for `sendmail`. */
#define RELAY_DROP_GROUP "stsrelay-drop"

#endif
