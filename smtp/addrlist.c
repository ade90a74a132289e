/* RFC 5322 address-list parser: a one-pass scanner over header bytes that
 * yields one mailbox at a time, with a reason for the first error. */
#include "smtp/addrlist.h"

#include <stdio.h>
#include <string.h>

/* The mailbox being collected: the text outside <> ("phrase", which is the
 * addr-spec when there is no <>) and the text inside <>. */
struct mbox {
	char phrase[ADDRLIST_ADDR_MAX];
	size_t plen;
	bool poverflow;
	bool pspace;        /* whitespace between words of the phrase */
	bool pword;         /* a word has been seen */
	bool pending_space; /* whitespace or a comment since the last byte */
	char angle[ADDRLIST_ADDR_MAX];
	size_t alen;
	bool aoverflow;
	bool has_angle;
	bool after_angle_junk;
};

static void mbox_reset(struct mbox *m)
{
	memset(m, 0, sizeof(*m));
}

static void phrase_byte(struct mbox *m, char c)
{
	if (m->plen + 1 >= sizeof(m->phrase)) {
		m->poverflow = true;
		return;
	}
	m->phrase[m->plen++] = c;
	m->phrase[m->plen] = '\0';
}

/* Whitespace between words is kept (as one space) so that a bare
 * "john smith@example.com" is refused, and named as written. */
static void phrase_put(struct mbox *m, char c)
{
	bool space = m->pending_space && m->pword;

	m->pending_space = false;
	m->pword = true;
	if (m->has_angle) {
		m->after_angle_junk = true;
		return;
	}
	if (space) {
		m->pspace = true;
		phrase_byte(m, ' ');
	}
	phrase_byte(m, c);
}

static void angle_put(struct mbox *m, char c)
{
	if (m->alen + 1 >= sizeof(m->angle)) {
		m->aoverflow = true;
		return;
	}
	m->angle[m->alen++] = c;
	m->angle[m->alen] = '\0';
}

static void err_set(struct addrlist_err *e, const char *text, const char *why)
{
	snprintf(e->text, sizeof(e->text), "%.*s", ADDRLIST_ERR_EXCERPT, text);
	e->why = why;
}

/* For text that is not NUL-terminated (the caller's input). */
static void err_setn(struct addrlist_err *e, const char *text, size_t len, const char *why)
{
	int n = len > ADDRLIST_ERR_EXCERPT ? ADDRLIST_ERR_EXCERPT : (int)len;

	snprintf(e->text, sizeof(e->text), "%.*s", n, text);
	e->why = why;
}

/* Ends one element of the list: 1 with *out set, 0 for an empty element,
 * -1 with *e set. */
static int mbox_finish(struct mbox *m, struct addrlist_addr *out, struct addrlist_err *e)
{
	const char *spec;

	if (m->has_angle) {
		if (m->aoverflow) {
			err_set(e, m->angle, "address too long");
			return -1;
		}
		if (m->after_angle_junk) {
			err_set(e, m->angle, "text after the <address>");
			return -1;
		}
		spec = m->angle;
		/* Obsolete source route "<@a,@b:user@host>": only the mailbox counts. */
		if (spec[0] == '@' && strchr(spec, ':') != NULL)
			spec = strchr(spec, ':') + 1;
		if (*spec == '\0') {
			err_set(e, "<>", "empty address");
			return -1;
		}
	} else {
		if (m->plen == 0)
			return 0;
		if (m->poverflow) {
			err_set(e, m->phrase, "address too long");
			return -1;
		}
		if (m->pspace) {
			err_set(e, m->phrase,
				"not an address (spaces; display names need <address>)");
			return -1;
		}
		spec = m->phrase;
	}
	/* spec is a suffix of a buffer of the same size as out->addr. */
	memcpy(out->addr, spec, strlen(spec) + 1);
	out->angle = m->has_angle;
	return 1;
}

void addrlist_begin(struct addrlist_iter *it, const char *s, size_t len)
{
	memset(it, 0, sizeof(*it));
	it->s = s;
	it->len = len;
}

static int iter_fail(struct addrlist_iter *it, struct addrlist_err *err)
{
	it->failed = true;
	it->err = *err;
	return -1;
}

/* Scans from it->pos to the end of the next non-empty element. Quotes, <>
 * and comments never span a ',' or ';' that ends an element, so only the
 * group state lives across calls. */
int addrlist_next(struct addrlist_iter *it, struct addrlist_addr *out, struct addrlist_err *err)
{
	const char *s = it->s;
	size_t len = it->len, i, comment = 0;
	bool in_quote = false, in_angle = false;
	struct mbox m;
	int rc;

	if (it->failed) {
		*err = it->err;
		return -1;
	}
	if (it->done)
		return 0;
	mbox_reset(&m);
	for (i = it->pos; i < len; i++) {
		char c = s[i];

		if (c == '\0') {
			err_set(err, "", "NUL byte in an address header");
			return iter_fail(it, err);
		}
		if (comment > 0) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '(')
				comment++;
			else if (c == ')')
				comment--;
			continue;
		}
		if (in_quote) {
			if (c == '\\' && i + 1 < len) {
				in_angle ? angle_put(&m, c) : phrase_put(&m, c);
				c = s[++i];
			} else if (c == '"') {
				in_quote = false;
			}
			/* A folded quoted string: the line end goes, its blank stays. */
			if (c == '\r' || c == '\n')
				continue;
			in_angle ? angle_put(&m, c) : phrase_put(&m, c);
			continue;
		}
		if (c == '"') {
			in_quote = true;
			in_angle ? angle_put(&m, c) : phrase_put(&m, c);
			continue;
		}
		if (c == '(') {
			comment = 1;
			m.pending_space = true;
			continue;
		}
		if (in_angle) {
			if (c == '>')
				in_angle = false;
			else if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
				angle_put(&m, c);
			continue;
		}
		switch (c) {
		case '<':
			if (m.has_angle) {
				err_setn(err, s + i, len - i, "two <addresses> in one mailbox");
				return iter_fail(it, err);
			}
			m.has_angle = true;
			in_angle = true;
			break;
		case ';':
			if (!it->in_group) {
				phrase_put(&m, c);
				break;
			}
			/* the group's end closes its last mailbox as a comma would */
			it->in_group = false;
			/* fall through */
		case ',':
			rc = mbox_finish(&m, out, err);
			if (rc < 0)
				return iter_fail(it, err);
			if (rc > 0) {
				it->pos = i + 1;
				return 1;
			}
			mbox_reset(&m);
			break;
		case ':':
			if (it->in_group || m.has_angle) {
				phrase_put(&m, c);
				break;
			}
			/* The group's display name is not an address. */
			mbox_reset(&m);
			it->in_group = true;
			break;
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			m.pending_space = true;
			break;
		default:
			phrase_put(&m, c);
			break;
		}
	}
	it->pos = len;
	if (in_quote || in_angle || comment > 0) {
		err_setn(err, s, len,
			 in_quote   ? "unterminated quoted string"
			 : in_angle ? "unterminated <address>"
				    : "unterminated comment");
		return iter_fail(it, err);
	}
	it->done = true;
	rc = mbox_finish(&m, out, err);
	if (rc < 0)
		return iter_fail(it, err);
	return rc;
}

int addrlist_parse(const char *s, size_t len, struct addrlist_addr *out, size_t cap, size_t *n,
		   struct addrlist_err *err)
{
	struct addrlist_iter it;
	struct addrlist_addr a;
	int rc;

	*n = 0;
	addrlist_begin(&it, s, len);
	for (;;) {
		rc = addrlist_next(&it, &a, err);
		if (rc <= 0)
			return rc;
		if (*n == cap) {
			err_set(err, a.addr, "too many addresses");
			return -1;
		}
		out[(*n)++] = a;
	}
}
