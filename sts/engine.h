/* The MTA-STS engine (RFC 8461 §5.1): per recipient domain, TXT discovery,
 * cached or fetched policy, and the verdict delivery and `sts check` act on. */
#ifndef STSRELAY_STS_ENGINE_H
#define STSRELAY_STS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sts/cache.h"
#include "sts/fetch.h" /* struct sts_resolver, enum smtp_tls_result */
#include "sts/policy.h"
#include "sts/txt.h"

#define STS_NEGATIVE_TTL 300    /* a failed fetch of one id: no retry for 5 min */
#define STS_TXT_RECORD_MAX 1024 /* shown record text, truncated beyond */

enum sts_decision {
	STS_DECISION_ABSENT,  /* no usable policy: deliver as tls_default says */
	STS_DECISION_NONE,    /* policy with mode none: no enforcement */
	STS_DECISION_TESTING, /* check and report, deliver anyway */
	STS_DECISION_ENFORCE, /* only matching MX, verified TLS, else defer */
};
/* "absent", "none", "testing", "enforce" (log field sts=, `sts check`). */
const char *sts_decision_name(enum sts_decision d);

enum sts_source { STS_SOURCE_NONE, STS_SOURCE_CACHE, STS_SOURCE_FETCHED };
/* "none", "cache", "fetched". */
const char *sts_source_name(enum sts_source s);

/* What the engine concluded for one domain. Owned by the callback that
 * receives it; free with sts_verdict_free (it may be kept as long as wanted). */
struct sts_verdict {
	char domain[STS_DOMAIN_MAX + 1];
	enum sts_decision decision;
	bool cancelled; /* engine freed first; nothing else is set */

	/* discovery: the _mta-sts TXT lookup done for this verdict */
	enum sts_dns_status txt_dns;             /* OK, NXDOMAIN, NODATA, TEMPFAIL */
	enum sts_txt_result txt_result;          /* FOUND/NONE/MULTIPLE/INVALID (NONE unless OK) */
	char txt_record[STS_TXT_RECORD_MAX + 1]; /* the v=STSv1 record, "" if none/several */
	char txt_id[STS_TXT_ID_MAX + 1];         /* "" unless FOUND */
	char txt_detail[STS_DETAIL_MAX];         /* DNS or parser reason, "" if FOUND */

	/* the policy in force; valid when source != STS_SOURCE_NONE */
	enum sts_source source;
	char id[STS_TXT_ID_MAX + 1];
	struct sts_policy policy;       /* for sts_mx_match() */
	int64_t fetched_at, expires_at; /* unix seconds */
	char *policy_text;              /* the raw body, NUL-terminated (TLS-RPT policy-string) */
	size_t policy_text_len;

	/* a discovery/fetch failure on this lookup (also when a cached policy
	 * still applies): for TLS-RPT and logs; error_type SUCCESS if none,
	 * else STS_POLICY_FETCH_ERROR, STS_WEBPKI_INVALID or STS_POLICY_INVALID */
	enum smtp_tls_result error_type;
	char error_detail[STS_DETAIL_MAX];

	/* sts_engine_recheck only: the policy in force now differs from prev_id */
	bool changed;
};

void sts_verdict_free(struct sts_verdict *v);

typedef void (*sts_verdict_cb)(void *arg, struct sts_verdict *v);

struct sts_engine_config {
	const char *cache_dir;    /* spool_dir/sts, or NULL: memory only */
	bool persist;             /* write fetched policies to cache_dir */
	bool load;                /* read cache_dir at start */
	bool refresh;             /* proactive background refresh (daemon) */
	uint64_t refresh_tick_ms; /* how often due refreshes are looked for;
				       * 0: every 60 s (tests use less). Policies
				       * overdue at start are spread over the next
				       * ten ticks. */
	const char *ca_file;      /* NULL/"": system store */
	uint16_t https_port;
	uint64_t fetch_timeout_ms;
	/* Called once per failed policy fetch (never for the lookups that
	 * shared that fetch or met it during the STS_NEGATIVE_TTL back-off),
	 * background refreshes included, with the verdict of the lookup that
	 * started it: error_type/error_detail set, and the cached policy that
	 * still applies, if any (source STS_SOURCE_CACHE). For TLS-RPT (RFC
	 * 8460 §4.3.2.2). May be NULL; must not free the engine. */
	void (*fetch_failed)(void *arg, const struct sts_verdict *v);
	void *fetch_failed_arg;
	/* The fleet's shared policy cache (sts/fleet.h), asked before every
	 * fetch; NULL: none. A policy from it is stored in this node's cache
	 * like a fetched one (source STS_SOURCE_CACHE); a failure from it is
	 * remembered for STS_NEGATIVE_TTL but not passed to fetch_failed (the
	 * node that fetched recorded it). Must outlive the engine. */
	const struct sts_shared *shared;
};

struct sts_engine;
struct sts_lookup;

/* The engine keeps a pointer to *resolver (it must outlive the engine).
 * Returns 0 or -1 (error logged). */
int sts_engine_new(uv_loop_t *loop, const struct sts_engine_config *cfg,
		   const struct sts_resolver *resolver, struct sts_engine **out);

/* Every lookup still pending gets its callback with v->cancelled before
 * this returns. Handles close through the loop: run it once more after.
 * Must not be called from inside a verdict callback. */
void sts_engine_free(struct sts_engine *e);

/* The verdict for a recipient domain (any case, trailing dot allowed):
 * TXT _mta-sts.DOMAIN, then cache or fetch per RFC 8461 §5.1:
 *  - TXT id equal to the cached policy's and the policy unexpired: cache;
 *  - otherwise (new id, no cache, expired cache) fetch; a failed fetch keeps
 *    an unexpired cached policy (error set) and is not retried for the same
 *    id for STS_NEGATIVE_TTL seconds (a lookup in that window gets the
 *    error again, but fetch_failed is not called for it);
 *  - no/several/invalid TXT records, NXDOMAIN, NODATA or TEMPFAIL: the
 *    unexpired cached policy if any, else absent.
 * Returns 0 (cb runs exactly once, from the loop, never before this
 * returns) or -1 (bad domain or no memory; cb never runs). *lp may be NULL;
 * valid until the callback starts. */
int sts_engine_lookup(struct sts_engine *e, const char *domain, sts_verdict_cb cb, void *arg,
		      struct sts_lookup **lp);

/* RFC 8461 §5.2: delivery found no usable MX under enforce. Looks again
 * (fresh TXT query; refetch if the id changed) and sets v->changed when the
 * policy in force differs from prev_id (the id delivery used; "" if none). */
int sts_engine_recheck(struct sts_engine *e, const char *domain, const char *prev_id,
		       sts_verdict_cb cb, void *arg, struct sts_lookup **lp);

/* The lookup's callback never runs. */
void sts_engine_cancel(struct sts_lookup *l);

/* The engine's cache (for listings); owned by the engine. */
struct sts_cache *sts_engine_cache(struct sts_engine *e);

/* ---- the decision of RFC 8461 §5.1 as a pure function (unit-tested) ---- */

enum sts_plan {
	STS_PLAN_NO_POLICY,      /* absent */
	STS_PLAN_USE_CACHE,      /* the cached policy applies, no fetch */
	STS_PLAN_FETCH,          /* fetch now */
	STS_PLAN_RECENT_FAILURE, /* this id failed < 5 min ago: cache if fresh, else absent */
};

struct sts_plan_input {
	int64_t now;
	bool txt_found; /* exactly one valid v=STSv1 record */
	const char *txt_id;
	bool have_cache; /* a cached policy exists */
	const char *cache_id;
	int64_t cache_expires_at;
	uint32_t cache_max_age;
	const char *neg_id; /* "" or NULL: no recent failure */
	int64_t neg_until;
	bool refresh; /* background refresh: also refetch a cached
				     * policy older than sts_engine_refetch_age,
				     * when the TXT id is unchanged and when
				     * there is no TXT answer at all (§10.2) */
};

enum sts_plan sts_engine_plan(const struct sts_plan_input *in);

/* Seconds from a refresh to the next for a policy of max_age: about daily,
 * sooner for short policies (half of max_age), never under 5 minutes.
 * jitter in [0,1) spreads refreshes over the last quarter of the interval.
 * A refresh only looks at the TXT record until the policy is older than
 * sts_engine_refetch_age(max_age) = min(max_age / 2, 7 days); from then on
 * it refetches the policy over HTTPS. */
int64_t sts_engine_refresh_interval(uint32_t max_age, double jitter);
int64_t sts_engine_refetch_age(uint32_t max_age);

#endif
