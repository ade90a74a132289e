/* The Redis connection: name lookup in the thread pool, hiredis's async
 * context on the loop, a handshake, reply timeouts and reconnects with backoff. */
#include "relay/net/redis.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/log.h"
#include "relay/core/metrics.h"

#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 30000
#define REDIS_ADDRS_MAX 8

enum rstate {
	R_IDLE,      /* waiting for the retry timer */
	R_RESOLVING, /* uv_getaddrinfo in the thread pool */
	R_CONNECTING,
	R_HANDSHAKE, /* AUTH / SELECT / PING sent */
	R_UP,
};

struct redis_cmd {
	struct redis *r;
	redis_cb cb; /* NULL: cancelled, or an internal step */
	void *arg;
	void (*step)(struct redis *r, const redisReply *reply); /* handshake */
	uint64_t deadline;                                      /* uv_now() */
	struct redis_cmd *next, **prevp;                        /* r->pending, oldest first */
};

struct redis {
	uv_loop_t *loop;
	struct config_redis url;
	uint64_t timeout_ms;
	void (*on_state)(void *arg, bool up);
	void *arg;
	enum rstate state;
	redisAsyncContext *ac;
	uv_getaddrinfo_t gai;
	bool gai_busy;
	uv_timer_t retry;   /* next connect attempt */
	uv_timer_t timeout; /* the oldest command's (or the connect's) deadline */
	unsigned timers_open;
	uint64_t backoff_ms;
	uint64_t connect_deadline;
	/* the name's addresses, tried in turn until one connects (a
	 * "localhost" that is ::1 first while the server listens on 127.0.0.1) */
	char addrs[REDIS_ADDRS_MAX][INET6_ADDRSTRLEN];
	unsigned naddrs, next_addr;
	bool warned; /* the outage was logged */
	bool closing;
	struct redis_cmd *pending, **pending_tail;
	char where[300]; /* "host:port" for logs */
};

static void on_retry(uv_timer_t *t);
static void arm_timeout(struct redis *r);
static void connect_next(struct redis *r);

bool redis_up(const struct redis *r)
{
	return r != NULL && r->state == R_UP;
}

int redis_reply_int(const redisReply *rp, long long *out)
{
	char *end;

	if (rp == NULL)
		return -1;
	if (rp->type == REDIS_REPLY_INTEGER) {
		*out = rp->integer;
		return 0;
	}
	if (rp->type != REDIS_REPLY_STRING || rp->len == 0 || rp->len > 19)
		return -1;
	*out = strtoll(rp->str, &end, 10);
	return end == rp->str + rp->len ? 0 : -1;
}

static void maybe_free(struct redis *r)
{
	if (r->closing && r->timers_open == 0 && !r->gai_busy)
		free(r);
}

static void set_state(struct redis *r, enum rstate st)
{
	bool was_up = r->state == R_UP;

	r->state = st;
	if (was_up == (st == R_UP))
		return;
	metrics_set(METRICS_REDIS_UP, NULL, st == R_UP ? 1 : 0);
	if (r->on_state != NULL && !r->closing)
		r->on_state(r->arg, st == R_UP);
}

static void schedule_retry(struct redis *r)
{
	if (r->closing)
		return;
	set_state(r, R_IDLE);
	uv_timer_start(&r->retry, on_retry, r->backoff_ms, 0);
	r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* One warning per outage; the retries meanwhile are debug lines. */
static void outage(struct redis *r, const char *what)
{
	if (!r->warned)
		log_warn("redis %s: %s; working from the local cache and counts until it is "
			 "back",
			 r->where, what);
	else
		log_debug("redis %s: %s", r->where, what);
	r->warned = true;
}

/* Drops the context: every waiting command gets a NULL reply (hiredis
 * runs them from redisAsyncFree); then a retry is scheduled. */
static void drop(struct redis *r, const char *why)
{
	redisAsyncContext *ac = r->ac;

	r->ac = NULL;
	if (why != NULL)
		outage(r, why);
	set_state(r, R_IDLE);
	if (ac != NULL) {
		ac->data = NULL; /* the disconnect callback must not touch r */
		redisAsyncFree(ac);
	}
	schedule_retry(r);
}

/* ---- commands ---- */

static void unlink_cmd(struct redis_cmd *c)
{
	struct redis *r = c->r;

	*c->prevp = c->next;
	if (c->next != NULL)
		c->next->prevp = c->prevp;
	else
		r->pending_tail = c->prevp;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct redis_cmd *c = privdata;
	struct redis *r = c->r;

	(void)ac;
	unlink_cmd(c);
	if (c->step != NULL) {
		if (!r->closing)
			c->step(r, reply);
	} else if (c->cb != NULL) {
		c->cb(c->arg, reply);
	}
	free(c);
	if (!r->closing)
		arm_timeout(r);
}

static struct redis_cmd *send_cmd(struct redis *r, int argc, const char **argv,
				  const size_t *argvlen)
{
	struct redis_cmd *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->r = r;
	c->deadline = uv_now(r->loop) + r->timeout_ms;
	if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, argvlen) != REDIS_OK) {
		free(c);
		return NULL;
	}
	c->prevp = r->pending_tail;
	*r->pending_tail = c;
	r->pending_tail = &c->next;
	if (c == r->pending)
		arm_timeout(r);
	return c;
}

int redis_command(struct redis *r, redis_cb cb, void *arg, struct redis_cmd **h, int argc,
		  const char **argv, const size_t *argvlen)
{
	struct redis_cmd *c;

	if (r == NULL || r->state != R_UP || r->ac == NULL)
		return -1;
	c = send_cmd(r, argc, argv, argvlen);
	if (c == NULL)
		return -1;
	c->cb = cb;
	c->arg = arg;
	if (h != NULL)
		*h = c;
	return 0;
}

void redis_cancel(struct redis_cmd *h)
{
	if (h != NULL)
		h->cb = NULL;
}

/* ---- timeouts ---- */

static void on_timeout(uv_timer_t *t)
{
	struct redis *r = t->data;
	char why[96];

	if (r->state == R_CONNECTING && r->next_addr < r->naddrs) {
		redisAsyncContext *ac = r->ac;

		/* this address does not answer: the next one has its own time */
		r->ac = NULL;
		set_state(r, R_IDLE);
		if (ac != NULL) {
			ac->data = NULL; /* the disconnect callback must not touch r */
			redisAsyncFree(ac);
		}
		connect_next(r);
		return;
	}
	if (r->state == R_CONNECTING) {
		snprintf(why, sizeof(why), "no connection within %llu ms",
			 (unsigned long long)r->timeout_ms);
		drop(r, why);
		return;
	}
	if (r->pending == NULL)
		return;
	if (uv_now(r->loop) < r->pending->deadline) {
		arm_timeout(r);
		return;
	}
	snprintf(why, sizeof(why), "no reply within %llu ms", (unsigned long long)r->timeout_ms);
	drop(r, why);
}

static void arm_timeout(struct redis *r)
{
	uint64_t now = uv_now(r->loop), at;

	if (r->state == R_CONNECTING)
		at = r->connect_deadline;
	else if (r->pending != NULL)
		at = r->pending->deadline;
	else {
		uv_timer_stop(&r->timeout);
		return;
	}
	uv_timer_start(&r->timeout, on_timeout, at > now ? at - now : 0, 0);
}

/* ---- connecting ---- */

static void handshake_step(struct redis *r, const redisReply *reply);

static int send_step(struct redis *r, int argc, const char **argv)
{
	struct redis_cmd *c = send_cmd(r, argc, argv, NULL);

	if (c == NULL)
		return -1;
	c->step = handshake_step;
	return 0;
}

/* Replies of AUTH, SELECT and PING, in that order; PING's ends it. */
static void handshake_step(struct redis *r, const redisReply *reply)
{
	char why[300];

	if (r->state != R_HANDSHAKE || r->ac == NULL)
		return;
	if (reply == NULL)
		return; /* the drop that caused it retries */
	if (reply->type == REDIS_REPLY_ERROR) {
		/* AUTH or SELECT refused: a configuration problem, said as an error */
		snprintf(why, sizeof(why), "refused the handshake: %.200s", reply->str);
		log_error("redis %s: %s (check redis_url)", r->where, why);
		r->warned = true;
		drop(r, NULL);
		return;
	}
	if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0) {
		log_info("redis %s: connected%s", r->where, r->warned ? " again" : "");
		r->warned = false;
		r->backoff_ms = BACKOFF_FIRST_MS;
		set_state(r, R_UP);
	}
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct redis *r = ac->data;
	char db[16];
	const char *argv[3];

	if (r == NULL)
		return;
	if (status != REDIS_OK) {
		char why[200];

		/* hiredis frees the context after this callback */
		snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
		r->ac = NULL;
		set_state(r, R_IDLE);
		if (r->next_addr < r->naddrs && !r->closing) {
			connect_next(r);
			return;
		}
		outage(r, why);
		schedule_retry(r);
		return;
	}
	set_state(r, R_HANDSHAKE);
	arm_timeout(r);
	if (r->url.password[0] != '\0') {
		argv[0] = "AUTH";
		if (r->url.user[0] != '\0') {
			argv[1] = r->url.user;
			argv[2] = r->url.password;
		} else {
			argv[1] = r->url.password;
		}
		if (send_step(r, r->url.user[0] != '\0' ? 3 : 2, argv) != 0)
			goto fail;
	}
	if (r->url.db != 0) {
		snprintf(db, sizeof(db), "%u", r->url.db);
		argv[0] = "SELECT";
		argv[1] = db;
		if (send_step(r, 2, argv) != 0)
			goto fail;
	}
	argv[0] = "PING";
	if (send_step(r, 1, argv) == 0)
		return;
fail:
	drop(r, "cannot send the handshake");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct redis *r = ac->data;

	(void)status;
	if (r == NULL)
		return; /* our own drop() */
	/* hiredis frees the context after this callback (pending commands
	 * already got NULL replies) */
	r->ac = NULL;
	outage(r, ac->errstr[0] != '\0' ? ac->errstr : "connection closed");
	schedule_retry(r);
}

/* Connects to the next resolved address (hiredis gets a numeric address, so
 * its own getaddrinfo does not block the loop). */
static void connect_next(struct redis *r)
{
	const char *ip = r->addrs[r->next_addr++];
	redisAsyncContext *ac;

	ac = redisAsyncConnect(ip, (int)r->url.port);
	if (ac == NULL || ac->err != 0 || redisLibuvAttach(ac, r->loop) != REDIS_OK) {
		char why[200];

		snprintf(why, sizeof(why), "cannot connect: %s",
			 ac != NULL ? ac->errstr : "no memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		set_state(r, R_IDLE);
		outage(r, why);
		schedule_retry(r);
		return;
	}
	ac->data = r;
	r->ac = ac;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	set_state(r, R_CONNECTING);
	r->connect_deadline = uv_now(r->loop) + r->timeout_ms;
	arm_timeout(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct redis *r = req->data;
	struct addrinfo *ai;

	r->gai_busy = false;
	if (r->closing) {
		uv_freeaddrinfo(res);
		maybe_free(r);
		return;
	}
	r->naddrs = r->next_addr = 0;
	for (ai = status == 0 ? res : NULL; ai != NULL && r->naddrs < REDIS_ADDRS_MAX;
	     ai = ai->ai_next) {
		char *ip = r->addrs[r->naddrs];

		if (ai->ai_family == AF_INET6 &&
		    uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, INET6_ADDRSTRLEN) ==
			    0)
			r->naddrs++;
		else if (ai->ai_family == AF_INET &&
			 uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip,
				     INET6_ADDRSTRLEN) == 0)
			r->naddrs++;
	}
	uv_freeaddrinfo(res);
	if (r->naddrs == 0) {
		char why[200];

		snprintf(why, sizeof(why), "cannot resolve the host: %s",
			 status != 0 ? uv_strerror(status) : "no address");
		set_state(r, R_IDLE);
		outage(r, why);
		schedule_retry(r);
		return;
	}
	connect_next(r);
}

static void start_connect(struct redis *r)
{
	struct addrinfo hints;
	char port[8];
	int rc;

	if (r->closing || r->state != R_IDLE)
		return;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", (unsigned)r->url.port);
	r->gai.data = r;
	set_state(r, R_RESOLVING);
	rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->url.host, port, &hints);
	if (rc != 0) {
		set_state(r, R_IDLE);
		outage(r, uv_strerror(rc));
		schedule_retry(r);
		return;
	}
	r->gai_busy = true;
}

static void on_retry(uv_timer_t *t)
{
	start_connect(t->data);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct redis *r = h->data;

	r->timers_open--;
	maybe_free(r);
}

int redis_new(uv_loop_t *loop, const struct redis_config *cfg, struct redis **out)
{
	struct redis *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return -1;
	r->loop = loop;
	r->url = *cfg->url;
	r->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : REDIS_DEFAULT_TIMEOUT_MS;
	r->on_state = cfg->on_state;
	r->arg = cfg->arg;
	r->backoff_ms = BACKOFF_FIRST_MS;
	r->pending_tail = &r->pending;
	snprintf(r->where, sizeof(r->where), "%s%s%s:%u", strchr(r->url.host, ':') ? "[" : "",
		 r->url.host, strchr(r->url.host, ':') ? "]" : "", (unsigned)r->url.port);
	if (uv_timer_init(loop, &r->retry) != 0) {
		free(r);
		return -1;
	}
	r->retry.data = r;
	r->timers_open++;
	if (uv_timer_init(loop, &r->timeout) != 0) {
		r->closing = true;
		uv_close((uv_handle_t *)&r->retry, on_timer_closed);
		return -1;
	}
	r->timeout.data = r;
	r->timers_open++;
	/* Neither timer keeps a loop alive by itself (a command's CLI run ends
	 * when its work is done, Redis or not). */
	uv_unref((uv_handle_t *)&r->retry);
	metrics_set(METRICS_REDIS_UP, NULL, 0);
	uv_timer_start(&r->retry, on_retry, 0, 0);
	*out = r;
	return 0;
}

void redis_free(struct redis *r)
{
	redisAsyncContext *ac;

	if (r == NULL || r->closing)
		return;
	r->closing = true;
	ac = r->ac;
	r->ac = NULL;
	r->state = R_IDLE;
	if (ac != NULL) {
		ac->data = NULL;
		redisAsyncFree(ac); /* waiting commands get NULL replies now */
	}
	if (r->gai_busy)
		uv_cancel((uv_req_t *)&r->gai);
	uv_close((uv_handle_t *)&r->retry, on_timer_closed);
	uv_close((uv_handle_t *)&r->timeout, on_timer_closed);
}
