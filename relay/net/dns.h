/* DNS for the relay: c-ares driven by the libuv loop (TXT, A/AAAA, TLSA and the
 * RFC 5321 §5.1 MX resolution with implicit MX, null MX and host addresses). */
#ifndef STSRELAY_DNS_H
#define STSRELAY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "relay/core/config.h"
#include "smtp/tlsa.h"

/* Bounds. Extra MX records (after sorting) and extra addresses are dropped. */
#define DNS_MAX_MX_HOSTS 32
#define DNS_MAX_ADDRS 16 /* per host, both families together */
#define DNS_NAME_MAX 253 /* presentation form, without trailing dot */

#define DNS_DEFAULT_TIMEOUT_MS 5000
#define DNS_DEFAULT_TRIES 2

/* One status for every lookup kind. Only DNS_TEMPFAIL is temporary (defer);
 * DNS_CANCELLED means the resolver was freed before an answer arrived. */
enum dns_status {
	DNS_OK,         /* answer with data */
	DNS_NXDOMAIN,   /* the name does not exist (RCODE 3) */
	DNS_NODATA,     /* the name exists, no record of that type */
	DNS_NULL_MX,    /* MX only: RFC 7505 "0 ." -> bounce 5.1.10 */
	DNS_NO_ADDRESS, /* MX only: no usable host has an address, none temporarily */
	DNS_TEMPFAIL,   /* SERVFAIL, REFUSED, timeout, malformed answer, no memory */
	DNS_CANCELLED,  /* dns_free() ran first */
};

/* "ok", "nxdomain", "nodata", "null-mx", "no-address", "tempfail",
 * "cancelled"; never NULL. */
const char *dns_status_name(enum dns_status st);

struct dns;       /* one resolver: a c-ares channel bound to a loop */
struct dns_query; /* one lookup in flight, for dns_cancel() */

struct dns_options {
	unsigned timeout_ms; /* first try; c-ares doubles it each round over
	                       * the servers. 0: DNS_DEFAULT_TIMEOUT_MS */
	unsigned tries;      /* per server; 0: DNS_DEFAULT_TRIES */
	/* DNSSEC for DANE (RFC 7672 §2.1): every query asks with the DO and
	 * AD bits (EDNS0, RFC 3225 and RFC 6840 §5.7), and a result is
	 * `secure` when the answer came with the AD bit set. The resolver
	 * itself never validates: AD is trusted from the configured servers,
	 * so they must be validating resolvers on a trusted path (loopback),
	 * as Postfix requires. Without it nothing is ever secure. */
	bool dnssec;
};

/* Creates a resolver on loop. servers[0..n) are numeric ip+port (from the
 * `dns_servers` config key); n == 0 uses /etc/resolv.conf. opts may be NULL.
 * Lookups never read /etc/hosts and never apply search domains.
 * Returns 0, or a negative errno (-ENOMEM, -EINVAL for a bad server,
 * -EIO if c-ares fails to start). */
int dns_new(uv_loop_t *loop, const struct config_addr *servers, size_t n,
	    const struct dns_options *opts, struct dns **out);

/* Frees the resolver (NULL is fine). Every lookup still in flight gets its
 * callback exactly once with status DNS_CANCELLED before dns_free returns,
 * except ones given to dns_cancel(). Called from inside a dns callback, the
 * teardown happens when that callback returns (lookups in the same dispatch
 * may still complete normally). Handles are closed with uv_close, so run the
 * loop once more afterwards; the loop then has nothing of ours left. */
void dns_free(struct dns *dns);

/* Lookup contract (all three kinds):
 * - returns 0 and the callback will run exactly once, always from the loop
 *   and never before the lookup function has returned; or returns a negative
 *   errno (-EINVAL bad name, -ENOMEM, -ESHUTDOWN after dns_free) and the
 *   callback never runs;
 * - *qp (qp may be NULL) is a handle valid until the callback starts or
 *   dns_cancel() is called;
 * - the callback owns `res` (never NULL) and frees it with the matching
 *   *_free function; it may start new lookups, cancel others, or call
 *   dns_free.
 * Names are absolute ("example.com" and "example.com." are the same). */

/* Stops a lookup: its callback will never run (its result is discarded). */
void dns_cancel(struct dns_query *q);

/* TXT: each record is the list of its character-strings, kept apart (a
 * string longer than 255 bytes in zone files is several strings). The number
 * of records is bounded by the DNS message size. */
struct dns_txt_string {
	size_t len;
	char *data; /* len bytes plus a NUL (data may hold NULs) */
};
struct dns_txt_record {
	size_t nstrings;
	struct dns_txt_string *strings;
};
struct dns_txt_result {
	enum dns_status status; /* OK (nrecords >= 1), NXDOMAIN, NODATA, TEMPFAIL, CANCELLED */
	const char *why;        /* static text for logs, e.g. "timeout", "SERVFAIL"; "" on OK */
	size_t nrecords;
	struct dns_txt_record *records;
};
typedef void (*dns_txt_cb)(struct dns_txt_result *res, void *arg);
int dns_lookup_txt(struct dns *dns, const char *name, dns_txt_cb cb, void *arg,
		   struct dns_query **qp);
void dns_txt_result_free(struct dns_txt_result *res);

/* A and AAAA of a host, queried in parallel; CNAMEs are followed. Addresses
 * have port 0; IPv4 ones come first, then IPv6 (at least half of the
 * DNS_MAX_ADDRS slots go to a family if it has that many). status: OK when
 * any address was found; else TEMPFAIL if either query failed temporarily,
 * else NXDOMAIN if either said so, else NODATA. */
struct dns_addr_result {
	enum dns_status status;
	const char *why;
	bool secure;                  /* both answers (data or denial) had AD */
	char cname[DNS_NAME_MAX + 1]; /* end of a CNAME chain, "" without one */
	size_t naddrs;
	struct sockaddr_storage *addrs;
};
typedef void (*dns_addr_cb)(struct dns_addr_result *res, void *arg);
int dns_lookup_addr(struct dns *dns, const char *name, dns_addr_cb cb, void *arg,
		    struct dns_query **qp);
void dns_addr_result_free(struct dns_addr_result *res);

/* MX resolution for delivery (RFC 5321 §5.1, RFC 7505):
 * - MX records: hosts sorted by preference, equal preferences in random
 *   order, duplicates removed, at most DNS_MAX_MX_HOSTS; each host's A/AAAA
 *   resolved as by dns_lookup_addr (status per host; a host without address
 *   stays in the list with naddrs 0 so it can be logged);
 * - MX answer "0 ." alone (or only "." targets): DNS_NULL_MX, no hosts;
 *   "." targets mixed with real hosts are skipped;
 * - NXDOMAIN for the MX query: DNS_NXDOMAIN;
 * - no MX records (NODATA): implicit MX, implicit = true and the domain
 *   itself as the only host with preference 0;
 * - MX query SERVFAIL/REFUSED/timeout/malformed: DNS_TEMPFAIL, no hosts.
 * Overall status with hosts: OK if at least one host has an address; else
 * TEMPFAIL if any host failed temporarily; else for an implicit MX the
 * domain's own status (NXDOMAIN, or NO_ADDRESS for NODATA); else NO_ADDRESS.
 * The caller does the "we are one of the MX hosts" pruning if it needs it. */
struct dns_mx_host {
	char name[DNS_NAME_MAX + 1];
	unsigned preference;
	enum dns_status status; /* OK, NXDOMAIN, NODATA, TEMPFAIL (address lookup) */
	const char *why;
	bool secure;                  /* its A and AAAA answers both had AD */
	char cname[DNS_NAME_MAX + 1]; /* the name behind a CNAME chain, "" none */
	size_t naddrs;
	struct sockaddr_storage *addrs;
};
struct dns_mx_result {
	enum dns_status status;
	const char *why;
	bool implicit; /* no MX records: host = the domain itself */
	bool secure;   /* the MX answer (or, implicit, its denial) had AD */
	size_t nhosts;
	struct dns_mx_host *hosts;
};
typedef void (*dns_mx_cb)(struct dns_mx_result *res, void *arg);
/* An address literal domain ("[192.0.2.1]", "[IPv6:2001:db8::1]") is
 * answered without DNS: one implicit host named by the bare address. */
int dns_resolve_mx(struct dns *dns, const char *domain, dns_mx_cb cb, void *arg,
		   struct dns_query **qp);
void dns_mx_result_free(struct dns_mx_result *res);

/* TLSA (RFC 6698) at `name` (e.g. "_25._tcp.mx.example.com"), CNAMEs
 * followed by the resolver: the records at the end of the chain. status OK
 * (a TLSA RRset: set.n records parsed, possibly 0 when none parsed),
 * NXDOMAIN, NODATA, TEMPFAIL (SERVFAIL: with a validating resolver also a
 * bogus answer; timeout; malformed), CANCELLED. */
struct dns_tlsa_result {
	enum dns_status status;
	const char *why;
	bool secure;     /* the answer (records or denial) had AD */
	size_t unparsed; /* records too short or too long to parse */
	struct smtp_tlsa_set set;
};
typedef void (*dns_tlsa_cb)(struct dns_tlsa_result *res, void *arg);
int dns_lookup_tlsa(struct dns *dns, const char *name, dns_tlsa_cb cb, void *arg,
		    struct dns_query **qp);
void dns_tlsa_result_free(struct dns_tlsa_result *res);

/* A next hop written as [host] (relayhost, Postfix's notation): no MX
 * lookup, host's own A/AAAA, answered in the form of dns_resolve_mx for a
 * domain without MX records (implicit = true, one host, the same statuses:
 * OK, TEMPFAIL, NXDOMAIN, NO_ADDRESS). Same contract as dns_resolve_mx. */
int dns_resolve_host(struct dns *dns, const char *host, dns_mx_cb cb, void *arg,
		     struct dns_query **qp);

#endif
