/* MTA-STS lookups: TXT discovery through the resolver table, the §5.1
 * decision (sts_engine_plan), cache and negative cache, and a proactive refresh timer. */
#define LOG_COMPONENT LOG_C_SMTP /* program name in logs, see relay/core/log.h */
#include "sts/engine.h"
#include "relay/core/clock.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REFRESH_TICK_MS 60000  /* how often the refresh timer looks */
#define REFRESH_MAX_INFLIGHT 4 /* background refreshes at once */
#define REFRESH_DAY 86400
#define REFRESH_WEEK (7 * 86400)
#define REFRESH_MIN 300

struct sts_engine {
	uv_loop_t *loop;
	const struct sts_resolver *res;
	struct sts_cache *cache;
	struct sts_fetcher *fetcher;
	uv_timer_t timer;
	uint64_t tick_ms;
	bool refresh;
	void (*fetch_failed)(void *arg, const struct sts_verdict *v);
	void *fetch_failed_arg;
	size_t refreshing;
	uint64_t rng;
	struct sts_lookup *lookups;
};

struct sts_lookup {
	struct sts_engine *e;
	char domain[STS_DOMAIN_MAX + 1];
	sts_verdict_cb cb; /* NULL: a background refresh */
	void *arg;
	bool recheck;
	bool refresh;
	char prev_id[STS_TXT_ID_MAX + 1];
	char fetch_id[STS_TXT_ID_MAX + 1]; /* the id a fetch is stored under */
	void *dns_handle;
	struct sts_fetch_waiter *waiter;
	struct sts_verdict *v;
	struct sts_lookup *next, **prevp;
};

const char *sts_decision_name(enum sts_decision d)
{
	static const char *names[] = { "absent", "none", "testing", "enforce" };

	return (unsigned)d < sizeof(names) / sizeof(names[0]) ? names[d] : "unknown";
}

const char *sts_source_name(enum sts_source s)
{
	static const char *names[] = { "none", "cache", "fetched" };

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

void sts_verdict_free(struct sts_verdict *v)
{
	if (v == NULL)
		return;
	free(v->policy_text);
	free(v);
}

/* ---- pure decision ---- */

static bool neg_for(const struct sts_plan_input *in, const char *id)
{
	return in->neg_id != NULL && in->neg_id[0] != '\0' && id != NULL &&
	       strcmp(in->neg_id, id) == 0 && in->now < in->neg_until;
}

int64_t sts_engine_refetch_age(uint32_t max_age)
{
	int64_t half = (int64_t)max_age / 2;

	return half < REFRESH_WEEK ? half : REFRESH_WEEK;
}

enum sts_plan sts_engine_plan(const struct sts_plan_input *in)
{
	bool fresh = in->have_cache && in->now < in->cache_expires_at;
	bool same = fresh && in->txt_found && in->cache_id != NULL && in->txt_id != NULL &&
		    strcmp(in->cache_id, in->txt_id) == 0;

	if (in->refresh && fresh && (same || !in->txt_found)) {
		/* RFC 8461 §10.2: the refresh refetches a cached policy before it
		 * runs out, at least weekly, whatever DNS says: an attacker who
		 * can only suppress the TXT record (SERVFAIL, NXDOMAIN) must not
		 * be able to let an enforce policy expire unrefreshed. Without a
		 * TXT record the fetch is stored under the cached id. */
		int64_t age = (int64_t)in->cache_max_age - (in->cache_expires_at - in->now);

		if (age >= sts_engine_refetch_age(in->cache_max_age) && !neg_for(in, in->cache_id))
			return STS_PLAN_FETCH;
		return STS_PLAN_USE_CACHE;
	}
	if (!in->txt_found)
		return fresh ? STS_PLAN_USE_CACHE : STS_PLAN_NO_POLICY;
	if (same)
		return STS_PLAN_USE_CACHE; /* deliveries never refetch an unchanged id */
	if (neg_for(in, in->txt_id))
		return STS_PLAN_RECENT_FAILURE;
	return STS_PLAN_FETCH;
}

int64_t sts_engine_refresh_interval(uint32_t max_age, double jitter)
{
	int64_t base = (int64_t)max_age / 2;

	if (base > REFRESH_DAY)
		base = REFRESH_DAY;
	if (base < REFRESH_MIN)
		base = REFRESH_MIN;
	if (jitter < 0 || jitter >= 1)
		jitter = 0;
	return base - (int64_t)((double)base / 4 * jitter);
}

/* ---- helpers ---- */

static double rnd(struct sts_engine *e)
{
	uint64_t x = e->rng; /* xorshift64: spreading timers needs no crypto */

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	e->rng = x;
	return (double)(x >> 11) / 9007199254740992.0;
}

static void schedule_refresh(struct sts_engine *e, struct sts_cache_entry *ce, int64_t now,
			     bool failed)
{
	int64_t iv = sts_engine_refresh_interval(ce->max_age, rnd(e));

	if (failed && iv > 1800)
		iv = 1800 - (int64_t)(rnd(e) * 300);
	ce->refresh_at = now + iv;
}

/* Once per fetched policy: patterns that are kept but can never match. */
static void log_numeric_patterns(const char *domain, const char *id, const struct sts_policy *p)
{
	size_t i;

	for (i = 0; i < p->mx_count; i++) {
		const char *m = sts_policy_mx(p, i);

		if (m != NULL && sts_mx_pattern_is_numeric(m))
			log_warn("sts: %s: policy id=%s: mx pattern %s is all digits (an IP "
				 "address?): kept, but it never matches an MX host name",
				 domain, id, m);
	}
}

static enum sts_decision decision_of(enum sts_policy_mode m)
{
	return m == STS_MODE_ENFORCE   ? STS_DECISION_ENFORCE
	       : m == STS_MODE_TESTING ? STS_DECISION_TESTING
				       : STS_DECISION_NONE;
}

static int verdict_set_policy(struct sts_verdict *v, enum sts_source src, const char *id,
			      const char *text, size_t len, int64_t fetched_at)
{
	if (sts_policy_parse(text, len, &v->policy, NULL) != 0)
		return -1;
	v->policy_text = malloc(len + 1);
	if (v->policy_text == NULL)
		return -1;
	memcpy(v->policy_text, text, len);
	v->policy_text[len] = '\0';
	v->policy_text_len = len;
	v->source = src;
	snprintf(v->id, sizeof(v->id), "%s", id);
	v->fetched_at = fetched_at;
	v->expires_at = fetched_at + (int64_t)v->policy.max_age;
	v->decision = decision_of(v->policy.mode);
	return 0;
}

static void verdict_set_cache(struct sts_verdict *v, const struct sts_cache_entry *ce)
{
	if (verdict_set_policy(v, STS_SOURCE_CACHE, ce->id, ce->text, ce->text_len,
			       ce->fetched_at) != 0)
		log_error("sts: %s: cannot use the cached policy (out of memory)", v->domain);
}

static void lookup_unlink(struct sts_lookup *l)
{
	if (l->prevp != NULL) {
		*l->prevp = l->next;
		if (l->next != NULL)
			l->next->prevp = l->prevp;
		l->prevp = NULL;
	}
}

static void refresh_done(struct sts_engine *e, struct sts_lookup *l)
{
	struct sts_cache_entry *ce = sts_cache_get(e->cache, l->domain);
	int64_t now = clock_now();

	e->refreshing--;
	if (ce == NULL)
		return;
	ce->refreshing = false;
	if (ce->has_policy)
		schedule_refresh(e, ce, now, l->v->error_type != SMTP_TLS_RESULT_SUCCESS);
	if (l->v->error_type != SMTP_TLS_RESULT_SUCCESS)
		log_warn("sts: %s: background refresh failed, keeping policy id=%s: %s: %s",
			 l->domain, ce->has_policy ? ce->id : "-",
			 smtp_tls_result_name(l->v->error_type), l->v->error_detail);
}

/* Ends a lookup: hands the verdict over (or consumes it for refreshes). */
static void lookup_finish(struct sts_lookup *l)
{
	struct sts_engine *e = l->e;
	struct sts_verdict *v = l->v;

	lookup_unlink(l);
	if (l->recheck && !v->cancelled)
		v->changed = strcmp(v->source != STS_SOURCE_NONE ? v->id : "", l->prev_id) != 0;
	if (l->cb == NULL) {
		if (!v->cancelled)
			refresh_done(e, l);
		sts_verdict_free(v);
	} else {
		if (!v->cancelled)
			metrics_inc(METRICS_STS_DECISIONS, sts_decision_name(v->decision));
		l->cb(l->arg, v);
	}
	free(l);
}

static void on_fetch(void *arg, const struct sts_fetch_result *res)
{
	struct sts_lookup *l = arg;
	struct sts_engine *e = l->e;
	struct sts_verdict *v = l->v;
	struct sts_cache_entry *ce;
	int64_t now = clock_now();

	l->waiter = NULL;
	if (res->status == STS_FETCH_CANCELLED) {
		v->cancelled = true;
		lookup_finish(l);
		return;
	}
	ce = sts_cache_touch(e->cache, l->domain);
	if (res->status == STS_FETCH_OK) {
		if (res->first) {
			if (ce != NULL &&
			    sts_cache_store(e->cache, l->domain, l->fetch_id, res->fetched_at,
					    res->body, res->body_len) >= 0) {
				ce->neg_id[0] = '\0';
				schedule_refresh(e, ce, now, false);
			}
			if (res->shared) {
				char when[32];

				log_info("sts: %s: policy id=%s mode=%s max_age=%u from the fleet "
					 "cache (fetched %s by another node)",
					 l->domain, l->fetch_id,
					 sts_policy_mode_name(res->policy->mode),
					 (unsigned)res->policy->max_age,
					 clock_rfc3339(res->fetched_at, when, sizeof(when)));
			} else {
				log_info("sts: %s: fetched policy id=%s mode=%s max_age=%u%s",
					 l->domain, l->fetch_id,
					 sts_policy_mode_name(res->policy->mode),
					 (unsigned)res->policy->max_age,
					 v->txt_result == STS_TXT_FOUND
						 ? ""
						 : " (refresh without a TXT record)");
				log_numeric_patterns(l->domain, l->fetch_id, res->policy);
			}
		}
		if (verdict_set_policy(v, res->shared ? STS_SOURCE_CACHE : STS_SOURCE_FETCHED,
				       l->fetch_id, res->body, res->body_len, res->fetched_at) != 0)
			log_error("sts: %s: out of memory", l->domain);
		lookup_finish(l);
		return;
	}
	v->error_type = res->result_type;
	snprintf(v->error_detail, sizeof(v->error_detail), "%s", res->detail);
	if (ce != NULL && ce->has_policy && now < ce->expires_at)
		verdict_set_cache(v, ce);
	if (res->first) {
		log_warn("sts: %s: policy fetch for id=%s failed: %s: %s", l->domain, l->fetch_id,
			 res->result_type != SMTP_TLS_RESULT_SUCCESS
				 ? smtp_tls_result_name(res->result_type)
				 : "-",
			 res->detail);
		if (ce != NULL) {
			snprintf(ce->neg_id, sizeof(ce->neg_id), "%s", l->fetch_id);
			ce->neg_until = now + STS_NEGATIVE_TTL;
			ce->neg_type = res->result_type;
			snprintf(ce->neg_detail, sizeof(ce->neg_detail), "%s", res->detail);
		}
		/* Counted once per fetch: not by the lookups that shared it,
		 * nor by those that meet it in the back-off (RFC 8460 §4.4),
		 * nor by the other nodes of a fleet (the one that fetched
		 * counted it). */
		if (e->fetch_failed != NULL && !res->shared)
			e->fetch_failed(e->fetch_failed_arg, v);
	}
	lookup_finish(l);
}

/* The chosen record's strings joined, with unprintable bytes shown as '?'. */
static void join_record(char *out, size_t outlen, const struct sts_txt_record *r)
{
	size_t n = 0, i, j;

	for (i = 0; i < r->nstrings; i++)
		for (j = 0; j < r->strings[i].len && n + 1 < outlen; j++) {
			unsigned char c = r->strings[i].data[j];

			out[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
		}
	out[n] = '\0';
}

static void on_txt(void *arg, enum sts_dns_status st, const char *why,
		   const struct sts_txt_record *records, size_t nrecords)
{
	struct sts_lookup *l = arg;
	struct sts_engine *e = l->e;
	struct sts_verdict *v = l->v;
	struct sts_cache_entry *ce;
	struct sts_plan_input in;
	struct sts_txt txt;
	enum sts_plan plan;

	l->dns_handle = NULL;
	if (st == STS_DNS_CANCELLED) {
		v->cancelled = true;
		lookup_finish(l);
		return;
	}
	v->txt_dns = st;
	v->txt_result = STS_TXT_NONE;
	if (st == STS_DNS_OK) {
		sts_txt_parse(records, nrecords, &txt);
		v->txt_result = txt.result;
		if (txt.result == STS_TXT_FOUND) {
			snprintf(v->txt_id, sizeof(v->txt_id), "%s", txt.id);
		} else {
			snprintf(v->txt_detail, sizeof(v->txt_detail), "%s",
				 txt.reason ? txt.reason : sts_txt_result_name(txt.result));
		}
		if ((txt.result == STS_TXT_FOUND || txt.result == STS_TXT_INVALID) &&
		    txt.record_index < nrecords)
			join_record(v->txt_record, sizeof(v->txt_record),
				    &records[txt.record_index]);
	} else {
		snprintf(v->txt_detail, sizeof(v->txt_detail), "%s%s%s", sts_dns_status_name(st),
			 why && *why ? ": " : "", why ? why : "");
	}

	ce = sts_cache_get(e->cache, l->domain);
	memset(&in, 0, sizeof(in));
	in.now = clock_now();
	in.txt_found = v->txt_result == STS_TXT_FOUND;
	in.txt_id = v->txt_id;
	in.refresh = l->refresh;
	if (ce != NULL) {
		in.have_cache = ce->has_policy;
		in.cache_id = ce->id;
		in.cache_expires_at = ce->expires_at;
		in.cache_max_age = ce->max_age;
		in.neg_id = ce->neg_id;
		in.neg_until = ce->neg_until;
	}
	plan = sts_engine_plan(&in);
	switch (plan) {
	case STS_PLAN_USE_CACHE:
		verdict_set_cache(v, ce);
		break;
	case STS_PLAN_RECENT_FAILURE:
		v->error_type = ce->neg_type;
		snprintf(v->error_detail, sizeof(v->error_detail), "%s (failed less than %d s ago)",
			 ce->neg_detail, STS_NEGATIVE_TTL);
		if (ce->has_policy && in.now < ce->expires_at)
			verdict_set_cache(v, ce);
		break;
	case STS_PLAN_FETCH:
		snprintf(l->fetch_id, sizeof(l->fetch_id), "%s",
			 in.txt_found ? v->txt_id : (ce != NULL ? ce->id : ""));
		/* a copy the fleet holds must be newer than the one that is due */
		if (sts_fetch_start(e->fetcher, l->domain, l->fetch_id,
				    ce != NULL && ce->has_policy && strcmp(ce->id, l->fetch_id) == 0
					    ? ce->fetched_at
					    : 0,
				    on_fetch, l, &l->waiter) == 0)
			return;
		v->error_type = SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR;
		snprintf(v->error_detail, sizeof(v->error_detail), "could not start the fetch");
		if (ce != NULL && ce->has_policy && in.now < ce->expires_at)
			verdict_set_cache(v, ce);
		break;
	case STS_PLAN_NO_POLICY:
		break;
	}
	lookup_finish(l);
}

static int lookup_start(struct sts_engine *e, const char *domain, bool recheck, bool refresh,
			const char *prev_id, sts_verdict_cb cb, void *arg, struct sts_lookup **lp)
{
	struct sts_lookup *l;
	char name[STS_DOMAIN_MAX + 16];

	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -1;
	if (!sts_domain_normalize(domain, strlen(domain), l->domain, sizeof(l->domain)))
		goto fail;
	l->v = calloc(1, sizeof(*l->v));
	if (l->v == NULL)
		goto fail;
	l->e = e;
	l->cb = cb;
	l->arg = arg;
	l->recheck = recheck;
	l->refresh = refresh;
	snprintf(l->prev_id, sizeof(l->prev_id), "%s", prev_id ? prev_id : "");
	snprintf(l->v->domain, sizeof(l->v->domain), "%s", l->domain);
	snprintf(name, sizeof(name), "_mta-sts.%s", l->domain);
	if (e->res->lookup_txt(e->res->ctx, name, on_txt, l, &l->dns_handle) != 0)
		goto fail;
	l->next = e->lookups;
	if (l->next != NULL)
		l->next->prevp = &l->next;
	e->lookups = l;
	l->prevp = &e->lookups;
	if (lp != NULL)
		*lp = l;
	return 0;
fail:
	if (l->v != NULL)
		free(l->v);
	free(l);
	return -1;
}

int sts_engine_lookup(struct sts_engine *e, const char *domain, sts_verdict_cb cb, void *arg,
		      struct sts_lookup **lp)
{
	if (cb == NULL)
		return -1;
	return lookup_start(e, domain, false, false, NULL, cb, arg, lp);
}

int sts_engine_recheck(struct sts_engine *e, const char *domain, const char *prev_id,
		       sts_verdict_cb cb, void *arg, struct sts_lookup **lp)
{
	if (cb == NULL)
		return -1;
	return lookup_start(e, domain, true, false, prev_id, cb, arg, lp);
}

void sts_engine_cancel(struct sts_lookup *l)
{
	if (l == NULL)
		return;
	if (l->dns_handle != NULL)
		l->e->res->cancel(l->e->res->ctx, l->dns_handle);
	if (l->waiter != NULL)
		sts_fetch_cancel(l->waiter);
	lookup_unlink(l);
	if (l->refresh) {
		struct sts_cache_entry *ce = sts_cache_get(l->e->cache, l->domain);

		l->e->refreshing--;
		if (ce != NULL)
			ce->refreshing = false;
	}
	sts_verdict_free(l->v);
	free(l);
}

struct sts_cache *sts_engine_cache(struct sts_engine *e)
{
	return e->cache;
}

/* ---- proactive refresh ---- */

#define TICK_DROP_MAX 16

struct tick_ctx {
	struct sts_engine *e;
	int64_t now;
	struct sts_cache_entry *due[REFRESH_MAX_INFLIGHT];
	size_t ndue;
	struct sts_cache_entry *expired[TICK_DROP_MAX];
	size_t nexpired;
};

static void tick_visit(void *arg, struct sts_cache_entry *ce)
{
	struct tick_ctx *t = arg;

	if (!ce->has_policy)
		return;
	if (t->now >= ce->expires_at) {
		/* Past max_age the policy no longer applies (RFC 8461 §3.2) and
		 * only a new fetch can bring one back: forget it (after the walk). */
		if (!ce->refreshing && t->nexpired < TICK_DROP_MAX)
			t->expired[t->nexpired++] = ce;
		return;
	}
	if (ce->refreshing || ce->refresh_at == 0 || t->now < ce->refresh_at)
		return;
	if (t->e->refreshing + t->ndue < REFRESH_MAX_INFLIGHT)
		t->due[t->ndue++] = ce;
}

static void on_tick(uv_timer_t *timer)
{
	struct sts_engine *e = timer->data;
	struct tick_ctx t = { .e = e, .now = clock_now() };
	size_t i;

	sts_cache_foreach(e->cache, tick_visit, &t);
	for (i = 0; i < t.nexpired; i++) {
		log_info("sts: %s: cached policy id=%s expired", t.expired[i]->domain,
			 t.expired[i]->id);
		sts_cache_drop(e->cache, t.expired[i]->domain);
	}
	for (i = 0; i < t.ndue; i++) {
		struct sts_cache_entry *ce = t.due[i];

		if (lookup_start(e, ce->domain, false, true, NULL, NULL, NULL, NULL) == 0) {
			ce->refreshing = true;
			e->refreshing++;
		} else {
			schedule_refresh(e, ce, t.now, true);
		}
	}
}

static void initial_schedule(void *arg, struct sts_cache_entry *ce)
{
	struct sts_engine *e = arg;
	int64_t now = clock_now();

	if (!ce->has_policy)
		return;
	ce->refresh_at = ce->fetched_at + sts_engine_refresh_interval(ce->max_age, rnd(e));
	/* After a restart many policies may be overdue at once: spread them
	 * over the next ten ticks (10 minutes), starting half a tick from now,
	 * instead of refetching them all in one tick. */
	if (ce->refresh_at <= now)
		ce->refresh_at = now + (int64_t)(e->tick_ms / 2000) +
				 (int64_t)(rnd(e) * (double)(e->tick_ms * 10 / 1000));
}

int sts_engine_new(uv_loop_t *loop, const struct sts_engine_config *cfg,
		   const struct sts_resolver *resolver, struct sts_engine **out)
{
	struct sts_fetch_config fc = { .ca_file = cfg->ca_file,
				       .https_port = cfg->https_port,
				       .timeout_ms = cfg->fetch_timeout_ms,
				       .shared = cfg->shared };
	struct sts_engine *e = calloc(1, sizeof(*e));
	size_t nload = 0, nbad = 0;

	if (e == NULL)
		return -1;
	e->loop = loop;
	e->res = resolver;
	e->refresh = cfg->refresh;
	e->tick_ms = cfg->refresh_tick_ms ? cfg->refresh_tick_ms : REFRESH_TICK_MS;
	e->fetch_failed = cfg->fetch_failed;
	e->fetch_failed_arg = cfg->fetch_failed_arg;
	e->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
	if (sts_cache_new(cfg->cache_dir, cfg->persist, &e->cache) != 0)
		goto fail;
	if (cfg->load && cfg->cache_dir != NULL) {
		if (sts_cache_load(e->cache, &nload, &nbad) != 0)
			log_warn("sts: cannot read the policy cache %s", cfg->cache_dir);
		else if (nload > 0 || nbad > 0)
			log_info("sts: loaded %zu cached policies (%zu ignored) from %s", nload,
				 nbad, cfg->cache_dir);
	}
	if (sts_fetcher_new(loop, resolver, &fc, &e->fetcher) != 0)
		goto fail;
	if (uv_timer_init(loop, &e->timer) != 0) {
		sts_fetcher_free(e->fetcher);
		goto fail;
	}
	e->timer.data = e;
	if (e->refresh) {
		sts_cache_foreach(e->cache, initial_schedule, e);
		uv_timer_start(&e->timer, on_tick, e->tick_ms, e->tick_ms);
		/* The timer alone must not keep a loop running. */
		uv_unref((uv_handle_t *)&e->timer);
	}
	*out = e;
	return 0;
fail:
	log_error("sts: cannot start the MTA-STS engine");
	sts_cache_free(e->cache);
	free(e);
	return -1;
}

static void engine_closed(uv_handle_t *h)
{
	free(h->data);
}

void sts_engine_free(struct sts_engine *e)
{
	if (e == NULL)
		return;
	uv_timer_stop(&e->timer);
	/* Lookups waiting on DNS: stop them here. Those waiting on a fetch get
	 * STS_FETCH_CANCELLED from sts_fetcher_free and finish in on_fetch. */
	for (;;) {
		struct sts_lookup *l = e->lookups;

		while (l != NULL && l->dns_handle == NULL)
			l = l->next;
		if (l == NULL)
			break;
		e->res->cancel(e->res->ctx, l->dns_handle);
		l->dns_handle = NULL;
		l->v->cancelled = true;
		if (l->refresh)
			e->refreshing--;
		lookup_finish(l);
	}
	sts_fetcher_free(e->fetcher);
	e->fetcher = NULL;
	sts_cache_free(e->cache);
	e->cache = NULL;
	uv_close((uv_handle_t *)&e->timer, engine_closed);
}
