/* The tls_policy_file parser (bounded lines, every mistake named by FILE:LINE),
 * its loader, and the lookup by exact domain, then by nearest ".parent" entry. */
#include "relay/core/tls_policy.h"

#include "relay/core/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[TLS_LEVEL_COUNT] = {
	[TLS_LEVEL_NONE] = "none",     [TLS_LEVEL_MAY] = "may",   [TLS_LEVEL_ENCRYPT] = "encrypt",
	[TLS_LEVEL_VERIFY] = "verify", [TLS_LEVEL_DANE] = "dane", [TLS_LEVEL_STS_ONLY] = "sts-only",
};

const char *tls_level_name(enum tls_level l)
{
	return (unsigned)l < TLS_LEVEL_COUNT ? level_names[l] : "unknown";
}

int tls_level_parse(const char *s, enum tls_level *out)
{
	for (unsigned i = 0; i < TLS_LEVEL_COUNT; i++)
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum tls_level)i;
			return 0;
		}
	return -1;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The domain field into e->domain (lower case, trailing dot removed). */
static const char *take_domain(const char *f, size_t n, char *out)
{
	size_t i, o = 0, start = 0;

	if (n > 0 && f[n - 1] == '.')
		n--;
	if (n > 0 && f[0] == '.') {
		out[o++] = '.';
		start = 1;
	}
	if (n <= start)
		return "empty domain";
	if (f[n - 1] == '.')
		return "not a domain name (empty label)"; /* "a.example.." */
	if (n - start > TLS_POLICY_DOMAIN_MAX)
		return "domain longer than 253 characters";
	for (i = start; i < n; i++) {
		char c = f[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.'))
			return "not a domain name";
		if (c == '.' && (i == start || f[i - 1] == '.'))
			return "not a domain name (empty label)";
		out[o++] = c;
	}
	out[o] = '\0';
	return NULL;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct tls_policy_entry *)a)->domain,
		      ((const struct tls_policy_entry *)b)->domain);
}

/* One line (without its end of line); *e filled when it has an entry.
 * 1 entry, 0 nothing, -1 error (why). */
static int parse_line(const char *l, size_t n, struct tls_policy_entry *e, const char **why)
{
	const char *f[3];
	size_t fl[3], nf = 0, i = 0;
	char level[32];

	for (size_t k = 0; k < n; k++)
		if (l[k] == '#') {
			n = k;
			break;
		}
	while (i < n) {
		size_t s;

		while (i < n && blank(l[i]))
			i++;
		if (i >= n)
			break;
		s = i;
		while (i < n && !blank(l[i]))
			i++;
		if (nf == 3)
			break;
		f[nf] = l + s;
		fl[nf++] = i - s;
	}
	if (nf == 0)
		return 0;
	if (nf == 1) {
		*why = "a domain needs a level (none, may, encrypt, verify, dane or sts-only)";
		return -1;
	}
	if (nf > 2) {
		*why = "more than two fields (domain level)";
		return -1;
	}
	for (i = 0; i < fl[0] + fl[1]; i++) {
		unsigned char c = (unsigned char)(i < fl[0] ? f[0][i] : f[1][i - fl[0]]);

		if (c < 0x21 || c > 0x7e) {
			*why = "control or non-ASCII character";
			return -1;
		}
	}
	*why = take_domain(f[0], fl[0], e->domain);
	if (*why != NULL)
		return -1;
	if (fl[1] >= sizeof(level)) {
		*why = "unknown level (none, may, encrypt, verify, dane or sts-only)";
		return -1;
	}
	memcpy(level, f[1], fl[1]);
	level[fl[1]] = '\0';
	if (tls_level_parse(level, &e->level) != 0) {
		*why = "unknown level (none, may, encrypt, verify, dane or sts-only)";
		return -1;
	}
	return 1;
}

int tls_policy_parse(const char *buf, size_t len, const char *fname, struct tls_policy **out,
		     char *err, size_t errlen)
{
	struct tls_policy *p = calloc(1, sizeof(*p));
	size_t cap = 0, pos = 0, i;
	unsigned line = 0;
	const char *why = NULL;

	*out = NULL;
	if (p == NULL) {
		snprintf(err, errlen, "%s: out of memory", fname);
		return -1;
	}
	while (pos < len) {
		const char *l = buf + pos, *nl = memchr(l, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - l) : len - pos;
		struct tls_policy_entry e;
		int rc;

		pos += n + (nl != NULL);
		line++;
		if (n > 0 && l[n - 1] == '\r')
			n--;
		if (n > TLS_POLICY_LINE_MAX) {
			why = "line longer than 1024 characters";
			goto bad;
		}
		if (memchr(l, '\0', n) != NULL) {
			why = "NUL byte";
			goto bad;
		}
		memset(&e, 0, sizeof(e));
		rc = parse_line(l, n, &e, &why);
		if (rc < 0)
			goto bad;
		if (rc == 0)
			continue;
		if (p->n >= TLS_POLICY_MAX_ENTRIES) {
			why = "more than 100000 entries";
			goto bad;
		}
		if (p->n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct tls_policy_entry *ne = realloc(p->e, nc * sizeof(*ne));

			if (ne == NULL) {
				why = "out of memory";
				goto bad;
			}
			p->e = ne;
			cap = nc;
		}
		e.line = line;
		p->e[p->n++] = e;
	}
	if (p->n > 1)
		qsort(p->e, p->n, sizeof(*p->e), cmp_entry);
	for (i = 1; i < p->n; i++)
		if (strcmp(p->e[i - 1].domain, p->e[i].domain) == 0) {
			snprintf(err, errlen, "%s:%u: %s listed again (first on line %u)", fname,
				 p->e[i].line > p->e[i - 1].line ? p->e[i].line : p->e[i - 1].line,
				 p->e[i].domain,
				 p->e[i].line > p->e[i - 1].line ? p->e[i - 1].line : p->e[i].line);
			tls_policy_free(p);
			return -1;
		}
	*out = p;
	return 0;
bad:
	snprintf(err, errlen, "%s:%u: %s", fname, line, why);
	tls_policy_free(p);
	return -1;
}

int tls_policy_load(const char *path, struct tls_policy **out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if (core_fs_read_file(path, TLS_POLICY_FILE_MAX, &buf, &len) != 0) {
		if (errno == EFBIG)
			snprintf(err, errlen, "%s: larger than 16 MiB", path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	rc = tls_policy_parse(buf, len, path, out, err, errlen);
	free(buf);
	return rc;
}

void tls_policy_free(struct tls_policy *p)
{
	if (p == NULL)
		return;
	free(p->e);
	free(p);
}

static const struct tls_policy_entry *find(const struct tls_policy *p, const char *key)
{
	struct tls_policy_entry k;

	snprintf(k.domain, sizeof(k.domain), "%s", key);
	return bsearch(&k, p->e, p->n, sizeof(*p->e), cmp_entry);
}

bool tls_policy_lookup(const struct tls_policy *p, const char *domain, enum tls_level *level)
{
	char d[TLS_POLICY_DOMAIN_MAX + 2];
	const struct tls_policy_entry *e;
	size_t n, i;

	if (p == NULL || p->n == 0 || domain == NULL)
		return false;
	n = strlen(domain);
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n == 0 || n > TLS_POLICY_DOMAIN_MAX)
		return false;
	for (i = 0; i < n; i++)
		d[i] = (char)(domain[i] >= 'A' && domain[i] <= 'Z' ? domain[i] - 'A' + 'a'
								   : domain[i]);
	d[n] = '\0';
	e = find(p, d);
	/* then ".parent" for each parent, nearest first: ".b.c", ".c" */
	for (i = 0; e == NULL && i < n; i++)
		if (d[i] == '.')
			e = find(p, d + i);
	if (e == NULL)
		return false;
	*level = e->level;
	return true;
}
