/* The outbound SMTP client session as a sans-I/O state machine: server bytes
 * in, client bytes out, events for the driver (TLS handshake, message data). */
#ifndef STSRELAY_SMTP_CLIENT_H
#define STSRELAY_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "smtp/reply.h"
#include "smtp/tls.h" /* enum smtp_tls_result */

/*
 * How the driver (relay/daemon/delivery.c) uses it, after connecting:
 *
 *   c = smtp_client_new(&cfg)
 *   loop:
 *     socket readable  -> smtp_client_feed(c, bytes, n)     (plaintext; after
 *                         STARTTLS: what smtp_tls_read decrypted)
 *     socket EOF/error -> smtp_client_eof(c)
 *     timer fired      -> smtp_client_timeout(c)
 *     then: smtp_client_output(c, &p, &n) -> write (or smtp_tls_write) and
 *           smtp_client_consume(c, written);
 *           re-arm the timer with smtp_client_timeout_ms(c);
 *           switch (smtp_client_event(c)):
 *             SMTP_CLIENT_EV_IO        write pending output, wait for input
 *             SMTP_CLIENT_EV_NEED_TLS  flush output, run the handshake with
 *                                      smtp/tls.h on the same stream, then
 *                                      smtp_client_tls_verified(c, v) and
 *                                      smtp_client_tls_done(c, ok, reason)
 *             SMTP_CLIENT_EV_WANT_DATA smtp_client_data(c, ...) with the next
 *                                      message bytes, smtp_client_data_end(c)
 *                                      at the end (or set a pull source)
 *             SMTP_CLIENT_EV_READY     (only with cfg.keep_open) the transaction
 *                                      is over, results are final, the session
 *                                      is idle: smtp_client_next(c, &cfg2) for
 *                                      another transaction, or smtp_client_quit(c)
 *             SMTP_CLIENT_EV_DONE      flush output, close; results are final
 *   smtp_client_free(c)
 *
 * Connection reuse (cfg.keep_open): after the server has answered the end
 * of data (any code but 421, RFC 5321 §3.8) the client enters READY instead
 * of QUIT. A new transaction starts with MAIL directly (RFC 5321 §3.3: the
 * reply to "." ends the transaction; Postfix sends RSET only when it reuses
 * a session after a failed one, and we never keep those). What the session
 * learnt (TLS, EHLO capabilities) stays; the envelope, the data source and
 * every per-transaction result are replaced. A reply or EOF while READY
 * (a 421 on the server's idle timeout) ends the session silently: nothing
 * was pending, so nothing is failed.
 *
 * The state machine changes state in one function only (client.c
 * enter()), which traces "old -> new" at debug level and is also the one
 * place where required TLS is enforced: with SMTP_TLS_REQUIRE it refuses to
 * enter MAIL (and so never emits MAIL, RCPT, DATA or message bytes) unless
 * TLS is up, and ends the session with tls_result STARTTLS_NOT_SUPPORTED
 * (STARTTLS not offered, or refused), outcome SMTP_CONN_TLS_FAILED, every
 * recipient deferred with 4.7.5, then QUIT.
 *
 * With PIPELINING offered, MAIL + every RCPT + DATA go out in one write
 * (RFC 2920) and the replies are matched in order; otherwise one at a time.
 * STARTTLS is never pipelined; bytes that arrive after its 220 and before the
 * handshake end the session (STARTTLS injection).
 *
 * Implicit TLS (cfg.implicit_tls, RFC 8314: a relay host on port 465): the
 * session starts in TLS_HANDSHAKE (event NEED_TLS before any byte), the
 * greeting is read over TLS, and STARTTLS is never sent.
 *
 * SMTP AUTH (RFC 4954, cfg.auth_user/auth_password, PLAIN with an initial
 * response, RFC 4616): after the EHLO that follows TLS the client enters
 * AUTH, and MAIL only once the server said 235. The same single transition
 * function refuses to enter AUTH unless TLS is up AND the driver reported
 * the peer's certificate as verified (smtp_client_tls_verified): the
 * credentials never go over plaintext or to an unauthenticated peer
 * (outcome SMTP_CONN_TLS_FAILED, 4.7.5, nothing of AUTH written). It also
 * refuses MAIL on a session that was asked for AUTH and is not
 * authenticated (a READY session reused with credentials it never sent):
 * TEMPFAIL with code 0 in state MAIL, before any byte. A server without
 * AUTH PLAIN: TEMPFAIL 4.7.0, try_next_mx. A failed AUTH (535, any 4xx or
 * 5xx) defers: TEMPFAIL with the server's reply and a 4.x.x status (a 5xx
 * becomes 4.x.x, Postfix's smtp_sasl_auth_soft_bounce: a wrong password is
 * the sender's configuration, the recipients are not at fault), try_next_mx.
 * AUTH needs cfg.tls == SMTP_TLS_REQUIRE (smtp_client_new refuses it
 * otherwise). The credentials are copied, never logged or put into a
 * diagnostic, and wiped from memory when the client is freed.
 *
 * Refusals the client makes itself when it would enter MAIL, before any
 * byte of the transaction is written (the failure then belongs to the
 * state before MAIL, so the driver never takes it for a dead reused
 * connection):
 *   - SIZE: the message is larger than the server's SIZE limit -> every
 *     recipient bounced (5.3.4), outcome PERMFAIL;
 *   - 8BITMIME (RFC 6152): cfg.eight_bit and the server did not offer
 *     8BITMIME -> no conversion, no MAIL: every recipient deferred (4.6.3),
 *     outcome TEMPFAIL with try_next_mx (another MX may offer it; the
 *     driver defers when none does, and the lifetime bounce says 5.6.3).
 *     With 8BITMIME offered, MAIL carries BODY=8BITMIME; a 7-bit message
 *     (!cfg.eight_bit) never does;
 *   - SMTPUTF8 (RFC 6531): a sender or recipient with bytes >= 0x80 needs
 *     it. Without it offered, each such recipient alone is bounced (5.6.7)
 *     and the transaction goes on with the others, without SMTPUTF8; only a
 *     sender that needs it (or no recipient left) fails the whole session,
 *     outcome PERMFAIL.
 *
 * Outcomes: each recipient ends SENT / DEFER / BOUNCE with the server's reply
 * and the stage; the session outcome says what went wrong as a whole and
 * try_next_mx is a hint for the driver (4xx/5xx greeting, 4xx EHLO/MAIL,
 * lost connection or timeout before end of data, TLS failure). A failed
 * TLS handshake under SMTP_TLS_MAY ends the session too: like Postfix, the
 * driver may retry that host with SMTP_TLS_NONE on a new connection.
 *
 * Ownership: the client copies every string of the config; the caller owns
 * the config. Output pointers stay valid until the next call on the client.
 */

enum smtp_tls_level {
	SMTP_TLS_NONE,    /* never STARTTLS */
	SMTP_TLS_MAY,     /* STARTTLS when offered; plaintext if not offered or refused */
	SMTP_TLS_REQUIRE, /* STARTTLS or nothing (MTA-STS enforce, tls_default=verify) */
};

enum smtp_client_state {
	SMTP_CLIENT_BANNER, /* waiting for the greeting */
	SMTP_CLIENT_EHLO,
	SMTP_CLIENT_HELO, /* EHLO got 5xx (before TLS only) */
	SMTP_CLIENT_STARTTLS,
	SMTP_CLIENT_TLS_HANDSHAKE, /* the driver runs the handshake */
	SMTP_CLIENT_AUTH,          /* AUTH PLAIN sent, waiting for 235 */
	SMTP_CLIENT_MAIL,
	SMTP_CLIENT_RCPT,
	SMTP_CLIENT_DATA,
	SMTP_CLIENT_BODY,  /* sending the message */
	SMTP_CLIENT_EOD,   /* waiting for the reply to the final "." */
	SMTP_CLIENT_READY, /* keep_open: transaction over, session idle */
	SMTP_CLIENT_QUIT,
	SMTP_CLIENT_DONE,
	SMTP_CLIENT_STATE_COUNT
};

enum smtp_client_event {
	SMTP_CLIENT_EV_IO, /* nothing special: write pending output, read input */
	SMTP_CLIENT_EV_NEED_TLS,
	SMTP_CLIENT_EV_WANT_DATA,
	SMTP_CLIENT_EV_DONE,
	SMTP_CLIENT_EV_READY, /* keep_open: idle between transactions */
};

/* Per-recipient outcome, with dma's three-way convention. */
enum smtp_rcpt_status {
	SMTP_RCPT_PENDING, /* no verdict yet (only while running) */
	SMTP_RCPT_SENT,    /* 2xx after end of data */
	SMTP_RCPT_DEFER,   /* 4xx at any stage, lost connection, timeout, TLS */
	SMTP_RCPT_BOUNCE,  /* 5xx */
};

/* Connection-level outcome: what went wrong with the session as a whole. */
enum smtp_conn_outcome {
	SMTP_CONN_OK,       /* transaction finished; see each recipient */
	SMTP_CONN_TEMPFAIL, /* 4xx before RCPT, lost connection, timeout, protocol error */
	SMTP_CONN_PERMFAIL, /* 5xx before RCPT (greeting, HELO, MAIL), local size/UTF-8 refusal */
	SMTP_CONN_TLS_FAILED, /* handshake failed, plaintext after STARTTLS, or required TLS unavailable */
};

/* Timeouts in milliseconds (RFC 5321 §4.5.3.2). */
struct smtp_client_timeouts {
	uint32_t banner;     /* 5 min: greeting */
	uint32_t helo;       /* 5 min: EHLO/HELO/STARTTLS replies, TLS handshake */
	uint32_t mail;       /* 5 min */
	uint32_t rcpt;       /* 5 min */
	uint32_t data_init;  /* 2 min: the 354 */
	uint32_t data_block; /* 3 min: each write of message data */
	uint32_t eod;        /* 10 min: the reply to "." */
	uint32_t quit;       /* 5 min (Postfix smtp_quit_timeout) */
};
extern const struct smtp_client_timeouts smtp_client_default_timeouts;

/* Pull source for message data: copies up to cap bytes into buf. Returns
 * the number of bytes (0 = end of message), SMTP_CLIENT_READ_LATER when
 * none are available yet (the source reads in the background: the driver
 * calls smtp_client_event() again once they are), or -1 on a read error. */
typedef ssize_t (*smtp_client_read_fn)(void *arg, char *buf, size_t cap);
#define SMTP_CLIENT_READ_LATER (-2)

struct smtp_client_config {
	const char *helo_name;    /* our EHLO name (config `hostname`) */
	const char *peer;         /* "mx.example.com[192.0.2.1]" for reply texts */
	const char *queue_id;     /* for trace lines; may be NULL */
	const char *sender;       /* envelope sender, "" = null sender */
	const char *const *rcpts; /* recipient addresses, without <> */
	size_t nrcpts;            /* 1..SMTP_CLIENT_MAX_RCPTS */
	uint64_t size;            /* message size in bytes for SIZE=, 0 = unknown */
	enum smtp_tls_level tls;
	const struct smtp_client_timeouts *timeouts; /* NULL = defaults */
	smtp_client_read_fn read; /* optional pull source (else push with smtp_client_data) */
	void *read_arg;
	bool keep_open; /* READY instead of QUIT after the end-of-data reply */
	bool eight_bit; /* the message holds bytes >= 0x80 (QUEUE_F_8BITMIME) */
	/* AUTH PLAIN after verified TLS (NULL: no AUTH). Both or neither, each
	 * 1..SMTP_CLIENT_AUTH_MAX bytes without NUL, CR or LF. smtp_client_next
	 * only checks that the session is authenticated when they are set. */
	const char *auth_user;
	const char *auth_password;
	bool implicit_tls; /* TLS from the first byte (RFC 8314); only at smtp_client_new */
};

#define SMTP_CLIENT_AUTH_MAX 255 /* bytes of a user name or password */

#define SMTP_CLIENT_MAX_RCPTS 1000 /* per transaction; the driver splits larger ones */
#define SMTP_CLIENT_DIAG_MAX 512   /* == QUEUE_ERROR_MAX */

struct smtp_rcpt_result {
	const char *address; /* the client's copy */
	enum smtp_rcpt_status status;
	int code;                     /* reply code, 0 if none (lost, timeout, TLS, local) */
	char esc[SMTP_REPLY_ESC_MAX]; /* "5.1.1": the server's, else one we chose */
	enum smtp_client_state stage; /* state whose reply decided */
	/* "host mx[ip] said: 550 5.1.1 unknown user (in reply to RCPT TO command)" */
	char diag[SMTP_CLIENT_DIAG_MAX];
	/* For a DSN Diagnostic-Code: "550 5.1.1 unknown user", "" if no reply. */
	char reply[SMTP_CLIENT_DIAG_MAX];
};

struct smtp_client_result {
	enum smtp_conn_outcome outcome;
	bool try_next_mx; /* hint: the failure is the host's, another MX may do */
	enum smtp_client_state failed_state; /* meaningful when outcome != OK */
	char diag[SMTP_CLIENT_DIAG_MAX];     /* the connection-level reason, "" if OK */
	/* The connection-level failure's reply code (0: none, e.g. lost, timed
	 * out, refused by the client itself) and status ("4.4.2"), "" if OK.
	 * Use these, not a recipient's: a recipient the client refused alone
	 * (SMTPUTF8) carries its own verdict. */
	int code;
	char esc[SMTP_REPLY_ESC_MAX];
	enum smtp_tls_result tls_result;      /* STARTTLS_NOT_SUPPORTED when the client
					       * failed closed; SUCCESS otherwise
					       * (handshake results come from smtp_tls) */
	bool tls_active;                      /* STARTTLS (or implicit TLS) completed */
	bool tls_verified;                    /* the driver said the peer was verified */
	bool authenticated;                   /* 235 to AUTH on this session */
	bool esmtp;                           /* EHLO accepted */
	struct smtp_ehlo_caps caps;           /* of the last EHLO */
	size_t accepted;                      /* recipients with 2xx to RCPT */
	const struct smtp_rcpt_result *rcpts; /* cfg.nrcpts entries, in cfg order */
	size_t nrcpts;
};

struct smtp_client;

/* NULL on bad config (no recipients, too many recipients, a sender or
 * recipient that fails smtp_address_sendable() of smtp/address.h, CR/LF in
 * the helo name, peer or queue id) or out of memory; *err (may be NULL)
 * gets a static reason. The driver checks addresses with the same function
 * first, so one bad recipient never makes a whole batch fail here. */
struct smtp_client *smtp_client_new(const struct smtp_client_config *cfg, const char **err);
void smtp_client_free(struct smtp_client *c);

/* Starts another transaction on a READY session: cfg gives the new
 * envelope, data source, queue id, TLS demand and keep_open (helo_name
 * and peer are ignored: the session keeps its own). The per-transaction
 * results are reset; tls_active, esmtp and caps stay. MAIL goes out through
 * the same single transition function, so SMTP_TLS_REQUIRE on a session
 * without TLS still fails closed. 0, or -1 (not READY, bad config, out of
 * memory; *err gets a static reason, the session is unchanged). */
int smtp_client_next(struct smtp_client *c, const struct smtp_client_config *cfg, const char **err);
/* Ends a READY session politely: QUIT, then DONE on the reply. -1 if not READY. */
int smtp_client_quit(struct smtp_client *c);
/* Transactions started on this session (1 for the first). */
unsigned smtp_client_transactions(const struct smtp_client *c);

/* Server bytes (plaintext, or decrypted after STARTTLS). Returns 0, or -1
 * when the session has ended (DONE); extra bytes are then ignored. */
int smtp_client_feed(struct smtp_client *c, const char *buf, size_t len);
/* The server closed the connection or a read/write failed. */
void smtp_client_eof(struct smtp_client *c);
/* The timer armed with smtp_client_timeout_ms() fired. Returns the name of
 * the state that timed out ("RCPT"). In READY (the driver's idle timer) it
 * is smtp_client_quit(). */
const char *smtp_client_timeout(struct smtp_client *c);
/* Timeout for the current wait in ms (0 when DONE or READY: nothing is
 * awaited; the driver keeps its own idle timer). Re-arm after each call. */
uint32_t smtp_client_timeout_ms(const struct smtp_client *c);

/* Pending output (may be empty: *len == 0). Then consume what was written. */
void smtp_client_output(const struct smtp_client *c, const char **buf, size_t *len);
void smtp_client_consume(struct smtp_client *c, size_t n);

enum smtp_client_event smtp_client_event(struct smtp_client *c);

/* After EV_NEED_TLS and a completed handshake, before smtp_client_tls_done:
 * whether the peer's certificate chain and name checked out. AUTH is only
 * ever sent on a session marked verified. */
void smtp_client_tls_verified(struct smtp_client *c, bool verified);

/* After EV_NEED_TLS: ok = handshake done (then EHLO is sent again; with
 * implicit TLS the greeting is awaited); !ok =
 * failed, the session ends with SMTP_CONN_TLS_FAILED. reason (may be NULL)
 * goes into the diagnostics, e.g. "certificate-host-mismatch: ...". */
void smtp_client_tls_done(struct smtp_client *c, bool ok, const char *reason);

/* After EV_WANT_DATA (push mode): message bytes as stored (CRLF lines, not
 * dot-stuffed). The client dot-stuffs, turns a bare CR or LF into CRLF (so
 * nothing it sends can be read as an early end of data), and returns how
 * many bytes it took (it may take fewer when its buffer is full; offer the
 * rest at the next EV_WANT_DATA), or -1 if not in BODY. */
ssize_t smtp_client_data(struct smtp_client *c, const char *buf, size_t len);
/* End of message: adds a CRLF if the message did not end with one, then ".". */
int smtp_client_data_end(struct smtp_client *c);
/* A read error in the driver's data source: session ends, recipients deferred. */
void smtp_client_data_error(struct smtp_client *c, const char *reason);

enum smtp_client_state smtp_client_state(const struct smtp_client *c);
const char *smtp_client_state_name(enum smtp_client_state s); /* "BANNER", ... */
/* Valid at any time; final once the event is DONE. */
const struct smtp_client_result *smtp_client_result(const struct smtp_client *c);
const char *smtp_rcpt_status_name(enum smtp_rcpt_status s); /* "sent", "deferred", "bounced" */

#endif
