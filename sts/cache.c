/* MTA-STS policy cache: a chained hash of per-domain entries in memory and
 * one small file per policy on disk, written temp + fsync + rename + dir fsync. */
#define LOG_COMPONENT LOG_C_SMTP /* program name in logs, see relay/core/log.h */
#include "sts/cache.h"
#include "relay/core/fs.h"
#include "relay/core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_MAGIC "STSRELAY-STS-CACHE 1\n"
#define CACHE_HEADER_MAX 512
#define CACHE_FILE_MAX (CACHE_HEADER_MAX + STS_POLICY_BODY_MAX)
#define CACHE_PATH_MAX 4096

struct sts_cache {
	char *dir; /* NULL: memory only */
	bool persist;
	struct sts_cache_entry **buckets;
	size_t nbuckets;
	size_t count;
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	while (*s != '\0') {
		h ^= (unsigned char)*s++;
		h *= 1099511628211ull;
	}
	return h;
}

int sts_cache_new(const char *dir, bool persist, struct sts_cache **out)
{
	struct sts_cache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return -1;
	c->nbuckets = 64;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (c->buckets == NULL)
		goto fail;
	if (dir != NULL) {
		c->dir = strdup(dir);
		if (c->dir == NULL)
			goto fail;
		c->persist = persist;
		if (persist && mkdir(dir, 0700) != 0 && errno != EEXIST) {
			log_error("sts cache: cannot create %s: %s", dir, strerror(errno));
			goto fail;
		}
	}
	*out = c;
	return 0;
fail:
	free(c->buckets);
	free(c->dir);
	free(c);
	return -1;
}

void sts_cache_free(struct sts_cache *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < c->nbuckets; i++) {
		struct sts_cache_entry *e = c->buckets[i], *n;

		for (; e != NULL; e = n) {
			n = e->hnext;
			free(e->text);
			free(e);
		}
	}
	free(c->buckets);
	free(c->dir);
	free(c);
}

struct sts_cache_entry *sts_cache_get(struct sts_cache *c, const char *domain)
{
	struct sts_cache_entry *e = c->buckets[hash_name(domain) % c->nbuckets];

	for (; e != NULL; e = e->hnext)
		if (strcmp(e->domain, domain) == 0)
			return e;
	return NULL;
}

static void grow(struct sts_cache *c)
{
	size_t nb = c->nbuckets * 2, i;
	struct sts_cache_entry **b = calloc(nb, sizeof(*b));

	if (b == NULL)
		return; /* longer chains, still correct */
	for (i = 0; i < c->nbuckets; i++) {
		struct sts_cache_entry *e = c->buckets[i], *n;

		for (; e != NULL; e = n) {
			size_t h = hash_name(e->domain) % nb;

			n = e->hnext;
			e->hnext = b[h];
			b[h] = e;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = nb;
}

struct sts_cache_entry *sts_cache_touch(struct sts_cache *c, const char *domain)
{
	struct sts_cache_entry *e = sts_cache_get(c, domain);
	size_t h;

	if (e != NULL)
		return e;
	if (strlen(domain) > STS_DOMAIN_MAX)
		return NULL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return NULL;
	snprintf(e->domain, sizeof(e->domain), "%s", domain);
	if (c->count >= c->nbuckets * 2)
		grow(c);
	h = hash_name(domain) % c->nbuckets;
	e->hnext = c->buckets[h];
	c->buckets[h] = e;
	c->count++;
	return e;
}

/* ---- file format ---- */

int sts_cache_format(const struct sts_cache_entry *e, char **buf, size_t *len)
{
	char hdr[CACHE_HEADER_MAX];
	int n;
	char *b;

	n = snprintf(hdr, sizeof(hdr),
		     CACHE_MAGIC "domain %s\nid %s\nfetched_at %" PRId64 "\nexpires_at %" PRId64
				 "\nlength %zu\n\n",
		     e->domain, e->id, e->fetched_at, e->expires_at, e->text_len);
	if (n < 0 || (size_t)n >= sizeof(hdr) || e->text_len > STS_POLICY_BODY_MAX)
		return -1;
	b = malloc((size_t)n + e->text_len + 1);
	if (b == NULL)
		return -1;
	memcpy(b, hdr, (size_t)n);
	if (e->text_len > 0)
		memcpy(b + n, e->text, e->text_len);
	b[(size_t)n + e->text_len] = '\0';
	*buf = b;
	*len = (size_t)n + e->text_len;
	return 0;
}

/* Reads "KEY VALUE\n" at *p; value copied into val (NUL-terminated). */
static int header_line(const char **p, const char *end, const char *key, char *val, size_t vlen)
{
	size_t klen = strlen(key);
	const char *nl;
	size_t n;

	if ((size_t)(end - *p) < klen + 1 || memcmp(*p, key, klen) != 0 || (*p)[klen] != ' ')
		return -1;
	*p += klen + 1;
	nl = memchr(*p, '\n', (size_t)(end - *p));
	if (nl == NULL)
		return -1;
	n = (size_t)(nl - *p);
	if (n == 0 || n >= vlen || memchr(*p, '\0', n) != NULL)
		return -1;
	memcpy(val, *p, n);
	val[n] = '\0';
	*p = nl + 1;
	return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
	int64_t v = 0;

	if (*s == '\0' || strlen(s) > 18)
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
	}
	*out = v;
	return 0;
}

int sts_cache_parse(const void *buf, size_t len, struct sts_cache_entry *out, char *err,
		    size_t errlen)
{
	const char *p = buf, *end = p + len;
	char domain[STS_DOMAIN_MAX + 2], norm[STS_DOMAIN_MAX + 1], id[STS_TXT_ID_MAX + 2];
	char num[32];
	int64_t fetched, expires, length;
	struct sts_policy *pol = NULL;
	struct sts_txt txt;
	char idrec[64];
	size_t mlen = strlen(CACHE_MAGIC);

#define BAD(msg)                                  \
	do {                                      \
		snprintf(err, errlen, "%s", msg); \
		goto fail;                        \
	} while (0)

	if (len < mlen || memcmp(p, CACHE_MAGIC, mlen) != 0)
		BAD("not a policy cache file (bad first line)");
	p += mlen;
	if (header_line(&p, end, "domain", domain, sizeof(domain)) != 0 ||
	    !sts_domain_normalize(domain, strlen(domain), norm, sizeof(norm)) ||
	    strcmp(norm, domain) != 0)
		BAD("bad domain line");
	/* The id must be what a TXT record may carry: reuse the TXT parser. */
	if (header_line(&p, end, "id", id, sizeof(id)) != 0)
		BAD("bad id line");
	snprintf(idrec, sizeof(idrec), "v=STSv1; id=%s", id);
	if (sts_txt_parse_one(idrec, strlen(idrec), &txt) != STS_TXT_FOUND ||
	    strcmp(txt.id, id) != 0)
		BAD("bad id");
	if (header_line(&p, end, "fetched_at", num, sizeof(num)) != 0 ||
	    parse_i64(num, &fetched) != 0)
		BAD("bad fetched_at line");
	if (header_line(&p, end, "expires_at", num, sizeof(num)) != 0 ||
	    parse_i64(num, &expires) != 0 || expires < fetched ||
	    expires - fetched > (int64_t)STS_POLICY_MAX_AGE_MAX)
		BAD("bad expires_at line");
	if (header_line(&p, end, "length", num, sizeof(num)) != 0 || parse_i64(num, &length) != 0 ||
	    length > STS_POLICY_BODY_MAX)
		BAD("bad length line");
	if (p >= end || *p != '\n')
		BAD("no blank line after the header");
	p++;
	if ((int64_t)(end - p) != length)
		BAD("policy text length does not match (truncated file?)");
	pol = malloc(sizeof(*pol));
	if (pol == NULL)
		BAD("out of memory");
	if (sts_policy_parse(p, (size_t)length, pol, NULL) != 0)
		BAD("stored policy text does not parse");
	if ((int64_t)pol->max_age != expires - fetched)
		BAD("expires_at does not match the policy's max_age");
	memset(out, 0, sizeof(*out));
	out->text = malloc((size_t)length + 1);
	if (out->text == NULL)
		BAD("out of memory");
	memcpy(out->text, p, (size_t)length);
	out->text[length] = '\0';
	out->text_len = (size_t)length;
	snprintf(out->domain, sizeof(out->domain), "%s", domain);
	snprintf(out->id, sizeof(out->id), "%s", id);
	out->has_policy = true;
	out->fetched_at = fetched;
	out->expires_at = expires;
	out->mode = pol->mode;
	out->max_age = pol->max_age;
	free(pol);
	return 0;
fail:
	free(pol);
	return -1;
#undef BAD
}

/* ---- disk ---- */

static int file_path(const struct sts_cache *c, const char *name, const char *suffix, char *out,
		     size_t outlen)
{
	int n = snprintf(out, outlen, "%s/%s%s", c->dir, name, suffix);

	return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

/* Through core_fs: the temporary file .NAME.tmp.PID sits in the same
 * directory (rename is atomic only within one file system), and its
 * leading dot keeps it out of the *.policy scan. */
static int write_file(const struct sts_cache *c, const struct sts_cache_entry *e)
{
	char path[CACHE_PATH_MAX], name[STS_DOMAIN_MAX + sizeof(STS_CACHE_SUFFIX) + 1];
	char *buf = NULL;
	size_t len;
	int n, rc;

	n = snprintf(name, sizeof(name), "%s%s", e->domain, STS_CACHE_SUFFIX);
	if (n < 0 || (size_t)n >= sizeof(name) ||
	    file_path(c, e->domain, STS_CACHE_SUFFIX, path, sizeof(path)) != 0)
		return -1;
	if (sts_cache_format(e, &buf, &len) != 0)
		return -1;
	rc = core_fs_write_atomic(c->dir, name, buf, len, 0600);
	if (rc != 0)
		log_error("sts cache: cannot write %s: %s", path, strerror(errno));
	free(buf);
	return rc;
}

int sts_cache_store(struct sts_cache *c, const char *domain, const char *id, int64_t fetched_at,
		    const void *text, size_t len)
{
	struct sts_cache_entry *e;
	struct sts_policy *pol;
	char *copy;

	if (len > STS_POLICY_BODY_MAX || strlen(id) > STS_TXT_ID_MAX)
		return -1;
	pol = malloc(sizeof(*pol));
	if (pol == NULL)
		return -1;
	if (sts_policy_parse(text, len, pol, NULL) != 0) {
		free(pol);
		return -1;
	}
	copy = malloc(len + 1);
	e = sts_cache_touch(c, domain);
	if (copy == NULL || e == NULL) {
		free(copy);
		free(pol);
		return -1;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	free(e->text);
	e->text = copy;
	e->text_len = len;
	e->has_policy = true;
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->fetched_at = fetched_at;
	e->expires_at = fetched_at + (int64_t)pol->max_age;
	e->mode = pol->mode;
	e->max_age = pol->max_age;
	free(pol);
	if (c->dir != NULL && c->persist && write_file(c, e) != 0)
		return 1;
	return 0;
}

void sts_cache_drop(struct sts_cache *c, const char *domain)
{
	struct sts_cache_entry *e = sts_cache_get(c, domain);
	char path[CACHE_PATH_MAX];

	if (e == NULL || !e->has_policy)
		return;
	free(e->text);
	e->text = NULL;
	e->text_len = 0;
	e->has_policy = false;
	e->id[0] = '\0';
	e->refresh_at = 0;
	if (c->dir != NULL && c->persist &&
	    file_path(c, domain, STS_CACHE_SUFFIX, path, sizeof(path)) == 0) {
		if (unlink(path) != 0 && errno != ENOENT)
			log_warn("sts cache: cannot remove %s: %s", path, strerror(errno));
		else if (core_fs_fsync_dir(c->dir) != 0)
			/* the removal holds until a crash; after one the dropped
			 * policy may be back, as if this call had not happened */
			log_warn("sts cache: removal of %s not durable: %s", path, strerror(errno));
	}
}

static int read_file(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	char *b = NULL;
	size_t got = 0;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CACHE_FILE_MAX) {
		errno = EFBIG;
		goto fail;
	}
	b = malloc((size_t)st.st_size + 1);
	if (b == NULL)
		goto fail;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		got += (size_t)n;
	}
	close(fd);
	*buf = b;
	*len = got;
	return 0;
fail:
	free(b);
	close(fd);
	return -1;
}

int sts_cache_load(struct sts_cache *c, size_t *nloaded, size_t *nbad)
{
	DIR *d;
	struct dirent *de;
	size_t ok = 0, bad = 0, slen = strlen(STS_CACHE_SUFFIX);

	if (nloaded)
		*nloaded = 0;
	if (nbad)
		*nbad = 0;
	if (c->dir == NULL)
		return 0;
	d = opendir(c->dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		size_t nlen = strlen(name);
		char path[CACHE_PATH_MAX], err[128], fname[STS_DOMAIN_MAX + 1];
		struct sts_cache_entry tmp, *e;
		char *buf = NULL;
		size_t len;

		if (name[0] == '.' || nlen <= slen ||
		    strcmp(name + nlen - slen, STS_CACHE_SUFFIX) != 0)
			continue;
		if (file_path(c, name, "", path, sizeof(path)) != 0)
			continue;
		if (read_file(path, &buf, &len) != 0) {
			log_warn("sts cache: ignoring %s: %s", path, strerror(errno));
			bad++;
			continue;
		}
		if (sts_cache_parse(buf, len, &tmp, err, sizeof(err)) != 0) {
			log_warn("sts cache: ignoring corrupt %s: %s", path, err);
			free(buf);
			bad++;
			continue;
		}
		free(buf);
		snprintf(fname, sizeof(fname), "%.*s", (int)(nlen - slen), name);
		if (strcmp(fname, tmp.domain) != 0) {
			log_warn("sts cache: ignoring %s: it holds the policy of %s", path,
				 tmp.domain);
			free(tmp.text);
			bad++;
			continue;
		}
		e = sts_cache_touch(c, tmp.domain);
		if (e == NULL) {
			free(tmp.text);
			closedir(d);
			return -1;
		}
		free(e->text);
		e->text = tmp.text;
		e->text_len = tmp.text_len;
		e->has_policy = true;
		memcpy(e->id, tmp.id, sizeof(e->id));
		e->fetched_at = tmp.fetched_at;
		e->expires_at = tmp.expires_at;
		e->mode = tmp.mode;
		e->max_age = tmp.max_age;
		ok++;
	}
	closedir(d);
	if (nloaded)
		*nloaded = ok;
	if (nbad)
		*nbad = bad;
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	const struct sts_cache_entry *x = *(struct sts_cache_entry *const *)a;
	const struct sts_cache_entry *y = *(struct sts_cache_entry *const *)b;

	return strcmp(x->domain, y->domain);
}

int sts_cache_list(struct sts_cache *c, struct sts_cache_entry ***out, size_t *n)
{
	struct sts_cache_entry **arr;
	size_t i, k = 0;

	arr = calloc(c->count + 1, sizeof(*arr));
	if (arr == NULL)
		return -1;
	for (i = 0; i < c->nbuckets; i++) {
		struct sts_cache_entry *e = c->buckets[i];

		for (; e != NULL; e = e->hnext)
			if (e->has_policy)
				arr[k++] = e;
	}
	qsort(arr, k, sizeof(*arr), cmp_entry);
	*out = arr;
	*n = k;
	return 0;
}

void sts_cache_foreach(struct sts_cache *c, void (*fn)(void *arg, struct sts_cache_entry *e),
		       void *arg)
{
	size_t i;

	for (i = 0; i < c->nbuckets; i++) {
		struct sts_cache_entry *e = c->buckets[i];

		for (; e != NULL; e = e->hnext)
			fn(arg, e);
	}
}
