/* Benchmark helper for tests/bench/run: the delivery scheduler's cost per operation at
 * 10^3, 10^4 and 10^5 queued messages, and a filler that writes valid queues fast. */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "queue/queue.h"
#include "queue/ram.h"
#include "relay/core/clock.h"
#include "relay/core/config.h"
#include "relay/core/log.h"
#include "relay/daemon/relay.h"
#include "relay/daemon/scheduler.h"

/*
 * bench_sched fill SPOOL COUNT RCPT DELAY_S [THREADS]
 *   Writes COUNT messages (about 1 KB each, null sender, one recipient
 *   RCPT) into the spool through the queue library (queue_writer_*, then
 *   queue_save_state_nodirsync: deferred once, next try DELAY_S seconds
 *   from now; DELAY_S < 0: no state file, due at once), THREADS writers in
 *   parallel (default 8: each commit fsyncs its file, and parallel fsyncs
 *   share the device), one queue_sync_queue_dir at the end. Prints JSON.
 *
 * bench_sched run BASE [MAX]
 *   The micro-benchmark (printed, never asserted): for N = 10^3, 10^4,
 *   10^5 (up to MAX) messages in a fresh spool under BASE (tmpfs is best:
 *   fsync then costs nothing and the numbers are the scheduler's CPU), with
 *   K = 1000 of them "due-able", it measures through the scheduler's public
 *   API:
 *     load   scheduler_new() over N deferred messages, per message (scan,
 *            read header and state, index: id hash, heap), less its fixed
 *            cost on the empty spool (fixed_ms, the least of three runs;
 *            at 10^3 it is larger than the load itself, so that row is
 *            the noisiest)
 *     flush  scheduler_flush(ID) of K messages, per call (id lookup, heap
 *            re-key to the top), without running the loop
 *     due    the loop then runs those K due messages to the end, per message:
 *            heap pop, recipient decision (a recipient without a domain is
 *            bounced without a delivery; null sender: no DSN), the removal
 *            of its files in the thread pool (batched, one directory fsync
 *            per batch) and the unlink from every index
 *     add    K new deferred messages written (untimed), then
 *            scheduler_add(ID) each, per call (load + index)
 *   Wall and CPU microseconds per operation (CPU: getrusage of the whole
 *   process, thread pool included). Every number includes reading or
 *   removing real spool files; on tmpfs that is page-cache work only.
 *
 * bench_sched run-ram BASE [MAX]
 *   The same on the in-memory queue (queue/ram.h) instead of a spool: the
 *   scheduler's own cost plus the in-memory copies and format parsing,
 *   without a file system (BASE holds only the log and the MTA-STS cache
 *   directory of the delivery context).
 */

#define K_OPS 1000
#define MAX_THREADS 64
#define BODY_LINES 12

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* ---- the filler ---- */

struct fill_job {
	struct queue *q;
	const char *rcpt;
	int64_t next_try;       /* 0 with no_state */
	bool no_state;
	long count;
	long done;
	char (*ids)[QUEUE_ID_LEN + 1];  /* optional: the ids written, count entries */
	int err;
};

/* The ~1 KB of data of a filler message to rcpt; tag goes into the
 * subject. The length, or 0 when it does not fit. */
static size_t fill_body(char *data, size_t cap, const char *rcpt, const char *tag)
{
	size_t len;
	int n, i;

	n = snprintf(data, cap, "From: <>\r\nTo: <%s>\r\nSubject: bench queue %s\r\n\r\n", rcpt,
		     tag);
	if (n < 0 || (size_t)n + BODY_LINES * 78 > cap)
		return 0;
	len = (size_t)n;
	for (i = 0; i < BODY_LINES; i++) {
		memset(data + len, 'x', 76);
		memcpy(data + len + 76, "\r\n", 2);
		len += 78;
	}
	return len;
}

/* env's only recipient as a first attempt left it: deferred once, next
 * try at next_try. */
static void fill_deferred(struct queue_envelope *env, int64_t next_try)
{
	env->rcpts[0].status = QUEUE_DEFERRED;
	env->rcpts[0].attempts = 1;
	env->rcpts[0].last_try = env->queued_at;
	env->rcpts[0].next_try = next_try;
	snprintf(env->rcpts[0].last_error, sizeof(env->rcpts[0].last_error),
		 "4.4.3 bench: deferred by the queue filler");
}

/* One message: header, ~1 KB of data, commit (fsync + rename), then a
 * state file "deferred once" unless no_state. 0 or -1 (errno). */
static int fill_one(struct fill_job *j, char id_out[QUEUE_ID_LEN + 1])
{
	struct queue_writer *w = NULL;
	struct queue_envelope env;
	char data[BODY_LINES * 80 + 256];
	size_t len;
	int rc = -1;

	memset(&env, 0, sizeof(env));
	env.queued_at = clock_now();
	if (queue_envelope_add_rcpt(&env, j->rcpt) != 0)
		goto out;
	if (queue_writer_new(j->q, false, &w) != 0)
		goto out;
	if (queue_writer_header(w, &env) != 0)
		goto out;
	len = fill_body(data, sizeof(data), j->rcpt, queue_writer_id(w));
	if (len == 0)
		goto out;
	if (queue_writer_append(w, data, len) != 0 || queue_writer_commit(w) != 0)
		goto out;
	snprintf(env.id, sizeof(env.id), "%s", queue_writer_id(w));
	if (!j->no_state) {
		fill_deferred(&env, j->next_try);
		if (queue_save_state_nodirsync(j->q, &env) != 0)
			goto out;
	}
	if (id_out != NULL)
		snprintf(id_out, QUEUE_ID_LEN + 1, "%s", env.id);
	rc = 0;
out:
	if (rc != 0 && errno == 0)
		errno = EIO;
	queue_writer_free(w);
	queue_envelope_clear(&env);
	return rc;
}

static void *fill_thread(void *arg)
{
	struct fill_job *j = arg;

	for (j->done = 0; j->done < j->count; j->done++) {
		if (fill_one(j, j->ids != NULL ? j->ids[j->done] : NULL) != 0) {
			j->err = errno;
			break;
		}
	}
	return NULL;
}

/* Writes count messages with `threads` writers; ids (optional, count
 * entries) receives their ids. 0 or -1 (message on stderr). */
static int fill(struct queue *q, long count, const char *rcpt, int64_t next_try, bool no_state,
		int threads, char (*ids)[QUEUE_ID_LEN + 1])
{
	struct fill_job jobs[MAX_THREADS];
	pthread_t tids[MAX_THREADS];
	long per = count / threads, off = 0;
	int t, started = 0, rc = 0;

	for (t = 0; t < threads; t++) {
		memset(&jobs[t], 0, sizeof(jobs[t]));
		jobs[t].q = q;
		jobs[t].rcpt = rcpt;
		jobs[t].next_try = next_try;
		jobs[t].no_state = no_state;
		jobs[t].count = per + (t < count % threads ? 1 : 0);
		jobs[t].ids = ids != NULL ? ids + off : NULL;
		off += jobs[t].count;
		if (pthread_create(&tids[t], NULL, fill_thread, &jobs[t]) != 0) {
			fprintf(stderr, "bench_sched: cannot start a writer thread\n");
			rc = -1;
			break;
		}
		started++;
	}
	for (t = 0; t < started; t++) {
		pthread_join(tids[t], NULL);
		if (jobs[t].err != 0) {
			fprintf(stderr, "bench_sched: writing the queue: %s\n", strerror(jobs[t].err));
			rc = -1;
		}
	}
	if (rc == 0 && queue_sync_queue_dir(q) != 0) {
		fprintf(stderr, "bench_sched: fsync of queue/: %s\n", strerror(errno));
		rc = -1;
	}
	return rc;
}

/* The in-memory counterpart of fill(): count messages as fill_one writes
 * them, into the queue behind qb (one thread: it holds one mutex). */
static int fill_ram(const struct queue_backend *qb, long count, const char *rcpt,
		    int64_t next_try, char (*ids)[QUEUE_ID_LEN + 1])
{
	struct queue_envelope env;
	char data[BODY_LINES * 80 + 256], id[QUEUE_ID_LEN + 1];
	size_t len;
	long i;
	int rc = -1;

	memset(&env, 0, sizeof(env));
	env.queued_at = clock_now();
	len = fill_body(data, sizeof(data), rcpt, "in memory");
	if (len == 0 || queue_envelope_add_rcpt(&env, rcpt) != 0)
		goto out;
	for (i = 0; i < count; i++) {
		if (qb->ops->add(qb->q, &env, data, len, id) != 0)
			goto out;
		memcpy(env.id, id, sizeof(id));
		fill_deferred(&env, next_try);
		if (qb->ops->save_state(qb->q, &env) != 0)
			goto out;
		if (ids != NULL)
			memcpy(ids[i], id, sizeof(id));
	}
	rc = 0;
out:
	if (rc != 0)
		fprintf(stderr, "bench_sched: filling the in-memory queue: %s\n", strerror(errno));
	queue_envelope_clear(&env);
	return rc;
}

/* The queue a run measures: the spool, or (ram != NULL) the in-memory one. */
struct bench_queue {
	struct queue *q;
	struct queue_ram *ram;
	struct queue_backend qb;
};

static int bq_fill(struct bench_queue *bq, long count, const char *rcpt, int64_t next_try,
		   char (*ids)[QUEUE_ID_LEN + 1])
{
	if (bq->ram != NULL)
		return fill_ram(&bq->qb, count, rcpt, next_try, ids);
	return fill(bq->q, count, rcpt, next_try, false, 8, ids);
}

static int cmd_fill(const char *spool, long count, const char *rcpt, long delay, long threads)
{
	struct queue *q = NULL;
	char err[256];
	double t0;
	int rc;

	if (queue_open(spool, true, -1, &q, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_sched: %s\n", err);
		return 1;
	}
	t0 = now_s();
	rc = fill(q, count, rcpt, delay < 0 ? 0 : clock_now() + delay, delay < 0, (int)threads,
		  NULL);
	if (rc == 0)
		printf("{\"written\": %ld, \"seconds\": %.3f, \"threads\": %ld}\n", count,
		       now_s() - t0, threads);
	queue_close(q);
	return rc == 0 ? 0 : 1;
}

/* ---- the micro-benchmark ---- */

struct watch {
	uv_timer_t timer;
	FILE *log;              /* the process's stderr, a file: log lines land here */
	const char *needle;
	long seen, want;
	double t_done;
	char carry[64];
};

/* Counts `needle` in the log lines written since the last tick; stops the
 * loop once `want` have been seen (the K due messages are finished). */
static void on_watch(uv_timer_t *t)
{
	struct watch *w = t->data;
	char buf[65536];
	size_t n;

	fflush(stderr);
	while ((n = fread(buf, 1, sizeof(buf) - 1, w->log)) > 0) {
		char *p = buf;

		buf[n] = '\0';
		while ((p = strstr(p, w->needle)) != NULL) {
			w->seen++;
			p += strlen(w->needle);
		}
	}
	clearerr(w->log);
	if (w->seen >= w->want) {
		w->t_done = now_s();
		uv_stop(t->loop);
	}
}

static void on_stopped(void *arg)
{
	(void)arg;
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0)
		fprintf(stderr, "bench_sched: remove %s: %s\n", path, strerror(errno));
	return 0;
}

/* Removes the spool this program made for one size (depth first, never
 * following symbolic links). */
static void remove_spool(const char *spool)
{
	if (nftw(spool, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
		fprintf(stderr, "bench_sched: could not remove %s: %s\n", spool, strerror(errno));
}

/* Copies the last `max` bytes of the log to stdout (the caller shows
 * stdout when the run fails; stderr is the log itself). */
static void show_log_tail(const char *logpath, long max)
{
	char buf[4096];
	size_t n;
	FILE *f = fopen(logpath, "r");

	if (f == NULL)
		return;
	if (fseek(f, -max, SEEK_END) != 0)
		rewind(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stdout);
	fclose(f);
}

static int run_size(const char *base, long nq, const char *logpath, bool report, bool ram)
{
	struct bench_queue bq;
	char spool[4096], conf[8192], err[512];
	char(*due_ids)[QUEUE_ID_LEN + 1] = NULL, (*add_ids)[QUEUE_ID_LEN + 1] = NULL;
	struct relay r;
	struct watch wt;
	uv_loop_t loop;
	double t0, c0, t_fixed, c_fixed, t_load, c_load, t_flush, c_flush, t_due, c_due, t_add, c_add, t_fill;
	int rc = -1, loop_ok = 0, i, n;
	FILE *lf = NULL;

	memset(&r, 0, sizeof(r));
	memset(&wt, 0, sizeof(wt));
	memset(&bq, 0, sizeof(bq));
	snprintf(spool, sizeof(spool), "%s/bench-sched-%ld-%ld", base, (long)getpid(), nq);
	due_ids = calloc(K_OPS, sizeof(*due_ids));
	add_ids = calloc(K_OPS, sizeof(*add_ids));
	if (due_ids == NULL || add_ids == NULL)
		goto out;
	config_defaults(&r.cfg);
	/* deliveries are never reached (the due recipients have no domain);
	 * DNS points at a closed port all the same */
	n = snprintf(conf, sizeof(conf),
		     "spool_dir = %s\nhostname = bench.test\ndns_servers = 127.0.0.1:9\n", spool);
	if (n < 0 || (size_t)n >= sizeof(conf) ||
	    config_parse(&r.cfg, conf, (size_t)n, "bench", err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_sched: config: %s\n", err);
		goto out;
	}
	if (uv_loop_init(&loop) != 0)
		goto out;
	loop_ok = 1;
	r.loop = &loop;
	/* run-ram too: the delivery context keeps its MTA-STS cache there */
	if (queue_open(spool, true, -1, &r.queue, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_sched: %s\n", err);
		goto out;
	}
	bq.q = r.queue;
	bq.qb = queue_backend_spool(r.queue);
	if (ram) {
		if (queue_ram_new(&bq.ram) != 0) {
			fprintf(stderr, "bench_sched: out of memory\n");
			goto out;
		}
		bq.qb = queue_ram_backend(bq.ram);
	}
	/* scheduler_new's fixed cost (delivery context: TLS trust store, DNS,
	 * MTA-STS engine) on the empty spool, subtracted from the load below:
	 * the least of three, as other jobs on the machine only ever add */
	t_fixed = c_fixed = 1e9;
	for (i = 0; i < 3; i++) {
		double t, c;

		t0 = now_s();
		c0 = cpu_s();
		if (scheduler_new_with(&r, &bq.qb, &scheduler_delivery_smtp, NULL, &r.sched) != 0) {
			fprintf(stderr, "bench_sched: scheduler_new failed\n");
			goto out;
		}
		t = now_s() - t0;
		c = cpu_s() - c0;
		t_fixed = t < t_fixed ? t : t_fixed;
		c_fixed = c < c_fixed ? c : c_fixed;
		scheduler_stop(r.sched, on_stopped, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
		scheduler_free(r.sched);
		r.sched = NULL;
	}

	t0 = now_s();
	if (bq_fill(&bq, nq - K_OPS, "user@bench.invalid", clock_now() + 3600, NULL) != 0 ||
	    bq_fill(&bq, K_OPS, "bench-no-domain", clock_now() + 3600, due_ids) != 0)
		goto out;
	t_fill = now_s() - t0;

	/* load */
	t0 = now_s();
	c0 = cpu_s();
	if (scheduler_new_with(&r, &bq.qb, &scheduler_delivery_smtp, NULL, &r.sched) != 0) {
		fprintf(stderr, "bench_sched: scheduler_new failed\n");
		goto out;
	}
	t_load = now_s() - t0 - t_fixed;
	c_load = cpu_s() - c0 - c_fixed;

	/* flush K: due now, loop not running */
	t0 = now_s();
	c0 = cpu_s();
	for (i = 0; i < K_OPS; i++)
		if (scheduler_flush(r.sched, due_ids[i]) != 0) {
			fprintf(stderr, "bench_sched: flush %s: unknown id\n", due_ids[i]);
			goto out;
		}
	t_flush = now_s() - t0;
	c_flush = cpu_s() - c0;

	/* due pass: run the loop until the K messages are removed */
	lf = fopen(logpath, "r");
	if (lf == NULL || fseek(lf, 0, SEEK_END) != 0)
		goto out;
	wt.log = lf;
	wt.needle = ": removed\n";
	wt.want = K_OPS;
	if (uv_timer_init(&loop, &wt.timer) != 0)
		goto out;
	wt.timer.data = &wt;
	if (uv_timer_start(&wt.timer, on_watch, 1, 1) != 0)
		goto out;
	t0 = now_s();
	c0 = cpu_s();
	uv_run(&loop, UV_RUN_DEFAULT);
	c_due = cpu_s() - c0;
	t_due = (wt.t_done > 0 ? wt.t_done : now_s()) - t0;
	uv_timer_stop(&wt.timer);
	if (wt.seen < K_OPS) {
		fprintf(stderr, "bench_sched: only %ld of %d due messages finished\n", wt.seen, K_OPS);
		goto out;
	}

	/* add K deferred messages */
	if (bq_fill(&bq, K_OPS, "user@bench.invalid", clock_now() + 3600, add_ids) != 0)
		goto out;
	t0 = now_s();
	c0 = cpu_s();
	for (i = 0; i < K_OPS; i++)
		scheduler_add(r.sched, add_ids[i]);
	t_add = now_s() - t0;
	c_add = cpu_s() - c0;

	if (report)
		printf("{\"queue\": \"%s\", \"queued\": %ld, \"fill_s\": %.2f, \"fixed_ms\": %.1f, "
		       "\"load_us\": %.2f, \"load_cpu_us\": %.2f, "
		       "\"flush_us\": %.3f, \"flush_cpu_us\": %.3f, "
		       "\"due_us\": %.2f, \"due_cpu_us\": %.2f, "
		       "\"add_us\": %.2f, \"add_cpu_us\": %.2f}\n",
		       ram ? "ram" : "spool", nq, t_fill, t_fixed * 1e3, t_load * 1e6 / (double)nq, c_load * 1e6 / (double)nq,
		       t_flush * 1e6 / K_OPS, c_flush * 1e6 / K_OPS, t_due * 1e6 / K_OPS,
		       c_due * 1e6 / K_OPS, t_add * 1e6 / K_OPS, c_add * 1e6 / K_OPS);
	fflush(stdout);
	rc = 0;
out:
	if (r.sched != NULL) {
		scheduler_stop(r.sched, on_stopped, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	if (loop_ok) {
		uv_walk(&loop, walk_close, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
		if (uv_loop_close(&loop) != 0)
			fprintf(stderr, "bench_sched: loop did not close cleanly\n");
	}
	if (r.sched != NULL)
		scheduler_free(r.sched);
	queue_ram_free(bq.ram);
	if (r.queue != NULL)
		queue_close(r.queue);
	if (lf != NULL)
		fclose(lf);
	free(due_ids);
	free(add_ids);
	remove_spool(spool);
	return rc;
}

static int cmd_run(const char *base, long max, bool ram)
{
	char logpath[4096];
	long nq;
	int rc = 0;

	/* The scheduler logs every removal on stderr: send it to a file that
	 * the watch timer reads (a pipe could fill and block the loop). */
	snprintf(logpath, sizeof(logpath), "%s/bench-sched-%ld.log", base, (long)getpid());
	if (freopen(logpath, "w", stderr) == NULL) {
		perror("bench_sched: log file");
		return 1;
	}
	setvbuf(stderr, NULL, _IOLBF, 0);
	/* a first, unreported pass at 10^3: page faults of fresh heap arenas,
	 * cold caches and the first thread-pool start land there */
	rc = run_size(base, 1000, logpath, false, ram);
	for (nq = 1000; nq <= max && rc == 0; nq *= 10)
		rc = run_size(base, nq, logpath, true, ram);
	if (rc != 0) {
		fflush(stderr);
		show_log_tail(logpath, 2048);
		printf("\nbench_sched: failed; the whole log is %s\n", logpath);
		return 1;
	}
	if (unlink(logpath) != 0)
		perror("bench_sched: unlink log");
	return 0;
}

int main(int argc, char **argv)
{
	long count, delay, threads = 8, max = 100000;

	log_setup("bench_sched", LOG_FORMAT_TEXT, 0);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "fill") == 0) {
		if (parse_long(argv[3], 1, 10000000, &count) != 0 ||
		    parse_long(argv[5], -1, 100000000, &delay) != 0 ||
		    (argc == 7 && parse_long(argv[6], 1, MAX_THREADS, &threads) != 0))
			goto usage;
		return cmd_fill(argv[2], count, argv[4], delay, threads);
	}
	if ((argc == 3 || argc == 4) &&
	    (strcmp(argv[1], "run") == 0 || strcmp(argv[1], "run-ram") == 0)) {
		if (argc == 4 && parse_long(argv[3], 1000, 1000000, &max) != 0)
			goto usage;
		return cmd_run(argv[2], max, strcmp(argv[1], "run-ram") == 0);
	}
usage:
	fprintf(stderr, "usage: bench_sched fill SPOOL COUNT RCPT DELAY_S [THREADS]\n"
			"       bench_sched run BASE [MAX]\n"
			"       bench_sched run-ram BASE [MAX]\n");
	return 2;
}
