/* SMTP AUTH PLAIN and LOGIN, server side (RFC 4954, RFC 4616): base64
 * responses decoded into bounded fields; pure, so it is unit-tested and fuzzed. */
#include "smtp/sasl.h"

#include <string.h>
#include <strings.h>

#include "relay/core/b64.h"

enum { STEP_NONE, STEP_PLAIN, STEP_USER, STEP_PASS };

/* The decoded form of the longest line: 3 bytes per 4 characters. */
#define DECODED_MAX (SMTP_SASL_LINE_MAX / 4 * 3)

static const char R_SYNTAX[] = "501 5.5.4 Syntax: AUTH mechanism [initial-response]";
static const char R_MECH[] = "504 5.5.4 Unrecognized authentication type";
static const char R_DECODE[] = "501 5.5.2 Cannot decode response";
static const char R_MALFORMED[] = "501 5.5.2 Malformed authentication response";
static const char R_ABORTED[] = "501 5.7.0 Authentication aborted";
static const char R_TOO_LONG[] = "500 5.5.6 Authentication exchange line is too long";
static const char R_AUTHZID[] =
	"535 5.7.8 Error: authentication failed: authorization identity not permitted";
static const char R_SEQUENCE[] = "503 5.5.1 Error: no authentication in progress";
/* RFC 4954 §4: the challenges are base64 too; LOGIN's are "Username:" and
 * "Password:", which clients such as swaks and PHPMailer expect. */
static const char C_PLAIN[] = "334 ";
static const char C_USER[] = "334 VXNlcm5hbWU6";
static const char C_PASS[] = "334 UGFzc3dvcmQ6";

/* Strips a line end and trailing blanks (hand-typed sessions). */
static size_t trim(const char *s, size_t len)
{
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' ||
			   s[len - 1] == '\t'))
		len--;
	return len;
}

/* A credential field: 1..SMTP_SASL_FIELD_MAX octets without NUL, copied
 * with its terminator. 0, or -1. */
static int take_field(char *dst, const unsigned char *src, size_t n)
{
	if (n == 0 || n > SMTP_SASL_FIELD_MAX || memchr(src, '\0', n) != NULL)
		return -1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

/* RFC 4616 §2: message = [authzid] NUL authcid NUL passwd. */
static enum smtp_sasl_rc plain_response(struct smtp_sasl *x, const unsigned char *m, size_t n,
					const char **reply)
{
	const unsigned char *nul1 = memchr(m, '\0', n), *nul2, *end = m + n;
	size_t zlen;

	if (nul1 == NULL) {
		*reply = R_MALFORMED;
		return SMTP_SASL_FAIL;
	}
	nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
	zlen = (size_t)(nul1 - m);
	if (nul2 == NULL || zlen > SMTP_SASL_FIELD_MAX ||
	    take_field(x->user, nul1 + 1, (size_t)(nul2 - nul1 - 1)) != 0 ||
	    take_field(x->pass, nul2 + 1, (size_t)(end - nul2 - 1)) != 0) {
		smtp_sasl_clear(x);
		*reply = R_MALFORMED;
		return SMTP_SASL_FAIL;
	}
	/* Acting as someone else needs an authorisation rule this relay does
	 * not have: only "no authzid" or the authcid itself. */
	if (zlen != 0 && (zlen != strlen(x->user) || memcmp(m, x->user, zlen) != 0)) {
		smtp_sasl_clear(x);
		*reply = R_AUTHZID;
		return SMTP_SASL_DENIED;
	}
	x->step = STEP_NONE;
	*reply = NULL;
	return SMTP_SASL_DONE;
}

/* The decoded response for the current step. */
static enum smtp_sasl_rc respond(struct smtp_sasl *x, const unsigned char *m, size_t n,
				 const char **reply)
{
	switch (x->step) {
	case STEP_PLAIN:
		return plain_response(x, m, n, reply);
	case STEP_USER:
		if (take_field(x->user, m, n) != 0)
			break;
		x->step = STEP_PASS;
		*reply = C_PASS;
		return SMTP_SASL_CHALLENGE;
	case STEP_PASS:
		if (take_field(x->pass, m, n) != 0)
			break;
		x->step = STEP_NONE;
		*reply = NULL;
		return SMTP_SASL_DONE;
	default:
		*reply = R_SEQUENCE;
		return SMTP_SASL_FAIL;
	}
	smtp_sasl_clear(x);
	*reply = R_MALFORMED;
	return SMTP_SASL_FAIL;
}

/* Decodes a base64 response and hands it to respond(); the decoded copy
 * is wiped before returning. */
static enum smtp_sasl_rc decode_respond(struct smtp_sasl *x, const char *b64, size_t n,
					const char **reply)
{
	unsigned char m[DECODED_MAX];
	enum smtp_sasl_rc rc;
	ssize_t got;

	/* "=" is RFC 4954's empty initial response; as a later line it is
	 * not base64, and an empty line is the empty response. */
	got = core_b64_decode(b64, n, m, sizeof(m));
	if (got < 0) {
		smtp_sasl_clear(x);
		*reply = R_DECODE;
		return SMTP_SASL_FAIL;
	}
	rc = respond(x, m, (size_t)got, reply);
	explicit_bzero(m, sizeof(m));
	return rc;
}

enum smtp_sasl_rc smtp_sasl_start(struct smtp_sasl *x, const char *arg, size_t len,
				  const char **reply)
{
	const char *sp, *ir;
	size_t mlen, irlen;

	memset(x, 0, sizeof(*x));
	x->step = STEP_NONE;
	len = trim(arg, len);
	if (len >= SMTP_SASL_LINE_MAX) {
		*reply = R_TOO_LONG;
		return SMTP_SASL_FAIL;
	}
	sp = memchr(arg, ' ', len);
	mlen = sp != NULL ? (size_t)(sp - arg) : len;
	if (mlen == 0) {
		*reply = R_SYNTAX;
		return SMTP_SASL_FAIL;
	}
	if (mlen == 5 && strncasecmp(arg, "PLAIN", 5) == 0)
		x->mech = SMTP_SASL_PLAIN;
	else if (mlen == 5 && strncasecmp(arg, "LOGIN", 5) == 0)
		x->mech = SMTP_SASL_LOGIN;
	else {
		*reply = R_MECH;
		return SMTP_SASL_FAIL;
	}
	x->step = x->mech == SMTP_SASL_PLAIN ? STEP_PLAIN : STEP_USER;
	if (sp == NULL) {
		*reply = x->mech == SMTP_SASL_PLAIN ? C_PLAIN : C_USER;
		return SMTP_SASL_CHALLENGE;
	}
	ir = sp + 1;
	irlen = len - mlen - 1;
	if (irlen == 0 || memchr(ir, ' ', irlen) != NULL) {
		x->step = STEP_NONE;
		*reply = R_SYNTAX;
		return SMTP_SASL_FAIL;
	}
	if (irlen == 1 && ir[0] == '=')
		irlen = 0;
	return decode_respond(x, ir, irlen, reply);
}

enum smtp_sasl_rc smtp_sasl_step(struct smtp_sasl *x, const char *line, size_t len,
				 const char **reply)
{
	if (x->step == STEP_NONE) {
		*reply = R_SEQUENCE;
		return SMTP_SASL_FAIL;
	}
	if (len >= SMTP_SASL_LINE_MAX) {
		smtp_sasl_clear(x);
		*reply = R_TOO_LONG;
		return SMTP_SASL_FAIL;
	}
	len = trim(line, len);
	if (len == 1 && line[0] == '*') {
		smtp_sasl_clear(x);
		*reply = R_ABORTED;
		return SMTP_SASL_FAIL;
	}
	return decode_respond(x, line, len, reply);
}

void smtp_sasl_clear(struct smtp_sasl *x)
{
	explicit_bzero(x->user, sizeof(x->user));
	explicit_bzero(x->pass, sizeof(x->pass));
	x->step = STEP_NONE;
}

const char *smtp_sasl_mech_name(enum smtp_sasl_mech m)
{
	return m == SMTP_SASL_LOGIN ? "LOGIN" : "PLAIN";
}
