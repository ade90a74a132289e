/* DANE discovery for one MX host (RFC 7672 §2.2): whether DANE can apply at all,
 * then its TLSA records at _PORT._tcp of the TLSA base domain, secure or not. */
#ifndef STSRELAY_DANE_H
#define STSRELAY_DANE_H

#include <stdbool.h>
#include <stdint.h>

#include "relay/net/dns.h"
#include "smtp/tlsa.h"

/*
 * The one place both the delivery (relay/daemon/delivery.c) and `sts check`
 * (relay/cli/sts_cmd.c) learn what DANE says about an MX host:
 *
 *   if (dane_applies(mx, h, &why))          // pure: secure MX and addresses?
 *       dane_lookup(dns, h, port, cb, arg, &l)   // TLSA, from the loop
 *
 * RFC 7672 §2.2.1/§2.2.2: DANE applies only when the MX RRset (or, without
 * MX records, the secure denial of them) and the host's A/AAAA answers were
 * validated (AD from a resolver in DNSSEC mode, see dns_options.dnssec);
 * otherwise TLSA records are not even asked for (servers of insecure zones
 * are known to answer TLSA queries badly). §2.2.3: the TLSA base domain is
 * the name the host's CNAME chain ends at, then the host name itself when
 * there are no records at the end of the chain.
 *
 * Verdicts of a lookup:
 *   DANE_USABLE  a secure TLSA RRset with at least one usable record
 *                (smtp_tlsa_usable): DANE alone decides for this host;
 *   DANE_NONE    no TLSA records, an insecure answer, or only unusable
 *                records: as if the host had none (§3.1);
 *   DANE_FAILED  the lookup failed (SERVFAIL, which a validating resolver
 *                also says for bogus data; timeout): the host must not be
 *                used, never plaintext instead (§2.1.1), RFC 8460
 *                result dnssec-invalid.
 *
 * Ownership: dane_lookup() copies the host name; the callback runs exactly
 * once, from the loop, and owns nothing: res is valid during the call.
 * dane_cancel() stops it (no callback); the lookup frees itself.
 */

enum dane_state { DANE_NONE, DANE_USABLE, DANE_FAILED };

/* "none", "usable", "failed". */
const char *dane_state_name(enum dane_state s);

struct dane_result {
	enum dane_state state;
	const char *why;             /* static text for logs and `sts check` */
	bool secure;                 /* the TLSA answer was validated */
	char base[DNS_NAME_MAX + 1]; /* the TLSA base domain that answered */
	char qname[DNS_NAME_MAX + 16];
	struct smtp_tlsa_set tlsa; /* the RRset as found (usable or not) */
};

/* RFC 7672 §2.2: may DANE apply to host h of mx? False with why set. */
bool dane_applies(const struct dns_mx_result *mx, const struct dns_mx_host *h, const char **why);

struct dane_lookup;
typedef void (*dane_cb)(void *arg, const struct dane_result *res);

/* Looks up the TLSA records of h for TCP port `port`. 0: cb will run; -1:
 * nothing started (resolver closed, out of memory, a name too long). */
int dane_lookup(struct dns *dns, const struct dns_mx_host *h, uint16_t port, dane_cb cb, void *arg,
		struct dane_lookup **out);
void dane_cancel(struct dane_lookup *l);

#endif
