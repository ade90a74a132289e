/* One outbound SMTP connection on the libuv loop: TCP connect with a timeout,
 * plaintext or TLS (smtp/tls.h) reads and writes, STARTTLS, one timer, close. */
#include "relay/net/smtp_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUF 65536

struct smtp_conn {
	uv_loop_t *loop;
	const struct smtp_conn_ops *ops;
	void *arg;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t creq;
	uv_write_t wreq;
	int open_handles;
	bool started; /* smtp_conn_connect() got as far as the handles */
	bool closing, eof_sent, writing;
	struct smtp_tls *tls;
	struct smtp_conn_info info;

	/* Two output buffers: one on its way (uv_write keeps the pointer), one
	 * collecting; swapped when the write completes. */
	char *wbuf, *pbuf;
	size_t wlen, wcap, plen, pcap;
	char rbuf[READ_BUF];
};

uint32_t smtp_conn_env_timeout_ms(const char *name, uint32_t dflt)
{
	const char *v = getenv(name);
	char *end;
	double s;

	if (v == NULL || *v == '\0')
		return dflt;
	errno = 0;
	s = strtod(v, &end);
	if (errno != 0 || *end != '\0' || !(s > 0) || s > 86400)
		return dflt;
	return (uint32_t)(s * 1000);
}

struct smtp_conn *smtp_conn_new(uv_loop_t *loop, const struct smtp_conn_ops *ops, void *arg)
{
	struct smtp_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->loop = loop;
	c->ops = ops;
	c->arg = arg;
	return c;
}

void smtp_conn_free(struct smtp_conn *c)
{
	if (c == NULL)
		return;
	if (c->tls != NULL)
		smtp_tls_free(c->tls);
	free(c->wbuf);
	free(c->pbuf);
	free(c);
}

const struct smtp_conn_info *smtp_conn_info(const struct smtp_conn *c)
{
	return &c->info;
}

struct smtp_tls *smtp_conn_tls(const struct smtp_conn *c)
{
	return c->tls;
}

bool smtp_conn_writing(const struct smtp_conn *c)
{
	return c->writing;
}

/* ---- closing ---- */

static void on_handle_closed(uv_handle_t *h)
{
	struct smtp_conn *c = h->data;

	/* The closed callback may free c: nothing after it. */
	if (--c->open_handles == 0)
		c->ops->closed(c, c->arg);
}

void smtp_conn_close(struct smtp_conn *c)
{
	if (c->closing || !c->started)
		return;
	c->closing = true;
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* The stream is unusable: the peer closed (EOF, a TLS close_notify), or a
 * read, a write or TLS failed. Reported once, as ops.eof; from loop
 * callbacks only. */
static void report_lost(struct smtp_conn *c)
{
	if (c->eof_sent || c->closing)
		return;
	c->eof_sent = true;
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->ops->eof(c, c->arg);
}

/* ---- timer ---- */

static void on_timer(uv_timer_t *t)
{
	struct smtp_conn *c = t->data;

	if (c->closing)
		return;
	if (!c->info.connected) {
		c->info.connect_failed = true;
		snprintf(c->info.connect_err, sizeof(c->info.connect_err),
			 "connect to %s: Connection timed out", c->info.relay);
		smtp_conn_close(c);
		return;
	}
	c->ops->timeout(c, c->arg);
}

void smtp_conn_timer(struct smtp_conn *c, uint32_t ms)
{
	if (c->closing || !c->started)
		return;
	uv_timer_start(&c->timer, on_timer, ms == 0 ? 1 : ms, 0);
}

/* ---- writing ---- */

static int pending_reserve(struct smtp_conn *c, size_t more)
{
	size_t need = c->plen + more, cap;
	char *p;

	if (more > SMTP_CONN_OUT_MAX || need > SMTP_CONN_OUT_MAX)
		return -1;
	if (need <= c->pcap)
		return 0;
	cap = c->pcap ? c->pcap : 4096;
	while (cap < need)
		cap *= 2;
	if (cap > SMTP_CONN_OUT_MAX)
		cap = SMTP_CONN_OUT_MAX;
	p = realloc(c->pbuf, cap);
	if (p == NULL)
		return -1;
	c->pbuf = p;
	c->pcap = cap;
	return 0;
}

/* Moves TLS records waiting in the memory BIO to the pending buffer. */
static int take_tls(struct smtp_conn *c)
{
	size_t n;

	if (c->tls == NULL)
		return 0;
	while ((n = smtp_tls_pending(c->tls)) > 0) {
		if (pending_reserve(c, n) != 0)
			return -1;
		n = smtp_tls_take(c->tls, c->pbuf + c->plen, n);
		if (n == 0)
			break;
		c->plen += n;
	}
	return 0;
}

static void on_write(uv_write_t *req, int status);

/* Starts at most one write: the pending buffer goes out unless a write is
 * already in flight (then on_write starts the next). One write at a time
 * keeps the order and is the back-pressure. -1 on a socket error. */
static int start_write(struct smtp_conn *c)
{
	char *t;
	size_t tcap;
	uv_buf_t b;

	if (c->writing || c->closing || c->plen == 0 || !c->info.connected)
		return 0;
	/* swap: the pending buffer goes out, the other one collects */
	t = c->wbuf;
	tcap = c->wcap;
	c->wbuf = c->pbuf;
	c->wcap = c->pcap;
	c->wlen = c->plen;
	c->pbuf = t;
	c->pcap = tcap;
	c->plen = 0;
	b = uv_buf_init(c->wbuf, (unsigned)c->wlen);
	c->wreq.data = c;
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0)
		return -1;
	c->writing = true;
	return 0;
}

static void on_write(uv_write_t *req, int status)
{
	struct smtp_conn *c = req->data;

	c->writing = false;
	c->wlen = 0;
	if (c->closing)
		return;
	if (status < 0 || start_write(c) != 0) {
		/* The peer is gone. If its EOF was already reported, the owner is
		 * waiting only for this write to end before it closes: tell it,
		 * or it would sit until its stage timer (minutes) fires. */
		if (!c->eof_sent)
			report_lost(c);
		else if (c->ops->drained != NULL)
			c->ops->drained(c, c->arg);
		return;
	}
	if (!c->writing && c->ops->drained != NULL)
		c->ops->drained(c, c->arg);
}

/* Plaintext per TLS record, and what one record may add to it (header,
 * tag, padding, MAC: 5 + 256 + 64 with room to spare). */
#define TLS_RECORD_PLAIN 16384
#define TLS_RECORD_EXTRA 1024

ssize_t smtp_conn_write(struct smtp_conn *c, const void *buf, size_t len)
{
	size_t done = 0;

	if (c->closing || !c->info.connected || c->eof_sent)
		return -1;
	if (len == 0)
		return 0;
	if (c->tls != NULL) {
		if (!c->info.tls_up)
			return -1; /* no plaintext into a handshake */
		/* Record by record while the ciphertext still fits the bound: a
		 * piece that became ciphertext is sent, and counted; nothing else
		 * is. */
		while (done < len) {
			size_t n = len - done;

			if (n > TLS_RECORD_PLAIN)
				n = TLS_RECORD_PLAIN;
			if (c->plen + n + TLS_RECORD_EXTRA > SMTP_CONN_OUT_MAX)
				break;
			if (smtp_tls_write(c->tls, (const char *)buf + done, n) != (ssize_t)n ||
			    take_tls(c) != 0)
				return -1;
			done += n;
		}
	} else {
		done = len;
		if (c->plen + done > SMTP_CONN_OUT_MAX)
			done = SMTP_CONN_OUT_MAX - c->plen;
		if (done > 0) {
			if (pending_reserve(c, done) != 0)
				return -1;
			memcpy(c->pbuf + c->plen, buf, done);
			c->plen += done;
		}
	}
	if (start_write(c) != 0)
		return -1;
	return (ssize_t)done;
}

/* ---- TLS ---- */

/* A failure always has a result type: validation-failure when no
 * certificate verdict names a better one. */
static void tls_failed(struct smtp_conn *c, enum smtp_tls_result result, const char *reason)
{
	c->info.tls_failed = true;
	c->info.tls_result = result != SMTP_TLS_RESULT_SUCCESS ? result
							       : SMTP_TLS_RESULT_VALIDATION_FAILURE;
	snprintf(c->info.tls_reason, sizeof(c->info.tls_reason), "%s", reason);
}

/* One handshake step: 1 done, 0 again, -1 failed (info filled in). */
static int tls_step(struct smtp_conn *c)
{
	int rc = smtp_tls_handshake(c->tls);

	if (take_tls(c) != 0 || start_write(c) != 0) {
		tls_failed(c, SMTP_TLS_RESULT_VALIDATION_FAILURE, "cannot send the TLS handshake");
		return -1;
	}
	if (rc == SMTP_TLS_AGAIN)
		return 0;
	if (rc == SMTP_TLS_DONE) {
		const char *v = smtp_tls_version(c->tls);

		c->info.tls_up = true;
		snprintf(c->info.tls_version, sizeof(c->info.tls_version), "%s", v ? v : "TLS");
		c->info.tls_verified = smtp_tls_verified(c->tls);
		c->info.tls_result = smtp_tls_result_type(c->tls); /* SUCCESS iff verified */
		snprintf(c->info.tls_reason, sizeof(c->info.tls_reason), "%s",
			 smtp_tls_reason(c->tls));
		return 1;
	}
	tls_failed(c, smtp_tls_result_type(c->tls), smtp_tls_reason(c->tls));
	c->info.tls_handshake_error = true;
	return -1;
}

int smtp_conn_start_tls(struct smtp_conn *c, struct smtp_tls_ctx *ctx, bool verify,
			const struct smtp_conn_dane *dane)
{
	char err[SMTP_CONN_REASON_MAX];

	if (c->closing || !c->info.connected || c->tls != NULL)
		return -1;
	c->tls = smtp_tls_new(ctx, c->info.host, verify, err, sizeof(err));
	if (c->tls == NULL) {
		tls_failed(c, SMTP_TLS_RESULT_VALIDATION_FAILURE, err);
		return -1;
	}
	if (dane != NULL) {
		c->info.dane = true;
		if (smtp_tls_set_dane(c->tls, dane->tlsa, dane->base, err, sizeof(err)) != 0) {
			/* never a handshake without the demanded check */
			tls_failed(c, SMTP_TLS_RESULT_TLSA_INVALID, err);
			return -1;
		}
	}
	return tls_step(c) < 0 ? -1 : 0; /* the ClientHello: never done at once */
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct smtp_conn *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void feed_tls(struct smtp_conn *c, const char *buf, size_t n)
{
	char plain[16384];

	if (smtp_tls_feed(c->tls, buf, n) != 0) {
		report_lost(c);
		return;
	}
	if (!c->info.tls_up) {
		int rc;

		if (c->info.tls_failed)
			return; /* the session was told; bytes after that mean nothing */
		rc = tls_step(c);
		if (rc == 0)
			return;
		c->ops->tls_done(c, c->arg, rc > 0);
		if (rc < 0 || c->closing)
			return;
		/* Application data may have come with the last handshake flight. */
	}
	/* Until OpenSSL wants more ciphertext: a record left in the BIO would
	 * wait for the next socket read, which may never come (an MX that sends
	 * each pipelined reply as its own record answers 200 RCPTs in one read).
	 * Each record consumes at least 22 bytes of what was fed, so the rounds
	 * are bounded by READ_BUF. */
	while (!c->closing && !c->eof_sent) {
		ssize_t r = smtp_tls_read(c->tls, plain, sizeof(plain));

		/* TLS 1.3 may answer post-handshake messages */
		if (take_tls(c) != 0 || start_write(c) != 0) {
			report_lost(c);
			return;
		}
		if (r > 0) {
			c->ops->data(c, c->arg, plain, (size_t)r);
			continue;
		}
		if (r != 0)
			report_lost(c); /* close_notify or a TLS error */
		return;
	}
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct smtp_conn *c = s->data;

	if (c->closing || c->eof_sent)
		return;
	if (nread < 0) {
		if (c->tls != NULL && !c->info.tls_up && !c->info.tls_failed) {
			uv_read_stop(s);
			tls_failed(c, SMTP_TLS_RESULT_VALIDATION_FAILURE,
				   "connection closed during the TLS handshake");
			c->ops->tls_done(c, c->arg, false);
			return;
		}
		report_lost(c);
		return;
	}
	if (nread == 0)
		return;
	if (c->tls == NULL)
		c->ops->data(c, c->arg, buf->base, (size_t)nread);
	else
		feed_tls(c, buf->base, (size_t)nread);
}

/* ---- connecting ---- */

static void on_connect(uv_connect_t *req, int status)
{
	struct smtp_conn *c = req->data;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (c->closing)
		return; /* closed meanwhile: uv_close already under way */
	uv_timer_stop(&c->timer);
	if (status < 0) {
		c->info.connect_failed = true;
		snprintf(c->info.connect_err, sizeof(c->info.connect_err), "connect to %s: %s",
			 c->info.relay, uv_strerror(status));
		smtp_conn_close(c);
		return;
	}
	c->info.connected = true;
	if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET6)
			uv_ip6_name((struct sockaddr_in6 *)&ss, c->info.local_ip,
				    sizeof(c->info.local_ip));
		else
			uv_ip4_name((struct sockaddr_in *)&ss, c->info.local_ip,
				    sizeof(c->info.local_ip));
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
		c->info.connect_failed = true;
		snprintf(c->info.connect_err, sizeof(c->info.connect_err),
			 "connect to %s: cannot read from the socket", c->info.relay);
		smtp_conn_close(c);
		return;
	}
	c->ops->connected(c, c->arg);
}

int smtp_conn_connect(struct smtp_conn *c, const char *host, const struct sockaddr_storage *addr,
		      uint16_t port, uint32_t connect_timeout_ms)
{
	struct sockaddr_storage sa = *addr;
	int rc;

	if (c->started || host == NULL || strlen(host) > DNS_NAME_MAX ||
	    (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
		return -1;
	snprintf(c->info.host, sizeof(c->info.host), "%s", host);
	c->info.port = port;
	if (sa.ss_family == AF_INET6) {
		((struct sockaddr_in6 *)&sa)->sin6_port = htons(port);
		uv_ip6_name((struct sockaddr_in6 *)&sa, c->info.ip, sizeof(c->info.ip));
	} else {
		((struct sockaddr_in *)&sa)->sin_port = htons(port);
		uv_ip4_name((struct sockaddr_in *)&sa, c->info.ip, sizeof(c->info.ip));
	}
	snprintf(c->info.peer, sizeof(c->info.peer), "%s[%s]", c->info.host, c->info.ip);
	snprintf(c->info.relay, sizeof(c->info.relay), "%s:%u", c->info.peer, (unsigned)port);

	if (uv_tcp_init(c->loop, &c->tcp) != 0)
		return -1;
	c->tcp.data = c;
	c->open_handles++;
	if (uv_timer_init(c->loop, &c->timer) != 0) {
		/* the tcp handle must still go through uv_close: report as a failure */
		c->timer.data = c;
		c->started = true;
		c->closing = true;
		c->info.connect_failed = true;
		snprintf(c->info.connect_err, sizeof(c->info.connect_err),
			 "connect to %s: cannot make a timer", c->info.relay);
		uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
		return 0;
	}
	c->timer.data = c;
	c->open_handles++;
	c->started = true;
	c->creq.data = c;
	rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&sa, on_connect);
	if (rc != 0) {
		c->info.connect_failed = true;
		snprintf(c->info.connect_err, sizeof(c->info.connect_err), "connect to %s: %s",
			 c->info.relay, uv_strerror(rc));
		smtp_conn_close(c);
		return 0;
	}
	uv_timer_start(&c->timer, on_timer, connect_timeout_ms == 0 ? 1 : connect_timeout_ms, 0);
	return 0;
}
