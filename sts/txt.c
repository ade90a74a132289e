/* Parsers for the `_mta-sts` and `_smtp._tls` TXT records (RFC 8461 §3.1,
 * RFC 8460 §3), reading a record's character-strings in place as one text. */
#include "sts/txt.h"
#include "sts/mx_match.h"
#include "relay/core/b64.h"

#include <string.h>

/* ---- a cursor over the concatenated character-strings of one record ----
 * The strings are read in place rather than joined into a buffer, so a
 * record of any length is parsed without allocation or truncation. */

struct cur {
	const struct sts_txt_string *s;
	size_t n;
	size_t seg;
	size_t off;
};

static void cur_init(struct cur *c, const struct sts_txt_record *r)
{
	c->s = r->strings;
	c->n = (r->strings != NULL) ? r->nstrings : 0;
	c->seg = 0;
	c->off = 0;
}

/* The next byte, or -1 at the end of the record. */
static int cur_peek(struct cur *c)
{
	while (c->seg < c->n && (c->s[c->seg].data == NULL || c->off >= c->s[c->seg].len)) {
		c->seg++;
		c->off = 0;
	}
	if (c->seg >= c->n)
		return -1;
	return c->s[c->seg].data[c->off];
}

static void cur_next(struct cur *c)
{
	if (cur_peek(c) >= 0)
		c->off++;
}

/* Consumes lit if the record continues with it; else leaves c unchanged. */
static int cur_lit(struct cur *c, const char *lit)
{
	struct cur save = *c;

	for (; *lit != '\0'; lit++) {
		if (cur_peek(c) != (unsigned char)*lit) {
			*c = save;
			return 0;
		}
		cur_next(c);
	}
	return 1;
}

static int is_wsp(int ch)
{
	return ch == ' ' || ch == '\t';
}

static int is_alnum(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static void skip_wsp(struct cur *c)
{
	while (is_wsp(cur_peek(c)))
		cur_next(c);
}

/* True if the record begins with the version tag as its own field: the tag
 * followed by ";", WSP or the end ("v=STSv12" is another record). */
static int starts_with_tag(const struct sts_txt_record *r, const char *tag)
{
	struct cur c;

	cur_init(&c, r);
	if (!cur_lit(&c, tag))
		return 0;
	int ch = cur_peek(&c);
	return ch == -1 || ch == ';' || is_wsp(ch);
}

/* ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."); copied
 * into name (33 bytes). Returns 0 or -1. */
static int read_name(struct cur *c, char name[33])
{
	size_t n = 0;
	int ch = cur_peek(c);

	if (!is_alnum(ch))
		return -1;
	while (is_alnum(ch) || ch == '_' || ch == '-' || ch == '.') {
		if (n == 32)
			return -1;
		name[n++] = (char)ch;
		cur_next(c);
		ch = cur_peek(c);
	}
	name[n] = '\0';
	return 0;
}

/* ext-value = 1*(%x21-3A / %x3C / %x3E-7E): printable, no SP, "=", ";".
 * The first buf_size - 1 bytes are copied (NUL-terminated); *len gets the
 * full length. Returns 0, or -1 if the value is empty. */
static int read_ext_value(struct cur *c, char *buf, size_t buf_size, size_t *len)
{
	size_t n = 0;
	int ch;

	while ((ch = cur_peek(c)) >= 0x21 && ch <= 0x7E && ch != '=' && ch != ';') {
		if (n + 1 < buf_size)
			buf[n] = (char)ch;
		n++;
		cur_next(c);
	}
	if (buf_size > 0)
		buf[n < buf_size ? n : buf_size - 1] = '\0';
	*len = n;
	return n > 0 ? 0 : -1;
}

/* What to do with each field after the version tag. */
typedef int (*field_fn)(struct cur *c, const char *name, void *ctx, const char **reason);

/* The part of both grammars after the tag:
 *   1*(*WSP ";" *WSP field) [*WSP ";" *WSP]
 * Trailing WSP without a final ";" is also accepted (harmless leniency). */
static int parse_fields(struct cur *c, field_fn fn, void *ctx, const char **reason)
{
	size_t nfields = 0;
	char name[33];

	for (;;) {
		skip_wsp(c);
		int ch = cur_peek(c);
		if (ch == -1)
			break;
		if (ch != ';') {
			*reason = "expected ';' between fields";
			return -1;
		}
		cur_next(c);
		skip_wsp(c);
		if (cur_peek(c) == -1)
			break;
		if (read_name(c, name) != 0) {
			*reason = "invalid field name";
			return -1;
		}
		if (cur_peek(c) != '=') {
			*reason = "field without '='";
			return -1;
		}
		cur_next(c);
		if (fn(c, name, ctx, reason) != 0)
			return -1;
		nfields++;
	}
	if (nfields == 0) {
		*reason = "no field after the version";
		return -1;
	}
	return 0;
}

static int generic_field(struct cur *c, const char **reason)
{
	char dummy[1];
	size_t len;

	if (read_ext_value(c, dummy, sizeof dummy, &len) != 0) {
		*reason = "empty or invalid field value";
		return -1;
	}
	return 0;
}

/* Picks the one record starting with tag. Returns its index, or sets
 * *result to NONE / MULTIPLE and returns -1. */
static long select_record(const struct sts_txt_record *records, size_t n, const char *tag,
			  enum sts_txt_result *result)
{
	long found = -1;
	size_t count = 0;

	for (size_t i = 0; records != NULL && i < n; i++) {
		if (starts_with_tag(&records[i], tag)) {
			count++;
			found = (long)i;
		}
	}
	if (count == 0) {
		*result = STS_TXT_NONE;
		return -1;
	}
	if (count > 1) {
		*result = STS_TXT_MULTIPLE;
		return -1;
	}
	return found;
}

const char *sts_txt_result_name(enum sts_txt_result r)
{
	switch (r) {
	case STS_TXT_FOUND:
		return "found";
	case STS_TXT_NONE:
		return "none";
	case STS_TXT_MULTIPLE:
		return "multiple";
	case STS_TXT_INVALID:
		return "invalid";
	}
	return "invalid";
}

/* ---- _mta-sts ---- */

struct sts_ctx {
	struct sts_txt *out;
	int seen_id;
};

static int sts_field(struct cur *c, const char *name, void *vctx, const char **reason)
{
	struct sts_ctx *ctx = vctx;
	char val[STS_TXT_ID_MAX + 2];
	size_t len;

	if (strcmp(name, "id") != 0 || ctx->seen_id)
		return generic_field(c, reason);
	ctx->seen_id = 1;
	if (read_ext_value(c, val, sizeof val, &len) != 0 || len > STS_TXT_ID_MAX) {
		*reason = "id is not 1-32 letters or digits";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (!is_alnum((unsigned char)val[i])) {
			*reason = "id is not 1-32 letters or digits";
			return -1;
		}
	}
	memcpy(ctx->out->id, val, len + 1);
	return 0;
}

enum sts_txt_result sts_txt_parse(const struct sts_txt_record *records, size_t nrecords,
				  struct sts_txt *out)
{
	struct sts_ctx ctx;
	struct cur c;
	long idx;

	if (out == NULL)
		return STS_TXT_INVALID;
	memset(out, 0, sizeof *out);
	idx = select_record(records, nrecords, "v=STSv1", &out->result);
	if (idx < 0) {
		out->reason = (out->result == STS_TXT_NONE) ? "no v=STSv1 TXT record"
							    : "more than one v=STSv1 TXT record";
		return out->result;
	}
	out->record_index = (size_t)idx;
	ctx.out = out;
	ctx.seen_id = 0;
	cur_init(&c, &records[idx]);
	(void)cur_lit(&c, "v=STSv1");
	if (parse_fields(&c, sts_field, &ctx, &out->reason) != 0)
		goto invalid;
	if (!ctx.seen_id) {
		out->reason = "id field missing";
		goto invalid;
	}
	out->result = STS_TXT_FOUND;
	out->reason = NULL;
	return out->result;

invalid:
	out->id[0] = '\0';
	out->result = STS_TXT_INVALID;
	return out->result;
}

enum sts_txt_result sts_txt_parse_one(const void *record, size_t len, struct sts_txt *out)
{
	struct sts_txt_string s = { record, record != NULL ? len : 0 };
	struct sts_txt_record r = { &s, 1 };

	return sts_txt_parse(&r, 1, out);
}

/* ---- _smtp._tls ---- */

struct rpt_ctx {
	struct sts_tlsrpt_txt *out;
	int seen_rua;
};

static int prefix_nocase(const char *s, const char *lit)
{
	for (; *lit != '\0'; s++, lit++) {
		char a = *s;
		if (a >= 'A' && a <= 'Z')
			a = (char)(a - 'A' + 'a');
		if (a != *lit)
			return 0;
	}
	return 1;
}

/* dot-atom local part characters (RFC 5322 atext plus "."). */
static int is_atext(unsigned char ch)
{
	return is_alnum(ch) || (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", ch) != NULL);
}

/* mailto:addr[?query] -> decoded addr-spec in out. Returns 0 or -1. */
static int mailto_target(const char *uri, char *out, size_t out_size)
{
	const char *p = uri + 7; /* after "mailto:" */
	size_t n = 0;
	size_t at = 0;
	int nat = 0;

	for (; *p != '\0' && *p != '?'; p++) {
		int ch = (unsigned char)*p;
		if (ch == '%') {
			/* p is NUL-terminated: strnlen never reads past it */
			ch = core_pct_octet(p, strnlen(p, 3));
			if (ch < 0)
				return -1;
			p += 2;
		}
		if (ch == '@') {
			nat++;
			at = n;
		} else if (!is_atext((unsigned char)ch)) {
			return -1; /* also rejects ",", SP, controls, 8-bit */
		}
		if (n + 1 >= out_size)
			return -1;
		out[n++] = (char)ch;
	}
	out[n] = '\0';
	if (nat != 1 || at == 0 || at > 64 || at + 1 >= n)
		return -1;
	const char *dom = out + at + 1;
	char norm[STS_MX_NAME_MAX + 1];
	if (dom[0] == '*' ||
	    sts_mx_pattern_normalize(dom, strlen(dom), norm, sizeof norm, NULL) != 0 ||
	    sts_mx_pattern_is_numeric(norm))
		return -1;
	return 0;
}

/* https://host[...]: kept as published; needs a non-empty authority. */
static int https_ok(const char *uri)
{
	if (!prefix_nocase(uri, "https://"))
		return 0;
	char ch = uri[8];
	return ch != '\0' && ch != '/' && ch != '?' && ch != '#';
}

static void add_uri(struct sts_tlsrpt_txt *out, const char *uri, size_t len)
{
	struct sts_tlsrpt_rua r;

	if (len > STS_TLSRPT_URI_MAX || out->nrua >= STS_TLSRPT_MAX_RUA) {
		out->ignored++;
		return;
	}
	memset(&r, 0, sizeof r);
	if (prefix_nocase(uri, "mailto:")) {
		r.kind = STS_TLSRPT_MAILTO;
		if (mailto_target(uri, r.target, sizeof r.target) != 0) {
			out->ignored++;
			return;
		}
	} else if (prefix_nocase(uri, "https:")) {
		r.kind = STS_TLSRPT_HTTPS;
		if (!https_ok(uri)) {
			out->ignored++;
			return;
		}
		memcpy(r.target, uri, len + 1);
	} else {
		out->ignored++; /* http:, other schemes: not supported */
		return;
	}
	out->rua[out->nrua++] = r;
}

/* rua value: uri *(*WSP "," *WSP uri); uri = 1*(%x21-7E except ";" ","). */
static int rua_field(struct cur *c, struct sts_tlsrpt_txt *out, int keep, const char **reason)
{
	char uri[STS_TLSRPT_URI_MAX + 2];

	for (;;) {
		size_t n = 0;
		int ch;
		while ((ch = cur_peek(c)) >= 0x21 && ch <= 0x7E && ch != ';' && ch != ',') {
			if (n + 1 < sizeof uri)
				uri[n] = (char)ch;
			n++;
			cur_next(c);
		}
		if (n == 0) {
			*reason = "empty URI in rua";
			return -1;
		}
		uri[n < sizeof uri ? n : sizeof uri - 1] = '\0';
		if (keep)
			add_uri(out, uri, n);
		skip_wsp(c); /* also fine before ";": delimiters take *WSP */
		if (cur_peek(c) != ',')
			return 0;
		cur_next(c);
		skip_wsp(c);
	}
}

static int rpt_field(struct cur *c, const char *name, void *vctx, const char **reason)
{
	struct rpt_ctx *ctx = vctx;

	if (strcmp(name, "rua") != 0)
		return generic_field(c, reason);
	int first = !ctx->seen_rua;
	ctx->seen_rua = 1;
	/* A repeated rua is checked for syntax but its URIs are ignored: the
	 * first value of a non-repeatable field wins. */
	return rua_field(c, ctx->out, first, reason);
}

enum sts_txt_result sts_tlsrpt_txt_parse(const struct sts_txt_record *records, size_t nrecords,
					 struct sts_tlsrpt_txt *out)
{
	struct rpt_ctx ctx;
	struct cur c;
	long idx;

	if (out == NULL)
		return STS_TXT_INVALID;
	memset(out, 0, sizeof *out);
	idx = select_record(records, nrecords, "v=TLSRPTv1", &out->result);
	if (idx < 0) {
		out->reason = (out->result == STS_TXT_NONE) ? "no v=TLSRPTv1 TXT record"
							    : "more than one v=TLSRPTv1 TXT record";
		return out->result;
	}
	out->record_index = (size_t)idx;
	ctx.out = out;
	ctx.seen_rua = 0;
	cur_init(&c, &records[idx]);
	(void)cur_lit(&c, "v=TLSRPTv1");
	if (parse_fields(&c, rpt_field, &ctx, &out->reason) != 0)
		goto invalid;
	if (!ctx.seen_rua) {
		out->reason = "rua field missing";
		goto invalid;
	}
	out->result = STS_TXT_FOUND;
	out->reason = NULL;
	return out->result;

invalid:
	out->nrua = 0;
	out->ignored = 0;
	memset(out->rua, 0, sizeof out->rua);
	out->result = STS_TXT_INVALID;
	return out->result;
}

enum sts_txt_result sts_tlsrpt_txt_parse_one(const void *record, size_t len,
					     struct sts_tlsrpt_txt *out)
{
	struct sts_txt_string s = { record, record != NULL ? len : 0 };
	struct sts_txt_record r = { &s, 1 };

	return sts_tlsrpt_txt_parse(&r, 1, out);
}
