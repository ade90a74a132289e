/* DANE discovery for one MX host: the RFC 7672 §2.2 conditions, the TLSA
 * lookup at the CNAME-expanded name then the original one, and the verdict. */
#include "relay/net/dane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct dane_lookup {
	struct dns *dns;
	struct dns_query *q;
	char host[DNS_NAME_MAX + 1];
	char cname[DNS_NAME_MAX + 1]; /* "" when the host is no alias */
	uint16_t port;
	bool at_host; /* the current query is at the host name itself */
	dane_cb cb;
	void *arg;
	struct dane_result res;
};

const char *dane_state_name(enum dane_state s)
{
	switch (s) {
	case DANE_NONE:
		return "none";
	case DANE_USABLE:
		return "usable";
	case DANE_FAILED:
		return "failed";
	}
	return "unknown";
}

bool dane_applies(const struct dns_mx_result *mx, const struct dns_mx_host *h, const char **why)
{
	if (!mx->secure) {
		*why = mx->implicit ? "no MX records, and their absence is not DNSSEC-validated"
				    : "the MX records are not DNSSEC-validated";
		return false;
	}
	if (h->naddrs == 0) {
		*why = "the MX host has no address";
		return false;
	}
	if (!h->secure) {
		*why = "the MX host's address records are not DNSSEC-validated";
		return false;
	}
	*why = "";
	return true;
}

static void on_tlsa(struct dns_tlsa_result *r, void *arg);

static int query(struct dane_lookup *l, const char *base)
{
	int n = snprintf(l->res.qname, sizeof(l->res.qname), "_%u._tcp.%s", (unsigned)l->port,
			 base);

	if (n < 0 || (size_t)n >= sizeof(l->res.qname))
		return -1;
	snprintf(l->res.base, sizeof(l->res.base), "%s", base);
	return dns_lookup_tlsa(l->dns, l->res.qname, on_tlsa, l, &l->q) == 0 ? 0 : -1;
}

static void finish(struct dane_lookup *l, enum dane_state st, const char *why)
{
	l->res.state = st;
	l->res.why = why;
	l->cb(l->arg, &l->res);
	free(l);
}

static void on_tlsa(struct dns_tlsa_result *r, void *arg)
{
	struct dane_lookup *l = arg;

	l->q = NULL;
	l->res.secure = r->secure;
	l->res.tlsa = r->set;
	switch (r->status) {
	case DNS_OK:
		break;
	case DNS_NXDOMAIN:
	case DNS_NODATA:
		dns_tlsa_result_free(r);
		/* RFC 7672 §2.2.3: nothing at the end of a (secure) CNAME
		 * chain, so the records may sit at the original name. */
		if (!l->at_host) {
			l->at_host = true;
			if (query(l, l->host) == 0)
				return;
			finish(l, DANE_FAILED,
			       "the TLSA lookup at the MX host name could not start");
			return;
		}
		l->res.tlsa.n = 0;
		finish(l, DANE_NONE, "no TLSA records");
		return;
	case DNS_CANCELLED:
		dns_tlsa_result_free(r);
		l->res.tlsa.n = 0;
		finish(l, DANE_FAILED, "the resolver was stopped");
		return;
	default:
		dns_tlsa_result_free(r);
		/* §2.1.1: SERVFAIL (bogus, or a server that cannot answer) or no
		 * answer: not "no records", so the host is not used. */
		l->res.tlsa.n = 0;
		finish(l, DANE_FAILED, "the TLSA lookup failed (SERVFAIL, bogus or timeout)");
		return;
	}
	dns_tlsa_result_free(r);
	if (!l->res.secure)
		finish(l, DANE_NONE, "the TLSA records are not DNSSEC-validated");
	else if (smtp_tlsa_count_usable(&l->res.tlsa) == 0)
		finish(l, DANE_NONE,
		       "no usable TLSA record (PKIX-TA/PKIX-EE or unknown types only)");
	else
		finish(l, DANE_USABLE, "");
}

int dane_lookup(struct dns *dns, const struct dns_mx_host *h, uint16_t port, dane_cb cb, void *arg,
		struct dane_lookup **out)
{
	struct dane_lookup *l = calloc(1, sizeof(*l));

	if (out != NULL)
		*out = NULL;
	if (l == NULL)
		return -1;
	l->dns = dns;
	l->port = port;
	l->cb = cb;
	l->arg = arg;
	snprintf(l->host, sizeof(l->host), "%s", h->name);
	if (h->cname[0] != '\0' && strcasecmp(h->cname, h->name) != 0) {
		snprintf(l->cname, sizeof(l->cname), "%s", h->cname);
	} else {
		l->at_host = true;
	}
	if (query(l, l->at_host ? l->host : l->cname) != 0) {
		free(l);
		return -1;
	}
	if (out != NULL)
		*out = l;
	return 0;
}

void dane_cancel(struct dane_lookup *l)
{
	if (l == NULL)
		return;
	dns_cancel(l->q);
	free(l);
}
