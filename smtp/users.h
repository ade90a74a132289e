/* The submission users (auth_users_file): `name:crypt-hash[:pattern,...]`
 * lines parsed into a table, passwords checked and hashed with crypt(3),
 * the sender patterns each user may use in MAIL FROM. */
#ifndef STSRELAY_SMTP_USERS_H
#define STSRELAY_SMTP_USERS_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_USERS_NAME_MAX 255     /* RFC 4616's authcid limit */
#define SMTP_USERS_HASH_MAX 255     /* yescrypt and sha512-crypt are ~120 */
#define SMTP_USERS_PASS_MAX 255     /* RFC 4616's passwd limit */
#define SMTP_USERS_SENDERS_MAX 64   /* patterns per user */
#define SMTP_USERS_FILE_MAX 4194304 /* 4 MiB, some 20000 users */

/*
 * The file: one user per line, `name:hash` or `name:hash:pattern,pattern`;
 * blank lines and lines starting with '#' are ignored; CRLF is fine.
 *  - name: 1..255 printable ASCII characters without ':', ',' or blanks,
 *    not starting with '#'; each name once;
 *  - hash: a crypt(3) hash of yescrypt ("$y$...") or sha512-crypt
 *    ("$6$..."), which libcrypt must accept (crypt_checksalt);
 *  - pattern: `*@DOMAIN` (any sender at DOMAIN) or a whole address
 *    `local@DOMAIN`, compared case-insensitively; no patterns: any sender.
 *
 * Ownership: a table is immutable once parsed, and reference counted so the
 * daemon can swap in a re-read file while sessions and password checks
 * still use the old one. ref/unref are not thread-safe: call them on one
 * thread (the event loop); other threads may read a table the loop holds a
 * reference to. Strings returned point into the table.
 */
struct smtp_users;

struct smtp_user {
	const char *name;
	const char *hash;
	const char *const *senders; /* nsenders patterns */
	size_t nsenders;
	unsigned line; /* in the file, for messages */
};

/* Parses a whole file's bytes. 0 with *out (one reference), or -1 with
 * "FNAME:LINE: reason" in err. The reason never quotes a hash. */
int smtp_users_parse(const char *buf, size_t len, const char *fname, struct smtp_users **out,
		     char *err, size_t errlen);
/* Reads the file at path (at most SMTP_USERS_FILE_MAX bytes) and parses
 * it: the one loader of the daemon, `stsrelay user` and `stsrelay check`.
 * 0 with *out; 1 when the file does not exist, with an empty table in *out
 * (nobody can authenticate); -1 with "PATH: reason" or "PATH:LINE: reason"
 * in err and errno set (EINVAL: a bad line; EFBIG: too large; else why it
 * cannot be read), *out untouched. With text, the file's bytes (NUL
 * terminated; "" for a missing file) are the caller's, to wipe with
 * explicit_bzero and free: they hold the hashes. Without, they are wiped
 * here. */
int smtp_users_load(const char *path, struct smtp_users **out, char **text, size_t *len, char *err,
		    size_t errlen);
/* A table without users (no file): every check fails. NULL: no memory. */
struct smtp_users *smtp_users_empty(void);
struct smtp_users *smtp_users_ref(struct smtp_users *u);
void smtp_users_unref(struct smtp_users *u);

/* The users sorted by name (byte order); i < smtp_users_count(). */
size_t smtp_users_count(const struct smtp_users *u);
const struct smtp_user *smtp_users_at(const struct smtp_users *u, size_t i);
/* Exact, case-sensitive name; NULL when absent. */
const struct smtp_user *smtp_users_find(const struct smtp_users *u, const char *name);

/* The password check, slow by design (yescrypt costs tens of milliseconds
 * and megabytes): never on the event loop. The user's entry when pass is
 * right, else NULL. An unknown name costs a hash computation too, so the
 * time taken does not tell which names exist; the hashes are compared in
 * constant time. Thread-safe (crypt_rn with its own buffer). */
const struct smtp_user *smtp_users_verify(const struct smtp_users *u, const char *name,
					  const char *pass);

/* A new hash of pass: yescrypt with libcrypt's default cost and a random
 * salt from the kernel. 0, or -1 with a static reason. */
int smtp_users_hash_password(const char *pass, char *out, size_t outlen, const char **reason);

/* "yescrypt", "sha512-crypt" (static), from a hash's prefix. */
const char *smtp_users_scheme(const char *hash);

/* May this user use sender (MAIL FROM path, "" = null sender)? Any sender
 * without patterns; with patterns the null sender is refused too (a user
 * limited to its own addresses does not send bounces). */
bool smtp_user_may_send(const struct smtp_user *user, const char *sender);

/* The syntax checks of the parser, for `stsrelay user add`: NULL when
 * valid, else a static reason. */
const char *smtp_users_check_name(const char *name);
const char *smtp_users_check_pattern(const char *pattern);

#endif
