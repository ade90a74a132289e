/* The durable spool: one immutable message file (envelope header + data) per
 * message, a small state file per message for recipient progress, a drop
 * directory for local submission. Crash-safe by write/fsync, then naming
 * (link or rename) and a directory fsync. */
#ifndef STSRELAY_QUEUE_H
#define STSRELAY_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Spool layout under spool_dir:
 *   queue/ID        committed message: header lines, "end\n", then the data
 *   queue/ID.state  recipient states (absent = all pending, 0 attempts)
 *   tmp/            state files being written, and message files being
 *                   written where nameless files (O_TMPFILE) cannot be
 *                   made; removed by queue_recover(). A message file is
 *                   nameless while written and gets its name at commit.
 *   maildrop/       local submissions (sendmail), mode 1730, group-writable;
 *                   ".ID" while being written, "ID" when complete
 * Message data is stored exactly as it will be sent: CRLF line ends,
 * dot-unstuffed, without the final ".". */

#define QUEUE_ID_LEN 12    /* upper-case hex characters */
#define QUEUE_ADDR_MAX 512 /* longest stored address, with NUL */
#define QUEUE_ERROR_MAX 512
#define QUEUE_MAX_RCPTS 10000
/* Largest header a reader accepts: 1 MiB for the fixed lines plus one
 * "rcpt ADDRESS\n" line per possible recipient. Larger files are refused. */
#define QUEUE_HEADER_MAX (1048576 + QUEUE_MAX_RCPTS * (5 + QUEUE_ADDR_MAX))
/* Largest state file: per recipient index, status, three numbers, error. */
#define QUEUE_STATE_MAX (4096 + QUEUE_MAX_RCPTS * (96 + QUEUE_ERROR_MAX))

enum queue_rcpt_status { QUEUE_PENDING, QUEUE_DEFERRED, QUEUE_SENT, QUEUE_BOUNCED };

/* Message flags kept in the header ("flags N", one decimal digit: all of
 * them together stay <= 9 so the writer can set QUEUE_F_8BITMIME in place).
 * A file written before a flag existed reads as that flag clear. */
#define QUEUE_F_NOBOUNCE 0x1 /* failed delivery produces no DSN (bounces, reports) */
#define QUEUE_F_TLSRPT 0x2   /* a TLS-RPT report: its sessions are not reported */
#define QUEUE_F_8BITMIME 0x4 /* the data holds bytes >= 0x80 (set by the writer) */
#define QUEUE_F_ALL (QUEUE_F_NOBOUNCE | QUEUE_F_TLSRPT | QUEUE_F_8BITMIME)

struct queue_rcpt {
	char address[QUEUE_ADDR_MAX]; /* without angle brackets */
	enum queue_rcpt_status status;
	unsigned attempts;
	int64_t next_try; /* unix seconds; 0 = now */
	int64_t last_try;
	char last_error[QUEUE_ERROR_MAX]; /* reply or reason of the last failure */
};

struct queue_envelope {
	char id[QUEUE_ID_LEN + 1];
	int64_t queued_at;
	char sender[QUEUE_ADDR_MAX]; /* "" = null sender <> */
	char submitter[64];          /* local user (sendmail) or "" */
	char client[128];            /* "host[ip]" of the SMTP client or "" */
	unsigned flags;
	struct queue_rcpt *rcpts; /* owned; nrcpts entries */
	size_t nrcpts;
	uint64_t data_offset; /* where the data starts in the file */
	uint64_t size;        /* data bytes */
};

/* ---- pure encode/decode (no I/O; unit-tested and fuzzed) ---- */

/* Header text for a message file. *out is malloc'd. -1 if a field holds a
 * CR, LF or NUL or the envelope is otherwise unstorable. */
int queue_header_encode(const struct queue_envelope *env, char **out, size_t *outlen)
	__attribute__((warn_unused_result));
/* Parses a header from the start of buf; on success fills env (rcpts all
 * pending), sets env->data_offset to the header length and returns 0; on
 * error returns -1 with *err a static reason. env must be zeroed or freed. */
int queue_header_decode(const char *buf, size_t len, struct queue_envelope *env, const char **err)
	__attribute__((warn_unused_result));
/* State file text for the recipients of env. *out is malloc'd. */
int queue_state_encode(const struct queue_envelope *env, char **out, size_t *outlen)
	__attribute__((warn_unused_result));
/* Applies a state file to env's recipients (only the indexes listed; a bad
 * file leaves env unchanged). -1 with *err on bad input. The encoder turns
 * control characters in last_error into spaces and negative times into 0, so
 * saving progress never fails because of what a remote server replied. */
int queue_state_decode(const char *buf, size_t len, struct queue_envelope *env, const char **err)
	__attribute__((warn_unused_result));
/* Frees env->rcpts; env itself is the caller's. env->rcpts must only ever be
 * grown by queue_envelope_add_rcpt() or the decoder (its capacity is derived
 * from nrcpts), never malloc'd by the caller. */
void queue_envelope_clear(struct queue_envelope *env);
/* Adds a recipient (status pending). -1 if too many or too long. */
int queue_envelope_add_rcpt(struct queue_envelope *env, const char *address)
	__attribute__((warn_unused_result));

const char *queue_status_name(enum queue_rcpt_status st); /* "pending", ... */

/* True for exactly QUEUE_ID_LEN upper-case hex digits (the first len bytes
 * of s; len is usually strlen(s)). */
bool queue_id_valid(const char *s, size_t len) __attribute__((warn_unused_result));

/* Delay before attempt number `attempts`+1, given the configured schedule
 * (last step repeats). Convention: `attempts` = failed attempts so far. 0 ->
 * 0 (the first attempt is immediate); k >= 1 -> schedule_s[min(k-1, n-1)],
 * so after the first failure (attempts=1) the wait is schedule_s[0]. An empty
 * schedule (n=0) gives 300 s rather than a retry storm. */
uint64_t queue_retry_delay(const uint64_t *schedule_s, size_t n, unsigned attempts)
	__attribute__((warn_unused_result));

/* ---- the spool ----
 *
 * Every function from here on does blocking file I/O (reads, writes,
 * fsyncs) on the caller's thread; none starts a thread of its own. The
 * daemon runs the slow ones in libuv's thread pool: commits
 * (relay/daemon/commit.c), state saves and removals
 * (relay/daemon/statesave.c), the drop import (relay/daemon/pickup.c) and
 * the queue listing (relay/daemon/control.c), the commit of a bounce (with
 * the state saves, relay/daemon/statesave.c) and the reads of message data
 * for delivery (relay/daemon/readahead.c). On its loop stay the scan and
 * load at start (before the loop runs), writes into a queue writer (page
 * cache, no fsync: the listener), in the scheduler the load of a message
 * (its header: one 4 KiB read) handed over after its commit, the open of a
 * message file for delivery, an administrator's delete, and the commit of
 * the daily TLS-RPT report mails (sts/tlsrpt/send.c): the last two rare. */

struct queue;

/* Opens (and with create=true makes, with the right modes) the spool under
 * spool_dir. drop_gid: group owning maildrop/ (-1: leave as is). */
int queue_open(const char *spool_dir, bool create, long drop_gid, struct queue **out, char *err,
	       size_t errlen) __attribute__((warn_unused_result));
void queue_close(struct queue *q);
const char *queue_spool_dir(const struct queue *q);

/* Startup recovery: removes everything in tmp/, state files without a
 * message, and drop files left half-written for over an hour. Returns the
 * number of files removed, or -1. */
int queue_recover(struct queue *q) __attribute__((warn_unused_result));

/* Sorted list of committed message ids (malloc'd array of QUEUE_ID_LEN+1
 * strings in one block). */
int queue_scan(struct queue *q, char (**ids)[QUEUE_ID_LEN + 1], size_t *n)
	__attribute__((warn_unused_result));

/* Reads header and state of a committed message. */
int queue_load(struct queue *q, const char *id, struct queue_envelope *env, char *err,
	       size_t errlen) __attribute__((warn_unused_result));
/* Opens the message file for reading, positioned at the data. Returns fd or -1. */
int queue_open_data(struct queue *q, const struct queue_envelope *env)
	__attribute__((warn_unused_result));
/* Persists recipient states atomically (temp, fsync, rename, dir fsync). */
int queue_save_state(struct queue *q, const struct queue_envelope *env)
	__attribute__((warn_unused_result));
/* Removes a message and its state (every recipient final, or deleted). */
int queue_remove(struct queue *q, const char *id) __attribute__((warn_unused_result));
/* The same two without the final fsync of queue/, for batches (thread
 * pool, relay/daemon/statesave.c): do any number of them, then ONE
 * queue_sync_queue_dir(q), and only after it succeeded report any of them as
 * durable. A failed queue_sync_queue_dir leaves each change in place but in doubt
 * after a crash. queue_remove_nodirsync gives -1/ENOENT like queue_remove
 * when the message was already gone (its state file is still unlinked, so
 * the batch's queue_sync_queue_dir is needed then too). Callers must not run two of
 * these for the same id at once (fixed temp name tmp/ID.state). */
int queue_save_state_nodirsync(struct queue *q, const struct queue_envelope *env)
	__attribute__((warn_unused_result));
int queue_remove_nodirsync(struct queue *q, const char *id) __attribute__((warn_unused_result));

/* ---- writing a new message ----
 *
 * THE COMMIT POINT IS THE NAMING. A message is in the queue (and will be
 * delivered) exactly when its file has its final name in queue/ (maildrop/
 * for drops): given by a link of the nameless file, or a rename of a named
 * temp file. Every caller tells its submitter "accepted" if and only if that
 * holds when it answers. Hence:
 *  - queue_writer_commit() returns 0 once the link or rename has happened,
 *    and only then. A close error after it is logged, not returned: the data
 *    was fsynced before, so the close cannot lose a byte, and a -1 there
 *    would make callers refuse a message that is delivered anyway.
 *  - When the directory fsync that follows fails, the caller takes the file
 *    back out with queue_writer_withdraw() before it reports failure. If
 *    even that fails the file stays, and the message is reported accepted
 *    (with a logged error): "refused" for a message that will be delivered
 *    would make the client's retry a duplicate.
 * queue_writer_commit_sync() applies the rule to a single message; the
 * group commit (relay/daemon/commit.c) applies it to a batch. */

struct queue_writer;

/* Starts a message with a fresh id (to_drop=false): a nameless file on the
 * spool's file system, or a temp file in tmp/ where that cannot be made;
 * or in maildrop/ (to_drop=true, for sendmail, which may run as any user).
 * Thread-safe with respect to the loop (it reads only q's directory
 * descriptors): the daemon makes its files in the thread pool. An id is
 * unique among one process's writers; a clash with another process's is
 * resolved at commit (a new id). */
int queue_writer_new(struct queue *q, bool to_drop, struct queue_writer **out)
	__attribute__((warn_unused_result));
const char *queue_writer_id(const struct queue_writer *w);
/* Writes the header (env->id is replaced by the writer's id). Once, first. */
int queue_writer_header(struct queue_writer *w, const struct queue_envelope *env)
	__attribute__((warn_unused_result));
/* Appends data bytes (exactly what will be sent). The first byte >= 0x80
 * sets QUEUE_F_8BITMIME in the header already written (in place, one
 * digit), whatever the submitter declared: the flag says what the bytes
 * are, so delivery sends BODY=8BITMIME exactly for 8-bit data (RFC 6152). */
int queue_writer_append(struct queue_writer *w, const void *buf, size_t len)
	__attribute__((warn_unused_result));
uint64_t queue_writer_size(const struct queue_writer *w);
/* fsync the file and name it in queue/ (or maildrop/): 0 = named
 * (committed, see above), -1 = not named (nothing in the final
 * directory). Does NOT fsync the directory: call queue_sync_queue_dir() (or
 * queue_sync_maildrop_dir()) once for a
 * batch of commits before telling anyone the message is safe, and
 * queue_writer_withdraw() each of them if that fails. Thread-safe with
 * respect to the loop (touches only w's own file). */
int queue_writer_commit(struct queue_writer *w) __attribute__((warn_unused_result));
/* Hands what w holds to the kernel and starts its writeback without waiting
 * (sync_file_range), so that a batch's fsyncs, one file after another, find
 * every file's data already on its way to the disk instead of each starting
 * its own. Only a hint: nothing is promised durable, and an error shows again
 * at queue_writer_commit(). Thread-safe like queue_writer_commit(). */
void queue_writer_start_writeback(struct queue_writer *w);
/* Takes a committed message back out of queue/ (or maildrop/) after its
 * directory fsync failed: 0 = gone (report failure), -1 = still there (it
 * will be delivered: report success). The unlink is not fsynced (the
 * directory just failed to); only a crash on top of that I/O error can
 * bring the file back. */
int queue_writer_withdraw(struct queue_writer *w) __attribute__((warn_unused_result));
/* Commit, make durable, and apply the rule above, for one message: 0 = in
 * the queue (durable, or in doubt after an fsync error that could not be
 * undone, which is logged), -1 = not in the queue. The durable step is
 * queue_sync_queue_dir(), or queue_sync_maildrop_dir(), or for a drop by a caller who cannot read maildrop/ an
 * fsync of the file after its rename (see spool.c: never a global sync). */
int queue_writer_commit_sync(struct queue_writer *w) __attribute__((warn_unused_result));
/* fsync the directory queue/: makes the names given and unlinks in it durable.
 * EACCES when q has no queue/ open (a submitting user's queue). */
int queue_sync_queue_dir(struct queue *q) __attribute__((warn_unused_result));
/* fsync the directory maildrop/. EACCES for a maildrop/ the caller cannot
 * read (a submitting user: use queue_writer_commit_sync). */
int queue_sync_maildrop_dir(struct queue *q) __attribute__((warn_unused_result));
/* Frees w; an uncommitted file is unlinked. */
void queue_writer_free(struct queue_writer *w);

/* ---- the single-instance lock ----
 *
 * spool_dir/lock, held with flock(LOCK_EX) by the running daemon for its
 * whole life (the lock belongs to the open file, so it survives the switch
 * to `user`), and for a moment by a queue command that edits the spool while
 * no daemon runs. A second daemon on the same spool is refused; a command
 * never edits files a live daemon owns. The file holds the holder's pid. */
#define QUEUE_LOCK_FILE "lock"

/* Takes the lock, retrying for up to wait_ms while another process holds
 * it. create: make spool_dir (0755, parents too) and the file if missing.
 * Returns the descriptor (the lock lasts while it stays open), or -1 with
 * errno: EWOULDBLOCK when another process still holds it (*holder, if not
 * NULL, gets the pid in the file, 0 if unreadable), else the error of the
 * step that failed (ENOENT: no spool or no lock file and create=false). */
int queue_lock(const char *spool_dir, bool create, int wait_ms, long *holder)
	__attribute__((warn_unused_result));
/* Records the caller's pid in the lock file it holds. */
int queue_lock_note_pid(int fd) __attribute__((warn_unused_result));

/* ---- the drop directory (daemon side) ---- */

/* Sorted list of complete drop files (ids). */
int queue_drop_scan(struct queue *q, char (**ids)[QUEUE_ID_LEN + 1], size_t *n)
	__attribute__((warn_unused_result));
/* Validates drop file `id` (regular file, sane header, size <= max_size,
 * at least one recipient), copies it into the queue under a new id with the
 * submitter set from the file owner's user name, fsyncs, and removes the
 * drop file. new_id receives the queue id. Returns 0, or -1 with err (the
 * bad drop file is then moved aside to maildrop/.bad-ID, never delivered,
 * and err says why and where it went; a file this process may not read is
 * such a bad file: no retry can read it). Nothing is logged for a bad file:
 * the caller logs err, once.
 * errno after -1: EBADMSG = the file was bad and has been moved aside (or
 * vanished: ENOENT); anything else = a local failure (disk full, I/O), the
 * drop file is left in place for a later try (the copy is then not in
 * queue/: the commit rule above). A crash between the queue commit and the
 * unlink of the drop file imports it twice on the next pass (a duplicate,
 * never a loss). Blocking file I/O: run it off the loop (relay/daemon/pickup.c
 * runs it in the thread pool). */
int queue_drop_import(struct queue *q, const char *id, uint64_t max_size,
		      char new_id[QUEUE_ID_LEN + 1], char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
