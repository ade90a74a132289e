/* The STARTTLS probe of `stsrelay sts check --probe`: greeting, EHLO, STARTTLS,
 * TLS handshake with SNI and the certificate check for one MX host, then QUIT. */
#ifndef STSRELAY_MX_PROBE_H
#define STSRELAY_MX_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "relay/net/dns.h"
#include "relay/net/smtp_conn.h"
#include "smtp/tls.h"

/*
 * One session per MX host over relay/net/smtp_conn, as one state machine whose
 * state changes only in mx_probe.c enter(). It never sends MAIL, RCPT or
 * DATA: the only commands are EHLO, STARTTLS and QUIT. The handshake runs
 * with verify=false, so it completes whatever the certificate and the
 * result still says what an MTA-STS check (chain to ca_file or the system
 * store, dates, RFC 6125 name match against the MX host) would decide, or,
 * given the host's usable TLSA records, what the DANE check would (the
 * delivery's: smtp_tls_set_dane).
 *
 * Addresses: the first that accepts a TCP connection is probed; after a
 * refused or timed-out connect the next one is tried, up to
 * MX_PROBE_MAX_ADDRS. Every stage (connect, each reply, the handshake) is
 * bounded by its timeout.
 *
 * Ownership: the probe copies the host name and addresses. The callback
 * runs exactly once, from the loop (never inside mx_probe_start); the
 * result is valid during the callback only, and the probe frees itself
 * right after. The TLS context must outlive the probe.
 */

#define MX_PROBE_MAX_ADDRS 2
#define MX_PROBE_DETAIL_MAX 512

struct mx_probe_config {
	uv_loop_t *loop;
	struct smtp_tls_ctx *tls;
	const char *helo_name; /* our EHLO name */
	uint16_t port;         /* smtp_port */
	uint32_t connect_timeout_ms;
	uint32_t stage_timeout_ms; /* each reply and the handshake */
};

struct mx_probe_result {
	char host[DNS_NAME_MAX + 1];
	char address[SMTP_CONN_IP_MAX + 8]; /* "ip:port" of the last try, "" none */
	bool connected;                     /* a TCP connection was made */
	bool esmtp;                         /* EHLO accepted */
	bool starttls;                      /* STARTTLS offered and accepted (220) */
	bool tls;                           /* the handshake completed */
	char tls_version[16];               /* "TLSv1.3", "" without TLS */
	bool verified;                      /* chain, dates and name check out (or,
					     * with dane, the TLSA records match) */
	bool dane;                          /* checked against TLSA records */
	enum smtp_tls_result result_type;   /* SUCCESS when verified, or when the
					     * probe never got to EHLO */
	char detail[MX_PROBE_DETAIL_MAX];   /* why, for people: "hostname mismatch",
					    * "STARTTLS not offered", "" when all is well */
};

struct mx_probe;
typedef void (*mx_probe_cb)(void *arg, const struct mx_probe_result *res);

/* Starts probing `host` at addrs[0..naddrs). dane (NULL: WebPKI) is copied.
 * 0: cb will run; -1: nothing started (no address, bad name, out of
 * memory), cb never runs. */
int mx_probe_start(const struct mx_probe_config *cfg, const char *host,
		   const struct sockaddr_storage *addrs, size_t naddrs,
		   const struct smtp_conn_dane *dane, mx_probe_cb cb, void *arg);

#endif
