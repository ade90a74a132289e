/* TLS-RPT aggregation: a UTC day's session lines are counted per group
 * (domain, policy, result, IPs, MX) and turned into RFC 8460 §4 JSON reports. */
#include "sts/tlsrpt/tlsrpt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "relay/core/clock.h"

#define NFIELDS 14            /* of a T2 line, CRC included (T1: 13) */
#define MAX_GROUPS (1u << 20) /* distinct groups per day */
#define READ_CHUNK 65536
#define LINE_MAX_LEN 12288
#define SEP '\x1f' /* joins key parts; never in a field */

/* Key parts, in sort order: domain, policy (type, mode, max_age, mx list,
 * text hash), result, sending ip, mx host, mx ip, reason. */
enum {
	K_DOMAIN,
	K_PTYPE,
	K_MODE,
	K_MAXAGE,
	K_MX,
	K_PHASH,
	K_RESULT,
	K_SIP,
	K_MXHOST,
	K_MXIP,
	K_REASON,
	K_COUNT
};

struct group {
	char *key;
	uint64_t count;
};

struct ptext { /* a stored policy text of the day */
	char hash[TLSRPT_POLICY_HASH_LEN + 1];
	char *text;
	size_t len;
};

struct tlsrpt_day {
	char day[TLSRPT_DAY_LEN + 1];
	int64_t start;
	struct group *tab; /* open addressing while loading */
	size_t cap, n;
	struct group *sorted; /* after loading: n groups sorted by key */
	char **domains;
	size_t ndomains;
	size_t bad;
	struct ptext *ptexts;
	size_t nptexts;
};

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static int tab_grow(struct tlsrpt_day *d)
{
	size_t ncap = d->cap ? d->cap * 2 : 256, i;
	struct group *nt = calloc(ncap, sizeof(*nt));

	if (nt == NULL)
		return -1;
	for (i = 0; i < d->cap; i++) {
		size_t j;

		if (d->tab[i].key == NULL)
			continue;
		for (j = fnv1a(d->tab[i].key) & (ncap - 1); nt[j].key != NULL;
		     j = (j + 1) & (ncap - 1))
			;
		nt[j] = d->tab[i];
	}
	free(d->tab);
	d->tab = nt;
	d->cap = ncap;
	return 0;
}

static int tab_add(struct tlsrpt_day *d, const char *key, uint64_t count)
{
	size_t j;

	if ((d->n + 1) * 2 > d->cap && tab_grow(d) != 0)
		return -1;
	for (j = fnv1a(key) & (d->cap - 1); d->tab[j].key != NULL; j = (j + 1) & (d->cap - 1))
		if (strcmp(d->tab[j].key, key) == 0) {
			d->tab[j].count += count;
			return 0;
		}
	if (d->n >= MAX_GROUPS)
		return -1;
	d->tab[j].key = strdup(key);
	if (d->tab[j].key == NULL)
		return -1;
	d->tab[j].count = count;
	d->n++;
	return 0;
}

static bool field_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

static bool all_digits(const char *s)
{
	if (*s == '\0' || strlen(s) > 19)
		return false;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static bool is_hash(const char *s)
{
	size_t n = strlen(s);

	if (n != TLSRPT_POLICY_HASH_LEN)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

/* The policy and result parts of a session (a line's fields from the
 * domain on, or a group key's parts), each already printable: a known
 * policy type; an sts policy's mode and max_age, none for the others; a
 * policy text hash only with a policy (sts or tlsa); a known result type,
 * into *res. One rule for the session file and the fleet's groups. */
static bool parts_valid(const char *const *q, enum smtp_tls_result *res)
{
	enum sts_policy_mode m;
	bool sts = strcmp(q[K_PTYPE], "sts") == 0, tlsa = strcmp(q[K_PTYPE], "tlsa") == 0;

	if (!sts && !tlsa && strcmp(q[K_PTYPE], "none") != 0)
		return false;
	if (tlsa && (strcmp(q[K_MODE], "-") != 0 || strcmp(q[K_MAXAGE], "-") != 0))
		return false;
	if (strcmp(q[K_MODE], "-") != 0 &&
	    (sts_policy_mode_parse(q[K_MODE], &m) != 0 || !all_digits(q[K_MAXAGE]) || !sts))
		return false;
	if (strcmp(q[K_PHASH], "-") != 0 &&
	    (!is_hash(q[K_PHASH]) || (strcmp(q[K_MODE], "-") == 0 && !tlsa)))
		return false;
	return smtp_tls_result_parse(q[K_RESULT], res) == 0;
}

/* One complete line (without its '\n'); 0 = counted, -1 = bad line. */
static int take_line(struct tlsrpt_day *d, char *line, size_t len)
{
	char *f[NFIELDS], *p = line, key[LINE_MAX_LEN + 16];
	size_t nf = 0, i, o = 0;
	bool t2;
	unsigned long want;
	char *end;
	enum smtp_tls_result res;
	int64_t when;
	char day[TLSRPT_DAY_LEN + 1];

	if (len < 12 || len > LINE_MAX_LEN)
		return -1;
	/* CRC over everything up to and including the TAB before it */
	if (line[len - 9] != '\t')
		return -1;
	errno = 0;
	want = strtoul(line + len - 8, &end, 16);
	if (errno != 0 || end != line + len)
		return -1;
	if (crc32(0L, (const Bytef *)line, (uInt)(len - 8)) != want)
		return -1;
	line[len - 9] = '\0';
	while (nf < NFIELDS - 1) {
		char *t = strchr(p, '\t');

		f[nf++] = p;
		if (t == NULL)
			break;
		*t = '\0';
		p = t + 1;
	}
	t2 = strcmp(f[0], "T2") == 0;
	if (!(t2 && nf == NFIELDS - 1) && !(strcmp(f[0], "T1") == 0 && nf == NFIELDS - 2))
		return -1;
	for (i = 0; i < nf; i++)
		if (!field_ok(f[i]))
			return -1;
	if (!t2) {
		/* T1 had no phash: shift the rest up and leave phash empty */
		for (i = NFIELDS - 2; i > 7; i--)
			f[i] = f[i - 1];
		f[7] = "-";
	}
	if (!all_digits(f[1]))
		return -1;
	when = strtoll(f[1], NULL, 10);
	tlsrpt_day_of(when, day);
	if (strcmp(day, d->day) != 0)
		return -1;
	if (!parts_valid((const char *const *)f + 2, &res))
		return -1;
	/* key: domain, ptype, mode, max_age, mx, phash, result[, sip, mxhost, mxip, reason] */
	{
		const char *parts[K_COUNT] = { f[2], f[3], f[4],  f[5],  f[6], f[7],
					       f[8], f[9], f[10], f[11], f[12] };
		size_t nparts = res == SMTP_TLS_RESULT_SUCCESS ? K_SIP : K_COUNT;

		for (i = 0; i < nparts; i++) {
			size_t l = strlen(parts[i]);

			if (o + l + 2 > sizeof(key))
				return -1;
			if (i > 0)
				key[o++] = SEP;
			memcpy(key + o, parts[i], l);
			o += l;
		}
		key[o] = '\0';
	}
	return tab_add(d, key, 1) == 0 ? 0 : -2;
}

/* Feeds a buffer of lines; a last line without '\n' is torn and skipped. */
static int feed(struct tlsrpt_day *d, char *buf, size_t len, size_t *used)
{
	size_t s = 0, i;

	for (i = 0; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i > s) {
			int rc = take_line(d, buf + s, i - s);

			if (rc == -2)
				return -1;
			if (rc != 0)
				d->bad++;
		}
		s = i + 1;
	}
	*used = s;
	return 0;
}

static size_t count_parts(const char *key)
{
	size_t n = 1;

	for (; *key != '\0'; key++)
		n += *key == SEP;
	return n;
}

/* True when two failure keys differ at most in their last part, the reason. */
static bool same_detail(const char *a, const char *b)
{
	const char *ra = strrchr(a, SEP), *rb = strrchr(b, SEP);

	return ra != NULL && rb != NULL && ra - a == rb - b &&
	       strncmp(a, b, (size_t)(ra - a)) == 0 && count_parts(a) == K_COUNT &&
	       count_parts(b) == K_COUNT;
}

static int cmp_group(const void *a, const void *b)
{
	return strcmp(((const struct group *)a)->key, ((const struct group *)b)->key);
}

static int finish(struct tlsrpt_day *d)
{
	size_t i, k = 0;

	d->sorted = calloc(d->n ? d->n : 1, sizeof(*d->sorted));
	d->domains = calloc(d->n ? d->n : 1, sizeof(*d->domains));
	if (d->sorted == NULL || d->domains == NULL)
		return -1;
	for (i = 0; i < d->cap; i++)
		if (d->tab[i].key != NULL)
			d->sorted[k++] = d->tab[i];
	free(d->tab);
	d->tab = NULL;
	d->cap = 0;
	qsort(d->sorted, d->n, sizeof(*d->sorted), cmp_group);
	for (i = 0; i < d->n; i++) {
		const char *key = d->sorted[i].key;
		size_t dl = strcspn(key, "\x1f");

		if (d->ndomains > 0 && strlen(d->domains[d->ndomains - 1]) == dl &&
		    strncmp(d->domains[d->ndomains - 1], key, dl) == 0)
			continue;
		d->domains[d->ndomains] = strndup(key, dl);
		if (d->domains[d->ndomains] == NULL)
			return -1;
		d->ndomains++;
	}
	return 0;
}

static struct tlsrpt_day *day_new(const char *day)
{
	struct tlsrpt_day *d;
	int64_t start;

	if (tlsrpt_day_parse(day, &start) != 0)
		return NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	memcpy(d->day, day, TLSRPT_DAY_LEN + 1);
	d->start = start;
	return d;
}

int tlsrpt_day_load_buf(const char *day, const char *buf, size_t len, struct tlsrpt_day **out)
{
	struct tlsrpt_day *d = day_new(day);
	char *copy = NULL;
	size_t used;

	*out = NULL;
	if (d == NULL)
		return -1;
	copy = malloc(len + 1);
	if (copy == NULL)
		goto fail;
	memcpy(copy, buf, len);
	if (feed(d, copy, len, &used) != 0)
		goto fail;
	if (used < len)
		d->bad++; /* a torn last line */
	if (finish(d) != 0)
		goto fail;
	free(copy);
	*out = d;
	return 0;
fail:
	free(copy);
	tlsrpt_day_free(d);
	return -1;
}

/* The part number idx of a key, copied into buf ("" if absent or too long). */
static void key_part(const char *key, size_t idx, char *buf, size_t len)
{
	size_t n;

	while (idx > 0 && key != NULL) {
		key = strchr(key, SEP);
		if (key != NULL)
			key++;
		idx--;
	}
	buf[0] = '\0';
	if (key == NULL)
		return;
	n = strcspn(key, "\x1f");
	if (n < len) {
		memcpy(buf, key, n);
		buf[n] = '\0';
	}
}

static const struct ptext *ptext_find(const struct tlsrpt_day *d, const char *hash)
{
	size_t i;

	for (i = 0; i < d->nptexts; i++)
		if (strcmp(d->ptexts[i].hash, hash) == 0)
			return &d->ptexts[i];
	return NULL;
}

/* Reads dir/policy-HASH if its content still has that hash. */
static char *read_ptext(const char *dir, const char *hash, size_t *len)
{
	char path[1400], check[TLSRPT_POLICY_HASH_LEN + 1], *buf;
	ssize_t n;
	size_t have = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/policy-%s", dir, hash);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = malloc(STS_POLICY_BODY_MAX + 2);
	while (buf != NULL && have <= STS_POLICY_BODY_MAX) {
		n = read(fd, buf + have, STS_POLICY_BODY_MAX + 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0) {
				free(buf);
				buf = NULL;
			}
			break;
		}
		have += (size_t)n;
	}
	close(fd);
	if (buf == NULL)
		return NULL;
	tlsrpt_policy_hash(buf, have, check);
	if (have > STS_POLICY_BODY_MAX || strcmp(check, hash) != 0) {
		free(buf);
		return NULL;
	}
	buf[have] = '\0';
	*len = have;
	return buf;
}

char *tlsrpt_policy_text_read(const char *spool_dir, const char *day, const char *hash, size_t *len)
{
	char dir[1300];

	if (!is_hash(hash))
		return NULL;
	snprintf(dir, sizeof(dir), "%s/tlsrpt/%s", spool_dir, day);
	return read_ptext(dir, hash, len);
}

/* The day's policy texts named by its groups (each read once). */
static int load_ptexts(struct tlsrpt_day *d, const char *spool_dir)
{
	char dir[1300], h[TLSRPT_POLICY_HASH_LEN + 8];
	size_t i;

	snprintf(dir, sizeof(dir), "%s/tlsrpt/%s", spool_dir, d->day);
	for (i = 0; i < d->n; i++) {
		struct ptext *nt;
		char *text;
		size_t len = 0;

		key_part(d->sorted[i].key, K_PHASH, h, sizeof(h));
		if (!is_hash(h) || ptext_find(d, h) != NULL)
			continue;
		text = read_ptext(dir, h, &len);
		if (text == NULL)
			continue; /* the policy-string is rebuilt instead */
		nt = realloc(d->ptexts, (d->nptexts + 1) * sizeof(*nt));
		if (nt == NULL) {
			free(text);
			return -1;
		}
		d->ptexts = nt;
		memcpy(nt[d->nptexts].hash, h, TLSRPT_POLICY_HASH_LEN + 1);
		nt[d->nptexts].text = text;
		nt[d->nptexts].len = len;
		d->nptexts++;
	}
	return 0;
}

int tlsrpt_day_load(const char *spool_dir, const char *day, struct tlsrpt_day **out, char *err,
		    size_t errlen)
{
	struct tlsrpt_day *d = day_new(day);
	char path[1300], *buf = NULL;
	size_t have = 0;
	int fd = -1;

	*out = NULL;
	if (d == NULL) {
		snprintf(err, errlen, "bad day '%s' (want YYYY-MM-DD)", day);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/tlsrpt/%s/sessions", spool_dir, day);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	buf = malloc(READ_CHUNK + LINE_MAX_LEN);
	if (buf == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	while (fd >= 0) {
		ssize_t n = read(fd, buf + have, READ_CHUNK + LINE_MAX_LEN - have);
		size_t used;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0) {
			if (have > 0)
				d->bad++; /* torn last line */
			break;
		}
		have += (size_t)n;
		if (feed(d, buf, have, &used) != 0) {
			snprintf(err, errlen, "out of memory or too many groups");
			goto fail;
		}
		if (used == 0 && have == READ_CHUNK + LINE_MAX_LEN) {
			/* a line longer than any we write: skip to its end */
			d->bad++;
			have = 0;
			continue;
		}
		memmove(buf, buf + used, have - used);
		have -= used;
	}
	if (finish(d) != 0 || load_ptexts(d, spool_dir) != 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	*out = d;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	tlsrpt_day_free(d);
	return -1;
}

void tlsrpt_day_free(struct tlsrpt_day *d)
{
	size_t i;

	if (d == NULL)
		return;
	for (i = 0; i < d->cap; i++)
		free(d->tab[i].key);
	free(d->tab);
	if (d->sorted != NULL)
		for (i = 0; i < d->n; i++)
			free(d->sorted[i].key);
	free(d->sorted);
	for (i = 0; i < d->ndomains; i++)
		free(d->domains[i]);
	free(d->domains);
	for (i = 0; i < d->nptexts; i++)
		free(d->ptexts[i].text);
	free(d->ptexts);
	free(d);
}

size_t tlsrpt_day_ndomains(const struct tlsrpt_day *d)
{
	return d->ndomains;
}

const char *tlsrpt_day_domain(const struct tlsrpt_day *d, size_t i)
{
	return i < d->ndomains ? d->domains[i] : NULL;
}

size_t tlsrpt_day_bad_lines(const struct tlsrpt_day *d)
{
	return d->bad;
}

const char *tlsrpt_submitter(const char *contact)
{
	const char *at = strrchr(contact, '@');

	return at != NULL && at[1] != '\0' ? at + 1 : contact;
}

int tlsrpt_report_id(const char *day, const char *domain, const char *submitter, char *buf,
		     size_t len)
{
	int n = snprintf(buf, len, "%s.%s@%s", day, domain, submitter);

	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Splits a key into its parts (pointers into a scratch copy). */
static size_t split_key(char *copy, const char *parts[K_COUNT])
{
	size_t n = 0;
	char *p = copy;

	while (n < K_COUNT) {
		char *s = strchr(p, SEP);

		parts[n++] = p;
		if (s == NULL)
			break;
		*s = '\0';
		p = s + 1;
	}
	return n;
}

static bool known(const char *s)
{
	return strcmp(s, "-") != 0;
}

/* json_object_set_new that reports failure (no memory) once at the end. */
static void put(json_t *o, const char *k, json_t *v, bool *ok)
{
	if (v == NULL || json_object_set_new(o, k, v) != 0)
		*ok = false;
}

/* The policy text's non-empty lines (CR removed), as published. NULL if a
 * line is not valid UTF-8 (then the caller rebuilds the lines). */
static json_t *text_lines(const struct ptext *t)
{
	json_t *arr = json_array();
	size_t i = 0;

	while (arr != NULL && i < t->len) {
		size_t j = i, k;

		while (j < t->len && t->text[j] != '\n')
			j++;
		k = j;
		if (k > i && t->text[k - 1] == '\r')
			k--;
		if (k > i && json_array_append_new(arr, json_stringn(t->text + i, k - i)) != 0) {
			json_decref(arr);
			return NULL;
		}
		i = j + 1;
	}
	return arr;
}

static json_t *policy_object(const struct tlsrpt_day *d, const char *parts[K_COUNT], bool *ok)
{
	json_t *p = json_object();
	char line[512];

	if (p == NULL) {
		*ok = false;
		return NULL;
	}
	if (strcmp(parts[K_PTYPE], "none") == 0) {
		put(p, "policy-type", json_string("no-policy-found"), ok);
		put(p, "policy-domain", json_string(parts[K_DOMAIN]), ok);
		return p;
	}
	if (strcmp(parts[K_PTYPE], "tlsa") == 0) {
		/* RFC 8460 §4.4: the TLSA records as strings; the MX host they
		 * belong to. No records (the lookup failed): an empty list. */
		const struct ptext *t = known(parts[K_PHASH]) ? ptext_find(d, parts[K_PHASH])
							      : NULL;
		json_t *lines = t != NULL ? text_lines(t) : json_array();

		put(p, "policy-type", json_string("tlsa"), ok);
		put(p, "policy-string", lines != NULL ? lines : json_array(), ok);
		put(p, "policy-domain", json_string(parts[K_DOMAIN]), ok);
		if (known(parts[K_MX]))
			put(p, "mx-host", json_pack("[s]", parts[K_MX]), ok);
		return p;
	}
	put(p, "policy-type", json_string("sts"), ok);
	if (known(parts[K_MODE])) {
		/* policy-string: the applied policy's own lines as fetched (RFC
		 * 8460 §4.4, Appendix B), extension fields and spelling kept;
		 * rebuilt in the canonical order of RFC 8461 §3.2 only when the
		 * day's copy of the text is missing (older data, a crash). */
		const struct ptext *t = known(parts[K_PHASH]) ? ptext_find(d, parts[K_PHASH])
							      : NULL;
		json_t *lines = t != NULL ? text_lines(t) : NULL, *mx = json_array();
		bool rebuild = lines == NULL;
		const char *m = parts[K_MX];

		if (rebuild)
			lines = json_array();
		if (lines == NULL || mx == NULL) {
			json_decref(lines);
			json_decref(mx);
			json_decref(p);
			*ok = false;
			return NULL;
		}
		if (rebuild) {
			json_array_append_new(lines, json_string("version: STSv1"));
			snprintf(line, sizeof(line), "mode: %s", parts[K_MODE]);
			json_array_append_new(lines, json_string(line));
		}
		while (known(m) && *m != '\0') {
			size_t l = strcspn(m, ",");
			char pat[300];

			if (l < sizeof(pat)) {
				memcpy(pat, m, l);
				pat[l] = '\0';
				snprintf(line, sizeof(line), "mx: %s", pat);
				if (rebuild)
					json_array_append_new(lines, json_string(line));
				json_array_append_new(mx, json_string(pat));
			}
			m += l + (m[l] == ',');
		}
		if (rebuild) {
			snprintf(line, sizeof(line), "max_age: %s", parts[K_MAXAGE]);
			json_array_append_new(lines, json_string(line));
		}
		put(p, "policy-string", lines, ok);
		put(p, "policy-domain", json_string(parts[K_DOMAIN]), ok);
		if (json_array_size(mx) > 0)
			put(p, "mx-host", mx, ok);
		else
			json_decref(mx);
	} else {
		put(p, "policy-domain", json_string(parts[K_DOMAIN]), ok);
	}
	return p;
}

/* The policy part of a key (everything before the result). */
static size_t policy_prefix_len(const char *key)
{
	size_t i, seps = 0;

	for (i = 0; key[i] != '\0'; i++)
		if (key[i] == SEP && ++seps == K_RESULT)
			return i;
	return i;
}

/* One "failure-details" entry (RFC 8460 §4.4) from a group's key parts. */
static json_t *failure_detail(const char *q[K_COUNT], uint64_t count, bool *ok)
{
	json_t *fd = json_object();

	if (fd == NULL)
		return NULL;
	put(fd, "result-type", json_string(q[K_RESULT]), ok);
	if (known(q[K_SIP]))
		put(fd, "sending-mta-ip", json_string(q[K_SIP]), ok);
	if (known(q[K_MXHOST]))
		put(fd, "receiving-mx-hostname", json_string(q[K_MXHOST]), ok);
	if (known(q[K_MXIP]))
		put(fd, "receiving-ip", json_string(q[K_MXIP]), ok);
	put(fd, "failed-session-count", json_integer((json_int_t)count), ok);
	if (known(q[K_REASON]))
		put(fd, "failure-reason-code", json_string(q[K_REASON]), ok);
	return fd;
}

/* Counts the groups from i on whose key starts with the same policy part
 * (plen bytes) into *succ and *fail, and their failure-details into
 * details. Returns the index after the last one taken (where a failure
 * stopped the walk, with *ok false). */
static size_t add_groups(const struct tlsrpt_day *d, size_t i, size_t plen, json_t *details,
			 uint64_t *succ, uint64_t *fail, bool *ok)
{
	const char *key = d->sorted[i].key;
	json_t *prev_fd = NULL;
	size_t j;

	for (j = i;
	     j < d->n && strncmp(d->sorted[j].key, key, plen) == 0 && d->sorted[j].key[plen] == SEP;
	     j++) {
		const char *q[K_COUNT] = { NULL };
		json_t *fd;
		char *copy;
		size_t np;

		/* failure-details are grouped by result type, sending IP, MX
		 * host and IP only (RFC 8460 §4.4): groups that differ just in
		 * the reason text are adjacent in key order and add up into
		 * one entry that keeps the first reason. */
		if (prev_fd != NULL && j > i &&
		    same_detail(d->sorted[j - 1].key, d->sorted[j].key)) {
			json_int_t c = json_integer_value(
				json_object_get(prev_fd, "failed-session-count"));

			c += (json_int_t)d->sorted[j].count;
			*fail += d->sorted[j].count;
			if (json_object_set_new(prev_fd, "failed-session-count", json_integer(c)) !=
			    0)
				*ok = false;
			continue;
		}

		copy = strdup(d->sorted[j].key);
		if (copy == NULL) {
			*ok = false;
			break;
		}
		np = split_key(copy, q);
		if (strcmp(q[K_RESULT], "success") == 0) {
			*succ += d->sorted[j].count;
			free(copy);
			continue;
		}
		*fail += d->sorted[j].count;
		fd = np == K_COUNT ? failure_detail(q, d->sorted[j].count, ok) : NULL;
		free(copy);
		if (fd == NULL) {
			*ok = false;
			break;
		}
		if (json_array_append_new(details, fd) != 0)
			*ok = false;
		prev_fd = fd;
	}
	return j;
}

/* One entry of "policies": the policy of group i, and the summary and
 * failure-details of every group sharing it. NULL if out of memory;
 * *next is the group to look at after them. */
static json_t *policy_entry(const struct tlsrpt_day *d, size_t i, size_t *next, bool *ok)
{
	const char *key = d->sorted[i].key;
	const char *parts[K_COUNT] = { NULL };
	uint64_t succ = 0, fail = 0;
	json_t *entry = json_object(), *summary = json_object(), *details = json_array();
	char *copy = strdup(key);
	size_t j;

	if (entry == NULL || summary == NULL || details == NULL || copy == NULL) {
		json_decref(entry);
		json_decref(summary);
		json_decref(details);
		free(copy);
		return NULL;
	}
	split_key(copy, parts);
	put(entry, "policy", policy_object(d, parts, ok), ok);
	free(copy);
	j = add_groups(d, i, policy_prefix_len(key), details, &succ, &fail, ok);
	put(summary, "total-successful-session-count", json_integer((json_int_t)succ), ok);
	put(summary, "total-failure-session-count", json_integer((json_int_t)fail), ok);
	put(entry, "summary", summary, ok);
	if (json_array_size(details) > 0)
		put(entry, "failure-details", details, ok);
	else
		json_decref(details);
	*next = j > i ? j : i + 1;
	return entry;
}

/* The report's fields before "policies" (RFC 8460 §4.3). */
static void put_report_meta(json_t *rep, const struct tlsrpt_day *d, const struct tlsrpt_meta *meta,
			    const char *rid, bool *ok)
{
	json_t *range = json_object();
	char start[32], end[32];

	clock_rfc3339(d->start, start, sizeof(start));
	clock_rfc3339(d->start + 86399, end, sizeof(end));
	put(rep, "organization-name", json_string(meta->org_name), ok);
	if (range != NULL) {
		put(range, "start-datetime", json_string(start), ok);
		put(range, "end-datetime", json_string(end), ok);
	}
	put(rep, "date-range", range, ok);
	put(rep, "contact-info", json_string(meta->contact), ok);
	put(rep, "report-id", json_string(rid), ok);
}

json_t *tlsrpt_report_build(const struct tlsrpt_day *d, const char *domain,
			    const struct tlsrpt_meta *meta)
{
	json_t *rep = NULL, *policies = NULL;
	char rid[600];
	const char *submitter = tlsrpt_submitter(meta->contact);
	size_t dl = strlen(domain), i;
	bool ok = true;

	if (tlsrpt_report_id(d->day, domain, submitter, rid, sizeof(rid)) != 0)
		return NULL;
	rep = json_object();
	policies = json_array();
	if (rep == NULL || policies == NULL)
		goto fail;
	put_report_meta(rep, d, meta, rid, &ok);
	i = 0;
	while (i < d->n) {
		const char *key = d->sorted[i].key;
		json_t *entry;

		if (strncmp(key, domain, dl) != 0 || key[dl] != SEP) {
			i++;
			continue;
		}
		entry = policy_entry(d, i, &i, &ok);
		if (entry == NULL)
			goto fail;
		if (json_array_append_new(policies, entry) != 0)
			ok = false;
	}
	if (json_array_size(policies) == 0)
		goto fail;
	put(rep, "policies", policies, &ok);
	policies = NULL;
	if (!ok)
		goto fail;
	return rep;
fail:
	json_decref(rep);
	json_decref(policies);
	return NULL;
}

/* ---- groups, for the fleet ---- */

size_t tlsrpt_day_ngroups(const struct tlsrpt_day *d)
{
	return d->sorted != NULL ? d->n : 0;
}

const char *tlsrpt_day_group(const struct tlsrpt_day *d, size_t i, uint64_t *count)
{
	if (d->sorted == NULL || i >= d->n)
		return NULL;
	if (count != NULL)
		*count = d->sorted[i].count;
	return d->sorted[i].key;
}

int tlsrpt_group_domain(const char *key, char *out, size_t len)
{
	size_t n = strcspn(key, "\x1f");

	if (n == 0 || n >= len)
		return -1;
	memcpy(out, key, n);
	out[n] = '\0';
	return 0;
}

int tlsrpt_group_policy_hash(const char *key, char out[TLSRPT_POLICY_HASH_LEN + 1])
{
	char h[TLSRPT_POLICY_HASH_LEN + 8];

	key_part(key, K_PHASH, h, sizeof(h));
	if (!is_hash(h))
		return -1;
	memcpy(out, h, TLSRPT_POLICY_HASH_LEN + 1);
	return 0;
}

/* A key as take_line() builds it: the parts of a success (up to the
 * result) or of a failure (all), each printable, in their formats. */
static bool group_valid(const char *key)
{
	const char *q[K_COUNT] = { NULL };
	enum smtp_tls_result res;
	char *copy;
	size_t np, i;
	bool ok = false;

	if (strlen(key) > LINE_MAX_LEN)
		return false;
	copy = strdup(key);
	if (copy == NULL)
		return false;
	np = split_key(copy, q);
	if ((np != K_SIP && np != K_COUNT) || strchr(q[np - 1], SEP) != NULL)
		goto out;
	for (i = 0; i < np; i++)
		if (!field_ok(q[i]))
			goto out;
	if (!parts_valid(q, &res) || (res == SMTP_TLS_RESULT_SUCCESS) != (np == K_SIP))
		goto out;
	ok = true;
out:
	free(copy);
	return ok;
}

int tlsrpt_day_from_groups(const char *day, const char *const *keys, const uint64_t *counts,
			   size_t n, struct tlsrpt_day **out)
{
	struct tlsrpt_day *d = day_new(day);
	size_t i;

	*out = NULL;
	if (d == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		if (!group_valid(keys[i])) {
			d->bad++;
			continue;
		}
		if (counts[i] == 0)
			continue;
		if (tab_add(d, keys[i], counts[i]) != 0)
			goto fail;
	}
	if (finish(d) != 0)
		goto fail;
	*out = d;
	return 0;
fail:
	tlsrpt_day_free(d);
	return -1;
}

int tlsrpt_day_add_policy_text(struct tlsrpt_day *d, const char *hash, const char *text, size_t len)
{
	char check[TLSRPT_POLICY_HASH_LEN + 1];
	struct ptext *nt;
	char *copy;

	if (len > STS_POLICY_BODY_MAX)
		return -1;
	tlsrpt_policy_hash(text, len, check);
	if (strcmp(check, hash) != 0)
		return -1;
	if (ptext_find(d, hash) != NULL)
		return 0;
	copy = malloc(len + 1);
	if (copy == NULL)
		return -1;
	memcpy(copy, text, len);
	copy[len] = '\0';
	nt = realloc(d->ptexts, (d->nptexts + 1) * sizeof(*nt));
	if (nt == NULL) {
		free(copy);
		return -1;
	}
	d->ptexts = nt;
	memcpy(nt[d->nptexts].hash, hash, TLSRPT_POLICY_HASH_LEN + 1);
	nt[d->nptexts].text = copy;
	nt[d->nptexts].len = len;
	d->nptexts++;
	return 0;
}
