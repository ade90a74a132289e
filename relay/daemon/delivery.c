/* One outbound delivery attempt on the libuv loop: MTA-STS verdict, MX
 * resolution, then the sans-I/O SMTP client driven over relay/net/smtp_conn (TCP + STARTTLS),
 * with idle connections kept per recipient domain for reuse. */
#define LOG_COMPONENT LOG_C_SMTP /* program name in logs, see relay/core/log.h */
#include "relay/daemon/delivery.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "relay/core/clock.h"
#include "relay/core/log.h"
#include "relay/core/tls_policy.h"
#include "relay/net/dane.h"
#include "relay/daemon/readahead.h"
#include "relay/net/smtp_conn.h"
#include "sts/dns.h"
#include "smtp/client.h"
#include "smtp/tls.h"
#include "sts/engine.h"
#include "sts/policy.h"
#include "sts/tlsrpt/tlsrpt.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 30000 /* Postfix smtp_connect_timeout */

struct delivery_ctx {
	struct relay *r;
	struct dns *dns;
	struct smtp_tls_ctx *tls;
	struct sts_resolver resolver; /* the engine points at it */
	struct sts_engine *sts;       /* NULL: every domain is "absent" */
	struct tlsrpt_store *tlsrpt;  /* NULL: not recording */
	struct smtp_client_timeouts timeouts;
	uint32_t connect_timeout_ms;
	unsigned live;     /* deliveries not yet finished */
	struct conn *idle; /* the pool: idle connections (and ones saying QUIT) */
	size_t nidle;
	bool no_reuse; /* stopping: pool nothing more */
};

/* Where a delivery is: what it waits for. Changed only by delivery_enter(),
 * which starts what the new stage waits for; delivery_abort() cancels by it.
 * Order: START -> [POLICY] -> MX -> [DANE] -> SMTP (one per MX address
 * tried, a connection runs the transaction; DANE once per MX host before
 * its first address) -> [RECHECK -> SMTP ...] -> DONE; any stage may go to
 * DONE, and DONE is final. */
enum dstage {
	D_START,   /* delivery_start() is setting it up */
	D_POLICY,  /* the MTA-STS verdict (d->sl) */
	D_MX,      /* the MX lookup (d->dq) */
	D_DANE,    /* the TLSA lookup of the MX host about to be tried (d->dl) */
	D_SMTP,    /* d->conn: connect, STARTTLS, the transaction */
	D_RECHECK, /* enforce, no MX passed: the policy re-check (d->sl) */
	D_DONE,    /* settled: the callback runs once the kick timer closed */
	D_COUNT
};

static const char *const dstage_names[D_COUNT] = {
	[D_START] = "start", [D_POLICY] = "policy",   [D_MX] = "mx",     [D_DANE] = "dane",
	[D_SMTP] = "smtp",   [D_RECHECK] = "recheck", [D_DONE] = "done",
};

struct conn;

struct delivery {
	struct delivery_ctx *dc;
	char qid[QUEUE_ID_LEN + 1];
	char domain[DNS_NAME_MAX + 1];
	char sender[QUEUE_ADDR_MAX];
	unsigned flags;
	int fd; /* message file; each transaction reads it through a readahead */
	uint64_t data_offset, size;

	size_t n;
	char **addrs;
	const char **addr_ptrs;
	struct delivery_rcpt *rcpts;
	struct delivery_result result;

	delivery_done_cb cb;
	void *arg;
	enum dstage stage;
	bool aborted;
	uv_timer_t kick; /* closed on D_DONE; its close callback runs cb */

	struct dns_query *dq;
	struct sts_lookup *sl;
	struct sts_verdict *verdict; /* NULL = absent */
	enum sts_decision decision;
	bool rechecked;

	struct dns_mx_result *mx;
	size_t host_i, addr_i;
	struct conn *conn;
	const struct dns_mx_host *cur_host; /* the candidate being tried (in mx) */
	const struct sockaddr_storage *cur_addr;

	/* relayhost: every recipient goes to that next hop, whose name is the
	 * policy domain (RFC 8461 §3.4) in domain[] */
	bool relay;
	uint16_t port; /* smtp_port, or relayhost's port */

	/* TLS demands for this domain */
	enum tls_level level; /* tls_policy_file's, else from tls_default */
	bool level_listed;    /* the domain is in tls_policy_file */
	enum smtp_tls_level tls_level;
	bool tls_verify;
	bool check_tls; /* report result types (verify/testing/enforce) */
	bool dane_on;   /* look for TLSA records of its MX hosts */
	bool dane_required;

	/* DANE of the MX host being tried (RFC 7672), decided once per host */
	struct dane_lookup *dl;
	struct dane_result *dane; /* the host's TLSA verdict (allocated once) */
	size_t dane_host;         /* host_i + 1 of the host decided, 0 none */
	bool host_dane;           /* usable records: DANE alone checks its TLS */
	bool host_dane_judged;    /* DANE judged it (usable, failed, required) */
	bool last_dane;           /* ... the host of the last failure */

	/* the last failure, for "all MX failed -> defer" */
	bool have_failure;
	char last_text[QUEUE_ERROR_MAX];
	char last_dsn[SMTP_REPLY_ESC_MAX];
	char last_relay[DELIVERY_RELAY_MAX];
	char last_tls[DELIVERY_TLS_MAX];
	char last_mta[DNS_NAME_MAX + 1];
	enum smtp_tls_result last_sts_result;
	unsigned policy_failures; /* TLS/cert failures under a policy (enforce) */
	unsigned mx_mismatches;   /* MX hosts skipped by the policy */
	unsigned mx_used;         /* MX hosts allowed by the policy */
	bool host_mismatch;       /* the current host matches no pattern (testing) */
};

/* One connection. It belongs to its delivery while a transaction runs
 * (d != NULL), else to the pool (pooled) until it closes; a pooled one
 * whose context went away is orphaned (dc == NULL) and just closes. */
struct conn {
	struct delivery_ctx *dc;
	bool dane;                /* its TLS was checked by DANE */
	bool verify;              /* its TLS had to verify (WebPKI or DANE) */
	struct delivery *d;       /* NULL while idle */
	struct conn *prev, *next; /* pool links */
	bool pooled;
	char domain[DNS_NAME_MAX + 1];   /* the recipient domain it serves */
	enum smtp_tls_level tls_level;   /* demanded when it was opened */
	unsigned uses;                   /* transactions so far */
	bool reused;                     /* the current transaction is not its first */
	bool tls_recorded;               /* its TLS-RPT session result is recorded */
	bool mx_mismatch;                /* testing: its host matches no mx pattern */
	struct smtp_conn *sc;            /* the transport: TCP + STARTTLS */
	const struct smtp_conn_info *in; /* smtp_conn_info(sc) */
	bool closing;
	struct smtp_client *client;
	struct readahead *ra; /* the current transaction's message data */
};

static void delivery_enter(struct delivery *d, enum dstage next);
static void next_candidate(struct delivery *d);
static void pool_unlink(struct conn *c);
static void conn_close(struct conn *c);
static bool conn_settle_and_pool(struct conn *c);

/* ---- TLS-RPT ---- */

/* One RFC 8460 session of domain, filed under the policy the verdict v
 * applied (with its text, for the policy-string), or under policy-type sts
 * without a policy when discovery failed, else no-policy-found. */
static void record_tlsrpt(struct delivery_ctx *dc, const char *qid, const char *domain,
			  const struct sts_verdict *v, const struct dane_result *dane,
			  enum smtp_tls_result result, const char *mx_host, const char *mx_ip,
			  const char *local_ip, const char *reason)
{
	struct tlsrpt_session s;
	char tlsa[SMTP_TLSA_MAX * 80];
	size_t o = 0;

	if (dc->tlsrpt == NULL)
		return;
	memset(&s, 0, sizeof(s));
	s.domain = domain;
	if (dane != NULL) {
		/* RFC 8461 §2: DANE decided, so the session is the tlsa policy's
		 * (RFC 8460 §4.4: the records, one string each). A record too
		 * long for the line buffer (full certificate data) is named by
		 * its numbers and the start of its data. */
		for (size_t i = 0; i < dane->tlsa.n; i++) {
			char one[SMTP_TLSA_TEXT_MAX];
			int n = smtp_tlsa_format(&dane->tlsa.rec[i], one, sizeof(one));

			if (n < 0)
				continue;
			if ((size_t)n > 72) {
				n = 72;
				one[n] = '\0';
			}
			o += (size_t)snprintf(tlsa + o, sizeof(tlsa) - o, "%s\n", one);
		}
		s.tlsa = true;
		s.tlsa_text = tlsa;
		s.tlsa_text_len = o;
	} else if (v != NULL && v->source != STS_SOURCE_NONE && v->decision != STS_DECISION_NONE) {
		s.policy = &v->policy;
		s.policy_text = v->policy_text;
		s.policy_text_len = v->policy_text_len;
	} else if (v != NULL && v->error_type != SMTP_TLS_RESULT_SUCCESS) {
		s.sts_published = true;
	}
	s.result = result;
	s.sending_mta_ip = local_ip;
	s.mx_host = mx_host;
	s.mx_ip = mx_ip;
	s.reason = reason;
	if (tlsrpt_record(dc->tlsrpt, &s) != 0)
		log_msg(LOG_LVL_WARNING, qid, "TLS-RPT: cannot record a session for %s", domain);
}

/* The engine's fetch_failed hook: a failed policy fetch is one failure
 * (RFC 8460 §4.3.2.2), filed under the cached policy that still applies,
 * counted once per fetch whatever number of deliveries wait on it or meet
 * it during the 5-minute back-off, background refreshes included. */
static void on_fetch_failed(void *arg, const struct sts_verdict *v)
{
	record_tlsrpt(arg, NULL, v->domain, v, NULL, v->error_type, NULL, NULL, NULL,
		      v->error_detail);
}

/* ---- context ---- */

int delivery_ctx_new(struct relay *r, struct delivery_ctx **out, char *err, size_t errlen)
{
	struct delivery_ctx *dc = calloc(1, sizeof(*dc));
	struct sts_engine_config ec;
	struct dns_options dopts;
	char path[CONFIG_PATH_MAX + 8];
	uint32_t t;
	int rc;

	if (dc == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	dc->r = r;
	/* Always in DNSSEC mode, so `dane` can be turned on by a reload. */
	memset(&dopts, 0, sizeof(dopts));
	dopts.dnssec = true;
	rc = dns_new(r->loop, r->cfg.dns_servers, r->cfg.ndns_servers, &dopts, &dc->dns);
	if (rc != 0) {
		snprintf(err, errlen, "DNS resolver: %s", strerror(-rc));
		goto fail;
	}
	dc->tls = smtp_tls_ctx_new(r->cfg.ca_file[0] ? r->cfg.ca_file : NULL, err, errlen);
	if (dc->tls == NULL)
		goto fail;

	/* Tests shrink every SMTP stage (RFC 5321 §4.5.3.2 minutes) to seconds. */
	dc->timeouts = smtp_client_default_timeouts;
	t = smtp_conn_env_timeout_ms("STSRELAY_SMTP_TIMEOUT", 0);
	if (t > 0) {
		dc->timeouts.banner = dc->timeouts.helo = dc->timeouts.mail = t;
		dc->timeouts.rcpt = dc->timeouts.data_init = dc->timeouts.data_block = t;
		dc->timeouts.eod = dc->timeouts.quit = t;
	}
	dc->connect_timeout_ms = smtp_conn_env_timeout_ms("STSRELAY_CONNECT_TIMEOUT",
							  t > 0 ? t : DEFAULT_CONNECT_TIMEOUT_MS);

	sts_dns_resolver(dc->dns, &dc->resolver);
	snprintf(path, sizeof(path), "%s/sts", r->cfg.spool_dir);
	memset(&ec, 0, sizeof(ec));
	ec.cache_dir = path;
	ec.persist = true;
	ec.load = true;
	ec.refresh = true;
	ec.ca_file = r->cfg.ca_file;
	ec.https_port = r->cfg.sts_https_port;
	ec.fetch_timeout_ms = r->cfg.sts_fetch_timeout_ms;
	ec.fetch_failed = on_fetch_failed;
	ec.fetch_failed_arg = dc;
	ec.shared = r->sts_shared; /* the fleet's policy cache, or NULL */
	/* Tests look for due refreshes every fraction of a second. */
	ec.refresh_tick_ms = smtp_conn_env_timeout_ms("STSRELAY_STS_REFRESH_TICK", 0);
	if (sts_engine_new(r->loop, &ec, &dc->resolver, &dc->sts) != 0) {
		snprintf(err, errlen, "cannot start the MTA-STS engine");
		goto fail;
	}
	if (tlsrpt_store_open(r->cfg.spool_dir, r->loop, &dc->tlsrpt, err, errlen) != 0) {
		/* Delivery matters more than reporting: go on, say so. */
		log_error("TLS-RPT recording disabled: %s", err);
		dc->tlsrpt = NULL;
	}
	*out = dc;
	return 0;
fail:
	delivery_ctx_free(dc);
	return -1;
}

void delivery_ctx_free(struct delivery_ctx *dc)
{
	if (dc == NULL)
		return;
	if (dc->live != 0)
		log_error("delivery: context freed with %u deliveries running", dc->live);
	while (dc->idle != NULL) {
		struct conn *c = dc->idle;

		pool_unlink(c);
		c->dc = NULL; /* orphaned: just freed once closed */
		conn_close(c);
	}
	if (dc->sts != NULL)
		sts_engine_free(dc->sts); /* before the resolver it uses */
	if (dc->tlsrpt != NULL)
		tlsrpt_store_close(dc->tlsrpt);
	if (dc->dns != NULL)
		dns_free(dc->dns);
	if (dc->tls != NULL)
		smtp_tls_ctx_free(dc->tls);
	free(dc);
}

/* ---- results ---- */

/* Gives every recipient without a verdict in this attempt the same one. */
static void settle_all(struct delivery *d, enum delivery_status st, const char *dsn,
		       const char *text, const char *relay, const char *tls, const char *mta,
		       enum smtp_tls_result sts_result)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		struct delivery_rcpt *r = &d->rcpts[i];

		r->status = st;
		snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
		snprintf(r->text, sizeof(r->text), "%s", text);
		r->reply[0] = '\0';
		snprintf(r->remote_mta, sizeof(r->remote_mta), "%s", mta ? mta : "");
		snprintf(r->relay, sizeof(r->relay), "%s", relay ? relay : "none");
		snprintf(r->tls, sizeof(r->tls), "%s", tls ? tls : "none");
		r->sts_result = sts_result;
		r->conn_use = 0;
		r->dane = d->last_dane;
	}
}

static void note_failure(struct delivery *d, const char *dsn, const char *text, const char *relay,
			 const char *tls, const char *mta, enum smtp_tls_result sts_result)
{
	d->have_failure = true;
	snprintf(d->last_dsn, sizeof(d->last_dsn), "%s", dsn);
	snprintf(d->last_text, sizeof(d->last_text), "%s", text);
	snprintf(d->last_relay, sizeof(d->last_relay), "%s", relay ? relay : "none");
	snprintf(d->last_tls, sizeof(d->last_tls), "%s", tls ? tls : "none");
	snprintf(d->last_mta, sizeof(d->last_mta), "%s", mta ? mta : "");
	d->last_sts_result = sts_result;
	d->last_dane = d->host_dane_judged;
}

static void on_kick_closed(uv_handle_t *h)
{
	struct delivery *d = h->data;
	size_t i;

	/* The callback may free the context (scheduler stop): not used after. */
	d->dc->live--;
	d->cb(d->arg, &d->result);
	if (d->fd >= 0)
		close(d->fd);
	if (d->verdict != NULL)
		sts_verdict_free(d->verdict);
	if (d->mx != NULL)
		dns_mx_result_free(d->mx);
	free(d->dane);
	for (i = 0; i < d->n; i++)
		free(d->addrs[i]);
	free(d->addrs);
	free(d->addr_ptrs);
	free(d->rcpts);
	free(d);
}

/* Every recipient not SENT comes back ABORTED; the attempt ends. */
static void end_aborted(struct delivery *d)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		if (d->rcpts[i].status != DELIVERY_SENT)
			d->rcpts[i].status = DELIVERY_ABORTED;
	delivery_enter(d, D_DONE);
}

/* ---- TLS-RPT of a delivery ---- */

/* "[192.0.2.1]": a recipient domain that is an address (RFC 5321 §4.1.3). */
static bool is_literal(const char *domain)
{
	return domain[0] == '[';
}

static void record_session(struct delivery *d, enum smtp_tls_result result, const char *mx_host,
			   const char *mx_ip, const char *local_ip, const char *reason)
{
	if (d->flags & QUEUE_F_TLSRPT)
		return; /* reports about reports would never end (RFC 8460 §5.3) */
	if (is_literal(d->domain))
		return; /* no domain to report to */
	record_tlsrpt(d->dc, d->qid, d->domain, d->verdict, d->host_dane_judged ? d->dane : NULL,
		      result, mx_host, mx_ip, local_ip, reason);
}

/* ---- the connection ---- */

static void conn_pump(struct conn *c);
static void conn_closed(struct conn *c);

static void conn_close(struct conn *c)
{
	c->closing = true;
	smtp_conn_close(c->sc);
}

static void on_data_ready(void *arg)
{
	conn_pump(arg);
}

/* The client's pull source: the message data, read in the thread pool from
 * the start for each transaction (also on another MX). The readahead starts
 * at the first pull, once DATA was accepted: a connection still in its
 * handshake holds no buffer. */
static ssize_t read_message(void *arg, char *buf, size_t cap)
{
	struct conn *c = arg;
	struct delivery *d = c->d;
	ssize_t n;

	if (c->ra == NULL && readahead_new(d->dc->r->loop, d->fd, d->data_offset, d->size,
					   on_data_ready, c, &c->ra) != 0)
		return -1;
	n = readahead_read(c->ra, buf, cap);
	return n == READAHEAD_LATER ? SMTP_CLIENT_READ_LATER : n;
}

/* Moves pending client output to the connection (through TLS once it is
 * up); one write in flight at a time is the back-pressure. The client
 * consumes exactly what the connection took: the rest stays in its buffer
 * until the `drained` callback pumps again. */
static void flush_out(struct conn *c)
{
	const char *p;
	size_t n;
	ssize_t took;

	if (c->closing || smtp_conn_writing(c->sc))
		return;
	smtp_client_output(c->client, &p, &n);
	if (n == 0)
		return;
	took = smtp_conn_write(c->sc, p, n);
	if (took < 0) {
		smtp_client_eof(c->client);
		return;
	}
	smtp_client_consume(c->client, (size_t)took);
}

/* The handshake's outcome goes to the client state machine. */
static void tls_to_client(struct conn *c, bool ok)
{
	char reason[512];

	if (ok) {
		/* AUTH is sent only on a session the driver vouches for */
		smtp_client_tls_verified(c->client, c->in->tls_verified);
		smtp_client_tls_done(c->client, true, NULL);
		return;
	}
	if (c->in->tls_handshake_error)
		snprintf(reason, sizeof(reason), "%s: %s", smtp_tls_result_name(c->in->tls_result),
			 c->in->tls_reason);
	else
		snprintf(reason, sizeof(reason), "%s", c->in->tls_reason);
	smtp_client_tls_done(c->client, false, reason);
}

static void start_tls(struct conn *c)
{
	struct smtp_conn_dane dane;

	if (c->dane) {
		dane.tlsa = &c->d->dane->tlsa;
		dane.base = c->d->dane->base;
	}
	if (smtp_conn_start_tls(c->sc, c->d->dc->tls, c->verify, c->dane ? &dane : NULL) != 0)
		tls_to_client(c, false);
}

/* Runs the client until it waits for the network; the single driver. */
static void conn_pump(struct conn *c)
{
	int rounds;

	for (rounds = 0; rounds < 8 && !c->closing; rounds++) {
		enum smtp_client_event ev = smtp_client_event(c->client);

		if (ev == SMTP_CLIENT_EV_NEED_TLS && smtp_conn_tls(c->sc) == NULL) {
			start_tls(c);
			continue; /* the client may now be DONE, or wants EHLO sent */
		}
		flush_out(c);
		if (ev == SMTP_CLIENT_EV_READY) {
			if (conn_settle_and_pool(c))
				return;
			continue; /* QUIT instead: send it */
		}
		if (ev == SMTP_CLIENT_EV_DONE) {
			/* QUIT (or a TLS alert) still on its way: close after it. */
			if (!smtp_conn_writing(c->sc))
				conn_close(c);
			return;
		}
		smtp_conn_timer(c->sc, smtp_client_timeout_ms(c->client));
		return;
	}
}

static void on_sc_connected(struct smtp_conn *sc, void *arg)
{
	(void)sc;
	conn_pump(arg);
}

static void on_sc_data(struct smtp_conn *sc, void *arg, const char *buf, size_t len)
{
	struct conn *c = arg;

	(void)sc;
	smtp_client_feed(c->client, buf, len);
	conn_pump(c);
}

static void on_sc_eof(struct smtp_conn *sc, void *arg)
{
	struct conn *c = arg;

	(void)sc;
	smtp_client_eof(c->client);
	conn_pump(c);
}

static void on_sc_timeout(struct smtp_conn *sc, void *arg)
{
	struct conn *c = arg;

	(void)sc;
	if (smtp_client_state(c->client) == SMTP_CLIENT_DONE) {
		conn_close(c); /* the last write (QUIT, a TLS alert) never completed */
		return;
	}
	smtp_client_timeout(c->client);
	conn_pump(c);
}

static void on_sc_tls_done(struct smtp_conn *sc, void *arg, bool ok)
{
	struct conn *c = arg;

	(void)sc;
	tls_to_client(c, ok);
	conn_pump(c);
}

static void on_sc_drained(struct smtp_conn *sc, void *arg)
{
	(void)sc;
	conn_pump(arg);
}

static void on_sc_closed(struct smtp_conn *sc, void *arg)
{
	(void)sc;
	conn_closed(arg);
}

static const struct smtp_conn_ops conn_ops = {
	.connected = on_sc_connected,
	.data = on_sc_data,
	.eof = on_sc_eof,
	.timeout = on_sc_timeout,
	.tls_done = on_sc_tls_done,
	.drained = on_sc_drained,
	.closed = on_sc_closed,
};

static void conn_free(struct conn *c)
{
	readahead_free(c->ra);
	if (c->client != NULL)
		smtp_client_free(c->client);
	smtp_conn_free(c->sc);
	free(c);
}

/* "TLSv1.3 verified" / "TLSv1.2 unverified" / "none". */
static void tls_field(const struct conn *c, char *buf, size_t len)
{
	if (c->in->tls_up)
		snprintf(buf, len, "%s %s", c->in->tls_version,
			 c->in->tls_verified ? "verified" : "unverified");
	else
		snprintf(buf, len, "none");
}

/* ---- the pool of idle connections ---- */

static void pool_put(struct delivery_ctx *dc, struct conn *c)
{
	c->pooled = true;
	c->prev = NULL;
	c->next = dc->idle;
	if (dc->idle != NULL)
		dc->idle->prev = c;
	dc->idle = c;
	dc->nidle++;
}

static void pool_unlink(struct conn *c)
{
	struct delivery_ctx *dc = c->dc;

	if (!c->pooled || dc == NULL)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		dc->idle = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->pooled = false;
	dc->nidle--;
}

/* Would a new connection of d to host[ip]:port be this one? Same recipient
 * domain (never another's: each domain is judged by its own policy, and a
 * connection carries what that domain's verdict demanded), same host,
 * address and port, and a TLS state that meets d's demands as re-evaluated
 * now. */
static bool pool_fits(const struct conn *c, const struct delivery *d, const char *host,
		      const char *ip, uint16_t port)
{
	if (c->closing || smtp_client_state(c->client) != SMTP_CLIENT_READY)
		return false;
	if (strcasecmp(c->domain, d->domain) != 0 || strcasecmp(c->in->host, host) != 0 ||
	    strcmp(c->in->ip, ip) != 0 || c->in->port != port)
		return false;
	/* relayhost with credentials: a session that has not authenticated
	 * (made before a reload added them) is not taken */
	if (d->relay && d->dc->r->relayhost_auth.set &&
	    !smtp_client_result(c->client)->authenticated)
		return false;
	if (d->host_dane)
		/* the host's TLSA records checked it (they were looked up again
		 * for this delivery and still are usable) */
		return c->dane && c->in->tls_up && c->in->tls_verified;
	if (d->tls_verify)
		/* TLS >= 1.2 (smtp/tls.c), chain, dates and the name of this MX
		 * host checked out; the walk checked the host against the policy.
		 * A DANE-EE check says nothing of the WebPKI one. */
		return !c->dane && c->in->tls_up && c->in->tls_verified;
	if (d->tls_level == SMTP_TLS_REQUIRE)
		return c->in->tls_up;
	/* Opportunistic: it tried STARTTLS as a new connection would. */
	return c->tls_level >= d->tls_level;
}

static struct conn *pool_take(struct delivery *d, const char *host, const char *ip, uint16_t port)
{
	struct conn *c;

	if (d->dc->no_reuse)
		return NULL;
	for (c = d->dc->idle; c != NULL; c = c->next) {
		if (pool_fits(c, d, host, ip, port)) {
			pool_unlink(c);
			return c;
		}
	}
	return NULL;
}

void delivery_ctx_close_idle(struct delivery_ctx *dc)
{
	struct conn *c;

	if (dc == NULL)
		return;
	dc->no_reuse = true;
	/* They stay listed until closed, so delivery_ctx_free finds them. */
	for (c = dc->idle; c != NULL; c = c->next) {
		if (smtp_client_quit(c->client) == 0)
			conn_pump(c);
	}
}

/* ---- one transaction's outcome ---- */

/* The RFC 8460 verdict of the session for this transaction. The TLS-RPT
 * session result is recorded once per connection: RFC 8460 §4.4 defines
 * successful-session-count as "the aggregate count of successfully
 * negotiated TLS-enabled connections", so a reused connection adds no
 * session (and it can fail no TLS check: its TLS is already up). Returns
 * the result type to report with the recipients, SUCCESS when nothing was
 * demanded or nothing failed. */
static enum smtp_tls_result conn_tls_verdict(struct conn *c, const struct smtp_client_result *res)
{
	struct delivery *d = c->d;
	enum smtp_tls_result sts_result = SMTP_TLS_RESULT_SUCCESS;
	enum smtp_tls_level level = c->dane ? SMTP_TLS_REQUIRE : d->tls_level;

	/* A session that never got as far as EHLO says nothing about TLS and
	 * is not recorded. */
	if (res->tls_result != SMTP_TLS_RESULT_SUCCESS)
		sts_result = res->tls_result; /* REQUIRE failed closed */
	else if (c->in->tls_failed || (c->in->tls_up && !c->in->tls_verified))
		sts_result = c->in->tls_result != SMTP_TLS_RESULT_SUCCESS
				     ? c->in->tls_result
				     : SMTP_TLS_RESULT_VALIDATION_FAILURE;
	else if (!c->in->tls_up && res->esmtp && !res->caps.starttls && level != SMTP_TLS_NONE)
		sts_result = SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED; /* MAY went plaintext */
	if (!c->tls_recorded && (smtp_conn_tls(c->sc) != NULL ||
				 res->tls_result != SMTP_TLS_RESULT_SUCCESS || res->esmtp)) {
		enum smtp_tls_result rt = sts_result;
		char reason[300];

		c->tls_recorded = true;
		if (rt != SMTP_TLS_RESULT_SUCCESS && res->tls_result != SMTP_TLS_RESULT_SUCCESS)
			snprintf(reason, sizeof(reason), "%s", res->diag);
		else
			snprintf(reason, sizeof(reason), "%s", c->in->tls_reason);
		if (c->mx_mismatch) {
			/* testing, MX outside the policy: one session, whose
			 * failure detail is the mismatch (RFC 8460 §4.4) */
			char tls[sizeof(reason)];

			if (rt != SMTP_TLS_RESULT_SUCCESS)
				snprintf(tls, sizeof(tls), " (TLS: %s: %s)",
					 smtp_tls_result_name(rt), reason);
			else
				tls[0] = '\0';
			snprintf(reason, sizeof(reason), "mx-mismatch: %s not in the policy%s",
				 c->in->host, tls);
			rt = SMTP_TLS_RESULT_VALIDATION_FAILURE;
		}
		record_session(d, rt, c->in->host, c->in->ip, c->in->local_ip,
			       rt != SMTP_TLS_RESULT_SUCCESS ? reason : NULL);
	}
	/* Only when the session went on: TLS demanded anyway (a relay host,
	 * level verify), a failed DANE check, or no TLS under a listed level
	 * that requires it closed it, and the delivery line says so. */
	if (sts_result != SMTP_TLS_RESULT_SUCCESS && d->decision == STS_DECISION_TESTING &&
	    !d->tls_verify && !c->dane && !(level == SMTP_TLS_REQUIRE && !c->in->tls_up))
		log_msg(LOG_LVL_INFO, d->qid,
			"%s: TLS check failed with %s (testing: delivery goes on), sts=%s, "
			"sts_result=%s%s%s",
			d->domain, c->in->relay, d->result.sts, smtp_tls_result_name(sts_result),
			c->in->tls_reason[0] ? ": " : "", c->in->tls_reason);
	/* Opportunistic: nothing was demanded, nothing failed; but a level
	 * that required TLS (encrypt) failed closed, and says so. */
	if (!d->check_tls && !c->dane && res->tls_result == SMTP_TLS_RESULT_SUCCESS)
		sts_result = SMTP_TLS_RESULT_SUCCESS;
	return sts_result;
}

/* This host took responsibility: its verdicts are the attempt's. */
static void conn_take_verdicts(struct conn *c, const struct smtp_client_result *res,
			       enum smtp_tls_result sts_result)
{
	struct delivery *d = c->d;
	char tls[DELIVERY_TLS_MAX];
	size_t i;

	tls_field(c, tls, sizeof(tls));
	for (i = 0; i < d->n; i++) {
		const struct smtp_rcpt_result *rr = &res->rcpts[i];
		struct delivery_rcpt *r = &d->rcpts[i];

		r->status = rr->status == SMTP_RCPT_SENT     ? DELIVERY_SENT
			    : rr->status == SMTP_RCPT_BOUNCE ? DELIVERY_BOUNCE
							     : DELIVERY_DEFER;
		snprintf(r->dsn, sizeof(r->dsn), "%s", rr->esc[0] ? rr->esc : "4.0.0");
		snprintf(r->text, sizeof(r->text), "%s", rr->diag);
		snprintf(r->reply, sizeof(r->reply), "%s", rr->reply);
		snprintf(r->remote_mta, sizeof(r->remote_mta), "%s", c->in->host);
		snprintf(r->relay, sizeof(r->relay), "%s", c->in->relay);
		snprintf(r->tls, sizeof(r->tls), "%s", tls);
		r->conn_use = c->uses;
		r->dane = c->dane;
		r->sts_result = r->status == DELIVERY_SENT && d->decision != STS_DECISION_TESTING
					? SMTP_TLS_RESULT_SUCCESS
					: sts_result;
	}
}

/* The server answered the end of data and the session is idle. If the
 * connection may be kept: the verdicts go to the delivery, which ends
 * (D_DONE), and the connection waits in the pool for the next one (true).
 * Else QUIT is queued and conn_end() settles the delivery once the
 * connection is closed (false: the caller pumps the QUIT out). */
static bool conn_settle_and_pool(struct conn *c)
{
	struct delivery *d = c->d;
	const struct smtp_client_result *res;

	if (d == NULL)
		return true; /* idle in the pool already */
	if (d->aborted || c->dc->no_reuse || c->uses >= DELIVERY_MAX_USES ||
	    c->dc->nidle >= DELIVERY_MAX_IDLE) {
		smtp_client_quit(c->client);
		return false;
	}
	res = smtp_client_result(c->client);
	conn_take_verdicts(c, res, conn_tls_verdict(c, res));
	d->conn = NULL;
	c->d = NULL;
	c->reused = false;
	readahead_free(c->ra); /* the next transaction starts its own */
	c->ra = NULL;
	pool_put(c->dc, c);
	smtp_conn_timer(c->sc, DELIVERY_IDLE_MS);
	delivery_enter(d, D_DONE);
	return true;
}

/* The client settings for one transaction of d on c. */
static void client_config(struct delivery *d, struct conn *c, const char *peer,
			  struct smtp_client_config *cc)
{
	memset(cc, 0, sizeof(*cc));
	cc->helo_name = d->dc->r->cfg.hostname;
	cc->peer = peer;
	cc->queue_id = d->qid;
	cc->sender = d->sender;
	cc->rcpts = d->addr_ptrs;
	cc->nrcpts = d->n;
	cc->size = d->size;
	cc->tls = c->tls_level;
	cc->timeouts = &d->dc->timeouts;
	cc->read = read_message;
	cc->read_arg = c;
	cc->keep_open = true;
	/* BODY=8BITMIME, or no MAIL to an MX without 8BITMIME (smtp/client.h) */
	cc->eight_bit = (d->flags & QUEUE_F_8BITMIME) != 0;
	if (d->relay) {
		const struct relay *r = d->dc->r;

		/* apply_policy() made the level REQUIRE with verification */
		cc->implicit_tls = r->cfg.relayhost_implicit_tls;
		if (r->relayhost_auth.set) {
			cc->auth_user = r->relayhost_auth.user;
			cc->auth_password = r->relayhost_auth.password;
		}
	}
}

/* Takes an idle connection for d's current candidate, if one fits. 0: the
 * transaction runs on it (its end is judged as a new one's). */
static int conn_reuse(struct delivery *d, const char *ip)
{
	struct smtp_client_config cc;
	const char *cerr = NULL;
	struct conn *c = pool_take(d, d->cur_host->name, ip, d->port);

	if (c == NULL)
		return -1;
	c->d = d;
	client_config(d, c, c->in->peer, &cc);
	if (smtp_client_next(c->client, &cc, &cerr) != 0) {
		log_msg(LOG_LVL_ERROR, d->qid, "cannot reuse the connection to %s: %s",
			c->in->relay, cerr ? cerr : "unknown error");
		c->d = NULL;
		goto drop;
	}
	c->uses++;
	c->reused = true;
	d->conn = c;
	delivery_enter(d, D_SMTP);
	log_msg(LOG_LVL_DEBUG, d->qid, "reusing the connection to %s (conn_use=%u)", c->in->relay,
		c->uses);
	conn_pump(c);
	return 0;
drop:
	conn_close(c); /* not pooled, no delivery: freed once closed */
	return -1;
}

static void conn_start(struct delivery *d, const struct dns_mx_host *h,
		       const struct sockaddr_storage *addr, bool may_reuse)
{
	struct delivery_ctx *dc = d->dc;
	struct smtp_client_config cc;
	struct conn *c;
	const char *cerr = NULL;
	uint16_t port = d->port;
	char ip[SMTP_CONN_IP_MAX] = "", peer[DNS_NAME_MAX + SMTP_CONN_IP_MAX + 4];

	d->cur_host = h;
	d->cur_addr = addr;
	if (addr->ss_family == AF_INET6)
		uv_ip6_name((const struct sockaddr_in6 *)addr, ip, sizeof(ip));
	else
		uv_ip4_name((const struct sockaddr_in *)addr, ip, sizeof(ip));
	if (may_reuse && conn_reuse(d, ip) == 0)
		return;

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto local_fail;
	c->dc = dc;
	c->d = d;
	snprintf(c->domain, sizeof(c->domain), "%s", d->domain);
	/* RFC 8461 §2, RFC 7672: usable TLSA records decide for this host,
	 * whatever MTA-STS or the level would have asked. */
	c->dane = d->host_dane;
	c->tls_level = d->host_dane ? SMTP_TLS_REQUIRE : d->tls_level;
	c->verify = d->host_dane || d->tls_verify;
	c->mx_mismatch = d->host_mismatch;
	c->uses = 1;
	c->sc = smtp_conn_new(dc->r->loop, &conn_ops, c);
	if (c->sc == NULL)
		goto local_fail_free;
	c->in = smtp_conn_info(c->sc);
	snprintf(peer, sizeof(peer), "%s[%s]", h->name, ip);

	client_config(d, c, peer, &cc);
	c->client = smtp_client_new(&cc, &cerr);
	if (c->client == NULL) {
		log_msg(LOG_LVL_ERROR, d->qid, "cannot start an SMTP session: %s",
			cerr ? cerr : "out of memory");
		goto local_fail_free;
	}
	if (smtp_conn_connect(c->sc, h->name, addr, port, dc->connect_timeout_ms) != 0)
		goto local_fail_free;
	/* From here on conn_end() judges it once it is closed, also after a
	 * refused or timed-out connect. */
	d->conn = c;
	delivery_enter(d, D_SMTP);
	return;

local_fail_free:
	conn_free(c);
local_fail:
	/* A local problem will not go away by trying other hosts now. */
	settle_all(d, DELIVERY_DEFER, "4.3.0", "local error: cannot start an SMTP session", NULL,
		   NULL, NULL, SMTP_TLS_RESULT_SUCCESS);
	delivery_enter(d, D_DONE);
}

/* A reused connection that was dead before the server said anything to
 * our MAIL (EOF, a 421 of its idle timeout, silence): no byte of the
 * message went out, so a new connection to the same address may take the
 * transaction within this attempt. */
static bool reuse_failed_early(const struct conn *c, const struct smtp_client_result *res)
{
	if (!c->reused || res->outcome != SMTP_CONN_TEMPFAIL ||
	    res->failed_state != SMTP_CLIENT_MAIL)
		return false;
	return res->code == 0 || res->code == 421;
}

/* What the delivery does after one of its connections closed. */
enum conn_next {
	CONN_NEXT_NONE,         /* it was idle or orphaned: no delivery to move */
	CONN_NEXT_ABORTED,      /* delivery_abort() came first: end as aborted */
	CONN_NEXT_CANDIDATE,    /* the host's fault: the next address or MX host */
	CONN_NEXT_SAME_ADDRESS, /* a reused connection was dead: a new one there */
	CONN_NEXT_DONE,         /* this host decided: the verdicts are taken */
};

/* Judges one closed connection: the log line, the TLS-RPT session, the
 * verdicts or the failure to remember, and which step follows. Moves
 * nothing: conn_closed() acts on the step. */
static enum conn_next conn_end(struct conn *c)
{
	struct delivery *d = c->d;
	const struct smtp_client_result *res;
	char tls[DELIVERY_TLS_MAX];
	enum smtp_tls_result sts_result;
	size_t i;

	if (d == NULL) {
		/* Idle (closed by the server, the idle timer or a stop) or
		 * orphaned: its transactions were settled long ago. */
		pool_unlink(c);
		return CONN_NEXT_NONE;
	}
	d->conn = NULL;
	if (c->in->connect_failed || !c->in->connected) {
		if (!d->aborted && c->mx_mismatch) {
			/* no session to carry it: the mismatch is this attempt's */
			char reason[DNS_NAME_MAX + 64];

			snprintf(reason, sizeof(reason), "mx-mismatch: %s not in the policy",
				 c->in->host);
			record_session(d, SMTP_TLS_RESULT_VALIDATION_FAILURE, c->in->host,
				       c->in->ip, NULL, reason);
		}
		if (!d->aborted) {
			const char *text = c->in->connect_err[0] ? c->in->connect_err
								 : "connection aborted";

			log_msg(LOG_LVL_INFO, d->qid, "%s", text);
			note_failure(d, "4.4.1", text, c->in->relay, NULL, NULL,
				     SMTP_TLS_RESULT_SUCCESS);
		}
		return d->aborted ? CONN_NEXT_ABORTED : CONN_NEXT_CANDIDATE;
	}

	res = smtp_client_result(c->client);
	tls_field(c, tls, sizeof(tls));
	sts_result = conn_tls_verdict(c, res);

	if (d->aborted) {
		for (i = 0; i < d->n; i++) {
			if (res->rcpts[i].status != SMTP_RCPT_SENT)
				continue;
			d->rcpts[i].status = DELIVERY_SENT;
			snprintf(d->rcpts[i].dsn, sizeof(d->rcpts[i].dsn), "%s", res->rcpts[i].esc);
			snprintf(d->rcpts[i].text, sizeof(d->rcpts[i].text), "%s",
				 res->rcpts[i].diag);
			snprintf(d->rcpts[i].relay, sizeof(d->rcpts[i].relay), "%s", c->in->relay);
			snprintf(d->rcpts[i].tls, sizeof(d->rcpts[i].tls), "%s", tls);
			d->rcpts[i].conn_use = c->uses;
		}
		return CONN_NEXT_ABORTED;
	}

	if (reuse_failed_early(c, res)) {
		log_msg(LOG_LVL_INFO, d->qid,
			"reused connection to %s failed before MAIL was answered (%s): "
			"trying a new connection",
			c->in->relay, res->diag);
		return CONN_NEXT_SAME_ADDRESS;
	}

	if (res->outcome == SMTP_CONN_OK || !res->try_next_mx) {
		conn_take_verdicts(c, res, sts_result);
		return CONN_NEXT_DONE;
	}

	/* The host's fault: remember why and try the next address / host. */
	{
		const char *dsn = res->esc[0] ? res->esc : "4.0.0";
		char dsn4[SMTP_REPLY_ESC_MAX];

		/* Another host may still work, so even a 5xx greeting only defers
		 * (Postfix smtp_skip_5xx_greeting). */
		snprintf(dsn4, sizeof(dsn4), "%s", dsn);
		if (dsn4[0] == '5')
			dsn4[0] = '4';
		if (res->outcome == SMTP_CONN_TLS_FAILED && d->decision == STS_DECISION_ENFORCE)
			d->policy_failures++;
		if (sts_result != SMTP_TLS_RESULT_SUCCESS)
			log_msg(LOG_LVL_INFO, d->qid, "%s, sts=%s, sts_result=%s", res->diag,
				d->result.sts, smtp_tls_result_name(sts_result));
		else
			log_msg(LOG_LVL_INFO, d->qid, "%s", res->diag);
		note_failure(d, dsn4, res->diag, c->in->relay, tls, c->in->host, sts_result);
	}
	return CONN_NEXT_CANDIDATE;
}

/* The one place that acts on conn_end()'s step; the connection is freed
 * first, so the step may start another. */
static void conn_closed(struct conn *c)
{
	struct delivery *d = c->d;
	enum conn_next next = conn_end(c);

	conn_free(c);
	switch (next) {
	case CONN_NEXT_NONE:
		break;
	case CONN_NEXT_ABORTED:
		end_aborted(d);
		break;
	case CONN_NEXT_CANDIDATE:
		next_candidate(d);
		break;
	case CONN_NEXT_SAME_ADDRESS:
		conn_start(d, d->cur_host, d->cur_addr, false);
		break;
	case CONN_NEXT_DONE:
		delivery_enter(d, D_DONE);
		break;
	}
}

/* ---- MX walk ---- */

/* Under enforce only policy-matching MX hosts are used (a skipped one is
 * a failed session of its own); under testing the host is used anyway and
 * the mismatch becomes the failure detail of that connection's session. */
static bool host_allowed(struct delivery *d, const struct dns_mx_host *h)
{
	bool match;

	d->host_mismatch = false;
	if (d->decision != STS_DECISION_ENFORCE && d->decision != STS_DECISION_TESTING)
		return true;
	match = sts_mx_match(&d->verdict->policy, h->name, NULL);
	if (match) {
		d->mx_used++;
		return true;
	}
	if (d->decision == STS_DECISION_TESTING) {
		d->host_mismatch = true;
	} else {
		char reason[DNS_NAME_MAX + 64];

		snprintf(reason, sizeof(reason), "mx-mismatch: %s not in the policy", h->name);
		record_session(d, SMTP_TLS_RESULT_VALIDATION_FAILURE, h->name, NULL, NULL, reason);
	}
	log_msg(LOG_LVL_INFO, d->qid,
		"%s: MX host %s does not match the MTA-STS policy, sts=%s, "
		"sts_result=validation-failure%s",
		d->domain, h->name, d->result.sts,
		d->decision == STS_DECISION_ENFORCE ? ": skipped" : " (testing: used anyway)");
	if (d->decision == STS_DECISION_ENFORCE) {
		d->mx_mismatches++;
		return false;
	}
	return true;
}

static void on_recheck(void *arg, struct sts_verdict *v);
static void apply_policy(struct delivery *d);
static void dane_refuse(struct delivery *d, const struct dns_mx_host *h,
			enum smtp_tls_result result, const char *why);

/* Every MX host failed or was skipped: one deferral for all recipients,
 * with the reason that says the most. */
static void settle_all_failed(struct delivery *d)
{
	char text[QUEUE_ERROR_MAX];

	if (d->decision == STS_DECISION_ENFORCE && d->mx_used == 0 && d->mx_mismatches > 0) {
		snprintf(text, sizeof(text), "no MX host of %s matches its MTA-STS policy (id %s)",
			 d->domain, d->verdict->id);
		d->last_dane = false;
		settle_all(d, DELIVERY_DEFER, "4.4.8", text, NULL, NULL, NULL,
			   SMTP_TLS_RESULT_VALIDATION_FAILURE);
	} else if (d->have_failure) {
		const char *dsn = d->last_dsn;

		if (d->decision == STS_DECISION_ENFORCE && d->policy_failures > 0)
			dsn = "4.7.5";
		settle_all(d, DELIVERY_DEFER, dsn, d->last_text, d->last_relay, d->last_tls,
			   d->last_mta[0] ? d->last_mta : NULL, d->last_sts_result);
	} else {
		snprintf(text, sizeof(text), "no usable MX host address for %s", d->domain);
		settle_all(d, DELIVERY_DEFER, "4.4.4", text, NULL, NULL, NULL,
			   SMTP_TLS_RESULT_SUCCESS);
	}
}

static void all_failed(struct delivery *d)
{
	if (d->decision == STS_DECISION_ENFORCE && !d->rechecked && d->dc->sts != NULL &&
	    (d->policy_failures > 0 || d->mx_mismatches > 0)) {
		/* RFC 8461 §5.2: a changed policy may list the MX we found. */
		d->rechecked = true;
		delivery_enter(d, D_RECHECK);
		return;
	}
	settle_all_failed(d);
	delivery_enter(d, D_DONE);
}

/* The MX walk: the next address of this host, or the next usable host,
 * gets a connection (D_SMTP); none left: all_failed(). */
static void next_candidate(struct delivery *d)
{
	if (d->aborted) {
		end_aborted(d);
		return;
	}
	while (d->host_i < d->mx->nhosts) {
		const struct dns_mx_host *h = &d->mx->hosts[d->host_i];
		/* a host not tried yet: its DANE verdict is not known */
		bool new_host = d->addr_i == 0 && d->dane_host != d->host_i + 1;

		if (new_host)
			d->host_dane = d->host_dane_judged = false;
		if (new_host && (h->naddrs == 0 || !host_allowed(d, h))) {
			if (h->naddrs == 0 && h->status != DNS_OK) {
				char text[QUEUE_ERROR_MAX];

				snprintf(text, sizeof(text),
					 "Host or domain name not found. Name service error for "
					 "name=%s type=A: %s",
					 h->name,
					 h->why && h->why[0] ? h->why : dns_status_name(h->status));
				if (!d->have_failure)
					note_failure(
						d, h->status == DNS_TEMPFAIL ? "4.4.3" : "4.4.4",
						text, NULL, NULL, NULL, SMTP_TLS_RESULT_SUCCESS);
			}
			d->host_i++;
			continue;
		}
		if (new_host && d->dane_on) {
			const char *why;

			if (dane_applies(d->mx, h, &why)) {
				delivery_enter(d, D_DANE); /* on_dane() walks on */
				return;
			}
			log_msg(LOG_LVL_DEBUG, d->qid, "%s: MX host %s: no DANE (%s)", d->domain,
				h->name, why);
			if (d->dane_required) {
				dane_refuse(d, h, SMTP_TLS_RESULT_DANE_REQUIRED, why);
				d->host_i++;
				continue;
			}
		}
		d->dane_host = d->host_i + 1;
		if (d->addr_i >= h->naddrs) {
			d->host_i++;
			d->addr_i = 0;
			continue;
		}
		conn_start(d, h, &h->addrs[d->addr_i++], true);
		return;
	}
	all_failed(d);
}

/* DANE refuses MX host h (RFC 7672 §2.1.1: its TLSA lookup failed; or the
 * domain's level `dane` demands records it does not have): the host is not
 * used, never plaintext instead; one TLS-RPT session of the tlsa policy. */
static void dane_refuse(struct delivery *d, const struct dns_mx_host *h,
			enum smtp_tls_result result, const char *why)
{
	char text[QUEUE_ERROR_MAX];

	d->host_dane_judged = true;
	if (d->dane == NULL)
		d->dane = calloc(1, sizeof(*d->dane)); /* NULL: recorded without records */
	if (result == SMTP_TLS_RESULT_DANE_REQUIRED && d->dane != NULL &&
	    d->dane_host != d->host_i + 1)
		d->dane->tlsa.n = 0; /* no lookup was made for this host */
	snprintf(text, sizeof(text), "MX host %s not used: %s (%s)", h->name,
		 result == SMTP_TLS_RESULT_DNSSEC_INVALID
			 ? "its TLSA records could not be looked up securely"
			 : "TLS policy level dane needs usable DNSSEC-validated TLSA records",
		 why);
	log_msg(LOG_LVL_INFO, d->qid, "%s, dane=yes, sts_result=%s", text,
		smtp_tls_result_name(result));
	record_session(d, result, h->name, NULL, NULL, why);
	note_failure(d, "4.7.5", text, NULL, NULL, h->name, result);
	d->host_dane_judged = false;
	d->last_dane = true;
	d->dane_host = d->host_i + 1;
	d->addr_i = 0;
}

static void on_dane(void *arg, const struct dane_result *res)
{
	struct delivery *d = arg;
	const struct dns_mx_host *h = &d->mx->hosts[d->host_i];

	d->dl = NULL;
	if (d->aborted) {
		end_aborted(d);
		return;
	}
	if (d->dane == NULL)
		d->dane = malloc(sizeof(*d->dane));
	if (d->dane == NULL) {
		settle_all(d, DELIVERY_DEFER, "4.3.0", "local error: out of memory", NULL, NULL,
			   NULL, SMTP_TLS_RESULT_SUCCESS);
		delivery_enter(d, D_DONE);
		return;
	}
	*d->dane = *res;
	d->dane_host = d->host_i + 1;
	switch (res->state) {
	case DANE_USABLE:
		d->host_dane = d->host_dane_judged = true;
		log_msg(LOG_LVL_INFO, d->qid,
			"%s: MX host %s: DANE applies: %zu usable TLSA record(s) at %s", d->domain,
			h->name, smtp_tlsa_count_usable(&res->tlsa), res->qname);
		break;
	case DANE_FAILED:
		dane_refuse(d, h, SMTP_TLS_RESULT_DNSSEC_INVALID, res->why);
		d->host_i++;
		break;
	case DANE_NONE:
		log_msg(LOG_LVL_DEBUG, d->qid, "%s: MX host %s: no DANE (%s at %s)", d->domain,
			h->name, res->why, res->qname);
		if (d->dane_required) {
			dane_refuse(d, h, SMTP_TLS_RESULT_DANE_REQUIRED, res->why);
			d->host_i++;
		}
		break;
	}
	next_candidate(d);
}

static void on_recheck(void *arg, struct sts_verdict *v)
{
	struct delivery *d = arg;

	d->sl = NULL;
	if (v->cancelled || d->aborted) {
		sts_verdict_free(v);
		if (d->aborted) {
			end_aborted(d);
			return;
		}
		all_failed(d);
		return;
	}
	if (!v->changed) {
		log_msg(LOG_LVL_INFO, d->qid, "%s: MTA-STS policy re-checked: unchanged (id %s)",
			d->domain, d->verdict->id);
		sts_verdict_free(v);
		all_failed(d);
		return;
	}
	log_msg(LOG_LVL_INFO, d->qid, "%s: MTA-STS policy changed (id %s -> %s): trying again",
		d->domain, d->verdict->id, v->id);
	sts_verdict_free(d->verdict);
	d->verdict = v;
	apply_policy(d);
	d->host_i = d->addr_i = 0;
	d->dane_host = 0;
	d->have_failure = false;
	d->policy_failures = d->mx_mismatches = d->mx_used = 0;
	next_candidate(d);
}

/* ---- policy and MX resolution ---- */

/* DESIGN: TLS to a relay host is always verified against its name,
 * whatever its policy says (a policy can only add the MX name check). */
static void relay_tls(struct delivery *d)
{
	if (!d->relay)
		return;
	d->tls_level = SMTP_TLS_REQUIRE;
	d->tls_verify = true;
	d->check_tls = true;
}

/* The TLS demands of DESIGN.md for the verdict in d->verdict. */
/* The demands of a level alone (before MTA-STS and DANE tighten them). */
static void level_demands(struct delivery *d, enum tls_level l)
{
	d->tls_verify = l == TLS_LEVEL_VERIFY;
	d->check_tls = l == TLS_LEVEL_VERIFY;
	switch (l) {
	case TLS_LEVEL_NONE:
		d->tls_level = SMTP_TLS_NONE;
		break;
	case TLS_LEVEL_ENCRYPT:
	case TLS_LEVEL_VERIFY:
		d->tls_level = SMTP_TLS_REQUIRE;
		break;
	default: /* may, sts-only, dane (whose hosts without DANE are not used) */
		d->tls_level = SMTP_TLS_MAY;
		break;
	}
}

/* The TLS demands of DESIGN.md for the verdict in d->verdict: the level
 * (tls_policy_file, else tls_default), tightened by an MTA-STS enforce
 * policy; DANE tightens further per MX host once its TLSA records are
 * known (next_candidate). Nothing here ever loosens a listed level. */
static void apply_policy(struct delivery *d)
{
	const struct relay *r = d->dc->r;
	enum tls_default td = r->cfg.tls_default;

	if (d->flags & QUEUE_F_TLSRPT) {
		/* Our own TLS-RPT report mail carries TLS-Required: No: RFC 8460
		 * §5.3.1 and RFC 8689 §5 want it delivered despite the very TLS
		 * failures it reports: no MTA-STS, no DANE, no tls_policy_file
		 * level (nor tls_default = verify), STARTTLS when offered, any
		 * certificate, plaintext otherwise. To a relay host it still goes
		 * over verified TLS (below): that hop is our own configuration,
		 * and it may carry credentials. */
		d->decision = STS_DECISION_NONE;
		snprintf(d->result.sts, sizeof(d->result.sts), "none tls_required=no");
		d->level = TLS_LEVEL_MAY;
		d->level_listed = false;
		level_demands(d, TLS_LEVEL_MAY);
		d->dane_on = d->dane_required = false;
		relay_tls(d);
		return;
	}
	d->level_listed = !is_literal(d->domain) &&
			  tls_policy_lookup(r->tls_policy, d->domain, &d->level);
	if (!d->level_listed)
		d->level = td == TLS_DEFAULT_VERIFY    ? TLS_LEVEL_VERIFY
			   : td == TLS_DEFAULT_ENCRYPT ? TLS_LEVEL_ENCRYPT
						       : TLS_LEVEL_MAY;
	d->dane_required = d->level == TLS_LEVEL_DANE;
	d->dane_on = d->dane_required || (r->cfg.dane && d->level != TLS_LEVEL_STS_ONLY);
	d->decision = d->verdict ? d->verdict->decision : STS_DECISION_ABSENT;
	if (d->decision == STS_DECISION_ABSENT || d->verdict == NULL ||
	    d->verdict->source == STS_SOURCE_NONE) {
		d->decision = STS_DECISION_ABSENT;
		snprintf(d->result.sts, sizeof(d->result.sts), "absent");
	} else {
		snprintf(d->result.sts, sizeof(d->result.sts), "%s id=%s",
			 sts_decision_name(d->decision), d->verdict->id);
	}
	switch (d->decision) {
	case STS_DECISION_ENFORCE:
		d->tls_level = SMTP_TLS_REQUIRE;
		d->tls_verify = true;
		d->check_tls = true;
		break;
	case STS_DECISION_TESTING:
		/* checked and reported, delivered opportunistically, unless the
		 * domain's listed level demands more */
		if (d->level_listed)
			level_demands(d, d->level);
		else
			level_demands(d, TLS_LEVEL_MAY);
		d->check_tls = true;
		break;
	default:
		level_demands(d, d->level);
		break;
	}
	relay_tls(d);
}

static void on_mx(struct dns_mx_result *res, void *arg)
{
	struct delivery *d = arg;
	char text[QUEUE_ERROR_MAX];
	const char *why = res->why && res->why[0] ? res->why : dns_status_name(res->status);

	d->dq = NULL;
	d->mx = res;
	if (d->aborted || res->status == DNS_CANCELLED) {
		end_aborted(d);
		return;
	}
	if (res->status == DNS_OK) {
		next_candidate(d);
		return;
	}
	if (d->relay) {
		/* The relay host is our configuration, not the recipients'
		 * domain: nothing about its name is a reason to bounce. */
		snprintf(text, sizeof(text),
			 "Host or domain name not found. Name service error for relayhost "
			 "name=%s type=%s: %s",
			 d->domain, d->dc->r->cfg.relayhost_mx ? "MX" : "A", why);
		settle_all(d, DELIVERY_DEFER, res->status == DNS_TEMPFAIL ? "4.4.3" : "4.4.4", text,
			   NULL, NULL, NULL, SMTP_TLS_RESULT_SUCCESS);
		delivery_enter(d, D_DONE);
		return;
	}
	switch (res->status) {
	case DNS_NULL_MX:
		snprintf(text, sizeof(text), "Domain %s does not accept mail (nullMX)", d->domain);
		settle_all(d, DELIVERY_BOUNCE, "5.1.10", text, NULL, NULL, NULL,
			   SMTP_TLS_RESULT_SUCCESS);
		break;
	case DNS_NXDOMAIN:
		snprintf(text, sizeof(text),
			 "Host or domain name not found. Name service error for name=%s type=MX: "
			 "Host not found",
			 d->domain);
		settle_all(d, DELIVERY_BOUNCE, "5.1.2", text, NULL, NULL, NULL,
			   SMTP_TLS_RESULT_SUCCESS);
		break;
	case DNS_NO_ADDRESS:
	case DNS_NODATA:
		snprintf(text, sizeof(text),
			 "Host or domain name not found. Name service error for name=%s: "
			 "no address for any MX host (%s)",
			 d->domain, why);
		settle_all(d, DELIVERY_BOUNCE, "5.1.2", text, NULL, NULL, NULL,
			   SMTP_TLS_RESULT_SUCCESS);
		break;
	default:
		snprintf(text, sizeof(text),
			 "Host or domain name not found. Name service error for name=%s type=MX: "
			 "Host not found, try again (%s)",
			 d->domain, why);
		settle_all(d, DELIVERY_DEFER, "4.4.3", text, NULL, NULL, NULL,
			   SMTP_TLS_RESULT_SUCCESS);
		break;
	}
	delivery_enter(d, D_DONE);
}

static void on_policy(void *arg, struct sts_verdict *v)
{
	struct delivery *d = arg;

	d->sl = NULL;
	if (v->cancelled || d->aborted) {
		sts_verdict_free(v);
		end_aborted(d);
		return;
	}
	d->verdict = v;
	apply_policy(d);
	if (v->error_type != SMTP_TLS_RESULT_SUCCESS)
		/* Discovery or fetch failed; a cached policy may still apply. The
		 * engine reported the failure to TLS-RPT once (on_fetch_failed). */
		log_msg(LOG_LVL_INFO, d->qid, "%s: MTA-STS policy problem: %s (%s); sts=%s",
			d->domain, smtp_tls_result_name(v->error_type), v->error_detail,
			d->result.sts);
	delivery_enter(d, D_MX);
}

/* ---- the transition function ---- */

/* The only writer of d->stage (see enum dstage). It traces "old -> new" at
 * debug level and starts what the new stage waits for; a start that fails
 * moves on at once (no policy lookup: MX; no MX lookup or re-check: DONE).
 * The callbacks of those starts run from the loop, never inside them. */
static void delivery_enter(struct delivery *d, enum dstage next)
{
	enum dstage old = d->stage;

	if (old == D_DONE)
		return; /* final: the callback is already on its way */
	if (old != next)
		log_msg(LOG_LVL_DEBUG, d->qid, "delivery to %s: %s -> %s", d->domain,
			dstage_names[old], dstage_names[next]);
	d->stage = next;

	switch (next) {
	case D_POLICY:
		if (sts_engine_lookup(d->dc->sts, d->domain, on_policy, d, &d->sl) == 0)
			return;
		d->sl = NULL;
		log_msg(LOG_LVL_WARNING, d->qid, "%s: no MTA-STS lookup possible; sts=absent",
			d->domain);
		delivery_enter(d, D_MX);
		return;
	case D_MX:
		/* relayhost = [host]: that host's addresses, no MX lookup */
		if ((d->relay && !d->dc->r->cfg.relayhost_mx
			     ? dns_resolve_host(d->dc->dns, d->domain, on_mx, d, &d->dq)
			     : dns_resolve_mx(d->dc->dns, d->domain, on_mx, d, &d->dq)) != 0) {
			char text[QUEUE_ERROR_MAX];

			d->dq = NULL;
			snprintf(text, sizeof(text), "cannot look up the MX of %s", d->domain);
			settle_all(d, DELIVERY_DEFER, "4.4.3", text, NULL, NULL, NULL,
				   SMTP_TLS_RESULT_SUCCESS);
			delivery_enter(d, D_DONE);
		}
		return;
	case D_DANE:
		/* TLSA at the port the connection will use (a relay host's too) */
		if (dane_lookup(d->dc->dns, &d->mx->hosts[d->host_i], d->port, on_dane, d,
				&d->dl) == 0)
			return;
		d->dl = NULL;
		/* no lookup, no verdict: the host is not used (as a failed one) */
		dane_refuse(d, &d->mx->hosts[d->host_i], SMTP_TLS_RESULT_DNSSEC_INVALID,
			    "the TLSA lookup could not start");
		d->host_i++;
		next_candidate(d);
		return;
	case D_RECHECK:
		if (sts_engine_recheck(d->dc->sts, d->domain, d->verdict->id, on_recheck, d,
				       &d->sl) == 0)
			return;
		d->sl = NULL;
		settle_all_failed(d);
		delivery_enter(d, D_DONE);
		return;
	case D_DONE:
		/* The callback runs from the close callback of the kick timer:
		 * never inside delivery_start/abort, and after every handle of
		 * ours is gone. */
		d->result.aborted = d->aborted;
		uv_close((uv_handle_t *)&d->kick, on_kick_closed);
		return;
	case D_START:
	case D_SMTP: /* entered by conn_start/conn_reuse once d->conn runs */
	case D_COUNT:
		return;
	}
}

/* ---- public ---- */

int delivery_start(struct delivery_ctx *dc, const struct queue_envelope *env, const char *domain,
		   const size_t *idx, size_t n, delivery_done_cb cb, void *arg,
		   struct delivery **out)
{
	struct delivery *d;
	size_t i;

	if (dc->r->cfg.relayhost[0] != '\0')
		domain = dc->r->cfg.relayhost; /* the next hop for every recipient */
	if (n == 0 || n > SMTP_CLIENT_MAX_RCPTS || strlen(domain) > DNS_NAME_MAX)
		return -1;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return -1;
	d->dc = dc;
	d->fd = -1;
	d->relay = dc->r->cfg.relayhost[0] != '\0';
	d->port = d->relay ? dc->r->cfg.relayhost_port : dc->r->cfg.smtp_port;
	snprintf(d->qid, sizeof(d->qid), "%s", env->id);
	snprintf(d->domain, sizeof(d->domain), "%s", domain);
	snprintf(d->sender, sizeof(d->sender), "%s", env->sender);
	d->flags = env->flags;
	d->data_offset = env->data_offset;
	d->size = env->size;
	d->cb = cb;
	d->arg = arg;
	d->n = n;
	d->addrs = calloc(n, sizeof(*d->addrs));
	d->addr_ptrs = calloc(n, sizeof(*d->addr_ptrs));
	d->rcpts = calloc(n, sizeof(*d->rcpts));
	if (d->addrs == NULL || d->addr_ptrs == NULL || d->rcpts == NULL)
		goto fail;
	for (i = 0; i < n; i++) {
		if (idx[i] >= env->nrcpts)
			goto fail;
		d->addrs[i] = strdup(env->rcpts[idx[i]].address);
		if (d->addrs[i] == NULL)
			goto fail;
		d->addr_ptrs[i] = d->addrs[i];
		d->rcpts[i].index = idx[i];
		d->rcpts[i].address = d->addrs[i];
		d->rcpts[i].status = DELIVERY_DEFER;
	}
	d->result.qid = d->qid;
	d->result.domain = d->domain;
	d->result.nrcpts = n;
	d->result.rcpts = d->rcpts;
	snprintf(d->result.sts, sizeof(d->result.sts), "absent");
	d->fd = queue_open_data(dc->r->queue, env);
	if (d->fd < 0) {
		log_msg(LOG_LVL_ERROR, d->qid, "cannot open the queued message: %s",
			strerror(errno));
		goto fail;
	}
	if (uv_timer_init(dc->r->loop, &d->kick) != 0)
		goto fail;
	d->kick.data = d;
	dc->live++;
	if (out != NULL)
		*out = d;

	apply_policy(d); /* absent until the engine says otherwise */
	if (d->flags & QUEUE_F_TLSRPT) {
		log_msg(LOG_LVL_INFO, d->qid, "%s: TLS-RPT report mail (TLS-Required: No): %s",
			d->domain,
			d->relay ? "no MTA-STS, verified TLS to the relay host"
				 : "no MTA-STS, opportunistic TLS");
		delivery_enter(d, D_MX);
	} else if (dc->sts != NULL && !is_literal(d->domain)) {
		delivery_enter(d, D_POLICY);
	} else {
		/* An address literal has no MTA-STS policy (nor TLS-RPT): tls_default. */
		delivery_enter(d, D_MX);
	}
	return 0;
fail:
	if (d->fd >= 0)
		close(d->fd);
	for (i = 0; i < n && d->addrs != NULL; i++)
		free(d->addrs[i]);
	free(d->addrs);
	free(d->addr_ptrs);
	free(d->rcpts);
	free(d);
	return -1;
}

void delivery_abort(struct delivery *d)
{
	if (d->aborted || d->stage == D_DONE)
		return;
	d->aborted = true;
	switch (d->stage) {
	case D_POLICY:
	case D_RECHECK:
		if (d->sl != NULL) {
			sts_engine_cancel(d->sl);
			d->sl = NULL;
		}
		end_aborted(d);
		break;
	case D_MX:
		if (d->dq != NULL) {
			dns_cancel(d->dq);
			d->dq = NULL;
		}
		end_aborted(d);
		break;
	case D_DANE:
		if (d->dl != NULL) {
			dane_cancel(d->dl);
			d->dl = NULL;
		}
		end_aborted(d);
		break;
	case D_SMTP:
		if (d->conn != NULL)
			conn_close(d->conn); /* conn_end() sees d->aborted */
		else
			end_aborted(d);
		break;
	case D_START:
	case D_COUNT:
		end_aborted(d);
		break;
	case D_DONE:
		break;
	}
}
