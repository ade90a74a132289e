/* Policy fetch (RFC 8461 §3.3): resolve mta-sts.DOMAIN through the relay's
 * resolver, GET /.well-known/mta-sts.txt over HTTPS, check and parse it. */
#ifndef STSRELAY_STS_FETCH_H
#define STSRELAY_STS_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "smtp/tls.h" /* enum smtp_tls_result */
#include "sts/policy.h"
#include "sts/txt.h"

/* ---- the resolver the MTA-STS engine uses ----
 * st_sts does not link the relay's DNS (relay/net/dns.c is its own library), so
 * the engine asks through this table; sts/dns.c adapts relay/net/dns.h.
 * Contract (the same as relay/net/dns.h): a lookup returns 0 and then calls cb
 * exactly once, from the loop, never before returning; or returns -1 and
 * never calls cb. *handle is valid until cb starts; cancel(ctx, handle)
 * before that guarantees cb never runs and frees what the lookup holds. */

enum sts_dns_status {
	STS_DNS_OK, /* data in the answer */
	STS_DNS_NXDOMAIN,
	STS_DNS_NODATA,
	STS_DNS_TEMPFAIL,  /* SERVFAIL, timeout, malformed: try again later */
	STS_DNS_CANCELLED, /* the resolver was shut down */
};

const char *sts_dns_status_name(enum sts_dns_status st);

/* records/addrs live only during the call. */
typedef void (*sts_txt_lookup_cb)(void *arg, enum sts_dns_status st, const char *why,
				  const struct sts_txt_record *records, size_t nrecords);
/* addrs: numeric IPv4/IPv6 strings (no brackets). */
typedef void (*sts_addr_lookup_cb)(void *arg, enum sts_dns_status st, const char *why,
				   const char *const *addrs, size_t naddrs);

struct sts_resolver {
	void *ctx;
	int (*lookup_txt)(void *ctx, const char *name, sts_txt_lookup_cb cb, void *arg,
			  void **handle);
	int (*lookup_addr)(void *ctx, const char *name, sts_addr_lookup_cb cb, void *arg,
			   void **handle);
	void (*cancel)(void *ctx, void *handle);
};

/* ---- the fetch ---- */

#define STS_DOMAIN_MAX 240 /* "mta-sts." + domain must stay <= 253 */
#define STS_DETAIL_MAX 256

enum sts_fetch_status {
	STS_FETCH_OK,
	STS_FETCH_ERROR,     /* DNS of the policy host, connect, non-200, type, size, timeout */
	STS_FETCH_WEBPKI,    /* the policy host's certificate failed validation */
	STS_FETCH_INVALID,   /* body fetched but not a valid policy */
	STS_FETCH_CANCELLED, /* the fetcher was freed first */
};

struct sts_fetch_result {
	enum sts_fetch_status status;
	/* RFC 8460 §4.3.2: STS_POLICY_FETCH_ERROR, STS_WEBPKI_INVALID or
	 * STS_POLICY_INVALID; SUCCESS if OK/CANCELLED */
	enum smtp_tls_result result_type;
	char detail[STS_DETAIL_MAX]; /* human reason when not OK */
	const char *body;            /* OK: the raw policy text */
	size_t body_len;
	const struct sts_policy *policy; /* OK: the parsed policy */
	int64_t fetched_at;              /* clock_now() when the fetch ended */
	/* Concurrent fetches of one domain share one request; every waiter gets
	 * this same result, and `first` is true for exactly one of them (the
	 * first called), so the result is stored exactly once. */
	bool first;
	/* The result came from the fleet's shared cache (struct sts_shared):
	 * a policy another node fetched (fetched_at is that node's), or a
	 * failure another node saw and recorded for TLS-RPT. */
	bool shared;
};

/* res and everything it points to live only during the call. The callback
 * may start or cancel fetches, but must not free the fetcher. */
typedef void (*sts_fetch_cb)(void *arg, const struct sts_fetch_result *res);

/* ---- a policy cache shared by several relays (a fleet, sts/fleet.h) ----
 * Asked before every fetch. It answers with a policy another node fetched
 * (HIT), a failure another node saw for that id (FAILED), or "fetch it
 * yourself" (FETCH: this node now holds the fleet's fetch lock for the
 * domain, or the fleet cannot be asked: Redis down or slow). After a fetch
 * of its own the fetcher publishes the outcome. Contract as the resolver's:
 * acquire returns 0 and calls cb exactly once, from the loop, never before
 * returning (unless cancelled first), or -1 (fetch now) and never calls it. */
enum sts_shared_answer { STS_SHARED_HIT, STS_SHARED_FAILED, STS_SHARED_FETCH };

struct sts_shared_result {
	enum sts_shared_answer answer;
	const char *text; /* HIT: the policy body, text_len bytes */
	size_t text_len;
	int64_t fetched_at;               /* HIT: when its node fetched it */
	enum smtp_tls_result result_type; /* FAILED */
	const char *detail;               /* FAILED */
};

typedef void (*sts_shared_cb)(void *arg, const struct sts_shared_result *res);

struct sts_fetch_result;

struct sts_shared {
	void *ctx;
	/* A policy of domain with this id, fetched after newer_than (unix
	 * seconds; 0: any) and not expired. */
	int (*acquire)(void *ctx, const char *domain, const char *id, int64_t newer_than,
		       sts_shared_cb cb, void *arg, void **handle);
	void (*cancel)(void *ctx, void *handle);
	/* This node's own fetch of (domain, id) ended (OK or failed). */
	void (*publish)(void *ctx, const char *domain, const char *id,
			const struct sts_fetch_result *res);
};

struct sts_fetch_config {
	const char *ca_file;             /* NULL or "": system store */
	uint16_t https_port;             /* 443 normally */
	uint64_t timeout_ms;             /* the whole fetch, DNS of the host included */
	const struct sts_shared *shared; /* NULL: no fleet; must outlive the fetcher */
};

struct sts_fetcher;
struct sts_fetch_waiter;

/* The fetcher keeps pointers to resolver (its table must outlive the
 * fetcher) and copies cfg (ca_file string included). */
int sts_fetcher_new(uv_loop_t *loop, const struct sts_resolver *resolver,
		    const struct sts_fetch_config *cfg, struct sts_fetcher **out);

/* Every waiter still pending gets its callback with STS_FETCH_CANCELLED
 * before this returns; HTTP handles are closed through the loop, so run
 * the loop once more afterwards. */
void sts_fetcher_free(struct sts_fetcher *f);

/* Fetches the policy of domain (normalised: lower case, no trailing dot).
 * If a fetch for the same domain is in flight, joins it. With a shared
 * cache, asks it first for (id, newer_than) (see struct sts_shared; the
 * first caller's values count for a joined fetch). Returns 0 (cb runs
 * later, exactly once, unless cancelled) or -1 (cb never runs). *wp may be
 * NULL; the waiter is valid until its callback starts. */
int sts_fetch_start(struct sts_fetcher *f, const char *domain, const char *id, int64_t newer_than,
		    sts_fetch_cb cb, void *arg, struct sts_fetch_waiter **wp);

/* The waiter's callback never runs; the shared request goes on for others
 * (or is abandoned when nobody waits any more). */
void sts_fetch_cancel(struct sts_fetch_waiter *w);

/* Pure checks, exposed for tests: the response classification of RFC 8461
 * §3.3 (200 only, text/plain with optional parameters). Return 0 or -1 with
 * detail filled. */
int sts_fetch_check_response(long code, const char *content_type, char *detail, size_t detail_len);

/* True if s (len bytes) is a usable recipient domain for MTA-STS; writes its
 * normal form (lower case, trailing dot removed) into out (STS_DOMAIN_MAX+1). */
bool sts_domain_normalize(const char *s, size_t len, char *out, size_t out_size);

#endif
