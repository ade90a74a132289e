/* One day's TLS-RPT sending as one state machine: per domain a TXT lookup,
 * then per rua a queued report mail or an HTTPS POST, each recorded in the sent ledger. */
#define LOG_COMPONENT LOG_C_TLSRPT /* program name in logs, see relay/core/log.h */
#include "sts/tlsrpt/send.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/clock.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"
#include "sts/tlsrpt/tlsrpt.h"
#include "sts/txt.h"

#define POST_TIMEOUT_MS 60000
#define POST_MAX_REPLY 65536
#define MAX_TXT_STRINGS 4096

enum job_state {
	J_NEXT_DOMAIN, /* pick the next domain (or finish) */
	J_TXT_WAIT,    /* _smtp._tls lookup in flight */
	J_NEXT_RUA,    /* deliver to the next rua of the domain */
	J_CLAIM_WAIT,  /* the fleet's ledger is asked who sends this rua */
	J_ADDR_WAIT,   /* A/AAAA of an https rua's host in flight */
	J_POST_WAIT,   /* HTTPS POST in flight */
	J_DONE,
};

static const char *const state_names[] = { "next-domain", "txt-wait",  "next-rua", "claim-wait",
					   "addr-wait",   "post-wait", "done" };

struct tlsrpt_job {
	struct tlsrpt_job_env env;
	char day[TLSRPT_DAY_LEN + 1];
	int64_t day_start;
	enum job_state state;
	struct tlsrpt_day *data;
	size_t di;          /* next domain index */
	const char *domain; /* current domain (inside data) */
	char report_id[600];
	unsigned char *gz; /* current domain's gzip'd report */
	size_t gzlen;
	struct sts_tlsrpt_txt txt;
	size_t ri;                            /* next rua index */
	char rua_key[STS_TLSRPT_URI_MAX + 8]; /* "mailto:..." or the https URL */
	char addrs[DNS_MAX_ADDRS][INET6_ADDRSTRLEN];
	size_t naddrs;
	const struct sts_tlsrpt_rua *rua; /* the current rua (in txt) */
	void *claim;                      /* J_CLAIM_WAIT: the ledger's handle */
	bool claimed;                     /* the fleet's ledger gave us this rua */
	struct dns_query *q;
	struct tlsrpt_job_result res;
	tlsrpt_job_cb cb;
	void *arg;
	uv_timer_t kick; /* first step runs from the loop */
	bool cancelled;
};

static void job_run(struct tlsrpt_job *j);

/* The only way to change state. */
static void job_enter(struct tlsrpt_job *j, enum job_state st)
{
	log_debug("tlsrpt %s %s: %s -> %s", j->day, j->domain ? j->domain : "-",
		  state_names[j->state], state_names[st]);
	j->state = st;
}

/* The line of one rua's outcome, and its count in tlsrpt_reports_total
 * (status: the line's word, sent, deferred or skipped). */
static void log_rua(const struct tlsrpt_job *j, enum log_level lvl, const char *qid,
		    const char *status, const char *reason)
{
	metrics_inc2(METRICS_TLSRPT_REPORTS,
		     strncmp(j->rua_key, "mailto:", 7) == 0 ? METRICS_TRANSPORT_MAILTO
							    : METRICS_TRANSPORT_HTTPS,
		     status);
	log_fields(lvl, qid, LF_STR("tlsrpt", j->domain), LF_STR("day", j->day),
		   LF_STR("rua", j->rua_key), LF_STATUS(status, reason), LF_END);
}

/* The same line for a whole policy domain (no rua yet). */
static void log_domain(const struct tlsrpt_job *j, enum log_level lvl, const char *status,
		       const char *reason)
{
	log_fields(lvl, NULL, LF_STR("tlsrpt", j->domain), LF_STR("day", j->day),
		   LF_STATUS(status, reason), LF_END);
}

/* A copy went out: this node's ledger (fdatasync'd), then the fleet's. */
static void mark_sent(struct tlsrpt_job *j, const char *what)
{
	if (tlsrpt_sent_add(j->env.cfg->spool_dir, j->day, j->domain, j->rua_key) != 0)
		log_error("tlsrpt: cannot record %s in the sent ledger: %s", what, strerror(errno));
	if (j->claimed)
		j->env.ledger->release(j->env.ledger->ctx, j->day, j->domain, j->rua_key, true);
	j->claimed = false;
}

/* A copy did not go out: the fleet's claim is given back for a retry. */
static void mark_failed(struct tlsrpt_job *j)
{
	if (j->claimed)
		j->env.ledger->release(j->env.ledger->ctx, j->day, j->domain, j->rua_key, false);
	j->claimed = false;
}

static void drop_report(struct tlsrpt_job *j)
{
	free(j->gz);
	j->gz = NULL;
	j->gzlen = 0;
}

/* Builds and gzips the current domain's report. */
static int make_report(struct tlsrpt_job *j)
{
	struct tlsrpt_meta meta = { j->env.cfg->tlsrpt_org_name, j->env.cfg->tlsrpt_contact };
	json_t *r = tlsrpt_report_build(j->data, j->domain, &meta);
	char *text = NULL, err[256];
	int rc = -1;

	if (r == NULL)
		return -1;
	if (tlsrpt_validate(r, TLSRPT_VALIDATE_STRICT, err, sizeof(err)) != 0) {
		log_error("tlsrpt %s %s: own report fails validation: %s", j->day, j->domain, err);
		goto out;
	}
	text = json_dumps(r, JSON_COMPACT);
	if (text == NULL ||
	    tlsrpt_report_id(j->day, j->domain, tlsrpt_submitter(j->env.cfg->tlsrpt_contact),
			     j->report_id, sizeof(j->report_id)) != 0)
		goto out;
	rc = tlsrpt_gzip(text, strlen(text), &j->gz, &j->gzlen);
out:
	free(text);
	json_decref(r);
	return rc;
}

static void on_txt(struct dns_txt_result *res, void *arg)
{
	struct tlsrpt_job *j = arg;
	struct sts_txt_record *recs = NULL;
	struct sts_txt_string *strs = NULL;
	size_t i, k, total = 0, used = 0;

	j->q = NULL;
	memset(&j->txt, 0, sizeof(j->txt));
	j->txt.result = STS_TXT_NONE;
	if (res->status == DNS_OK) {
		for (i = 0; i < res->nrecords; i++)
			total += res->records[i].nstrings;
		if (total <= MAX_TXT_STRINGS) {
			recs = calloc(res->nrecords, sizeof(*recs));
			strs = calloc(total ? total : 1, sizeof(*strs));
		}
		if (recs != NULL && strs != NULL) {
			for (i = 0; i < res->nrecords; i++) {
				recs[i].strings = strs + used;
				recs[i].nstrings = res->records[i].nstrings;
				for (k = 0; k < res->records[i].nstrings; k++, used++) {
					strs[used].data = (const unsigned char *)res->records[i]
								  .strings[k]
								  .data;
					strs[used].len = res->records[i].strings[k].len;
				}
			}
			sts_tlsrpt_txt_parse(recs, res->nrecords, &j->txt);
		} else {
			j->txt.result = STS_TXT_INVALID;
		}
		free(recs);
		free(strs);
	}
	if (res->status == DNS_TEMPFAIL) {
		char status[200];

		snprintf(status, sizeof(status), "_smtp._tls lookup failed: %s", res->why);
		log_domain(j, LOG_LVL_WARNING, "deferred", status);
		j->res.failed++;
		j->txt.nrua = 0;
	} else if (res->status == DNS_CANCELLED) {
		j->cancelled = true;
	} else if (j->txt.result != STS_TXT_FOUND || j->txt.nrua == 0) {
		log_domain(j, LOG_LVL_INFO, "skipped", "no usable _smtp._tls record");
		j->res.no_record++;
		j->txt.nrua = 0;
	}
	dns_txt_result_free(res);
	job_enter(j, J_NEXT_RUA);
	j->ri = 0;
	job_run(j);
}

/* Writes the report mail for rua "to" into the queue. 0 or -1. */
static int enqueue_mail(struct tlsrpt_job *j, const char *to, char qid[QUEUE_ID_LEN + 1])
{
	const struct config *cfg = j->env.cfg;
	struct tlsrpt_mail m = {
		.from = cfg->tlsrpt_contact,
		.to = to,
		.domain = j->domain,
		.submitter = tlsrpt_submitter(cfg->tlsrpt_contact),
		.report_id = j->report_id,
		.hostname = cfg->hostname,
		.day_start = j->day_start,
		.now = clock_now(),
		.gz = j->gz,
		.gzlen = j->gzlen,
		.dkim = j->env.dkim,
	};
	struct queue_envelope env;
	struct queue_writer *w = NULL;
	char *msg = NULL, err[256];
	size_t len;
	int rc = -1;

	memset(&env, 0, sizeof(env));
	if (tlsrpt_mail_compose(&m, &msg, &len, err, sizeof(err)) != 0) {
		log_error("tlsrpt %s %s: cannot compose the report mail: %s", j->day, j->domain,
			  err);
		return -1;
	}
	/* Envelope sender: the contact address. RFC 5321 §4.5.5 reserves the
	 * null sender for notifications (DSN, MDN) and wants a real one on
	 * everything else; a real sender in the submitter's domain also lets
	 * receivers check SPF and DMARC alignment with the DKIM d= domain.
	 * Bounces are not bred: stsrelay makes none for report mail
	 * (QUEUE_F_NOBOUNCE, dropped after 24 hours), and a receiving MTA's
	 * DSN goes to the contact mailbox, the one place that should learn
	 * of a broken rua. QUEUE_F_TLSRPT keeps its own sessions out of later
	 * reports and makes its delivery honour TLS-Required: No. */
	env.queued_at = clock_now();
	env.flags = QUEUE_F_NOBOUNCE | QUEUE_F_TLSRPT;
	snprintf(env.sender, sizeof(env.sender), "%s", cfg->tlsrpt_contact);
	if (queue_envelope_add_rcpt(&env, to) != 0 ||
	    queue_writer_new(j->env.queue, false, &w) != 0 || queue_writer_header(w, &env) != 0 ||
	    queue_writer_append(w, msg, len) != 0 || queue_writer_commit_sync(w) != 0) {
		log_error("tlsrpt %s %s: cannot queue the report mail: %s", j->day, j->domain,
			  strerror(errno));
		goto out;
	}
	snprintf(qid, QUEUE_ID_LEN + 1, "%s", queue_writer_id(w));
	/* the qmgr line of every queued message (pflogsumm reads its size) */
	log_fields_c(LOG_C_QMGR, LOG_LVL_INFO, qid, LF_ADDR("from", ""),
		     LF_INT("size", queue_writer_size(w)), LF_INT("nrcpt", 1),
		     LF_NOTE("queue active"), LF_END);
	rc = 0;
out:
	queue_writer_free(w);
	queue_envelope_clear(&env);
	free(msg);
	return rc;
}

/* Host of an https URL (no userinfo), or -1. IPv6 literals lose their brackets. */
static int url_host(const char *url, char *host, size_t len)
{
	const char *p = url + 8, *e;
	size_t n;

	if (strncmp(url, "https://", 8) != 0)
		return -1;
	if (*p == '[') {
		e = strchr(p, ']');
		if (e == NULL)
			return -1;
		p++;
	} else {
		e = p + strcspn(p, ":/?#");
	}
	n = (size_t)(e - p);
	if (n == 0 || n >= len || memchr(p, '@', n) != NULL)
		return -1;
	memcpy(host, p, n);
	host[n] = '\0';
	return 0;
}

static void on_posted(void *arg, const struct http_result *hr)
{
	struct tlsrpt_job *j = arg;
	char status[300];

	if (hr->status == HTTP_DONE && hr->code >= 200 && hr->code <= 299) {
		mark_sent(j, "the upload");
		snprintf(status, sizeof(status), "HTTP %ld", hr->code);
		log_rua(j, LOG_LVL_INFO, NULL, "sent", status);
		j->res.sent++;
	} else {
		if (hr->status == HTTP_CANCELLED)
			j->cancelled = true;
		if (hr->status == HTTP_DONE)
			snprintf(status, sizeof(status), "HTTP %ld", hr->code);
		else
			snprintf(status, sizeof(status), "%s: %s", http_status_name(hr->status),
				 hr->error ? hr->error : "");
		log_rua(j, LOG_LVL_WARNING, NULL, "deferred", status);
		mark_failed(j);
		j->res.failed++;
	}
	job_enter(j, J_NEXT_RUA);
	job_run(j);
}

static void start_post(struct tlsrpt_job *j)
{
	const char *addrs[DNS_MAX_ADDRS];
	struct http_request req;
	size_t i;

	for (i = 0; i < j->naddrs; i++)
		addrs[i] = j->addrs[i];
	memset(&req, 0, sizeof(req));
	req.url = j->rua_key;
	req.addrs = addrs;
	req.naddrs = j->naddrs;
	req.ca_file = j->env.cfg->ca_file;
	req.timeout_ms = POST_TIMEOUT_MS;
	req.max_body = POST_MAX_REPLY;
	req.post_body = j->gz;
	req.post_len = j->gzlen;
	req.content_type = "application/tlsrpt+gzip";
	job_enter(j, J_POST_WAIT);
	if (http_request_start(j->env.http, &req, on_posted, j) != 0) {
		log_rua(j, LOG_LVL_WARNING, NULL, "deferred", "cannot start the HTTPS request");
		mark_failed(j);
		j->res.failed++;
		job_enter(j, J_NEXT_RUA);
	}
}

static void on_addr(struct dns_addr_result *res, void *arg)
{
	struct tlsrpt_job *j = arg;
	size_t i;

	j->q = NULL;
	j->naddrs = 0;
	for (i = 0; res->status == DNS_OK && i < res->naddrs && j->naddrs < DNS_MAX_ADDRS; i++) {
		const struct sockaddr_storage *ss = &res->addrs[i];
		int rc = ss->ss_family == AF_INET6
				 ? uv_ip6_name((const struct sockaddr_in6 *)ss, j->addrs[j->naddrs],
					       sizeof(j->addrs[0]))
				 : uv_ip4_name((const struct sockaddr_in *)ss, j->addrs[j->naddrs],
					       sizeof(j->addrs[0]));
		if (rc == 0)
			j->naddrs++;
	}
	if (res->status == DNS_CANCELLED)
		j->cancelled = true;
	if (j->naddrs == 0 || j->cancelled) {
		char status[200];

		snprintf(status, sizeof(status), "no address for the https host: %s",
			 dns_status_name(res->status));
		log_rua(j, LOG_LVL_WARNING, NULL, "deferred", status);
		mark_failed(j);
		j->res.failed++;
		dns_addr_result_free(res);
		job_enter(j, J_NEXT_RUA);
		job_run(j);
		return;
	}
	dns_addr_result_free(res);
	start_post(j);
	job_run(j);
}

static void send_rua(struct tlsrpt_job *j);

static void on_claim(void *arg, enum tlsrpt_claim c)
{
	struct tlsrpt_job *j = arg;

	j->claim = NULL;
	job_enter(j, J_NEXT_RUA);
	switch (c) {
	case TLSRPT_CLAIM_MINE:
		j->claimed = true;
		send_rua(j);
		break;
	case TLSRPT_CLAIM_SENT:
		j->res.already++; /* by another node of the fleet */
		break;
	case TLSRPT_CLAIM_BUSY:
		/* not a failure: that node sends it, or gives the claim back */
		log_rua(j, LOG_LVL_INFO, NULL, "deferred",
			"another node of the fleet is sending it");
		j->res.elsewhere++;
		break;
	case TLSRPT_CLAIM_ERROR:
		log_rua(j, LOG_LVL_WARNING, NULL, "deferred",
			"the fleet's ledger (Redis) did not answer");
		j->res.failed++;
		break;
	}
	job_run(j);
}

/* Handles rua number j->ri: the ledgers, then the copy; may leave the job
 * waiting (CLAIM/ADDR/POST). */
static void next_rua(struct tlsrpt_job *j)
{
	const struct sts_tlsrpt_rua *rua;

	if (j->cancelled || j->ri >= j->txt.nrua) {
		drop_report(j);
		job_enter(j, J_NEXT_DOMAIN);
		return;
	}
	rua = j->rua = &j->txt.rua[j->ri++];
	snprintf(j->rua_key, sizeof(j->rua_key), "%s%s",
		 rua->kind == STS_TLSRPT_MAILTO ? "mailto:" : "", rua->target);
	if (tlsrpt_sent_contains(j->env.cfg->spool_dir, j->day, j->domain, j->rua_key)) {
		j->res.already++;
		return;
	}
	if (rua->kind == STS_TLSRPT_MAILTO && j->env.dkim == NULL) {
		/* RFC 8460 §3: receivers MUST ignore unsigned report mail */
		log_rua(j, LOG_LVL_ERROR, NULL, "skipped",
			"report mail needs a DKIM signature, RFC 8460 §3: set dkim_domain, "
			"dkim_selector and dkim_key_file; `stsrelay tlsrpt dkim-keygen` makes a key");
		if (tlsrpt_skipped_add(j->env.cfg->spool_dir, j->day, j->domain, j->rua_key) != 0)
			log_error("tlsrpt: cannot record the skipped %s: %s", j->rua_key,
				  strerror(errno));
		j->res.skipped++;
		return;
	}
	if (j->env.ledger == NULL) {
		send_rua(j);
		return;
	}
	/* one node of the fleet sends each copy */
	job_enter(j, J_CLAIM_WAIT);
	if (j->env.ledger->claim(j->env.ledger->ctx, j->day, j->domain, j->rua_key, on_claim, j,
				 &j->claim) != 0) {
		j->claim = NULL;
		job_enter(j, J_NEXT_RUA);
		log_rua(j, LOG_LVL_WARNING, NULL, "deferred",
			"the fleet's ledger (Redis) cannot be asked now");
		j->res.failed++;
	}
}

/* The copy for j->rua: report mail queued, or the HTTPS upload started. */
static void send_rua(struct tlsrpt_job *j)
{
	const struct sts_tlsrpt_rua *rua = j->rua;
	char qid[QUEUE_ID_LEN + 1], host[256];
	unsigned char bin[16];

	if (j->gz == NULL && make_report(j) != 0) {
		log_rua(j, LOG_LVL_ERROR, NULL, "deferred", "cannot build the report");
		mark_failed(j);
		j->res.failed++;
		return;
	}
	if (rua->kind == STS_TLSRPT_MAILTO) {
		char status[64];

		if (enqueue_mail(j, rua->target, qid) != 0) {
			log_rua(j, LOG_LVL_WARNING, NULL, "deferred",
				"cannot queue the report mail");
			mark_failed(j);
			j->res.failed++;
			return;
		}
		mark_sent(j, qid);
		snprintf(status, sizeof(status), "queued as %s", qid);
		log_rua(j, LOG_LVL_INFO, qid, "sent", status);
		j->res.sent++;
		if (j->env.enqueued != NULL)
			j->env.enqueued(j->env.enqueued_arg, qid);
		return;
	}
	if (url_host(j->rua_key, host, sizeof(host)) != 0) {
		log_rua(j, LOG_LVL_WARNING, NULL, "skipped", "bad https URL");
		mark_failed(j);
		return;
	}
	if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
		snprintf(j->addrs[0], sizeof(j->addrs[0]), "%s", host);
		j->naddrs = 1;
		start_post(j);
		return;
	}
	job_enter(j, J_ADDR_WAIT);
	if (dns_lookup_addr(j->env.dns, host, on_addr, j, &j->q) != 0) {
		log_rua(j, LOG_LVL_WARNING, NULL, "deferred", "cannot start the address lookup");
		mark_failed(j);
		j->res.failed++;
		job_enter(j, J_NEXT_RUA);
	}
}

static void next_domain(struct tlsrpt_job *j)
{
	char name[300];

	if (j->cancelled || j->di >= tlsrpt_day_ndomains(j->data)) {
		job_enter(j, J_DONE);
		return;
	}
	j->domain = tlsrpt_day_domain(j->data, j->di++);
	j->res.domains++;
	snprintf(name, sizeof(name), "_smtp._tls.%s", j->domain);
	job_enter(j, J_TXT_WAIT);
	if (dns_lookup_txt(j->env.dns, name, on_txt, j, &j->q) != 0) {
		log_domain(j, LOG_LVL_WARNING, "deferred", "cannot start the _smtp._tls lookup");
		j->res.failed++;
		job_enter(j, J_NEXT_DOMAIN);
	}
}

static void on_kick_closed(uv_handle_t *h)
{
	struct tlsrpt_job *j = h->data;

	j->res.cancelled = j->cancelled;
	j->cb(j->arg, &j->res);
	tlsrpt_day_free(j->data);
	drop_report(j);
	free(j);
}

/* Runs synchronous transitions until the job waits or ends. */
static void job_run(struct tlsrpt_job *j)
{
	for (;;) {
		switch (j->state) {
		case J_NEXT_DOMAIN:
			next_domain(j);
			break;
		case J_NEXT_RUA:
			next_rua(j);
			break;
		case J_TXT_WAIT:
		case J_CLAIM_WAIT:
		case J_ADDR_WAIT:
		case J_POST_WAIT:
			return;
		case J_DONE:
			uv_close((uv_handle_t *)&j->kick, on_kick_closed);
			return;
		}
	}
}

static void on_kick(uv_timer_t *t)
{
	job_run(t->data);
}

int tlsrpt_job_start(const struct tlsrpt_job_env *env, const char *day, tlsrpt_job_cb cb, void *arg,
		     struct tlsrpt_job **out)
{
	struct tlsrpt_job *j = calloc(1, sizeof(*j));
	char err[256];

	if (out != NULL)
		*out = NULL;
	if (j == NULL || tlsrpt_day_parse(day, &j->day_start) != 0) {
		tlsrpt_day_free(env->data); /* taken over, also on failure */
		free(j);
		return -1;
	}
	j->env = *env;
	j->cb = cb;
	j->arg = arg;
	memcpy(j->day, day, sizeof(j->day));
	j->env.data = NULL; /* the job's from here: j->data */
	if (env->data != NULL) {
		j->data = env->data;
	} else if (tlsrpt_day_load(env->cfg->spool_dir, day, &j->data, err, sizeof(err)) != 0) {
		log_error("tlsrpt %s: %s", day, err);
		free(j);
		return -1;
	}
	if (tlsrpt_day_bad_lines(j->data) > 0)
		log_warn("tlsrpt %s: %zu torn or corrupt session lines skipped", day,
			 tlsrpt_day_bad_lines(j->data));
	if (uv_timer_init(env->loop, &j->kick) != 0) {
		tlsrpt_day_free(j->data);
		free(j);
		return -1;
	}
	j->kick.data = j;
	j->state = J_NEXT_DOMAIN;
	uv_timer_start(&j->kick, on_kick, 0, 0);
	if (out != NULL)
		*out = j;
	return 0;
}

void tlsrpt_job_cancel(struct tlsrpt_job *j)
{
	if (j == NULL || j->cancelled)
		return;
	j->cancelled = true;
	if (j->state == J_CLAIM_WAIT) {
		/* the callback will not run: continue from here, on the loop */
		j->env.ledger->cancel(j->env.ledger->ctx, j->claim);
		j->claim = NULL;
		job_enter(j, J_NEXT_RUA);
		j->txt.nrua = 0;
		uv_timer_start(&j->kick, on_kick, 0, 0);
	} else if (j->state == J_TXT_WAIT || j->state == J_ADDR_WAIT) {
		/* the callback will not run: continue from here, on the loop */
		dns_cancel(j->q);
		j->q = NULL;
		job_enter(j, J_NEXT_RUA);
		j->txt.nrua = 0;
		uv_timer_start(&j->kick, on_kick, 0, 0);
	}
}
