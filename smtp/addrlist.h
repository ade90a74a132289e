/* RFC 5322 §3.4 address-list parsing (To/Cc/Bcc values, sendmail arguments):
 * bytes in, the addresses out one at a time or as a bounded list. No I/O. */
#ifndef STSRELAY_SMTP_ADDRLIST_H
#define STSRELAY_SMTP_ADDRLIST_H

#include <stdbool.h>
#include <stddef.h>

/* Longest address, NUL included; longer ones are an error, not truncated.
 * Equal to QUEUE_ADDR_MAX so that every address found can be queued. */
#define ADDRLIST_ADDR_MAX 512
/* The error text holds at most this many bytes of the offending input. */
#define ADDRLIST_ERR_EXCERPT 200

/* What is accepted (and how it is read):
 * - mailbox "a@b", "Name <a@b>", "\"Quoted, Name\" <a@b>", "a@b (comment)";
 *   comments nest and take backslash escapes; they count as whitespace;
 * - groups "name: a@b, c@d;" (the group name is dropped; an unterminated
 *   group is tolerated);
 * - folding whitespace (CR, LF, SP, HT) anywhere between tokens, and inside
 *   <> and quoted strings, where CR and LF are simply dropped;
 * - the obsolete source route "<@x,@y:a@b>" (only "a@b" is kept), and empty
 *   list elements ("a@b,,c@d", "undisclosed-recipients:;"), both still sent
 *   by real mailers (RFC 5322 §4.4).
 * Refused: NUL bytes, unbalanced quotes, comments or <>, two <> in one
 * mailbox, text after the <>, words separated by spaces without <> ("john
 * smith@x", so a display name is never taken for an address), "<>", and
 * addresses of ADDRLIST_ADDR_MAX bytes or more.
 * An address is returned as written, not checked: without its display
 * name, comments or whitespace, quotes and backslashes kept, maybe without
 * an '@' (sendmail qualifies "user" with its host name). Checking it
 * (smtp_address_valid) is the caller's job. */

struct addrlist_addr {
	char addr[ADDRLIST_ADDR_MAX];
	bool angle; /* it was written as <addr> */
};

struct addrlist_err {
	const char *why;                     /* static text, e.g. "unterminated comment" */
	char text[ADDRLIST_ERR_EXCERPT + 1]; /* the offending input, may be "" */
};

/* Iterator over one address-list. It points into the caller's bytes, which
 * must stay in place until the last addrlist_next(); it owns nothing. The
 * fields are private. */
struct addrlist_iter {
	const char *s;
	size_t len, pos;
	bool in_group;
	bool done;
	bool failed;
	struct addrlist_err err; /* kept for calls after a failure */
};

/* Starts iterating over len bytes at s (need not be NUL-terminated). */
void addrlist_begin(struct addrlist_iter *it, const char *s, size_t len);

/* The next address, in the order written: 1 with *out set, 0 at the end of
 * the list, -1 with *err set. Errors are found in order too: every address
 * before the offending one has been returned first, so a caller that checks
 * each address as it comes reports the first problem in the list. After 0
 * or -1, later calls return the same. */
int addrlist_next(struct addrlist_iter *it, struct addrlist_addr *out, struct addrlist_err *err);

/* The whole list into out[0..cap): 0 with *n addresses, or -1 with *err set
 * and *n the addresses found before the error. More than cap addresses is
 * the error "too many addresses". */
int addrlist_parse(const char *s, size_t len, struct addrlist_addr *out, size_t cap, size_t *n,
		   struct addrlist_err *err);

#endif
