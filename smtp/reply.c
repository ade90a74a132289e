/* SMTP reply parser: assembles "ddd-text" continuation lines into one reply,
 * extracts the enhanced status code, and reads EHLO capabilities. */
#include "smtp/reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	p->reply.code = 0;
	p->reply.esc[0] = '\0';
	p->reply.nlines = 0;
	p->reply.textlen = 0;
	p->reply.text[0] = '\0';
	p->linelen = 0;
	p->in_reply = false;
	p->complete = false;
	p->failed = false;
}

/* "class.subject.detail" (RFC 3463) at the start of text, class equal to the
 * reply's first digit (RFC 2034 §4), followed by a space or the line end.
 * Returns its length, 0 if there is none. */
static size_t esc_len(const char *t, size_t n, int code)
{
	size_t i = 0, digits;

	if (n < 5 || t[0] != (char)('0' + code / 100) || t[1] != '.')
		return 0;
	i = 2;
	for (digits = 0; i < n && is_digit(t[i]); i++)
		digits++;
	if (digits < 1 || digits > 3 || i >= n || t[i] != '.')
		return 0;
	i++;
	for (digits = 0; i < n && is_digit(t[i]); i++)
		digits++;
	if (digits < 1 || digits > 3)
		return 0;
	if (i < n && t[i] != ' ')
		return 0;
	return i;
}

/* One line without its line end. Returns 1 when it completes the reply,
 * 0 when more lines follow, -1 on error. */
static int take_line(struct smtp_reply_parser *p, const char *l, size_t n, const char **err)
{
	struct smtp_reply *r = &p->reply;
	int code;
	bool last;
	const char *text;
	size_t tlen, need;

	if (n < 3 || !is_digit(l[0]) || !is_digit(l[1]) || !is_digit(l[2])) {
		*err = "reply line does not start with a 3-digit code";
		return -1;
	}
	/* RFC 5321 §4.2: first digit 2..5, second 0..5. */
	if (l[0] < '2' || l[0] > '5' || l[1] > '5') {
		*err = "reply code out of range";
		return -1;
	}
	code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	if (n == 3) {
		last = true;
	} else if (l[3] == ' ') {
		last = true;
	} else if (l[3] == '-') {
		last = false;
	} else {
		*err = "reply code not followed by space or hyphen";
		return -1;
	}
	if (memchr(l, '\0', n) != NULL) {
		*err = "NUL byte in reply";
		return -1;
	}
	if (p->in_reply && code != r->code) {
		*err = "reply lines with different codes";
		return -1;
	}
	text = n > 4 ? l + 4 : "";
	tlen = n > 4 ? n - 4 : 0;
	need = tlen + (r->nlines > 0 ? 1 : 0);
	if (r->textlen + need > SMTP_REPLY_MAX) {
		*err = "reply too long";
		return -1;
	}
	if (!p->in_reply) {
		size_t e;

		r->code = code;
		e = esc_len(text, tlen, code);
		memcpy(r->esc, text, e);
		r->esc[e] = '\0';
	} else {
		r->text[r->textlen++] = '\n';
	}
	memcpy(r->text + r->textlen, text, tlen);
	r->textlen += tlen;
	r->text[r->textlen] = '\0';
	r->nlines++;
	p->in_reply = !last;
	return last ? 1 : 0;
}

int smtp_reply_feed(struct smtp_reply_parser *p, const char *buf, size_t len, size_t *used,
		    const char **err)
{
	size_t i = 0;

	*used = 0;
	if (p->failed) {
		*err = "reply stream already failed";
		return -1;
	}
	if (p->complete) {
		/* The previous reply was handed out; start a fresh one. */
		p->complete = false;
		p->in_reply = false;
		p->reply.code = 0;
		p->reply.esc[0] = '\0';
		p->reply.nlines = 0;
		p->reply.textlen = 0;
		p->reply.text[0] = '\0';
	}
	while (i < len) {
		const char *nl = memchr(buf + i, '\n', len - i);
		size_t chunk = nl ? (size_t)(nl - (buf + i)) : len - i;
		int rc;
		size_t n;

		/* +1 leaves room for the LF itself in the line limit. */
		if (p->linelen + chunk + 1 > SMTP_REPLY_LINE_MAX) {
			p->failed = true;
			*err = "reply line too long";
			*used = i;
			return -1;
		}
		memcpy(p->line + p->linelen, buf + i, chunk);
		p->linelen += chunk;
		i += chunk;
		if (!nl)
			break;
		i++; /* the LF */
		n = p->linelen;
		if (n > 0 && p->line[n - 1] == '\r')
			n--;
		p->linelen = 0;
		rc = take_line(p, p->line, n, err);
		if (rc < 0) {
			p->failed = true;
			*used = i;
			return -1;
		}
		if (rc == 1) {
			p->complete = true;
			*used = i;
			return 1;
		}
	}
	*used = i;
	return 0;
}

int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *out, size_t *used,
		     const char **err)
{
	struct smtp_reply_parser *p = malloc(sizeof(*p));
	int rc;

	if (!p) {
		*err = "out of memory";
		return -1;
	}
	smtp_reply_parser_init(p);
	rc = smtp_reply_feed(p, buf, len, used, err);
	if (rc == 1)
		memcpy(out, &p->reply, sizeof(*out));
	free(p);
	return rc;
}

char *smtp_reply_summary(const struct smtp_reply *r, char *buf, size_t len)
{
	size_t o = 0, i;
	int n;

	if (len == 0)
		return buf;
	n = snprintf(buf, len, "%03d", r->code);
	if (n < 0 || (size_t)n >= len)
		return buf;
	o = (size_t)n;
	if (r->textlen > 0 && o + 1 < len)
		buf[o++] = ' ';
	for (i = 0; i < r->textlen && o + 1 < len; i++) {
		unsigned char c = (unsigned char)r->text[i];

		if (c == '\n')
			c = ' ';
		else if (c < 0x20 || c == 0x7f)
			c = '?';
		buf[o++] = (char)c;
	}
	buf[o] = '\0';
	return buf;
}

/* Case-insensitive keyword compare: the line starts with kw and then ends
 * or has a space. Sets *param to the text after the space (or ""). */
static bool keyword(const char *line, size_t n, const char *kw, const char **param, size_t *plen)
{
	size_t k = strlen(kw), i;

	if (n < k)
		return false;
	for (i = 0; i < k; i++)
		if (lower(line[i]) != lower(kw[i]))
			return false;
	if (n > k && line[k] != ' ')
		return false;
	*param = n > k ? line + k + 1 : line + n;
	*plen = n > k ? n - k - 1 : 0;
	return true;
}

/* The pre-RFC 4954 spelling "AUTH=PLAIN LOGIN" that old servers still
 * send beside (or instead of) "AUTH PLAIN LOGIN". */
static bool keyword_eq(const char *line, size_t n, const char *kw, const char **param, size_t *plen)
{
	size_t k = strlen(kw), i;

	if (n <= k || line[k] != '=')
		return false;
	for (i = 0; i < k; i++)
		if (lower(line[i]) != lower(kw[i]))
			return false;
	*param = line + k + 1;
	*plen = n - k - 1;
	return true;
}

/* A SASL mechanism name among the space-separated ones of an AUTH line. */
static bool has_mechanism(const char *p, size_t n, const char *mech)
{
	size_t k = strlen(mech), i = 0;

	while (i < n) {
		size_t start, j;

		while (i < n && p[i] == ' ')
			i++;
		start = i;
		while (i < n && p[i] != ' ')
			i++;
		if (i - start != k)
			continue;
		for (j = 0; j < k && lower(p[start + j]) == lower(mech[j]); j++)
			;
		if (j == k)
			return true;
	}
	return false;
}

int smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo_caps *caps)
{
	const char *t = r->text, *end = r->text + r->textlen;
	bool first = true;

	memset(caps, 0, sizeof(*caps));
	if (r->code / 100 != 2)
		return -1;
	while (t <= end) {
		const char *nl = memchr(t, '\n', (size_t)(end - t));
		size_t n = nl ? (size_t)(nl - t) : (size_t)(end - t);
		const char *param;
		size_t plen;

		if (!first) {
			if (keyword(t, n, "PIPELINING", &param, &plen))
				caps->pipelining = true;
			else if (keyword(t, n, "STARTTLS", &param, &plen))
				caps->starttls = true;
			else if (keyword(t, n, "8BITMIME", &param, &plen))
				caps->eightbitmime = true;
			else if (keyword(t, n, "ENHANCEDSTATUSCODES", &param, &plen))
				caps->enhancedstatuscodes = true;
			else if (keyword(t, n, "SMTPUTF8", &param, &plen))
				caps->smtputf8 = true;
			else if (keyword(t, n, "CHUNKING", &param, &plen))
				caps->chunking = true;
			else if (keyword(t, n, "AUTH", &param, &plen) ||
				 keyword_eq(t, n, "AUTH", &param, &plen))
				caps->auth_plain |= has_mechanism(param, plen, "PLAIN");
			else if (keyword(t, n, "SIZE", &param, &plen)) {
				/* RFC 1870: "SIZE" [SP number]; at most 20 digits. */
				uint64_t v = 0;
				size_t i;
				bool ok = plen <= 20;

				for (i = 0; ok && i < plen; i++) {
					if (!is_digit(param[i]) ||
					    v > (UINT64_MAX - (uint64_t)(param[i] - '0')) / 10)
						ok = false;
					else
						v = v * 10 + (uint64_t)(param[i] - '0');
				}
				if (ok) {
					caps->size = true;
					caps->size_max = v;
				}
			}
		}
		first = false;
		if (!nl)
			break;
		t = nl + 1;
	}
	return 0;
}
