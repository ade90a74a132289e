/* A queued message's data read ahead of the SMTP client in libuv's thread
 * pool, so no delivery reads the disk on the loop: two bounded chunks. */
#ifndef STSRELAY_READAHEAD_H
#define STSRELAY_READAHEAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

/* The most one transaction buffers: two chunks, one being handed out while
 * the other is read (a message smaller than a chunk gets its size). */
#define READAHEAD_CHUNK 65536
/* readahead_read(): nothing read yet, ready() will run once there is. */
#define READAHEAD_LATER (-2)

struct readahead;

/* Runs on the loop after a readahead_read() that returned READAHEAD_LATER,
 * once a read finished (with data or with an error): read again then. */
typedef void (*readahead_ready_cb)(void *arg);

/* Starts reading size bytes of fd from offset. fd is dup'd: the caller may
 * close its own at once. 0, or -1 (out of memory, dup failed; errno set). */
int readahead_new(uv_loop_t *loop, int fd, uint64_t offset, uint64_t size, readahead_ready_cb ready,
		  void *arg, struct readahead **out) __attribute__((warn_unused_result));

/* Copies up to cap bytes of what was read, in order. Returns the count,
 * 0 at the end of the data, READAHEAD_LATER (see above), or -1 on a read
 * error or a file shorter than size (then -1 from here on). Never blocks. */
ssize_t readahead_read(struct readahead *ra, char *buf, size_t cap);

/* ready() is not called again; the memory and the dup'd descriptor go now,
 * or when the read in flight (which cannot be stopped) returns. NULL: no-op. */
void readahead_free(struct readahead *ra);

#endif
