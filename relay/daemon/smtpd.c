/* The SMTP listener and its sessions (RFC 5321 server side): one explicit
 * state machine per client, commands parsed by smtp/command.c, DATA streamed
 * through a bounded buffer into a queue writer, 250 only after group commit.
 * Three kinds of listener share it: `listen` (the local relay, plaintext,
 * mynetworks), `submission_listen` (RFC 6409: STARTTLS, then AUTH, then
 * MAIL) and `smtps_listen` (RFC 8314: TLS from the first byte).
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
 * replies to drain) stops reading altogether.
 * TLS (smtp/tls.c on memory BIOs): a socket read is fed to OpenSSL at once
 * and the socket is read again only once OpenSSL has no whole record left
 * (tls_starved), so it never holds more than one read's ciphertext;
 * plaintext comes out into the same 16 KiB input buffer, and replies are
 * encrypted only once the previous ciphertext is written.
 * AUTH (smtp/sasl.c): lines of up to SMTP_SASL_LINE_MAX octets; the
 * password check runs in the thread pool (relay/daemon/auth.c) and the
 * session waits for it without reading; a failure is answered after
 * SMTPD_AUTH_FAIL_DELAY_MS. */
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

#include <strings.h>

#include "queue/queue.h"
#include "relay/core/clock.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"
#include "relay/daemon/auth.h"
#include "relay/daemon/scheduler.h"
#include "smtp/command.h"
#include "smtp/msgid.h"
#include "smtp/sasl.h"
#include "smtp/tls.h"
#include "smtp/users.h"

#define SMTPD_INBUF 16384         /* unprocessed input per session */
#define SMTPD_OUTBUF 8192         /* replies waiting to be written */
#define SMTPD_REPLY_MAX 1024      /* no single reply is longer */
#define SMTPD_CMD_LINE_MAX 512    /* RFC 5321 §4.5.3.1.4, CRLF included */
#define SMTPD_STAGE 65536         /* DATA bytes staged before a queue write */
#define SMTPD_ERROR_LIMIT 50      /* then 421: binary garbage or a broken client */
#define SMTPD_CLOSE_WAIT_MS 10000 /* a client that does not read its last reply */
#define SMTPD_STOP_GRACE_MS 10000 /* on SIGTERM, sessions in DATA may finish */
/* A failed AUTH is answered this much later (Postfix's smtpd_error_sleep_time):
 * together with AUTH_FAIL_LIMIT it slows guessing to a trickle. */
#define SMTPD_AUTH_FAIL_DELAY_MS 1000

/* The session's states, the SMTP phases included (RFC 5321 §4.1.4's order:
 * HELO, then MAIL, RCPT, DATA). CONNECTED to RCPT read commands; AUTH reads
 * SASL response lines (RFC 4954 §4). */
enum smtpd_state {
	SMTPD_S_NEW,        /* handles made, nothing sent yet */
	SMTPD_S_TLS,        /* TLS handshake (smtps at once, or after STARTTLS) */
	SMTPD_S_CONNECTED,  /* 220 sent (or TLS up after STARTTLS); no EHLO yet */
	SMTPD_S_HELO,       /* greeted; no transaction */
	SMTPD_S_MAIL,       /* MAIL FROM accepted; no recipient yet */
	SMTPD_S_RCPT,       /* one or more recipients accepted */
	SMTPD_S_STARTTLS,   /* "220 Ready" going out in plaintext; input dropped */
	SMTPD_S_AUTH,       /* a challenge sent; reading the response line */
	SMTPD_S_AUTH_CHECK, /* password checked in the pool, or a failure's delay */
	SMTPD_S_QUEUE_FILE, /* DATA said; its queue file is being made; input paused */
	SMTPD_S_DATA,       /* reading the message text */
	SMTPD_S_COMMIT,     /* message handed to group commit; input paused */
	SMTPD_S_CLOSING,    /* last reply being written, then close */
	SMTPD_S_CLOSED      /* handles closing; freed from the close callback */
};

static const char *const state_names[] = { "NEW",        "TLS",        "CONNECTED", "HELO",
					   "MAIL",       "RCPT",       "STARTTLS",  "AUTH",
					   "AUTH_CHECK", "QUEUE_FILE", "DATA",      "COMMIT",
					   "CLOSING",    "CLOSED" };

/* Which `*listen` key the session came through. */
enum smtpd_kind {
	SMTPD_RELAY,      /* listen: mynetworks may relay, no TLS, no AUTH */
	SMTPD_SUBMISSION, /* submission_listen: STARTTLS, AUTH, MAIL */
	SMTPD_SMTPS       /* smtps_listen: TLS from the start, AUTH, MAIL */
};

static const char *const kind_names[] = { "smtp", "submission", "smtps" };
static const char *const kind_keys[] = { "listen", "submission_listen", "smtps_listen" };

/* What a session reacts to; every libuv callback and every call from the
 * listener set becomes one of these, handled by session_event(). */
enum smtpd_event {
	SE_ACCEPTED,    /* status: 0, or the error that left it half made */
	SE_READ,        /* new bytes in s->in */
	SE_READ_END,    /* status: UV_EOF or a read error */
	SE_WRITTEN,     /* status: the write's result */
	SE_TIMEOUT,     /* the state's timer ran out */
	SE_COMMITTED,   /* status, err_no: group commit's answer */
	SE_QUEUE_FILE,  /* s->w is the new message's writer, or NULL and err_no */
	SE_STOP,        /* graceful stop: idle sessions get 421 */
	SE_STOP_GRACE,  /* the stop's grace period is over */
	SE_AUTH_CHECKED /* the thread pool's password verdict is in s->check */
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
	enum smtpd_kind kind;
	struct config_addr addr;
};

#define SMTPD_MAX_LISTENERS (3 * CONFIG_MAX_LISTEN)

struct reload_job;

struct smtpd_session;

struct smtpd {
	struct relay *r;
	struct commit *commit;
	struct listener listeners[SMTPD_MAX_LISTENERS];
	size_t nlisteners;
	/* Submission (NULL while submission_listen and smtps_listen are off):
	 * the certificate new TLS sessions get, and AUTH. */
	struct smtp_tls_server_ctx *tls_ctx;
	struct auth *auth;
	struct reload_job *reload; /* in the thread pool */
	int reload_again;          /* a SIGHUP came meanwhile */
	/* One socket read of a TLS session, fed to OpenSSL at once (libuv
	 * calls alloc and read back to back, so one buffer serves all). */
	char tls_rbuf[SMTPD_INBUF];
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
	enum smtpd_kind kind;
	char ip[INET6_ADDRSTRLEN];
	char client[INET6_ADDRSTRLEN + 16]; /* "unknown[ip]": no reverse DNS */
	int relay_ok;                       /* the client is in mynetworks */

	/* TLS and AUTH (submission listeners) */
	struct smtp_tls *tls; /* NULL: plaintext */
	int tls_starved;      /* OpenSSL needs more ciphertext: read the socket */
	struct smtp_sasl sasl;
	struct auth_check check;      /* holds the users table of user */
	int auth_running;             /* check is queued or in the pool */
	const char *auth_fail_reply;  /* the 535 to send when the delay ends */
	const struct smtp_user *user; /* authenticated; NULL: not */
	enum smtp_sasl_mech auth_mech;
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
	struct commit_wait wait; /* for w, in QUEUE_FILE */
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

/* Starts writing what is waiting: the replies, or over TLS their
 * ciphertext. Replies are encrypted only once OpenSSL's output is empty, so
 * the ciphertext held is that of one output buffer (handshake messages
 * aside) and a client that does not read stops the session reading
 * (update_reading) instead of growing a memory BIO. The last reply of a
 * closing TLS session is followed by close_notify. */
static void session_flush(struct smtpd_session *s)
{
	size_t n;
	uv_buf_t b;
	int rc;

	if (s->writing || s->free_me || s->state == SMTPD_S_CLOSED)
		return;
	if (s->tls != NULL) {
		if (smtp_tls_pending(s->tls) == 0 && s->outlen > 0 && s->state != SMTPD_S_TLS) {
			if (smtp_tls_write(s->tls, s->out, s->outlen) != (ssize_t)s->outlen) {
				log_info("%s: TLS write failed", s->client);
				s->free_me = 1;
				return;
			}
			s->outlen = 0;
			if (s->state == SMTPD_S_CLOSING)
				smtp_tls_shutdown(s->tls);
		}
		n = smtp_tls_take(s->tls, s->wbuf, sizeof(s->wbuf));
	} else {
		n = s->outlen;
		memcpy(s->wbuf, s->out, n);
		s->outlen = 0;
	}
	if (n == 0)
		return;
	b = uv_buf_init(s->wbuf, (unsigned)n);
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

/* Input is read line by line: commands, or SASL responses. */
static int reads_lines(enum smtpd_state st)
{
	return reads_commands(st) || st == SMTPD_S_AUTH;
}

static uint64_t state_timeout_ms(const struct smtpd_session *s, enum smtpd_state st)
{
	/* AUTH_CHECK has no timeout: the check ends by itself, and the
	 * failure delay sets the timer of its own (auth_refused) */
	if (reads_lines(st) || st == SMTPD_S_TLS || st == SMTPD_S_STARTTLS)
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

/* Reading runs only while input can be consumed: reading lines with room
 * for the replies, or in DATA, or a TLS handshake; and over TLS only once
 * OpenSSL has used up what it was given. Otherwise the kernel buffers hold
 * the client back. */
static void update_reading(struct smtpd_session *s)
{
	int want;

	if (s->free_me || (s->tls != NULL && !s->tls_starved))
		want = 0;
	else if (s->state == SMTPD_S_TLS)
		want = 1;
	else
		want = (reads_lines(s->state) || s->state == SMTPD_S_DATA) &&
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
	if (s->sd->commit != NULL) /* a session ended in QUEUE_FILE */
		commit_cancel_wait(s->sd->commit, &s->wait);
	transaction_reset(s); /* frees an unfinished writer: temp file removed */
	smtp_sasl_clear(&s->sasl);
	auth_check_release(&s->check); /* never running here: see session_event */
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

/* Starts the message in s->w, the new writer, or when err (it could not be
 * made) says why; 0, or -1 with the error replied. */
static int data_start(struct smtpd_session *s, int err)
{
	struct queue_envelope env;
	char date[40], hdr[1536], tls_note[160] = "", auth_note[SMTP_USERS_NAME_MAX + 40] = "";
	char proto[16];
	int n, e;
	size_t i;

	memset(&env, 0, sizeof(env));
	if (err != 0 || s->w == NULL) {
		e = err;
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
	if (s->tls != NULL)
		snprintf(tls_note, sizeof(tls_note), "\t(using %s with cipher %s)\r\n",
			 smtp_tls_version(s->tls), smtp_tls_cipher(s->tls));
	if (s->user != NULL && s->sd->r->cfg.received_show_auth)
		snprintf(auth_note, sizeof(auth_note), "\t(Authenticated sender: %s)\r\n",
			 s->user->name);
	/* RFC 3848: ESMTPS over TLS, ESMTPA authenticated, ESMTPSA both */
	snprintf(proto, sizeof(proto), "%s%s%s", s->esmtp ? "ESMTP" : "SMTP",
		 s->tls != NULL ? "S" : "", s->user != NULL ? "A" : "");
	n = snprintf(hdr, sizeof(hdr),
		     "Received: from %s (unknown [%s%s])\r\n"
		     "%s%s"
		     "\tby %s (stsrelay) with %s id %s%s%s%s;\r\n"
		     "\t%s\r\n",
		     s->helo, strchr(s->ip, ':') ? "IPv6:" : "", s->ip, tls_note, auth_note,
		     s->sd->r->cfg.hostname, proto, s->qid, s->nrcpts == 1 ? "\r\n\tfor <" : "",
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
		log_fields(LOG_LVL_INFO, s->qid, LF_STR("client", s->client),
			   LF_STR("sasl_method",
				  s->user != NULL ? smtp_sasl_mech_name(s->auth_mech) : NULL),
			   LF_STR("sasl_username", s->user != NULL ? s->user->name : NULL), LF_END);
		if (smtp_msgid_value(&s->msgid) != NULL)
			log_fields(LOG_LVL_INFO, s->qid,
				   LF_STR("message-id", smtp_msgid_value(&s->msgid)), LF_END);
		log_fields_c(LOG_C_QMGR, LOG_LVL_INFO, s->qid, LF_ADDR("from", s->sender),
			     LF_INT("size", queue_writer_size(s->w)), LF_INT("nrcpt", s->nrcpts),
			     LF_NOTE("queue active"), LF_END);
		/* port 25 (relay) vs 587/465 (submission, smtps) */
		metrics_inc(METRICS_ACCEPTED, s->kind == SMTPD_RELAY ? METRICS_SOURCE_SMTP
								     : METRICS_SOURCE_SUBMISSION);
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

/* ---- recipients and errors ---- */

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

/* ---- TLS and greeting ---- */

/* Sessions on submission listeners from ip that are not on their way out:
 * what max_sessions_per_ip limits. */
static unsigned sessions_from(const struct smtpd *sd, const char *ip)
{
	const struct smtpd_session *o;
	unsigned n = 0;

	for (o = sd->sessions; o != NULL; o = o->next)
		if (o->kind != SMTPD_RELAY && o->state != SMTPD_S_CLOSING &&
		    o->state != SMTPD_S_CLOSED && !o->free_me && strcmp(o->ip, ip) == 0)
			n++;
	return n;
}

/* The 220, or a 421 for a client of a submission listener that is blocked
 * after failed authentications or has too many sessions open (clients in
 * mynetworks are not counted, as Postfix exempts them from its anvil
 * limits). Over smtps this comes after the handshake, so the client can
 * read it. */
static void session_greet(struct smtpd_session *s)
{
	const struct config *cfg = &s->sd->r->cfg;
	unsigned n;

	char text[SMTPD_REPLY_MAX];

	if (s->kind != SMTPD_RELAY && auth_blocked(s->sd->auth, s->ip)) {
		log_warn("%s: refused: too many failed authentications from %s", s->client, s->ip);
		snprintf(text, sizeof(text),
			 "421 4.7.0 %s Error: too many failed authentications from %s; try again "
			 "later",
			 cfg->hostname, s->ip);
		reply_and_close(s, text);
		return;
	}
	if (s->kind != SMTPD_RELAY && !s->relay_ok &&
	    (n = sessions_from(s->sd, s->ip)) > cfg->max_sessions_per_ip) {
		log_warn("Connection concurrency limit exceeded: %u from %s for service %s", n,
			 s->client, kind_names[s->kind]);
		snprintf(text, sizeof(text), "421 4.7.0 %s Error: too many connections from %s",
			 cfg->hostname, s->ip);
		reply_and_close(s, text);
		return;
	}
	reply(s, "220 %s ESMTP stsrelay", cfg->hostname);
	session_enter(s, SMTPD_S_CONNECTED);
}

/* TLS begins: after "220 Ready" went out (STARTTLS) or at once (smtps),
 * with the certificate loaded now; the session keeps it whatever a reload
 * brings. */
static void tls_start(struct smtpd_session *s)
{
	char err[256];

	s->tls = smtp_tls_accept(s->sd->tls_ctx, err, sizeof(err));
	if (s->tls == NULL) {
		log_error("%s: cannot start TLS: %s", s->client, err);
		s->free_me = 1;
		return;
	}
	s->tls_starved = 1;
	s->inlen = 0;
	session_enter(s, SMTPD_S_TLS);
}

static void tls_established(struct smtpd_session *s)
{
	log_info("Anonymous TLS connection established from %s: %s with cipher %s", s->client,
		 smtp_tls_version(s->tls), smtp_tls_cipher(s->tls));
	if (s->kind == SMTPD_SMTPS) {
		session_greet(s);
		return;
	}
	/* RFC 3207 §4.2: what the client said before TLS counts for nothing;
	 * it starts again with EHLO (no new greeting). */
	transaction_reset(s);
	s->helo[0] = '\0';
	s->esmtp = 0;
	session_enter(s, SMTPD_S_CONNECTED);
}

/* Drives the handshake with the ciphertext fed so far. */
static void tls_handshake(struct smtpd_session *s)
{
	int rc = smtp_tls_handshake(s->tls);

	if (rc == SMTP_TLS_AGAIN) {
		s->tls_starved = 1;
		return;
	}
	if (rc == SMTP_TLS_ERROR) {
		log_info("SSL_accept error from %s: %s", s->client, smtp_tls_reason(s->tls));
		session_enter(s, SMTPD_S_CLOSING); /* the alert goes out, then close */
		session_flush(s);
		if (!s->writing)
			s->free_me = 1;
		return;
	}
	tls_established(s);
}

/* Decrypts what OpenSSL holds into s->in, as far as there is room and the
 * state takes input. Returns the bytes added; 0 also when OpenSSL needs
 * more ciphertext (tls_starved) or the session ended (free_me). */
static size_t tls_fill(struct smtpd_session *s)
{
	ssize_t n;

	if (s->tls == NULL || s->free_me || s->inlen == sizeof(s->in) ||
	    !(reads_lines(s->state) || s->state == SMTPD_S_DATA))
		return 0;
	n = smtp_tls_read(s->tls, s->in + s->inlen, sizeof(s->in) - s->inlen);
	if (n > 0) {
		s->inlen += (size_t)n;
		return (size_t)n;
	}
	if (n == 0) {
		s->tls_starved = 1;
		return 0;
	}
	if (n == SMTP_TLS_EOF) {
		if (s->state == SMTPD_S_DATA)
			log_msg(LOG_LVL_INFO, s->qid,
				"lost connection after DATA (%llu bytes) from %s",
				(unsigned long long)s->data_bytes, s->client);
	} else {
		log_info("lost connection from %s: TLS error", s->client);
	}
	s->free_me = 1;
	return 0;
}

/* ---- AUTH ---- */

static void auth_done(struct auth_check *c);

/* The password is checked off the loop; the session waits, reading
 * nothing (a client must not pipeline past AUTH, RFC 4954 §4). */
static void auth_check(struct smtpd_session *s)
{
	if (auth_check_start(s->sd->auth, &s->check, s->sasl.user, s->sasl.pass, auth_done) != 0) {
		/* cannot happen: smtp/sasl.h bounds the fields as smtp/users.h */
		smtp_sasl_clear(&s->sasl);
		reply(s, "454 4.7.0 Temporary authentication failure");
		session_enter(s, SMTPD_S_HELO);
		return;
	}
	s->auth_mech = s->sasl.mech;
	smtp_sasl_clear(&s->sasl); /* the check holds its own copy, wiped once used */
	s->auth_running = 1;
	session_enter(s, SMTPD_S_AUTH_CHECK);
}

/* A failed authentication: logged as Postfix does (the user name only when
 * it is a known account, so a password typed into the name field never
 * reaches the log), counted against the address, answered after a delay. */
static void auth_refused(struct smtpd_session *s, const char *name, bool known,
			 const char *reply_text)
{
	log_warn("%s: SASL %s authentication failed: authentication failure%s%s", s->client,
		 smtp_sasl_mech_name(s->auth_mech), known ? ", sasl_username=" : "",
		 known ? name : "");
	if (auth_failed(s->sd->auth, s->ip))
		log_warn("%s: %d failed authentications: AUTH and new sessions from %s refused "
			 "for %d minutes",
			 s->client, AUTH_FAIL_LIMIT, s->ip, AUTH_BLOCK_MS / 60000);
	s->auth_fail_reply = reply_text;
	session_enter(s, SMTPD_S_AUTH_CHECK);
	uv_timer_start(&s->timer, on_timer, SMTPD_AUTH_FAIL_DELAY_MS, 0);
}

/* What smtp_sasl_start/step said. */
static void auth_next(struct smtpd_session *s, enum smtp_sasl_rc rc, const char *r)
{
	switch (rc) {
	case SMTP_SASL_CHALLENGE:
		reply(s, "%s", r);
		session_enter(s, SMTPD_S_AUTH);
		return;
	case SMTP_SASL_DONE:
		auth_check(s);
		return;
	case SMTP_SASL_DENIED:
		s->auth_mech = s->sasl.mech;
		auth_refused(s, "", false, r);
		return;
	case SMTP_SASL_FAIL:
		reply(s, "%s", r);
		session_enter(s, SMTPD_S_HELO);
		count_error(s);
		return;
	}
}

static void auth_verdict(struct smtpd_session *s)
{
	s->auth_running = 0;
	if (s->state != SMTPD_S_AUTH_CHECK || s->free_me) {
		auth_check_release(&s->check); /* the session ended meanwhile */
		return;
	}
	if (s->check.user != NULL) {
		s->user = s->check.user; /* s->check keeps its table alive */
		log_debug("%s: authenticated as %s (%s)", s->client, s->user->name,
			  smtp_sasl_mech_name(s->auth_mech));
		reply(s, "235 2.7.0 Authentication successful");
		session_enter(s, SMTPD_S_HELO);
		session_process(s);
		return;
	}
	{
		bool known = smtp_users_find(s->check.users, s->check.name) != NULL;
		char name[SMTP_USERS_NAME_MAX + 1];

		snprintf(name, sizeof(name), "%s", s->check.name);
		auth_check_release(&s->check);
		auth_refused(s, name, known,
			     "535 5.7.8 Error: authentication failed: authentication failure");
	}
}

/* The failure delay is over. */
static void auth_fail_reply(struct smtpd_session *s)
{
	reply(s, "%s", s->auth_fail_reply);
	s->auth_fail_reply = NULL;
	session_enter(s, SMTPD_S_HELO);
	count_error(s);
	session_process(s);
}

static void handle_sasl_line(struct smtpd_session *s, const char *line, size_t len)
{
	const char *r = NULL;
	/* the step first: an argument list has no order of evaluation */
	enum smtp_sasl_rc rc = smtp_sasl_step(&s->sasl, line, len, &r);

	auth_next(s, rc, r);
}

/* ---- commands ---- */

/* The checks: is the command allowed in this phase? 1, or 0 after the reply. */

static int check_mail(struct smtpd_session *s)
{
	if (s->state == SMTPD_S_CONNECTED)
		return out_of_sequence(s, "503 5.5.1 Error: send HELO/EHLO first");
	if (s->state != SMTPD_S_HELO)
		return out_of_sequence(s, "503 5.5.1 Error: nested MAIL command");
	/* RFC 6409 §4.3: a submission server knows who submits: by AUTH, or
	 * (as Postfix's permit_mynetworks) by a mynetworks address, over TLS
	 * all the same */
	if (s->kind != SMTPD_RELAY && (s->tls == NULL || (s->user == NULL && !s->relay_ok))) {
		const char *text = s->tls != NULL ? "530 5.7.0 Authentication required"
						  : "530 5.7.0 Must issue a STARTTLS command first";

		log_info("NOQUEUE: reject: MAIL from %s: %s; proto=%s helo=<%s>", s->client, text,
			 s->esmtp ? "ESMTP" : "SMTP", s->helo);
		return out_of_sequence(s, text);
	}
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

static int check_starttls(struct smtpd_session *s)
{
	if (s->kind == SMTPD_RELAY) {
		/* a local relay: clients are on mynetworks */
		reply(s, "502 5.5.1 Error: STARTTLS not supported");
		return 0;
	}
	if (s->tls != NULL)
		return out_of_sequence(s, "554 5.5.1 Error: TLS already active");
	if (s->state == SMTPD_S_MAIL || s->state == SMTPD_S_RCPT)
		return out_of_sequence(s, "503 5.5.1 Error: MAIL transaction in progress");
	return 1;
}

static int check_auth(struct smtpd_session *s)
{
	if (s->kind == SMTPD_RELAY) {
		reply(s, "502 5.5.1 Error: AUTH not supported");
		return 0;
	}
	if (auth_blocked(s->sd->auth, s->ip)) {
		log_warn("%s: AUTH refused: too many failed authentications", s->client);
		reply_and_close(s, "421 4.7.0 Error: too many failed authentications; try again "
				   "later");
		return 0;
	}
	/* never a password in plaintext: AUTH is not even offered before TLS */
	if (s->tls == NULL)
		return out_of_sequence(
			s, "538 5.7.11 Encryption required for requested authentication mechanism");
	if (!s->esmtp)
		return out_of_sequence(s, "503 5.5.1 Error: send EHLO first");
	if (s->user != NULL)
		return out_of_sequence(s, "503 5.5.1 Error: already authenticated");
	if (s->state == SMTPD_S_MAIL || s->state == SMTPD_S_RCPT)
		return out_of_sequence(s, "503 5.5.1 Error: MAIL transaction in progress");
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
	if (s->kind != SMTPD_RELAY && s->tls == NULL)
		reply(s, "250-STARTTLS");
	if (s->kind != SMTPD_RELAY && s->tls != NULL)
		reply(s, "250-AUTH PLAIN LOGIN");
	reply(s, "250-8BITMIME");
	reply(s, "250 ENHANCEDSTATUSCODES");
}

static void proceed_mail(struct smtpd_session *s, const struct smtp_command *cmd)
{
	char text[SMTP_PATH_MAX + SMTP_USERS_NAME_MAX + 80];

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
	if (s->user != NULL && !smtp_user_may_send(s->user, cmd->path)) {
		/* Postfix's reject_sender_login_mismatch, in its words */
		snprintf(text, sizeof(text),
			 "553 5.7.1 <%s>: Sender address rejected: not owned by user %s", cmd->path,
			 s->user->name);
		log_reject(s, "MAIL", text, NULL);
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

	if (!s->relay_ok && s->user == NULL) {
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

/* The answer to DATA, once its queue file is there (err 0) or could not be
 * made. */
static void data_begin(struct smtpd_session *s, int err)
{
	if (data_start(s, err) != 0)
		return; /* data_start replied */
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	session_enter(s, SMTPD_S_DATA);
}

static void on_queue_file(struct commit_wait *wt, struct queue_writer *w, int err_no);

static void proceed_data(struct smtpd_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	s->wait.ready = on_queue_file;
	if (commit_take_writer(s->sd->commit, &s->wait, &s->w) != 0) {
		session_enter(s, SMTPD_S_QUEUE_FILE); /* on to queue_file_ready() */
		return;
	}
	data_begin(s, 0);
}

/* SE_QUEUE_FILE: the file DATA waited for (s->w), or err_no. */
static void queue_file_ready(struct smtpd_session *s, int err_no)
{
	session_enter(s, SMTPD_S_RCPT); /* where DATA was said */
	data_begin(s, err_no);
	session_process(s); /* bytes the client sent after DATA */
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

/* The reply goes out in plaintext; then session_written() starts TLS.
 * Commands pipelined behind STARTTLS are dropped unread (RFC 3207 §4.2:
 * they would otherwise count as said inside TLS, CVE-2011-0411). */
static void proceed_starttls(struct smtpd_session *s, const struct smtp_command *cmd)
{
	(void)cmd;
	reply(s, "220 2.0.0 Ready to start TLS");
	session_enter(s, SMTPD_S_STARTTLS);
}

static void proceed_auth(struct smtpd_session *s, const struct smtp_command *cmd)
{
	const char *r = NULL;
	enum smtp_sasl_rc rc = smtp_sasl_start(&s->sasl, cmd->arg, strlen(cmd->arg), &r);

	auth_next(s, rc, r);
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
	{ .verb = SMTP_CMD_STARTTLS, .check = check_starttls, .proceed = proceed_starttls },
	{ .verb = SMTP_CMD_AUTH, .check = check_auth, .proceed = proceed_auth },
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
	} else if (c->check != NULL && !c->check(s)) {
		/* refused; the check replied */
	} else if (c->proceed != NULL) {
		c->proceed(s, &cmd);
	} else {
		reply(s, "%s", c->reply);
	}
	if (cmd.verb == SMTP_CMD_AUTH)
		explicit_bzero(&cmd, sizeof(cmd)); /* an initial response */
}

/* The longest line the state takes: AUTH lines (the command with an
 * initial response, and SASL responses) may be longer than commands. */
static size_t line_max(const struct smtpd_session *s, const char *line, size_t avail)
{
	if (s->kind == SMTPD_RELAY)
		return SMTPD_CMD_LINE_MAX;
	if (s->state == SMTPD_S_AUTH || (avail >= 5 && strncasecmp(line, "AUTH ", 5) == 0))
		return SMTP_SASL_LINE_MAX;
	return SMTPD_CMD_LINE_MAX;
}

static void line_too_long(struct smtpd_session *s)
{
	if (s->state == SMTPD_S_AUTH) {
		smtp_sasl_clear(&s->sasl);
		reply(s, "500 5.5.6 Authentication exchange line is too long");
		session_enter(s, SMTPD_S_HELO);
	} else {
		reply(s, "500 5.5.2 Error: line too long");
	}
	count_error(s);
}

/* Consumes as much of s->in as the state allows and moves the rest to the
 * front; pipelined commands are handled in order and their replies leave
 * in one write. */
static void session_consume(struct smtpd_session *s)
{
	size_t pos = 0;

	while (pos < s->inlen && !s->free_me) {
		if (reads_lines(s->state)) {
			char *start = s->in + pos;
			const char *lf;
			size_t avail = s->inlen - pos, linelen, max = line_max(s, start, avail);
			int sasl = s->state == SMTPD_S_AUTH;

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
				line_too_long(s);
				continue;
			}
			if (lf == NULL) {
				if (avail >= max) {
					s->discard_line = 1;
					pos = s->inlen;
				}
				break;
			}
			linelen = (size_t)(lf - start) + 1;
			pos += linelen;
			if (linelen > max) {
				line_too_long(s);
				continue;
			}
			if (sasl)
				handle_sasl_line(s, start, linelen);
			else
				handle_command(s, start, linelen);
			if (sasl || max == SMTP_SASL_LINE_MAX)
				explicit_bzero(start, linelen); /* credentials */
		} else if (s->state == SMTPD_S_DATA) {
			pos += data_feed(s, s->in + pos, s->inlen - pos);
		} else {
			/* QUEUE_FILE, COMMIT and AUTH_CHECK wait; STARTTLS and CLOSING drop input */
			if (s->state == SMTPD_S_STARTTLS || s->state == SMTPD_S_CLOSING)
				pos = s->inlen;
			break;
		}
	}
	if (s->free_me)
		return;
	memmove(s->in, s->in + pos, s->inlen - pos);
	s->inlen -= pos;
}

/* Handles the input there is, plaintext or decrypted, until the state
 * waits or the input runs out. */
static void session_process(struct smtpd_session *s)
{
	do {
		session_consume(s);
	} while (tls_fill(s) > 0);
	if (reads_commands(s->state) && s->sd->stopping)
		reply_and_close(s, "421 4.3.2 Service shutting down"); /* DATA ended during stop */
	if (s->free_me)
		return; /* session_event() closes it */
	if (s->state == SMTPD_S_CLOSING || s->state == SMTPD_S_STARTTLS)
		s->inlen = 0;
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
	if (s->kind == SMTPD_SMTPS) {
		tls_start(s); /* RFC 8314: the greeting comes inside TLS */
		return;
	}
	session_greet(s);
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
	if (s->state == SMTPD_S_STARTTLS) {
		session_flush(s); /* replies written before the 220 */
		if (!s->writing)
			tls_start(s); /* the 220 is out: TLS from the next byte */
		return;
	}
	session_process(s); /* input may have waited for reply room */
}

/* Socket bytes of a TLS session are with OpenSSL (on_read fed them). */
static void session_tls_read(struct smtpd_session *s)
{
	s->tls_starved = 0;
	if (s->state == SMTPD_S_TLS)
		tls_handshake(s);
	if (s->free_me)
		return;
	session_process(s); /* flushes the handshake's messages too */
}

static void session_timeout(struct smtpd_session *s)
{
	if (s->state == SMTPD_S_CLOSING) {
		s->free_me = 1;
		return;
	}
	if (s->state == SMTPD_S_AUTH_CHECK) {
		if (s->auth_fail_reply != NULL)
			auth_fail_reply(s); /* the failure delay is over */
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
		if (s->tls != NULL)
			session_tls_read(s);
		else
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
	case SE_QUEUE_FILE:
		queue_file_ready(s, err_no);
		break;
	case SE_AUTH_CHECKED:
		auth_verdict(s);
		break;
	case SE_STOP:
		if (reads_lines(s->state) || s->state == SMTPD_S_TLS ||
		    s->state == SMTPD_S_STARTTLS || s->state == SMTPD_S_AUTH_CHECK) {
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
	/* The thread pool may still read s->check: a queued check is taken
	 * back, a running one is waited for (SE_AUTH_CHECKED). */
	if (s->free_me && s->auth_running && auth_check_cancel(&s->check) == 0)
		s->auth_running = 0;
	if (s->free_me && !s->auth_running && (s->state != SMTPD_S_COMMIT || ev == SE_COMMITTED))
		session_enter(s, SMTPD_S_CLOSED);
}

/* ---- libuv callbacks ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct smtpd_session *s = h->data;

	(void)suggested;
	if (s->tls != NULL)
		*buf = uv_buf_init(s->sd->tls_rbuf, sizeof(s->sd->tls_rbuf));
	else
		*buf = uv_buf_init(s->in + s->inlen, (unsigned)(sizeof(s->in) - s->inlen));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct smtpd_session *s = st->data;

	if (nread == 0)
		return;
	if (nread < 0) {
		session_event(s, SE_READ_END, (int)nread, 0);
		return;
	}
	if (s->tls != NULL) {
		if (smtp_tls_feed(s->tls, buf->base, (size_t)nread) != 0) {
			session_event(s, SE_READ_END, UV_ENOMEM, 0);
			return;
		}
	} else {
		s->inlen += (size_t)nread;
	}
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

static void on_queue_file(struct commit_wait *wt, struct queue_writer *w, int err_no)
{
	struct smtpd_session *s = (struct smtpd_session *)((char *)wt -
							   offsetof(struct smtpd_session, wait));

	s->w = w;
	session_event(s, SE_QUEUE_FILE, 0, err_no);
}

static void auth_done(struct auth_check *c)
{
	struct smtpd_session *s = (struct smtpd_session *)((char *)c -
							   offsetof(struct smtpd_session, check));

	session_event(s, SE_AUTH_CHECKED, 0, 0);
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
	smtp_tls_free(s->tls);
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
	if (((struct listener *)server->data)->kind == SMTPD_SMTPS) {
		/* a TLS client would take a plaintext 421 for a broken handshake */
		uv_close((uv_handle_t *)&rc->tcp, on_reject_closed);
		return;
	}
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
	s->kind = l->kind;
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

/* One listening socket, bound (not yet listening). */
static int bind_one(struct smtpd *sd, enum smtpd_kind kind, const struct config_addr *a, char *err,
		    size_t errlen)
{
	struct listener *l = &sd->listeners[sd->nlisteners];
	int rc;

	l->sd = sd;
	l->kind = kind;
	l->addr = *a;
	l->tcp.data = l;
	rc = uv_tcp_init(sd->r->loop, &l->tcp);
	if (rc != 0) {
		snprintf(err, errlen, "%s %s:%u: %s", kind_keys[kind], a->host, a->port,
			 uv_strerror(rc));
		return -1;
	}
	l->open = 1;
	sd->nopen++;
	sd->nlisteners++;
	/* IPv6 sockets only for IPv6, so [::]:25 and 0.0.0.0:25 can coexist */
	rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&a->sa,
			 a->sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
	if (rc != 0) {
		snprintf(err, errlen, "%s %s:%u: %s", kind_keys[kind], a->host, a->port,
			 uv_strerror(rc));
		return -1;
	}
	return 0;
}

int smtpd_bind(struct relay *r, struct smtpd **out, char *err, size_t errlen)
{
	struct smtpd *sd = calloc(1, sizeof(*sd));
	const struct config *cfg = &r->cfg;
	size_t i;

	if (sd == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	sd->r = r;
	sd->cmd_timeout_ms = timeout_from_env(SMTPD_CMD_TIMEOUT_S);
	sd->data_timeout_ms = timeout_from_env(SMTPD_DATA_TIMEOUT_S);
	for (i = 0; i < cfg->nlisten; i++)
		if (bind_one(sd, SMTPD_RELAY, &cfg->listen[i], err, errlen) != 0)
			goto fail;
	for (i = 0; i < cfg->nsubmission_listen; i++)
		if (bind_one(sd, SMTPD_SUBMISSION, &cfg->submission_listen[i], err, errlen) != 0)
			goto fail;
	for (i = 0; i < cfg->nsmtps_listen; i++)
		if (bind_one(sd, SMTPD_SMTPS, &cfg->smtps_listen[i], err, errlen) != 0)
			goto fail;
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
		const struct listener *l = &sd->listeners[i];
		const struct config_addr *a = &l->addr;

		/* uv_tcp_bind reports EADDRINUSE only here, at listen() */
		rc = uv_listen((uv_stream_t *)&sd->listeners[i].tcp, 511, on_connection);
		if (rc != 0) {
			snprintf(err, errlen, "%s %s:%u: %s", kind_keys[l->kind], a->host, a->port,
				 uv_strerror(rc));
			return -1;
		}
		log_info("listening on %s%s%s:%u%s%s", a->sa.ss_family == AF_INET6 ? "[" : "",
			 a->host, a->sa.ss_family == AF_INET6 ? "]" : "", a->port,
			 l->kind == SMTPD_RELAY ? "" : " for ",
			 l->kind == SMTPD_RELAY ? "" : kind_names[l->kind]);
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
	if (sd == NULL)
		return;
	auth_free(sd->auth);
	smtp_tls_server_ctx_free(sd->tls_ctx);
	free(sd);
}

/* ---- submission: certificate and users ---- */

/* The submission files as one (re)load found them: certificate and key,
 * and the users table (users_rc as auth_load_users). Loaded on the loop at
 * start and in the thread pool on SIGHUP, by the same code. */
struct sub_files {
	char cert[CONFIG_PATH_MAX], key[CONFIG_PATH_MAX], users_path[CONFIG_PATH_MAX];
	struct smtp_tls_server_ctx *ctx;
	struct smtp_users *users;
	int users_rc;
	char ctx_err[1024], users_err[1024];
};

static void sub_files_init(struct sub_files *f, const struct config *cfg)
{
	snprintf(f->cert, sizeof(f->cert), "%s", cfg->tls_cert_file);
	snprintf(f->key, sizeof(f->key), "%s", cfg->tls_key_file);
	snprintf(f->users_path, sizeof(f->users_path), "%s", cfg->auth_users_file);
	/* a load that never ran changes nothing */
	f->users_rc = -1;
	snprintf(f->ctx_err, sizeof(f->ctx_err), "%s: not read", f->cert);
	snprintf(f->users_err, sizeof(f->users_err), "%s: not read", f->users_path);
}

/* Any thread: touches only f. */
static void sub_files_load(struct sub_files *f)
{
	f->ctx = smtp_tls_server_ctx_new(f->cert, f->key, f->ctx_err, sizeof(f->ctx_err));
	f->users_rc = auth_load_users(f->users_path, &f->users, f->users_err, sizeof(f->users_err));
}

/* The lines for what loaded ("" or "reload: " before each). */
static void sub_files_log(const struct sub_files *f, const char *prefix)
{
	if (f->ctx != NULL)
		log_info("%ssubmission certificate %s (%s)", prefix, f->cert,
			 smtp_tls_server_ctx_describe(f->ctx));
	if (f->users_rc > 0)
		log_warn("%sauth_users_file %s", prefix, f->users_err);
	else if (f->users_rc == 0)
		log_info("%sauth_users_file %s: %zu user(s)", prefix, f->users_path,
			 smtp_users_count(f->users));
}

int smtpd_submission_load(struct smtpd *sd, char *err, size_t errlen)
{
	struct sub_files *f;
	int rc = -1;

	if (!config_submission_on(&sd->r->cfg))
		return 0;
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	sub_files_init(f, &sd->r->cfg);
	sub_files_load(f);
	if (f->ctx == NULL) {
		snprintf(err, errlen, "%s", f->ctx_err);
		goto out;
	}
	if (f->users_rc < 0) {
		snprintf(err, errlen, "auth_users_file %s", f->users_err);
		goto out;
	}
	sub_files_log(f, "");
	if (auth_new(sd->r->loop, f->users, &sd->auth) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	f->users = NULL; /* the auth's now */
	sd->tls_ctx = f->ctx;
	f->ctx = NULL;
	rc = 0;
out:
	smtp_tls_server_ctx_free(f->ctx);
	smtp_users_unref(f->users);
	free(f);
	return rc;
}

/* A reload reads the files in the thread pool; the loop swaps in what
 * loaded and keeps the rest. */
struct reload_job {
	uv_work_t work;
	struct smtpd *sd;
	struct sub_files f;
};

static void on_reload_work(uv_work_t *w)
{
	struct reload_job *j = w->data;

	sub_files_load(&j->f);
}

static void start_reload(struct smtpd *sd);

static void on_reload_done(uv_work_t *w, int status)
{
	struct reload_job *j = w->data;
	struct smtpd *sd = j->sd;

	(void)status;
	sd->reload = NULL;
	sub_files_log(&j->f, "reload: ");
	if (j->f.ctx == NULL) {
		log_error("reload: %s; new sessions keep the previous certificate", j->f.ctx_err);
	} else {
		smtp_tls_server_ctx_free(sd->tls_ctx); /* open sessions keep theirs */
		sd->tls_ctx = j->f.ctx;
	}
	if (j->f.users_rc < 0)
		log_error("reload: auth_users_file %s; keeping the previous users", j->f.users_err);
	else
		auth_set_users(sd->auth, j->f.users);
	free(j);
	if (sd->reload_again && !sd->stopping) {
		sd->reload_again = 0;
		start_reload(sd);
	}
}

static void start_reload(struct smtpd *sd)
{
	const struct config *cfg = &sd->r->cfg;
	struct reload_job *j;
	int rc;

	if (sd->reload != NULL) {
		sd->reload_again = 1; /* read the files again once this is done */
		return;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		log_error("reload: out of memory; keeping the certificate and users");
		return;
	}
	j->sd = sd;
	j->work.data = j;
	sub_files_init(&j->f, cfg);
	rc = uv_queue_work(sd->r->loop, &j->work, on_reload_work, on_reload_done);
	if (rc != 0) {
		log_error("reload: uv_queue_work: %s", uv_strerror(rc));
		free(j);
		return;
	}
	sd->reload = j;
}

void smtpd_reload(struct smtpd *sd)
{
	if (sd->auth == NULL || sd->stopping)
		return; /* no submission listener */
	start_reload(sd);
}
