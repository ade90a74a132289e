/* A schema check of TLS-RPT reports written from the RFC 8460 §4.4 field
 * list: what we send must pass STRICT; a receiver's view is LENIENT. */
#include "sts/tlsrpt/tlsrpt.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vctx {
	enum tlsrpt_validate_mode mode;
	char *err;
	size_t errlen;
	bool failed;
};

static bool strict(const struct vctx *v)
{
	return v->mode == TLSRPT_VALIDATE_STRICT;
}

/* Records the first problem only. */
static void bad(struct vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(struct vctx *v, const char *fmt, ...)
{
	va_list ap;

	if (v->failed)
		return;
	v->failed = true;
	va_start(ap, fmt);
	vsnprintf(v->err, v->errlen, fmt, ap);
	va_end(ap);
}

/* RFC 3339 §5.6 date-time -> seconds since the epoch (leap second allowed
 * as :60). -1 if malformed. */
static int parse_datetime(const char *s, int64_t *out)
{
	char day[TLSRPT_DAY_LEN + 1];
	int64_t start;
	int hh, mm, ss, oh = 0, om = 0, sign = 0;
	const char *p;

	if (strlen(s) < 20)
		return -1;
	memcpy(day, s, TLSRPT_DAY_LEN);
	day[TLSRPT_DAY_LEN] = '\0';
	if (tlsrpt_day_parse(day, &start) != 0 || (s[10] != 'T' && s[10] != 't'))
		return -1;
	p = s + 11;
	for (int i = 0; i < 8; i++)
		if ((i == 2 || i == 5) ? p[i] != ':' : (p[i] < '0' || p[i] > '9'))
			return -1;
	hh = (p[0] - '0') * 10 + (p[1] - '0');
	mm = (p[3] - '0') * 10 + (p[4] - '0');
	ss = (p[6] - '0') * 10 + (p[7] - '0');
	if (hh > 23 || mm > 59 || ss > 60)
		return -1;
	p += 8;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -1;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '+' ? 1 : -1;
		if (!(p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' && p[3] == ':' &&
		      p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9'))
			return -1;
		oh = (p[1] - '0') * 10 + (p[2] - '0');
		om = (p[4] - '0') * 10 + (p[5] - '0');
		if (oh > 23 || om > 59)
			return -1;
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	*out = start + hh * 3600 + mm * 60 + ss - sign * (oh * 3600 + om * 60);
	return 0;
}

static bool ip_ok(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool in_list(const char *s, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

/* A string member: required or optional; non-empty when present. */
static const char *get_str(struct vctx *v, const json_t *o, const char *path, const char *k,
			   bool required)
{
	const json_t *m = json_object_get(o, k);

	if (m == NULL) {
		if (required)
			bad(v, "%s: \"%s\" is missing", path, k);
		return NULL;
	}
	if (!json_is_string(m) || json_string_length(m) == 0) {
		bad(v, "%s.%s: must be a non-empty string", path, k);
		return NULL;
	}
	return json_string_value(m);
}

static void check_count(struct vctx *v, const json_t *o, const char *path, const char *k,
			bool required)
{
	const json_t *m = json_object_get(o, k);

	if (m == NULL) {
		if (required)
			bad(v, "%s: \"%s\" is missing", path, k);
		return;
	}
	if (!json_is_integer(m) || json_integer_value(m) < 0)
		bad(v, "%s.%s: must be a non-negative integer", path, k);
}

static void check_str_array(struct vctx *v, const json_t *o, const char *path, const char *k,
			    bool allow_string)
{
	const json_t *m = json_object_get(o, k), *e;
	size_t i;

	if (m == NULL)
		return;
	if (allow_string && json_is_string(m))
		return;
	if (!json_is_array(m)) {
		bad(v, "%s.%s: must be an array of strings", path, k);
		return;
	}
	json_array_foreach(m, i, e) if (!json_is_string(e))
	{
		bad(v, "%s.%s[%zu]: must be a string", path, k, i);
		return;
	}
}

static void check_detail(struct vctx *v, const json_t *fd, const char *path)
{
	static const char *const results[] = {
		"starttls-not-supported", "certificate-host-mismatch",
		"certificate-expired",    "certificate-not-trusted",
		"validation-failure",     "tlsa-invalid",
		"dnssec-invalid",         "dane-required",
		"sts-policy-fetch-error", "sts-policy-invalid",
		"sts-webpki-invalid",     NULL
	};
	static const char *const ips[] = { "sending-mta-ip", "receiving-ip", NULL };
	static const char *const texts[] = { "receiving-mx-hostname", "receiving-mx-helo",
					     "additional-information", "failure-reason-code",
					     NULL };
	const char *rt;
	size_t i;

	if (!json_is_object(fd)) {
		bad(v, "%s: must be an object", path);
		return;
	}
	rt = get_str(v, fd, path, "result-type", true);
	if (rt != NULL && strict(v) && !in_list(rt, results))
		bad(v, "%s.result-type: unknown result type \"%s\"", path, rt);
	check_count(v, fd, path, "failed-session-count", strict(v));
	for (i = 0; ips[i] != NULL; i++) {
		const char *ip = get_str(v, fd, path, ips[i], false);

		if (ip != NULL && !ip_ok(ip))
			bad(v, "%s.%s: \"%s\" is not an IP address", path, ips[i], ip);
	}
	for (i = 0; texts[i] != NULL; i++)
		get_str(v, fd, path, texts[i], false);
}

static void check_policy_entry(struct vctx *v, const json_t *e, const char *path)
{
	static const char *const types[] = { "tlsa", "sts", "no-policy-found", NULL };
	const json_t *pol, *sum, *det, *fd;
	char sub[96];
	const char *type;
	size_t i;

	if (!json_is_object(e)) {
		bad(v, "%s: must be an object", path);
		return;
	}
	pol = json_object_get(e, "policy");
	snprintf(sub, sizeof(sub), "%s.policy", path);
	if (!json_is_object(pol)) {
		bad(v, "%s: missing or not an object", sub);
		return;
	}
	type = get_str(v, pol, sub, "policy-type", true);
	if (type != NULL && strict(v) && !in_list(type, types))
		bad(v, "%s.policy-type: \"%s\" is not tlsa, sts or no-policy-found", sub, type);
	check_str_array(v, pol, sub, "policy-string", false);
	get_str(v, pol, sub, "policy-domain", strict(v));
	check_str_array(v, pol, sub, "mx-host", !strict(v));

	sum = json_object_get(e, "summary");
	snprintf(sub, sizeof(sub), "%s.summary", path);
	if (!json_is_object(sum)) {
		bad(v, "%s: missing or not an object", sub);
		return;
	}
	check_count(v, sum, sub, "total-successful-session-count", strict(v));
	check_count(v, sum, sub, "total-failure-session-count", strict(v));

	det = json_object_get(e, "failure-details");
	if (det == NULL)
		return;
	if (!json_is_array(det)) {
		bad(v, "%s.failure-details: must be an array", path);
		return;
	}
	json_array_foreach(det, i, fd)
	{
		snprintf(sub, sizeof(sub), "%s.failure-details[%zu]", path, i);
		check_detail(v, fd, sub);
	}
}

int tlsrpt_validate(const json_t *r, enum tlsrpt_validate_mode mode, char *err, size_t errlen)
{
	struct vctx v = { mode, err, errlen, false };
	const json_t *range, *pols, *e;
	const char *s, *en, *contact;
	int64_t ts = 0, te = 0;
	size_t i;

	if (!json_is_object(r)) {
		bad(&v, "report: must be a JSON object");
		return -1;
	}
	get_str(&v, r, "report", "organization-name", true);
	contact = get_str(&v, r, "report", "contact-info", strict(&v));
	if (contact != NULL && strict(&v) && strchr(contact, '@') == NULL)
		bad(&v, "report.contact-info: not an e-mail address");
	get_str(&v, r, "report", "report-id", true);
	range = json_object_get(r, "date-range");
	if (!json_is_object(range)) {
		bad(&v, "report.date-range: missing or not an object");
	} else {
		s = get_str(&v, range, "report.date-range", "start-datetime", true);
		en = get_str(&v, range, "report.date-range", "end-datetime", true);
		if (s != NULL && parse_datetime(s, &ts) != 0)
			bad(&v, "report.date-range.start-datetime: not an RFC 3339 date-time");
		if (en != NULL && parse_datetime(en, &te) != 0)
			bad(&v, "report.date-range.end-datetime: not an RFC 3339 date-time");
		if (s != NULL && en != NULL && !v.failed && te < ts)
			bad(&v, "report.date-range: ends before it starts");
	}
	pols = json_object_get(r, "policies");
	if (!json_is_array(pols)) {
		bad(&v, "report.policies: missing or not an array");
	} else {
		if (json_array_size(pols) == 0 && strict(&v))
			bad(&v, "report.policies: empty");
		json_array_foreach(pols, i, e)
		{
			char path[48];

			snprintf(path, sizeof(path), "report.policies[%zu]", i);
			check_policy_entry(&v, e, path);
		}
	}
	return v.failed ? -1 : 0;
}

int tlsrpt_validate_bytes(const void *buf, size_t len, enum tlsrpt_validate_mode mode, char *err,
			  size_t errlen)
{
	const unsigned char *b = buf;
	unsigned char *plain = NULL;
	size_t plen = 0;
	json_error_t je;
	json_t *r;
	int rc;

	if (len >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
		if (tlsrpt_gunzip(buf, len, TLSRPT_REPORT_MAX, &plain, &plen) != 0) {
			snprintf(err, errlen, "gzip: corrupt or larger than %u bytes",
				 TLSRPT_REPORT_MAX);
			return -1;
		}
		buf = plain;
		len = plen;
	}
	r = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (r == NULL) {
		snprintf(err, errlen, "JSON: line %d: %s", je.line, je.text);
		free(plain);
		return -1;
	}
	if (json_is_array(r)) {
		const json_t *e;
		size_t i;

		rc = 0;
		json_array_foreach(r, i,
				   e) if (rc == 0 && tlsrpt_validate(e, mode, err, errlen) != 0)
		{
			char first[256];

			snprintf(first, sizeof(first), "%s", err);
			snprintf(err, errlen, "[%zu] %s", i, first);
			rc = -1;
		}
	} else {
		rc = tlsrpt_validate(r, mode, err, errlen);
	}
	json_decref(r);
	free(plain);
	return rc;
}
