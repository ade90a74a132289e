/* The STARTTLS probe of `stsrelay sts check --probe`: greeting, EHLO, STARTTLS,
 * TLS handshake with SNI and the certificate check for one MX host, then QUIT. */
#define LOG_COMPONENT LOG_C_SMTP /* program name in logs, see relay/core/log.h */
#include "relay/cli/mx_probe.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/log.h"
#include "smtp/reply.h"

enum pstate {
	P_CONNECT, /* TCP connect under way */
	P_BANNER,  /* waiting for the greeting */
	P_EHLO,
	P_STARTTLS,
	P_TLS,      /* smtp_conn runs the handshake */
	P_EHLO_TLS, /* EHLO again inside TLS: proves the channel works */
	P_QUIT,
	P_DONE, /* closing; the callback follows */
	P_STATE_COUNT
};

static const char *const state_names[P_STATE_COUNT] = {
	"CONNECT", "BANNER", "EHLO", "STARTTLS", "TLS", "EHLO-TLS", "QUIT", "DONE",
};

/* What a stage waits for, for "timed out waiting for ..." texts. */
static const char *const state_waits[P_STATE_COUNT] = {
	"the connection",        "the greeting",      "the reply to EHLO",
	"the reply to STARTTLS", "the TLS handshake", "the reply to EHLO after STARTTLS",
	"the reply to QUIT",     "nothing",
};

struct mx_probe {
	struct mx_probe_config cfg;
	struct sockaddr_storage addrs[MX_PROBE_MAX_ADDRS];
	size_t naddrs, addr_i;
	struct smtp_conn *conn;
	enum pstate state;
	mx_probe_cb cb;
	void *arg;
	struct mx_probe_result res;
	bool dane; /* check the certificate against tlsa/base instead of WebPKI */
	struct smtp_tlsa_set tlsa;
	char base[DNS_NAME_MAX + 1];
	struct smtp_reply_parser rp; /* large: the probe lives on the heap */
};

static void on_connected(struct smtp_conn *c, void *arg);
static void on_data(struct smtp_conn *c, void *arg, const char *buf, size_t len);
static void on_eof(struct smtp_conn *c, void *arg);
static void on_timeout(struct smtp_conn *c, void *arg);
static void on_tls_done(struct smtp_conn *c, void *arg, bool ok);
static void on_closed(struct smtp_conn *c, void *arg);

static const struct smtp_conn_ops probe_ops = {
	.connected = on_connected,
	.data = on_data,
	.eof = on_eof,
	.timeout = on_timeout,
	.tls_done = on_tls_done,
	.drained = NULL,
	.closed = on_closed,
};

/* The first reason wins: later ones (a QUIT that fails after a refused
 * STARTTLS) only follow from it. result_type SUCCESS: the reason has no
 * RFC 8460 result type of its own. */
static void note(struct mx_probe *p, enum smtp_tls_result result_type, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void note(struct mx_probe *p, enum smtp_tls_result result_type, const char *fmt, ...)
{
	va_list ap;

	if (p->res.detail[0] != '\0')
		return;
	if (result_type != SMTP_TLS_RESULT_SUCCESS && p->res.result_type == SMTP_TLS_RESULT_SUCCESS)
		p->res.result_type = result_type;
	va_start(ap, fmt);
	vsnprintf(p->res.detail, sizeof(p->res.detail), fmt, ap);
	va_end(ap);
}

static void enter(struct mx_probe *p, enum pstate next);

static void send_line(struct mx_probe *p, const char *line)
{
	size_t n = strlen(line);

	if (smtp_conn_write(p->conn, line, n) != (ssize_t)n) {
		note(p, SMTP_TLS_RESULT_SUCCESS, "cannot write to %s",
		     smtp_conn_info(p->conn)->relay);
		enter(p, P_DONE);
	}
}

/* The only place the state changes: sends the command of the new state and
 * arms its timeout. */
static void enter(struct mx_probe *p, enum pstate next)
{
	char line[300];

	log_debug("mx probe %s: %s -> %s", p->res.host, state_names[p->state], state_names[next]);
	p->state = next;
	if (next != P_DONE)
		smtp_conn_timer(p->conn, p->cfg.stage_timeout_ms);
	switch (next) {
	case P_CONNECT:
	case P_BANNER:
		break;
	case P_EHLO:
	case P_EHLO_TLS:
		snprintf(line, sizeof(line), "EHLO %s\r\n", p->cfg.helo_name);
		send_line(p, line);
		break;
	case P_STARTTLS:
		send_line(p, "STARTTLS\r\n");
		break;
	case P_TLS:
		p->res.starttls = true;
		if (smtp_conn_start_tls(p->conn, p->cfg.tls, false,
					p->dane ? &(struct smtp_conn_dane){ &p->tlsa, p->base }
						: NULL) != 0) {
			const struct smtp_conn_info *in = smtp_conn_info(p->conn);

			note(p, in->tls_result, "TLS handshake failed: %s", in->tls_reason);
			enter(p, P_DONE);
		}
		break;
	case P_QUIT:
		send_line(p, "QUIT\r\n");
		break;
	case P_DONE:
		smtp_conn_close(p->conn);
		break;
	case P_STATE_COUNT:
		break;
	}
}

/* A complete reply in the current state; `extra` bytes followed it in the
 * same read. Chooses the next state. */
static void on_reply(struct mx_probe *p, const struct smtp_reply *r, size_t extra)
{
	char sum[256];
	struct smtp_ehlo_caps caps;

	smtp_reply_summary(r, sum, sizeof(sum));
	switch (p->state) {
	case P_BANNER:
		if (!smtp_reply_ok(r)) {
			note(p, SMTP_TLS_RESULT_SUCCESS, "greeting refused: %s", sum);
			enter(p, P_QUIT);
			return;
		}
		enter(p, P_EHLO);
		return;
	case P_EHLO:
		if (!smtp_reply_ok(r) || smtp_ehlo_parse(r, &caps) != 0) {
			/* No ESMTP means no STARTTLS (RFC 3207). */
			note(p, SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED, "EHLO refused: %s", sum);
			enter(p, P_QUIT);
			return;
		}
		p->res.esmtp = true;
		if (!caps.starttls) {
			note(p, SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED,
			     "STARTTLS not offered in the EHLO reply");
			enter(p, P_QUIT);
			return;
		}
		enter(p, P_STARTTLS);
		return;
	case P_STARTTLS:
		if (r->code != 220) {
			note(p, SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED, "STARTTLS refused: %s",
			     sum);
			enter(p, P_QUIT);
			return;
		}
		if (extra > 0) {
			/* Plaintext after the 220 would be read as if it came
			 * through TLS (CVE-2011-0411 style injection). */
			note(p, SMTP_TLS_RESULT_VALIDATION_FAILURE,
			     "%zu bytes of plaintext after the STARTTLS reply (injection?)", extra);
			enter(p, P_DONE);
			return;
		}
		enter(p, P_TLS);
		return;
	case P_EHLO_TLS:
		if (!smtp_reply_ok(r))
			note(p, SMTP_TLS_RESULT_SUCCESS, "EHLO after STARTTLS refused: %s", sum);
		enter(p, P_QUIT);
		return;
	case P_QUIT:
		enter(p, P_DONE);
		return;
	case P_CONNECT:
	case P_TLS:
	case P_DONE:
	case P_STATE_COUNT:
		return; /* no command outstanding: ignore */
	}
}

static void on_data(struct smtp_conn *c, void *arg, const char *buf, size_t len)
{
	struct mx_probe *p = arg;

	(void)c;
	while (len > 0 && p->state != P_DONE && p->state != P_TLS) {
		size_t used = 0;
		const char *err = NULL;
		int rc = smtp_reply_feed(&p->rp, buf, len, &used, &err);

		if (rc < 0) {
			note(p, SMTP_TLS_RESULT_SUCCESS, "protocol error from %s: %s",
			     smtp_conn_info(p->conn)->relay, err ? err : "bad reply");
			enter(p, P_DONE);
			return;
		}
		buf += used;
		len -= used;
		if (rc == 0)
			return;
		on_reply(p, &p->rp.reply, len);
	}
}

static void on_connected(struct smtp_conn *c, void *arg)
{
	struct mx_probe *p = arg;

	(void)c;
	p->res.connected = true;
	enter(p, P_BANNER);
}

static void on_eof(struct smtp_conn *c, void *arg)
{
	struct mx_probe *p = arg;

	(void)c;
	if (p->state == P_DONE)
		return;
	if (p->state != P_QUIT)
		note(p, SMTP_TLS_RESULT_SUCCESS, "connection closed by %s while waiting for %s",
		     smtp_conn_info(p->conn)->relay, state_waits[p->state]);
	enter(p, P_DONE);
}

static void on_timeout(struct smtp_conn *c, void *arg)
{
	struct mx_probe *p = arg;

	(void)c;
	if (p->state == P_DONE)
		return;
	if (p->state == P_TLS)
		note(p, SMTP_TLS_RESULT_VALIDATION_FAILURE, "timed out during the TLS handshake");
	else if (p->state != P_QUIT)
		note(p, SMTP_TLS_RESULT_SUCCESS, "timed out waiting for %s", state_waits[p->state]);
	enter(p, P_DONE);
}

static void on_tls_done(struct smtp_conn *c, void *arg, bool ok)
{
	struct mx_probe *p = arg;
	const struct smtp_conn_info *in = smtp_conn_info(c);

	if (p->state != P_TLS)
		return;
	if (!ok) {
		note(p, in->tls_result, "TLS handshake failed: %s", in->tls_reason);
		enter(p, P_DONE);
		return;
	}
	p->res.tls = true;
	snprintf(p->res.tls_version, sizeof(p->res.tls_version), "%s", in->tls_version);
	p->res.verified = in->tls_verified;
	if (!in->tls_verified)
		note(p,
		     in->tls_result != SMTP_TLS_RESULT_SUCCESS ? in->tls_result
							       : SMTP_TLS_RESULT_VALIDATION_FAILURE,
		     "%s", in->tls_reason[0] ? in->tls_reason : "certificate not verified");
	enter(p, P_EHLO_TLS);
}

static int try_address(struct mx_probe *p);

static void finish(struct mx_probe *p)
{
	p->cb(p->arg, &p->res);
	smtp_conn_free(p->conn);
	free(p);
}

static void on_closed(struct smtp_conn *c, void *arg)
{
	struct mx_probe *p = arg;
	const struct smtp_conn_info *in = smtp_conn_info(c);

	if (!in->connected) {
		/* Remember why; another address may still answer. */
		snprintf(p->res.detail, sizeof(p->res.detail), "%s", in->connect_err);
		smtp_conn_free(c);
		p->conn = NULL;
		while (p->addr_i < p->naddrs) {
			if (try_address(p) == 0)
				return;
		}
		p->conn = NULL;
		p->cb(p->arg, &p->res);
		free(p);
		return;
	}
	finish(p);
}

/* Connects to the next address. 0 started; -1 nothing started (p->conn NULL). */
static int try_address(struct mx_probe *p)
{
	const struct sockaddr_storage *a = &p->addrs[p->addr_i++];
	char ip[SMTP_CONN_IP_MAX] = "";

	if (a->ss_family == AF_INET6)
		uv_ip6_name((const struct sockaddr_in6 *)a, ip, sizeof(ip));
	else
		uv_ip4_name((const struct sockaddr_in *)a, ip, sizeof(ip));
	snprintf(p->res.address, sizeof(p->res.address),
		 a->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)p->cfg.port);
	p->conn = smtp_conn_new(p->cfg.loop, &probe_ops, p);
	if (p->conn == NULL)
		return -1;
	smtp_reply_parser_init(&p->rp);
	p->state = P_CONNECT;
	if (smtp_conn_connect(p->conn, p->res.host, a, p->cfg.port, p->cfg.connect_timeout_ms) !=
	    0) {
		snprintf(p->res.detail, sizeof(p->res.detail), "cannot connect to %s",
			 p->res.address);
		smtp_conn_free(p->conn);
		p->conn = NULL;
		return -1;
	}
	return 0;
}

int mx_probe_start(const struct mx_probe_config *cfg, const char *host,
		   const struct sockaddr_storage *addrs, size_t naddrs,
		   const struct smtp_conn_dane *dane, mx_probe_cb cb, void *arg)
{
	struct mx_probe *p;
	size_t i;

	if (naddrs == 0 || host == NULL || strlen(host) > DNS_NAME_MAX || cfg->tls == NULL)
		return -1;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -1;
	p->cfg = *cfg;
	p->cb = cb;
	p->arg = arg;
	snprintf(p->res.host, sizeof(p->res.host), "%s", host);
	if (dane != NULL) {
		p->dane = p->res.dane = true;
		p->tlsa = *dane->tlsa;
		snprintf(p->base, sizeof(p->base), "%s", dane->base ? dane->base : host);
	}
	p->naddrs = naddrs < MX_PROBE_MAX_ADDRS ? naddrs : MX_PROBE_MAX_ADDRS;
	for (i = 0; i < p->naddrs; i++)
		p->addrs[i] = addrs[i];
	/* Only the first try may fail synchronously; later ones run from
	 * on_closed, where a failure ends the probe through the callback. */
	if (try_address(p) != 0) {
		free(p);
		return -1;
	}
	return 0;
}
