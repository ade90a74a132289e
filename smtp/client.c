/* Outbound SMTP session state machine (after OpenSMTPD mta_session.c): one
 * transition function enter(), one reply handler on_reply(), no sockets. */
#define LOG_COMPONENT LOG_C_SMTP /* program name in logs, see relay/core/log.h */
#include "smtp/client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/b64.h"
#include "relay/core/log.h"
#include "smtp/address.h"

#define OUT_MAX (1024 * 1024) /* commands for 1000 recipients fit */
#define BODY_LOW (16 * 1024)  /* ask for more data below this much pending */
#define BODY_HIGH (64 * 1024) /* take data only up to this much pending */
#define CMD_LINE_MAX 1100     /* one command line with its CRLF */
/* The longest MAIL: every parameter we send, with a 20-digit SIZE. */
#define MAIL_PARAMS_MAX (sizeof(" SIZE=18446744073709551615 BODY=8BITMIME SMTPUTF8") - 1)

/* A sendable address (smtp/address.h) always fits its command, and a
 * pipelined group for the most recipients fits the output buffer: an
 * address that passed the shared check can never fail the session here. */
_Static_assert(sizeof("MAIL FROM:<>\r\n") - 1 + SMTP_ADDRESS_SEND_MAX + MAIL_PARAMS_MAX <
		       CMD_LINE_MAX,
	       "MAIL FROM with a sendable address must fit one command line");
_Static_assert(SMTP_CLIENT_MAX_RCPTS *(sizeof("RCPT TO:<>\r\n") - 1 + SMTP_ADDRESS_SEND_MAX) +
			       2 * CMD_LINE_MAX <
		       OUT_MAX,
	       "a pipelined envelope must fit the output buffer");
/* base64 of "\0user\0password" at their longest, and the AUTH line with it. */
#define AUTH_B64_MAX (((2 * SMTP_CLIENT_AUTH_MAX + 2 + 2) / 3) * 4)
_Static_assert(sizeof("AUTH PLAIN \r\n") - 1 + AUTH_B64_MAX < CMD_LINE_MAX,
	       "AUTH PLAIN with the longest credentials must fit one command line");
#define PULL_CHUNK 8192
#define PULL_ROUNDS 16 /* bounded work per smtp_client_event() */

const struct smtp_client_timeouts smtp_client_default_timeouts = {
	.banner = 300000,
	.helo = 300000,
	.mail = 300000,
	.rcpt = 300000,
	.data_init = 120000,
	.data_block = 180000,
	.eod = 600000,
	.quit = 300000,
};

static const char *const state_names[SMTP_CLIENT_STATE_COUNT] = {
	[SMTP_CLIENT_BANNER] = "BANNER",
	[SMTP_CLIENT_EHLO] = "EHLO",
	[SMTP_CLIENT_HELO] = "HELO",
	[SMTP_CLIENT_STARTTLS] = "STARTTLS",
	[SMTP_CLIENT_TLS_HANDSHAKE] = "TLS_HANDSHAKE",
	[SMTP_CLIENT_AUTH] = "AUTH",
	[SMTP_CLIENT_MAIL] = "MAIL",
	[SMTP_CLIENT_RCPT] = "RCPT",
	[SMTP_CLIENT_DATA] = "DATA",
	[SMTP_CLIENT_BODY] = "BODY",
	[SMTP_CLIENT_EOD] = "EOD",
	[SMTP_CLIENT_READY] = "READY",
	[SMTP_CLIENT_QUIT] = "QUIT",
	[SMTP_CLIENT_DONE] = "DONE",
};

/* Postfix wording: "... (in reply to RCPT TO command)". */
static const char *const in_reply_to[SMTP_CLIENT_STATE_COUNT] = {
	[SMTP_CLIENT_BANNER] = "initial greeting",
	[SMTP_CLIENT_EHLO] = "EHLO command",
	[SMTP_CLIENT_HELO] = "HELO command",
	[SMTP_CLIENT_STARTTLS] = "STARTTLS command",
	[SMTP_CLIENT_TLS_HANDSHAKE] = "STARTTLS command",
	[SMTP_CLIENT_AUTH] = "AUTH command",
	[SMTP_CLIENT_MAIL] = "MAIL FROM command",
	[SMTP_CLIENT_RCPT] = "RCPT TO command",
	[SMTP_CLIENT_DATA] = "DATA command",
	[SMTP_CLIENT_BODY] = "message body",
	[SMTP_CLIENT_EOD] = "end of DATA command",
	[SMTP_CLIENT_READY] = "end of DATA command",
	[SMTP_CLIENT_QUIT] = "QUIT command",
	[SMTP_CLIENT_DONE] = "QUIT command",
};

/* "lost connection with X while ..." */
static const char *const while_doing[SMTP_CLIENT_STATE_COUNT] = {
	[SMTP_CLIENT_BANNER] = "receiving the initial server greeting",
	[SMTP_CLIENT_EHLO] = "performing the EHLO handshake",
	[SMTP_CLIENT_HELO] = "performing the HELO handshake",
	[SMTP_CLIENT_STARTTLS] = "sending STARTTLS",
	[SMTP_CLIENT_TLS_HANDSHAKE] = "performing the TLS handshake",
	[SMTP_CLIENT_AUTH] = "performing the SASL authentication",
	[SMTP_CLIENT_MAIL] = "sending MAIL FROM",
	[SMTP_CLIENT_RCPT] = "sending RCPT TO",
	[SMTP_CLIENT_DATA] = "sending DATA command",
	[SMTP_CLIENT_BODY] = "sending message body",
	[SMTP_CLIENT_EOD] = "sending end of data -- message may be sent more than once",
	[SMTP_CLIENT_READY] = "idle between transactions",
	[SMTP_CLIENT_QUIT] = "sending QUIT",
	[SMTP_CLIENT_DONE] = "closing",
};

struct rcpt {
	char *address;
	bool accepted; /* 2xx to RCPT TO */
	bool refused;  /* settled by the client before MAIL: no RCPT for it */
};

struct smtp_client {
	enum smtp_client_state state;
	char *helo, *peer, *qid, *sender;
	struct rcpt *rcpts;
	struct smtp_rcpt_result *rr;
	size_t nrcpts;
	uint64_t size;
	enum smtp_tls_level tls;
	struct smtp_client_timeouts to;
	smtp_client_read_fn read;
	void *read_arg;
	bool keep_open;              /* READY instead of QUIT after the end-of-data reply */
	bool eight_bit;              /* the message has 8-bit data: BODY=8BITMIME or no MAIL */
	unsigned transactions;       /* MAIL transactions started on this session */
	bool implicit_tls;           /* TLS before the greeting (RFC 8314) */
	char *auth_user, *auth_pass; /* the session's credentials, NULL: no AUTH */
	bool auth_wanted;            /* this transaction needs an authenticated session */

	struct smtp_client_result res;
	bool failed;                                 /* res.outcome/diag set; first failure wins */
	bool smtputf8;                               /* the envelope needs SMTPUTF8 */
	char starttls_refusal[SMTP_CLIENT_DIAG_MAX]; /* reply to STARTTLS if not 220 */

	/* transaction progress */
	bool pipelined;   /* MAIL, RCPTs and DATA went out in one write */
	bool mail_failed; /* eat remaining pipelined replies */
	bool discard_eod; /* "." sent only to close an empty DATA */
	size_t rcpt_idx;  /* recipient whose RCPT reply comes next */

	/* body encoding across chunks */
	bool bol, pending_cr, data_ended;

	char *out;
	size_t out_start, out_end, out_cap;

	struct smtp_reply_parser parser;
};

/* ---- output buffer ---- */

static int out_reserve(struct smtp_client *c, size_t n)
{
	size_t pending = c->out_end - c->out_start, cap;
	char *p;

	if (pending + n > OUT_MAX)
		return -1;
	if (c->out_end + n <= c->out_cap)
		return 0;
	if (c->out_start > 0) {
		memmove(c->out, c->out + c->out_start, pending);
		c->out_start = 0;
		c->out_end = pending;
		if (c->out_end + n <= c->out_cap)
			return 0;
	}
	cap = c->out_cap ? c->out_cap : 4096;
	while (cap < pending + n)
		cap *= 2;
	if (cap > OUT_MAX)
		cap = OUT_MAX;
	p = realloc(c->out, cap);
	if (!p)
		return -1;
	c->out = p;
	c->out_cap = cap;
	return 0;
}

static int out_put(struct smtp_client *c, const char *s, size_t n)
{
	if (out_reserve(c, n) < 0)
		return -1;
	memcpy(c->out + c->out_end, s, n);
	c->out_end += n;
	return 0;
}

static int out_cmd(struct smtp_client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int out_cmd(struct smtp_client *c, const char *fmt, ...)
{
	char line[CMD_LINE_MAX];
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		return -1;
	line[n++] = '\r';
	line[n++] = '\n';
	rc = out_put(c, line, (size_t)n);
	explicit_bzero(line, (size_t)n); /* it may have been AUTH PLAIN */
	return rc;
}

static size_t out_pending(const struct smtp_client *c)
{
	return c->out_end - c->out_start;
}

/* ---- results ---- */

static void vformat(char *buf, size_t len, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
static void vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
	int n = vsnprintf(buf, len, fmt, ap);

	if (n < 0)
		buf[0] = '\0';
}

static void class_esc(char *esc, int cls)
{
	snprintf(esc, SMTP_REPLY_ESC_MAX, "%d.0.0", cls);
}

/* Gives every recipient still without a verdict the same one. */
static void settle_pending(struct smtp_client *c, enum smtp_rcpt_status st, int code,
			   const char *esc, const char *diag, const char *reply)
{
	size_t i;

	for (i = 0; i < c->nrcpts; i++) {
		struct smtp_rcpt_result *r = &c->rr[i];

		if (r->status != SMTP_RCPT_PENDING)
			continue;
		r->status = st;
		r->code = code;
		snprintf(r->esc, sizeof(r->esc), "%s", esc);
		r->stage = c->state;
		snprintf(r->diag, sizeof(r->diag), "%s", diag);
		snprintf(r->reply, sizeof(r->reply), "%s", reply);
	}
}

/* Records a session-level failure (the first one wins) and settles every
 * open recipient: deferred for 4xx-like failures, bounced for 5xx. */
static void fail_session(struct smtp_client *c, enum smtp_conn_outcome outcome, bool next_mx,
			 int code, const char *esc, const char *reply, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
static void fail_session(struct smtp_client *c, enum smtp_conn_outcome outcome, bool next_mx,
			 int code, const char *esc, const char *reply, const char *fmt, ...)
{
	char diag[SMTP_CLIENT_DIAG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vformat(diag, sizeof(diag), fmt, ap);
	va_end(ap);
	if (!c->failed) {
		c->failed = true;
		c->res.outcome = outcome;
		c->res.try_next_mx = next_mx;
		c->res.failed_state = c->state;
		snprintf(c->res.diag, sizeof(c->res.diag), "%s", diag);
		c->res.code = code;
		snprintf(c->res.esc, sizeof(c->res.esc), "%s", esc);
	}
	settle_pending(c, esc[0] == '5' ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, code, esc, diag,
		       reply ? reply : "");
}

/* "host X said: 550 5.1.1 ... (in reply to RCPT TO command)" into diag,
 * the bare reply into summary, the status code into esc. */
static void describe_reply(const struct smtp_client *c, const struct smtp_reply *r, char *diag,
			   size_t dlen, char *summary, size_t slen, char *esc)
{
	smtp_reply_summary(r, summary, slen);
	if (c->state == SMTP_CLIENT_BANNER)
		snprintf(diag, dlen, "host %s refused to talk to me: %s", c->peer, summary);
	else
		snprintf(diag, dlen, "host %s said: %s (in reply to %s)", c->peer, summary,
			 in_reply_to[c->state]);
	if (r->esc[0])
		snprintf(esc, SMTP_REPLY_ESC_MAX, "%s", r->esc);
	else
		class_esc(esc, r->code / 100);
}

/* A reply that ends the session for every open recipient. */
static void fail_reply(struct smtp_client *c, const struct smtp_reply *r, bool next_mx)
{
	char diag[SMTP_CLIENT_DIAG_MAX], summary[SMTP_CLIENT_DIAG_MAX], esc[SMTP_REPLY_ESC_MAX];

	describe_reply(c, r, diag, sizeof(diag), summary, sizeof(summary), esc);
	fail_session(c, smtp_reply_perm(r) ? SMTP_CONN_PERMFAIL : SMTP_CONN_TEMPFAIL, next_mx,
		     r->code, esc, summary, "%s", diag);
}

/* The connection can no longer carry commands (lost, timed out, garbage). */
static bool next_mx_after_break(const struct smtp_client *c)
{
	/* Once the final "." may have been seen by the server a retry elsewhere
	 * could duplicate; the recipients are deferred either way. */
	return c->state < SMTP_CLIENT_EOD;
}

/* ---- the state machine ---- */

static bool needs_utf8(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

static void enter(struct smtp_client *c, enum smtp_client_state next);

static bool any_pending(const struct smtp_client *c)
{
	size_t i;

	for (i = 0; i < c->nrcpts; i++)
		if (c->rr[i].status == SMTP_RCPT_PENDING)
			return true;
	return false;
}

static int send_rcpt(struct smtp_client *c, size_t i)
{
	return out_cmd(c, "RCPT TO:<%s>", c->rcpts[i].address);
}

/* The first recipient from i on that gets a RCPT (nrcpts if none): the
 * ones the client refused itself are skipped when sending and when
 * matching replies alike. */
static size_t next_open(const struct smtp_client *c, size_t i)
{
	while (i < c->nrcpts && c->rcpts[i].refused)
		i++;
	return i;
}

/* MAIL FROM (and with PIPELINING every RCPT and DATA): RFC 2920 §3.1 lets
 * DATA go in the same group; the replies are matched in order. */
static int send_mail(struct smtp_client *c)
{
	char size[40] = "";
	size_t i;

	if (c->res.caps.size && c->size > 0)
		snprintf(size, sizeof(size), " SIZE=%llu", (unsigned long long)c->size);
	/* local_refusal() let an 8-bit message through only with 8BITMIME offered. */
	if (out_cmd(c, "MAIL FROM:<%s>%s%s%s", c->sender, size,
		    c->eight_bit ? " BODY=8BITMIME" : "", c->smtputf8 ? " SMTPUTF8" : "") < 0)
		return -1;
	c->pipelined = c->res.caps.pipelining;
	c->rcpt_idx = next_open(c, 0);
	if (!c->pipelined)
		return 0;
	for (i = next_open(c, 0); i < c->nrcpts; i = next_open(c, i + 1))
		if (send_rcpt(c, i) < 0)
			return -1;
	return out_cmd(c, "DATA");
}

/* Settles recipient i before MAIL: no RCPT goes out for it. */
static void refuse_rcpt(struct smtp_client *c, size_t i, const char *esc, const char *diag)
{
	struct smtp_rcpt_result *r = &c->rr[i];

	c->rcpts[i].refused = true;
	r->status = esc[0] == '5' ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER;
	r->code = 0;
	snprintf(r->esc, sizeof(r->esc), "%s", esc);
	r->stage = c->state;
	snprintf(r->diag, sizeof(r->diag), "%s", diag);
	r->reply[0] = '\0';
}

/* RFC 6531 §3.4: without SMTPUTF8 an address with 8-bit bytes cannot be
 * given to this server. A recipient's problem stays that recipient's: it
 * alone bounces and the others go out in a plain transaction. Returns true
 * when nothing is left to send (the sender needs it, or every recipient). */
static bool refuse_utf8(struct smtp_client *c)
{
	char diag[SMTP_CLIENT_DIAG_MAX];
	size_t i, left = 0;

	snprintf(diag, sizeof(diag), "SMTPUTF8 is required, but was not offered by host %s",
		 c->peer);
	for (i = 0; i < c->nrcpts; i++)
		if (!needs_utf8(c->rcpts[i].address))
			left++;
	if (needs_utf8(c->sender) || left == 0) {
		fail_session(c, SMTP_CONN_PERMFAIL, false, 0, "5.6.7", NULL, "%s", diag);
		return true;
	}
	for (i = 0; i < c->nrcpts; i++)
		if (needs_utf8(c->rcpts[i].address))
			refuse_rcpt(c, i, "5.6.7", diag);
	c->smtputf8 = false; /* what is left is ASCII */
	return false;
}

/* Refusals we make ourselves before MAIL: nothing is sent. */
static bool local_refusal(struct smtp_client *c)
{
	if (c->res.caps.size && c->res.caps.size_max > 0 && c->size > c->res.caps.size_max) {
		fail_session(c, SMTP_CONN_PERMFAIL, false, 0, "5.3.4", NULL,
			     "message size %llu exceeds size limit %llu of server %s",
			     (unsigned long long)c->size, (unsigned long long)c->res.caps.size_max,
			     c->peer);
		return true;
	}
	if (c->eight_bit && !c->res.caps.eightbitmime) {
		/* No conversion to 7 bit (README): nothing is sent to this host,
		 * another MX may take 8-bit data. */
		fail_session(c, SMTP_CONN_TEMPFAIL, true, 0, "4.6.3", NULL,
			     "host %s does not offer 8BITMIME and the message has 8-bit data "
			     "(not converted)",
			     c->peer);
		return true;
	}
	if (c->smtputf8 && !c->res.caps.smtputf8)
		return refuse_utf8(c);
	return false;
}

/* AUTH PLAIN with an initial response (RFC 4954 §4): the RFC 4616 message
 * is an empty authorization identity, NUL, the user, NUL, the password,
 * in base64. The stack copies are wiped; the output buffer's copy goes to
 * the TLS stream (enter() sends AUTH over verified TLS only). */
static int send_auth(struct smtp_client *c)
{
	char raw[2 * SMTP_CLIENT_AUTH_MAX + 2];
	char b64[AUTH_B64_MAX + 1];
	size_t u = strlen(c->auth_user), p = strlen(c->auth_pass);
	int rc = -1;

	raw[0] = '\0';
	memcpy(raw + 1, c->auth_user, u);
	raw[1 + u] = '\0';
	memcpy(raw + 2 + u, c->auth_pass, p);
	if (core_b64_encode(raw, 2 + u + p, b64, sizeof(b64)) >= 0)
		rc = out_cmd(c, "AUTH PLAIN %s", b64);
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(b64, sizeof(b64));
	return rc;
}

/* A refused AUTH defers, as Postfix's smtp_sasl_auth_soft_bounce does:
 * "SASL authentication failed; server X said: 535 5.7.8 ...", with the
 * server's status made temporary. The reply names no credential. */
static void auth_failed(struct smtp_client *c, const struct smtp_reply *r)
{
	char summary[SMTP_CLIENT_DIAG_MAX], esc[SMTP_REPLY_ESC_MAX];

	smtp_reply_summary(r, summary, sizeof(summary));
	if (r->esc[0])
		snprintf(esc, sizeof(esc), "%s", r->esc);
	else
		snprintf(esc, sizeof(esc), "4.7.0");
	esc[0] = '4';
	fail_session(c, SMTP_CONN_TEMPFAIL, true, r->code, esc, summary,
		     "SASL authentication failed; server %s said: %s", c->peer, summary);
}

/* Why the session may not enter `next` for lack of TLS or AUTH; the
 * failure is recorded and true returned (the caller goes to QUIT). This is
 * the single fail-closed point: nothing of AUTH or of a transaction is
 * written while it says no. */
static bool fail_closed(struct smtp_client *c, enum smtp_client_state next)
{
	if (next >= SMTP_CLIENT_AUTH && next <= SMTP_CLIENT_EOD && c->tls == SMTP_TLS_REQUIRE &&
	    !c->res.tls_active) {
		c->res.tls_result = SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED;
		if (c->starttls_refusal[0])
			fail_session(c, SMTP_CONN_TLS_FAILED, true, 0, "4.7.5", NULL,
				     "TLS is required, but host %s refused to start TLS: %s",
				     c->peer, c->starttls_refusal);
		else
			fail_session(c, SMTP_CONN_TLS_FAILED, true, 0, "4.7.5", NULL,
				     "TLS is required, but was not offered by host %s", c->peer);
		return true;
	}
	if (next == SMTP_CLIENT_AUTH && !(c->res.tls_active && c->res.tls_verified)) {
		fail_session(c, SMTP_CONN_TLS_FAILED, true, 0, "4.7.5", NULL,
			     "not sending credentials to host %s: its TLS certificate was not "
			     "verified",
			     c->peer);
		return true;
	}
	if (next == SMTP_CLIENT_AUTH && !c->res.caps.auth_plain) {
		fail_session(c, SMTP_CONN_TEMPFAIL, true, 0, "4.7.0", NULL,
			     "host %s offers no SASL mechanism PLAIN after TLS, and credentials "
			     "are configured for it",
			     c->peer);
		return true;
	}
	if (next == SMTP_CLIENT_MAIL && c->auth_wanted && !c->res.authenticated) {
		fail_session(c, SMTP_CONN_TEMPFAIL, true, 0, "4.7.0", NULL,
			     "session with %s is not authenticated", c->peer);
		return true;
	}
	return false;
}

/* The only place that changes c->state. It sends the command belonging to
 * the new state and holds the single fail-closed check (fail_closed()):
 * no AUTH and no transaction state is entered without TLS when TLS is
 * required, no AUTH without verified TLS, no MAIL unauthenticated when
 * AUTH was asked for. */
static void enter(struct smtp_client *c, enum smtp_client_state next)
{
	enum smtp_client_state old = c->state;
	int rc = 0;

	if (fail_closed(c, next))
		next = SMTP_CLIENT_QUIT;
	if (next == SMTP_CLIENT_MAIL && local_refusal(c))
		next = SMTP_CLIENT_QUIT;

	if (old != next)
		log_msg(LOG_LVL_DEBUG, c->qid, "smtp client %s: %s -> %s", c->peer,
			state_names[old], state_names[next]);
	c->state = next;

	switch (next) {
	case SMTP_CLIENT_EHLO:
		rc = out_cmd(c, "EHLO %s", c->helo);
		break;
	case SMTP_CLIENT_HELO:
		rc = out_cmd(c, "HELO %s", c->helo);
		break;
	case SMTP_CLIENT_STARTTLS:
		rc = out_cmd(c, "STARTTLS");
		break;
	case SMTP_CLIENT_AUTH:
		rc = send_auth(c);
		break;
	case SMTP_CLIENT_MAIL:
		c->transactions++;
		rc = send_mail(c);
		break;
	case SMTP_CLIENT_RCPT:
		if (!c->pipelined)
			rc = send_rcpt(c, c->rcpt_idx);
		break;
	case SMTP_CLIENT_DATA:
		if (!c->pipelined)
			rc = out_cmd(c, "DATA");
		break;
	case SMTP_CLIENT_BODY:
		c->bol = true;
		c->pending_cr = false;
		c->data_ended = false;
		break;
	case SMTP_CLIENT_QUIT:
		rc = out_cmd(c, "QUIT");
		break;
	case SMTP_CLIENT_DONE:
		/* Anyone still open was not decided by the server. */
		if (any_pending(c))
			fail_session(c, SMTP_CONN_TEMPFAIL, false, 0, "4.4.2", NULL,
				     "session with %s ended without a verdict", c->peer);
		break;
	default:
		break;
	}
	if (rc < 0) {
		fail_session(c, SMTP_CONN_TEMPFAIL, false, 0, "4.3.0", NULL,
			     "internal error: output buffer full in state %s", state_names[next]);
		c->state = SMTP_CLIENT_DONE;
	}
}

/* After a successful EHLO or HELO: STARTTLS, AUTH or the transaction. */
static void after_greeting(struct smtp_client *c)
{
	if (!c->res.tls_active && c->tls != SMTP_TLS_NONE && c->res.caps.starttls)
		enter(c, SMTP_CLIENT_STARTTLS);
	else if (c->auth_user != NULL && !c->res.authenticated)
		enter(c, SMTP_CLIENT_AUTH);
	else
		enter(c, SMTP_CLIENT_MAIL);
}

static void rcpt_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	struct smtp_rcpt_result *rr = &c->rr[c->rcpt_idx];

	if (c->mail_failed)
		return;
	if (smtp_reply_ok(r)) {
		c->rcpts[c->rcpt_idx].accepted = true;
		c->res.accepted++;
		return;
	}
	describe_reply(c, r, rr->diag, sizeof(rr->diag), rr->reply, sizeof(rr->reply), rr->esc);
	rr->status = smtp_reply_perm(r) ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER;
	rr->code = r->code;
	rr->stage = SMTP_CLIENT_RCPT;
}

/* The accepted recipients' verdict from the reply to "." */
static void eod_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	char diag[SMTP_CLIENT_DIAG_MAX], summary[SMTP_CLIENT_DIAG_MAX], esc[SMTP_REPLY_ESC_MAX];

	describe_reply(c, r, diag, sizeof(diag), summary, sizeof(summary), esc);
	if (smtp_reply_ok(r)) {
		/* Postfix logs "status=sent (250 2.0.0 Ok: queued as X)". */
		settle_pending(c, SMTP_RCPT_SENT, r->code, esc, summary, summary);
		return;
	}
	settle_pending(c, smtp_reply_perm(r) ? SMTP_RCPT_BOUNCE : SMTP_RCPT_DEFER, r->code, esc,
		       diag, summary);
}

static void on_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	switch (c->state) {
	case SMTP_CLIENT_BANNER:
		if (smtp_reply_ok(r)) {
			enter(c, SMTP_CLIENT_EHLO);
		} else {
			/* Postfix smtp_skip_5xx_greeting: another MX may talk. */
			fail_reply(c, r, true);
			enter(c, SMTP_CLIENT_QUIT);
		}
		break;
	case SMTP_CLIENT_EHLO:
		if (smtp_reply_ok(r)) {
			smtp_ehlo_parse(r, &c->res.caps);
			c->res.esmtp = true;
			after_greeting(c);
		} else if (smtp_reply_perm(r) && !c->res.tls_active) {
			enter(c, SMTP_CLIENT_HELO);
		} else {
			fail_reply(c, r, true);
			enter(c, SMTP_CLIENT_QUIT);
		}
		break;
	case SMTP_CLIENT_HELO:
		if (smtp_reply_ok(r)) {
			memset(&c->res.caps, 0, sizeof(c->res.caps));
			after_greeting(c);
		} else {
			fail_reply(c, r, true);
			enter(c, SMTP_CLIENT_QUIT);
		}
		break;
	case SMTP_CLIENT_STARTTLS:
		if (r->code == 220) {
			enter(c, SMTP_CLIENT_TLS_HANDSHAKE);
		} else {
			/* Refused: MAY goes on in plaintext (as Postfix), REQUIRE
			 * fails closed in enter(). */
			smtp_reply_summary(r, c->starttls_refusal, sizeof(c->starttls_refusal));
			enter(c, SMTP_CLIENT_MAIL);
		}
		break;
	case SMTP_CLIENT_AUTH:
		/* 235 (RFC 4954 §6); a 334 would want more than PLAIN's one
		 * response and counts as a failure like any other reply. */
		if (r->code == 235) {
			c->res.authenticated = true;
			enter(c, SMTP_CLIENT_MAIL);
		} else {
			auth_failed(c, r);
			enter(c, SMTP_CLIENT_QUIT);
		}
		break;
	case SMTP_CLIENT_MAIL:
		if (smtp_reply_ok(r)) {
			enter(c, SMTP_CLIENT_RCPT);
			break;
		}
		fail_reply(c, r, smtp_reply_temp(r));
		if (c->pipelined) {
			c->mail_failed = true;
			enter(c, SMTP_CLIENT_RCPT); /* to eat the RCPT and DATA replies */
		} else {
			enter(c, SMTP_CLIENT_QUIT);
		}
		break;
	case SMTP_CLIENT_RCPT:
		rcpt_reply(c, r);
		c->rcpt_idx = next_open(c, c->rcpt_idx + 1);
		if (c->rcpt_idx < c->nrcpts) {
			if (!c->pipelined && send_rcpt(c, c->rcpt_idx) < 0) {
				fail_session(c, SMTP_CONN_TEMPFAIL, false, 0, "4.3.0", NULL,
					     "internal error: output buffer full");
				enter(c, SMTP_CLIENT_DONE);
			}
		} else if (c->pipelined || c->res.accepted > 0) {
			enter(c, SMTP_CLIENT_DATA);
		} else {
			enter(c, SMTP_CLIENT_QUIT);
		}
		break;
	case SMTP_CLIENT_DATA:
		if (r->code == 354) {
			if (c->mail_failed || c->res.accepted == 0) {
				/* RFC 2920 §3.1: a server that says 354 with no valid
				 * recipient gets an empty message, which it rejects. */
				c->discard_eod = true;
				if (out_put(c, ".\r\n", 3) < 0)
					enter(c, SMTP_CLIENT_DONE);
				else
					enter(c, SMTP_CLIENT_EOD);
			} else {
				enter(c, SMTP_CLIENT_BODY);
			}
		} else if (smtp_reply_ok(r)) {
			fail_reply(c, r, false); /* 2xx to DATA: the server is confused */
			enter(c, SMTP_CLIENT_QUIT);
		} else {
			/* With no recipient accepted the rejection was expected and
			 * each recipient already has its own verdict. */
			if (!c->mail_failed && c->res.accepted > 0)
				fail_reply(c, r, false);
			enter(c, SMTP_CLIENT_QUIT);
		}
		break;
	case SMTP_CLIENT_BODY:
		/* Nothing is expected while we send; a 421 or 5xx here ends it. */
		fail_reply(c, r, false);
		enter(c, SMTP_CLIENT_DONE);
		break;
	case SMTP_CLIENT_EOD:
		if (!c->discard_eod)
			eod_reply(c, r);
		/* 421 announces the close (RFC 5321 §3.8); anything else
		 * leaves a session that can carry another transaction. */
		if (c->keep_open && !c->discard_eod && r->code != 421)
			enter(c, SMTP_CLIENT_READY);
		else
			enter(c, SMTP_CLIENT_QUIT);
		break;
	case SMTP_CLIENT_READY:
		/* Unsolicited while idle: a 421 before the server's own close.
		 * Every recipient already has its verdict: end without failing. */
	case SMTP_CLIENT_QUIT:
		enter(c, SMTP_CLIENT_DONE);
		break;
	case SMTP_CLIENT_TLS_HANDSHAKE:
	case SMTP_CLIENT_DONE:
	case SMTP_CLIENT_STATE_COUNT:
		break;
	}
}

/* ---- public interface ---- */

static bool clean_string(const char *s, size_t max)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n > max)
		return false;
	for (; *s; s++)
		if (*s == '\r' || *s == '\n' || (unsigned char)*s < 0x20 || *s == '<' || *s == '>')
			return false;
	return true;
}

/* A user name or password for AUTH PLAIN: 1..SMTP_CLIENT_AUTH_MAX bytes,
 * nothing that would end the command line (NUL cannot occur in a C string;
 * PLAIN itself forbids it). */
static bool auth_string(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= SMTP_CLIENT_AUTH_MAX && strpbrk(s, "\r\n") == NULL;
}

/* The envelope checks shared by smtp_client_new() and smtp_client_next():
 * nothing that could break a command line gets into one. The addresses
 * are judged by the rule the listener, sendmail and the scheduler use. */
static const char *check_envelope(const struct smtp_client_config *cfg)
{
	size_t i;

	if (cfg->nrcpts == 0 || cfg->nrcpts > SMTP_CLIENT_MAX_RCPTS)
		return "bad number of recipients";
	if (!smtp_address_sendable(cfg->sender, true, NULL))
		return "bad sender address";
	if (cfg->queue_id && !clean_string(cfg->queue_id, 64))
		return "bad queue id";
	for (i = 0; i < cfg->nrcpts; i++)
		if (!smtp_address_sendable(cfg->rcpts[i], false, NULL))
			return "bad recipient address";
	if ((cfg->auth_user == NULL) != (cfg->auth_password == NULL))
		return "AUTH needs both a user and a password";
	if (cfg->auth_user != NULL &&
	    (!auth_string(cfg->auth_user) || !auth_string(cfg->auth_password)))
		return "bad AUTH user or password";
	/* Credentials go over verified TLS or nowhere. */
	if ((cfg->auth_user != NULL || cfg->implicit_tls) && cfg->tls != SMTP_TLS_REQUIRE)
		return "AUTH and implicit TLS need SMTP_TLS_REQUIRE";
	return NULL;
}

static void free_envelope(char *qid, char *sender, struct rcpt *rcpts, struct smtp_rcpt_result *rr,
			  size_t n)
{
	size_t i;

	if (rcpts)
		for (i = 0; i < n; i++)
			free(rcpts[i].address);
	free(rcpts);
	free(rr);
	free(qid);
	free(sender);
}

/* Copies cfg's envelope and transaction settings into c, replacing what
 * was there only once every copy succeeded; resets the per-transaction
 * results. -1: out of memory, c unchanged. */
static int set_envelope(struct smtp_client *c, const struct smtp_client_config *cfg)
{
	char *qid = cfg->queue_id ? strdup(cfg->queue_id) : NULL;
	char *sender = strdup(cfg->sender);
	struct rcpt *rcpts = calloc(cfg->nrcpts, sizeof(*rcpts));
	struct smtp_rcpt_result *rr = calloc(cfg->nrcpts, sizeof(*rr));
	bool utf8;
	size_t i;

	if ((cfg->queue_id && !qid) || !sender || !rcpts || !rr)
		goto nomem;
	utf8 = needs_utf8(cfg->sender);
	for (i = 0; i < cfg->nrcpts; i++) {
		rcpts[i].address = strdup(cfg->rcpts[i]);
		if (!rcpts[i].address)
			goto nomem;
		rr[i].address = rcpts[i].address;
		rr[i].status = SMTP_RCPT_PENDING;
		utf8 |= needs_utf8(cfg->rcpts[i]);
	}
	free_envelope(c->qid, c->sender, c->rcpts, c->rr, c->nrcpts);
	c->qid = qid;
	c->sender = sender;
	c->rcpts = rcpts;
	c->rr = rr;
	c->nrcpts = cfg->nrcpts;
	c->smtputf8 = utf8;
	c->size = cfg->size;
	c->tls = cfg->tls;
	c->read = cfg->read;
	c->read_arg = cfg->read_arg;
	c->keep_open = cfg->keep_open;
	c->eight_bit = cfg->eight_bit;
	c->auth_wanted = cfg->auth_user != NULL;

	/* per-transaction state; the session's TLS, AUTH, EHLO and caps stay */
	c->failed = false;
	c->res.outcome = SMTP_CONN_OK;
	c->res.try_next_mx = false;
	c->res.failed_state = SMTP_CLIENT_BANNER;
	c->res.diag[0] = '\0';
	c->res.code = 0;
	c->res.esc[0] = '\0';
	c->res.tls_result = SMTP_TLS_RESULT_SUCCESS;
	c->res.accepted = 0;
	c->res.rcpts = c->rr;
	c->res.nrcpts = c->nrcpts;
	c->pipelined = c->mail_failed = c->discard_eod = false;
	c->rcpt_idx = 0;
	c->bol = true;
	c->pending_cr = c->data_ended = false;
	return 0;
nomem:
	free_envelope(qid, sender, rcpts, rr, rcpts ? cfg->nrcpts : 0);
	return -1;
}

struct smtp_client *smtp_client_new(const struct smtp_client_config *cfg, const char **err)
{
	struct smtp_client *c = NULL;
	const char *dummy;

	if (!err)
		err = &dummy;
	*err = check_envelope(cfg);
	if (*err)
		return NULL;
	if (!clean_string(cfg->helo_name, 255) || !cfg->helo_name[0] ||
	    (cfg->peer && !clean_string(cfg->peer, 300))) {
		*err = "bad helo name or peer";
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->helo = strdup(cfg->helo_name);
	c->peer = strdup(cfg->peer ? cfg->peer : "unknown");
	if (!c->helo || !c->peer || set_envelope(c, cfg) < 0)
		goto nomem;
	if (cfg->auth_user != NULL) {
		c->auth_user = strdup(cfg->auth_user);
		c->auth_pass = strdup(cfg->auth_password);
		if (!c->auth_user || !c->auth_pass)
			goto nomem;
	}
	c->to = cfg->timeouts ? *cfg->timeouts : smtp_client_default_timeouts;
	/* Implicit TLS: the handshake comes before the greeting. */
	c->implicit_tls = cfg->implicit_tls;
	c->state = c->implicit_tls ? SMTP_CLIENT_TLS_HANDSHAKE : SMTP_CLIENT_BANNER;
	smtp_reply_parser_init(&c->parser);
	return c;
nomem:
	*err = "out of memory";
	smtp_client_free(c);
	return NULL;
}

int smtp_client_next(struct smtp_client *c, const struct smtp_client_config *cfg, const char **err)
{
	const char *dummy;

	if (!err)
		err = &dummy;
	if (c->state != SMTP_CLIENT_READY) {
		*err = "session not ready for a transaction";
		return -1;
	}
	*err = check_envelope(cfg);
	if (*err)
		return -1;
	if (set_envelope(c, cfg) < 0) {
		*err = "out of memory";
		return -1;
	}
	if (cfg->timeouts)
		c->to = *cfg->timeouts;
	enter(c, SMTP_CLIENT_MAIL);
	return 0;
}

int smtp_client_quit(struct smtp_client *c)
{
	if (c->state != SMTP_CLIENT_READY)
		return -1;
	enter(c, SMTP_CLIENT_QUIT);
	return 0;
}

unsigned smtp_client_transactions(const struct smtp_client *c)
{
	return c->transactions;
}

static void free_secret(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void smtp_client_free(struct smtp_client *c)
{
	if (!c)
		return;
	free_envelope(c->qid, c->sender, c->rcpts, c->rr, c->nrcpts);
	free(c->helo);
	free(c->peer);
	if (c->out != NULL && c->auth_user != NULL)
		explicit_bzero(c->out, c->out_cap); /* it held AUTH PLAIN once */
	free(c->out);
	free_secret(c->auth_user);
	free_secret(c->auth_pass);
	free(c);
}

/* Bytes after "220" to STARTTLS came in plaintext and would otherwise be
 * read as if they were protected (the CVE-2011-0411 injection). */
static void plaintext_injection(struct smtp_client *c)
{
	fail_session(c, SMTP_CONN_TLS_FAILED, true, 0, "4.7.5", NULL,
		     "host %s sent plaintext after the reply to STARTTLS", c->peer);
	enter(c, SMTP_CLIENT_DONE);
}

int smtp_client_feed(struct smtp_client *c, const char *buf, size_t len)
{
	if (len > 0 && c->state == SMTP_CLIENT_TLS_HANDSHAKE)
		plaintext_injection(c);
	while (len > 0 && c->state != SMTP_CLIENT_DONE) {
		const char *err = NULL;
		size_t used = 0;
		int rc;

		rc = smtp_reply_feed(&c->parser, buf, len, &used, &err);
		buf += used;
		len -= used;
		if (rc < 0) {
			fail_session(c, SMTP_CONN_TEMPFAIL, next_mx_after_break(c), 0, "4.5.0",
				     NULL, "host %s sent a malformed reply (%s) while %s", c->peer,
				     err, while_doing[c->state]);
			enter(c, SMTP_CLIENT_DONE);
			break;
		}
		if (rc == 0)
			break;
		on_reply(c, &c->parser.reply);
		if (c->state == SMTP_CLIENT_TLS_HANDSHAKE && len > 0) {
			plaintext_injection(c);
			break;
		}
	}
	return c->state == SMTP_CLIENT_DONE ? -1 : 0;
}

void smtp_client_eof(struct smtp_client *c)
{
	if (c->state == SMTP_CLIENT_DONE)
		return;
	if (c->state != SMTP_CLIENT_QUIT && c->state != SMTP_CLIENT_READY)
		fail_session(c, SMTP_CONN_TEMPFAIL, next_mx_after_break(c), 0, "4.4.2", NULL,
			     "lost connection with %s while %s", c->peer, while_doing[c->state]);
	enter(c, SMTP_CLIENT_DONE);
}

const char *smtp_client_timeout(struct smtp_client *c)
{
	const char *name = state_names[c->state];

	if (c->state == SMTP_CLIENT_DONE)
		return name;
	if (c->state == SMTP_CLIENT_READY) {
		smtp_client_quit(c); /* the driver's idle time is over */
		return name;
	}
	if (c->state == SMTP_CLIENT_TLS_HANDSHAKE)
		fail_session(c, SMTP_CONN_TLS_FAILED, true, 0, "4.4.2", NULL,
			     "conversation with %s timed out while %s", c->peer,
			     while_doing[c->state]);
	else if (c->state != SMTP_CLIENT_QUIT)
		fail_session(c, SMTP_CONN_TEMPFAIL, next_mx_after_break(c), 0, "4.4.2", NULL,
			     "conversation with %s timed out while %s", c->peer,
			     while_doing[c->state]);
	enter(c, SMTP_CLIENT_DONE);
	return name;
}

uint32_t smtp_client_timeout_ms(const struct smtp_client *c)
{
	switch (c->state) {
	case SMTP_CLIENT_BANNER:
		return c->to.banner;
	case SMTP_CLIENT_EHLO:
	case SMTP_CLIENT_HELO:
	case SMTP_CLIENT_STARTTLS:
	case SMTP_CLIENT_TLS_HANDSHAKE:
	case SMTP_CLIENT_AUTH:
		return c->to.helo;
	case SMTP_CLIENT_MAIL:
		return c->to.mail;
	case SMTP_CLIENT_RCPT:
		return c->to.rcpt;
	case SMTP_CLIENT_DATA:
		return c->to.data_init;
	case SMTP_CLIENT_BODY:
		return c->to.data_block;
	/* While the tail of the body is still being written, it is a data block. */
	case SMTP_CLIENT_EOD:
		return out_pending(c) > 0 ? c->to.data_block : c->to.eod;
	case SMTP_CLIENT_QUIT:
		return c->to.quit;
	default:
		return 0;
	}
}

void smtp_client_output(const struct smtp_client *c, const char **buf, size_t *len)
{
	*buf = c->out ? c->out + c->out_start : "";
	*len = out_pending(c);
}

void smtp_client_consume(struct smtp_client *c, size_t n)
{
	if (n > out_pending(c))
		n = out_pending(c);
	c->out_start += n;
	if (c->out_start == c->out_end)
		c->out_start = c->out_end = 0;
}

static void body_byte(struct smtp_client *c, char **o, char b)
{
	if (c->pending_cr) {
		c->pending_cr = false;
		*(*o)++ = '\r';
		*(*o)++ = '\n';
		c->bol = true;
		if (b == '\n')
			return;
	}
	if (b == '\r') {
		c->pending_cr = true;
		return;
	}
	if (b == '\n') {
		/* A bare LF: send it as CRLF so no receiver sees a line end we
		 * did not mean ("SMTP smuggling"). */
		*(*o)++ = '\r';
		*(*o)++ = '\n';
		c->bol = true;
		return;
	}
	if (c->bol && b == '.')
		*(*o)++ = '.'; /* RFC 5321 §4.5.2 */
	*(*o)++ = b;
	c->bol = false;
}

ssize_t smtp_client_data(struct smtp_client *c, const char *buf, size_t len)
{
	size_t pending = out_pending(c), take, i;
	char *o;

	if (c->state != SMTP_CLIENT_BODY || c->data_ended)
		return -1;
	if (pending + 4 >= BODY_HIGH)
		return 0;
	/* Each input byte becomes at most two output bytes (plus a held CR). */
	take = (BODY_HIGH - pending - 4) / 2;
	if (take > len)
		take = len;
	if (out_reserve(c, 2 * take + 4) < 0)
		return 0;
	o = c->out + c->out_end;
	for (i = 0; i < take; i++)
		body_byte(c, &o, buf[i]);
	c->out_end = (size_t)(o - c->out);
	return (ssize_t)take;
}

int smtp_client_data_end(struct smtp_client *c)
{
	if (c->state != SMTP_CLIENT_BODY || c->data_ended)
		return -1;
	if (c->pending_cr || !c->bol) {
		/* Message without a final line end: RFC 5321 §4.1.1.4 needs one. */
		c->pending_cr = false;
		if (out_put(c, "\r\n", 2) < 0)
			goto full;
	}
	if (out_put(c, ".\r\n", 3) < 0)
		goto full;
	c->data_ended = true;
	enter(c, SMTP_CLIENT_EOD);
	return 0;
full:
	fail_session(c, SMTP_CONN_TEMPFAIL, false, 0, "4.3.0", NULL,
		     "internal error: output buffer full");
	enter(c, SMTP_CLIENT_DONE);
	return -1;
}

void smtp_client_data_error(struct smtp_client *c, const char *reason)
{
	if (c->state == SMTP_CLIENT_DONE)
		return;
	fail_session(c, SMTP_CONN_TEMPFAIL, false, 0, "4.3.0", NULL,
		     "error reading the queued message: %s", reason ? reason : "unknown");
	/* Mid-body we cannot end the transaction cleanly: close without ".". */
	enter(c, SMTP_CLIENT_DONE);
}

/* Pull mode: fill the output buffer from the read callback, bounded. */
static void pull_data(struct smtp_client *c)
{
	char buf[PULL_CHUNK];
	int round;

	for (round = 0; round < PULL_ROUNDS; round++) {
		ssize_t n, took;

		if (c->state != SMTP_CLIENT_BODY || out_pending(c) >= BODY_LOW)
			return;
		n = c->read(c->read_arg, buf, sizeof(buf));
		if (n == SMTP_CLIENT_READ_LATER)
			return; /* EV_WANT_DATA until the driver calls again */
		if (n < 0) {
			smtp_client_data_error(c, "read error");
			return;
		}
		if (n == 0) {
			smtp_client_data_end(c);
			return;
		}
		/* Below BODY_LOW there is room for a whole PULL_CHUNK. */
		took = smtp_client_data(c, buf, (size_t)n);
		if (took != n) {
			smtp_client_data_error(c, "internal error: data not taken");
			return;
		}
	}
}

enum smtp_client_event smtp_client_event(struct smtp_client *c)
{
	if (c->state == SMTP_CLIENT_BODY && !c->data_ended && c->read)
		pull_data(c);
	switch (c->state) {
	case SMTP_CLIENT_DONE:
		return SMTP_CLIENT_EV_DONE;
	case SMTP_CLIENT_READY:
		return SMTP_CLIENT_EV_READY;
	case SMTP_CLIENT_TLS_HANDSHAKE:
		return SMTP_CLIENT_EV_NEED_TLS;
	case SMTP_CLIENT_BODY:
		if (!c->data_ended && out_pending(c) < BODY_LOW)
			return SMTP_CLIENT_EV_WANT_DATA;
		return SMTP_CLIENT_EV_IO;
	default:
		return SMTP_CLIENT_EV_IO;
	}
}

void smtp_client_tls_done(struct smtp_client *c, bool ok, const char *reason)
{
	if (c->state != SMTP_CLIENT_TLS_HANDSHAKE)
		return;
	if (!ok) {
		fail_session(c, SMTP_CONN_TLS_FAILED, true, 0, "4.7.5", NULL,
			     "TLS handshake with %s failed: %s", c->peer,
			     reason ? reason : "unknown error");
		enter(c, SMTP_CLIENT_DONE);
		return;
	}
	/* RFC 3207 §4.2: forget everything learned before TLS. */
	c->res.tls_active = true;
	c->res.esmtp = false;
	memset(&c->res.caps, 0, sizeof(c->res.caps));
	smtp_reply_parser_init(&c->parser);
	/* Implicit TLS: the greeting comes now, over TLS (STARTTLS is never
	 * entered on such a session, so this is its only handshake). */
	enter(c, c->implicit_tls ? SMTP_CLIENT_BANNER : SMTP_CLIENT_EHLO);
}

void smtp_client_tls_verified(struct smtp_client *c, bool verified)
{
	if (c->state == SMTP_CLIENT_TLS_HANDSHAKE)
		c->res.tls_verified = verified;
}

enum smtp_client_state smtp_client_state(const struct smtp_client *c)
{
	return c->state;
}

const char *smtp_client_state_name(enum smtp_client_state s)
{
	return (unsigned)s < SMTP_CLIENT_STATE_COUNT ? state_names[s] : "?";
}

const struct smtp_client_result *smtp_client_result(const struct smtp_client *c)
{
	return &c->res;
}

const char *smtp_rcpt_status_name(enum smtp_rcpt_status s)
{
	switch (s) {
	case SMTP_RCPT_SENT:
		return "sent";
	case SMTP_RCPT_DEFER:
		return "deferred";
	case SMTP_RCPT_BOUNCE:
		return "bounced";
	default:
		return "pending";
	}
}
