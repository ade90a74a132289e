/* Mailbox addresses: the RFC 5321 syntax the listener and sendmail accept,
 * and the one rule for what the outbound client can send. No I/O. */
#ifndef STSRELAY_SMTP_ADDRESS_H
#define STSRELAY_SMTP_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_PATH_MAX 256 /* reverse/forward path (RFC 5321 §4.5.3.1.3) */
#define SMTP_DOMAIN_MAX 255

/* Longest address the client puts into MAIL FROM:<...> or RCPT TO:<...>
 * (a queued address is at most QUEUE_ADDR_MAX - 1 = 511 octets, and with
 * every MAIL parameter the command still fits the client's line buffer). */
#define SMTP_ADDRESS_SEND_MAX 511

/*
 * The one check of "can this address go out": smtp_client_new() and
 * smtp_client_next() refuse an envelope that fails it, the scheduler
 * bounces such a recipient alone (5.1.3; 5.1.7 for the sender) before it
 * joins a domain's batch, and smtp_address_valid() includes it, so the
 * listener (RCPT/MAIL) and sendmail refuse at submission whatever the client
 * could not send. An address is sendable when it is at most
 * SMTP_ADDRESS_SEND_MAX octets, holds no control character (C0, DEL) and no
 * '<' or '>' (even inside quotes: a receiver that ends the path at the first
 * '>' would read the rest as parameters), and, for a recipient, is not
 * empty. Bytes >= 0x80 are sendable: the client asks for SMTPUTF8 and
 * refuses such a recipient alone at a server without it.
 * sender: true for the reverse path ("" = the null sender is fine).
 * why (may be NULL) gets a static reason when the answer is false.
 */
bool smtp_address_sendable(const char *addr, bool sender, const char **why);

/* Address syntax check for a mailbox "local@domain" (dot-atom or quoted
 * local part of printable ASCII, LDH domain or address literal), at most
 * SMTP_PATH_MAX octets, and sendable. 0 = valid, -1 = not. */
int smtp_address_valid(const char *addr);

/*
 * alias_root (DESIGN): local recipients reach a person, or are refused at
 * submission instead of deferring for days. A recipient is local when it
 *  - has no domain ("root", "www-data": cron and scripts name users so), or
 *  - is at "localhost", or
 *  - is one of the system mailboxes root, postmaster, mailer-daemon, abuse,
 *    hostmaster, webmaster, noc, security (RFC 2142 and Postfix's default
 *    aliases) at `hostname`.
 * Other addresses at `hostname` are left alone: hostname may well be the
 * organisation's mail domain, whose users live elsewhere. Comparison is
 * case-insensitive and ignores a trailing dot of the domain.
 * LOCAL_REWRITTEN: out holds alias_root. LOCAL_REFUSED: alias_root is
 * empty (or not a valid address). NOT_LOCAL: out is untouched.
 */
enum smtp_local_result { SMTP_NOT_LOCAL, SMTP_LOCAL_REWRITTEN, SMTP_LOCAL_REFUSED };
enum smtp_local_result smtp_address_local(const char *addr, const char *hostname,
					  const char *alias_root, char *out, size_t outlen);

/* The domain part of an address (after the last '@'), or NULL. */
const char *smtp_address_domain(const char *addr);

#endif
