/* Durable file writes shared by the queue, the policy cache and TLS-RPT:
 * complete writes, EINTR-safe fsync, directory fsync and atomic replacement;
 * and bounded whole-file reads. */
#ifndef STSRELAY_CORE_FS_H
#define STSRELAY_CORE_FS_H

#include <stddef.h>
#include <sys/types.h>

/* All functions return 0, or -1 with errno set by the step that failed
 * (cleanup never overwrites it). None of them logs. */

/* write(2) until all len bytes are written, retrying EINTR and short
 * writes. A write that makes no progress fails with EIO. When written is
 * not NULL it receives the bytes that did reach the file, also on failure
 * (a caller appending records can tell a torn record from none). */
int core_fs_write_all(int fd, const void *buf, size_t len, size_t *written)
	__attribute__((warn_unused_result));

/* fsync(2), retrying only EINTR: after EIO a second fsync may report
 * success for pages the kernel already dropped, so that error is final. */
int core_fs_fsync(int fd) __attribute__((warn_unused_result));

/* close(2) that reports real errors; EINTR is success, since Linux
 * releases the descriptor anyway and a retry could close another file. */
int core_fs_close(int fd) __attribute__((warn_unused_result));

/* fsync of the directory at path, so that a create, rename or unlink in it
 * survives a crash. */
int core_fs_fsync_dir(const char *path) __attribute__((warn_unused_result));

/*
 * Replaces name in the directory dirfd with exactly len bytes of buf, or
 * leaves it as it was: the bytes go to tmp_name in tmp_dirfd (created with
 * O_EXCL and the given mode; it must be on the same file system), are
 * fsynced, renamed over name, and then dirfd is fsynced. tmp_name belongs
 * to the caller: a leftover of a crashed earlier run is removed and made
 * again, but callers must not write the same tmp_name concurrently. On
 * failure the temporary file is removed. tmp_dirfd may equal dirfd.
 */
int core_fs_write_atomic_at(int tmp_dirfd, const char *tmp_name, int dirfd, const char *name,
			    const void *buf, size_t len, mode_t mode)
	__attribute__((warn_unused_result));
/* The same without the final fsync of dirfd, for callers that write several
 * files and then fsync the directory once (group commit). */
int core_fs_write_atomic_nodirsync_at(int tmp_dirfd, const char *tmp_name, int dirfd,
				      const char *name, const void *buf, size_t len, mode_t mode)
	__attribute__((warn_unused_result));

/* The same by path: dir/name is replaced through the temporary file
 * dir/.NAME.tmp.PID (the leading dot keeps it out of scans for NAME's
 * suffix). ENAMETOOLONG if that name does not fit. */
int core_fs_write_atomic(const char *dir, const char *name, const void *buf, size_t len,
			 mode_t mode) __attribute__((warn_unused_result));
/* The same for a file whose owner matters (a secret a group reads): the
 * temporary file gets uid:gid (a caller that is not root and is refused
 * keeps its own) and exactly mode, whatever the umask, before its first
 * byte. */
int core_fs_write_atomic_owned(const char *dir, const char *name, const void *buf, size_t len,
			       mode_t mode, uid_t uid, gid_t gid)
	__attribute__((warn_unused_result));

/* Reads all of the open file fd (from its current offset) into a new
 * buffer of *len bytes plus a NUL (free it; *out is NULL on failure). A
 * file longer than max bytes fails with EFBIG. */
int core_fs_read_fd(int fd, size_t max, char **out, size_t *len)
	__attribute__((warn_unused_result));
/* The same by path (opened read-only, close-on-exec). */
int core_fs_read_file(const char *path, size_t max, char **out, size_t *len)
	__attribute__((warn_unused_result));

#endif
