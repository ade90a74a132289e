/* One connection to Redis on the libuv loop (hiredis and its libuv adapter):
 * never blocks, every step bounded by a timeout, reconnects by itself. */
#ifndef STSRELAY_NET_REDIS_H
#define STSRELAY_NET_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "relay/core/config.h"

/*
 * The host name of redis_url is resolved in the thread pool
 * (uv_getaddrinfo: /etc/hosts works), the connect is non-blocking and
 * tries its addresses in turn (up to 8, each with timeout_ms), and
 * the connection is "up" only after AUTH (when the URL has a password),
 * SELECT (db other than 0) and a PING were answered. A command gets
 * timeout_ms for its reply: Redis answers in order, so the oldest command
 * that waits longer means Redis is stuck or gone, and the connection is
 * dropped; every command waiting on it then gets a NULL reply. After a
 * failure the next try comes after 0.5 s, doubling to 30 s; one warning
 * per outage, one line when it is back. The gauge stsrelay_redis_up
 * follows the state.
 *
 * Ownership: the caller owns struct redis and frees it with redis_free.
 * A reply is hiredis's and valid only during the callback.
 */

#define REDIS_DEFAULT_TIMEOUT_MS 2000

struct redis;
struct redis_cmd;

/* reply NULL: the command did not complete (timeout, connection lost,
 * redis_free). A REDIS_REPLY_ERROR reply is Redis refusing the command. */
typedef void (*redis_cb)(void *arg, const redisReply *reply);

struct redis_config {
	const struct config_redis *url; /* copied */
	uint64_t timeout_ms;            /* connect and each reply; 0: REDIS_DEFAULT_TIMEOUT_MS */
	/* Called when the connection comes up (true) or goes down (false);
	 * may be NULL. It may send commands when up. */
	void (*on_state)(void *arg, bool up);
	void *arg;
};

/* Starts connecting (from the loop, not inside this call). 0 or -1 (no
 * memory). */
int redis_new(uv_loop_t *loop, const struct redis_config *cfg, struct redis **out);

/* True when commands can be sent (handshake done, not failed since). */
bool redis_up(const struct redis *r);

/* Sends one command, argv/argvlen as hiredis takes them (binary safe;
 * argvlen NULL: every argument is a C string, measured with strlen).
 * 0: cb runs exactly once, from the loop, never inside this call (*h, if
 * not NULL, is valid until then); -1: not up (or no memory), cb never runs. */
int redis_command(struct redis *r, redis_cb cb, void *arg, struct redis_cmd **h, int argc,
		  const char **argv, const size_t *argvlen);

/* The callback of a command still waiting will not run. */
void redis_cancel(struct redis_cmd *h);

/* Drops the connection: commands still waiting get their callbacks with
 * NULL before this returns (unless cancelled); handles close through the
 * loop (run it once more). NULL is fine. */
void redis_free(struct redis *r);

/* Helpers for replies: the integer of an INTEGER reply (or of a STRING of
 * digits) into *out: 0 or -1. */
int redis_reply_int(const redisReply *r, long long *out);

#endif
