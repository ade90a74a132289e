/* One outbound SMTP connection on the libuv loop: TCP connect with a timeout,
 * plaintext or TLS (smtp/tls.h) reads and writes, STARTTLS, one timer, close. */
#ifndef STSRELAY_SMTP_CONN_H
#define STSRELAY_SMTP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include "relay/net/dns.h"
#include "smtp/tls.h"

/*
 * The transport under an SMTP session, with no SMTP in it: the session (a
 * state machine of its own, e.g. relay/cli/mx_probe.c) gets plaintext bytes in
 * and writes plaintext bytes out; once smtp_conn_start_tls() has succeeded
 * both go through TLS transparently.
 *
 *   c = smtp_conn_new(loop, &ops, arg)
 *   smtp_conn_connect(c, host, addr, port, connect_timeout_ms)
 *     ops.connected  -> the session arms its stage timer, waits for data
 *     ops.data       -> plaintext from the peer (decrypted after STARTTLS)
 *     ops.eof        -> the peer closed (EOF, TLS close_notify) or a read, a
 *                       write or TLS failed (at most once)
 *     ops.timeout    -> the timer armed with smtp_conn_timer() fired
 *     ops.tls_done   -> the handshake begun by smtp_conn_start_tls() ended
 *     ops.drained    -> (optional) every byte written so far is on the wire
 *   smtp_conn_close(c)  -> ops.closed runs later from the loop, always
 *                          exactly once per connection, also after a failed
 *                          or timed-out connect; it may smtp_conn_free(c).
 *
 * The callbacks run from loop callbacks only, never inside an smtp_conn_*
 * call made by the session; a session may call any smtp_conn_* function
 * from inside them. After smtp_conn_close() no callback but closed runs.
 *
 * TLS: smtp_conn_start_tls() hands the stream to smtp/tls.h with SNI and
 * the name check for the MX host. Plaintext that arrived before it and was
 * not yet consumed is the session's business (STARTTLS injection): this
 * module never mixes plaintext into the TLS stream.
 *
 * Bounds: output goes through two buffers of at most SMTP_CONN_OUT_MAX bytes
 * each (ciphertext once TLS is up): one collecting, one on its way to the
 * socket (one write in flight at a time), so at most 2 * SMTP_CONN_OUT_MAX
 * bytes per connection are not yet on the wire. smtp_conn_write() takes what
 * fits in the collecting one (over TLS: whole records of up to 16 KiB of
 * plaintext whose ciphertext surely fits) and says how much; the `drained`
 * callback asks for the rest.
 * Reads are one buffer per callback; every TLS record that buffer completes
 * is decrypted and handed on before the callback returns (the records that
 * one socket read can complete are bounded by the read buffer).
 *
 * Ownership: the conn owns its handles, its TLS object and its buffers;
 * the session owns the conn and frees it after `closed` (or before
 * smtp_conn_connect() was called). The TLS context outlives the conn.
 */

#define SMTP_CONN_OUT_MAX (1024 * 1024)
#define SMTP_CONN_IP_MAX 64
#define SMTP_CONN_REASON_MAX 256
#define SMTP_CONN_RELAY_MAX (DNS_NAME_MAX + SMTP_CONN_IP_MAX + 16)

struct smtp_conn;

struct smtp_conn_ops {
	void (*connected)(struct smtp_conn *c, void *arg);
	void (*data)(struct smtp_conn *c, void *arg, const char *buf, size_t len);
	void (*eof)(struct smtp_conn *c, void *arg);
	void (*timeout)(struct smtp_conn *c, void *arg);
	void (*tls_done)(struct smtp_conn *c, void *arg, bool ok);
	void (*drained)(struct smtp_conn *c, void *arg); /* may be NULL */
	void (*closed)(struct smtp_conn *c, void *arg);
};

/* What is known about the connection; read it any time, it is filled in as
 * the connection goes. Strings are always NUL-terminated. */
struct smtp_conn_info {
	char host[DNS_NAME_MAX + 1]; /* the MX host name (SNI, name check) */
	char ip[SMTP_CONN_IP_MAX];   /* remote address */
	uint16_t port;
	char peer[DNS_NAME_MAX + SMTP_CONN_IP_MAX + 4]; /* "host[ip]" */
	char relay[SMTP_CONN_RELAY_MAX];                /* "host[ip]:port" */
	char local_ip[SMTP_CONN_IP_MAX];                /* our address, "" until connected */
	bool connected;                                 /* the TCP connect succeeded */
	bool connect_failed;
	char connect_err[SMTP_CONN_REASON_MAX]; /* "connect to host[ip]:25: Connection refused" */
	bool tls_up;                            /* handshake completed */
	bool tls_failed;      /* handshake failed (or the TLS object could not be made) */
	bool tls_verified;    /* chain + name + dates checked out */
	char tls_version[16]; /* "TLSv1.3", "" when no TLS */
	enum smtp_tls_result tls_result;       /* SUCCESS = verified, or no TLS */
	char tls_reason[SMTP_CONN_REASON_MAX]; /* "hostname mismatch", "" */
	bool tls_handshake_error;              /* tls_failed by the handshake itself (not by a
					     * lost connection or a setup error) */
	bool dane; /* the TLS check was DANE's (smtp_conn_start_tls with dane) */
};

/* NULL when out of memory. Nothing runs until smtp_conn_connect(). */
struct smtp_conn *smtp_conn_new(uv_loop_t *loop, const struct smtp_conn_ops *ops, void *arg);
/* Only before smtp_conn_connect() or after ops.closed. NULL is fine. */
void smtp_conn_free(struct smtp_conn *c);

/* Connects to addr (its port is replaced by `port`) for MX `host`. 0: the
 * callbacks will run (ops.connected, or ops.closed with info.connect_failed
 * after an error or connect_timeout_ms); -1: nothing started (bad
 * arguments or a handle could not be made), free the conn. */
int smtp_conn_connect(struct smtp_conn *c, const char *host, const struct sockaddr_storage *addr,
		      uint16_t port, uint32_t connect_timeout_ms);

/* (Re)arms the one timer: ops.timeout after ms (0 is taken as 1). */
void smtp_conn_timer(struct smtp_conn *c, uint32_t ms);
/* Queues plaintext (through TLS once up) and starts writing it. Returns
 * how many of the len bytes were taken: all of them, or fewer when the
 * output buffer reached SMTP_CONN_OUT_MAX (then offer the rest after
 * ops.drained; 0 is possible while a write is in flight). -1 when closing,
 * after EOF, on a TLS error or out of memory (the session should then
 * close). Bytes not counted in the result were not sent, in part or whole. */
ssize_t smtp_conn_write(struct smtp_conn *c, const void *buf, size_t len)
	__attribute__((warn_unused_result));
/* A write is on its way to the socket. */
bool smtp_conn_writing(const struct smtp_conn *c);

/* DANE for one handshake (smtp_tls_set_dane): the host's TLSA RRset and the
 * TLSA base domain it was found at; the caller's, read during the call. */
struct smtp_conn_dane {
	const struct smtp_tlsa_set *tlsa;
	const char *base;
};

/* Starts the TLS handshake (SNI and name check = info.host). verify: a
 * failed check fails the handshake; without it the handshake completes
 * and info.tls_verified/tls_result say what a check would have said.
 * dane (NULL: WebPKI against ca_file): the records decide instead, see
 * smtp_tls_set_dane(); a set with no usable record fails at once
 * (tlsa-invalid). 0: ops.tls_done will run; -1: failed at once
 * (info.tls_failed, reason). */
int smtp_conn_start_tls(struct smtp_conn *c, struct smtp_tls_ctx *ctx, bool verify,
			const struct smtp_conn_dane *dane);

/* Closes at once (pending output is dropped); ops.closed follows. Safe to
 * call more than once. A TLS close_notify is not waited for: SMTP ends
 * with QUIT, after which nothing depends on the TLS shutdown. */
void smtp_conn_close(struct smtp_conn *c);

const struct smtp_conn_info *smtp_conn_info(const struct smtp_conn *c);
/* The TLS object after smtp_conn_start_tls() (for the cipher etc.), else NULL. */
struct smtp_tls *smtp_conn_tls(const struct smtp_conn *c);

/* Seconds from environment variable `name` (e.g. STSRELAY_SMTP_TIMEOUT,
 * fractions allowed, 0 < s <= 86400) in ms, else dflt. */
uint32_t smtp_conn_env_timeout_ms(const char *name, uint32_t dflt);

#endif
