/* The relay host's credentials file (relayhost_auth_file): one
 * `user:password` line in a file that other users cannot read. */
#ifndef STSRELAY_CORE_AUTHFILE_H
#define STSRELAY_CORE_AUTHFILE_H

#include <stdbool.h>
#include <stddef.h>

#define AUTHFILE_FIELD_MAX 255 /* bytes of the user name and of the password */
#define AUTHFILE_SIZE_MAX 4096 /* the whole file */

struct authfile_cred {
	bool set; /* false: no credentials (no file configured) */
	char user[AUTHFILE_FIELD_MAX + 1];
	char password[AUTHFILE_FIELD_MAX + 1];
};

/*
 * File format: lines ending in LF (or CRLF); blank lines and lines whose
 * first byte is '#' are ignored; exactly one other line, `user:password`,
 * split at its first ':' (a password may hold ':' and blanks, kept as
 * written), each part 1..AUTHFILE_FIELD_MAX bytes with no control byte.
 *
 * authfile_load() reads path (no symbolic link followed) as the calling
 * process, with these checks, and fills *out only on success:
 *   - a regular file of at most AUTHFILE_SIZE_MAX bytes;
 *   - no permission bit for "others" (mode & 007 == 0): a password other
 *     users can read is refused, as ssh refuses such a key;
 *   - the format above.
 * Returns 0, or -1 with the reason in err ("PATH: ..."), which never
 * quotes the file's contents. The caller owns *out and wipes it with
 * authfile_wipe() when done; the read buffer is wiped here.
 */
int authfile_load(const char *path, struct authfile_cred *out, char *err, size_t errlen);

/* Overwrites the credentials with zeros (explicit_bzero) and clears set. */
void authfile_wipe(struct authfile_cred *c);

#endif
