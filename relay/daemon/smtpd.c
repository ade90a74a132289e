/* The SMTP listener and its sessions (RFC 5321 server side): one explicit
 * state machine per client, commands parsed by smtp/command.c, DATA streamed
 * through a bounded buffer into a queue writer, 250 only after group commit.
 *
 * Choices documented here because RFC 5321 leaves them open:
 * - command lines longer than 512 octets (with CRLF, §4.5.3.1.4) get
 *   "500 5.5.2 Line too long"; the rest of the line up to LF is discarded and
 *   the session goes on;
 * - DATA text lines of any length are accepted as they are (like Postfix);
 *   only the whole message is limited, by max_message_size (552 5.3.4);
 * - a bare LF ends a command line, and in DATA every line end (LF or CRLF)
 *   is stored as CRLF; a CR not followed by LF is kept as data; NUL bytes in
 *   DATA are kept as data, in commands they are a syntax error.
 * Fairness: a session reads into its own 16 KiB buffer and libuv stops after
 * 32 reads per callback, so one fast client gets at most 512 KiB per loop
 * turn; a session that cannot consume (waiting for commit, or for its
 * replies to drain) stops reading altogether. */
#define LOG_COMPONENT LOG_C_SMTPD /* program name in logs, see relay/core/log.h */
#include "relay/daemon/smtpd.h"
#include "smtp/address.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "relay/core/clock.h"
#include "relay/core/log.h"
#include "relay/daemon/scheduler.h"
#include "smtp/command.h"
#include "smtp/msgid.h"

#define SMTPD_INBUF 16384         /* unprocessed input per session */
#define SMTPD_OUTBUF 8192         /* replies waiting to be written */
#define SMTPD_REPLY_MAX 1024      /* no single reply is longer */
#define SMTPD_CMD_LINE_MAX 512    /* RFC 5321 §4.5.3.1.4, CRLF included */
#define SMTPD_STAGE 65536         /* DATA bytes staged before a queue write */
#define SMTPD_ERROR_LIMIT 50      /* then 421: binary garbage or a broken client */
#define SMTPD_CLOSE_WAIT_MS 10000 /* a client that does not read its last reply */
#define SMTPD_STOP_GRACE_MS 10000 /* on SIGTERM, sessions in DATA may finish */

/* The session's states, the SMTP phases included (RFC 5321 §4.1.4's order:
 * HELO, then MAIL, RCPT, DATA). CONNECTED to RCPT read commands. */
enum smtpd_state {
	SMTPD_S_NEW,       /* handles made, nothing sent yet */
	SMTPD_S_CONNECTED, /* 220 sent; no HELO/EHLO yet */
	SMTPD_S_HELO,      /* greeted; no transaction */
	SMTPD_S_MAIL,      /* MAIL FROM accepted; no recipient yet */
	SMTPD_S_RCPT,      /* one or more recipients accepted */
	SMTPD_S_DATA,      /* reading the message text */
	SMTPD_S_COMMIT,    /* message handed to group commit; input paused */
	SMTPD_S_CLOSING,   /* last reply being written, then close */
	SMTPD_S_CLOSED     /* handles closing; freed from the close callback */
};

static const char *const state_names[] = { "NEW",  "CONNECTED", "HELO",    "MAIL",  "RCPT",
					   "DATA", "COMMIT",    "CLOSING", "CLOSED" };

/* What a session reacts to; every libuv callback and every call from the
 * listener set becomes one of these, handled by session_event(). */
enum smtpd_event {
	SE_ACCEPTED,  /* status: 0, or the error that left it half made */
	SE_READ,      /* new bytes in s->in */
	SE_READ_END,  /* status: UV_EOF or a read error */
	SE_WRITTEN,   /* status: the write's result */
	SE_TIMEOUT,   /* the state's timer ran out */
	SE_COMMITTED, /* status, err_no: group commit's answer */
	SE_STOP,      /* graceful stop: idle sessions get 421 */
	SE_STOP_GRACE /* the stop's grace period is over */
};

/* DATA decoding: position within the current line. Only CRLF "." CRLF ends
 * the data (RFC 5321 §4.1.1.4): a line begun after a bare LF (D_BOL_LF) never
 * starts a terminator, so LF.LF, LF.CRLF and CRLF.LF cannot smuggle a second
 * transaction past an application that dot-stuffs only after CRLF. Like
 * Postfix's smtpd_forbid_bare_newline = normalize, such a line is otherwise
 * a line: ".text" loses its stuffing dot (clients such as Python's smtplib
 * stuff after every LF), while a lone "." stays data (D_DOT_LF). */
enum data_pos { D_BOL, D_BOL_LF, D_MID, D_MID_CR, D_DOT, D_DOT_CR, D_DOT_LF, D_DOT_LF_CR };

struct listener {
	uv_tcp_t tcp;
	struct smtpd *sd;
	int open;
};

struct smtpd_session;

struct smtpd {
	struct relay *r;
	struct commit *commit;
	struct listener listeners[CONFIG_MAX_LISTEN];
	size_t nlisteners;
	size_t nopen;                   /* listener handles not yet closed */
	struct smtpd_session *sessions; /* doubly linked */
	size_t nsessions;
	size_t nrejects; /* over-limit connections being closed */
	uint64_t cmd_timeout_ms, data_timeout_ms;
	int stopping;
	uv_timer_t stop_timer;
	int stop_timer_open;
	void (*stop_done)(void *);
	void *stop_arg;
};

struct smtpd_session {
	struct smtpd *sd;
	struct smtp_msgid_scan msgid; /* the DATA's Message-ID, for the log */
	struct smtpd_session *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	int handles_open;
	enum smtpd_state state; /* changed only by session_enter() */
	char ip[INET6_ADDRSTRLEN];
	char client[INET6_ADDRSTRLEN + 16]; /* "unknown[ip]": no reverse DNS */
	int relay_ok;
	/* The session ends (socket error, last reply written, timeout): no
	 * more replies, and session_event() closes it once the event at hand
	 * is handled (OpenSMTPD's "free me" flag), so no code below a
	 * callback ever runs on a session whose handles are closing. */
	int free_me;
	unsigned errors, ncommands;

	/* HELO and transaction; the phase is in state */
	char helo[SMTP_DOMAIN_MAX + 1];
	int esmtp;
	char sender[SMTP_PATH_MAX + 1];
	char **rcpts;
	size_t nrcpts, rcpt_cap;
	struct queue_writer *w;
	char qid[QUEUE_ID_LEN + 1];

	/* DATA decoding */
	enum data_pos dpos;
	char *stage; /* SMTPD_STAGE bytes while in DATA */
	size_t stage_len;
	uint64_t data_bytes; /* message bytes as stored */
	int too_big;
	int write_err; /* errno of a failed queue write, or -1 */

	/* I/O */
	char in[SMTPD_INBUF];
	size_t inlen;
	int reading;
	int discard_line; /* inside an over-long command line */
	char out[SMTPD_OUTBUF];
	size_t outlen;
	char wbuf[SMTPD_OUTBUF];
	int writing;
};

struct reject_conn { /* connection over max_sessions */
	uv_tcp_t tcp;
	uv_write_t wreq;
	struct smtpd *sd;
	char msg[160];
};

static void session_process(struct smtpd_session *s);
static void maybe_stop_done(struct smtpd *sd);

/* ---- output ---- */

static void on_write(uv_write_t *req, int status);

static void session_flush(struct smtpd_session *s)
{
	uv_buf_t b;
	int rc;

	if (s->writing || s->outlen == 0 || s->free_me || s->state == SMTPD_S_CLOSED)
		return;
	memcpy(s->wbuf, s->out, s->outlen);
	b = uv_buf_init(s->wbuf, (unsigned)s->outlen);
	s->outlen = 0;
	rc = uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, on_write);
	if (rc != 0) {
		log_debug("smtpd %s: write: %s", s->client, uv_strerror(rc));
		s->free_me = 1;
		return;
	}
	s->writing = 1;
}

static void reply(struct smtpd_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends one reply (CRLF added). Callers check room first (session_process
 * keeps SMTPD_REPLY_MAX free before each command); a reply that still does
 * not fit means a bug, and the session ends rather than overrun. */
static void reply(struct smtpd_session *s, const char *fmt, ...)
{
	va_list ap;
	size_t room = sizeof(s->out) - s->outlen;
	int n;

	if (s->free_me)
		return;
	va_start(ap, fmt);
	n = vsnprintf(s->out + s->outlen, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n + 2 >= room) {
		log_error("smtpd %s: reply buffer full", s->client);
		s->free_me = 1;
		return;
	}
	s->outlen += (size_t)n;
	memcpy(s->out + s->outlen, "\r\n", 2);
	s->outlen += 2;
}

/* ---- the state machine ---- */

static int reads_commands(enum smtpd_state st)
{
	return st >= SMTPD_S_CONNECTED && st <= SMTPD_S_RCPT;
}

static uint64_t state_timeout_ms(const struct smtpd_session *s, enum smtpd_state st)
{
	if (reads_commands(st))
		return s->sd->cmd_timeout_ms;
	if (st == SMTPD_S_DATA)
		return s->sd->data_timeout_ms;
	if (st == SMTPD_S_CLOSING)
		return SMTPD_CLOSE_WAIT_MS;
	return 0;
}

static void on_timer(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_session_closed(uv_handle_t *h);
static void transaction_reset(struct smtpd_session *s);

/* Reading runs only while input can be consumed: reading commands with
 * room for the replies, or in DATA. Otherwise the kernel buffers hold the
 * client back. */
static void update_reading(struct smtpd_session *s)
{
	int want = (reads_commands(s->state) || s->state == SMTPD_S_DATA) && !s->free_me &&
		   s->inlen < sizeof(s->in) &&
		   (s->state == SMTPD_S_DATA || sizeof(s->out) - s->outlen >= SMTPD_REPLY_MAX);

	if (want && !s->reading) {
		if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0)
			s->reading = 1;
	} else if (!want && s->reading) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->reading = 0;
	}
}

static void restart_timer(struct smtpd_session *s)
{
	uint64_t ms = state_timeout_ms(s, s->state);

	if (ms == 0)
		uv_timer_stop(&s->timer);
	else
		uv_timer_start(&s->timer, on_timer, ms, 0);
}

/* Tears the session down; its memory goes in on_session_closed. Called only
 * through session_enter(), which session_event() alone calls with CLOSED. A
 * session whose timer could not be made (handles_open 1) was never
 * announced, so it leaves no disconnect line either. */
static void session_teardown(struct smtpd_session *s, int timer_made)
{
	if (timer_made)
		log_info("disconnect from %s commands=%u", s->client, s->ncommands);
	transaction_reset(s); /* frees an unfinished writer: temp file removed */
	if (s->reading)
		uv_read_stop((uv_stream_t *)&s->tcp);
	s->reading = 0;
	uv_close((uv_handle_t *)&s->tcp, on_session_closed);
	if (timer_made) {
		uv_timer_stop(&s->timer);
		uv_close((uv_handle_t *)&s->timer, on_session_closed);
	}
}

/* The only place that changes s->state (after curl's smtp state() and
 * smtp/client.c's enter()): logs old -> new, restarts the timer when the
 * timeout changes kind (the command timeout runs from the last read, not
 * from each new phase), starts or stops reading. */
static void session_enter(struct smtpd_session *s, enum smtpd_state ns)
{
	enum smtpd_state old = s->state;

	if (old == SMTPD_S_CLOSED || old == ns)
		return;
	log_debug("smtpd %s: %s -> %s", s->client, state_names[old], state_names[ns]);
	s->state = ns;
	if (ns == SMTPD_S_CLOSED) {
		session_teardown(s, s->handles_open == 2);
		return;
	}
	if (!(reads_commands(old) && reads_commands(ns)))
		restart_timer(s);
	update_reading(s);
}

/* ---- transaction ---- */

static void transaction_reset(struct smtpd_session *s)
{
	size_t i;

	for (i = 0; i < s->nrcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = s->rcpt_cap = 0;
	s->sender[0] = '\0';
	if (s->w != NULL) {
		queue_writer_free(s->w); /* an uncommitted file is unlinked */
		s->w = NULL;
	}
	s->qid[0] = '\0';
	free(s->stage);
	s->stage = NULL;
	s->stage_len = 0;
	s->data_bytes = 0;
	s->too_big = 0;
	s->write_err = 0;
}

/* A final reply and then close: state CLOSING, no more input. */
static void reply_and_close(struct smtpd_session *s, const char *line)
{
	if (s->free_me || s->state == SMTPD_S_CLOSING || s->state == SMTPD_S_CLOSED)
		return;
	reply(s, "%s", line);
	session_enter(s, SMTPD_S_CLOSING);
	session_flush(s);
	if (!s->writing)
		s->free_me = 1;
}

static void log_reject(struct smtpd_session *s, const char *stage, const char *text, const char *to)
{
	log_msg(LOG_LVL_INFO, s->qid[0] ? s->qid : NULL,
		"%sreject: %s from %s: %s; from=<%s>%s%s%s proto=%s helo=<%s>",
		s->qid[0] ? "" : "NOQUEUE: ", stage, s->client, text, s->sender, to ? " to=<" : "",
		to ? to : "", to ? ">" : "", s->esmtp ? "ESMTP" : "SMTP", s->helo);
}

static int is_storage_errno(int e)
{
	return e == ENOSPC || e == EDQUOT;
}

static void reply_write_error(struct smtpd_session *s, int e)
{
	if (is_storage_errno(e))
		reply(s, "452 4.3.1 Insufficient system storage");
	else
		reply(s, "451 4.3.0 Error: queue file write error");
}

/* ---- DATA ---- */

static void stage_flush(struct smtpd_session *s)
{
	if (s->stage_len == 0)
		return;
	if (!s->too_big && s->write_err == 0) {
		errno = 0;
		if (queue_writer_append(s->w, s->stage, s->stage_len) != 0) {
			s->write_err = errno ? errno : EIO;
			log_error("%s: queue write: %s", s->qid, strerror(s->write_err));
		}
	}
	s->stage_len = 0;
}

static void emit(struct smtpd_session *s, const char *p, size_t n)
{
	uint64_t max = s->sd->r->cfg.max_message_size;

	s->data_bytes += n;
	if (!s->msgid.done)
		smtp_msgid_feed(&s->msgid, p, n); /* the header section only */
	if (s->too_big || s->write_err != 0)
		return; /* keep reading to the end, store nothing */
	if (s->data_bytes > max) {
		s->too_big = 1;
		s->stage_len = 0;
		return;
	}
	while (n > 0) {
		size_t k = SMTPD_STAGE - s->stage_len;
		if (k > n)
			k = n;
		memcpy(s->stage + s->stage_len, p, k);
		s->stage_len += k;
		p += k;
		n -= k;
		if (s->stage_len == SMTPD_STAGE)
			stage_flush(s);
	}
}

static void emit_c(struct smtpd_session *s, char c)
{
	emit(s, &c, 1);
}

static void on_commit(void *arg, int status, int err_no);

/* The final "." was seen. */
static void data_end(struct smtpd_session *s)
{
	char text[128];

	stage_flush(s);
	free(s->stage);
	s->stage = NULL;
	if (s->too_big) {
		snprintf(text, sizeof(text), "552 5.3.4 Message size exceeds fixed limit");
		log_reject(s, "END-OF-MESSAGE", text, NULL);
		reply(s, "%s", text);
		transaction_reset(s);
		session_enter(s, SMTPD_S_HELO);
		return;
	}
	if (s->write_err != 0) {
		log_reject(s, "END-OF-MESSAGE", strerror(s->write_err), NULL);
		reply_write_error(s, s->write_err);
		transaction_reset(s);
		session_enter(s, SMTPD_S_HELO);
		return;
	}
	if (commit_submit(s->sd->commit, s->w, on_commit, s) != 0) {
		reply_write_error(s, ENOMEM);
		transaction_reset(s);
		session_enter(s, SMTPD_S_HELO);
		return;
	}
	session_enter(s, SMTPD_S_COMMIT);
}

/* Where the next ch is in buf[from..len), or len. */
static size_t next_byte(const char *buf, size_t len, size_t from, char ch)
{
	const char *p = memchr(buf + from, ch, len - from);

	return p != NULL ? (size_t)(p - buf) : len;
}

/* Feeds message text; returns the bytes consumed (stops after the end of
 * data). Dot-unstuffing and line-end normalisation happen here. */
static size_t data_feed(struct smtpd_session *s, const char *buf, size_t len)
{
	size_t i, next_cr = 0, next_lf = 0;
	bool searched = false;

	for (i = 0; i < len; i++) {
		char c = buf[i];

		switch (s->dpos) {
		case D_BOL:
			if (c == '.') {
				s->dpos = D_DOT;
				break;
			}
			goto mid;
		case D_BOL_LF:
			if (c == '.') {
				s->dpos = D_DOT_LF;
				break;
			}
			goto mid;
		case D_DOT_LF:
			if (c == '\r') {
				s->dpos = D_DOT_LF_CR;
				break;
			}
			if (c == '\n') {
				emit(s, ".\r\n", 3); /* LF "." LF: data, not an end */
				s->dpos = D_BOL_LF;
				break;
			}
			goto mid; /* ".x": the leading dot is dropped */
		case D_DOT_LF_CR:
			if (c == '\n') {
				emit(s, ".\r\n", 3); /* LF "." CRLF: data, not an end */
				s->dpos = D_BOL;
				break;
			}
			s->dpos = D_MID_CR; /* ".\rx": dot dropped, CR is data */
			goto mid_cr;
		case D_DOT:
			if (c == '\n') {
				/* "." ended by a bare LF: not a terminator, kept as data */
				emit(s, ".\r\n", 3);
				s->dpos = D_BOL_LF;
				break;
			}
			if (c == '\r') {
				s->dpos = D_DOT_CR;
				break;
			}
			goto mid; /* ".x": the leading dot is dropped */
		case D_DOT_CR:
			if (c == '\n') {
				data_end(s);
				return i + 1;
			}
			s->dpos = D_MID_CR; /* ".\rx": dot dropped, CR is data */
					    /* fall through */
		case D_MID_CR:
		mid_cr:
			if (c == '\n') {
				emit(s, "\r\n", 2);
				s->dpos = D_BOL;
				break;
			}
			emit_c(s, '\r'); /* a lone CR is data */
			if (c == '\r')
				break;
			emit_c(s, c);
			s->dpos = D_MID;
			break;
		case D_MID:
		mid:
			if (c == '\n') {
				emit(s, "\r\n", 2);
				s->dpos = D_BOL_LF;
			} else if (c == '\r') {
				s->dpos = D_MID_CR;
			} else {
				/* The line up to its next CR or LF is plain data:
				 * one emit() for the run, not one per byte. Each
				 * search resumes only once i has passed its last
				 * find, so no byte is scanned twice for the same
				 * character (a line of bare CRs stays linear). */
				size_t end;

				if (!searched || next_cr < i)
					next_cr = next_byte(buf, len, i, '\r');
				if (!searched || next_lf < i)
					next_lf = next_byte(buf, len, i, '\n');
				searched = true;
				end = next_cr < next_lf ? next_cr : next_lf;
				emit(s, buf + i, end - i);
				i = end - 1;
				s->dpos = D_MID;
			}
			break;
		}
	}
	return len;
}

static int data_start(struct smtpd_session *s)
{
	struct queue_envelope env;
	char date[40], hdr[1024];
	int n, e;
	size_t i;

	memset(&env, 0, sizeof(env));
	errno = 0;
	if (queue_writer_new(s->sd->r->queue, false, &s->w) != 0) {
		e = errno;
		s->w = NULL;
		goto fail;
	}
	snprintf(s->qid, sizeof(s->qid), "%s", queue_writer_id(s->w));
	snprintf(env.sender, sizeof(env.sender), "%s", s->sender);
	snprintf(env.client, sizeof(env.client), "%s", s->client);
	env.queued_at = clock_now();
	for (i = 0; i < s->nrcpts; i++) {
		if (queue_envelope_add_rcpt(&env, s->rcpts[i]) != 0) {
			e = ENOMEM;
			goto fail;
		}
	}
	errno = 0;
	if (queue_writer_header(s->w, &env) != 0) {
		e = errno;
		goto fail;
	}
	queue_envelope_clear(&env);

	clock_rfc5322(clock_now(), date, sizeof(date));
	n = snprintf(hdr, sizeof(hdr),
		     "Received: from %s (unknown [%s%s])\r\n"
		     "\tby %s (stsrelay) with %s id %s%s%s%s;\r\n"
		     "\t%s\r\n",
		     s->helo, strchr(s->ip, ':') ? "IPv6:" : "", s->ip, s->sd->r->cfg.hostname,
		     s->esmtp ? "ESMTP" : "SMTP", s->qid, s->nrcpts == 1 ? "\r\n\tfor <" : "",
		     s->nrcpts == 1 ? s->rcpts[0] : "", s->nrcpts == 1 ? ">" : "", date);
	if (n < 0 || (size_t)n >= sizeof(hdr)) {
		e = EINVAL;
		goto fail;
	}
	s->stage = malloc(SMTPD_STAGE);
	if (s->stage == NULL) {
		e = ENOMEM;
		goto fail;
	}
	s->stage_len = 0;
	s->data_bytes = 0;
	smtp_msgid_init(&s->msgid);
	s->dpos = D_BOL;
	s->too_big = 0;
	s->write_err = 0;
	errno = 0;
	if (queue_writer_append(s->w, hdr, (size_t)n) != 0) {
		e = errno;
		goto fail;
	}
	return 0;
fail:
	queue_envelope_clear(&env);
	log_error("%s: cannot start queue file: %s", s->qid[0] ? s->qid : "NOQUEUE",
		  strerror(e ? e : EIO));
	reply_write_error(s, e);
	free(s->stage);
	s->stage = NULL;
	if (s->w != NULL) {
		queue_writer_free(s->w);
		s->w = NULL;
	}
	s->qid[0] = '\0';
	return -1;
}

/* Group commit's answer; the queue writer is the session's again. A
 * session that ended meanwhile (free_me) gets no reply and is closed by
 * session_event() when this returns. */
static void commit_done(struct smtpd_session *s, int status, int err_no)
{
	struct smtpd *sd = s->sd;

	if (status == 0) {
		/* the commit takes a new id in the rare case its own was taken */
		snprintf(s->qid, sizeof(s->qid), "%s", queue_writer_id(s->w));
		/* Postfix's pair: smtpd names the client, qmgr the queued
		 * message; only for a committed message, so pflogsumm's
		 * "received" counts exactly what was queued. */
		log_msg(LOG_LVL_INFO, s->qid, "client=%s", s->client);
		if (smtp_msgid_value(&s->msgid) != NULL)
			log_fields(LOG_LVL_INFO, s->qid,
				   LF_STR("message-id", smtp_msgid_value(&s->msgid)), LF_END);
		log_fields_c(LOG_C_QMGR, LOG_LVL_INFO, s->qid, LF_ADDR("from", s->sender),
			     LF_INT("size", queue_writer_size(s->w)), LF_INT("nrcpt", s->nrcpts),
			     LF_NOTE("queue active"), LF_END);
		reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
		if (sd->r->sched != NULL)
			scheduler_add(sd->r->sched, s->qid);
	} else {
		log_error("%s: commit failed: %s", s->qid,
			  err_no ? strerror(err_no) : "unknown error");
		reply_write_error(s, err_no);
	}
	transaction_reset(s);
	if (s->free_me)
		return;
	if (sd->stopping) {
		reply_and_close(s, "421 4.3.2 Service shutting down");
		return;
	}
	session_enter(s, SMTPD_S_HELO);
	session_process(s); /* pipelined commands after the final "." */
}

/* ---- commands ---- */

/* A recipient named twice (or twice after alias_root) is kept once, as
 * Postfix's cleanup does: one copy per address. */
static int add_rcpt(struct smtpd_session *s, const char *addr)
{
	char *copy;
	size_t i;

	for (i = 0; i < s->nrcpts; i++)
		if (strcmp(s->rcpts[i], addr) == 0)
			return 0;

	if (s->nrcpts == s->rcpt_cap) {
		size_t cap = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
		char **n = realloc(s->rcpts, cap * sizeof(*n));
		if (n == NULL)
			return -1;
		s->rcpts = n;
		s->rcpt_cap = cap;
	}
	copy = strdup(addr);
	if (copy == NULL)
		return -1;
	s->rcpts[s->nrcpts++] = copy;
	return 0;
}

static void count_error(struct smtpd_session *s)
{
	if (++s->errors >= SMTPD_ERROR_LIMIT) {
		log_warn("too many errors from %s", s->client);
		reply_and_close(s, "421 4.7.0 Error: too many errors");
	}
}

/* A command out of sequence: 503, counted as an error. */
static int out_of_sequence(struct smtpd_session *s, const char *text)
{
	reply(s, "%s", text);
	count_error(s);
	return 0;
}

/* The checks: is the command allowed in this phase? 1, or 0 after the reply. */

static int check_mail(struct smtpd_session *s)
{
	if (s->state == SMTPD_S_CONNECTED)
		return out_of_sequence(s, "503 5.5.1 Error: send HELO/EHLO first");
	if (s->state != SMTPD_S_HELO)
		return out_of_sequence(s, "503 5.5.1 Error: nested MAIL command");
	return 1;
}

static int check_rcpt(struct smtpd_session *s)
{
	if (s->state < SMTPD_S_MAIL)
		return out_of_sequence(s, "503 5.5.1 Error: need MAIL command");
	return 1;
}

static int check_data(struct smtpd_session *s)
{
	if (s->state < SMTPD_S_MAIL)
		return out_of_sequence(s, "503 5.5.1 Error: need MAIL command");
	if (s->state == SMTPD_S_MAIL)
		return out_of_sequence(s, "503 5.5.1 Error: need RCPT command");
	return 1;
}

/* The proceeds: what an allowed command does; each sends its own reply. */

static void proceed_helo(struct smtpd_session *s, const struct smtp_command *cmd)
{
	const struct config *cfg = &s->sd->r->cfg;

	transaction_reset(s);
	snprintf(s->helo, sizeof(s->helo), "%s", cmd->arg);
	s->esmtp = cmd->verb == SMTP_CMD_EHLO;
	session_enter(s, SMTPD_S_HELO);
	if (!s->esmtp) {
		reply(s, "250 %s", cfg->hostname);
		return;
	}
	reply(s, "250-%s", cfg->hostname);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %llu", (unsigned long long)cfg->max_message_size);
	reply(s, "250-8BITMIME");
	reply(s, "250 ENHANCEDSTATUSCODES");
}

static void proceed_mail(struct smtpd_session *s, const struct smtp_command *cmd)
{
	char text[128];

	if (cmd->smtputf8) {
		reply(s, "555 5.5.4 SMTPUTF8 not supported");
		return;
	}
	snprintf(s->sender, sizeof(s->sender), "%s", cmd->path);
	if (cmd->has_size && cmd->size > s->sd->r->cfg.max_message_size) {
		snprintf(text, sizeof(text), "552 5.3.4 Message size exceeds fixed limit");
		log_reject(s, "MAIL", text, NULL); /* names the refused sender */
		s->sender[0] = '\0';
		reply(s, "%s", text);
		return;
	}
	session_enter(s, SMTPD_S_MAIL);
	reply(s, "250 2.1.0 Ok");
}

static void proceed_rcpt(struct smtpd_session *s, const struct smtp_command *cmd)
{
	const struct config *cfg = &s->sd->r->cfg;
	char text[SMTP_PATH_MAX + 128], alias[SMTP_PATH_MAX + 1] = "";

	if (!s->relay_ok) {
		snprintf(text, sizeof(text), "554 5.7.1 <%s>: Relay access denied", cmd->path);
		log_reject(s, "RCPT", text, cmd->path);
		reply(s, "%s", text);
	} else if (s->nrcpts >= QUEUE_MAX_RCPTS) {
		reply(s, "452 4.5.3 Error: too many recipients");
	} else if (smtp_address_local(cmd->path, cfg->hostname, cfg->alias_root, alias,
				      sizeof(alias)) == SMTP_LOCAL_REFUSED) {
		/* A local mailbox that nobody reads here would defer for days
		 * and then bounce: refuse it now, saying how to fix it. */
		snprintf(text, sizeof(text),
			 "550 5.1.1 <%s>: Recipient address rejected: local recipient and no "
			 "alias_root configured",
			 cmd->path);
		log_reject(s, "RCPT", text, cmd->path);
		reply(s, "%s", text);
	} else if (add_rcpt(s, alias[0] ? alias : cmd->path) != 0) {
		reply(s, "452 4.3.1 Insufficient system resources");
	} else {
		session_enter(s, SMTPD_S_RCPT);
		reply(s, "250 2.1.5 Ok");
	}
}

static void proceed_data(struct smtpd_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	if (data_start(s) != 0)
		return; /* data_start replied */
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	session_enter(s, SMTPD_S_DATA);
}

static void proceed_rset(struct smtpd_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	transaction_reset(s);
	if (s->state != SMTPD_S_CONNECTED)
		session_enter(s, SMTPD_S_HELO); /* RSET does not undo HELO */
	reply(s, "250 2.0.0 Ok");
}

static void proceed_quit(struct smtpd_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	reply_and_close(s, "221 2.0.0 Bye");
}

/* The commands (after OpenSMTPD's smtp_session.c table): check may refuse
 * in this phase (NULL: allowed in every phase); proceed does the command,
 * or, when NULL, the fixed reply is the whole answer. */
static const struct command_entry {
	enum smtp_verb verb;
	int (*check)(struct smtpd_session *s);
	void (*proceed)(struct smtpd_session *s, const struct smtp_command *cmd);
	const char *reply;
} commands[] = {
	{ .verb = SMTP_CMD_HELO, .proceed = proceed_helo },
	{ .verb = SMTP_CMD_EHLO, .proceed = proceed_helo },
	{ .verb = SMTP_CMD_MAIL, .check = check_mail, .proceed = proceed_mail },
	{ .verb = SMTP_CMD_RCPT, .check = check_rcpt, .proceed = proceed_rcpt },
	{ .verb = SMTP_CMD_DATA, .check = check_data, .proceed = proceed_data },
	{ .verb = SMTP_CMD_RSET, .proceed = proceed_rset },
	{ .verb = SMTP_CMD_NOOP, .reply = "250 2.0.0 Ok" },
	{ .verb = SMTP_CMD_QUIT, .proceed = proceed_quit },
	{ .verb = SMTP_CMD_VRFY,
	  .reply = "252 2.0.0 Cannot VRFY user; try RCPT to attempt delivery" },
	{ .verb = SMTP_CMD_EXPN, .reply = "502 5.5.1 Error: EXPN not supported" },
	{ .verb = SMTP_CMD_HELP,
	  .reply = "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP" },
	/* a local submission relay: clients are on mynetworks */
	{ .verb = SMTP_CMD_STARTTLS, .reply = "502 5.5.1 Error: STARTTLS not supported" },
	{ .verb = SMTP_CMD_AUTH, .reply = "502 5.5.1 Error: AUTH not supported" },
	{ .verb = SMTP_CMD_BDAT, .reply = "502 5.5.1 Error: BDAT not supported (no CHUNKING)" },
};

static void handle_command(struct smtpd_session *s, const char *line, size_t len)
{
	const struct command_entry *c = NULL;
	struct smtp_command cmd;
	const char *reason;
	size_t i;
	int rc;

	s->ncommands++;
	rc = smtp_command_parse(line, len, &cmd, &reason);
	if (rc != 0) {
		reply(s, "%d %s", rc, reason);
		log_debug("smtpd %s: %d %s", s->client, rc, reason);
		count_error(s);
		return;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]) && c == NULL; i++)
		if (commands[i].verb == cmd.verb)
			c = &commands[i];
	if (c == NULL) {
		reply(s, "500 5.5.2 Error: command not recognized");
		count_error(s);
		return;
	}
	if (c->check != NULL && !c->check(s))
		return;
	if (c->proceed != NULL)
		c->proceed(s, &cmd);
	else
		reply(s, "%s", c->reply);
}

/* Consumes as much buffered input as the state allows; pipelined commands
 * are handled in order and their replies leave in one write. */
static void session_process(struct smtpd_session *s)
{
	size_t pos = 0;

	while (pos < s->inlen && !s->free_me) {
		if (reads_commands(s->state)) {
			const char *start = s->in + pos;
			const char *lf;
			size_t avail = s->inlen - pos, linelen;

			if (sizeof(s->out) - s->outlen < SMTPD_REPLY_MAX) {
				session_flush(s);
				if (sizeof(s->out) - s->outlen < SMTPD_REPLY_MAX)
					break; /* resumes from on_write */
			}
			lf = memchr(start, '\n', avail);
			if (s->discard_line) {
				if (lf == NULL) {
					pos = s->inlen;
					break;
				}
				pos += (size_t)(lf - start) + 1;
				s->discard_line = 0;
				reply(s, "500 5.5.2 Error: line too long");
				count_error(s);
				continue;
			}
			if (lf == NULL) {
				if (avail >= SMTPD_CMD_LINE_MAX) {
					s->discard_line = 1;
					pos = s->inlen;
				}
				break;
			}
			linelen = (size_t)(lf - start) + 1;
			pos += linelen;
			if (linelen > SMTPD_CMD_LINE_MAX) {
				reply(s, "500 5.5.2 Error: line too long");
				count_error(s);
				continue;
			}
			handle_command(s, start, linelen);
		} else if (s->state == SMTPD_S_DATA) {
			pos += data_feed(s, s->in + pos, s->inlen - pos);
		} else {
			break; /* COMMIT waits for commit_done; CLOSING drops input */
		}
	}
	if (reads_commands(s->state) && s->sd->stopping)
		reply_and_close(s, "421 4.3.2 Service shutting down"); /* DATA ended during stop */
	if (s->free_me)
		return; /* session_event() closes it */
	if (s->state == SMTPD_S_CLOSING)
		pos = s->inlen;
	memmove(s->in, s->in + pos, s->inlen - pos);
	s->inlen -= pos;
	session_flush(s);
	update_reading(s);
}

/* ---- events ---- */

static void peer_name(uv_tcp_t *tcp, struct sockaddr_storage *ss, char *ip, size_t iplen);

static void session_accepted(struct smtpd_session *s, int status)
{
	struct smtpd *sd = s->sd;
	struct sockaddr_storage ss;

	if (status != 0) {
		s->free_me = 1;
		return;
	}
	peer_name(&s->tcp, &ss, s->ip, sizeof(s->ip));
	snprintf(s->client, sizeof(s->client), "unknown[%s]", s->ip);
	s->relay_ok = ss.ss_family != 0 &&
		      config_mynetworks_match(&sd->r->cfg, (const struct sockaddr *)&ss);
	log_info("connect from %s", s->client);
	reply(s, "220 %s ESMTP stsrelay", sd->r->cfg.hostname);
	session_enter(s, SMTPD_S_CONNECTED);
	session_flush(s);
}

static void session_read_end(struct smtpd_session *s, int status)
{
	if (s->state == SMTPD_S_DATA)
		log_msg(LOG_LVL_INFO, s->qid, "lost connection after DATA (%llu bytes) from %s",
			(unsigned long long)s->data_bytes, s->client);
	else if (status != UV_EOF)
		log_info("lost connection from %s: %s", s->client, uv_strerror(status));
	s->free_me = 1;
}

static void session_written(struct smtpd_session *s, int status)
{
	if (status != 0) {
		s->free_me = 1;
		return;
	}
	if (s->state == SMTPD_S_CLOSING) {
		session_flush(s);
		if (!s->writing)
			s->free_me = 1;
		return;
	}
	session_process(s); /* input may have waited for reply room */
}

static void session_timeout(struct smtpd_session *s)
{
	if (s->state == SMTPD_S_CLOSING) {
		s->free_me = 1;
		return;
	}
	log_msg(LOG_LVL_INFO, s->qid[0] ? s->qid : NULL, "timeout after %s from %s",
		s->state == SMTPD_S_DATA ? "DATA" : "command", s->client);
	s->outlen = 0; /* pending replies were never read; the 421 fits */
	reply_and_close(s, "421 4.4.2 Error: timeout exceeded");
}

/* The one dispatcher: every libuv callback and listener call reaches the
 * session here, and here alone a session is closed. During COMMIT the
 * queue writer belongs to the commit worker, so an ended session waits for
 * SE_COMMITTED to give it back. */
static void session_event(struct smtpd_session *s, enum smtpd_event ev, int status, int err_no)
{
	if (s->state == SMTPD_S_CLOSED)
		return; /* e.g. a write cancelled by uv_close */
	switch (ev) {
	case SE_ACCEPTED:
		session_accepted(s, status);
		break;
	case SE_READ:
		restart_timer(s);
		session_process(s);
		break;
	case SE_READ_END:
		session_read_end(s, status);
		break;
	case SE_WRITTEN:
		session_written(s, status);
		break;
	case SE_TIMEOUT:
		session_timeout(s);
		break;
	case SE_COMMITTED:
		commit_done(s, status, err_no);
		break;
	case SE_STOP:
		if (reads_commands(s->state)) {
			if (sizeof(s->out) - s->outlen < SMTPD_REPLY_MAX)
				s->outlen = 0;
			reply_and_close(s, "421 4.3.2 Service shutting down");
		}
		break;
	case SE_STOP_GRACE:
		if (s->state == SMTPD_S_COMMIT)
			break; /* closed once committed */
		if (s->state == SMTPD_S_DATA)
			log_msg(LOG_LVL_INFO, s->qid,
				"shutdown: dropping unfinished message from %s", s->client);
		s->free_me = 1;
		break;
	}
	if (s->free_me && (s->state != SMTPD_S_COMMIT || ev == SE_COMMITTED))
		session_enter(s, SMTPD_S_CLOSED);
}

/* ---- libuv callbacks ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct smtpd_session *s = h->data;

	(void)suggested;
	*buf = uv_buf_init(s->in + s->inlen, (unsigned)(sizeof(s->in) - s->inlen));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct smtpd_session *s = st->data;

	(void)buf;
	if (nread == 0)
		return;
	if (nread < 0) {
		session_event(s, SE_READ_END, (int)nread, 0);
		return;
	}
	s->inlen += (size_t)nread;
	session_event(s, SE_READ, 0, 0);
}

static void on_write(uv_write_t *req, int status)
{
	struct smtpd_session *s = req->handle->data;

	s->writing = 0;
	session_event(s, SE_WRITTEN, status, 0);
}

static void on_timer(uv_timer_t *t)
{
	session_event(t->data, SE_TIMEOUT, 0, 0);
}

static void on_commit(void *arg, int status, int err_no)
{
	session_event(arg, SE_COMMITTED, status, err_no);
}

static void on_session_closed(uv_handle_t *h)
{
	struct smtpd_session *s = h->data;
	struct smtpd *sd = s->sd;

	if (--s->handles_open > 0)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		sd->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	sd->nsessions--;
	free(s);
	maybe_stop_done(sd);
}

static void on_reject_closed(uv_handle_t *h)
{
	struct reject_conn *rc = h->data;
	struct smtpd *sd = rc->sd;

	sd->nrejects--;
	free(rc);
	maybe_stop_done(sd);
}

static void on_reject_written(uv_write_t *req, int status)
{
	(void)status;
	uv_close((uv_handle_t *)req->handle, on_reject_closed);
}

static void peer_name(uv_tcp_t *tcp, struct sockaddr_storage *ss, char *ip, size_t iplen)
{
	int len = sizeof(*ss);

	memset(ss, 0, sizeof(*ss));
	snprintf(ip, iplen, "unknown");
	if (uv_tcp_getpeername(tcp, (struct sockaddr *)ss, &len) != 0)
		return;
	if (ss->ss_family == AF_INET)
		uv_ip4_name((struct sockaddr_in *)ss, ip, iplen);
	else if (ss->ss_family == AF_INET6)
		uv_ip6_name((struct sockaddr_in6 *)ss, ip, iplen);
}

static void reject_connection(struct smtpd *sd, uv_stream_t *server)
{
	struct reject_conn *rc = calloc(1, sizeof(*rc));
	struct sockaddr_storage ss;
	char ip[INET6_ADDRSTRLEN];
	uv_buf_t b;

	if (rc == NULL)
		return;
	rc->sd = sd;
	rc->tcp.data = rc;
	if (uv_tcp_init(sd->r->loop, &rc->tcp) != 0) {
		free(rc);
		return;
	}
	sd->nrejects++;
	if (uv_accept(server, (uv_stream_t *)&rc->tcp) != 0) {
		uv_close((uv_handle_t *)&rc->tcp, on_reject_closed);
		return;
	}
	peer_name(&rc->tcp, &ss, ip, sizeof(ip));
	log_warn("connect from unknown[%s]: 421 too many connections (max_sessions=%u)", ip,
		 sd->r->cfg.max_sessions);
	snprintf(rc->msg, sizeof(rc->msg), "421 4.7.0 %s Error: too many connections\r\n",
		 sd->r->cfg.hostname);
	b = uv_buf_init(rc->msg, (unsigned)strlen(rc->msg));
	if (uv_write(&rc->wreq, (uv_stream_t *)&rc->tcp, &b, 1, on_reject_written) != 0)
		uv_close((uv_handle_t *)&rc->tcp, on_reject_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	struct smtpd *sd = l->sd;
	struct smtpd_session *s;
	int rc;

	if (status != 0) {
		log_warn("accept: %s", uv_strerror(status));
		return;
	}
	if (sd->stopping)
		return;
	if (sd->nsessions >= sd->r->cfg.max_sessions) {
		reject_connection(sd, server);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		log_error("out of memory for a new session");
		reject_connection(sd, server);
		return;
	}
	s->sd = sd;
	s->tcp.data = s;
	s->timer.data = s;
	if (uv_tcp_init(sd->r->loop, &s->tcp) != 0) {
		free(s);
		return;
	}
	s->handles_open = 1;
	rc = uv_timer_init(sd->r->loop, &s->timer);
	if (rc == 0) {
		s->handles_open = 2;
		rc = uv_accept(server, (uv_stream_t *)&s->tcp);
	}
	/* counted even if half made: stop waits for its handles to close */
	s->next = sd->sessions;
	if (sd->sessions)
		sd->sessions->prev = s;
	sd->sessions = s;
	sd->nsessions++;
	session_event(s, SE_ACCEPTED, rc, 0);
}

/* ---- listener set ---- */

static uint64_t timeout_from_env(uint64_t dflt_s)
{
	const char *e = getenv("STSRELAY_SMTPD_TIMEOUT");
	char *end;
	unsigned long v;

	if (e == NULL || *e == '\0')
		return dflt_s * 1000;
	errno = 0;
	v = strtoul(e, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > 86400)
		return dflt_s * 1000;
	return (uint64_t)v * 1000;
}

static void on_listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;

	l->sd->nopen--;
	maybe_stop_done(l->sd);
}

static void on_stop_timer_closed(uv_handle_t *h)
{
	struct smtpd *sd = h->data;

	sd->stop_timer_open = 0;
	maybe_stop_done(sd);
}

static void maybe_stop_done(struct smtpd *sd)
{
	void (*done)(void *);

	if (!sd->stopping || sd->nsessions > 0 || sd->nrejects > 0 || sd->nopen > 0)
		return;
	if (sd->stop_timer_open == 1) {
		sd->stop_timer_open = 2; /* closing */
		uv_close((uv_handle_t *)&sd->stop_timer, on_stop_timer_closed);
		return;
	}
	if (sd->stop_timer_open != 0 || sd->stop_done == NULL)
		return;
	done = sd->stop_done;
	sd->stop_done = NULL;
	done(sd->stop_arg);
}

static void close_listeners(struct smtpd *sd)
{
	size_t i;

	for (i = 0; i < sd->nlisteners; i++) {
		if (!sd->listeners[i].open)
			continue;
		sd->listeners[i].open = 0;
		uv_close((uv_handle_t *)&sd->listeners[i].tcp, on_listener_closed);
	}
}

int smtpd_bind(struct relay *r, struct smtpd **out, char *err, size_t errlen)
{
	struct smtpd *sd = calloc(1, sizeof(*sd));
	size_t i;
	int rc;

	if (sd == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	sd->r = r;
	sd->cmd_timeout_ms = timeout_from_env(SMTPD_CMD_TIMEOUT_S);
	sd->data_timeout_ms = timeout_from_env(SMTPD_DATA_TIMEOUT_S);
	for (i = 0; i < r->cfg.nlisten; i++) {
		const struct config_addr *a = &r->cfg.listen[i];
		struct listener *l = &sd->listeners[i];

		l->sd = sd;
		l->tcp.data = l;
		rc = uv_tcp_init(r->loop, &l->tcp);
		if (rc != 0) {
			snprintf(err, errlen, "listen %s:%u: %s", a->host, a->port,
				 uv_strerror(rc));
			goto fail;
		}
		l->open = 1;
		sd->nopen++;
		sd->nlisteners = i + 1;
		/* IPv6 sockets only for IPv6, so [::]:25 and 0.0.0.0:25 can coexist */
		rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&a->sa,
				 a->sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
		if (rc != 0) {
			snprintf(err, errlen, "listen %s:%u: %s", a->host, a->port,
				 uv_strerror(rc));
			goto fail;
		}
	}
	*out = sd;
	return 0;
fail:
	/* handles are closing: the caller runs the loop, then smtpd_free(sd) */
	sd->stopping = 1;
	close_listeners(sd);
	*out = sd;
	return -1;
}

int smtpd_listen(struct smtpd *sd, struct commit *c, char *err, size_t errlen)
{
	size_t i;
	int rc;

	sd->commit = c;
	for (i = 0; i < sd->nlisteners; i++) {
		const struct config_addr *a = &sd->r->cfg.listen[i];

		/* uv_tcp_bind reports EADDRINUSE only here, at listen() */
		rc = uv_listen((uv_stream_t *)&sd->listeners[i].tcp, 511, on_connection);
		if (rc != 0) {
			snprintf(err, errlen, "listen %s:%u: %s", a->host, a->port,
				 uv_strerror(rc));
			return -1;
		}
		log_info("listening on %s%s%s:%u", a->sa.ss_family == AF_INET6 ? "[" : "", a->host,
			 a->sa.ss_family == AF_INET6 ? "]" : "", a->port);
	}
	return 0;
}

static void on_stop_grace(uv_timer_t *t)
{
	struct smtpd *sd = t->data;
	struct smtpd_session *s, *next;

	for (s = sd->sessions; s != NULL; s = next) {
		next = s->next;
		session_event(s, SE_STOP_GRACE, 0, 0);
	}
}

void smtpd_stop(struct smtpd *sd, void (*done)(void *arg), void *arg)
{
	struct smtpd_session *s, *next;

	sd->stop_done = done;
	sd->stop_arg = arg;
	if (sd->stopping) {
		maybe_stop_done(sd);
		return;
	}
	sd->stopping = 1;
	close_listeners(sd);
	for (s = sd->sessions; s != NULL; s = next) {
		next = s->next;
		session_event(s, SE_STOP, 0, 0);
	}
	if (sd->nsessions > 0 && uv_timer_init(sd->r->loop, &sd->stop_timer) == 0) {
		sd->stop_timer.data = sd;
		sd->stop_timer_open = 1;
		uv_timer_start(&sd->stop_timer, on_stop_grace, SMTPD_STOP_GRACE_MS, 0);
	}
	maybe_stop_done(sd);
}

size_t smtpd_sessions(const struct smtpd *sd)
{
	return sd->nsessions;
}

void smtpd_free(struct smtpd *sd)
{
	free(sd);
}
