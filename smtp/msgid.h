/* The Message-ID of a message, found while its bytes stream by (the
 * listener's DATA, the pickup's copy): for the Postfix-style log line
 * "QID: message-id=<...>". Pure: no I/O. */
#ifndef STSRELAY_SMTP_MSGID_H
#define STSRELAY_SMTP_MSGID_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_MSGID_MAX 250 /* longer values are cut (it is a log field) */

/* Scans the header section only: once the empty line that ends it has
 * passed, feeding costs one test per call. Line ends may be CRLF or LF; a
 * folded value is unfolded; control characters in the value are dropped. */
struct smtp_msgid_scan {
	int state;      /* where in the current header line */
	size_t matched; /* bytes of "message-id:" matched so far */
	bool found, done;
	size_t len;
	char value[SMTP_MSGID_MAX + 1];
};

void smtp_msgid_init(struct smtp_msgid_scan *s);
void smtp_msgid_feed(struct smtp_msgid_scan *s, const char *buf, size_t len);
/* The value with surrounding blanks removed ("<a@b>"), or NULL when the
 * header section had no Message-ID field (so far). */
const char *smtp_msgid_value(struct smtp_msgid_scan *s);

#endif
