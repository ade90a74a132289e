/* The fleet's MTA-STS policy cache over Redis: a shared copy of each fetched
 * policy, a short lock so one node fetches, and the failures all nodes honour. */
#define LOG_COMPONENT LOG_C_SMTP /* program name in logs, see relay/core/log.h */
#include "sts/fleet.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/clock.h"
#include "relay/core/log.h"
#include "sts/cache.h"
#include "sts/engine.h"

#define POLL_MS 200
#define LOCK_EXTRA_MS 5000
#define KEY_MAX (STS_DOMAIN_MAX + STS_TXT_ID_MAX + 64)
#define FAIL_MAX (STS_DETAIL_MAX + 64)

/* The value, and the lock dropped only by its holder, in one step. */
static const char publish_lua[] =
	"redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
	"if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end\n"
	"return 1\n";

struct acq;

struct sts_fleet {
	uv_loop_t *loop;
	struct redis *redis;
	char node[64];
	uint64_t lock_ms;
	struct sts_shared table;
	struct acq *acqs;
};

struct acq {
	struct sts_fleet *f;
	char domain[STS_DOMAIN_MAX + 1];
	char id[STS_TXT_ID_MAX + 1];
	int64_t newer_than;
	sts_shared_cb cb;
	void *arg;
	struct redis_cmd *cmd;
	uv_timer_t timer;
	bool timer_open;
	uint64_t give_up_ms; /* 0 until the lock was first seen held by another */
	bool locked;         /* this node took the lock: one more look, then fetch */
	struct acq *next, **prevp;
};

static void key(char *out, size_t len, const char *kind, const char *domain, const char *id)
{
	snprintf(out, len, STS_FLEET_PREFIX "sts:%s:%s%s%s", kind, domain, id ? ":" : "",
		 id ? id : "");
}

static void acq_closed(uv_handle_t *h)
{
	free(h->data);
}

/* Unlinks and frees a (through the loop when its timer was opened). */
static void acq_free(struct acq *a)
{
	*a->prevp = a->next;
	if (a->next != NULL)
		a->next->prevp = a->prevp;
	if (a->timer_open)
		uv_close((uv_handle_t *)&a->timer, acq_closed);
	else
		free(a);
}

static void answer(struct acq *a, const struct sts_shared_result *res)
{
	sts_shared_cb cb = a->cb;
	void *arg = a->arg;

	acq_free(a);
	cb(arg, res);
}

static void answer_fetch(struct acq *a)
{
	struct sts_shared_result res = { .answer = STS_SHARED_FETCH };

	answer(a, &res);
}

static void acq_get(struct acq *a);

static void on_poll_timer(uv_timer_t *t)
{
	acq_get(t->data);
}

/* Another node holds the lock: look again soon, until it gives up. */
static void acq_wait(struct acq *a)
{
	uint64_t now = uv_now(a->f->loop);

	if (a->give_up_ms == 0)
		a->give_up_ms = now + a->f->lock_ms;
	else if (now >= a->give_up_ms) {
		log_warn("sts: %s: the fleet's fetch of the policy did not finish in time; "
			 "fetching it here",
			 a->domain);
		answer_fetch(a);
		return;
	}
	if (!a->timer_open) {
		if (uv_timer_init(a->f->loop, &a->timer) != 0) {
			answer_fetch(a);
			return;
		}
		a->timer.data = a;
		a->timer_open = true;
	}
	uv_timer_start(&a->timer, on_poll_timer, POLL_MS, 0);
}

static void on_lock(void *arg, const redisReply *rp)
{
	struct acq *a = arg;

	a->cmd = NULL;
	if (rp != NULL && rp->type == REDIS_REPLY_NIL) {
		acq_wait(a);
		return;
	}
	if (rp != NULL && rp->type == REDIS_REPLY_STATUS) {
		/* ours, but the node that held it may have published and let go
		 * between our look and the lock: look once more before fetching */
		a->locked = true;
		acq_get(a);
		return;
	}
	/* an error or no reply: the fleet cannot be asked */
	answer_fetch(a);
}

static void acq_lock(struct acq *a)
{
	char k[KEY_MAX], ms[24];
	const char *argv[6];

	key(k, sizeof(k), "lock", a->domain, NULL);
	snprintf(ms, sizeof(ms), "%llu", (unsigned long long)a->f->lock_ms);
	argv[0] = "SET";
	argv[1] = k;
	argv[2] = a->f->node;
	argv[3] = "NX";
	argv[4] = "PX";
	argv[5] = ms;
	if (redis_command(a->f->redis, on_lock, a, &a->cmd, 6, argv, NULL) != 0)
		answer_fetch(a);
}

/* "TYPE\tDETAIL" of a failure another node saw. */
static bool parse_failure(const redisReply *rp, struct sts_shared_result *res, char *detail,
			  size_t len)
{
	char type[64];
	const char *tab;
	size_t n;

	if (rp->type != REDIS_REPLY_STRING || rp->len > FAIL_MAX)
		return false;
	tab = memchr(rp->str, '\t', rp->len);
	n = tab != NULL ? (size_t)(tab - rp->str) : 0;
	if (n == 0 || n >= sizeof(type))
		return false;
	memcpy(type, rp->str, n);
	type[n] = '\0';
	if (smtp_tls_result_parse(type, &res->result_type) != 0)
		return false;
	snprintf(detail, len, "%.*s", (int)(rp->len - n - 1), tab + 1);
	res->answer = STS_SHARED_FAILED;
	res->detail = detail;
	return true;
}

static void on_get(void *arg, const redisReply *rp)
{
	struct acq *a = arg;
	struct sts_cache_entry e;
	struct sts_shared_result res;
	char err[128], detail[FAIL_MAX + 1];

	a->cmd = NULL;
	if (rp == NULL || rp->type != REDIS_REPLY_ARRAY || rp->elements != 2) {
		answer_fetch(a);
		return;
	}
	memset(&res, 0, sizeof(res));
	memset(&e, 0, sizeof(e));
	if (rp->element[0]->type == REDIS_REPLY_STRING) {
		if (sts_cache_parse(rp->element[0]->str, rp->element[0]->len, &e, err,
				    sizeof(err)) != 0)
			log_warn("sts: %s: the fleet's copy of the policy is damaged (%s); "
				 "ignored",
				 a->domain, err);
		else if (strcmp(e.domain, a->domain) == 0 && strcmp(e.id, a->id) == 0 &&
			 e.fetched_at > a->newer_than && e.expires_at > clock_now()) {
			res.answer = STS_SHARED_HIT;
			res.text = e.text;
			res.text_len = e.text_len;
			res.fetched_at = e.fetched_at;
			answer(a, &res);
			free(e.text);
			return;
		}
		free(e.text);
	}
	if (rp->element[1]->type == REDIS_REPLY_STRING &&
	    parse_failure(rp->element[1], &res, detail, sizeof(detail))) {
		answer(a, &res);
		return;
	}
	if (a->locked) {
		answer_fetch(a); /* nothing there: the lock is ours, fetch */
		return;
	}
	if (a->give_up_ms != 0 && uv_now(a->f->loop) >= a->give_up_ms) {
		acq_wait(a); /* gives up */
		return;
	}
	acq_lock(a);
}

static int send_get(struct acq *a)
{
	char kp[KEY_MAX], kf[KEY_MAX];
	const char *argv[3] = { "MGET", kp, kf };
	size_t lens[3];

	key(kp, sizeof(kp), "policy", a->domain, NULL);
	key(kf, sizeof(kf), "fail", a->domain, a->id);
	lens[0] = 4;
	lens[1] = strlen(kp);
	lens[2] = strlen(kf);
	return redis_command(a->f->redis, on_get, a, &a->cmd, 3, argv, lens);
}

static void acq_get(struct acq *a)
{
	if (send_get(a) != 0)
		answer_fetch(a);
}

static int acquire(void *ctx, const char *domain, const char *id, int64_t newer_than,
		   sts_shared_cb cb, void *arg, void **handle)
{
	struct sts_fleet *f = ctx;
	struct acq *a;

	if (!redis_up(f->redis) || id == NULL || id[0] == '\0' || strlen(domain) > STS_DOMAIN_MAX ||
	    strlen(id) > STS_TXT_ID_MAX)
		return -1;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -1;
	a->f = f;
	snprintf(a->domain, sizeof(a->domain), "%s", domain);
	snprintf(a->id, sizeof(a->id), "%s", id);
	a->newer_than = newer_than;
	a->cb = cb;
	a->arg = arg;
	a->next = f->acqs;
	if (a->next != NULL)
		a->next->prevp = &a->next;
	f->acqs = a;
	a->prevp = &f->acqs;
	if (send_get(a) != 0) {
		acq_free(a); /* never called back: the caller fetches now */
		return -1;
	}
	*handle = a;
	return 0;
}

static void cancel(void *ctx, void *handle)
{
	struct acq *a = handle;

	(void)ctx;
	redis_cancel(a->cmd);
	if (a->timer_open)
		uv_timer_stop(&a->timer);
	acq_free(a);
}

static void publish(void *ctx, const char *domain, const char *id,
		    const struct sts_fetch_result *res)
{
	struct sts_fleet *f = ctx;
	char kv[KEY_MAX], kl[KEY_MAX], ttl[24], fail[FAIL_MAX];
	const char *argv[8];
	size_t lens[8];
	char *value = NULL;
	size_t vlen = 0;
	int64_t expires = 0, now = clock_now();
	int i;

	if (!redis_up(f->redis) || id == NULL || id[0] == '\0')
		return;
	key(kl, sizeof(kl), "lock", domain, NULL);
	if (res->status == STS_FETCH_OK) {
		struct sts_cache_entry e;

		memset(&e, 0, sizeof(e));
		snprintf(e.domain, sizeof(e.domain), "%s", domain);
		snprintf(e.id, sizeof(e.id), "%s", id);
		e.fetched_at = res->fetched_at;
		e.expires_at = expires = res->fetched_at + (int64_t)res->policy->max_age;
		e.text = (char *)res->body;
		e.text_len = res->body_len;
		if (sts_cache_format(&e, &value, &vlen) != 0)
			return;
		key(kv, sizeof(kv), "policy", domain, NULL);
	} else {
		vlen = (size_t)snprintf(fail, sizeof(fail), "%s\t%s",
					smtp_tls_result_name(res->result_type), res->detail);
		if (vlen >= sizeof(fail))
			vlen = sizeof(fail) - 1;
		expires = now + STS_NEGATIVE_TTL;
		key(kv, sizeof(kv), "fail", domain, id);
	}
	snprintf(ttl, sizeof(ttl), "%lld", (long long)(expires > now ? expires - now : 1));
	argv[0] = "EVAL";
	argv[1] = publish_lua;
	argv[2] = "2";
	argv[3] = kv;
	argv[4] = kl;
	argv[5] = value != NULL ? value : fail;
	argv[6] = ttl;
	argv[7] = f->node;
	for (i = 0; i < 8; i++)
		lens[i] = strlen(argv[i]);
	lens[5] = vlen;
	if (redis_command(f->redis, NULL, NULL, NULL, 8, argv, lens) != 0)
		log_debug("sts: %s: could not publish the policy to the fleet", domain);
	free(value);
}

int sts_fleet_new(uv_loop_t *loop, struct redis *redis, const char *node, uint64_t fetch_timeout_ms,
		  struct sts_fleet **out)
{
	struct sts_fleet *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->loop = loop;
	f->redis = redis;
	snprintf(f->node, sizeof(f->node), "%s", node);
	f->lock_ms = (fetch_timeout_ms ? fetch_timeout_ms : 30000) + LOCK_EXTRA_MS;
	f->table.ctx = f;
	f->table.acquire = acquire;
	f->table.cancel = cancel;
	f->table.publish = publish;
	*out = f;
	return 0;
}

const struct sts_shared *sts_fleet_shared(struct sts_fleet *f)
{
	return &f->table;
}

void sts_fleet_free(struct sts_fleet *f)
{
	if (f == NULL)
		return;
	if (f->acqs != NULL)
		log_error("sts: fleet cache freed with lookups still waiting");
	while (f->acqs != NULL)
		cancel(f, f->acqs);
	free(f);
}
