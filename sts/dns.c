/* The engine's resolver table implemented on relay/net/dns.h: TXT answers become
 * sts_txt_record views, A/AAAA answers numeric strings for curl. */
#include "sts/dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* One lookup in flight: what the engine asked for, and c-ares' handle so
 * that a cancel can reach it. Freed when the answer has been handed over,
 * or by cancel (relay/net/dns.h: a cancelled lookup's callback never runs). */
struct adapter_query {
	struct dns_query *q;
	sts_txt_lookup_cb txt_cb;
	sts_addr_lookup_cb addr_cb;
	void *arg;
};

static enum sts_dns_status map_status(enum dns_status st)
{
	switch (st) {
	case DNS_OK:
		return STS_DNS_OK;
	case DNS_NXDOMAIN:
		return STS_DNS_NXDOMAIN;
	case DNS_NODATA:
	case DNS_NULL_MX:
	case DNS_NO_ADDRESS:
		return STS_DNS_NODATA;
	case DNS_CANCELLED:
		return STS_DNS_CANCELLED;
	case DNS_TEMPFAIL:
	default:
		return STS_DNS_TEMPFAIL;
	}
}

static void on_txt(struct dns_txt_result *res, void *arg)
{
	struct adapter_query *a = arg;
	struct sts_txt_record *recs = NULL;
	struct sts_txt_string *strs = NULL;
	enum sts_dns_status st = map_status(res->status);
	size_t i, j, nstr = 0, k = 0;

	if (st == STS_DNS_OK) {
		for (i = 0; i < res->nrecords; i++)
			nstr += res->records[i].nstrings;
		recs = calloc(res->nrecords ? res->nrecords : 1, sizeof(*recs));
		strs = calloc(nstr ? nstr : 1, sizeof(*strs));
		if (recs == NULL || strs == NULL) {
			st = STS_DNS_TEMPFAIL;
		} else {
			for (i = 0; i < res->nrecords; i++) {
				recs[i].strings = strs + k;
				recs[i].nstrings = res->records[i].nstrings;
				for (j = 0; j < res->records[i].nstrings; j++, k++) {
					strs[k].data = (const unsigned char *)res->records[i]
							       .strings[j]
							       .data;
					strs[k].len = res->records[i].strings[j].len;
				}
			}
		}
	}
	a->txt_cb(a->arg, st,
		  st == STS_DNS_TEMPFAIL && res->status == DNS_OK ? "out of memory" : res->why,
		  recs, st == STS_DNS_OK ? res->nrecords : 0);
	free(recs);
	free(strs);
	dns_txt_result_free(res);
	free(a);
}

static void on_addr(struct dns_addr_result *res, void *arg)
{
	struct adapter_query *a = arg;
	char bufs[DNS_MAX_ADDRS][INET6_ADDRSTRLEN];
	const char *ptrs[DNS_MAX_ADDRS];
	size_t i, n = 0;

	for (i = 0; res->status == DNS_OK && i < res->naddrs && n < DNS_MAX_ADDRS; i++) {
		const struct sockaddr_storage *ss = &res->addrs[i];
		const void *src = NULL;

		if (ss->ss_family == AF_INET)
			src = &((const struct sockaddr_in *)ss)->sin_addr;
		else if (ss->ss_family == AF_INET6)
			src = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (src != NULL &&
		    inet_ntop(ss->ss_family, src, bufs[n], sizeof(bufs[n])) != NULL) {
			ptrs[n] = bufs[n];
			n++;
		}
	}
	a->addr_cb(a->arg, map_status(res->status), res->why, ptrs, n);
	dns_addr_result_free(res);
	free(a);
}

static int lookup_txt(void *ctx, const char *name, sts_txt_lookup_cb cb, void *arg, void **handle)
{
	struct adapter_query *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return -1;
	a->txt_cb = cb;
	a->arg = arg;
	if (dns_lookup_txt(ctx, name, on_txt, a, &a->q) != 0) {
		free(a);
		return -1;
	}
	*handle = a;
	return 0;
}

static int lookup_addr(void *ctx, const char *name, sts_addr_lookup_cb cb, void *arg, void **handle)
{
	struct adapter_query *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return -1;
	a->addr_cb = cb;
	a->arg = arg;
	if (dns_lookup_addr(ctx, name, on_addr, a, &a->q) != 0) {
		free(a);
		return -1;
	}
	*handle = a;
	return 0;
}

static void cancel(void *ctx, void *handle)
{
	struct adapter_query *a = handle;

	(void)ctx;
	if (a == NULL)
		return;
	dns_cancel(a->q);
	free(a);
}

void sts_dns_resolver(struct dns *dns, struct sts_resolver *out)
{
	out->ctx = dns;
	out->lookup_txt = lookup_txt;
	out->lookup_addr = lookup_addr;
	out->cancel = cancel;
}
