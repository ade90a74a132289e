/* MTA-STS policy fetch: A/AAAA of mta-sts.DOMAIN through the engine's
 * resolver, then one HTTPS GET on the loop; concurrent fetches share one job. */
#include "sts/fetch.h"
#include "relay/net/http.h"
#include "relay/core/clock.h"
#include "relay/core/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FETCH_URL_MAX 512
#define FETCH_HOST_MAX (STS_DOMAIN_MAX + 8)

struct fetch_job;

struct sts_fetch_waiter {
	struct fetch_job *job;
	sts_fetch_cb cb;
	void *arg;
	struct sts_fetch_waiter *next, **prevp;
};

enum job_phase { JOB_SHARED, JOB_DNS, JOB_HTTP };

struct fetch_job {
	struct sts_fetcher *f;
	enum job_phase phase;
	char domain[STS_DOMAIN_MAX + 1];
	char host[FETCH_HOST_MAX + 1];
	char url[FETCH_URL_MAX];
	char id[STS_TXT_ID_MAX + 1]; /* for the shared cache */
	int64_t newer_than;
	void *shared_handle; /* JOB_SHARED only */
	void *dns_handle;    /* JOB_DNS only */
	uint64_t started_ms; /* uv_now at start, for the whole-fetch timeout */
	struct sts_fetch_waiter *waiters;
	struct fetch_job *next, **prevp; /* in f->jobs while joinable */
};

struct sts_fetcher {
	uv_loop_t *loop;
	const struct sts_resolver *res;
	struct http_client *http;
	char *ca_file;
	uint16_t port;
	uint64_t timeout_ms;
	const struct sts_shared *shared;
	struct fetch_job *jobs;
	bool closing;
};

const char *sts_dns_status_name(enum sts_dns_status st)
{
	static const char *names[] = { "ok", "nxdomain", "nodata", "tempfail", "cancelled" };

	return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "unknown";
}

bool sts_domain_normalize(const char *s, size_t len, char *out, size_t out_size)
{
	char tmp[STS_MX_NAME_MAX + 1];
	const char *reason = NULL;
	size_t n;

	if (s == NULL || len == 0 || s[0] == '*' || memchr(s, '\0', len) != NULL)
		return false;
	/* A recipient domain with an all-digit top label is an IP address. */
	if (sts_mx_pattern_normalize(s, len, tmp, sizeof(tmp), &reason) != 0 ||
	    sts_mx_pattern_is_numeric(tmp))
		return false;
	n = strlen(tmp);
	if (n > STS_DOMAIN_MAX || n + 1 > out_size)
		return false;
	memcpy(out, tmp, n + 1);
	return true;
}

int sts_fetch_check_response(long code, const char *content_type, char *detail, size_t detail_len)
{
	const char *p;
	size_t n;

	if (code != 200) {
		if (code >= 300 && code < 400)
			snprintf(detail, detail_len, "HTTP %ld: redirects are not followed", code);
		else
			snprintf(detail, detail_len, "HTTP %ld (only 200 is accepted)", code);
		return -1;
	}
	if (content_type == NULL) {
		snprintf(detail, detail_len, "no Content-Type (text/plain required)");
		return -1;
	}
	/* RFC 8461 §3.3: media type text/plain; parameters (charset) allowed.
	 * Media types are case-insensitive (RFC 2045 §5.1). */
	p = content_type;
	while (*p == ' ' || *p == '\t')
		p++;
	n = strlen("text/plain");
	if (strncasecmp(p, "text/plain", n) == 0) {
		const char *q = p + n;

		while (*q == ' ' || *q == '\t')
			q++;
		if (*q == '\0' || *q == ';')
			return 0;
	}
	snprintf(detail, detail_len, "Content-Type \"%.64s\" is not text/plain", content_type);
	return -1;
}

/* ---- job completion ---- */

static void job_unlink(struct fetch_job *j)
{
	if (j->prevp != NULL) {
		*j->prevp = j->next;
		if (j->next != NULL)
			j->next->prevp = j->prevp;
		j->prevp = NULL;
		j->next = NULL;
	}
}

/* Hands res to every waiter (each removed before its call, so callbacks
 * may cancel others or start new fetches) and frees the job. */
static void job_finish(struct fetch_job *j, struct sts_fetch_result *res)
{
	bool first = true;

	job_unlink(j);
	if (res->status == STS_FETCH_OK)
		res->result_type = SMTP_TLS_RESULT_SUCCESS;
	if (!res->shared) {
		res->fetched_at = clock_now();
		/* this node's own HTTPS fetch: counted, and told to the fleet */
		if (res->status != STS_FETCH_CANCELLED) {
			metrics_inc(METRICS_POLICY_FETCHES,
				    res->status == STS_FETCH_OK
					    ? "success"
					    : smtp_tls_result_name(res->result_type));
			if (j->f->shared != NULL)
				j->f->shared->publish(j->f->shared->ctx, j->domain, j->id, res);
		}
	}
	while (j->waiters != NULL) {
		struct sts_fetch_waiter *w = j->waiters;

		j->waiters = w->next;
		if (j->waiters != NULL)
			j->waiters->prevp = &j->waiters;
		res->first = first;
		first = false;
		w->cb(w->arg, res);
		free(w);
	}
	free(j);
}

static void job_fail(struct fetch_job *j, enum sts_fetch_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void job_fail(struct fetch_job *j, enum sts_fetch_status st, const char *fmt, ...)
{
	struct sts_fetch_result res;
	va_list ap;

	memset(&res, 0, sizeof(res));
	res.status = st;
	res.result_type = st == STS_FETCH_WEBPKI      ? SMTP_TLS_RESULT_STS_WEBPKI_INVALID
			  : st == STS_FETCH_INVALID   ? SMTP_TLS_RESULT_STS_POLICY_INVALID
			  : st == STS_FETCH_CANCELLED ? SMTP_TLS_RESULT_SUCCESS
						      : SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR;
	va_start(ap, fmt);
	vsnprintf(res.detail, sizeof(res.detail), fmt, ap);
	va_end(ap);
	job_finish(j, &res);
}

static void on_http(void *arg, const struct http_result *hr)
{
	struct fetch_job *j = arg;
	const char *why = hr->error != NULL ? hr->error : http_status_name(hr->status);
	struct sts_fetch_result res;
	struct sts_policy *pol = NULL;
	struct sts_policy_err perr = { 0 };
	char detail[STS_DETAIL_MAX];

	memset(&res, 0, sizeof(res));
	switch (hr->status) {
	case HTTP_DONE:
		break;
	case HTTP_TLS_ERROR:
		job_fail(j, STS_FETCH_WEBPKI, "certificate of %s: %s", j->host, why);
		return;
	case HTTP_TIMEOUT:
		job_fail(j, STS_FETCH_ERROR, "%s: timeout", j->url);
		return;
	case HTTP_TOO_BIG:
		job_fail(j, STS_FETCH_ERROR, "%s: body larger than %d bytes", j->url,
			 STS_POLICY_BODY_MAX);
		return;
	case HTTP_CANCELLED:
		job_fail(j, STS_FETCH_CANCELLED, "cancelled");
		return;
	case HTTP_FAILED:
	default:
		job_fail(j, STS_FETCH_ERROR, "%s: %s", j->url, why);
		return;
	}
	if (sts_fetch_check_response(hr->code, hr->content_type, detail, sizeof(detail)) != 0) {
		job_fail(j, STS_FETCH_ERROR, "%s: %s", j->url, detail);
		return;
	}
	/* struct sts_policy is ~9 KiB: keep it off the loop's stack. */
	pol = malloc(sizeof(*pol));
	if (pol == NULL) {
		job_fail(j, STS_FETCH_ERROR, "%s: %s", j->url, "out of memory");
		return;
	}
	if (sts_policy_parse(hr->body, hr->body_len, pol, &perr) != 0) {
		char where[32] = "";

		if (perr.line > 0)
			snprintf(where, sizeof(where), "line %zu: ", perr.line);
		snprintf(detail, sizeof(detail), "%s%s", where,
			 perr.reason ? perr.reason : "invalid policy");
		free(pol);
		job_fail(j, STS_FETCH_INVALID, "policy: %s", detail);
		return;
	}
	res.status = STS_FETCH_OK;
	res.body = hr->body;
	res.body_len = hr->body_len;
	res.policy = pol;
	job_finish(j, &res);
	free(pol);
}

static void on_addr(void *arg, enum sts_dns_status st, const char *why, const char *const *addrs,
		    size_t naddrs)
{
	struct fetch_job *j = arg;
	struct sts_fetcher *f = j->f;
	struct http_request req;
	uint64_t elapsed;

	j->dns_handle = NULL;
	if (st == STS_DNS_CANCELLED) {
		job_fail(j, STS_FETCH_CANCELLED, "cancelled");
		return;
	}
	if (st != STS_DNS_OK || naddrs == 0) {
		char s[64];

		snprintf(s, sizeof(s), "%s%s%s", sts_dns_status_name(st), why && *why ? " " : "",
			 why ? why : "");
		job_fail(j, STS_FETCH_ERROR, "DNS lookup of %s: %s", j->host, s);
		return;
	}
	elapsed = uv_now(f->loop) - j->started_ms;
	if (elapsed >= f->timeout_ms) {
		job_fail(j, STS_FETCH_ERROR, "%s: timeout while resolving", j->host);
		return;
	}
	memset(&req, 0, sizeof(req));
	req.url = j->url;
	req.addrs = addrs;
	req.naddrs = naddrs;
	req.ca_file = f->ca_file;
	req.timeout_ms = f->timeout_ms - elapsed;
	req.max_body = STS_POLICY_BODY_MAX;
	if (http_request_start(f->http, &req, on_http, j) != 0) {
		job_fail(j, STS_FETCH_ERROR, "%s: %s", j->url, "could not start the request");
		return;
	}
	j->phase = JOB_HTTP;
}

/* ---- the fleet's shared cache ---- */

static int start_dns(struct fetch_job *j)
{
	struct sts_fetcher *f = j->f;

	j->phase = JOB_DNS;
	return f->res->lookup_addr(f->res->ctx, j->host, on_addr, j, &j->dns_handle);
}

static void on_shared(void *arg, const struct sts_shared_result *sr)
{
	struct fetch_job *j = arg;
	struct sts_fetch_result res;
	struct sts_policy *pol;

	j->shared_handle = NULL;
	memset(&res, 0, sizeof(res));
	res.shared = true;
	if (sr->answer == STS_SHARED_FAILED) {
		metrics_inc(METRICS_FLEET_POLICIES, "failure");
		res.result_type = sr->result_type;
		res.status = sr->result_type == SMTP_TLS_RESULT_STS_WEBPKI_INVALID
				     ? STS_FETCH_WEBPKI
			     : sr->result_type == SMTP_TLS_RESULT_STS_POLICY_INVALID
				     ? STS_FETCH_INVALID
				     : STS_FETCH_ERROR;
		if (res.status == STS_FETCH_ERROR)
			res.result_type = SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR;
		snprintf(res.detail, sizeof(res.detail), "%s (seen by another node)",
			 sr->detail != NULL ? sr->detail : "");
		res.fetched_at = clock_now();
		job_finish(j, &res);
		return;
	}
	if (sr->answer == STS_SHARED_HIT) {
		/* struct sts_policy is ~9 KiB: keep it off the loop's stack. */
		pol = malloc(sizeof(*pol));
		if (pol != NULL && sts_policy_parse(sr->text, sr->text_len, pol, NULL) == 0) {
			metrics_inc(METRICS_FLEET_POLICIES, "hit");
			res.status = STS_FETCH_OK;
			res.body = sr->text;
			res.body_len = sr->text_len;
			res.policy = pol;
			res.fetched_at = sr->fetched_at;
			job_finish(j, &res);
			free(pol);
			return;
		}
		free(pol); /* not usable after all: fetch it ourselves */
	}
	if (start_dns(j) != 0)
		job_fail(j, STS_FETCH_ERROR, "%s: %s", j->url, "could not start the lookup");
}

/* ---- public ---- */

int sts_fetcher_new(uv_loop_t *loop, const struct sts_resolver *resolver,
		    const struct sts_fetch_config *cfg, struct sts_fetcher **out)
{
	struct sts_fetcher *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->loop = loop;
	f->res = resolver;
	f->port = cfg->https_port ? cfg->https_port : 443;
	f->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 30000;
	f->shared = cfg->shared;
	if (cfg->ca_file != NULL && cfg->ca_file[0] != '\0') {
		f->ca_file = strdup(cfg->ca_file);
		if (f->ca_file == NULL)
			goto fail;
	}
	if (http_client_new(loop, &f->http) != 0)
		goto fail;
	*out = f;
	return 0;
fail:
	free(f->ca_file);
	free(f);
	return -1;
}

void sts_fetcher_free(struct sts_fetcher *f)
{
	if (f == NULL)
		return;
	f->closing = true;
	/* Jobs asking the fleet or resolving: stop that and cancel their
	 * waiters. Jobs in HTTP get HTTP_CANCELLED from http_client_free
	 * below. Jobs nobody waits for any more are in neither state's list of
	 * waiters but still own a request; the same two paths free them. */
	for (;;) {
		struct fetch_job *j = f->jobs;

		while (j != NULL && j->phase == JOB_HTTP)
			j = j->next;
		if (j == NULL)
			break;
		if (j->shared_handle != NULL)
			f->shared->cancel(f->shared->ctx, j->shared_handle);
		j->shared_handle = NULL;
		if (j->dns_handle != NULL)
			f->res->cancel(f->res->ctx, j->dns_handle);
		j->dns_handle = NULL;
		job_fail(j, STS_FETCH_CANCELLED, "cancelled");
	}
	http_client_free(f->http);
	free(f->ca_file);
	free(f);
}

int sts_fetch_start(struct sts_fetcher *f, const char *domain, const char *id, int64_t newer_than,
		    sts_fetch_cb cb, void *arg, struct sts_fetch_waiter **wp)
{
	struct sts_fetch_waiter *w;
	struct fetch_job *j;
	int n;

	if (f->closing || domain == NULL || strlen(domain) > STS_DOMAIN_MAX)
		return -1;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -1;
	w->cb = cb;
	w->arg = arg;
	for (j = f->jobs; j != NULL; j = j->next)
		if (strcmp(j->domain, domain) == 0)
			break;
	if (j == NULL) {
		j = calloc(1, sizeof(*j));
		if (j == NULL)
			goto fail;
		j->f = f;
		j->started_ms = uv_now(f->loop);
		snprintf(j->domain, sizeof(j->domain), "%s", domain);
		snprintf(j->id, sizeof(j->id), "%s", id != NULL ? id : "");
		j->newer_than = newer_than;
		snprintf(j->host, sizeof(j->host), "mta-sts.%s", domain);
		if (f->port == 443)
			n = snprintf(j->url, sizeof(j->url), "https://%s/.well-known/mta-sts.txt",
				     j->host);
		else
			n = snprintf(j->url, sizeof(j->url),
				     "https://%s:%u/.well-known/mta-sts.txt", j->host,
				     (unsigned)f->port);
		if (n < 0 || (size_t)n >= sizeof(j->url)) {
			free(j);
			goto fail;
		}
		/* the fleet first: a policy another node fetched is not fetched again */
		j->phase = JOB_SHARED;
		if ((f->shared == NULL ||
		     f->shared->acquire(f->shared->ctx, j->domain, j->id, j->newer_than, on_shared,
					j, &j->shared_handle) != 0) &&
		    start_dns(j) != 0) {
			free(j);
			goto fail;
		}
		j->next = f->jobs;
		if (j->next != NULL)
			j->next->prevp = &j->next;
		f->jobs = j;
		j->prevp = &f->jobs;
	}
	w->job = j;
	w->next = j->waiters;
	if (w->next != NULL)
		w->next->prevp = &w->next;
	j->waiters = w;
	w->prevp = &j->waiters;
	if (wp != NULL)
		*wp = w;
	return 0;
fail:
	free(w);
	return -1;
}

void sts_fetch_cancel(struct sts_fetch_waiter *w)
{
	if (w == NULL)
		return;
	*w->prevp = w->next;
	if (w->next != NULL)
		w->next->prevp = w->prevp;
	/* The job keeps running without waiters: a DNS-phase job could be
	 * stopped, but the HTTP request cannot be cancelled alone (http.h), and
	 * its result is cheap to drop. It stays joinable meanwhile. */
	free(w);
}
