/* SMTP AUTH server side (RFC 4954) for the PLAIN (RFC 4616) and LOGIN
 * mechanisms: the AUTH argument and each response line in, a challenge, the
 * decoded credentials or a reply out. No I/O, no allocation. */
#ifndef STSRELAY_SMTP_SASL_H
#define STSRELAY_SMTP_SASL_H

#include <stddef.h>

/* RFC 4616 §2: authzid, authcid and passwd are at most 255 octets each. */
#define SMTP_SASL_FIELD_MAX 255
/* The longest AUTH command or response line accepted, CRLF included: the
 * command parser's own limit (smtp/command.h SMTP_LINE_MAX). A longer one is
 * refused whole; the listener never buffers more than this for a line. */
#define SMTP_SASL_LINE_MAX 1000

enum smtp_sasl_mech { SMTP_SASL_PLAIN, SMTP_SASL_LOGIN };

/*
 * What one step returns:
 *   CHALLENGE  send *reply ("334 ..."), then feed the client's next line
 *              to smtp_sasl_step();
 *   DONE       the credentials are in x->user / x->pass: check them;
 *   FAIL       a protocol error, *reply is the whole answer (501, 504); the
 *              exchange is over and is not a failed authentication;
 *   DENIED     the credentials are unusable on their face (an authzid
 *              other than the authcid: no proxy authorisation here);
 *              *reply is a 535 and it counts as a failed authentication.
 * Replies are static strings with their enhanced status codes.
 */
enum smtp_sasl_rc { SMTP_SASL_CHALLENGE, SMTP_SASL_DONE, SMTP_SASL_FAIL, SMTP_SASL_DENIED };

struct smtp_sasl {
	enum smtp_sasl_mech mech;
	int step; /* private: what the next response line holds */
	/* After DONE: the authentication identity and password, NUL-terminated,
	 * each 1..SMTP_SASL_FIELD_MAX octets without a NUL inside. */
	char user[SMTP_SASL_FIELD_MAX + 1];
	char pass[SMTP_SASL_FIELD_MAX + 1];
};

/* Begins an exchange from the AUTH command's argument (after "AUTH ",
 * e.g. "PLAIN AGpvZQBzZWNyZXQ=" or "LOGIN"); "=" as initial response is an
 * empty one (RFC 4954 §4). Mechanism names are case-insensitive. */
enum smtp_sasl_rc smtp_sasl_start(struct smtp_sasl *x, const char *arg, size_t len,
				  const char **reply);

/* One response line (a trailing CRLF or LF is ignored): base64, or "*"
 * to cancel (501 5.7.0). A line of SMTP_SASL_LINE_MAX octets or more is a
 * FAIL. Only after CHALLENGE. */
enum smtp_sasl_rc smtp_sasl_step(struct smtp_sasl *x, const char *line, size_t len,
				 const char **reply);

/* Wipes the credentials (explicit_bzero); call once they are checked and
 * on every path that drops the exchange. */
void smtp_sasl_clear(struct smtp_sasl *x);

/* "PLAIN" or "LOGIN", as Postfix names them in sasl_method=. */
const char *smtp_sasl_mech_name(enum smtp_sasl_mech m);

#endif
