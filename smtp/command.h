/* SMTP server-side command parsing (RFC 5321 §4.1): one line in, one struct
 * out, or a reply code and reason for the client. No I/O. */
#ifndef STSRELAY_SMTP_COMMAND_H
#define STSRELAY_SMTP_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "smtp/address.h" /* SMTP_PATH_MAX; paths are checked with smtp_address_valid() */

/* The parser's buffer; smtpd enforces the 512-octet command line of RFC 5321 §4.5.3.1.4. */
#define SMTP_LINE_MAX 1000
#define SMTP_TEXT_LINE_MAX 1000 /* text line incl. CRLF (§4.5.3.1.6) */

enum smtp_verb {
	SMTP_CMD_UNKNOWN,
	SMTP_CMD_HELO,
	SMTP_CMD_EHLO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_HELP,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_AUTH,
	SMTP_CMD_BDAT
};

enum smtp_body { SMTP_BODY_DEFAULT, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

struct smtp_command {
	enum smtp_verb verb;
	char arg[SMTP_LINE_MAX];      /* HELO/EHLO domain, VRFY/HELP argument, raw */
	char path[SMTP_PATH_MAX + 1]; /* MAIL/RCPT address without <>, "" for <> */
	uint64_t size;                /* MAIL SIZE= (0 if absent) */
	int has_size;
	enum smtp_body body; /* MAIL BODY= */
	int smtputf8;        /* MAIL SMTPUTF8 */
};

/* Parses one command line (with or without the trailing CRLF). Returns 0, or
 * an SMTP reply code (500, 501, 502, 504, 555) with *reason set to a static
 * text including the enhanced status code ("5.5.2 Syntax error"). Verbs are
 * case-insensitive; MAIL FROM:/RCPT TO: accept no space after the colon and
 * (leniently, like Postfix) one space before the '<'. Source routes are
 * stripped; unknown MAIL parameters give 555. A path that fails
 * smtp_address_valid() (smtp/address.h: syntax, and what the outbound
 * client can send) gives 501 5.1.7 Bad sender / 5.1.3 Bad recipient
 * address syntax, as Postfix words it. The one exception is RCPT
 * TO:<postmaster> (any case) without a domain, which RFC 5321 §4.5.1
 * requires every server to accept: its path is "postmaster" as given, and
 * the caller resolves it (smtp_address_local). */
int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd, const char **reason);

#endif
