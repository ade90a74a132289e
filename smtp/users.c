/* auth_users_file: parsed in place from one copy of the file's bytes into a
 * sorted, reference-counted table; crypt(3) for checking and making hashes. */
#include "smtp/users.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "relay/core/fs.h"
#include "smtp/address.h"

struct smtp_users {
	unsigned refs;
	char *text;              /* the file's bytes, split in place */
	size_t text_size;        /* bytes allocated for text (wiped at the end) */
	struct smtp_user *users; /* sorted by name */
	size_t nusers;
	const char **senders; /* every user's patterns, back to back */
};

/* Checked when the name is unknown, so that a miss costs what a hit costs:
 * a yescrypt hash (libcrypt's default cost) of a password nobody knows. */
static const char DUMMY_HASH[] =
	"$y$j9T$pv2XEnWzQF90nKzaFfIbR.$YfjSblBg9id.hgNqlGc4kfDRoA1/tnH8Z72qZFlJ8S.";

const char *smtp_users_check_name(const char *name)
{
	size_t n = strlen(name), i;

	if (n == 0)
		return "empty user name";
	if (n > SMTP_USERS_NAME_MAX)
		return "user name longer than 255 characters";
	if (name[0] == '#')
		return "user name starts with '#'";
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c <= 0x20 || c >= 0x7f || c == ':' || c == ',')
			return "user name holds a character other than printable ASCII "
			       "without ':', ',' and blanks";
	}
	return NULL;
}

const char *smtp_users_check_pattern(const char *p)
{
	char probe[SMTP_PATH_MAX + 2];

	if (strlen(p) > SMTP_PATH_MAX)
		return "sender pattern longer than 256 characters";
	/* "*@domain": the domain must be one an address could have */
	if (p[0] == '*' && p[1] == '@') {
		snprintf(probe, sizeof(probe), "x%s", p + 1);
		p = probe;
	}
	if (strchr(p, '@') == NULL || smtp_address_valid(p) != 0)
		return "sender pattern is neither *@DOMAIN nor an address local@DOMAIN";
	return NULL;
}

static const char *check_hash(const char *h)
{
	size_t i, n = strlen(h), want;
	const char *last;

	if (strncmp(h, "$y$", 3) != 0 && strncmp(h, "$6$", 3) != 0)
		return "password hash is neither yescrypt ($y$...) nor sha512-crypt ($6$...) "
		       "(make one with `stsrelay user add`)";
	if (n > SMTP_USERS_HASH_MAX)
		return "password hash longer than 255 characters";
	for (i = 0; i < n; i++)
		if (h[i] <= 0x20 || h[i] >= 0x7f || h[i] == ',')
			return "password hash holds a character crypt(3) never writes";
	/* checksalt judges the setting; the digest after the last '$' must
	 * be there too, in its scheme's length (a bare setting would make
	 * every password fail without a word) */
	last = strrchr(h, '$');
	want = h[1] == 'y' ? 43 : 86;
	if (crypt_checksalt(h) != CRYPT_SALT_OK || strlen(last + 1) != want ||
	    strspn(last + 1, "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") !=
		    want)
		return "password hash is not one libcrypt accepts";
	return NULL;
}

const char *smtp_users_scheme(const char *hash)
{
	return strncmp(hash, "$6$", 3) == 0 ? "sha512-crypt" : "yescrypt";
}

static int cmp_user(const void *a, const void *b)
{
	return strcmp(((const struct smtp_user *)a)->name, ((const struct smtp_user *)b)->name);
}

static char *trim_blanks(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	return s;
}

/* Splits one line (NUL-terminated, in the table's text) into u; the
 * pattern pointers go to senders[*nsend...]. 0, or -1 with a reason. */
static int parse_user(char *line, struct smtp_user *u, const char **senders, size_t *nsend,
		      size_t maxsend, const char **why)
{
	char *name = line, *hash, *pats, *p;

	hash = strchr(name, ':');
	if (hash == NULL) {
		*why = "expected name:hash[:sender-pattern,...]";
		return -1;
	}
	*hash++ = '\0';
	pats = strchr(hash, ':');
	if (pats != NULL)
		*pats++ = '\0';
	name = trim_blanks(name);
	hash = trim_blanks(hash);
	if ((*why = smtp_users_check_name(name)) != NULL || (*why = check_hash(hash)) != NULL)
		return -1;
	u->name = name;
	u->hash = hash;
	u->senders = senders + *nsend;
	u->nsenders = 0;
	if (pats == NULL)
		return 0;
	if (strchr(pats, ':') != NULL) {
		*why = "more than three ':'-separated fields";
		return -1;
	}
	for (p = pats; p != NULL;) {
		char *comma = strchr(p, ',');
		char *pat;

		if (comma != NULL)
			*comma = '\0';
		pat = trim_blanks(p);
		p = comma != NULL ? comma + 1 : NULL;
		if (pat[0] == '\0') {
			if (u->nsenders == 0 && p == NULL)
				return 0; /* "name:hash:" - no patterns */
			*why = "empty sender pattern";
			return -1;
		}
		if ((*why = smtp_users_check_pattern(pat)) != NULL)
			return -1;
		if (u->nsenders == SMTP_USERS_SENDERS_MAX || *nsend == maxsend) {
			*why = "more than 64 sender patterns";
			return -1;
		}
		senders[(*nsend)++] = pat;
		u->nsenders++;
	}
	return 0;
}

static struct smtp_users *users_alloc(size_t len, size_t nlines)
{
	struct smtp_users *u = calloc(1, sizeof(*u));

	if (u == NULL)
		return NULL;
	u->refs = 1;
	u->text = malloc(len + 1);
	u->text_size = u->text != NULL ? len + 1 : 0;
	u->users = calloc(nlines ? nlines : 1, sizeof(*u->users));
	/* a pattern takes at least 4 bytes ("*@x,"), so len / 4 + 1 bound them */
	u->senders = calloc(len / 4 + 1, sizeof(*u->senders));
	if (u->text == NULL || u->users == NULL || u->senders == NULL) {
		smtp_users_unref(u);
		return NULL;
	}
	return u;
}

int smtp_users_parse(const char *buf, size_t len, const char *fname, struct smtp_users **out,
		     char *err, size_t errlen)
{
	struct smtp_users *u = NULL;
	size_t nlines = 1, nsend = 0, i, pos = 0;
	unsigned lineno = 0;
	const char *why = NULL;

	*out = NULL;
	if (len > SMTP_USERS_FILE_MAX) {
		snprintf(err, errlen, "%s: larger than %d bytes", fname, SMTP_USERS_FILE_MAX);
		return -1;
	}
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen, "%s: NUL byte in the file", fname);
		return -1;
	}
	for (i = 0; i < len; i++)
		nlines += buf[i] == '\n';
	u = users_alloc(len, nlines);
	if (u == NULL) {
		snprintf(err, errlen, "%s: out of memory", fname);
		return -1;
	}
	memcpy(u->text, buf, len);
	u->text[len] = '\0';
	while (pos < len) {
		char *s = u->text + pos, *nl = strchr(s, '\n'), *t;
		size_t n = nl != NULL ? (size_t)(nl - s) : len - pos;

		lineno++;
		pos += n + (nl != NULL);
		s[n] = '\0';
		if (n > 0 && s[n - 1] == '\r')
			s[--n] = '\0';
		for (t = s; *t != '\0'; t++)
			if ((unsigned char)*t < 0x20 && *t != '\t') {
				why = "control character in line";
				goto bad;
			}
		t = trim_blanks(s);
		if (t[0] == '\0' || t[0] == '#')
			continue;
		if (parse_user(t, &u->users[u->nusers], u->senders, &nsend, len / 4 + 1, &why) != 0)
			goto bad;
		u->users[u->nusers++].line = lineno;
	}
	qsort(u->users, u->nusers, sizeof(*u->users), cmp_user);
	for (i = 1; i < u->nusers; i++)
		if (strcmp(u->users[i - 1].name, u->users[i].name) == 0) {
			unsigned a = u->users[i - 1].line, b = u->users[i].line;

			snprintf(err, errlen, "%s:%u: user '%s' listed twice (first on line %u)",
				 fname, a > b ? a : b, u->users[i].name, a < b ? a : b);
			smtp_users_unref(u);
			return -1;
		}
	*out = u;
	return 0;
bad:
	snprintf(err, errlen, "%s:%u: %s", fname, lineno, why);
	smtp_users_unref(u);
	return -1;
}

int smtp_users_load(const char *path, struct smtp_users **out, char **text, size_t *len, char *err,
		    size_t errlen)
{
	char *buf = NULL;
	size_t n = 0;
	int rc = 0, e = 0;

	if (text != NULL)
		*text = NULL;
	if (core_fs_read_file(path, SMTP_USERS_FILE_MAX, &buf, &n) != 0) {
		e = errno;
		if (e != ENOENT) {
			if (e == EFBIG)
				snprintf(err, errlen, "%s: larger than %d MiB", path,
					 SMTP_USERS_FILE_MAX / 1048576);
			else
				snprintf(err, errlen, "%s: %s", path, strerror(e));
			errno = e;
			return -1;
		}
		buf = strdup("");
		if (buf == NULL) {
			snprintf(err, errlen, "%s: out of memory", path);
			errno = ENOMEM;
			return -1;
		}
		rc = 1;
	}
	if (smtp_users_parse(buf, n, path, out, err, errlen) != 0) {
		rc = -1;
		e = EINVAL;
	}
	if (text != NULL && rc >= 0) {
		*text = buf;
		*len = n;
	} else {
		explicit_bzero(buf, n); /* the hashes */
		free(buf);
	}
	errno = e;
	return rc;
}

struct smtp_users *smtp_users_empty(void)
{
	struct smtp_users *u;

	if (smtp_users_parse("", 0, "", &u, NULL, 0) != 0)
		return NULL;
	return u;
}

struct smtp_users *smtp_users_ref(struct smtp_users *u)
{
	if (u != NULL)
		u->refs++;
	return u;
}

void smtp_users_unref(struct smtp_users *u)
{
	if (u == NULL || --u->refs > 0)
		return;
	/* the hashes; not strlen(): the parse put a NUL after the first name */
	if (u->text != NULL)
		explicit_bzero(u->text, u->text_size);
	free(u->text);
	free(u->users);
	free(u->senders);
	free(u);
}

size_t smtp_users_count(const struct smtp_users *u)
{
	return u->nusers;
}

const struct smtp_user *smtp_users_at(const struct smtp_users *u, size_t i)
{
	return i < u->nusers ? &u->users[i] : NULL;
}

const struct smtp_user *smtp_users_find(const struct smtp_users *u, const char *name)
{
	struct smtp_user key = { .name = name };

	if (u->nusers == 0)
		return NULL;
	return bsearch(&key, u->users, u->nusers, sizeof(*u->users), cmp_user);
}

const struct smtp_user *smtp_users_verify(const struct smtp_users *u, const char *name,
					  const char *pass)
{
	const struct smtp_user *user = smtp_users_find(u, name);
	const char *hash = user != NULL ? user->hash : DUMMY_HASH;
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	const char *got;
	bool ok = false;
	size_t n = strlen(hash);

	if (cd == NULL)
		return NULL;
	got = crypt_rn(pass, hash, cd, sizeof(*cd));
	/* The length of a hash is no secret (it follows from its scheme);
	 * its bytes are compared without an early exit. */
	if (got != NULL && strlen(got) == n && CRYPTO_memcmp(got, hash, n) == 0)
		ok = user != NULL;
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return ok ? user : NULL;
}

int smtp_users_hash_password(const char *pass, char *out, size_t outlen, const char **reason)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	const char *h;
	int rc = -1;

	if (strlen(pass) == 0 || strlen(pass) > SMTP_USERS_PASS_MAX) {
		*reason = "the password must be 1 to 255 characters long";
		return -1;
	}
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) == NULL) {
		*reason = "crypt_gensalt cannot make a yescrypt salt";
		return -1;
	}
	cd = calloc(1, sizeof(*cd));
	if (cd == NULL) {
		*reason = "out of memory";
		return -1;
	}
	h = crypt_rn(pass, salt, cd, sizeof(*cd));
	if (h == NULL || h[0] == '*') {
		*reason = "crypt(3) failed";
	} else if (strlen(h) >= outlen) {
		*reason = "hash longer than expected";
	} else {
		memcpy(out, h, strlen(h) + 1);
		rc = 0;
	}
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return rc;
}

bool smtp_user_may_send(const struct smtp_user *user, const char *sender)
{
	const char *at = strrchr(sender, '@');
	size_t i;

	if (user->nsenders == 0)
		return true;
	if (sender[0] == '\0')
		return false;
	for (i = 0; i < user->nsenders; i++) {
		const char *p = user->senders[i];

		if (p[0] == '*' && p[1] == '@') {
			if (at != NULL && strcasecmp(at + 1, p + 2) == 0)
				return true;
		} else if (strcasecmp(sender, p) == 0) {
			return true;
		}
	}
	return false;
}
